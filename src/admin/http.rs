//! Admin HTTP: liveness, readiness, Prometheus metrics, the metadata quorum's membership, and
//! the web console (`/console`, `console/`).
//!
//! Quorum endpoints (JSON; `gregor admin` calls them). Changes may be sent to any node; a
//! node that is not the active controller forwards them to it over the controller RPC.
//! - `GET /raft/status`: this node's view (leader, term, voters, learners, log indexes; on the
//!   leader also each member's replication progress and last acknowledgement).
//! - `POST /raft/learners` with `{"node_id":4,"address":"127.0.0.1:19393"}`: add a learner
//!   (the address is the new node's controller listener).
//! - `POST /raft/voters/{id}`: promote a learner to voter once it has caught up.
//! - `DELETE /raft/voters/{id}` (or `/raft/learners/{id}`): remove a node for good; its id is
//!   retired and can never join again.
//!
//! Answers: 200 `{"ok":true,"message":..}`; 400 for malformed input, 409 when the change is
//! refused (nothing changed), 503 when no controller could do it (retrying is safe).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::meta::MembershipError;

pub async fn run(broker: Arc<Broker>, listener: TcpListener) {
    let shutdown = broker.shutdown.clone();
    let console = crate::admin::console::Console::start(broker.clone());
    crate::admin::metrics::set_lag_offsets(&broker, console.history.clone());
    let app = Router::new()
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/raft/status", get(raft_status))
        .route("/raft/learners", post(add_learner))
        .route("/raft/learners/{id}", delete(remove_node))
        .route("/raft/voters/{id}", post(promote_voter).delete(remove_node))
        .with_state(broker)
        .merge(crate::admin::console::router(console));
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin HTTP server failed");
    }
}

async fn ready(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    match broker.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::admin::metrics::render(&broker),
    )
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn json_reply(
    status: StatusCode,
    body: serde_json::Value,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut text = body.to_string();
    text.push('\n');
    (status, [JSON], text)
}

fn membership_reply(
    result: Result<String, MembershipError>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    match result {
        Ok(message) => json_reply(
            StatusCode::OK,
            serde_json::json!({ "ok": true, "message": message }),
        ),
        Err(e) => {
            let status = match e {
                MembershipError::Refused(_) => StatusCode::CONFLICT,
                MembershipError::NoLeader
                | MembershipError::Unavailable(_)
                | MembershipError::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
            };
            json_reply(
                status,
                serde_json::json!({ "ok": false, "error": e.to_string() }),
            )
        }
    }
}

async fn raft_status(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    match serde_json::to_value(broker.meta.status()) {
        Ok(v) => json_reply(StatusCode::OK, v),
        Err(e) => json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "ok": false, "error": e.to_string() }),
        ),
    }
}

#[derive(Deserialize)]
struct AddLearner {
    node_id: u64,
    address: String,
}

async fn add_learner(State(broker): State<Arc<Broker>>, body: String) -> impl IntoResponse {
    let req: AddLearner = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                serde_json::json!({
                    "ok": false,
                    "error": format!("expected {{\"node_id\":N,\"address\":\"HOST:PORT\"}}: {e}")
                }),
            )
        }
    };
    membership_reply(broker.meta.add_learner(req.node_id, req.address).await)
}

async fn promote_voter(
    State(broker): State<Arc<Broker>>,
    Path(id): Path<u64>,
) -> impl IntoResponse {
    membership_reply(broker.meta.promote_voter(id).await)
}

async fn remove_node(State(broker): State<Arc<Broker>>, Path(id): Path<u64>) -> impl IntoResponse {
    membership_reply(broker.meta.remove_node(id).await)
}
