//! Statistics benchmark: fills one channel with 5,000,000 messages over 90
//! days (and 9 channels of 100,000), then prints:
//! - p50/p99 of a 90-day daily and a 7-day hourly `/stats` request;
//! - how long `stats rebuild` takes over all of it (the rows go in by
//!   plain inserts, so the rebuild makes the aggregates);
//! - callbacks/s through the webhook, statistics kept;
//! - reports/s of the batch statement with the statistics and of the same
//!   statement before them (a copy kept here as the baseline), alternating
//!   in the same run, 64 writers calling it directly.
//!
//! Run: `cargo bench --bench stats` (PostgreSQL at 127.0.0.1:5432). It
//! creates and finally drops the database `koostatus_bench_stats`.
//! BENCH_MESSAGES (5,000,000) and BENCH_SECONDS (8 per load phase) change
//! the size.

use std::time::{Duration, Instant};

use koostatus::config::Config;
use koostatus::db::reports::Incoming;
use koostatus::domain::{ChannelId, Report, Status};
use koostatus::startup::Application;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use support::{env, measure, pct, read_answer, report_request};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod support;

const DB: &str = "koostatus_bench_stats";
const PASSWORD: &str = "bench-webhook-password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    support::on_scratch_database(DB, |url| async move { run(&url).await }).await
}

async fn run(url: &str) -> anyhow::Result<()> {
    let messages: i64 = env("BENCH_MESSAGES", 5_000_000);
    let seconds: u64 = env("BENCH_SECONDS", 8);
    let mut config = Config::default();
    config.database.url = koostatus::config::DatabaseUrl::parse(url).map_err(anyhow::Error::msg)?;
    config.listen = "127.0.0.1:0".parse()?;
    koostatus::db::migrations::run(&config.database).await?;
    let mut conn = PgConnection::connect(url).await?;

    let hash = koostatus::auth::password::hash(&secrecy::SecretString::from(PASSWORD));
    for channel in [
        "big", "load", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9",
    ] {
        sqlx::query("insert into channels (id, password_hash) values ($1, $2)")
            .bind(channel)
            .bind(&hash)
            .execute(&mut conn)
            .await?;
    }
    let started = Instant::now();
    fill(&mut conn, "big", messages).await?;
    for c in 1..=9 {
        fill(&mut conn, &format!("c{c}"), messages / 50).await?;
    }
    conn.execute("vacuum analyze").await?;
    let filled = started.elapsed();
    println!(
        "filled {messages} messages in one channel and {} in each of 9 others, over 90 days, in {:.1} s",
        messages / 50,
        filled.as_secs_f64(),
    );

    let pool = koostatus::db::pool(
        &config.database,
        koostatus::db::connect_options(&config.database),
    );
    // The rows went in by plain inserts: the aggregates come from a rebuild.
    let started = Instant::now();
    let counted = koostatus::db::stats::rebuild(&pool).await?;
    println!(
        "stats rebuild: {counted} messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let app = Application::build(config, pool.clone()).await?;
    let port = app.port();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let (token, token_hash) = koostatus::auth::tokens::generate();
    koostatus::db::tokens::insert(&pool, "bench", &token_hash, None, false).await?;
    let client = reqwest::Client::new();
    let stats = |query: &'static str| {
        let (client, token) = (client.clone(), token.clone());
        let url = format!("http://127.0.0.1:{port}/api/v1/channels/big/stats?{query}");
        move || {
            let (client, token, url) = (client.clone(), token.clone(), url.clone());
            async move { client.get(url).bearer_auth(token).send().await }
        }
    };
    let daily = measure(
        200,
        stats("from=2026-08-26T00:00:00Z&to=2026-11-24T00:00:00Z&bucket=day"),
    )
    .await?;
    let hourly = measure(
        200,
        stats("from=2026-11-17T00:00:00Z&to=2026-11-24T00:00:00Z&bucket=hour"),
    )
    .await?;
    println!(
        "\n{:<44} {:>8} {:>8}",
        format!("request (channel of {messages})"),
        "p50 ms",
        "p99 ms"
    );
    for (name, t) in [
        ("90 days by day (90 buckets)", &daily),
        ("7 days by hour (168 buckets)", &hourly),
    ] {
        println!("{name:<44} {:>8.2} {:>8.2}", pct(t, 0.5), pct(t, 0.99));
    }

    let callbacks = load(port, 64, Duration::from_secs(seconds), 0).await?;
    println!("\ncallbacks with statistics kept, 64 connections, {seconds} s: {callbacks:.0}/s");

    // The batch statement with the statistics and the same statement as it
    // was before them (WITHOUT_STATISTICS), alternating, 64 writers.
    let mut rates = [Vec::new(), Vec::new()];
    for (round, keep) in [true, false, true, false, true, false]
        .into_iter()
        .enumerate()
    {
        let rate = direct(&pool, keep, Duration::from_secs(seconds), round).await?;
        rates[usize::from(!keep)].push(rate);
    }
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    let (with, without) = (mean(&rates[0]), mean(&rates[1]));
    println!(
        "batch statement, 64 writers, batches of 32, {seconds} s per run: with statistics {with:.0} reports/s ({:.0?}), without {without:.0} reports/s ({:.0?}): ratio {:.2}",
        rates[0],
        rates[1],
        with / without
    );
    handle.stop(true).await;
    Ok(())
}

/// `n` messages of `channel` first seen over the 90 days before 2026-11-24: 5 %
/// failed, 30 % delivered, 65 % read after 1 s to a few days (spread on a
/// log scale), inserted 500,000 a statement.
async fn fill(conn: &mut PgConnection, channel: &str, n: i64) -> anyhow::Result<()> {
    let mut from = 0;
    while from < n {
        let to = (from + 500_000).min(n);
        sqlx::query(
            "insert into messages (channel_id, message_id, sender, user_number, status,
                                   first_seen_at, updated_at, changed_xid)
             select $1, 'm' || i, 's', 'u' || (i % 100000), s.status, s.seen,
                    s.seen + case when s.status = 'read'
                                  then power(1.1, (i * 7919) % 130) * interval '1 second'
                                  else interval '1 second' end,
                    pg_current_xact_id()
             from generate_series($2::int8, $3::int8 - 1) i,
                  lateral (select timestamptz '2026-11-24' - interval '90 days'
                                  + (i::float8 / $4) * interval '90 days' as seen,
                                  case when (i * 2654435761) % 100 < 5 then 'failed'
                                       when (i * 2654435761) % 100 < 35 then 'delivered'
                                       else 'read' end::message_status as status) s",
        )
        .bind(channel)
        .bind(from)
        .bind(to)
        .bind(n as f64)
        .execute(&mut *conn)
        .await?;
        from = to;
    }
    Ok(())
}

/// Reports/s of 64 writers calling the batch statement directly (no HTTP):
/// batches of 32, each report a new message or the next status of one.
async fn direct(
    pool: &PgPool,
    keep: bool,
    duration: Duration,
    round: usize,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + duration;
    let writers: Vec<_> = (0..64)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut sent = 0usize;
                let mut batch_no = 0usize;
                while Instant::now() < deadline {
                    let status = ["delivered", "read", "failed"][batch_no % 3];
                    let batch: Vec<Incoming> = (0..32)
                        .map(|i| Incoming {
                            channel: ChannelId::parse("load").expect("valid"),
                            report: Report::from_json(
                                format!(
                                    r#"{{"message_id":"d{round}-{w}-{}-{i}","sender":"s","user_number":"u{w}","status":"{status}"}}"#,
                                    batch_no / 2
                                )
                                .as_bytes(),
                            )
                            .expect("valid"),
                            received_at: chrono::Utc::now(),
                        })
                        .collect();
                    if keep {
                        koostatus::db::reports::record_reports(&pool, &batch).await?;
                    } else {
                        without_statistics(&pool, &batch).await?;
                    }
                    sent += batch.len();
                    batch_no += 1;
                }
                anyhow::Ok(sent)
            })
        })
        .collect();
    let mut total = 0;
    for w in writers {
        total += w.await??;
    }
    Ok(total as f64 / duration.as_secs_f64())
}

/// The batch statement before the statistics: the baseline.
async fn without_statistics(pool: &PgPool, batch: &[Incoming]) -> sqlx::Result<()> {
    let column = |f: &dyn Fn(&Incoming) -> String| batch.iter().map(f).collect::<Vec<_>>();
    sqlx::query(WITHOUT_STATISTICS)
        .bind(column(&|i| i.channel.as_str().to_owned()))
        .bind(column(&|i| i.report.message_id.clone()))
        .bind(column(&|i| i.report.sender.clone()))
        .bind(column(&|i| i.report.user_number.clone()))
        .bind(
            batch
                .iter()
                .map(|i| {
                    i.report
                        .status
                        .ranked()
                        .expect("the benchmark sends ranked statuses")
                })
                .collect::<Vec<Status>>(),
        )
        .bind(batch.iter().map(|i| i.received_at).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|i| serde_json::Value::Object(i.report.extra.clone()))
                .collect::<Vec<_>>(),
        )
        .fetch_all(pool)
        .await?;
    Ok(())
}

/// db::reports::record_reports as it was before the statistics (c73a0d1),
/// on the history of V18 (without the message's id).
const WITHOUT_STATISTICS: &str = include_str!("sql/stats_without_statistics.sql");

/// Callbacks/s of `connections` keep-alive connections posting new
/// messages and their updates to channel `load` for `duration`.
async fn load(port: u16, connections: u64, duration: Duration, round: u64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + duration;
    let clients: Vec<_> = (0..connections)
        .map(|c| {
            tokio::spawn(async move {
                let mut stream = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await?);
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    let status = ["delivered", "read", "failed"][(sent % 3) as usize];
                    let body = format!(
                        r#"{{"message_id":"r{round}-c{c}-{}","sender":"s","user_number":"u{c}","status":"{status}"}}"#,
                        sent / 2
                    );
                    stream
                        .get_mut()
                        .write_all(report_request("load", PASSWORD, &body).as_bytes())
                        .await?;
                    anyhow::ensure!(read_answer(&mut stream).await? == 200, "a callback was refused");
                    sent += 1;
                }
                anyhow::Ok(sent)
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        total += c.await??;
    }
    Ok(total as f64 / duration.as_secs_f64())
}
