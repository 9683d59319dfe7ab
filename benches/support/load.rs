//! The callback load: seed-shaped reports posted back to back on
//! keep-alive connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{read_answer, report_request};

/// Seed-shaped message ids: 33 random hex digits.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn message_id(&mut self) -> String {
        format!(
            "{:016x}{:016x}{:x}",
            self.next(),
            self.next(),
            self.next() % 16
        )
    }

    pub fn user_number(&mut self) -> String {
        format!("86{:011}", self.next() % 1_000_000)
    }
}

/// Callbacks on `connections` keep-alive connections for `duration`: the
/// rate answered 200 and every latency, sorted.
pub async fn callbacks(
    port: u16,
    channel: &'static str,
    password: &'static str,
    connections: usize,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = (0..connections).map(|c| {
        tokio::spawn(callback_client(
            port,
            channel,
            password,
            seed * 1000 + c as u64 + 1,
            move || Instant::now() < deadline,
        ))
    });
    gather(started, tasks.collect()).await
}

/// One connection's answers: how many were 200, and every latency.
type Answers = anyhow::Result<(u64, Vec<Duration>)>;

/// The connections' answers together: the rate answered 200 since
/// `started` and every latency, sorted.
async fn gather(
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Answers>>,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let (mut ok, mut latencies) = (0, Vec::new());
    for t in tasks {
        let (n, l) = t.await??;
        ok += n;
        latencies.extend(l);
    }
    latencies.sort();
    Ok((ok as f64 / started.elapsed().as_secs_f64(), latencies))
}

/// Reports of random seed-shaped messages on one keep-alive connection
/// while `go_on`: how many were answered 200, and every latency.
pub async fn callback_client(
    port: u16,
    channel: &str,
    password: &str,
    seed: u64,
    go_on: impl Fn() -> bool,
) -> anyhow::Result<(u64, Vec<Duration>)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    post_reports(stream, channel, password, seed, go_on).await
}

/// Reports of random seed-shaped messages on one open keep-alive
/// connection (plain or TLS) while `go_on`: how many were answered 200,
/// and every latency.
pub async fn post_reports<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    channel: &str,
    password: &str,
    seed: u64,
    go_on: impl Fn() -> bool,
) -> anyhow::Result<(u64, Vec<Duration>)> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let next = || {
        let status = ["delivered", "read", "failed"][(rng.next() % 3) as usize];
        report_body(&rng.message_id(), &rng.user_number(), status)
    };
    post_bodies(stream, channel, password, next, go_on).await
}

/// A report of the seed's shape.
fn report_body(message_id: &str, user_number: &str, status: &str) -> String {
    format!(
        r#"{{"message_id":"{message_id}","sender":"86173xxxx4526","user_number":"{user_number}","status":"{status}"}}"#
    )
}

/// The reports `next` gives, posted one after another on one open
/// keep-alive connection while `go_on`: how many were answered 200, and
/// every latency.
async fn post_bodies<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    channel: &str,
    password: &str,
    mut next: impl FnMut() -> String,
    go_on: impl Fn() -> bool,
) -> anyhow::Result<(u64, Vec<Duration>)> {
    let mut stream = BufReader::new(stream);
    let (mut ok, mut latencies) = (0, Vec::new());
    while go_on() {
        let body = next();
        let sent = Instant::now();
        stream
            .get_mut()
            .write_all(report_request(channel, password, &body).as_bytes())
            .await?;
        // A TLS stream buffers its writes.
        stream.get_mut().flush().await?;
        let code = read_answer(&mut stream).await?;
        latencies.push(sent.elapsed());
        ok += u64::from(code == 200);
    }
    Ok((ok, latencies))
}

/// Messages the service already knows (registered as `sent`): their ids
/// and user numbers, for reports on them.
pub type Known = std::sync::Arc<[(String, String)]>;

/// Callbacks on known messages on `connections` keep-alive connections for
/// `duration`: connection `c` reports on messages `c`, `c + connections`,
/// ... in turn, `delivered` the first time round, `read` after (a repeat of
/// `read` once every message has been read). The rate answered 200 and
/// every latency, sorted.
pub async fn known_callbacks(
    port: u16,
    channel: &'static str,
    password: &'static str,
    connections: usize,
    duration: Duration,
    known: Known,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = (0..connections).map(|c| {
        let known = known.clone();
        tokio::spawn(async move {
            let stream = TcpStream::connect(("127.0.0.1", port)).await?;
            stream.set_nodelay(true)?;
            let mut i = c;
            let next = || {
                let (message_id, user_number) = &known[i % known.len()];
                let status = if i < known.len() { "delivered" } else { "read" };
                i += connections;
                report_body(message_id, user_number, status)
            };
            post_bodies(stream, channel, password, next, move || {
                Instant::now() < deadline
            })
            .await
        })
    });
    gather(started, tasks.collect()).await
}
