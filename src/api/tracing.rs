//! Request spans for OpenTelemetry: one span per Kafka request, with the attribute names of
//! the OpenTelemetry messaging semantic conventions for Kafka, and its child spans (append,
//! fsync, replication wait, fetch wait).
//!
//! Every span here has the target [`TARGET`], which the log output never records and only the
//! OTLP layer (when configured, `serve/telemetry.rs`) does. With export off the span macros
//! find no interested layer and return disabled spans: their fields are never evaluated, so
//! nothing is formatted or allocated. Callers check [`Traced::on`] before any work done only
//! for a span (such as looking for a `traceparent` header).
//!
//! A produced batch whose first record carries a W3C `traceparent` header makes the request
//! span a child of that remote span: the broker's produce span, and its children, join the
//! producer's trace. Further distinct trace contexts in the same request become span links.

use kafka_protocol::messages::ApiKey;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` target of request spans.
pub const TARGET: &str = "gregor::request";

/// A request's span, and whether anything records it.
#[derive(Clone)]
pub struct Traced {
    pub span: tracing::Span,
}

impl Traced {
    /// A span nobody records (tests, internal calls).
    pub fn none() -> Self {
        Self {
            span: tracing::Span::none(),
        }
    }

    /// Whether the span is recorded: only then is work done for it.
    pub fn on(&self) -> bool {
        !self.span.is_disabled()
    }

    /// Names the request's destination when it has exactly one topic (and partition).
    pub fn destination(&self, topic: &str, partition: Option<i32>) {
        if self.on() {
            self.span.record("messaging.destination.name", topic);
            if let Some(p) = partition {
                self.span
                    .record("messaging.kafka.destination.partition", i64::from(p));
            }
        }
    }

    /// Joins the trace of the first `traceparent` found; the others become links. Must run
    /// before any child span exists (the span has not started until then).
    pub fn follow_producers<'a>(&self, traceparents: impl IntoIterator<Item = &'a [u8]>) {
        if !self.on() {
            return;
        }
        let mut parent: Option<SpanContext> = None;
        for value in traceparents {
            let Some(remote) = parse_traceparent(value) else {
                continue;
            };
            match &parent {
                None => {
                    let cx = opentelemetry::Context::new().with_remote_span_context(remote.clone());
                    if self.span.set_parent(cx).is_ok() {
                        parent = Some(remote);
                    }
                }
                Some(p) if p.trace_id() == remote.trace_id() => {}
                Some(_) => self.span.add_link(remote),
            }
        }
    }

    /// A child span of the request for one partition's append.
    pub fn append(&self, topic: &str, partition: i32, bytes: usize) -> tracing::Span {
        if !self.on() {
            return tracing::Span::none();
        }
        tracing::info_span!(target: TARGET, parent: &self.span, "append",
            messaging.destination.name = topic,
            messaging.kafka.destination.partition = i64::from(partition),
            messaging.batch.message_bytes = bytes as i64,
            messaging.kafka.offset = Empty)
    }

    /// A child span for waiting on an fsync the topic's flush policy asks for.
    pub fn fsync(&self, topic: &str, partition: i32) -> tracing::Span {
        if !self.on() {
            return tracing::Span::none();
        }
        tracing::info_span!(target: TARGET, parent: &self.span, "fsync",
            messaging.destination.name = topic,
            messaging.kafka.destination.partition = i64::from(partition))
    }

    /// A child span for acks=all: waiting for the ISR to hold the batch.
    pub fn replication_wait(&self, topic: &str, partition: i32) -> tracing::Span {
        if !self.on() {
            return tracing::Span::none();
        }
        tracing::info_span!(target: TARGET, parent: &self.span, "replication wait",
            messaging.destination.name = topic,
            messaging.kafka.destination.partition = i64::from(partition))
    }

    /// A child span for a fetch waiting (up to max.wait.ms) for data.
    pub fn fetch_wait(&self) -> tracing::Span {
        if !self.on() {
            return tracing::Span::none();
        }
        tracing::info_span!(target: TARGET, parent: &self.span, "fetch wait")
    }
}

/// The span of one request: `messaging.system=kafka`, the operation for Produce and Fetch,
/// and the client id.
pub fn request_span(key: ApiKey, client_id: Option<&str>) -> Traced {
    let operation = match key {
        ApiKey::Produce => Some("publish"),
        ApiKey::Fetch => Some("receive"),
        _ => None,
    };
    let span = tracing::info_span!(target: TARGET, "request",
        otel.name = tracing::field::debug(key),
        otel.kind = "server",
        messaging.system = "kafka",
        messaging.operation = operation,
        messaging.client.id = client_id,
        messaging.destination.name = Empty,
        messaging.kafka.destination.partition = Empty);
    Traced { span }
}

/// Parses a W3C `traceparent` value (version 00, or a later version's first four fields).
pub fn parse_traceparent(value: &[u8]) -> Option<SpanContext> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    if !hex(version, 2)
        || version == "ff"
        || !hex(trace_id, 32)
        || !hex(span_id, 16)
        || !hex(flags, 2)
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_w3c_traceparent() {
        let sc =
            parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_sampled());
        assert!(sc.is_remote());
        let unsampled =
            parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap();
        assert!(!unsampled.is_sampled());
        // A future version may append fields.
        assert!(
            parse_traceparent(b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn refuses_malformed_traceparent() {
        for bad in [
            &b""[..],
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            b"\xff\xfe",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn spans_are_disabled_without_a_subscriber() {
        let traced = request_span(ApiKey::Produce, Some("client"));
        assert!(!traced.on());
        assert!(traced.append("t", 0, 10).is_disabled());
    }
}
