//! Test harness: starts the real `gregor` binary on ephemeral ports in a temp dir, and a
//! minimal blocking Kafka client built on the kafka-protocol codecs.
#![allow(dead_code)]

pub mod requests;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Broker {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub controller_port: u16,
    pub admin_port: u16,
    extra: Vec<(String, String)>,
    child: Option<Child>,
}

impl Broker {
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// `env` entries like ("GREGOR_KAFKA_NUM_PARTITIONS", "3").
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let mut b = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            controller_port: free_port(),
            admin_port: free_port(),
            extra: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        // free_port() releases the port before gregor binds it, so a concurrently starting
        // test can take it in between: then pick fresh ports and start again.
        for _ in 0..5 {
            match b.try_launch() {
                Ok(()) => return b,
                Err(log) if log.contains("Address already in use") => {
                    b.port = free_port();
                    b.controller_port = free_port();
                    b.admin_port = free_port();
                }
                Err(log) => panic!("{log}"),
            }
        }
        panic!("gregor found no free ports in 5 tries:\n{}", b.log_tail());
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gregor.log")
    }

    pub fn launch(&mut self) {
        if let Err(log) = self.try_launch() {
            panic!("{log}");
        }
    }

    /// Starts the process and waits for it to be ready; Err(the log tail) if it exits first
    /// or is not ready in 30 s.
    fn try_launch(&mut self) -> Result<(), String> {
        let before = self.ready_lines();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gregor"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--controller-listen")
            .arg(format!("127.0.0.1:{}", self.controller_port))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", self.admin_port))
            .stdout(Stdio::null())
            .stderr(log)
            // the broker's own log settings, not the caller's
            .env_remove("RUST_LOG");
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn gregor"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.ready_lines() > before {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "gregor exited early ({status}):\n{}",
                        self.log_tail()
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("gregor not ready in 30 s:\n{}", self.log_tail()))
    }

    fn ready_lines(&self) -> usize {
        std::fs::read_to_string(self.log_path())
            .map(|s| s.matches("gregor ready").count())
            .unwrap_or(0)
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_kill(child.id(), 15);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("gregor did not stop on SIGTERM:\n{}", self.log_tail());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// kill -9 and wait.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir()
            .join("logs")
            .join(format!("{topic}-{partition}"))
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking Kafka client: one request at a time.
pub struct Client {
    pub stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Self {
            stream,
            correlation: 0,
        }
    }

    pub fn send_raw(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).expect("write");
    }

    /// Reads one response frame body (after the size), or None if the broker closed.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let size = i32::from_be_bytes(size) as usize;
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    pub fn encode<R: Request>(&mut self, version: i16, req: &R) -> BytesMut {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("gregor-it")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("header");
        req.encode(&mut body, version).expect("body");
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        frame
    }

    /// Sends a request and decodes its response.
    pub fn call<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        let frame = self.encode(version, req);
        self.send_raw(&frame);
        let mut body = self.read_frame().expect("response");
        let key = ApiKey::try_from(R::KEY).expect("key");
        let header =
            ResponseHeader::decode(&mut body, key.response_header_version(version)).expect("hdr");
        assert_eq!(header.correlation_id, self.correlation);
        let resp = R::Response::decode(&mut body, version).expect("decode response");
        assert!(!body.has_remaining(), "trailing bytes in response");
        resp
    }

    /// True if the broker closed the connection (EOF) within the read timeout.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
