//! The consumer group pages: every group the viewer may DESCRIBE, with state, coordinator and
//! lag; and one group's members and assignment, lag per partition (high watermark minus
//! committed offset) and a chart of its lag per topic over the sampler's window.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::http::StatusCode;

use super::auth::Viewer;
use super::layout::{esc, notice, page, url};
use super::peers::Tp;
use super::{Console, Page};
use crate::meta::acl::{AclOperation, ResourceType};

pub async fn list(console: &Console, viewer: &Viewer) -> Page {
    let broker = &console.broker;
    let image = broker.image();
    let groups = console.peers.list_groups(broker).await;
    let latest = console.history.samples().last().cloned();
    let mut body = String::from(
        "<table id=\"groups\"><thead><tr><th>Group</th><th>State</th><th>Coordinator</th><th>Lag</th></tr></thead><tbody>",
    );
    for (group, state, coordinator) in groups {
        if !viewer
            .session
            .allowed(&image, AclOperation::Describe, ResourceType::Group, &group)
        {
            continue;
        }
        let lag: Option<i64> = latest.as_ref().map(|s| {
            s.lag
                .iter()
                .filter(|((g, t), _)| {
                    g == &group
                        && viewer.session.allowed(
                            &image,
                            AclOperation::Describe,
                            ResourceType::Topic,
                            t,
                        )
                })
                .map(|(_, l)| *l)
                .sum()
        });
        let _ = write!(
            body,
            "<tr data-group=\"{name}\"><td><a href=\"/console/groups/{link}\">{name}</a></td><td>{}</td><td>{coordinator}</td><td class=\"lag\">{}</td></tr>",
            esc(&state),
            lag.map(|l| l.to_string()).unwrap_or_default(),
            name = esc(&group),
            link = url(&group),
        );
    }
    body.push_str("</tbody></table>");
    Page::Html(page(
        "Consumer groups",
        "/console/groups",
        viewer.user.as_deref(),
        &body,
    ))
}

pub async fn detail(console: &Console, viewer: &Viewer, group: &str) -> Page {
    let broker = &console.broker;
    let image = broker.image();
    if !viewer
        .session
        .allowed(&image, AclOperation::Describe, ResourceType::Group, group)
    {
        return Page::Status(
            StatusCode::FORBIDDEN,
            format!("not authorized to describe group {group}"),
        );
    }
    let info = match console.peers.describe_group(broker, group).await {
        Ok(info) => info,
        Err(e) => {
            let body = notice(&format!("cannot describe {group}: {e}"));
            return Page::Html(page(
                &format!("Group {group}"),
                "/console/groups",
                viewer.user.as_deref(),
                &body,
            ));
        }
    };
    let visible = |topic: &str| {
        viewer
            .session
            .allowed(&image, AclOperation::Describe, ResourceType::Topic, topic)
    };
    let mut owners: BTreeMap<Tp, String> = BTreeMap::new();
    let mut body = String::new();
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>State</dt><dd id=\"state\">{}</dd><dt>Coordinator</dt><dd>broker {}</dd>\
<dt>Protocol</dt><dd>{} {}</dd><dt>Members</dt><dd>{}</dd></dl>",
        esc(&info.state),
        info.coordinator,
        esc(&info.protocol_type),
        esc(&info.protocol),
        info.members.len()
    );
    body.push_str("<h2>Members</h2><table id=\"members\"><thead><tr><th>Member</th><th>Client id</th><th>Host</th><th>Assignment</th></tr></thead><tbody>");
    for m in &info.members {
        let assigned: Vec<String> = m
            .assignment
            .iter()
            .filter(|(t, _)| visible(t))
            .map(|(t, p)| {
                owners.insert((t.clone(), *p), m.client_id.clone());
                format!("{}-{p}", esc(t))
            })
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.member_id),
            esc(&m.client_id),
            esc(&m.client_host),
            assigned.join(", ")
        );
    }
    body.push_str("</tbody></table>");

    let committed: Vec<(Tp, i64)> = info
        .committed
        .iter()
        .filter(|(tp, _)| visible(&tp.0))
        .map(|(tp, o)| (tp.clone(), *o))
        .collect();
    let tps: Vec<Tp> = committed.iter().map(|(tp, _)| tp.clone()).collect();
    let offsets = console.peers.offsets(broker, &tps).await;
    let total: i64 = committed
        .iter()
        .filter_map(|(tp, c)| offsets.get(tp).map(|o| (o.high_watermark - c).max(0)))
        .sum();
    let _ = write!(
        body,
        "<h2>Lag</h2><p>Total lag: <b id=\"total-lag\">{total}</b></p>\
<div class=\"chart\"><canvas id=\"lag-chart\" width=\"900\" height=\"220\" data-series=\"{}\" data-src=\"/console/groups/{}/lag.json\"></canvas></div>\
<table id=\"lag\"><thead><tr><th>Topic</th><th>Partition</th><th>Committed offset</th><th>High watermark</th><th>Lag</th><th>Consumer</th></tr></thead><tbody>",
        esc(&lag_series(console, viewer, group)),
        url(group)
    );
    for ((topic, partition), committed) in &committed {
        let hwm = offsets
            .get(&(topic.clone(), *partition))
            .map(|o| o.high_watermark);
        let lag = hwm.map(|h| (h - committed).max(0));
        let _ = write!(
            body,
            "<tr data-tp=\"{t}-{partition}\"><td>{t}</td><td>{partition}</td><td>{committed}</td><td>{}</td><td class=\"lag\">{}</td><td>{}</td></tr>",
            hwm.map(|h| h.to_string()).unwrap_or_else(|| "?".into()),
            lag.map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
            esc(owners.get(&(topic.clone(), *partition)).map(String::as_str).unwrap_or("")),
            t = esc(topic),
        );
    }
    body.push_str("</tbody></table>");
    Page::Html(page(
        &format!("Group {group}"),
        "/console/groups",
        viewer.user.as_deref(),
        &body,
    ))
}

/// The group's lag per topic over the window: `{"t":[ms,...],"series":{"topic":[lag,...]}}`.
fn lag_series(console: &Console, viewer: &Viewer, group: &str) -> String {
    let image = console.broker.image();
    let samples = console.history.samples();
    let mut series: BTreeMap<String, Vec<Option<i64>>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        for ((g, topic), lag) in &s.lag {
            if g != group {
                continue;
            }
            let column = series
                .entry(topic.clone())
                .or_insert_with(|| vec![None; samples.len()]);
            column[i] = Some(*lag);
        }
    }
    series.retain(|topic, _| {
        viewer
            .session
            .allowed(&image, AclOperation::Describe, ResourceType::Topic, topic)
    });
    serde_json::json!({
        "t": samples.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
        "series": series,
    })
    .to_string()
}

pub fn lag_json(console: &Console, viewer: &Viewer, group: &str) -> Page {
    let image = console.broker.image();
    if !viewer
        .session
        .allowed(&image, AclOperation::Describe, ResourceType::Group, group)
    {
        return Page::Status(
            StatusCode::FORBIDDEN,
            format!("not authorized to describe group {group}"),
        );
    }
    Page::Json(lag_series(console, viewer, group))
}
