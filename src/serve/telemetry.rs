//! Logging and optional OpenTelemetry trace export: the `tracing` subscriber the whole process
//! writes to.
//!
//! Logs go to stderr (text or JSON) as before. Spans of the request path (target
//! [`crate::api::tracing::TARGET`]) never reach the log output; they go only to the OTLP
//! exporter, which is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not `true`. With it
//! off no layer wants those spans, so each span macro on the hot path is one cached-interest
//! check and records nothing.
//!
//! The standard variables apply: `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default,
//! or `grpc`), `OTEL_SERVICE_NAME` (default `gregor`), `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`;
//! Gregor applies them itself, before a request's span exists: `api/tracing.rs`), and the
//! exporter's `OTEL_EXPORTER_OTLP_*` timeout and header variables. Spans are exported in
//! batches from a background thread; HTTP exports run on the broker's runtime (hyper), gRPC
//! ones through tonic.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::api::tracing::{Sampler, TARGET};
use crate::config::LogFormat;

/// How the spans leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// What the environment asks of trace export, before anything is built.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    pub protocol: Protocol,
    pub sampler: Sampler,
}

/// Reads the OTLP settings from `var` (the environment, or a test's map). `Ok(None)`: export
/// is off.
pub fn export_settings(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<ExportSettings>, String> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none")) {
        return Ok(None);
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .map(|p| p.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("http/protobuf") => Protocol::HttpProtobuf,
        Some("grpc") => Protocol::Grpc,
        Some(other) => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: Gregor exports http/protobuf or grpc"
            ))
        }
    };
    let sampler = Sampler::from_env(&var)?;
    Ok(Some(ExportSettings { protocol, sampler }))
}

/// The trace pipeline, flushed at shutdown.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (bounded by the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing the trace exporter at shutdown");
            }
        }
    }
}

/// Installs the process's subscriber: logs to stderr, filtered by RUST_LOG or `level`, and the
/// OTLP layer when the environment asks for it. Must run inside the Tokio runtime (the
/// exporters' connections run on it). Returns an error only for an unusable OTLP setting.
pub fn init(format: LogFormat, level: &str, node_id: i32) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    let not_request_spans = filter_fn(|m| m.target() != TARGET);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Text => Box::new(fmt.with_filter(filter).with_filter(not_request_spans)),
        LogFormat::Json => Box::new(
            fmt.json()
                .with_filter(filter)
                .with_filter(not_request_spans),
        ),
    };
    let settings = export_settings(|k| std::env::var(k).ok());
    let (otel, provider, outcome) = match settings {
        Ok(Some(s)) => match provider(&s, node_id) {
            Ok(provider) => {
                let tracer = provider.tracer("gregor");
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_location(false)
                    .with_threads(false)
                    .with_level(false)
                    .with_target(false)
                    .with_tracked_inactivity(false)
                    .with_context_activation(false)
                    .with_filter(filter_fn(|m| m.target() == TARGET));
                (Some(layer), Some(provider), Ok(Some(s)))
            }
            Err(e) => (None, None, Err(e)),
        },
        Ok(None) => (None, None, Ok(None)),
        Err(e) => (None, None, Err(e)),
    };
    tracing_subscriber::registry().with(fmt).with(otel).init();
    match outcome {
        Ok(Some(s)) => {
            crate::api::tracing::enable(s.sampler);
            tracing::info!(protocol = ?s.protocol, sampler = ?s.sampler, "exporting traces over OTLP");
            Ok(Telemetry { provider })
        }
        Ok(None) => Ok(Telemetry { provider: None }),
        Err(e) => Err(e),
    }
}

fn provider(settings: &ExportSettings, node_id: i32) -> Result<SdkTracerProvider, String> {
    let exporter = match settings.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(RuntimeHttpClient {
                runtime: tokio::runtime::Handle::current(),
            })
            .build(),
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_timeout(Duration::from_secs(10))
            .build(),
    }
    .map_err(|e| format!("building the OTLP span exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.instance.id", node_id.to_string()),
    );
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name("gregor");
    }
    // Requests are sampled before their span exists (api/tracing.rs): the SDK takes every span.
    Ok(SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// OTLP over HTTP with hyper: each export is one request on a fresh HTTP/1.1 connection,
/// run on the broker's runtime (the batch processor's thread has no reactor of its own).
#[derive(Debug)]
struct RuntimeHttpClient {
    runtime: tokio::runtime::Handle,
}

/// Longest OTLP response body read (a partial-success message is small).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let task = self.runtime.spawn(send(request));
        task.await?
    }
}

async fn send(
    request: http::Request<bytes::Bytes>,
) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
    use http_body_util::BodyExt;
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("http") {
        return Err(format!("OTLP endpoint {uri}: only http:// is supported").into());
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("OTLP endpoint {uri} has no host"))?
        .clone();
    let address = format!(
        "{}:{}",
        authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']'),
        authority.port_u16().unwrap_or(80)
    );
    let (mut parts, body) = request.into_parts();
    parts.uri = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()?;
    parts
        .headers
        .insert(http::header::HOST, authority.as_str().parse()?);
    let request = http::Request::from_parts(parts, http_body_util::Full::new(body));
    let stream = tokio::net::TcpStream::connect(address).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await?
        .to_bytes();
    driver.abort();
    Ok(http::Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<ExportSettings>, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        export_settings(|k| map.get(k).cloned())
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_set() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Ok(None)
        );
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]);
        assert_eq!(
            on,
            Ok(Some(ExportSettings {
                protocol: Protocol::HttpProtobuf,
                sampler: Sampler {
                    ratio: 1.0,
                    parent_based: true
                }
            }))
        );
        let off = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert_eq!(off, Ok(None));
        let none = settings(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://x:4318/v1/traces",
            ),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]);
        assert_eq!(none, Ok(None));
    }

    #[test]
    fn protocol_comes_from_the_standard_variables() {
        let grpc = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert_eq!(grpc.unwrap().unwrap().protocol, Protocol::Grpc);
        let signal_wins = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(
            signal_wins.unwrap().unwrap().protocol,
            Protocol::HttpProtobuf
        );
        assert!(settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .is_err());
        let sampled = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ]);
        assert_eq!(sampled.unwrap().unwrap().sampler.ratio, 0.01);
        assert!(settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_TRACES_SAMPLER", "xray"),
        ])
        .is_err());
    }
}
