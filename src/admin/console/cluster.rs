//! The cluster page: brokers (listeners, rack, fenced or live, leaderships), the active
//! controller, and the metadata quorum's voters and learners with how far each is behind the
//! controller's log (known on the controller; other brokers show their own view and say so).

use std::fmt::Write as _;

use super::auth::Viewer;
use super::layout::{esc, page};
use super::{Console, Page};

pub async fn render(console: &Console, viewer: &Viewer) -> Page {
    let broker = &console.broker;
    let image = broker.image();
    let status = broker.meta.status();
    let controller = broker.controller_id();
    let mut body = String::new();
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>Cluster id</dt><dd>{}</dd><dt>Active controller</dt><dd id=\"controller\">{}</dd>\
<dt>This broker</dt><dd>{}</dd><dt>Raft term</dt><dd>{}</dd><dt>Metadata applied index</dt><dd>{}</dd>\
<dt>Topics</dt><dd>{}</dd><dt>Partitions</dt><dd>{}</dd></dl>",
        esc(image.cluster_id.as_deref().unwrap_or("")),
        if controller >= 0 { format!("broker {controller}") } else { "none".into() },
        broker.node_id(),
        status.term,
        status.applied_index.unwrap_or(0),
        image.topics.len(),
        image.topics.values().map(|t| t.partitions.len()).sum::<usize>(),
    );

    body.push_str("<h2>Brokers</h2><table id=\"brokers\"><thead><tr><th>Id</th><th>Listeners</th><th>Rack</th><th>State</th><th>Role</th><th>Leaderships</th><th>Replicas</th></tr></thead><tbody>");
    for (id, b) in &image.brokers {
        let listeners = if b.endpoints.is_empty() {
            format!("{}:{}", b.host, b.port)
        } else {
            b.endpoints
                .iter()
                .map(|e| format!("{} {}:{}", e.listener, e.host, e.port))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let (leads, replicas) =
            image
                .topics
                .values()
                .flat_map(|t| &t.partitions)
                .fold((0, 0), |(l, r), p| {
                    (
                        l + usize::from(p.leader == *id),
                        r + usize::from(p.replicas.contains(id)),
                    )
                });
        let state = if b.fenced {
            "<span class=\"bad\">fenced</span>"
        } else {
            "<span class=\"good\">live</span>"
        };
        let role = if *id == controller { "controller" } else { "" };
        let _ = write!(
            body,
            "<tr data-broker=\"{id}\"><td>{id}</td><td>{listeners}</td><td>{}</td><td class=\"state\">{state}</td><td>{role}</td><td>{leads}</td><td>{replicas}</td></tr>",
            esc(b.rack.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</tbody></table>");

    let fenced: Vec<String> = status
        .fenced_brokers
        .iter()
        .map(|b| b.to_string())
        .collect();
    let _ = write!(
        body,
        "<p id=\"fenced\">Fenced brokers: {}</p>",
        if fenced.is_empty() {
            "none".to_string()
        } else {
            fenced.join(", ")
        }
    );

    body.push_str("<h2>Metadata quorum</h2>");
    let on_leader = status.matched_index.is_some();
    if !on_leader {
        let _ = write!(
            body,
            "<p class=\"hint\">Replication lag is known on the active controller (broker {controller}); this broker is {}.</p>",
            esc(&status.state)
        );
    }
    body.push_str("<table id=\"raft\"><thead><tr><th>Node</th><th>Role</th><th>Controller address</th><th>Matched index</th><th>Lag (entries)</th><th>Last ack</th></tr></thead><tbody>");
    let last = status.last_log_index.unwrap_or(0);
    let members = status
        .voters
        .iter()
        .map(|(id, addr)| (*id, addr, "voter"))
        .chain(
            status
                .learners
                .iter()
                .map(|(id, addr)| (*id, addr, "learner")),
        );
    for (id, addr, role) in members {
        let matched = status
            .matched_index
            .as_ref()
            .and_then(|m| m.get(&id).copied().flatten());
        let ack = status
            .last_ack_ms
            .as_ref()
            .and_then(|m| m.get(&id).copied().flatten());
        let (matched_text, lag_text) = match (on_leader, matched) {
            (true, Some(m)) => (m.to_string(), last.saturating_sub(m).to_string()),
            (true, None) => ("none".into(), "unknown".into()),
            (false, _) => ("".into(), "".into()),
        };
        let role = if Some(id) == status.leader {
            format!("{role} (leader)")
        } else {
            role.to_string()
        };
        let _ = write!(
            body,
            "<tr data-node=\"{id}\"><td>{id}</td><td>{role}</td><td>{}</td><td>{matched_text}</td><td class=\"lag\">{lag_text}</td><td>{}</td></tr>",
            esc(addr),
            ack.map(|ms| format!("{ms} ms ago")).unwrap_or_default()
        );
    }
    body.push_str("</tbody></table>");
    Page::Html(page(
        "Cluster",
        "/console/cluster",
        viewer.user.as_deref(),
        &body,
    ))
}
