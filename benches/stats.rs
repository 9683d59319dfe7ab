//! Statistics benchmark: fills one channel with 5,000,000 messages over 90
//! days (and 9 channels of 100,000), the aggregates kept by the triggers as
//! the rows go in, then prints:
//! - p50/p99 of a 90-day daily and a 7-day hourly `/stats` request;
//! - callbacks/s with the statistics kept and without (the triggers
//!   disabled), alternating, in the same run;
//! - how long `stats rebuild` takes over all of it.
//!
//! Run: `cargo bench --bench stats` (PostgreSQL at 127.0.0.1:5432). It
//! creates and finally drops the database `koostatus_bench_stats`.
//! BENCH_MESSAGES (5,000,000) and BENCH_SECONDS (8 per load phase) change
//! the size.

use std::time::{Duration, Instant};

use koostatus::config::Config;
use koostatus::startup::Application;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use support::{SERVER, env, measure, pct, read_answer, report_request};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod support;

const DB: &str = "koostatus_bench_stats";
const PASSWORD: &str = "bench-webhook-password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    support::drop_database(DB).await?;
    let mut admin = PgConnection::connect(&format!("{SERVER}/postgres")).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("create database {DB}")))
        .await?;
    let result = run(&format!("{SERVER}/{DB}")).await;
    support::drop_database(DB).await?;
    result
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
        "filled {messages} messages in one channel and {} in each of 9 others over 90 days in {:.1} s ({:.0} messages/s, aggregates kept by the triggers)",
        messages / 50,
        filled.as_secs_f64(),
        (messages + 9 * (messages / 50)) as f64 / filled.as_secs_f64()
    );

    let pool = koostatus::db::pool(
        &config.database,
        koostatus::db::connect_options(&config.database),
    );
    let app = Application::build(config, pool.clone()).await?;
    let port = app.port();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let (token, token_hash) = koostatus::auth::tokens::generate();
    koostatus::db::tokens::insert(&pool, "bench", &token_hash, None).await?;
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
        "request (channel of 5,000,000)", "p50 ms", "p99 ms"
    );
    for (name, t) in [
        ("90 days by day (90 buckets)", &daily),
        ("7 days by hour (168 buckets)", &hourly),
    ] {
        println!("{name:<44} {:>8.2} {:>8.2}", pct(t, 0.5), pct(t, 0.99));
    }

    // The same load with the statistics kept and without, alternating.
    let mut rates = [Vec::new(), Vec::new()];
    for (round, keep) in [true, false, true, false, true, false]
        .into_iter()
        .enumerate()
    {
        triggers(&pool, keep).await?;
        let rate = load(port, 64, Duration::from_secs(seconds), round as u64).await?;
        rates[usize::from(!keep)].push(rate);
    }
    triggers(&pool, true).await?;
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    let (with, without) = (mean(&rates[0]), mean(&rates[1]));
    println!(
        "\ncallbacks, 64 connections, {seconds} s per run: with statistics {with:.0}/s ({:.0?}), without {without:.0}/s ({:.0?}): ratio {:.2}",
        rates[0],
        rates[1],
        with / without
    );

    let started = Instant::now();
    let counted = koostatus::db::stats::rebuild(&pool).await?;
    println!(
        "stats rebuild: {counted} messages in {:.1} s",
        started.elapsed().as_secs_f64()
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

/// The statistics' triggers on or off (the benchmark's own database).
async fn triggers(pool: &PgPool, on: bool) -> anyhow::Result<()> {
    let verb = if on { "enable" } else { "disable" };
    for t in ["stats_on_insert", "stats_on_update", "stats_on_delete"] {
        pool.execute(sqlx::AssertSqlSafe(format!(
            "alter table messages {verb} trigger {t}"
        )))
        .await?;
    }
    Ok(())
}

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
