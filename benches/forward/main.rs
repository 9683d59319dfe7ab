//! Forwarding benchmark: callbacks while subscriptions push every change
//! to a receiver.
//!
//! Run: `cargo bench --bench forward` (PostgreSQL at 127.0.0.1:5432).
//! Options through the environment: BENCH_CONNECTIONS (64 callback
//! connections), BENCH_SECONDS (10 per phase).
//!
//! One release `koostatus serve` (its own process, default forwarding
//! settings: batches of 100, 10 s timeout), one channel, a receiver in this
//! process (its own thread and runtime, apart from the callback load) that
//! answers every delivery 200. Phases of BENCH_SECONDS with 0, 1 and 10
//! subscriptions, in the order 0, 1, 10, 0, 10, 1, 0, so that drift of this
//! shared machine falls on every configuration alike; each configuration's
//! ratio is the mean of its runs against the mean of the runs without.
//! Subscriptions are added (and claimed by the service) before a phase and
//! removed after it, once the receiver has everything.
//!
//! Printed per phase: callbacks/s and the ratio to no subscription,
//! callback p99, forwarded changes/s at the receiver during the load, lag
//! from a change's `changed_at` (the callback's arrival, before its commit)
//! to its receipt (p50/p99, of every tenth change), how long the receiver needed after the load to
//! have everything, and changes lost, repeated (under another webhook-id)
//! or out of order; any of the last three fails the run.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Service, cli, cpu, env, pct, read_answer, report_request, wait_ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

mod receiver;
#[path = "../support/mod.rs"]
mod support;

use receiver::{Received, start_receiver};

const DB: &str = "koostatus_bench_forward";
const CHANNEL: &str = "bench";
const PASSWORD: &str = "bench-webhook-password";
const KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

/// The service's and the CLI's settings: forwarding's key, and targets on
/// this machine allowed (the receiver listens on 127.0.0.1).
const SETTINGS: &[(&str, &str)] = &[
    ("KOOSTATUS_FORWARD__SECRET_KEY", KEY),
    ("KOOSTATUS_FORWARD__ALLOW_PRIVATE_TARGETS", "true"),
];

/// What the receiver got for one subscription.
#[derive(Default)]
struct Subscriber {
    /// Message ids in arrival order, each delivery counted once.
    messages: Vec<String>,
    last: (i64, i64),
    out_of_order: usize,
    /// Changes that came again under another webhook-id.
    repeated: usize,
    ids: HashSet<String>,
    positions: HashSet<(i64, i64)>,
    lags: Vec<Duration>,
    /// When the receiver got a change, per second of the load.
    received_at: Vec<Instant>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let connections: usize = env("BENCH_CONNECTIONS", 64);
    let seconds: u64 = env("BENCH_SECONDS", 10);
    println!(
        "{connections} callback connections, {seconds} s per phase, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    support::with_service(DB, SETTINGS, |service| {
        run(service, connections, Duration::from_secs(seconds))
    })
    .await
}

struct Figures {
    subscriptions: usize,
    callbacks_per_s: f64,
    p99_ms: f64,
    forwarded_per_s: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    drain_s: f64,
}

async fn run(service: Service, connections: usize, duration: Duration) -> anyhow::Result<()> {
    let (url, port, server_pid) = (service.url.as_str(), service.port, service.pid);
    wait_ready(port).await?;
    let channel_add = ["channel", "add", CHANNEL, "--password-stdin"];
    cli(url, SETTINGS, &channel_add, PASSWORD)?;
    let received: Received = Arc::default();
    let receiver_port = start_receiver(received.clone())?;
    let db = sqlx::PgPool::connect(url).await?;
    let mut results: Vec<Figures> = Vec::new();
    for (index, &subscriptions) in [0usize, 1, 10, 0, 10, 1, 0].iter().enumerate() {
        println!("running: {subscriptions} subscriptions");
        let names: Vec<String> = (0..subscriptions)
            .map(|i| format!("p{index}-s{i}"))
            .collect();
        for name in &names {
            let target = format!("http://127.0.0.1:{receiver_port}/{name}");
            cli(
                url,
                SETTINGS,
                &[
                    "forward",
                    "add",
                    name,
                    "--channel",
                    CHANNEL,
                    "--url",
                    &target,
                ],
                "",
            )?;
        }
        wait_claimed(&db, subscriptions).await?;
        let cpu_before = cpu(server_pid);
        let started = Instant::now();
        let load: Vec<_> = (0..connections)
            .map(|c| tokio::spawn(callbacks(port, c, index, duration)))
            .collect();
        let (mut acked, mut latencies) = (Vec::new(), Vec::new());
        for l in load {
            let (a, l) = l.await??;
            acked.extend(a);
            latencies.extend(l);
        }
        let ended = Instant::now();
        let elapsed = ended - started;
        let cpu_after = cpu(server_pid);
        let busy = |i: usize| (cpu_after[i] - cpu_before[i]) / elapsed.as_secs_f64();
        println!(
            "  CPU cores busy: service {:.2}, PostgreSQL {:.2}, benchmark (load and receiver) {:.2}",
            busy(0),
            busy(1),
            busy(2)
        );
        latencies.sort();
        // Everything acknowledged reaches every subscription.
        let wanted: HashSet<&String> = acked.iter().collect();
        let drain_started = Instant::now();
        loop {
            let done = {
                let got = received.lock().unwrap();
                names
                    .iter()
                    .all(|n| got.get(n).is_some_and(|s| s.messages.len() >= acked.len()))
            };
            if done {
                break;
            }
            anyhow::ensure!(
                drain_started.elapsed() < Duration::from_secs(120),
                "the receiver did not get everything within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let drain = if names.is_empty() {
            Duration::ZERO
        } else {
            drain_started.elapsed()
        };
        let mut got = received.lock().unwrap();
        let (mut lags, mut during) = (Vec::new(), 0usize);
        for name in &names {
            let s = got.remove(name).expect("received");
            let set: HashSet<&String> = s.messages.iter().collect();
            let lost = wanted.difference(&set).count();
            anyhow::ensure!(
                lost == 0 && s.repeated == 0 && s.out_of_order == 0,
                "{name}: {lost} lost, {} repeated, {} out of order",
                s.repeated,
                s.out_of_order
            );
            anyhow::ensure!(s.messages.len() == acked.len(), "{name}: extra changes");
            during += s.received_at.iter().filter(|&&t| t <= ended).count();
            lags.extend(s.lags);
        }
        drop(got);
        lags.sort();
        for name in &names {
            cli(url, SETTINGS, &["forward", "remove", name], "")?;
        }
        let figures = Figures {
            subscriptions,
            callbacks_per_s: acked.len() as f64 / elapsed.as_secs_f64(),
            p99_ms: pct(&latencies, 0.99),
            forwarded_per_s: during as f64 / elapsed.as_secs_f64(),
            lag_p50_ms: pct(&lags, 0.50),
            lag_p99_ms: pct(&lags, 0.99),
            drain_s: drain.as_secs_f64(),
        };
        println!(
            "  {:.0} callbacks/s (p99 {:.1} ms); forwarded {:.0} changes/s; lag p50 {:.0} ms, p99 {:.0} ms; all received {:.2} s after the load; 0 lost, 0 repeated, 0 out of order",
            figures.callbacks_per_s,
            figures.p99_ms,
            figures.forwarded_per_s,
            figures.lag_p50_ms,
            figures.lag_p99_ms,
            figures.drain_s
        );
        results.push(figures);
    }
    let mean = |n: usize, f: fn(&Figures) -> f64| {
        let runs: Vec<f64> = results
            .iter()
            .filter(|r| r.subscriptions == n)
            .map(f)
            .collect();
        runs.iter().sum::<f64>() / runs.len() as f64
    };
    let alone = mean(0, |r| r.callbacks_per_s);
    println!();
    println!(
        "| subscriptions | callbacks/s | ratio to none | callback p99 | forwarded changes/s | lag p50 | lag p99 | drained after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in [0usize, 1, 10] {
        println!(
            "| {n} | {:.0} | {:.2} | {:.1} ms | {:.0} | {:.0} ms | {:.0} ms | {:.2} s |",
            mean(n, |r| r.callbacks_per_s),
            mean(n, |r| r.callbacks_per_s) / alone,
            mean(n, |r| r.p99_ms),
            mean(n, |r| r.forwarded_per_s),
            mean(n, |r| r.lag_p50_ms),
            mean(n, |r| r.lag_p99_ms),
            mean(n, |r| r.drain_s),
        );
    }
    println!(
        "goals: ratio with 10 subscriptions >= 0.85, lag p99 <= 1000 ms, 0 lost or out of order"
    );
    Ok(())
}

/// Until the service has taken the lease of `n` subscriptions.
async fn wait_claimed(db: &sqlx::PgPool, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let claimed: i64 = sqlx::query_scalar(
            "select count(*) from forward_subscriptions where lease_holder is not null",
        )
        .fetch_one(db)
        .await?;
        if claimed as usize >= n {
            // And has looked at the feed once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "subscriptions not claimed within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One keep-alive connection posting new messages back to back.
async fn callbacks(
    port: u16,
    connection: usize,
    phase: usize,
    duration: Duration,
) -> anyhow::Result<(Vec<String>, Vec<Duration>)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let deadline = Instant::now() + duration;
    let (mut acked, mut latencies) = (Vec::new(), Vec::new());
    let mut n = 0usize;
    while Instant::now() < deadline {
        let id = format!("p{phase}-c{connection}-{n}");
        n += 1;
        let body = format!(
            r#"{{"message_id":"{id}","sender":"86173xxxx4526","user_number":"u{connection}","status":"delivered"}}"#
        );
        let sent = Instant::now();
        stream
            .get_mut()
            .write_all(report_request(CHANNEL, PASSWORD, &body).as_bytes())
            .await?;
        let code = read_answer(&mut stream).await?;
        latencies.push(sent.elapsed());
        anyhow::ensure!(code == 200, "a callback got {code}");
        acked.push(id);
    }
    Ok((acked, latencies))
}
