//! Live throughput per topic: messages in per second across the cluster (from the partitions'
//! high watermarks, sampled every few seconds), and bytes in and out per second on this broker
//! (its counters). The page refreshes itself from `throughput.json`.

use std::fmt::Write as _;

use super::auth::Viewer;
use super::layout::{esc, page, url};
use super::{Console, Page};
use crate::meta::acl::{AclOperation, ResourceType};

/// `{"at": ms, "interval_ms": n, "topics": {"t": {"messages": m, "bytes_in": b, "bytes_out": o}},
/// "series": {"t": [[ms, messages/s], ...]}}` for the topics the viewer may describe.
fn data(console: &Console, viewer: &Viewer) -> serde_json::Value {
    let image = console.broker.image();
    let visible = |t: &str| {
        viewer
            .session
            .allowed(&image, AclOperation::Describe, ResourceType::Topic, t)
    };
    let rates = console.history.rates();
    let mut topics = serde_json::Map::new();
    for (topic, r) in rates.iter().filter(|(t, _)| visible(t)) {
        topics.insert(
            topic.clone(),
            serde_json::json!({"messages": r.messages, "bytes_in": r.bytes_in, "bytes_out": r.bytes_out}),
        );
    }
    let mut series = serde_json::Map::new();
    for (at, rates) in console.history.rate_series() {
        for (topic, r) in rates.iter().filter(|(t, _)| visible(t)) {
            if let Some(a) = series
                .entry(topic.clone())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()))
                .as_array_mut()
            {
                a.push(serde_json::json!([at, r.messages]));
            }
        }
    }
    serde_json::json!({
        "at": crate::replica::now_ms(),
        "interval_ms": super::sampler::INTERVAL.as_millis() as u64,
        "topics": topics,
        "series": series,
    })
}

pub fn json(console: &Console, viewer: &Viewer) -> Page {
    Page::Json(data(console, viewer).to_string())
}

pub fn render(console: &Console, viewer: &Viewer) -> Page {
    let d = data(console, viewer);
    let mut body = format!(
        "<p class=\"hint\">Messages per second across the cluster, from the partitions' high watermarks; bytes per second through broker {} (leaderships here). Sampled every {} s, refreshed live.</p>\
<div class=\"chart\"><canvas id=\"throughput-chart\" width=\"900\" height=\"240\" data-series=\"{}\" data-src=\"/console/throughput.json\"></canvas></div>\
<table id=\"throughput\" data-src=\"/console/throughput.json\"><thead><tr><th>Topic</th><th>Messages/s</th><th>Bytes in/s (here)</th><th>Bytes out/s (here)</th></tr></thead><tbody>",
        console.broker.node_id(),
        super::sampler::INTERVAL.as_secs(),
        esc(&d["series"].to_string()),
    );
    if let Some(topics) = d["topics"].as_object() {
        for (topic, r) in topics {
            let _ = write!(
                body,
                "<tr data-topic=\"{name}\"><td><a href=\"/console/topics/{}\">{name}</a></td><td class=\"messages\">{:.1}</td><td class=\"bytes-in\">{:.0}</td><td class=\"bytes-out\">{:.0}</td></tr>",
                url(topic),
                r["messages"].as_f64().unwrap_or(0.0),
                r["bytes_in"].as_f64().unwrap_or(0.0),
                r["bytes_out"].as_f64().unwrap_or(0.0),
                name = esc(topic),
            );
        }
    }
    body.push_str("</tbody></table>");
    if d["topics"].as_object().is_none_or(|t| t.is_empty()) {
        body.push_str(
            "<p class=\"hint\" id=\"warming\">The first rates appear after two samples.</p>",
        );
    }
    Page::Html(page(
        "Throughput",
        "/console/throughput",
        viewer.user.as_deref(),
        &body,
    ))
}
