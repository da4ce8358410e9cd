//! One client connection: reads size-prefixed frames, handles requests one after another in
//! arrival order (as Kafka does, so a producer's pipelined batches are appended in order), and
//! writes responses in the same order.
//!
//! A reader task stays ahead of the handler by at most `MAX_QUEUED_REQUESTS` frames, so socket
//! reads overlap request handling without unbounded buffering. Every frame's bytes are leased
//! from the broker's request memory pool (`queued.max.request.bytes`) before the frame is read,
//! and given back once its request is handled: when the pool is spent, the reader stops reading
//! the socket. A frame larger than `socket.request.max.bytes` closes the connection before
//! anything is allocated for it. Until a SASL connection has authenticated, the bound is
//! Kafka's `sasl.server.max.receive.size` (512 KiB) instead.
//!
//! A client over a quota is throttled as in Kafka: the connection is muted (neither read nor
//! served) for the throttle time. With KIP-219 response versions the response goes out
//! first and the client waits by itself as well; with older ones the response is held back
//! until the throttle time has passed.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::dispatch::{dispatch, Reply};
use super::frame::ResponseFrame;
use super::memory_pool::{Lease, MemoryPool};
use super::throttle::Throttle;
use crate::api::session::Session;
use crate::broker::Broker;

/// Requests read ahead of the one being handled, per connection.
const MAX_QUEUED_REQUESTS: usize = 16;
/// Per-connection read buffer; a larger frame body is read straight into its own buffer.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// Per-connection write buffer: pipelined small responses share one write.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// Largest frame before authentication on a SASL listener (Kafka's
/// `sasl.server.max.receive.size` default).
const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// Until when a throttled connection is muted, shared by its reader and its handler.
struct Mute {
    base: Instant,
    /// Nanoseconds after `base`; 0 when never muted.
    until: AtomicU64,
}

impl Mute {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            until: AtomicU64::new(0),
        }
    }

    fn mute_for(&self, ms: i64) {
        let until = self.base.elapsed() + Duration::from_millis(ms.max(0) as u64);
        self.until
            .fetch_max(until.as_nanos() as u64, Ordering::Relaxed);
    }

    /// How long the connection stays muted, if it is.
    fn remaining(&self) -> Option<Duration> {
        let until = self.until.load(Ordering::Relaxed);
        if until == 0 {
            return None; // never throttled: no clock read
        }
        Duration::from_nanos(until)
            .checked_sub(self.base.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// Waits until the connection is unmuted (or the broker shuts down).
    async fn wait(&self, shutdown: &CancellationToken) {
        if let Some(d) = self.remaining() {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}

enum Inbound {
    /// A request frame and the memory it holds from the pool.
    Frame(Bytes, Lease),
    /// The reader stopped: end of stream, an I/O error, or an invalid frame size.
    Closed(Option<String>),
}

/// Serves a plaintext connection (its halves split without a lock, so Fetch record slices go
/// to the socket with `writev`).
pub async fn serve_tcp(
    broker: Arc<Broker>,
    pool: Arc<MemoryPool>,
    stream: TcpStream,
    peer: SocketAddr,
    session: Session,
) {
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    serve(broker, pool, read_half, write_half, peer, session).await
}

/// Serves a connection over any stream (TLS).
pub async fn serve_stream<S>(
    broker: Arc<Broker>,
    pool: Arc<MemoryPool>,
    stream: S,
    peer: SocketAddr,
    session: Session,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    serve(broker, pool, read_half, write_half, peer, session).await
}

async fn serve<R, W>(
    broker: Arc<Broker>,
    pool: Arc<MemoryPool>,
    read_half: R,
    write_half: W,
    peer: SocketAddr,
    session: Session,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    broker.metrics.connections.fetch_add(1, Ordering::Relaxed);
    broker
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    // Small requests arrive with their size prefix in one read instead of two.
    let read_half = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    let (tx, rx) = mpsc::channel::<Inbound>(MAX_QUEUED_REQUESTS);
    let max_frame = Arc::new(AtomicUsize::new(
        if session.authentication.authenticated() {
            broker.config.kafka.socket_request_max_bytes
        } else {
            MAX_UNAUTHENTICATED_FRAME
        },
    ));
    let mute = Arc::new(Mute::new());
    let reader = tokio::spawn(read_frames(
        read_half,
        tx,
        pool,
        max_frame.clone(),
        mute.clone(),
        broker.shutdown.clone(),
    ));
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write_half);
    let mut session = session;
    let close_reason =
        handle_requests(&broker, &mut session, rx, &mut writer, &max_frame, &mute).await;
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
    reader.abort();
    broker.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    if let Some(reason) = close_reason {
        tracing::warn!(%peer, reason = %reason, "closing client connection");
    } else {
        tracing::debug!(%peer, "client disconnected");
    }
}

/// Handles requests in order until the reader stops or a request asks to close. Returns why
/// the connection closes, if it is an error.
async fn handle_requests<W: AsyncWrite + Unpin>(
    broker: &Broker,
    session: &mut Session,
    mut rx: mpsc::Receiver<Inbound>,
    writer: &mut BufWriter<W>,
    max_frame: &AtomicUsize,
    mute: &Mute,
) -> Option<String> {
    loop {
        let (frame, lease) = match rx.recv().await? {
            Inbound::Frame(f, lease) => (f, lease),
            Inbound::Closed(reason) => return reason,
        };
        let api_key = if frame.len() >= 2 {
            i16::from_be_bytes([frame[0], frame[1]])
        } else {
            -1
        };
        let started = std::time::Instant::now();
        let mut throttle = Throttle::default();
        let reply = dispatch(broker, session, frame, &mut throttle).await;
        // The request is handled: its memory goes back to the pool before the response is
        // written, so a slow reader of responses does not hold request memory.
        drop(lease);
        if session.authentication.authenticated() {
            max_frame.store(
                broker.config.kafka.socket_request_max_bytes,
                Ordering::Relaxed,
            );
        }
        let closes = matches!(reply, Reply::Close(_) | Reply::FrameThenClose(..));
        broker.metrics.observe(api_key, started.elapsed(), closes);
        let throttled = throttle.time_ms > 0;
        if throttled {
            mute.mute_for(throttle.time_ms);
            if !throttle.client_throttles {
                // An older client does not wait by itself: hold its response back.
                mute.wait(&broker.shutdown).await;
            }
        }
        match reply {
            Reply::Frame(response) => {
                if let Err(e) = write_frame(writer, &response).await {
                    return Some(format!("write error: {e}"));
                }
            }
            Reply::Nothing => {}
            Reply::Close(reason) => return Some(reason),
            Reply::FrameThenClose(response, reason) => {
                let _ = write_frame(writer, &response).await;
                let _ = writer.flush().await;
                return Some(reason);
            }
        }
        // Flush when no further request is already waiting, so pipelined responses share
        // one write.
        if rx.is_empty() || throttled {
            if let Err(e) = writer.flush().await {
                return Some(format!("write error: {e}"));
            }
        }
        // Muted: serve nothing more until the throttle time has passed.
        if throttled {
            mute.wait(&broker.shutdown).await;
        }
    }
}

/// Reads frames until the stream ends, a frame is invalid, or the broker shuts down.
async fn read_frames(
    mut read_half: impl AsyncRead + Unpin,
    tx: mpsc::Sender<Inbound>,
    pool: Arc<MemoryPool>,
    max_frame: Arc<AtomicUsize>,
    mute: Arc<Mute>,
    shutdown: CancellationToken,
) {
    let closed = loop {
        // A throttled connection is not read until its throttle time has passed.
        mute.wait(&shutdown).await;
        let size = tokio::select! {
            r = read_half.read_i32() => r,
            _ = shutdown.cancelled() => break None,
        };
        let size = match size {
            Ok(s) => s,
            Err(e) => {
                break (e.kind() != std::io::ErrorKind::UnexpectedEof)
                    .then(|| format!("read error: {e}"))
            }
        };
        let max_frame = max_frame.load(Ordering::Relaxed);
        if size < 0 || size as usize > max_frame {
            break Some(format!(
                "frame size {size} outside 0..={max_frame} (socket.request.max.bytes, or \
                 sasl.server.max.receive.size before authentication)"
            ));
        }
        let size = size as usize;
        // Backpressure: wait for memory before reading (and allocating) the frame.
        let lease = tokio::select! {
            lease = pool.lease(size) => lease,
            _ = shutdown.cancelled() => break None,
        };
        match read_body(&mut read_half, size).await {
            Ok(frame) => {
                if tx.send(Inbound::Frame(frame, lease)).await.is_err() {
                    return;
                }
            }
            Err(e) => break Some(format!("truncated frame: {e}")),
        }
    };
    let _ = tx.send(Inbound::Closed(closed)).await;
}

/// Reads a frame body of `size` bytes straight from the socket (no zeroing pass first).
async fn read_body(
    read_half: &mut (impl AsyncRead + Unpin),
    size: usize,
) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        let remaining = (size - buf.len()) as u64;
        if (&mut *read_half).take(remaining).read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
    }
    Ok(buf.freeze())
}

/// Writes one response frame. A frame in parts (a Fetch response around its record slices)
/// goes to the socket with vectored writes after what is buffered, so record bytes are never
/// copied in user space.
async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut BufWriter<W>,
    frame: &ResponseFrame,
) -> std::io::Result<()> {
    match frame {
        ResponseFrame::One(bytes) => writer.write_all(bytes).await,
        ResponseFrame::Parts(parts) => {
            writer.flush().await?;
            write_all_vectored(writer.get_mut(), parts).await
        }
    }
}

/// Writes every part, in order, with as few `writev` calls as the socket allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    out: &mut W,
    parts: &[Bytes],
) -> std::io::Result<()> {
    let mut part = 0;
    let mut offset = 0;
    while part < parts.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&parts[part][offset..])
            .chain(parts[part + 1..].iter().map(|p| &p[..]))
            .take(MAX_IOVECS)
            .map(IoSlice::new)
            .collect();
        let mut written = out.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "the socket accepted no bytes",
            ));
        }
        while written > 0 && part < parts.len() {
            let left = parts[part].len() - offset;
            if written >= left {
                written -= left;
                part += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    Ok(())
}
