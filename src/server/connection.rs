//! One client connection: reads size-prefixed frames, handles requests one after another in
//! arrival order (as Kafka does, so a producer's pipelined batches are appended in order), and
//! writes responses in the same order.
//!
//! A reader task stays ahead of the handler by at most `MAX_QUEUED_REQUESTS` frames, so socket
//! reads overlap request handling without unbounded buffering. A frame larger than
//! `socket.request.max.bytes` closes the connection before anything is allocated for it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::dispatch::{dispatch, Reply};
use crate::broker::Broker;

/// Requests read ahead of the one being handled, per connection.
const MAX_QUEUED_REQUESTS: usize = 16;
/// Per-connection read buffer; a larger frame body is read straight into its own buffer.
const READ_BUFFER_BYTES: usize = 8 * 1024;

enum Inbound {
    Frame(Bytes),
    /// The reader stopped: end of stream, an I/O error, or an invalid frame size.
    Closed(Option<String>),
}

pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    broker
        .metrics
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    broker
        .metrics
        .connections_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (read_half, write_half) = stream.into_split();
    // Small requests arrive with their size prefix in one read instead of two.
    let mut read_half = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    let (tx, mut rx) = mpsc::channel::<Inbound>(MAX_QUEUED_REQUESTS);
    let max_frame = broker.config.kafka.socket_request_max_bytes;
    let shutdown = broker.shutdown.clone();

    let reader = tokio::spawn(async move {
        loop {
            let size = tokio::select! {
                r = read_half.read_i32() => r,
                _ = shutdown.cancelled() => {
                    let _ = tx.send(Inbound::Closed(None)).await;
                    return;
                }
            };
            let size = match size {
                Ok(s) => s,
                Err(e) => {
                    let reason = (e.kind() != std::io::ErrorKind::UnexpectedEof)
                        .then(|| format!("read error: {e}"));
                    let _ = tx.send(Inbound::Closed(reason)).await;
                    return;
                }
            };
            if size < 0 || size as usize > max_frame {
                let _ = tx
                    .send(Inbound::Closed(Some(format!(
                        "frame size {size} outside 0..={max_frame} (socket.request.max.bytes)"
                    ))))
                    .await;
                return;
            }
            // Filled straight from the socket: no zeroing pass over the frame first.
            let size = size as usize;
            let mut buf = BytesMut::with_capacity(size);
            let mut truncated = None;
            while buf.len() < size {
                let remaining = (size - buf.len()) as u64;
                match (&mut read_half).take(remaining).read_buf(&mut buf).await {
                    Ok(0) => truncated = Some("connection closed".to_string()),
                    Ok(_) => continue,
                    Err(e) => truncated = Some(e.to_string()),
                }
                break;
            }
            if let Some(e) = truncated {
                let _ = tx
                    .send(Inbound::Closed(Some(format!("truncated frame: {e}"))))
                    .await;
                return;
            }
            if tx.send(Inbound::Frame(buf.freeze())).await.is_err() {
                return;
            }
        }
    });

    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
    let close_reason: Option<String> = loop {
        let Some(inbound) = rx.recv().await else {
            break None;
        };
        let frame = match inbound {
            Inbound::Frame(f) => f,
            Inbound::Closed(reason) => break reason,
        };
        let api_key = if frame.len() >= 2 {
            i16::from_be_bytes([frame[0], frame[1]])
        } else {
            -1
        };
        let started = std::time::Instant::now();
        let reply = dispatch(&broker, &peer, frame).await;
        broker
            .metrics
            .observe(api_key, started.elapsed(), matches!(reply, Reply::Close(_)));
        match reply {
            Reply::Frame(response) => {
                if let Err(e) = writer.write_all(&response).await {
                    break Some(format!("write error: {e}"));
                }
            }
            Reply::Nothing => {}
            Reply::Close(reason) => break Some(reason),
        }
        // Flush when no further request is already waiting, so pipelined responses share
        // one write.
        if rx.is_empty() {
            if let Err(e) = writer.flush().await {
                break Some(format!("write error: {e}"));
            }
        }
    };
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
    reader.abort();
    broker
        .metrics
        .connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(reason) = close_reason {
        tracing::warn!(%peer, reason = %reason, "closing client connection");
    } else {
        tracing::debug!(%peer, "client disconnected");
    }
}
