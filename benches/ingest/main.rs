//! Ingest benchmark: the release service under a burst of callbacks.
//!
//! Run: `cargo bench --bench ingest` (PostgreSQL at 127.0.0.1:5432).
//! Options through the environment: BENCH_CONNECTIONS (64), BENCH_SECONDS (10).
//!
//! In one run it measures, at the same concurrency:
//! 1. the service (`koostatus serve`, its own process) with group commit;
//! 2. the service with `ingest.batch_max = 1` (one transaction per report),
//!    with the default writers and with 15, so that it is not starved of
//!    concurrent transactions;
//! 3. the service with group commit while a flood of wrong passwords
//!    (BENCH_FLOOD_PER_S, 1,000 by default) runs in every other window
//!    (A B B A A B B A, twice BENCH_SECONDS in all): the rate valid callbacks
//!    keep under the flood against their rate in the windows without;
//! 4. the same batched SQL driven directly (the writer of `src/ingest`, no
//!    HTTP, no authentication), as the ceiling the database allows.
//!
//! The load generator speaks HTTP/1.1 over keep-alive connections by hand,
//! to leave the two cores to the service and PostgreSQL. After each service
//! run it checks that every report answered 200 is in the database.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use koostatus::config::Config;
use koostatus::db::reports::Incoming;
use koostatus::domain::{ChannelId, Report, Status};
use sqlx::{Connection, Executor, PgConnection};
use support::{SERVER, env, metric, pct, read_answer, report_request, wait_ready};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod direct;
mod load;
mod service;
#[path = "../support/mod.rs"]
mod support;

use direct::direct_run;
use load::{flood, http_load};
use service::service_run;

const DB: &str = "koostatus_bench_ingest";
const CHANNEL: &str = "bench";
const PASSWORD: &str = "bench-webhook-password";

/// Message ids are drawn from this many, so some reports update a message.
const ID_SPACE: u64 = 1_000_000;

#[derive(Default)]
struct Run {
    /// The flood's figures, for a run with one.
    flood: Option<Flood>,
    reports_per_s: f64,
    latencies: Vec<Duration>,
    acked: Vec<(String, Status)>,
    /// When each acknowledgement arrived, since the load started.
    acked_at: Vec<Duration>,
    errors: usize,
}

/// Valid callbacks with and without a flood, in alternating windows of one
/// run (A B B A A B B A): drift of this shared machine over the run falls
/// on both sides alike.
struct Flood {
    /// Wrong passwords sent per second while flooding.
    per_s: f64,
    /// Answers to the flood other than 401 or 429.
    bad: usize,
    alone_per_s: f64,
    flooded_per_s: f64,
}

/// The flood run's windows: `true` floods.
const WINDOWS: [bool; 8] = [false, true, true, false, false, true, true, false];

#[derive(Default)]
struct ServerStats {
    peak_rss_kib: u64,
    verifications: u64,
    batches: u64,
    reports: u64,
    missing: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let connections: usize = env("BENCH_CONNECTIONS", 64);
    let seconds: u64 = env("BENCH_SECONDS", 10);
    let duration = Duration::from_secs(seconds);
    println!(
        "{connections} keep-alive connections, {seconds} s per run, {} cores",
        num_cores()
    );

    let flood_per_s: u32 = env("BENCH_FLOOD_PER_S", 1000);
    // BENCH_ONLY=flood (what CI runs): the flood run and its checks.
    let only_flood = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "flood");
    // As long as two plain runs: half the windows flood.
    let flooded = service_run(
        "service, group commit, alternating windows with and without a flood",
        &[],
        connections,
        duration * 2,
        flood_per_s,
    )
    .await?;
    if let Some(f) = &flooded.0.flood {
        println!(
            "\nunder a flood of {:.0} wrong passwords/s ({} answered other than 401/429): valid callbacks at {:.2} of their rate alone ({:.0} vs {:.0} reports/s, {} alternating windows of {:.2} s)",
            f.per_s,
            f.bad,
            f.flooded_per_s / f.alone_per_s,
            f.flooded_per_s,
            f.alone_per_s,
            WINDOWS.len(),
            (duration * 2 / WINDOWS.len() as u32).as_secs_f64(),
        );
    }
    let mut checked = vec![("group commit, flood", &flooded)];
    let (batched, single, single15, direct);
    if !only_flood {
        batched = service_run("service, group commit", &[], connections, duration, 0).await?;
        single = service_run(
            "service, batch_max = 1",
            &[("KOOSTATUS_INGEST__BATCH_MAX", "1")],
            connections,
            duration,
            0,
        )
        .await?;
        // The same mode given as many concurrent transactions as the pool allows,
        // so that it is limited by commits, not by too few writers.
        let single_env = [
            ("KOOSTATUS_INGEST__BATCH_MAX", "1"),
            ("KOOSTATUS_INGEST__WRITERS", "15"),
        ];
        single15 = service_run(
            "service, batch_max = 1, 15 writers",
            &single_env,
            connections,
            duration,
            0,
        )
        .await?;
        direct = direct_run(connections, duration).await?;

        println!(
            "\n{:<28} {:>10} {:>8} {:>8} {:>8}",
            "run", "reports/s", "p50 ms", "p99 ms", "max ms"
        );
        for (name, r) in [
            ("service, group commit", &batched.0),
            ("  the same, flood windows on", &flooded.0),
            ("service, batch_max = 1", &single.0),
            ("  the same, 15 writers", &single15.0),
            ("direct batched SQL", &direct),
        ] {
            println!(
                "{name:<28} {:>10.0} {:>8.2} {:>8.2} {:>8.2}",
                r.reports_per_s,
                pct(&r.latencies, 0.50),
                pct(&r.latencies, 0.99),
                pct(&r.latencies, 1.0)
            );
        }
        println!(
            "\ngroup commit / batch_max = 1: {:.2}x",
            batched.0.reports_per_s / single.0.reports_per_s
        );
        println!(
            "group commit / batch_max = 1 with 15 writers: {:.2}x",
            batched.0.reports_per_s / single15.0.reports_per_s
        );
        println!(
            "group commit / direct batched SQL: {:.2}",
            batched.0.reports_per_s / direct.reports_per_s
        );
        checked.push(("group commit", &batched));
        checked.push(("batch_max = 1", &single));
        checked.push(("batch_max = 1, 15 writers", &single15));
    }
    for (name, (run, stats)) in &checked {
        println!(
            "{name}: peak RSS {:.1} MiB, argon2 verifications {}, batches {} (avg {:.1} reports), non-200 answers {}, acknowledged {} / missing {}",
            stats.peak_rss_kib as f64 / 1024.0,
            stats.verifications,
            stats.batches,
            stats.reports as f64 / stats.batches.max(1) as f64,
            run.errors,
            run.acked.len(),
            stats.missing
        );
    }
    // Correctness fails the run; speed is for people to read, as this
    // machine is shared and noisy.
    for (name, (run, stats)) in &checked {
        anyhow::ensure!(
            stats.missing == 0,
            "{name}: {} acknowledged reports are missing",
            stats.missing
        );
        anyhow::ensure!(
            run.errors == 0,
            "{name}: {} valid callbacks were not answered 200",
            run.errors
        );
        anyhow::ensure!(
            run.flood.as_ref().is_none_or(|f| f.bad == 0),
            "{name}: a wrong password got neither 401 nor 429"
        );
    }
    Ok(())
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn report(&mut self) -> (String, Status) {
        let id = format!("msg-{}", self.next() % ID_SPACE);
        (
            id,
            [Status::Failed, Status::Delivered, Status::Read][(self.next() % 3) as usize],
        )
    }
}

fn num_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}
