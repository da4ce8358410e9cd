//! gregor-chat: a small replicated chat service on Kafka (or Gregor), built on the rdkafka crate.
//!
//! Each replica:
//! - serves a line-based TCP interface to its users: connect (e.g. `nc HOST PORT`), send
//!   `/nick alice`, then every line is a message; `/quit` leaves;
//! - produces its users' messages to the chat topic, key = sender's nick (so one sender's
//!   messages land in one partition and stay in order), value = the text;
//! - consumes the whole topic in a consumer group of its own, `chat-replica-<replica id>`, so
//!   it sees every message from every replica, and writes each one to all its connected users
//!   as `<nick>: <text>` (a sender sees their own message once the broker has it).
//!
//! Where a replica starts reading: `auto.offset.reset=latest`, so a new replica id starts at the
//! end of the topic and does not replay history to its users. Offsets are auto-committed, so a
//! replica restarted with the same id resumes where it stopped (messages sent while it was down
//! go to whoever is connected by then). The replica logs `chat: ready` to stderr once its
//! consumer has its partitions and has reached the end of each: messages produced after that
//! line are delivered.
//!
//! SIGTERM or SIGINT: stop accepting users, tell connected users, flush the producer, leave the
//! consumer group (committing offsets), exit 0.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

/// Longest line a user may send (bytes, without the newline); longer ones close the connection.
const MAX_LINE: usize = 4096;
/// Chat lines buffered per user before a slow user starts missing messages.
const USER_BUFFER: usize = 4096;

#[derive(Parser, Debug)]
#[command(about = "A replicated chat service: users on any replica see every message.")]
struct Cli {
    /// Kafka bootstrap servers (bootstrap.servers).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Where users connect (line-based TCP).
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: String,
    /// This replica's id, unique among replicas. Its consumer group is chat-replica-<id>.
    #[arg(long)]
    replica_id: String,
    /// The chat topic.
    #[arg(long, default_value = "chat-topic")]
    topic: String,
    /// Partitions of the topic when this replica has to create it.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("chat: {msg}");
}

/// Tracks the consumer's assignment, to tell when the replica is ready.
#[derive(Default)]
struct ChatContext {
    assigned: Mutex<HashSet<i32>>,
}

impl ClientContext for ChatContext {}

impl ConsumerContext for ChatContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut assigned = self.assigned.lock().unwrap();
        match rebalance {
            Rebalance::Assign(tpl) => {
                assigned.extend(tpl.elements().iter().map(|e| e.partition()));
                log(format_args!("assigned partitions {:?}", sorted(&assigned)));
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    assigned.remove(&e.partition());
                }
            }
            Rebalance::Error(e) => log(format_args!("rebalance error: {e}")),
        }
    }
}

fn sorted(s: &HashSet<i32>) -> Vec<i32> {
    let mut v: Vec<i32> = s.iter().copied().collect();
    v.sort_unstable();
    v
}

struct Replica {
    id: String,
    topic: String,
    producer: FutureProducer,
    /// Chat lines (`<nick>: <text>`) for every connected user.
    lines: broadcast::Sender<Arc<str>>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.replica_id.is_empty() {
        bail!("--replica-id must not be empty");
    }
    ensure_topic(&cli).await?;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cli.bootstrap)
        .set("client.id", format!("chat-{}", cli.replica_id))
        .set("acks", "all")
        // with retries, idempotence keeps one sender's messages in order
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .context("creating the producer")?;

    let group = format!("chat-replica-{}", cli.replica_id);
    let consumer: StreamConsumer<ChatContext> = ClientConfig::new()
        .set("bootstrap.servers", &cli.bootstrap)
        .set("client.id", format!("chat-{}", cli.replica_id))
        .set("group.id", &group)
        // a new replica starts at the end of the topic: no history replay
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "true")
        // one EOF event per partition tells when the replica has caught up (ready)
        .set("enable.partition.eof", "true")
        .create_with_context(ChatContext::default())
        .context("creating the consumer")?;
    consumer.subscribe(&[&cli.topic]).context("subscribing")?;

    let listener = TcpListener::bind(&cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    log(format_args!(
        "replica {} listening on {}, topic {}, group {}",
        cli.replica_id,
        listener.local_addr()?,
        cli.topic,
        group
    ));

    let (lines, _) = broadcast::channel(USER_BUFFER);
    let replica = Arc::new(Replica {
        id: cli.replica_id.clone(),
        topic: cli.topic.clone(),
        producer,
        lines,
    });
    let (stop_tx, stop_rx) = watch::channel(false);

    let consuming = tokio::spawn(consume(consumer, replica.clone(), stop_rx.clone()));
    let mut users = tokio::task::JoinSet::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            sig = &mut signal => {
                log(format_args!("{sig}: shutting down"));
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    users.spawn(serve_user(stream, replica.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    log(format_args!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = users.join_next(), if !users.is_empty() => {}
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    // users get a goodbye line; a user who does not read it does not hold up the exit
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while users.join_next().await.is_some() {}
    })
    .await;
    users.abort_all();
    let flushed = tokio::task::spawn_blocking({
        let replica = replica.clone();
        move || replica.producer.flush(Duration::from_secs(5))
    })
    .await?;
    if let Err(e) = flushed {
        log(format_args!("producer flush: {e}"));
    }
    // the consumer task drops (closes) the consumer: it commits and leaves the group
    consuming.await?;
    log("stopped");
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Creates the topic unless it exists (replication factor: the broker's default).
async fn ensure_topic(cli: &Cli) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &cli.bootstrap)
        .create()
        .context("creating the admin client")?;
    let topic = NewTopic::new(&cli.topic, cli.partitions, TopicReplication::Fixed(-1));
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics([&topic], &opts)
        .await
        .context("CreateTopics")?
    {
        match result {
            Ok(name) => log(format_args!(
                "created topic {name} with {} partitions",
                cli.partitions
            )),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Reads the topic and hands every message to every connected user.
async fn consume(
    consumer: StreamConsumer<ChatContext>,
    replica: Arc<Replica>,
    mut stop: watch::Receiver<bool>,
) {
    let mut positioned: HashSet<i32> = HashSet::new();
    let mut ready = false;
    loop {
        let received = tokio::select! {
            _ = stop.changed() => break,
            r = consumer.recv() => r,
        };
        match received {
            Ok(m) => {
                positioned.insert(m.partition());
                let nick = m
                    .key()
                    .map(String::from_utf8_lossy)
                    .unwrap_or("anonymous".into());
                let text = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
                // one chat line per message, whatever another producer put in it
                let line = format!("{}: {}", nick, text).replace(['\r', '\n'], " ");
                let _ = replica.lines.send(line.into()); // Err: nobody is connected
            }
            Err(KafkaError::PartitionEOF(p)) => {
                positioned.insert(p);
            }
            Err(e) => log(format_args!("consumer: {e}")),
        }
        if !ready {
            let assigned = consumer.context().assigned.lock().unwrap();
            if !assigned.is_empty() && assigned.iter().all(|p| positioned.contains(p)) {
                ready = true;
                log(format_args!(
                    "ready: replica {} reads partitions {:?} of {}",
                    replica.id,
                    sorted(&assigned),
                    replica.topic
                ));
            }
        }
    }
    // closing commits the consumed offsets and leaves the group; it blocks, so not on a worker
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
}

enum Input {
    Line(String),
    Eof,
    TooLong,
}

/// One line from the user. Cancel safe: a partial line stays in `buf` for the next call.
async fn read_line(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Input> {
    let room = (MAX_LINE + 2).saturating_sub(buf.len()) as u64;
    let n = reader.take(room).read_until(b'\n', buf).await?;
    if buf.last() != Some(&b'\n') {
        if buf.len() > MAX_LINE {
            return Ok(Input::TooLong);
        }
        if n == 0 && buf.is_empty() {
            return Ok(Input::Eof);
        }
        if n == 0 {
            // end of stream after a last line without a newline
            let line = String::from_utf8_lossy(buf).into_owned();
            buf.clear();
            return Ok(Input::Line(line));
        }
    }
    let line = String::from_utf8_lossy(buf)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    buf.clear();
    if line.len() > MAX_LINE {
        return Ok(Input::TooLong);
    }
    Ok(Input::Line(line))
}

fn valid_nick(nick: &str) -> bool {
    (1..=32).contains(&nick.len())
        && nick
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.')
}

async fn serve_user(stream: TcpStream, replica: Arc<Replica>, mut stop: watch::Receiver<bool>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut chat = replica.lines.subscribe();
    let mut nick: Option<String> = None;
    let mut buf = Vec::new();
    let greeting = format!(
        "* welcome to chat replica {}: /nick NAME to choose your name, then type; /quit to leave\n",
        replica.id
    );
    if wr.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    loop {
        let reply: String = tokio::select! {
            _ = stop.changed() => {
                let _ = wr.write_all(b"* replica shutting down\n").await;
                break;
            }
            line = chat.recv() => match line {
                Ok(line) => format!("{line}\n"),
                Err(broadcast::error::RecvError::Lagged(n)) => format!("* you missed {n} messages\n"),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            input = read_line(&mut rd, &mut buf) => match input {
                Err(_) | Ok(Input::Eof) => break,
                Ok(Input::TooLong) => {
                    let _ = wr.write_all(b"* line too long\n").await;
                    break;
                }
                Ok(Input::Line(line)) => match handle_line(&replica, &mut nick, &line).await {
                    Some(reply) => reply,
                    None => break,
                },
            },
        };
        if !reply.is_empty() && wr.write_all(reply.as_bytes()).await.is_err() {
            break;
        }
    }
    if let Some(nick) = nick {
        log(format_args!("{nick} ({peer}) left"));
    }
}

/// Handles one line from a user: a command or a chat message. Returns the reply for this user
/// ("" for none), or None to close the connection.
async fn handle_line(replica: &Replica, nick: &mut Option<String>, line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() {
        return Some(String::new());
    }
    if let Some(cmd) = line.strip_prefix('/') {
        let (name, arg) = cmd
            .split_once(' ')
            .map_or((cmd, ""), |(n, a)| (n, a.trim()));
        return match name {
            "nick" if valid_nick(arg) => {
                *nick = Some(arg.to_string());
                Some(format!("* you are {arg}\n"))
            }
            "nick" => Some("* a nick is 1 to 32 letters, digits, '-', '_' or '.'\n".into()),
            "quit" => None,
            _ => Some(format!(
                "* unknown command /{name}: use /nick NAME or /quit\n"
            )),
        };
    }
    let Some(nick) = nick.as_deref() else {
        return Some("* choose a name first: /nick NAME\n".into());
    };
    // wait for the broker's ack: one user's messages go out one at a time, in order
    let record = FutureRecord::to(&replica.topic).key(nick).payload(line);
    match replica.producer.send(record, Duration::from_secs(10)).await {
        Ok(_) => Some(String::new()),
        Err((e, _)) => Some(format!("* not sent: {e}\n")),
    }
}
