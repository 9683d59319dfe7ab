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

mod support;

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

#[derive(Default)]
struct ServerStats {
    peak_rss_kib: u64,
    verifications: u64,
    batches: u64,
    reports: u64,
    missing: usize,
}

async fn fresh_database() -> anyhow::Result<()> {
    support::drop_database(DB).await
}

async fn service_run(
    name: &str,
    env: &[(&str, &str)],
    connections: usize,
    duration: Duration,
    flood_per_s: u32,
) -> anyhow::Result<(Run, ServerStats)> {
    fresh_database().await?;
    let url = format!("{SERVER}/{DB}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log_path = std::env::temp_dir().join(format!("koostatus-bench-{port}.log"));
    let bin = env!("CARGO_BIN_EXE_koostatus");
    let mut server = Command::new(bin)
        .args([
            "--database-url",
            &url,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KOOSTATUS_LOG__FILTER", "warn,koostatus::commands=info")
        .envs(env.iter().copied())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let outcome = async {
        wait_ready(port).await?;
        let mut add = Command::new(bin)
            .args([
                "--database-url",
                &url,
                "channel",
                "add",
                CHANNEL,
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        std::io::Write::write_all(
            &mut add.stdin.take().unwrap(),
            format!("{PASSWORD}\n").as_bytes(),
        )?;
        anyhow::ensure!(add.wait()?.success(), "channel add failed");
        println!("running: {name}");
        let load = tokio::spawn(http_load(port, connections, duration));
        let window = duration / WINDOWS.len() as u32;
        let (mut sent, mut bad) = (0, 0);
        if flood_per_s > 0 {
            for flooding in WINDOWS {
                if flooding {
                    let (s, b) = flood(port, flood_per_s, window).await?;
                    (sent, bad) = (sent + s, bad + b);
                } else {
                    tokio::time::sleep(window).await;
                }
            }
        }
        let mut run = load.await??;
        if flood_per_s > 0 {
            // Acknowledgements per window; the flood's windows against the others.
            let mut acks = [0usize; WINDOWS.len()];
            for at in &run.acked_at {
                let w = (at.as_secs_f64() / window.as_secs_f64()) as usize;
                acks[w.min(WINDOWS.len() - 1)] += 1;
            }
            let rate = |on: bool| {
                let n: usize = (0..WINDOWS.len())
                    .filter(|&w| WINDOWS[w] == on)
                    .map(|w| acks[w])
                    .sum();
                n as f64 / (window.as_secs_f64() * WINDOWS.len() as f64 / 2.0)
            };
            run.flood = Some(Flood {
                per_s: sent as f64 / (window.as_secs_f64() * WINDOWS.len() as f64 / 2.0),
                bad,
                alone_per_s: rate(false),
                flooded_per_s: rate(true),
            });
        }
        let peak_rss_kib = peak_rss(&server)?;
        let mut stats = stop(&mut server, port).await?;
        stats.peak_rss_kib = peak_rss_kib;
        stats.missing = missing(&url, &run.acked).await?;
        Ok((run, stats))
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&log_path);
    fresh_database().await?;
    outcome
}

/// VmHWM: the most resident memory the process has had.
fn peak_rss(server: &Child) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id()))?;
    if std::env::var("BENCH_DEBUG_RSS").is_ok() {
        eprintln!(
            "{}",
            status
                .lines()
                .filter(|l| l.starts_with("Vm") || l.starts_with("Threads"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or_else(|| anyhow::anyhow!("no VmHWM"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

/// The service's counters from `/metrics`, then SIGTERM.
async fn stop(server: &mut Child, port: u16) -> anyhow::Result<ServerStats> {
    let stats = ServerStats {
        verifications: metric(port, "koostatus_argon2_verifications_total").await? as u64,
        batches: metric(port, "koostatus_batch_size_count").await? as u64,
        reports: metric(port, "koostatus_batch_size_sum").await? as u64,
        ..Default::default()
    };
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()?;
    anyhow::ensure!(server.wait()?.success(), "the service did not exit 0");
    Ok(stats)
}

/// How many acknowledged (message, status) pairs the database lacks.
async fn missing(url: &str, acked: &[(String, Status)]) -> anyhow::Result<usize> {
    let mut conn = PgConnection::connect(url).await?;
    let rows: Vec<(String, String)> =
        sqlx::query_as("select message_id, status::text from message_history")
            .fetch_all(&mut conn)
            .await?;
    let stored: HashSet<(String, String)> = rows.into_iter().collect();
    Ok(acked
        .iter()
        .filter(|(id, s)| !stored.contains(&(id.clone(), s.as_str().to_owned())))
        .count())
}

async fn http_load(port: u16, connections: usize, duration: Duration) -> anyhow::Result<Run> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| tokio::spawn(http_client(port, deadline, c as u64 + 1)))
        .collect();
    let mut run = Run::default();
    for t in tasks {
        let (latencies, acked, errors) = t.await??;
        run.latencies.extend(latencies);
        run.acked_at
            .extend(acked.iter().map(|(_, _, at)| at.duration_since(started)));
        run.acked
            .extend(acked.into_iter().map(|(id, status, _)| (id, status)));
        run.errors += errors;
    }
    run.reports_per_s = run.acked.len() as f64 / started.elapsed().as_secs_f64();
    run.latencies.sort();
    Ok(run)
}

type ClientResult = (Vec<Duration>, Vec<(String, Status, Instant)>, usize);

/// One keep-alive connection posting reports back to back.
async fn http_client(port: u16, deadline: Instant, seed: u64) -> anyhow::Result<ClientResult> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let (mut latencies, mut acked, mut errors) = (Vec::new(), Vec::new(), 0);
    while Instant::now() < deadline {
        let (id, status) = rng.report();
        let body = format!(
            r#"{{"message_id":"{id}","sender":"86173xxxx4526","user_number":"86187xxxx5632","status":"{status}"}}"#
        );
        let sent = Instant::now();
        stream
            .get_mut()
            .write_all(report_request(CHANNEL, PASSWORD, &body).as_bytes())
            .await?;
        let code = read_answer(&mut stream).await?;
        latencies.push(sent.elapsed());
        if code == 200 {
            acked.push((id, status, Instant::now()));
        } else {
            errors += 1;
        }
    }
    Ok((latencies, acked, errors))
}

/// Wrong passwords at `per_s` requests a second over 8 paced keep-alive
/// connections, as they arrive through a load balancer (all from this host,
/// so the per-client budget is spent at once). Returns how many were sent
/// and how many got an answer other than 401 or 429 (or none).
async fn flood(port: u16, per_s: u32, duration: Duration) -> anyhow::Result<(u64, usize)> {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let body = r#"{"message_id":"x","sender":"s","user_number":"u","status":"read"}"#;
                let request = report_request(CHANNEL, "a-wrong-guess", body);
                let mut tick = tokio::time::interval(Duration::from_secs_f64(8.0 / per_s as f64));
                let (mut sent, mut bad) = (0u64, 0usize);
                let mut connection: Option<BufReader<TcpStream>> = None;
                while Instant::now() < deadline {
                    tick.tick().await;
                    let stream = match connection.as_mut() {
                        Some(s) => s,
                        None => connection.insert(BufReader::new(
                            TcpStream::connect(("127.0.0.1", port)).await?,
                        )),
                    };
                    sent += 1;
                    // One answer: status line, headers, body by content-length.
                    let answered = async {
                        stream.get_mut().write_all(request.as_bytes()).await?;
                        let code = read_answer(stream).await?;
                        std::io::Result::Ok(code == 401 || code == 429)
                    }
                    .await;
                    match answered {
                        Ok(true) => {}
                        Ok(false) => bad += 1,
                        // Closed by the service: unanswered, which it must
                        // not do to a refused guess; reconnect and go on.
                        Err(_) => {
                            bad += 1;
                            connection = None;
                        }
                    }
                }
                anyhow::Ok((sent, bad))
            })
        })
        .collect();
    let (mut sent, mut bad) = (0, 0);
    for t in tasks {
        let (s, b) = t.await??;
        sent += s;
        bad += b;
    }
    Ok((sent, bad))
}

/// The same writer and SQL as the service, fed by as many tasks as the
/// service had connections, without HTTP or authentication.
async fn direct_run(connections: usize, duration: Duration) -> anyhow::Result<Run> {
    fresh_database().await?;
    let mut admin = PgConnection::connect(&format!("{SERVER}/postgres")).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("create database {DB}")))
        .await?;
    // The same settings as the service gets: KOOSTATUS_INGEST__* apply to both.
    let mut config = Config::load(&Default::default())?;
    config.database.url = koostatus::config::DatabaseUrl::parse(&format!("{SERVER}/{DB}"))
        .map_err(anyhow::Error::msg)?;
    koostatus::db::migrations::run(&config.database).await?;
    let pool = koostatus::db::connect(&config.database).await?;
    koostatus::db::channels::insert(&pool, CHANNEL, "", "x").await?;
    println!("running: direct batched SQL");
    let writer = Arc::new(koostatus::ingest::Writer::start(
        pool.clone(),
        &config.ingest,
        config.database.commit_deadline(),
    ));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections as u64)
        .map(|c| {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut rng = Rng(c.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                let channel = ChannelId::parse(CHANNEL).unwrap();
                let (mut latencies, mut acked) = (Vec::new(), Vec::new());
                while Instant::now() < deadline {
                    let (id, status) = rng.report();
                    let report = Report {
                        message_id: id.clone(),
                        sender: "86173xxxx4526".into(),
                        user_number: "86187xxxx5632".into(),
                        status: koostatus::domain::Reported::Ranked(status),
                        extra: Default::default(),
                    };
                    let sent = Instant::now();
                    let incoming = Incoming {
                        channel: channel.clone(),
                        report,
                        received_at: chrono::Utc::now(),
                    };
                    if let Ok(Some(_)) = writer.write(incoming).await {
                        acked.push((id, status));
                    }
                    latencies.push(sent.elapsed());
                }
                (latencies, acked)
            })
        })
        .collect();
    let mut run = Run::default();
    for t in tasks {
        let (latencies, acked) = t.await?;
        run.latencies.extend(latencies);
        run.acked.extend(acked);
    }
    run.reports_per_s = run.acked.len() as f64 / started.elapsed().as_secs_f64();
    run.latencies.sort();
    drop(writer);
    pool.close().await;
    fresh_database().await?;
    Ok(run)
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
