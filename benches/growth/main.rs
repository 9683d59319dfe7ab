//! Growth benchmark: what one report costs on empty tables and on tables
//! filled to N messages shaped like real data, and where that cost goes.
//!
//! Run: `cargo bench --bench growth` (PostgreSQL at 127.0.0.1:5432, as
//! root: it reads the server's WAL with `pg_waldump`). Options through the
//! environment: BENCH_SIZES (`0,10000000`: messages already stored, one run
//! each, in this order), BENCH_SECONDS (60), BENCH_CONNECTIONS (64),
//! BENCH_BINS (`koostatus` binaries separated by commas, the build before a
//! change first: each size runs each binary in turn, BENCH_ROUNDS (1)
//! times, so that builds alternate in one session; default: this build),
//! BENCH_CALLGRIND (seconds of callbacks counted under callgrind per
//! binary on the first size, `callgrind.rs`; 0, the default, skips it),
//! BENCH_KNOWN (0: with N, each run first registers N more messages as
//! `sent` in SQL, as registration writes them, and the load reports on
//! those instead of new messages: `delivered`, then `read` once all are
//! delivered; the traffic of a sender that registers what it sends).
//!
//! Per size, once: a database migrated by the first binary, a channel
//! filled in SQL (`fill.rs`: 33-character random hex message ids like the
//! seed's, 13-digit user numbers of 1,000,000 customers, a history entry and
//! a feed entry per message, over 30 days), `VACUUM ANALYZE` as autovacuum
//! would have done, `koostatus stats rebuild`; kept as a template and
//! dropped at the end (kept with BENCH_KEEP_TEMPLATES=1, and then used again
//! by the next run: a 10 M fill takes about 15 minutes here). For each later
//! binary, a copy of the template is migrated by it once (as an upgrade
//! would, then `VACUUM ANALYZE`; the time is printed) and kept likewise. Each run: a copy
//! of the template, a checkpoint, the service on it, then callbacks of new seed-shaped messages on
//! BENCH_CONNECTIONS keep-alive connections for BENCH_SECONDS. Printed per run: callbacks/s (and its ratio to the first
//! run), p50 and p99, and per report the service's CPU, PostgreSQL's CPU
//! (every `postgres` process), WAL bytes and records, full-page images;
//! the checkpoints during the load; and, from 5 s of WAL near the load's
//! end read by `pg_waldump`, WAL bytes and page images per report by
//! relation (`wal.rs`). Speeds are for people to read; a callback answered
//! other than 200 fails the run.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use support::{
    SERVER, Service, callbacks, cli_of, cpu, env, known_callbacks, pct, wait_ready, with_service_on,
};

mod callgrind;
mod fill;
#[path = "../support/mod.rs"]
mod support;
mod wal;

const DB: &str = "koostatus_bench_growth";
const CHANNEL: &str = "bench";
const PASSWORD: &str = "bench-webhook-password";

/// The database's counters that matter per report.
#[derive(Clone, Copy)]
struct Counters {
    lsn: i64,
    wal_records: i64,
    fpi: i64,
    checkpoints: i64,
    /// CPU seconds: the service, every PostgreSQL process.
    service_cpu: f64,
    postgres_cpu: f64,
}

async fn counters(db: &mut PgConnection, server: u32) -> anyhow::Result<Counters> {
    let (lsn, wal_records, fpi, checkpoints): (i64, i64, i64, i64) = sqlx::query_as(
        "select (pg_current_wal_lsn() - '0/0')::int8, w.wal_records, w.wal_fpi,
                b.checkpoints_timed + b.checkpoints_req
         from pg_stat_wal w, pg_stat_bgwriter b",
    )
    .fetch_one(&mut *db)
    .await?;
    let [service_cpu, postgres_cpu, _] = cpu(server);
    Ok(Counters {
        lsn,
        wal_records,
        fpi,
        checkpoints,
        service_cpu,
        postgres_cpu,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<u64> = list("BENCH_SIZES", "0,10000000")
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let bins = list("BENCH_BINS", &support::bin());
    let seconds: u64 = env("BENCH_SECONDS", 60);
    let connections: usize = env("BENCH_CONNECTIONS", 64);
    let rounds: usize = env("BENCH_ROUNDS", 1);
    let known: u64 = env("BENCH_KNOWN", 0);
    println!("{connections} connections, {seconds} s per run, sizes {sizes:?}, binaries:");
    for (i, bin) in bins.iter().enumerate() {
        println!("  [{i}] {bin}");
    }
    let mut templates = Vec::new();
    let mut baseline = vec![None; bins.len()];
    let outcome = async {
        for &size in &sizes {
            for _ in 0..rounds {
                for (i, bin) in bins.iter().enumerate() {
                    let filled = template_of(size, 0);
                    if !templates.contains(&filled) {
                        if !exists(&filled).await? {
                            make_template(&filled, &bins[0], size).await?;
                        }
                        templates.push(filled.clone());
                    }
                    // A later binary runs on a copy migrated once beforehand,
                    // so that no run pays the upgrade.
                    let template = template_of(size, i);
                    if i > 0 && !templates.contains(&template) {
                        if !exists(&template).await? {
                            migrate_copy(&filled, &template, bin).await?;
                        }
                        templates.push(template.clone());
                    }
                    println!("run: binary [{i}], {size} messages stored");
                    let duration = Duration::from_secs(seconds);
                    let rate = with_service_on(DB, Some(&template), bin, &[], |service| {
                        let seed = templates.len() as u64;
                        one_run(service, size, known, connections, duration, seed)
                    })
                    .await?;
                    let first = *baseline[i].get_or_insert(rate);
                    println!(
                        "  callbacks/s against this binary's first run ({} messages): {:.2}\n",
                        sizes[0],
                        rate / first
                    );
                }
            }
        }
        // The service's own instructions, per binary, on the first size.
        let counted: u64 = env("BENCH_CALLGRIND", 0);
        if counted > 0 {
            for (i, bin) in bins.iter().enumerate() {
                println!("callgrind: binary [{i}], {} messages stored", sizes[0]);
                callgrind::run(bin, i, &template_of(sizes[0], i), counted).await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    if env::<u8>("BENCH_KEEP_TEMPLATES", 0) == 0 {
        for template in &templates {
            support::drop_database(template).await?;
        }
    }
    outcome
}

/// The database a run of binary `bin` (its index in BENCH_BINS) copies at
/// `size`: the filled template for the first binary, a copy of it migrated
/// by a later one.
fn template_of(size: u64, bin: usize) -> String {
    match bin {
        0 => format!("{DB}_t{size}"),
        _ => format!("{DB}_t{size}_b{bin}"),
    }
}

/// A comma-separated list from the environment.
fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether a database of this name exists (a template kept before).
async fn exists(name: &str) -> anyhow::Result<bool> {
    let mut admin = PgConnection::connect(&format!("{SERVER}/postgres")).await?;
    let found = sqlx::query_scalar("select exists (select from pg_database where datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await?;
    Ok(found)
}

/// A database migrated by `bin`, its channel filled with `size` messages.
async fn make_template(name: &str, bin: &str, size: u64) -> anyhow::Result<()> {
    support::drop_database(name).await?;
    let mut admin = PgConnection::connect(&format!("{SERVER}/postgres")).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut admin)
        .await?;
    let url = format!("{SERVER}/{name}");
    cli_of(bin, &url, &[], &["migrate"], "")?;
    let add = ["channel", "add", CHANNEL, "--password-stdin"];
    cli_of(bin, &url, &[], &add, PASSWORD)?;
    let mut db = PgConnection::connect(&url).await?;
    fill::fill(&mut db, CHANNEL, size).await?;
    cli_of(bin, &url, &[], &["stats", "rebuild"], "")?;
    db.close().await?;
    Ok(())
}

/// `copy`: the template `from` migrated by `bin`, as an upgrade would;
/// prints how long the migration took.
async fn migrate_copy(from: &str, copy: &str, bin: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&format!("{SERVER}/postgres")).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create database {copy} template {from}"
    )))
    .execute(&mut admin)
    .await?;
    let started = std::time::Instant::now();
    let url = format!("{SERVER}/{copy}");
    let applied = cli_of(bin, &url, &[], &["migrate"], "")?;
    let mut db = PgConnection::connect(&url).await?;
    sqlx::query("vacuum analyze").execute(&mut db).await?;
    println!(
        "migrated a copy of {from} for {bin} in {:.0} s (with VACUUM ANALYZE): {}",
        started.elapsed().as_secs_f64(),
        applied.trim().replace('\n', " ")
    );
    Ok(())
}

async fn one_run(
    service: Service,
    size: u64,
    known: u64,
    connections: usize,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<f64> {
    let (url, port, server) = (service.url.as_str(), service.port, service.pid);
    wait_ready(port).await?;
    let mut db = PgConnection::connect(url).await?;
    let registered = match known {
        0 => None,
        n => Some(fill::register(&mut db, CHANNEL, n).await?),
    };
    // Unmeasured: the first callbacks of each connection pay argon2 and
    // the service's caches fill.
    let warm_up = Duration::from_secs(3);
    let (_, warm) = callbacks(port, CHANNEL, PASSWORD, connections, warm_up, seed + 1000).await?;
    sqlx::query("checkpoint").execute(&mut db).await?;

    // The WAL of 5 s near the end of the load, for pg_waldump.
    let window = {
        let url = url.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(duration.saturating_sub(Duration::from_secs(6))).await;
            let mut db = PgConnection::connect(&url).await?;
            wal::drop_slot(&mut db).await?;
            // A slot holds the window's WAL until pg_waldump has read it:
            // checkpoints every few seconds recycle segments otherwise. (It
            // holds from the last checkpoint on, so the window starts after.)
            sqlx::query("select pg_create_physical_replication_slot($1, true)")
                .bind(wal::SLOT)
                .execute(&mut db)
                .await?;
            let lsn = || "select pg_current_wal_lsn()::text";
            let start: String = sqlx::query_scalar(lsn()).fetch_one(&mut db).await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let end: String = sqlx::query_scalar(lsn()).fetch_one(&mut db).await?;
            anyhow::Ok((start, end))
        })
    };
    let before = counters(&mut db, server).await?;
    let started = std::time::Instant::now();
    let (rate, latencies) = match registered {
        None => callbacks(port, CHANNEL, PASSWORD, connections, duration, seed + 1).await?,
        Some(known) => {
            known_callbacks(port, CHANNEL, PASSWORD, connections, duration, known).await?
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let after = counters(&mut db, server).await?;
    let reports = rate * elapsed;
    let per = |x: f64| x / reports;
    println!(
        "{size} messages before the load: {rate:.0} callbacks/s, p50 {:.1} ms, p99 {:.1} ms",
        pct(&latencies, 0.5),
        pct(&latencies, 0.99)
    );
    println!(
        "  per report: service CPU {:.1} us, PostgreSQL CPU {:.1} us, WAL {:.0} B in {:.1} records, {:.3} full-page images; {} checkpoints during the load",
        per(after.service_cpu - before.service_cpu) * 1e6,
        per(after.postgres_cpu - before.postgres_cpu) * 1e6,
        per((after.lsn - before.lsn) as f64),
        per((after.wal_records - before.wal_records) as f64),
        per((after.fpi - before.fpi) as f64),
        after.checkpoints - before.checkpoints,
    );
    let (start, end) = window.await??;
    let window_reports = rate * 5.0;
    wal::print_by_relation(&mut db, &start, &end, window_reports).await?;
    // Every message of the warm-up (and of the load, unless it reports on
    // known ones) is new (random 132-bit ids), and each answer 200 is one
    // receipt in the history (the fill's messages have one each, the
    // registered ones only a `sent` entry): none may be missing. From V19
    // a new message's first receipt is on its row (`first_status`).
    let first_on_row: bool = sqlx::query_scalar(
        "select exists (select 1 from information_schema.columns
                        where table_name = 'messages' and column_name = 'first_status')",
    )
    .fetch_one(&mut db)
    .await?;
    let on_rows = if first_on_row {
        "select count(first_status) from messages"
    } else {
        "select 0::int8"
    };
    let (stored, receipts): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select (select count(*) from messages),
                (select coalesce(sum(receipt_count), 0)::int8 from message_history
                 where status <> 'sent') + ({on_rows})"
    )))
    .fetch_one(&mut db)
    .await?;
    let answered = (latencies.len() + warm.len()) as i64;
    let new = warm.len() as i64
        + if known == 0 {
            latencies.len() as i64
        } else {
            0
        };
    anyhow::ensure!(
        stored - (size + known) as i64 == new && receipts - size as i64 == answered,
        "{answered} callbacks answered ({new} of new messages), {} messages stored, {} receipts",
        stored - (size + known) as i64,
        receipts - size as i64
    );
    Ok(rate)
}
