//! Admin HTTP: liveness, readiness and Prometheus metrics.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::broker::Broker;

pub async fn run(broker: Arc<Broker>, listener: TcpListener) {
    let shutdown = broker.shutdown.clone();
    let app = Router::new()
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(broker);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin HTTP server failed");
    }
}

async fn ready(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    if broker.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP gregor_up Whether the broker is ready to serve."
    );
    let _ = writeln!(out, "# TYPE gregor_up gauge");
    let _ = writeln!(out, "gregor_up {}", u8::from(broker.is_ready()));
    let hosted = broker.replicas.hosted();
    let mut rows: Vec<(String, i32, i64, i64, i64, u64)> = Vec::new();
    for (topic, t) in hosted.iter() {
        for (index, p) in &t.partitions {
            rows.push((
                topic.clone(),
                *index,
                p.log.log_end_offset(),
                p.high_watermark(),
                p.log.log_start_offset(),
                p.log.size_bytes(),
            ));
        }
    }
    rows.sort();
    for (name, help, pick) in [
        (
            "gregor_partition_log_end_offset",
            "Next offset to be assigned.",
            2usize,
        ),
        (
            "gregor_partition_high_watermark",
            "Offsets below this are visible to consumers.",
            3,
        ),
        (
            "gregor_partition_log_start_offset",
            "First offset still in the log.",
            4,
        ),
        (
            "gregor_partition_size_bytes",
            "Bytes of segments on disk.",
            5,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for r in &rows {
            let v = match pick {
                2 => r.2,
                3 => r.3,
                4 => r.4,
                _ => r.5 as i64,
            };
            let _ = writeln!(out, "{name}{{topic=\"{}\",partition=\"{}\"}} {v}", r.0, r.1);
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], out)
}
