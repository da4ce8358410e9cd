//! Request spans for OpenTelemetry: one span per Kafka request, with the attribute names of
//! the OpenTelemetry messaging semantic conventions for Kafka, and its child spans (append,
//! fsync, replication wait, fetch wait).
//!
//! Every span here has the target [`TARGET`], which the log output never records and only the
//! OTLP layer (when configured, `serve/telemetry.rs`) does.
//!
//! Sampling is decided here, at the head, before any span exists ([`Sampler`], from the
//! standard `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`): a request that is not
//! sampled gets no span at all, so with export off, or at 1%, the other requests cost one
//! atomic load and a random number (building a span's OpenTelemetry data is what costs, and
//! the SDK would build it for every span before its own sampler drops it). The exporter's SDK
//! sampler then takes every span it is given. Callers check [`Traced::on`] before any work done
//! only for a span.
//!
//! A produced batch whose first record carries a W3C `traceparent` header makes the request
//! span a child of that remote span: the broker's produce span, and its children, join the
//! producer's trace (and with a parent-based sampler, follow its sampling decision). Further
//! distinct trace contexts in the same request become span links.

use std::sync::OnceLock;

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

/// Which requests are traced: `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`,
/// `traceidratio`, and the `parentbased_` forms of each; default `parentbased_always_on`) with
/// `OTEL_TRACES_SAMPLER_ARG` (the ratio, default 1.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// The share of requests without a sampled parent that are traced.
    pub ratio: f64,
    /// A request whose producer sent a trace context follows that context's decision.
    pub parent_based: bool,
}

impl Sampler {
    /// The sampler the standard variables ask for (`var`: the environment, or a test's map).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let name = set("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
        let ratio = || -> Result<f64, String> {
            match set("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(a) => a
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG={a:?}: a ratio in [0, 1]")),
            }
        };
        let (parent_based, rest) = match name.to_ascii_lowercase().strip_prefix("parentbased_") {
            Some(rest) => (true, rest.to_string()),
            None => (false, name.to_ascii_lowercase()),
        };
        let ratio = match rest.as_str() {
            "always_on" => 1.0,
            "always_off" => 0.0,
            "traceidratio" => ratio()?,
            _ => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER={name:?}: Gregor samples with always_on, always_off, \
                     traceidratio or their parentbased_ forms"
                ))
            }
        };
        Ok(Self {
            ratio,
            parent_based,
        })
    }

    /// Whether a request with this remote parent (or none) is traced.
    fn sampled(&self, parent: Option<&SpanContext>) -> bool {
        match parent {
            Some(p) if self.parent_based => p.is_sampled(),
            _ => self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio),
        }
    }
}

/// The sampler of the process, set once when OTLP export starts; unset, nothing is traced.
static SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// Turns request tracing on (once, when the OTLP exporter is installed).
pub fn enable(sampler: Sampler) {
    let _ = SAMPLER.set(sampler);
}

/// Whether any request may be traced: only then is work done to decide (such as reading a
/// produced batch's `traceparent`).
pub fn enabled() -> bool {
    SAMPLER.get().is_some()
}

/// The span of one request, when it is sampled: `messaging.system=kafka`, the operation for
/// Produce and Fetch, and the client id. `traceparents`: the W3C trace contexts its batches
/// carry (Produce); the first valid one is the span's parent, the others links.
pub fn request_span(key: ApiKey, client_id: Option<&str>, traceparents: &[Vec<u8>]) -> Traced {
    let Some(sampler) = SAMPLER.get() else {
        return Traced::none();
    };
    let mut remotes = traceparents.iter().filter_map(|t| parse_traceparent(t));
    let parent = remotes.next();
    if !sampler.sampled(parent.as_ref()) {
        return Traced::none();
    }
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
    if let Some(parent) = &parent {
        // Before any child span exists: the span has not started until then.
        let cx = opentelemetry::Context::new().with_remote_span_context(parent.clone());
        let _ = span.set_parent(cx);
        let mut linked = vec![parent.trace_id()];
        for remote in remotes {
            if !linked.contains(&remote.trace_id()) {
                linked.push(remote.trace_id());
                span.add_link(remote);
            }
        }
    }
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
    fn no_span_while_tracing_is_off() {
        let traced = request_span(ApiKey::Produce, Some("client"), &[]);
        assert!(!traced.on());
        assert!(traced.append("t", 0, 10).is_disabled());
    }

    fn sampler(vars: &[(&str, &str)]) -> Result<Sampler, String> {
        let map: std::collections::HashMap<_, _> = vars.iter().copied().collect();
        Sampler::from_env(|k| map.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn samplers_from_the_standard_variables() {
        let on = Sampler {
            ratio: 1.0,
            parent_based: true,
        };
        assert_eq!(sampler(&[]), Ok(on));
        assert_eq!(
            sampler(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01")
            ]),
            Ok(Sampler {
                ratio: 0.01,
                parent_based: true
            })
        );
        assert_eq!(
            sampler(&[("OTEL_TRACES_SAMPLER", "always_off")]),
            Ok(Sampler {
                ratio: 0.0,
                parent_based: false
            })
        );
        assert_eq!(
            sampler(&[("OTEL_TRACES_SAMPLER", "traceidratio")]).map(|s| s.ratio),
            Ok(1.0)
        );
        assert!(sampler(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]).is_err());
        assert!(sampler(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5")
        ])
        .is_err());
    }

    #[test]
    fn parent_based_sampling_follows_the_producer() {
        let sampled =
            parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let unsampled =
            parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap();
        let never_roots = Sampler {
            ratio: 0.0,
            parent_based: true,
        };
        assert!(never_roots.sampled(Some(&sampled)));
        assert!(!never_roots.sampled(Some(&unsampled)));
        assert!(!never_roots.sampled(None));
        let always = Sampler {
            ratio: 1.0,
            parent_based: false,
        };
        assert!(always.sampled(Some(&unsampled)) && always.sampled(None));
        let some = Sampler {
            ratio: 0.25,
            parent_based: true,
        };
        let n = (0..20_000).filter(|_| some.sampled(None)).count();
        assert!((4_000..6_000).contains(&n), "{n}");
    }
}
