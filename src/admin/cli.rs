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

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
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

/// Sends one HTTP/1.1 request to `base` (`http://host:port[/prefix]`) and returns the status
/// code and body.
pub fn http_request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("admin URL {base:?} must start with http://"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        bail!("admin URL {base:?} has no host");
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .collect();
    let mut last_err = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, Duration::from_secs(5)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        return Err(match last_err {
            Some(e) => anyhow!("connecting to {with_port}: {e}"),
            None => anyhow!("{with_port} resolves to no address"),
        });
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("sending to {with_port}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {with_port}"))?;
    parse_response(&raw)
}

/// Parses an HTTP/1.1 response (identity, content-length or chunked body).
fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response (no header end)"))?;
    let head = std::str::from_utf8(&raw[..end]).context("malformed HTTP response header")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok();
            }
        }
    }
    let mut body = &raw[end + 4..];
    let bytes = if chunked {
        let mut out = Vec::new();
        loop {
            let line_end = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| anyhow!("malformed chunked body"))?;
            let size_text = std::str::from_utf8(&body[..line_end])?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| anyhow!("malformed chunk size {size_text:?}"))?;
            body = &body[line_end + 2..];
            if size == 0 {
                break;
            }
            if body.len() < size {
                bail!("truncated chunked body");
            }
            out.extend_from_slice(&body[..size]);
            body = body.get(size + 2..).unwrap_or_default();
        }
        out
    } else {
        match length {
            Some(n) if n <= body.len() => body[..n].to_vec(),
            Some(_) => bail!("truncated HTTP body"),
            None => body.to_vec(),
        }
    };
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n{}\n\nextra").unwrap();
        assert_eq!((s, b.as_str()), (200, "{}\n\n"));
        let (s, b) = parse_response(
            b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_str()), (409, "abcde"));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nab").is_err());
    }

    #[test]
    fn refuses_other_schemes() {
        let err = http_request("https://x:1", "GET", "/", None, Duration::from_secs(1));
        assert!(err.is_err());
    }
}
