//! What the benchmarks share: the scratch database, the service as a
//! process of its own and the CLI, waiting for a service, reading an
//! HTTP/1.1 answer on a keep-alive connection, percentiles and settings
//! from the environment. (Each benchmark includes this module;
//! not every one uses all of it.)
#![allow(dead_code)]

mod load;
pub mod machine;

// Not every benchmark uses all of these (as for the rest of this module).
#[allow(unused_imports)]
pub use load::{Known, Rng, callback_client, callbacks, known_callbacks, post_reports};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Drops a benchmark's database and checkpoints, so that every run starts
/// alike: no run pays for the WAL of the one before.
pub async fn drop_database(name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&format!("{SERVER}/postgres")).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "drop database if exists {name} with (force)"
        )))
        .await?;
    admin.execute("checkpoint").await?;
    Ok(())
}

/// Runs `bench` on a new database `name` (dropped first if a run before left
/// it behind, and dropped after), given its URL.
pub async fn on_scratch_database<F, Fut>(name: &str, bench: F) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    drop_database(name).await?;
    let mut admin = PgConnection::connect(&format!("{SERVER}/postgres")).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("create database {name}")))
        .await?;
    let result = bench(format!("{SERVER}/{name}")).await;
    drop_database(name).await?;
    result
}

/// The release binary the benchmarks run.
pub const BIN: &str = env!("CARGO_BIN_EXE_koostatus");

/// [`BIN`], or the binary BENCH_BIN names (the build before a change, to
/// compare both in one session).
pub fn bin() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// A running `koostatus serve` of [`with_service`].
pub struct Service {
    pub url: String,
    pub port: u16,
    pub pid: u32,
}

/// Runs `bench` beside `koostatus serve` on a fresh database `name` (dropped
/// after) and a free port, `env` its settings beyond the defaults; the
/// service's warnings go to a temporary file, printed when the benchmark
/// fails. The service is stopped with SIGTERM afterwards.
pub async fn with_service<F, Fut, T>(
    name: &str,
    env: &[(&str, &str)],
    bench: F,
) -> anyhow::Result<T>
where
    F: FnOnce(Service) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    with_service_on(name, None, &bin(), env, bench).await
}

/// As [`with_service`], the database a copy of `template` when given, and
/// the service the binary `bin`.
pub async fn with_service_on<F, Fut, T>(
    name: &str,
    template: Option<&str>,
    bin: &str,
    env: &[(&str, &str)],
    bench: F,
) -> anyhow::Result<T>
where
    F: FnOnce(Service) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    drop_database(name).await?;
    if let Some(template) = template {
        let mut admin = PgConnection::connect(&format!("{SERVER}/postgres")).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                // A file copy: WAL_LOG, the default, would write the whole
                // template into the WAL.
                "create database {name} template {template} strategy file_copy"
            )))
            .await?;
    }
    let url = format!("{SERVER}/{name}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log_path = std::env::temp_dir().join(format!("koostatus-bench-{name}-{port}.log"));
    let mut server = Command::new(bin)
        // Away from this repository's config.toml: the binary's own
        // defaults, whichever build it is.
        .current_dir(std::env::temp_dir())
        .args(["--database-url", &url, "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("KOOSTATUS_LOG__FILTER", "warn")
        .envs(env.iter().copied())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let service = Service {
        url,
        port,
        pid: server.id(),
    };
    let outcome = bench(service).await;
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    if outcome.is_err() {
        eprintln!("{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    }
    let _ = std::fs::remove_file(&log_path);
    drop_database(name).await?;
    outcome
}

/// Runs a `koostatus` command on `url`, `stdin` written to it; its output.
pub fn cli(url: &str, env: &[(&str, &str)], args: &[&str], stdin: &str) -> anyhow::Result<String> {
    cli_of(&bin(), url, env, args, stdin)
}

/// As [`cli`], with the binary `bin`.
pub fn cli_of(
    bin: &str,
    url: &str,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<String> {
    let mut child = Command::new(bin)
        .current_dir(std::env::temp_dir())
        .args(["--database-url", url])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{stdin}\n").as_bytes(),
    )?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "koostatus {args:?} failed");
    Ok(String::from_utf8(out.stdout)?)
}

/// Until `/readyz` on `port` answers 200, for at most 30 s.
pub async fn wait_ready(port: u16) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
                .await?;
            let mut buf = [0u8; 12];
            if s.read_exact(&mut buf).await.is_ok() && &buf[9..12] == b"200" {
                return Ok(());
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the service did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads one answer on a keep-alive connection: the status line, the
/// headers, and a body of `content-length` bytes, which it skips. Returns
/// the status code (0 when the status line is not HTTP).
pub async fn read_answer<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
) -> std::io::Result<u16> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut skip = vec![0u8; length];
    stream.read_exact(&mut skip).await?;
    Ok(code)
}

/// A metric's value (a counter, a gauge, or a histogram's `_count` or
/// `_sum`) from the service's `/metrics`; 0 when it has none yet.
pub async fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

/// A webhook request for `body` on `channel`.
pub fn report_request(channel: &str, password: &str, body: &str) -> String {
    format!(
        "POST /social/on/whatsapp/koomessage/report/{channel} HTTP/1.1\r\nhost: bench\r\nauthorization: {password}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The `p` quantile of sorted durations, in milliseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

/// A setting from the environment, else `default`.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `n` requests one after another (after 10 warm-up ones) and returns
/// their latencies, sorted.
pub async fn measure<F, Fut>(n: usize, mut request: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let started = Instant::now();
        let response = request().await?;
        anyhow::ensure!(response.status() == 200, "status {}", response.status());
        response.bytes().await?;
        if i >= 10 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    Ok(times)
}

/// CPU seconds used so far by the service, by every PostgreSQL process,
/// and by this benchmark.
pub fn cpu(server: u32) -> [f64; 3] {
    let seconds = |pid: &str| -> Option<(String, f64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1.to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
        Some((name, ticks / 100.0))
    };
    let postgres: f64 = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| seconds(e.ok()?.file_name().to_str()?))
                .filter(|(name, _)| name == "postgres")
                .map(|(_, s)| s)
                .sum()
        })
        .unwrap_or(0.0);
    let own = |pid: u32| seconds(&pid.to_string()).map_or(0.0, |(_, s)| s);
    [own(server), postgres, own(std::process::id())]
}
