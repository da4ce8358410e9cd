//! The topics pages: every topic the viewer may DESCRIBE, with partition counts, replication,
//! under-replicated and offline partitions, size and message count; and one topic's partitions
//! (leader, replicas, ISR, offsets, size of each replica) and configs (with DESCRIBE_CONFIGS).

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::http::StatusCode;

use super::auth::Viewer;
use super::layout::{bytes, esc, page, url};
use super::peers::Tp;
use super::{Console, Page};
use crate::meta::acl::{AclOperation, ResourceType};

pub async fn list(console: &Console, viewer: &Viewer) -> Page {
    let broker = &console.broker;
    let image = broker.image();
    let sizes = console.peers.log_sizes(broker).await;
    let offsets = console.history.offsets();
    // Size of the leader's replica per partition (each replica holds the same data).
    let mut leader_size: HashMap<Tp, u64> = HashMap::new();
    for t in image.topics.values() {
        for p in &t.partitions {
            let size = sizes
                .get(&(p.leader, t.name.clone(), p.partition))
                .or_else(|| {
                    p.replicas
                        .iter()
                        .find_map(|r| sizes.get(&(*r, t.name.clone(), p.partition)))
                })
                .copied()
                .unwrap_or(0);
            leader_size.insert((t.name.clone(), p.partition), size);
        }
    }
    let mut body = String::from(
        "<p class=\"hint\"><input id=\"filter\" placeholder=\"filter topics\" data-filter=\"#topics tbody tr\"></p>\
<table id=\"topics\"><thead><tr><th>Topic</th><th>Partitions</th><th>Replication</th>\
<th>Under-replicated</th><th>Offline</th><th>Size</th><th>Messages</th></tr></thead><tbody>",
    );
    let mut shown = 0;
    for t in image.topics.values() {
        if !viewer
            .session
            .allowed(&image, AclOperation::Describe, ResourceType::Topic, &t.name)
        {
            continue;
        }
        shown += 1;
        let rf = t.partitions.first().map(|p| p.replicas.len()).unwrap_or(0);
        let under = t
            .partitions
            .iter()
            .filter(|p| p.isr.len() < p.replicas.len())
            .count();
        let offline = t.partitions.iter().filter(|p| p.leader < 0).count();
        let size: u64 = t
            .partitions
            .iter()
            .map(|p| {
                leader_size
                    .get(&(t.name.clone(), p.partition))
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        let messages: i64 = t
            .partitions
            .iter()
            .filter_map(|p| offsets.get(&(t.name.clone(), p.partition)))
            .map(|o| o.high_watermark - o.log_start)
            .sum();
        let _ = write!(
            body,
            "<tr data-topic=\"{name}\"><td><a href=\"/console/topics/{link}\">{name}</a></td><td>{}</td><td>{rf}</td>\
<td class=\"{}\">{under}</td><td class=\"{}\">{offline}</td><td>{}</td><td>{messages}</td></tr>",
            t.partitions.len(),
            if under > 0 { "bad" } else { "" },
            if offline > 0 { "bad" } else { "" },
            bytes(size),
            name = esc(&t.name),
            link = url(&t.name),
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(body, "<p class=\"hint\">{shown} topics</p>");
    Page::Html(page(
        "Topics",
        "/console/topics",
        viewer.user.as_deref(),
        &body,
    ))
}

pub async fn detail(console: &Console, viewer: &Viewer, name: &str) -> Page {
    let broker = &console.broker;
    let image = broker.image();
    let allowed = viewer
        .session
        .allowed(&image, AclOperation::Describe, ResourceType::Topic, name);
    let Some(topic) = image.topic(name).filter(|_| allowed) else {
        // As Kafka: an unauthorized topic looks like a missing one.
        return Page::Status(
            StatusCode::NOT_FOUND,
            format!("no topic {name} (or not authorized to describe it)"),
        );
    };
    let partitions: Vec<Tp> = topic
        .partitions
        .iter()
        .map(|p| (topic.name.clone(), p.partition))
        .collect();
    let (offsets, sizes) = futures::join!(
        console.peers.offsets(broker, &partitions),
        console.peers.log_sizes(broker)
    );
    let mut body = String::new();
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>Topic id</dt><dd>{}</dd><dt>Partitions</dt><dd>{}</dd></dl>\
<h2>Partitions</h2><table id=\"partitions\"><thead><tr><th>Partition</th><th>Leader</th><th>Replicas</th>\
<th>ISR</th><th>Leader epoch</th><th>Log start</th><th>High watermark</th><th>Size per replica</th><th></th></tr></thead><tbody>",
        crate::kafka_uuid::kafka_uuid(&topic.topic_id),
        topic.partitions.len()
    );
    for p in &topic.partitions {
        let tp = (topic.name.clone(), p.partition);
        let o = offsets.get(&tp).copied().unwrap_or_default();
        let isr_class = if p.isr.len() < p.replicas.len() {
            "bad"
        } else {
            "good"
        };
        let replicas = p
            .replicas
            .iter()
            .map(|r| {
                let out = if p.isr.contains(r) {
                    ""
                } else {
                    " class=\"bad\""
                };
                format!("<span{out}>{r}</span>")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let per_replica = p
            .replicas
            .iter()
            .map(
                |r| match sizes.get(&(*r, topic.name.clone(), p.partition)) {
                    Some(s) => format!("{r}: {}", bytes(*s)),
                    None => format!("{r}: ?"),
                },
            )
            .collect::<Vec<_>>()
            .join(", ");
        let isr = p
            .isr
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let leader = if p.leader >= 0 {
            p.leader.to_string()
        } else {
            "<span class=\"bad\">offline</span>".to_string()
        };
        let _ = write!(
            body,
            "<tr data-partition=\"{idx}\"><td>{idx}</td><td class=\"leader\">{leader}</td><td>{replicas}</td>\
<td class=\"isr {isr_class}\">{isr}</td><td>{}</td><td>{}</td><td class=\"hwm\">{}</td><td>{per_replica}</td>\
<td><a href=\"/console/messages?topic={link}&amp;partition={idx}\">messages</a></td></tr>",
            p.leader_epoch,
            o.log_start,
            o.high_watermark,
            idx = p.partition,
            link = url(&topic.name),
        );
    }
    body.push_str("</tbody></table>");
    if viewer.session.allowed(
        &image,
        AclOperation::DescribeConfigs,
        ResourceType::Topic,
        name,
    ) {
        body.push_str("<h2>Configs</h2><table id=\"configs\"><thead><tr><th>Name</th><th>Value</th><th>Source</th></tr></thead><tbody>");
        for (key, value, source, _) in broker.dynamic_config().describe_topic(&topic.configs) {
            let source = match source {
                crate::log::config::SOURCE_TOPIC_CONFIG => "topic",
                crate::log::config::SOURCE_DYNAMIC_BROKER_CONFIG => "broker (dynamic)",
                crate::log::config::SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG => {
                    "cluster default (dynamic)"
                }
                crate::log::config::SOURCE_STATIC_BROKER_CONFIG => "broker",
                _ => "default",
            };
            let class = if source == "topic" {
                " class=\"set\""
            } else {
                ""
            };
            let _ = write!(
                body,
                "<tr{class} data-config=\"{key}\"><td>{key}</td><td>{}</td><td>{source}</td></tr>",
                esc(&value)
            );
        }
        body.push_str("</tbody></table>");
    }
    Page::Html(page(
        &format!("Topic {name}"),
        "/console/topics",
        viewer.user.as_deref(),
        &body,
    ))
}
