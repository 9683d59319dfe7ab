//! The desktops: `/events` stream clients on a runtime of their own, and
//! what each received.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::CHANNEL;

/// The desktops' own runtime: in production they are other machines, and
/// their reading must not hold up the callback load's tasks on this
/// process's threads (the OS shares the cores between both runtimes).
pub struct Desktops(Option<tokio::runtime::Runtime>);

impl Desktops {
    pub fn new() -> anyhow::Result<Desktops> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("desktops")
            .enable_all()
            .build()?;
        Ok(Desktops(Some(runtime)))
    }

    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.as_ref().expect("running").spawn(task)
    }
}

impl Drop for Desktops {
    fn drop(&mut self) {
        // A runtime may not be dropped from async code: let it go in the
        // background.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What one stream client saw.
#[derive(Default)]
pub struct Received {
    /// (message key, when it arrived)
    pub events: Vec<(u64, Instant)>,
    /// Events of another user number than the stream's filter.
    pub foreign: usize,
    /// Events whose position was not after the one before.
    pub out_of_order: usize,
    /// When each chunk with events arrived: one socket write of the
    /// service each.
    pub writes: Vec<Instant>,
}

pub static RECEIVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Events received by this phase's streams so far.
pub fn received_total() -> usize {
    RECEIVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// One desktop: `/events`, filtered to user number `u<user>` or not, read
/// until aborted, into `received`. Says when the stream answered.
pub async fn stream_client(
    port: u16,
    token: String,
    user: Option<usize>,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
    shared: Arc<Mutex<Received>>,
) -> anyhow::Result<()> {
    let query = user.map_or(String::new(), |u| format!("?user_number=u{u}"));
    let opened = async {
        let mut stream = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await?);
        stream
            .get_mut()
            .write_all(
                format!(
                    "GET /api/v1/channels/{CHANNEL}/events{query} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        anyhow::ensure!(line.contains(" 200 "), "the stream answered {line}");
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        anyhow::Ok(stream)
    }
    .await;
    let mut stream = match opened {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("{e}")));
            return Err(e);
        }
    };
    let mut received = Received::default();
    let expected_user = user.map(|u| format!("u{u}"));
    let (mut body, mut last) = (Vec::<u8>::new(), (0u64, 0u64));
    let mut line = String::new();
    loop {
        // Chunked transfer: a size line, that many bytes, CRLF.
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            anyhow::bail!("the service ended a stream");
        }
        let size = usize::from_str_radix(line.trim(), 16)?;
        if size == 0 {
            anyhow::bail!("the service ended a stream");
        }
        let start = body.len();
        body.resize(start + size + 2, 0);
        stream.read_exact(&mut body[start..]).await?;
        body.truncate(start + size);
        let arrived = Instant::now();
        // Whole events only; a partial one waits for the next chunk. Parsed
        // in place: the 10 unfiltered streams take every change.
        let mut consumed = 0;
        while let Some(end) = find(&body[consumed..], b"\n\n") {
            let block = &body[consumed..consumed + end];
            consumed += end + 2;
            let Some(data) = find(block, b"data: ").map(|i| &block[i..]) else {
                continue; // a heartbeat
            };
            let position = field(data, b"\"position\":\"");
            let (x, s) = position.split_once('-').unwrap_or(("0", "0"));
            let position = (x.parse()?, s.parse()?);
            if position <= last {
                received.out_of_order += 1;
            }
            last = position;
            if expected_user
                .as_deref()
                .is_some_and(|u| field(data, b"\"user_number\":\"") != u)
            {
                received.foreign += 1;
            }
            received
                .events
                .push((key(field(data, b"\"message_id\":\"")), arrived));
        }
        body.drain(..consumed);
        if !received.events.is_empty() {
            received.writes.push(arrived);
        }
        RECEIVED.fetch_add(received.events.len(), std::sync::atomic::Ordering::Relaxed);
        // Handed over once per chunk: the main task reads it after aborting.
        let mut shared = shared.lock().unwrap();
        shared.events.append(&mut received.events);
        shared.foreign += std::mem::take(&mut received.foreign);
        shared.out_of_order += std::mem::take(&mut received.out_of_order);
        shared.writes.append(&mut received.writes);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A string field of an event's JSON data, after `key` (`"name":"`); no
/// escapes in this benchmark.
fn field<'a>(data: &'a [u8], key: &[u8]) -> &'a str {
    find(data, key)
        .map(|i| &data[i + key.len()..])
        .and_then(|rest| rest.split(|&b| b == b'"').next())
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or_default()
}

/// `p<phase>-c<connection>-<n>` as one number: connection and n.
pub fn key(message_id: &str) -> u64 {
    let mut parts = message_id.split('-').skip(1);
    let c: u64 = parts
        .next()
        .and_then(|c| c[1..].parse().ok())
        .unwrap_or(u64::MAX >> 32);
    let n: u64 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    c << 32 | n
}
