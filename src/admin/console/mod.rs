//! The web console, served by the admin HTTP listener under `/console`: read-only pages
//! rendered on the server from the broker's own state and, for the rest of the cluster, from
//! Kafka requests to the other brokers (`peers`). A little JavaScript draws the charts and
//! refreshes the live numbers; the stylesheet and script are embedded in the binary.
//!
//! Pages: `cluster` (brokers, controller, Raft voters and learners, fenced brokers), `topics`
//! (partitions, leaders, replicas, ISR, sizes, configs), `groups` (members, assignment, lag
//! per partition and a lag chart of the last minutes), `messages` (a bounded message
//! browser), `throughput` (live per-topic rates). Authentication and ACLs: `auth.rs`.

mod auth;
mod cluster;
mod groups;
mod layout;
mod messages;
pub mod peers;
mod records;
pub mod sampler;
mod throughput;
mod topics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::broker::Broker;
use auth::{Authenticator, Viewer};
use peers::Peers;
use sampler::History;

/// The console's shared state.
pub struct Console {
    pub broker: Arc<Broker>,
    pub peers: Arc<Peers>,
    pub history: Arc<History>,
    auth: Authenticator,
}

impl Console {
    /// The console for `broker`; its sampler runs until shutdown.
    pub fn start(broker: Arc<Broker>) -> Arc<Self> {
        let console = Arc::new(Self {
            peers: Arc::new(Peers::default()),
            history: Arc::new(History::default()),
            auth: Authenticator::default(),
            broker,
        });
        tokio::spawn(sampler::run(
            console.broker.clone(),
            console.peers.clone(),
            console.history.clone(),
        ));
        console
    }

    fn viewer(&self, headers: &HeaderMap, peer: SocketAddr) -> Option<Viewer> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.auth
            .viewer(&self.broker, authorization, &peer.ip().to_string())
    }
}

/// The console's routes, to merge into the admin router.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/cluster") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/cluster") }),
        )
        .route("/console/cluster", get(cluster_page))
        .route("/console/topics", get(topics_page))
        .route("/console/topics/{topic}", get(topic_page))
        .route("/console/groups", get(groups_page))
        .route("/console/groups/{group}", get(group_page))
        .route("/console/groups/{group}/lag.json", get(group_lag))
        .route("/console/messages", get(messages_page))
        .route("/console/throughput", get(throughput_page))
        .route("/console/throughput.json", get(throughput_json))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .with_state(console)
}

/// A query string's `name=value` pairs, percent- and `+`-decoded (the last of a name wins).
fn query_params(query: Option<&str>) -> HashMap<String, String> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"Gregor console\", charset=\"UTF-8\"",
        )],
        "authentication required: the broker's SASL users (SCRAM or PLAIN)\n",
    )
        .into_response()
}

/// A page's outcome: HTML, or a status with a message.
pub enum Page {
    Html(String),
    Json(String),
    Status(StatusCode, String),
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        match self {
            Page::Html(body) => (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                body,
            )
                .into_response(),
            Page::Json(body) => (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                body,
            )
                .into_response(),
            Page::Status(status, text) => (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                layout::page(
                    status.canonical_reason().unwrap_or("Error"),
                    "",
                    None,
                    &layout::notice(&text),
                ),
            )
                .into_response(),
        }
    }
}

/// The viewer of a page, authenticated before the handler runs: a request that does not
/// authenticate is answered 401 with the Basic challenge.
struct Authenticated(Viewer);

impl FromRequestParts<Arc<Console>> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Arc<Console>) -> Result<Self, Response> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied()
        else {
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        c.viewer(&parts.headers, peer)
            .map(Authenticated)
            .ok_or_else(unauthorized)
    }
}

async fn cluster_page(
    State(c): State<Arc<Console>>,
    Authenticated(viewer): Authenticated,
) -> Response {
    cluster::render(&c, &viewer).await.into_response()
}

async fn topics_page(
    State(c): State<Arc<Console>>,
    Authenticated(viewer): Authenticated,
) -> Response {
    topics::list(&c, &viewer).await.into_response()
}

async fn topic_page(
    State(c): State<Arc<Console>>,
    Authenticated(viewer): Authenticated,
    Path(topic): Path<String>,
) -> Response {
    topics::detail(&c, &viewer, &topic).await.into_response()
}

async fn groups_page(
    State(c): State<Arc<Console>>,
    Authenticated(viewer): Authenticated,
) -> Response {
    groups::list(&c, &viewer).await.into_response()
}

async fn group_page(
    State(c): State<Arc<Console>>,
    Authenticated(viewer): Authenticated,
    Path(group): Path<String>,
) -> Response {
    groups::detail(&c, &viewer, &group).await.into_response()
}

async fn group_lag(
    State(c): State<Arc<Console>>,
    Authenticated(viewer): Authenticated,
    Path(group): Path<String>,
) -> Response {
    groups::lag_json(&c, &viewer, &group).into_response()
}

async fn messages_page(
    State(c): State<Arc<Console>>,
    Authenticated(viewer): Authenticated,
    RawQuery(query): RawQuery,
) -> Response {
    let params = query_params(query.as_deref());
    messages::render(&c, &viewer, &params).await.into_response()
}

async fn throughput_page(
    State(c): State<Arc<Console>>,
    Authenticated(viewer): Authenticated,
) -> Response {
    throughput::render(&c, &viewer).into_response()
}

async fn throughput_json(
    State(c): State<Arc<Console>>,
    Authenticated(viewer): Authenticated,
) -> Response {
    throughput::json(&c, &viewer).into_response()
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("assets/console.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("assets/console.js"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_strings_are_decoded() {
        let p = super::query_params(Some(
            "topic=a%2Fb&partition=2&timestamp=2026-01-01T00%3A00%3A00Z&x=a+b&bad=%zz&end=%4",
        ));
        assert_eq!(p["topic"], "a/b");
        assert_eq!(p["partition"], "2");
        assert_eq!(p["timestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(p["x"], "a b");
        assert_eq!(p["bad"], "%zz");
        assert_eq!(p["end"], "%4");
        assert!(super::query_params(None).is_empty());
    }
}
