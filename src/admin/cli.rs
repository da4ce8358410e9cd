//! `gregor admin`: manages the metadata quorum through a broker's admin HTTP API (see
//! `admin_http.rs`). Any broker will do: changes sent to a broker that is not the active
//! controller are forwarded to it.
//!
//! ```text
//! gregor admin --admin-url http://127.0.0.1:9644 status
//! gregor admin --admin-url http://127.0.0.1:9644 add-learner 4 127.0.0.1:19393
//! gregor admin --admin-url http://127.0.0.1:9644 promote 4
//! gregor admin --admin-url http://127.0.0.1:9644 remove 3
//! ```

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Arguments of `gregor admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The admin HTTP address of any broker.
    #[arg(
        long,
        env = "GREGOR_ADMIN_URL",
        default_value = "http://127.0.0.1:9644"
    )]
    pub admin_url: String,
    /// How long to wait for an answer, in seconds (changes wait for learners to catch up).
    #[arg(long, default_value_t = 90)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// What `gregor admin` does.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Show the metadata quorum as this broker sees it: leader, term, voters, learners, log
    /// indexes, fenced brokers.
    Status,
    /// Add a node to the metadata quorum as a learner. Start the node first, with --voters
    /// listing the current voters and itself.
    AddLearner {
        node_id: u64,
        /// The new node's controller listener, HOST:PORT.
        address: String,
    },
    /// Promote a learner to voter, once it has caught up with the metadata log.
    Promote { node_id: u64 },
    /// Remove a voter or learner for good. Its id is retired: no node may use it again.
    Remove { node_id: u64 },
}

/// Runs the command and prints the broker's answer (JSON). Exit status 0 on success, 1 when
/// the broker refused or failed, 2 when it could not be reached.
pub fn run(args: &AdminArgs) -> ExitCode {
    let (method, path, body) = match &args.command {
        AdminCommand::Status => ("GET", "/raft/status".to_string(), None),
        AdminCommand::AddLearner { node_id, address } => (
            "POST",
            "/raft/learners".to_string(),
            Some(serde_json::json!({ "node_id": node_id, "address": address }).to_string()),
        ),
        AdminCommand::Promote { node_id } => ("POST", format!("/raft/voters/{node_id}"), None),
        AdminCommand::Remove { node_id } => ("DELETE", format!("/raft/voters/{node_id}"), None),
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    match http_request(&args.admin_url, method, &path, body.as_deref(), timeout) {
        Ok((status, text)) => {
            let shown = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(text);
            if (200..300).contains(&status) {
                println!("{shown}");
                ExitCode::SUCCESS
            } else {
                eprintln!("gregor admin: HTTP {status}");
                eprintln!("{shown}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("gregor admin: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Sends one HTTP/1.1 request to `base` (`http://host:port[/prefix]`) with hyper and returns
/// the status code and body.
pub fn http_request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let uri: hyper::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("admin URL {base:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("admin URL {base:?} must start with http://");
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("admin URL {base:?} has no host"))?
        .clone();
    let request = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.unwrap_or("").to_string(),
        )))
        .context("building the request")?;
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, exchange(&address, request))
            .await
            .map_err(|_| anyhow!("no answer from {address} within {timeout:?}"))?
    })
}

async fn exchange(
    address: &str,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(u16, String)> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {address}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("sending to {address}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading the answer of {address}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talks_to_an_http_server() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/raft/voters/{id}",
            axum::routing::post(|body: String| async move {
                (axum::http::StatusCode::CONFLICT, format!("got {body:?}"))
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        let (status, body) = http_request(
            &format!("http://{addr}/"),
            "POST",
            "/raft/voters/4",
            Some("{}"),
            Duration::from_secs(5),
        )
        .expect("answer");
        assert_eq!((status, body.as_str()), (409, "got \"{}\""));
        drop(runtime);
    }

    #[test]
    fn refuses_other_schemes() {
        let err = http_request("https://x:1", "GET", "/", None, Duration::from_secs(1));
        assert!(err.is_err());
    }
}
