//! Live events benchmark: callbacks beside thousands of agent desktops.
//!
//! Run: `cargo bench --bench events` (PostgreSQL at 127.0.0.1:5432).
//! Options through the environment: BENCH_CONNECTIONS (64 callback
//! connections), BENCH_SECONDS (10 per phase), BENCH_STREAMS (10000; 0
//! leaves that configuration out), BENCH_ROUNDS (1: how often the sequence
//! below runs), BENCH_DB_STATS (1; 0 skips PostgreSQL's transaction counts
//! and the 23 s per phase they wait for). A quick, finer estimate of the
//! 1,000-stream ratio alone: `BENCH_STREAMS=0 BENCH_DB_STATS=0
//! BENCH_ROUNDS=6`, twelve phases with streams, each between two alone.
//!
//! One release `koostatus serve` (its own process), one channel, phases of
//! BENCH_SECONDS each in three configurations:
//! - callbacks alone;
//! - callbacks with 1,000 streams each filtered to one user number plus 10
//!   unfiltered streams;
//! - callbacks with BENCH_STREAMS streams each filtered to one user number;
//!
//! after an unmeasured warm-up of callbacks (BENCH_SECONDS / 2), run in
//! the order alone, then per round 1,000, alone, many, alone, many,
//! alone, 1,000, alone: every phase with streams lies between two phases
//! alone, and its ratio is to the mean of those two, so that drift of this
//! shared machine (the rate alone moves by 10 % or more within a run) falls
//! on the baseline it is compared with; each configuration's ratio is the
//! mean of its phases' ratios, printed with its standard error.
//!
//! Every callback is a new message to one of the streams' user numbers, so
//! each change is wanted by exactly one filtered stream (and the unfiltered
//! ones). The stream clients run on a runtime of their own, apart from the
//! callback load. Printed per phase: callbacks/s and the ratio to alone, callback
//! p99, PostgreSQL transactions/s of the database (pg_stat_database) and the
//! ratio to alone, delivery latency from the callback's 200 to the event at
//! the client (p50/p99), events lost and repeated, and the service's
//! resident memory per open stream. Lost or repeated events, an event of
//! another user number, or an answer other than 200 fail the run; speeds
//! are for people to read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};
use support::{Service, cli, env, metric, pct, read_answer, report_request, wait_ready};

mod support;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const DB: &str = "koostatus_bench_events";
const CHANNEL: &str = "bench";
const PASSWORD: &str = "bench-webhook-password";
/// How late PostgreSQL's statistics may be, and a margin.
const STATS_LAG: Duration = Duration::from_millis(11_500);

struct Phase {
    name: &'static str,
    filtered: usize,
    unfiltered: usize,
}

#[derive(Default)]
struct Figures {
    callbacks_per_s: f64,
    p99_ms: f64,
    tps: f64,
    latencies: Vec<Duration>,
    expected: usize,
    lost: usize,
    repeated: usize,
    foreign: usize,
    errors: usize,
    rss_per_stream_kib: Option<f64>,
    streams: usize,
    /// The service's own account of its transactions: write batches and
    /// reads of the feed by the live readers, per second.
    batches_per_s: f64,
    feed_reads_per_s: f64,
    /// Writes (HTTP chunks with events) per second that each filtered
    /// stream received during the load, and events per write.
    filtered_writes_per_s: f64,
    filtered_events_per_write: f64,
    /// CPU seconds per second of the service, and of this process (the
    /// load and the stream clients), during the load.
    service_cpu: f64,
    client_cpu: f64,
    /// The share of the machine's time the hypervisor gave to others
    /// (steal), and the machine's busy CPU (all processes, without steal
    /// and idle) per callback acknowledged.
    steal: f64,
    busy_us_per_callback: f64,
    /// Callbacks/s and transactions/s against the phase's baseline (see
    /// `run`).
    rate_ratio: f64,
    tps_ratio: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let connections: usize = env("BENCH_CONNECTIONS", 64);
    let seconds: u64 = env("BENCH_SECONDS", 10);
    let many: usize = env("BENCH_STREAMS", 10_000);
    let rounds: usize = env("BENCH_ROUNDS", 1);
    let db_stats = env::<u8>("BENCH_DB_STATS", 1) != 0;
    let duration = Duration::from_secs(seconds);
    // Every stream is a socket here and in the service.
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    anyhow::ensure!(
        limit as usize > many + connections + 100,
        "the open-file limit ({limit}) is too low for {many} streams"
    );
    println!(
        "{connections} callback connections, {seconds} s per phase, {} cores, open-file limit {limit}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    support::with_service(DB, &[], |service| {
        run(service, connections, duration, many, rounds, db_stats)
    })
    .await
}

async fn run(
    service: Service,
    connections: usize,
    duration: Duration,
    many: usize,
    rounds: usize,
    db_stats: bool,
) -> anyhow::Result<()> {
    let (url, port, server) = (service.url.as_str(), service.port, service.pid);
    wait_ready(port).await?;
    let channel_add = ["channel", "add", CHANNEL, "--password-stdin"];
    cli(url, &[], &channel_add, PASSWORD)?;
    let token = cli(url, &[], &["token", "create", "--name", "bench"], "")?;
    let token = token.trim().to_owned();
    let alone = Phase {
        name: "callbacks alone",
        filtered: 0,
        unfiltered: 0,
    };
    let few = Phase {
        name: "+ 1,000 filtered + 10 unfiltered streams",
        filtered: 1000,
        unfiltered: 10,
    };
    let lots = Phase {
        name: "+ many filtered streams",
        filtered: many,
        unfiltered: 0,
    };
    // Each configuration twice a round, in mirrored order, every time
    // between two phases alone: its baseline (see the ratios below).
    // BENCH_STREAMS=0 leaves the many streams out.
    let with_streams = (0..rounds)
        .flat_map(|_| [&few, &lots, &lots, &few])
        .filter(|p| p.filtered > 0);
    let phases: Vec<&Phase> = std::iter::once(&alone)
        .chain(with_streams.flat_map(|p| [p, &alone]))
        .collect();
    let desktops = Desktops::new()?;
    let mut db = PgConnection::connect(url).await?;
    // Unmeasured: the first phase would otherwise run on empty tables and
    // indexes, faster than every later one, and raise the baseline of the
    // first phase with streams.
    println!(
        "warming up: callbacks alone for {:.0} s, not counted",
        duration.as_secs_f64() / 2.0
    );
    let (_, _, errors) = load(port, connections, 1000, phases.len(), duration / 2).await?;
    anyhow::ensure!(errors == 0, "warm-up: {errors} callbacks not answered 200");
    let mut results = Vec::new();
    for (index, phase) in phases.iter().enumerate() {
        println!("running: {}", phase.name);
        let rss_before = rss_kib(server)?;
        RECEIVED.store(0, std::sync::atomic::Ordering::Relaxed);
        let mut clients = Vec::new();
        let opened = Instant::now();
        // Open the streams, 200 at a time.
        let specs: Vec<Option<usize>> = (0..phase.filtered)
            .map(Some)
            .chain((0..phase.unfiltered).map(|_| None))
            .collect();
        for group in specs.chunks(200) {
            let mut starting = Vec::new();
            for &user in group {
                let token = token.clone();
                let received = Arc::new(Mutex::new(Received::default()));
                let (ready, is_ready) = tokio::sync::oneshot::channel();
                starting.push(is_ready);
                clients.push((
                    desktops.spawn(stream_client(port, token, user, ready, received.clone())),
                    received,
                ));
            }
            for r in starting {
                r.await??;
            }
        }
        let streams = clients.len();
        let rss_per_stream_kib = (streams > 0).then(|| {
            let after = rss_kib(server).unwrap_or(rss_before);
            after.saturating_sub(rss_before) as f64 / streams as f64
        });
        if streams > 0 {
            println!(
                "  {streams} streams open in {:.1} s; service RSS {:.1} -> {:.1} MiB",
                opened.elapsed().as_secs_f64(),
                rss_before as f64 / 1024.0,
                rss_kib(server)? as f64 / 1024.0
            );
        }
        // An idle backend reports its transactions to pg_stat_database up
        // to 10 s late (PGSTAT_IDLE_INTERVAL): let the opening settle first.
        // Without the counts, a second for the opening's own work.
        let lag = if db_stats {
            STATS_LAG
        } else {
            Duration::from_secs(1)
        };
        tokio::time::sleep(lag).await;
        let tx_before = transactions(&mut db).await?;
        let batches_before = metric(port, "koostatus_batch_size_count").await?;
        let reads_before = metric(port, "koostatus_events_feed_reads_total").await?;
        let cpu_before = (cpu_seconds(server)?, cpu_seconds(std::process::id())?);
        let machine_before = machine_ticks()?;
        let started = Instant::now();
        let users = phase.filtered.max(1000);
        let (acked, mut latencies, errors) =
            load(port, connections, users, index, duration).await?;
        let load_end = Instant::now();
        let elapsed = load_end - started;
        let machine = machine_ticks()?.since(&machine_before);
        let cpu = (
            (cpu_seconds(server)? - cpu_before.0) / elapsed.as_secs_f64(),
            (cpu_seconds(std::process::id())? - cpu_before.1) / elapsed.as_secs_f64(),
        );
        let batches = metric(port, "koostatus_batch_size_count").await? - batches_before;
        let reads = metric(port, "koostatus_events_feed_reads_total").await? - reads_before;
        let tps = if db_stats {
            tokio::time::sleep(STATS_LAG).await;
            (transactions(&mut db).await? - tx_before) as f64 / elapsed.as_secs_f64()
        } else {
            f64::NAN
        };
        latencies.sort();

        // Every stream should have what was acked for it; wait for
        // stragglers, then stop the clients.
        let wanted = |user: Option<usize>| -> usize {
            match user {
                Some(u) => acked.iter().filter(|a| a.1 == u).count(),
                None => acked.len(),
            }
        };
        let expected: usize = specs.iter().map(|&u| wanted(u)).sum();
        let settle = Instant::now();
        while streams > 0
            && received_total() < expected
            && settle.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (task, _) in &clients {
            task.abort();
        }
        let acked_at: HashMap<u64, Instant> =
            acked.iter().map(|(id, _, at)| (key(id), *at)).collect();
        let mut figures = Figures {
            callbacks_per_s: acked.len() as f64 / elapsed.as_secs_f64(),
            p99_ms: pct(&latencies, 0.99),
            tps,
            errors,
            expected,
            rss_per_stream_kib,
            streams,
            batches_per_s: batches / elapsed.as_secs_f64(),
            feed_reads_per_s: reads / elapsed.as_secs_f64(),
            service_cpu: cpu.0,
            client_cpu: cpu.1,
            steal: machine.steal_share(),
            busy_us_per_callback: machine.busy_seconds() * 1e6 / acked.len().max(1) as f64,
            ..Default::default()
        };
        let (mut filtered_writes, mut filtered_events) = (0, 0);
        for ((task, received), &user) in clients.into_iter().zip(&specs) {
            if let Ok(outcome) = task.await {
                outcome?; // it ended by itself: only an error may end it
            }
            let got = std::mem::take(&mut *received.lock().unwrap());
            if user.is_some() {
                filtered_writes += got.writes.iter().filter(|&&t| t <= load_end).count();
                filtered_events += got.events.iter().filter(|e| e.1 <= load_end).count();
            }
            let mut seen = HashSet::new();
            for (id, at) in &got.events {
                if !seen.insert(*id) {
                    figures.repeated += 1;
                } else if let Some(acked) = acked_at.get(id) {
                    figures.latencies.push(at.saturating_duration_since(*acked));
                }
            }
            figures.foreign += got.foreign + got.out_of_order;
            figures.lost += wanted(user).saturating_sub(seen.len());
        }
        if phase.filtered > 0 {
            figures.filtered_writes_per_s =
                filtered_writes as f64 / phase.filtered as f64 / elapsed.as_secs_f64();
            figures.filtered_events_per_write =
                filtered_events as f64 / filtered_writes.max(1) as f64;
        }
        figures.latencies.sort();
        results.push(figures);
        // Wait until the service has let go of the streams.
        let gone = Instant::now();
        while metric(port, "koostatus_events_subscribers").await? > 0.0
            && gone.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Each phase against its baseline: the phases alone on either side of
    // it, or for those alone, all of them. A configuration's ratio is the
    // mean of its phases' ratios.
    let alone_runs = runs_of(&phases, &results, &alone);
    let alone_rate = mean(&alone_runs, |f| f.callbacks_per_s);
    let alone_tps = mean(&alone_runs, |f| f.tps);
    let alone_busy = mean(&alone_runs, |f| f.busy_us_per_callback);
    let alone_steal = mean(&alone_runs, |f| f.steal);
    let alone_phases = alone_runs.len();
    let baselines: Vec<(f64, f64)> = (0..phases.len())
        .map(|i| {
            if std::ptr::eq(phases[i], &alone) {
                return (alone_rate, alone_tps);
            }
            let (before, after) = (&results[i - 1], &results[i + 1]);
            (
                (before.callbacks_per_s + after.callbacks_per_s) / 2.0,
                (before.tps + after.tps) / 2.0,
            )
        })
        .collect();
    for (f, (rate, tps)) in results.iter_mut().zip(baselines) {
        f.rate_ratio = f.callbacks_per_s / rate;
        f.tps_ratio = f.tps / tps;
    }
    println!(
        "\n{:<42} {:>11} {:>6} {:>8} {:>8} {:>6} {:>9} {:>9} {:>6} {:>6} {:>12}",
        "phase, in the order run",
        "callbacks/s",
        "ratio",
        "p99 ms",
        "db tx/s",
        "ratio",
        "event p50",
        "event p99",
        "lost",
        "twice",
        "RSS/stream"
    );
    let name = |phase: &Phase| {
        if phase.filtered > 0 && phase.unfiltered == 0 {
            format!("+ {} filtered streams", phase.filtered)
        } else {
            phase.name.to_owned()
        }
    };
    for (phase, f) in phases.iter().zip(&results) {
        let (p50, p99) = if f.streams > 0 {
            (
                format!("{:.1} ms", pct(&f.latencies, 0.5)),
                format!("{:.1} ms", pct(&f.latencies, 0.99)),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<42} {:>11.0} {:>6.2} {:>8.2} {:>8} {:>6} {p50:>9} {p99:>9} {:>6} {:>6} {:>12}",
            name(phase),
            f.callbacks_per_s,
            f.rate_ratio,
            f.p99_ms,
            unless_nan(f.tps, 0),
            unless_nan(f.tps_ratio, 2),
            f.lost,
            f.repeated,
            f.rss_per_stream_kib
                .map_or("-".into(), |k| format!("{k:.1} KiB")),
        );
    }
    println!(
        "\nsummary (each configuration: the mean of its phases, and of their ratios to the phases alone beside them; alone: the mean of its {} phases):",
        alone_phases
    );
    for kind in [&few, &lots] {
        let runs = runs_of(&phases, &results, kind);
        if runs.is_empty() {
            continue;
        }
        let mut latencies: Vec<Duration> = runs
            .iter()
            .flat_map(|f| f.latencies.iter().copied())
            .collect();
        latencies.sort();
        println!(
            "{}: callbacks {:.0}/s = {:.2} of alone (all phases alone: {alone_rate:.0}/s), p99 {:.1} ms; db {} tx/s = {} of alone ({}); events p50 {:.1} ms, p99 {:.1} ms; lost {}, twice {}; RSS {:.1} KiB per open stream (first opening)",
            name(kind),
            mean(&runs, |f| f.callbacks_per_s),
            mean(&runs, |f| f.rate_ratio),
            mean(&runs, |f| f.p99_ms),
            unless_nan(mean(&runs, |f| f.tps), 0),
            unless_nan(mean(&runs, |f| f.tps_ratio), 2),
            unless_nan(alone_tps, 0),
            pct(&latencies, 0.5),
            pct(&latencies, 0.99),
            runs.iter().map(|f| f.lost).sum::<usize>(),
            runs.iter().map(|f| f.repeated).sum::<usize>(),
            // The first opening: later ones reuse memory freed before.
            runs[0].rss_per_stream_kib.unwrap_or(0.0),
        );
        let ratios: Vec<String> = runs
            .iter()
            .map(|f| format!("{:.2}", f.rate_ratio))
            .collect();
        println!(
            "{}: ratio per phase {}; standard error of their mean {:.3}",
            name(kind),
            ratios.join(", "),
            standard_error(&runs, |f| f.rate_ratio),
        );
        // A second view of the streams' cost beside the rate; it rises with
        // steal too (seen here), so neither view is free of the host.
        println!(
            "{}: machine busy CPU per callback {:.0} us = {:.2} of alone ({:.0} us); stolen {:.0} % (alone {:.0} %)",
            name(kind),
            mean(&runs, |f| f.busy_us_per_callback),
            mean(&runs, |f| f.busy_us_per_callback) / alone_busy,
            alone_busy,
            mean(&runs, |f| f.steal) * 100.0,
            alone_steal * 100.0,
        );
    }
    for (phase, f) in phases.iter().zip(&results) {
        if f.streams > 0 {
            println!(
                "{}: {} streams, {} events expected, {} delivered",
                phase.name,
                f.streams,
                f.expected,
                f.latencies.len()
            );
        }
        println!(
            "{}: the service's transactions: {:.0} write batches/s, {:.0} feed reads/s; CPU: service {:.2}, this benchmark's clients {:.2} cores",
            phase.name, f.batches_per_s, f.feed_reads_per_s, f.service_cpu, f.client_cpu
        );
        println!(
            "{}: machine: {:.0} % stolen by the hypervisor, {:.0} us of busy CPU per callback",
            phase.name,
            f.steal * 100.0,
            f.busy_us_per_callback
        );
        if phase.filtered > 0 {
            println!(
                "{}: each filtered stream was written {:.2} times a second, {:.2} events per write",
                phase.name, f.filtered_writes_per_s, f.filtered_events_per_write
            );
        }
        anyhow::ensure!(
            f.errors == 0,
            "{}: {} callbacks not answered 200",
            phase.name,
            f.errors
        );
        anyhow::ensure!(
            f.lost == 0 && f.repeated == 0,
            "{}: {} events lost, {} repeated",
            phase.name,
            f.lost,
            f.repeated
        );
        anyhow::ensure!(
            f.foreign == 0,
            "{}: {} events of another user number or out of order",
            phase.name,
            f.foreign
        );
    }
    Ok(())
}

/// The desktops' own runtime: in production they are other machines, and
/// their reading must not hold up the callback load's tasks on this
/// process's threads (the OS shares the cores between both runtimes).
struct Desktops(Option<tokio::runtime::Runtime>);

impl Desktops {
    fn new() -> anyhow::Result<Desktops> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("desktops")
            .enable_all()
            .build()?;
        Ok(Desktops(Some(runtime)))
    }

    fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
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
struct Received {
    /// (message key, when it arrived)
    events: Vec<(u64, Instant)>,
    /// Events of another user number than the stream's filter.
    foreign: usize,
    /// Events whose position was not after the one before.
    out_of_order: usize,
    /// When each chunk with events arrived: one socket write of the
    /// service each.
    writes: Vec<Instant>,
}

static RECEIVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Events received by this phase's streams so far.
fn received_total() -> usize {
    RECEIVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// One desktop: `/events`, filtered to user number `u<user>` or not, read
/// until aborted, into `received`. Says when the stream answered.
async fn stream_client(
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
fn key(message_id: &str) -> u64 {
    let mut parts = message_id.split('-').skip(1);
    let c: u64 = parts
        .next()
        .and_then(|c| c[1..].parse().ok())
        .unwrap_or(u64::MAX >> 32);
    let n: u64 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    c << 32 | n
}

type Acked = (Vec<(String, usize, Instant)>, Vec<Duration>, usize);

/// `connections` callback connections at once for `duration`, their
/// results together.
async fn load(
    port: u16,
    connections: usize,
    users: usize,
    phase: usize,
    duration: Duration,
) -> anyhow::Result<Acked> {
    let tasks: Vec<_> = (0..connections)
        .map(|c| tokio::spawn(callbacks(port, c, connections, users, phase, duration)))
        .collect();
    let (mut acked, mut latencies, mut errors) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (a, l, e) = t.await??;
        acked.extend(a);
        latencies.extend(l);
        errors += e;
    }
    Ok((acked, latencies, errors))
}

/// One keep-alive connection posting new messages back to back, each to
/// user number `u<n>` for n below `users`.
async fn callbacks(
    port: u16,
    connection: usize,
    connections: usize,
    users: usize,
    phase: usize,
    duration: Duration,
) -> anyhow::Result<Acked> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let deadline = Instant::now() + duration;
    let (mut acked, mut latencies, mut errors) = (Vec::new(), Vec::new(), 0);
    let mut n = 0usize;
    while Instant::now() < deadline {
        let user = (connection + n * connections) % users;
        let id = format!("p{phase}-c{connection}-{n}");
        n += 1;
        let body = format!(
            r#"{{"message_id":"{id}","sender":"86173xxxx4526","user_number":"u{user}","status":"delivered"}}"#
        );
        let sent = Instant::now();
        stream
            .get_mut()
            .write_all(report_request(CHANNEL, PASSWORD, &body).as_bytes())
            .await?;
        let ok = read_answer(&mut stream).await? == 200;
        let answered = Instant::now();
        latencies.push(answered - sent);
        if ok {
            acked.push((id, user, answered));
        } else {
            errors += 1;
        }
    }
    Ok((acked, latencies, errors))
}

/// Committed and rolled-back transactions of the benchmark's database.
async fn transactions(db: &mut PgConnection) -> anyhow::Result<i64> {
    // A fresh snapshot of the statistics, not the one cached in this session.
    db.execute("select pg_stat_clear_snapshot()").await?;
    Ok(sqlx::query_scalar(
        "select (xact_commit + xact_rollback)::int8 from pg_stat_database where datname = $1",
    )
    .bind(DB)
    .fetch_one(&mut *db)
    .await?)
}

/// User and system CPU time a process has used, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// The machine's CPU time by kind, in clock ticks, from /proc/stat.
struct MachineTicks {
    busy: u64,
    idle: u64,
    steal: u64,
}

fn machine_ticks() -> anyhow::Result<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    let t: Vec<u64> = (line.split_whitespace().skip(1))
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(t.len() >= 8, "/proc/stat has no steal field");
    Ok(MachineTicks {
        busy: t[0] + t[1] + t[2] + t[5] + t[6],
        idle: t[3] + t[4],
        steal: t[7],
    })
}

impl MachineTicks {
    fn since(&self, before: &MachineTicks) -> MachineTicks {
        MachineTicks {
            busy: self.busy - before.busy,
            idle: self.idle - before.idle,
            steal: self.steal - before.steal,
        }
    }

    fn steal_share(&self) -> f64 {
        self.steal as f64 / (self.busy + self.idle + self.steal).max(1) as f64
    }

    fn busy_seconds(&self) -> f64 {
        self.busy as f64 / 100.0
    }
}

/// VmRSS: the service's resident memory now.
fn rss_kib(server: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{server}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

/// The results of one configuration's phases.
fn runs_of<'a>(phases: &[&Phase], results: &'a [Figures], kind: &Phase) -> Vec<&'a Figures> {
    (phases.iter().zip(results))
        .filter(|(p, _)| std::ptr::eq(**p, kind))
        .map(|(_, f)| f)
        .collect()
}

fn mean(runs: &[&Figures], f: fn(&Figures) -> f64) -> f64 {
    runs.iter().map(|x| f(x)).sum::<f64>() / runs.len() as f64
}

/// `x` with `decimals`, or `-` when not measured (BENCH_DB_STATS=0).
fn unless_nan(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.decimals$}")
    }
}

/// Of the mean of `f` over `runs`: how far it may be off by chance.
fn standard_error(runs: &[&Figures], f: fn(&Figures) -> f64) -> f64 {
    let (n, m) = (runs.len() as f64, mean(runs, f));
    let variance = runs.iter().map(|x| (f(x) - m).powi(2)).sum::<f64>() / (n - 1.0);
    (variance / n).sqrt()
}
