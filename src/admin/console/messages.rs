//! The message browser: one partition from an offset, or from a timestamp (ListOffsets by
//! time), newest messages by default. It reads at most `MAX_READ_BYTES` of log per request
//! (the leader may return one larger batch, as a Fetch does, bounded by `max.message.bytes`)
//! and shows at most `MAX_LIMIT` records. The viewer needs READ on the topic, exactly as a
//! consumer with that principal would; topics are listed only where they have DESCRIBE.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::http::StatusCode;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::auth::Viewer;
use super::layout::{esc, notice, page, url};
use super::records::{self, Format};
use super::{Console, Page};
use crate::meta::acl::{AclOperation, ResourceType};

/// Log bytes read per request at most.
pub const MAX_READ_BYTES: usize = 1 << 20;
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

pub async fn render(console: &Console, viewer: &Viewer, params: &HashMap<String, String>) -> Page {
    let broker = &console.broker;
    let image = broker.image();
    let readable: Vec<&String> = image
        .topics
        .keys()
        .filter(|t| {
            viewer
                .session
                .allowed(&image, AclOperation::Describe, ResourceType::Topic, t)
        })
        .collect();
    let topic = params.get("topic").cloned().unwrap_or_default();
    let partition: i32 = params
        .get("partition")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let format = Format::parse(params.get("format").map(String::as_str).unwrap_or("auto"));
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_LIMIT);
    let offset_param = params.get("offset").filter(|s| !s.is_empty()).cloned();
    let timestamp_param = params.get("timestamp").filter(|s| !s.is_empty()).cloned();

    let mut body = String::new();
    let _ = write!(
        body,
        "<form class=\"browse\" method=\"get\" action=\"/console/messages\"><label>Topic <select name=\"topic\">{}</select></label>\
<label>Partition <input name=\"partition\" size=\"4\" value=\"{partition}\"></label>\
<label>Offset <input name=\"offset\" size=\"10\" value=\"{}\"></label>\
<label>or time <input name=\"timestamp\" size=\"22\" placeholder=\"2026-01-01T12:00:00Z or ms\" value=\"{}\"></label>\
<label>Show as <select name=\"format\">{}</select></label><label>Max <input name=\"limit\" size=\"3\" value=\"{limit}\"></label>\
<button type=\"submit\">Read</button></form>",
        readable
            .iter()
            .map(|t| {
                let sel = if **t == topic { " selected" } else { "" };
                format!("<option{sel}>{}</option>", esc(t))
            })
            .collect::<String>(),
        esc(offset_param.as_deref().unwrap_or("")),
        esc(timestamp_param.as_deref().unwrap_or("")),
        ["auto", "utf8", "json", "hex"]
            .iter()
            .map(|f| {
                let sel = if *f == format.name() { " selected" } else { "" };
                format!("<option{sel}>{f}</option>")
            })
            .collect::<String>(),
    );
    let title = "Messages";
    if topic.is_empty() {
        body.push_str(&notice("Pick a topic and partition."));
        return Page::Html(page(
            title,
            "/console/messages",
            viewer.user.as_deref(),
            &body,
        ));
    }
    if !viewer
        .session
        .allowed(&image, AclOperation::Read, ResourceType::Topic, &topic)
    {
        return Page::Status(
            StatusCode::FORBIDDEN,
            format!("not authorized to read topic {topic} (READ is needed, as for a consumer)"),
        );
    }
    let Some(meta) = image.topic(&topic) else {
        body.push_str(&notice(&format!("no topic {topic}")));
        return Page::Html(page(
            title,
            "/console/messages",
            viewer.user.as_deref(),
            &body,
        ));
    };
    if !meta.partitions.iter().any(|p| p.partition == partition) {
        body.push_str(&notice(&format!("{topic} has no partition {partition}")));
        return Page::Html(page(
            title,
            "/console/messages",
            viewer.user.as_deref(),
            &body,
        ));
    }
    let tp = (topic.clone(), partition);
    let bounds = console
        .peers
        .offsets(broker, std::slice::from_ref(&tp))
        .await;
    let Some(bounds) = bounds.get(&tp).copied() else {
        body.push_str(&notice("the partition's leader did not answer"));
        return Page::Html(page(
            title,
            "/console/messages",
            viewer.user.as_deref(),
            &body,
        ));
    };
    let start = match (&offset_param, &timestamp_param) {
        (Some(o), _) => match o.trim().parse::<i64>() {
            Ok(o) => o,
            Err(_) => {
                body.push_str(&notice("the offset must be a number"));
                return Page::Html(page(
                    title,
                    "/console/messages",
                    viewer.user.as_deref(),
                    &body,
                ));
            }
        },
        (None, Some(t)) => match parse_time(t) {
            Some(ms) => match offset_for_time(console, &topic, partition, ms).await {
                Ok(Some(o)) => o,
                Ok(None) => bounds.high_watermark,
                Err(e) => {
                    body.push_str(&notice(&e));
                    return Page::Html(page(
                        title,
                        "/console/messages",
                        viewer.user.as_deref(),
                        &body,
                    ));
                }
            },
            None => {
                body.push_str(&notice(
                    "the time must be milliseconds or YYYY-MM-DDTHH:MM:SSZ",
                ));
                return Page::Html(page(
                    title,
                    "/console/messages",
                    viewer.user.as_deref(),
                    &body,
                ));
            }
        },
        (None, None) => (bounds.high_watermark - limit as i64).max(bounds.log_start),
    }
    .clamp(
        bounds.log_start,
        bounds.high_watermark.max(bounds.log_start),
    );
    let _ = write!(
        body,
        "<p class=\"hint\">Partition {partition}: log start {}, high watermark {}. Reading from offset {start}, at most {} of log.</p>",
        bounds.log_start,
        bounds.high_watermark,
        super::layout::bytes(MAX_READ_BYTES as u64)
    );
    if start >= bounds.high_watermark {
        body.push_str(&notice("no messages at or after this offset yet"));
        return Page::Html(page(
            title,
            "/console/messages",
            viewer.user.as_deref(),
            &body,
        ));
    }
    let read = console
        .peers
        .read(broker, &topic, partition, start, MAX_READ_BYTES)
        .await;
    let (data, _) = match read {
        Ok(r) => r,
        Err(e) => {
            body.push_str(&notice(&format!("read failed: {e}")));
            return Page::Html(page(
                title,
                "/console/messages",
                viewer.user.as_deref(),
                &body,
            ));
        }
    };
    let (shown, next) = match records::decode(&data, start, limit) {
        Ok(r) => r,
        Err(e) => {
            body.push_str(&notice(&e));
            return Page::Html(page(
                title,
                "/console/messages",
                viewer.user.as_deref(),
                &body,
            ));
        }
    };
    if shown.is_empty() && !data.is_empty() {
        body.push_str(&notice("only control records here"));
    } else if shown.is_empty() {
        body.push_str(&notice(
            "the batch at this offset is larger than the console reads at once",
        ));
    }
    body.push_str("<table id=\"messages\"><thead><tr><th>Offset</th><th>Timestamp</th><th>Key</th><th>Value</th><th>Headers</th></tr></thead><tbody>");
    for m in &shown {
        let show = |b: &Option<bytes::Bytes>| match b {
            Some(b) => {
                let (text, used) = records::render(b, format);
                format!("<pre class=\"{used}\">{}</pre>", esc(&text))
            }
            None => "<i>null</i>".to_string(),
        };
        let headers: String = m
            .headers
            .iter()
            .map(|(k, v)| {
                let (text, _) = v
                    .as_ref()
                    .map(|v| records::render(v, Format::Auto))
                    .unwrap_or(("null".into(), ""));
                format!("<div><b>{}</b>: {}</div>", esc(k), esc(&text))
            })
            .collect();
        let _ = write!(
            body,
            "<tr data-offset=\"{}\"><td>{}</td><td>{}</td><td class=\"key\">{}</td><td class=\"value\">{}</td><td class=\"headers\">{headers}</td></tr>",
            m.offset,
            m.offset,
            iso_time(m.timestamp),
            show(&m.key),
            show(&m.value),
        );
    }
    body.push_str("</tbody></table>");
    if let Some(next) = next.filter(|n| *n < bounds.high_watermark) {
        let _ = write!(
            body,
            "<p><a id=\"next\" href=\"/console/messages?topic={}&amp;partition={partition}&amp;offset={next}&amp;format={}&amp;limit={limit}\">Next from offset {next}</a></p>",
            url(&topic),
            format.name()
        );
    }
    Page::Html(page(
        &format!("Messages in {topic}-{partition}"),
        "/console/messages",
        viewer.user.as_deref(),
        &body,
    ))
}

/// The first offset with a timestamp at or after `ms`, from the partition's leader.
async fn offset_for_time(
    console: &Console,
    topic: &str,
    partition: i32,
    ms: i64,
) -> Result<Option<i64>, String> {
    let broker = &console.broker;
    let leader = broker
        .image()
        .topic(topic)
        .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
        .map(|p| p.leader)
        .filter(|l| *l >= 0)
        .ok_or("the partition has no leader")?;
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(ms)])]);
    let resp = console.peers.call(broker, leader, 5, &req).await?;
    let p = resp
        .topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .next()
        .ok_or("empty ListOffsets response")?;
    if p.error_code != 0 {
        return Err(format!("ListOffsets error {}", p.error_code));
    }
    Ok((p.offset >= 0).then_some(p.offset))
}

/// Milliseconds since the epoch, or `YYYY-MM-DDTHH:MM[:SS]` (UTC, `Z` optional).
pub fn parse_time(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Some(ms);
    }
    let t = t.trim_end_matches('Z');
    let (date, time) = t.split_once(['T', ' ']).unwrap_or((t, "00:00:00"));
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut c = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, min) = (c.next()??, c.next().flatten().unwrap_or(0));
    let s = c.next().flatten().unwrap_or(0);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    Some((days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + s) * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS.mmm` UTC.
pub fn iso_time(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2023-13-01"), None);
        assert_eq!(parse_time("soon"), None);
        assert_eq!(iso_time(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(iso_time(0), "1970-01-01 00:00:00.000");
    }
}
