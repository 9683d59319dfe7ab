//! Registration and the unreported sweep (SPEC §13), on the release service.
//!
//! Run: `cargo bench --bench registration` (PostgreSQL at 127.0.0.1:5432).
//! Options: BENCH_SECONDS (10, per phase), BENCH_CONNECTIONS (64 callback
//! connections), BENCH_SWEEP (1,000,000 messages to sweep).
//!
//! In one run it prints:
//! 1. registrations through `POST /api/v1/channels/{id}/messages`, batches of
//!    1,000 seed-shaped ids from 4 clients: messages/s (goal >= 20,000);
//! 2. callbacks/s alone and with registrations beside at 2,000 messages/s,
//!    in alternating phases (alone, beside, beside, alone) so that the
//!    machine's drift falls on both: the ratio (goal >= 0.9);
//! 3. BENCH_SWEEP messages registered two days ago (a channel of their
//!    own, filled in SQL) turned `unreported` by the service's own sweep
//!    once the channel's `unreported_after` is set to 1 s: messages/s
//!    (goal >= 50,000); then a quarter as many on another channel with
//!    callbacks running meanwhile, whose p99 against the p99 alone of
//!    phase 2 (goal <= 2x).

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};
use support::{Rng, Service, callback_client, callbacks, cli, env, pct, wait_ready, with_service};

mod support;

const DB: &str = "koostatus_bench_registration";
const CHANNEL: &str = "bench";
const PASSWORD: &str = "bench-webhook-password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env("BENCH_SECONDS", 10);
    let connections: usize = env("BENCH_CONNECTIONS", 64);
    let sweep_size: i64 = env("BENCH_SWEEP", 1_000_000);
    let phase = Duration::from_secs(seconds);
    println!(
        "{connections} callback connections, {seconds} s per phase, {sweep_size} messages to sweep"
    );
    // Ticks of 200 ms instead of the default 2 s, so that the sweep's rate
    // is not blurred by when the first tick falls.
    let env = [("KOOSTATUS_REPORTS__SWEEP_INTERVAL", "200ms")];
    with_service(DB, &env, |service| async move {
        wait_ready(service.port).await?;
        cli(&service.url, &[], &["channel", "add", CHANNEL, "--password-stdin"], PASSWORD)?;
        let token = cli(
            &service.url,
            &[],
            &["token", "create", "--name", "sender", "--register"],
            "",
        )?
        .trim()
        .to_owned();
        let base = format!("http://127.0.0.1:{}", service.port);

        // 1. Registrations alone.
        let started = Instant::now();
        let clients: Vec<_> = (0..4u64)
            .map(|c| tokio::spawn(register_until(base.clone(), token.clone(), c + 1, started + phase, None)))
            .collect();
        let mut registered = 0;
        for c in clients {
            registered += c.await??;
        }
        let per_s = registered as f64 / started.elapsed().as_secs_f64();
        println!(
            "\n1. registrations: {per_s:.0} messages/s ({registered} in {:.1} s, batches of 1,000, 4 clients; goal >= 20,000)",
            started.elapsed().as_secs_f64()
        );

        // 2. Callbacks alone and beside 2,000 registrations/s.
        let mut alone = Vec::new();
        let mut beside = Vec::new();
        let (mut alone_latencies, mut beside_latencies) = (Vec::new(), Vec::new());
        for (i, with_registrations) in [false, true, true, false].into_iter().enumerate() {
            let deadline = Instant::now() + phase;
            let pacer = with_registrations.then(|| {
                tokio::spawn(register_until(
                    base.clone(),
                    token.clone(),
                    100 + i as u64,
                    deadline,
                    Some(Duration::from_millis(500)),
                ))
            });
            let (rate, latencies) = callbacks(service.port, CHANNEL, PASSWORD, connections, phase, i as u64).await?;
            let sent = match pacer {
                Some(p) => p.await??,
                None => 0,
            };
            println!(
                "   phase {}: {:>6.0} callbacks/s, p99 {:.1} ms{}",
                i + 1,
                rate,
                pct(&latencies, 0.99),
                if with_registrations {
                    format!(", {:.0} registrations/s beside", sent as f64 / phase.as_secs_f64())
                } else {
                    ", alone".to_owned()
                }
            );
            if with_registrations {
                beside.push(rate);
                beside_latencies.extend(latencies);
            } else {
                alone.push(rate);
                alone_latencies.extend(latencies);
            }
        }
        alone_latencies.sort();
        beside_latencies.sort();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let alone_p99 = pct(&alone_latencies, 0.99);
        println!(
            "2. callbacks: {:.0}/s alone (p99 {:.1} ms), {:.0}/s beside 2,000 registrations/s (p99 {:.1} ms): ratio {:.2} (goal >= 0.9)",
            mean(&alone),
            alone_p99,
            mean(&beside),
            pct(&beside_latencies, 0.99),
            mean(&beside) / mean(&alone)
        );

        // 3. The sweep alone, then beside callbacks, each on a channel of
        // its own whose messages were all sent two days ago.
        // Channel ids shaped as KooMessage's (18 digits, as in its
        // interface's example): every index of messages and of the feed
        // repeats them.
        let swept_alone = sweep(&service, "202612070000000001", sweep_size, None).await?;
        println!(
            "3. sweep alone: {sweep_size} messages unreported in {:.1} s: {:.0} messages/s (goal >= 50,000; from `channel set` to the last, including up to one 200 ms tick)",
            swept_alone.as_secs_f64(),
            sweep_size as f64 / swept_alone.as_secs_f64(),
        );
        let beside_size = sweep_size / 4;
        let load = Some((connections, alone_p99));
        let swept_beside = sweep(&service, "202612070000000002", beside_size, load).await?;
        println!(
            "   sweep beside callbacks: {beside_size} messages in {:.1} s: {:.0} messages/s",
            swept_beside.as_secs_f64(),
            beside_size as f64 / swept_beside.as_secs_f64(),
        );
        Ok(())
    })
    .await
}

/// Registers batches of 1,000 until `deadline`, one every `every` if set
/// (else back to back); returns the messages registered.
async fn register_until(
    base: String,
    token: String,
    seed: u64,
    deadline: Instant,
    every: Option<Duration>,
) -> anyhow::Result<u64> {
    let client = reqwest::Client::new();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut registered = 0;
    let mut tick = every.map(tokio::time::interval);
    while Instant::now() < deadline {
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        let messages: Vec<serde_json::Value> = (0..1000)
            .map(|_| {
                serde_json::json!({"message_id": rng.message_id(), "sender": "86173xxxx4526",
                                   "user_number": rng.user_number(), "tags": ["bench"]})
            })
            .collect();
        let answer = client
            .post(format!("{base}/api/v1/channels/{CHANNEL}/messages"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "messages": messages }))
            .send()
            .await?;
        anyhow::ensure!(
            answer.status() == 200,
            "registration answered {}",
            answer.status()
        );
        let body: serde_json::Value = answer.json().await?;
        registered += body["registered"].as_u64().unwrap_or(0);
    }
    Ok(registered)
}

/// Fills `channel` with `n` messages sent two days ago, sets its
/// `unreported_after` to 1 s and waits until the service's sweep has made
/// them all `unreported`; with `load` (connections, p99 alone in ms),
/// callbacks run meanwhile and their rate and p99 are printed. Returns how
/// long the sweep took from `channel set`.
async fn sweep(
    service: &Service,
    channel: &str,
    n: i64,
    load: Option<(usize, f64)>,
) -> anyhow::Result<Duration> {
    // Not due until `channel set` below: the fill must not race the sweep.
    cli(
        &service.url,
        &[],
        &[
            "channel",
            "add",
            channel,
            "--unreported-after",
            "100000h",
            "--password-stdin",
        ],
        PASSWORD,
    )?;
    fill_sent(service, channel, n).await?;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = match load {
        None => Vec::new(),
        Some((connections, _)) => (0..connections)
            .map(|c| {
                let done = done.clone();
                tokio::spawn(callback_client(
                    service.port,
                    CHANNEL,
                    PASSWORD,
                    7_000_000 + c as u64,
                    move || !done.load(std::sync::atomic::Ordering::Relaxed),
                ))
            })
            .collect(),
    };
    let mut conn = PgConnection::connect(&service.url).await?;
    let wal_before = wal(&mut conn).await?;
    let cpu_before = support::cpu(service.pid);
    let started = Instant::now();
    cli(
        &service.url,
        &[],
        &["channel", "set", channel, "--unreported-after", "1s"],
        "",
    )?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // From the statistics, which the sweep writes in each batch's
        // transaction: a few rows per hour. Asking the messages costs the
        // sweep's time: `exists (... status = 'sent')` is planned as a
        // sequential scan, which passes every message already swept, ten
        // times a second (it took a fifth of the rate measured).
        let swept: i64 = sqlx::query_scalar(
            "select coalesce(sum(reached_unreported), 0)::bigint from stats_counts
             where channel_id = $1 and tag = ''",
        )
        .bind(channel)
        .fetch_one(&mut conn)
        .await?;
        let left = swept < n;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "messages still sent after 900 s"
        );
        if !left {
            break;
        }
    }
    let took = started.elapsed();
    let cpu_after = support::cpu(service.pid);
    let wal_after = wal(&mut conn).await?;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    // Per message swept (with callbacks beside, theirs too).
    let per = |after: f64, before: f64| (after - before) / n as f64;
    println!(
        "   per message swept: service CPU {:.1} µs, PostgreSQL CPU {:.1} µs, WAL {:.0} B, full-page images {:.3}",
        per(cpu_after[0], cpu_before[0]) * 1e6,
        per(cpu_after[1], cpu_before[1]) * 1e6,
        per(wal_after.0, wal_before.0),
        per(wal_after.1, wal_before.1),
    );
    let (mut ok, mut latencies) = (0u64, Vec::new());
    for t in tasks {
        let (n, l) = t.await??;
        ok += n;
        latencies.extend(l);
    }
    latencies.sort();
    if let Some((_, alone_p99)) = load {
        println!(
            "   callbacks meanwhile: {:.0}/s, p99 {:.1} ms = {:.2} x the p99 alone (goal <= 2)",
            ok as f64 / took.as_secs_f64(),
            pct(&latencies, 0.99),
            pct(&latencies, 0.99) / alone_p99
        );
    }
    let unreported: i64 = sqlx::query_scalar(
        "select count(*) from messages where channel_id = $1 and status = 'unreported'",
    )
    .bind(channel)
    .fetch_one(&mut conn)
    .await?;
    anyhow::ensure!(unreported == n, "{unreported} of {n} unreported");
    Ok(took)
}

/// WAL bytes written so far and full-page images among them.
async fn wal(conn: &mut PgConnection) -> anyhow::Result<(f64, f64)> {
    Ok(sqlx::query_as(
        "select (pg_current_wal_lsn() - '0/0')::float8, wal_fpi::float8 from pg_stat_wal",
    )
    .fetch_one(conn)
    .await?)
}

/// `n` messages of `channel` registered two days ago and never reported,
/// written in SQL (as the registration statement would leave them: a
/// `sent` history entry each, the statistics rebuilt).
async fn fill_sent(service: &Service, channel: &str, n: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = PgConnection::connect(&service.url).await?;
    conn.execute("set statement_timeout = 0").await?;
    sqlx::query(
        "insert into messages (channel_id, message_id, sender, user_number, status,
                               first_seen_at, updated_at, changed_xid, sent_at)
         select $1, md5($1 || i) || substr(md5((-i)::text), 1, 1), '86173xxxx4526',
                (8600000000000 + i % 1000000)::text, 'sent', t.at, t.at, pg_current_xact_id(), t.at
         -- Sent one after another, as real traffic is: a message's place in
         -- the table follows its sending time, which the sweep goes by.
         from generate_series(1, $2) i
         cross join lateral (select now() - interval '2 days' + i * interval '1 ms' as at) t",
    )
    .bind(channel)
    .bind(n)
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "insert into message_history (message_key, channel_id, status, first_received_at,
                                      last_received_at, receipt_count, advanced)
         select message_key, channel_id, 'sent', updated_at, updated_at, 1, true
         from messages where channel_id = $1 and status = 'sent'
         on conflict do nothing",
    )
    .bind(channel)
    .execute(&mut conn)
    .await?;
    conn.execute("lock table messages in share mode; select koostatus_stats_rebuild()")
        .await?;
    conn.execute("vacuum analyze messages").await?;
    conn.execute("vacuum analyze message_history").await?;
    println!(
        "   (filled {n} sent messages in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
