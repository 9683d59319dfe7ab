//! The export (SPEC §15) on the release service.
//!
//! Run: `cargo bench --bench export` (PostgreSQL at 127.0.0.1:5432).
//! Options: BENCH_MESSAGES (1,000,000), BENCH_SECONDS (10, per callback
//! phase), BENCH_CONNECTIONS (64 callback connections).
//!
//! Fills a channel in SQL with BENCH_MESSAGES messages shaped like real
//! ones (33 random hex digit ids, 13-digit numbers of about 1,000,000
//! customers, sent over 30 days, most delivered or read, a history row per
//! status reached, a third tagged), then prints in one run:
//! 1. three CSV exports of the whole channel over HTTP (after a warm-up
//!    one): rows/s (goal >=
//!    200,000), time to first byte (goal <= 200 ms) and the service's peak
//!    RSS above what it held before (goal <= 20 MiB);
//! 2. callbacks/s alone and while exports run back to back, in alternating
//!    phases (alone, beside, beside, alone): the ratio (goal >= 0.8).

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};
use support::{Service, callbacks, cli, cpu, env, pct, wait_ready, with_service};

mod support;

const DB: &str = "koostatus_bench_export";
const CHANNEL: &str = "bench";
const PASSWORD: &str = "bench-webhook-password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let messages: i64 = env("BENCH_MESSAGES", 1_000_000);
    let seconds: u64 = env("BENCH_SECONDS", 10);
    let connections: usize = env("BENCH_CONNECTIONS", 64);
    let phase = Duration::from_secs(seconds);
    with_service(DB, &[], |service| async move {
        wait_ready(service.port).await?;
        // Never due for the sweep: the registration benchmark measures that.
        cli(
            &service.url,
            &[],
            &["channel", "add", CHANNEL, "--unreported-after", "100000h", "--password-stdin"],
            PASSWORD,
        )?;
        let token = cli(&service.url, &[], &["token", "create", "--name", "supervisor"], "")?
            .trim()
            .to_owned();
        fill(&service, messages).await?;
        let url = format!(
            "http://127.0.0.1:{}/api/v1/channels/{CHANNEL}/export?format=csv",
            service.port
        );
        let client = reqwest::Client::new();

        // A first export, unmeasured: warms the caches, and the fill's
        // session has ended before any CPU is counted.
        export(&client, &url, &token).await?;
        println!("\n1. CSV export of {messages} messages (after one unmeasured)");
        for run in 1..=3 {
            let before = rss_kib(service.pid)?;
            let sampling = sample_peak_rss(service.pid);
            let cpu_before = cpu(service.pid);
            let e = export(&client, &url, &token).await?;
            let cpu_after = cpu(service.pid);
            let peak = sampling.finish().await?;
            let per_row = |i: usize| (cpu_after[i] - cpu_before[i]) / e.rows as f64 * 1e6;
            anyhow::ensure!(e.rows == messages as u64, "{} rows of {messages}", e.rows);
            println!(
                "   run {run}: {:.0} rows/s ({:.1} s, {:.0} MB; CPU per row: service {:.2} µs, PostgreSQL {:.2} µs, this client {:.2} µs), first byte after {:.0} ms, RSS {:.1} MiB before, peak {:.1} MiB: +{:.1} MiB",
                e.rows as f64 / e.took.as_secs_f64(),
                e.took.as_secs_f64(),
                e.bytes as f64 / 1e6,
                per_row(0),
                per_row(1),
                per_row(2),
                e.first_byte.as_secs_f64() * 1000.0,
                before as f64 / 1024.0,
                peak as f64 / 1024.0,
                peak.saturating_sub(before) as f64 / 1024.0,
            );
        }
        println!("   goals: >= 200,000 rows/s, first byte <= 200 ms, RSS rise <= 20 MiB");

        println!("\n2. callbacks ({connections} connections) alone and beside exports");
        let (mut alone, mut beside) = (Vec::new(), Vec::new());
        for (i, with_export) in [false, true, true, false].into_iter().enumerate() {
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let exporter = with_export.then(|| {
                let (client, url, token, done) =
                    (client.clone(), url.clone(), token.clone(), done.clone());
                tokio::spawn(async move {
                    let mut rows = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        rows += export(&client, &url, &token).await?.rows;
                    }
                    anyhow::Ok(rows)
                })
            });
            let started = Instant::now();
            let (rate, latencies) =
                callbacks(service.port, CHANNEL, PASSWORD, connections, phase, 100 + i as u64)
                    .await?;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let beside_note = match exporter {
                Some(e) => {
                    let rows = e.await??;
                    beside.push(rate);
                    format!(
                        ", beside exports ({:.0} rows/s exported, counting the export running on past the phase)",
                        rows as f64 / started.elapsed().as_secs_f64()
                    )
                }
                None => {
                    alone.push(rate);
                    ", alone".to_owned()
                }
            };
            println!(
                "   phase {}: {rate:>6.0} callbacks/s, p99 {:.1} ms{beside_note}",
                i + 1,
                pct(&latencies, 0.99)
            );
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "   callbacks beside exports / alone: {:.2} (goal >= 0.8)",
            mean(&beside) / mean(&alone)
        );
        Ok(())
    })
    .await
}

struct Export {
    rows: u64,
    bytes: u64,
    first_byte: Duration,
    took: Duration,
}

/// One export read to its end: its rows (lines after the header; the
/// benchmark's cells hold no newline), bytes and timings.
async fn export(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Export> {
    let started = Instant::now();
    let mut response = client.get(url).bearer_auth(token).send().await?;
    anyhow::ensure!(
        response.status() == 200,
        "export answered {}",
        response.status()
    );
    let (mut lines, mut bytes, mut first_byte) = (0u64, 0u64, None);
    while let Some(chunk) = response.chunk().await? {
        first_byte.get_or_insert_with(|| started.elapsed());
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    Ok(Export {
        rows: lines.saturating_sub(1),
        bytes,
        first_byte: first_byte.unwrap_or_default(),
        took: started.elapsed(),
    })
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

/// The service's resident memory sampled every 5 ms until `finish`.
struct PeakSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

fn sample_peak_rss(pid: u32) -> PeakSampler {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss_kib(pid)?);
            tokio::select! {
                _ = &mut stopped => return Ok(peak),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    });
    PeakSampler { stop, task }
}

impl PeakSampler {
    async fn finish(self) -> anyhow::Result<u64> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// `n` messages of the channel written in SQL as ingest and registration
/// would leave them, with their history and statistics.
async fn fill(service: &Service, n: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = PgConnection::connect(&service.url).await?;
    conn.execute("set statement_timeout = 0").await?;
    // Status by i % 20: 1 failed, 1 unreported, 1 sent, 6 delivered, 11 read.
    sqlx::query(
        "insert into messages (channel_id, message_id, sender, user_number, status,
                               first_seen_at, updated_at, changed_xid, sent_at, tags, delivered_at)
         select $1, md5(i::text) || substr(md5((-i)::text), 1, 1), '86173xxxx4526',
                (8600000000000 + (i * 7919) % 1000000)::text, s.status, t.at,
                t.at + case when s.status in ('sent') then interval '0' else interval '40 s' end,
                pg_current_xact_id(),
                case when i % 3 = 0 then t.at end,
                case when i % 3 = 0 then array['campaign-' || (i % 5)] else '{}' end,
                case when s.status in ('delivered', 'read') then t.at + interval '20 s' end
         from generate_series(1, $2) i
         cross join lateral (select now() - interval '30 days' + i * (interval '30 days' / $2) as at) t
         cross join lateral (select (case i % 20 when 0 then 'failed' when 1 then 'unreported'
                                                 when 2 then 'sent'
                                                 when 3 then 'delivered' when 4 then 'delivered'
                                                 when 5 then 'delivered' when 6 then 'delivered'
                                                 when 7 then 'delivered' when 8 then 'delivered'
                                                 else 'read' end)::message_status as status) s",
    )
    .bind(CHANNEL)
    .bind(n)
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "insert into message_history (message_key, channel_id, status, first_received_at,
                                      last_received_at, receipt_count, advanced)
         select message_key, channel_id, h.status, h.at, h.at, 1, true
         from messages
         cross join lateral (values
             ('sent', first_seen_at, status in ('sent', 'unreported') or sent_at is not null),
             ('unreported', updated_at, status = 'unreported'),
             ('failed', updated_at, status = 'failed'),
             ('delivered', delivered_at, status in ('delivered', 'read')),
             ('read', updated_at, status = 'read')) h(status, at, reached)
         where channel_id = $1 and h.reached",
    )
    .bind(CHANNEL)
    .execute(&mut conn)
    .await?;
    // The export's report times (V11), as the reports statement keeps them.
    sqlx::query(
        "update messages set first_failed_at = case when status = 'failed' then updated_at end,
                             first_delivered_at = delivered_at,
                             first_read_at = case when status = 'read' then updated_at end
         where channel_id = $1",
    )
    .bind(CHANNEL)
    .execute(&mut conn)
    .await?;
    conn.execute("lock table messages in share mode; select koostatus_stats_rebuild()")
        .await?;
    conn.execute("vacuum analyze messages").await?;
    conn.execute("vacuum analyze message_history").await?;
    println!(
        "filled {n} messages with their history and statistics in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
