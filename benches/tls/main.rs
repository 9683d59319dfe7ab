//! TLS against plain text (SPEC §14), on the release service, in one run:
//! HTTPS on the listener, then PostgreSQL over TLS (`verify-full`).
//!
//! Run: `cargo bench --bench tls` (PostgreSQL at 127.0.0.1:5432; the
//! `openssl` command makes the certificates). Options: BENCH_SECONDS (10,
//! per phase), BENCH_CONNECTIONS (64 keep-alive connections).
//!
//! Two services on one database, one plain and one with `[tls]`, take
//! callbacks in alternating phases (plain, HTTPS, HTTPS, plain) so that the
//! machine's drift falls on both; it prints callbacks/s and p99 of each and
//! the ratio (goal: HTTPS >= 0.85 of plain). Connections are opened (and
//! TLS handshakes made) before each phase starts, as KooMessage keeps
//! them open.
//!
//! Then a PostgreSQL cluster of the benchmark's own (initdb as `postgres`,
//! `ssl = on` with a certificate for 127.0.0.1 that the benchmark's CA
//! signed, `host` lines taking both) serves two services on one database,
//! one with `sslmode=disable`, one with `sslmode=verify-full`, in
//! alternating phases again (goal: TLS >= 0.9 of plain).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{cli, env, pct, post_reports, wait_ready, with_service};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

mod cluster;
#[path = "../support/mod.rs"]
mod support;

use cluster::{Cluster, make_certificates};

const DB: &str = "koostatus_bench_tls";
const CHANNEL: &str = "bench";
const PASSWORD: &str = "bench-webhook-password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env("BENCH_SECONDS", 10);
    let connections: usize = env("BENCH_CONNECTIONS", 64);
    let phase = Duration::from_secs(seconds);
    let dir = std::env::temp_dir().join(format!("koostatus-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    make_certificates(&dir)?;
    let outcome = with_service(DB, &[], |plain| {
        let dir = dir.clone();
        async move {
            wait_ready(plain.port).await?;
            cli(
                &plain.url,
                &[],
                &["channel", "add", CHANNEL, "--password-stdin"],
                PASSWORD,
            )?;
            // The HTTPS service: the same binary and database, its own port.
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut https = Command::new(support::BIN)
                .args(["--database-url", &plain.url, "serve", "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .env("KOOSTATUS_LOG__FILTER", "warn")
                .env("KOOSTATUS_TLS__CERT_FILE", dir.join("server.pem"))
                .env("KOOSTATUS_TLS__KEY_FILE", dir.join("server.key"))
                .stderr(Stdio::null())
                .spawn()?;
            let connector = connector(&dir)?;
            let result = async {
                let started = Instant::now();
                while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                    anyhow::ensure!(
                        started.elapsed() < Duration::from_secs(30),
                        "no HTTPS listener"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                println!("{connections} keep-alive connections, {seconds} s per phase");
                alternate("HTTPS", 0.85, |over_tls, i| {
                    let (port, tls) = match over_tls {
                        true => (port, Some(connector.clone())),
                        false => (plain.port, None),
                    };
                    load(port, tls, connections, phase, i)
                })
                .await?;
                Ok(())
            }
            .await;
            let _ = https.kill();
            let _ = https.wait();
            result
        }
    })
    .await;
    let database = match outcome {
        Ok(()) => database_over_tls(&dir, connections, phase).await,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    database
}

/// Callbacks on a service whose database connections are plain against
/// one whose are TLS (verify-full), same cluster and database.
async fn database_over_tls(
    dir: &std::path::Path,
    connections: usize,
    phase: Duration,
) -> anyhow::Result<()> {
    let cluster = Cluster::start(dir)?;
    let result = async {
        let base = format!(
            "postgres://postgres@127.0.0.1:{}/koostatus_bench",
            cluster.port
        );
        let plain_url = format!("{base}?sslmode=disable");
        let tls_url = format!(
            "{base}?sslmode=verify-full&sslrootcert={}",
            dir.join("ca.pem").display()
        );
        let plain = Served::start(&plain_url)?;
        wait_ready(plain.port).await?;
        cli(
            &plain_url,
            &[],
            &["channel", "add", CHANNEL, "--password-stdin"],
            PASSWORD,
        )?;
        let tls = Served::start(&tls_url)?;
        wait_ready(tls.port).await?;
        println!(
            "\nPostgreSQL over TLS (verify-full) against plain, one cluster of the benchmark's own"
        );
        alternate("database TLS", 0.9, |over_tls, i| {
            let port = if over_tls { tls.port } else { plain.port };
            load(port, None, connections, phase, 10 + i)
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    cluster.stop();
    result
}

/// `koostatus serve` on `url` and a free port, stopped when dropped.
struct Served {
    child: std::process::Child,
    port: u16,
}

impl Served {
    fn start(url: &str) -> anyhow::Result<Served> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(support::BIN)
            .args(["--database-url", url, "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("KOOSTATUS_LOG__FILTER", "warn")
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Served { child, port })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Phases alternating plain, TLS, TLS, plain (the machine's drift falls on
/// both), each run by `phase(over_tls, index)`: prints each phase, both
/// means with their p99 and the ratio against `goal`.
async fn alternate<F, Fut>(tls_name: &str, goal: f64, mut phase: F) -> anyhow::Result<()>
where
    F: FnMut(bool, u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(f64, Vec<Duration>)>>,
{
    let (mut plain_rates, mut tls_rates) = (Vec::new(), Vec::new());
    let (mut plain_lat, mut tls_lat) = (Vec::new(), Vec::new());
    for (i, over_tls) in [false, true, true, false].into_iter().enumerate() {
        let (rate, latencies) = phase(over_tls, i as u64).await?;
        println!(
            "   phase {}: {} {rate:>6.0} callbacks/s, p99 {:.1} ms",
            i + 1,
            if over_tls { tls_name } else { "plain" },
            pct(&latencies, 0.99)
        );
        let (rates, lat) = match over_tls {
            true => (&mut tls_rates, &mut tls_lat),
            false => (&mut plain_rates, &mut plain_lat),
        };
        rates.push(rate);
        lat.extend(latencies);
    }
    plain_lat.sort();
    tls_lat.sort();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "plain {:.0}/s (p99 {:.1} ms), {tls_name} {:.0}/s (p99 {:.1} ms): {tls_name} / plain {:.2} (goal >= {goal})",
        mean(&plain_rates),
        pct(&plain_lat, 0.99),
        mean(&tls_rates),
        pct(&tls_lat, 0.99),
        mean(&tls_rates) / mean(&plain_rates)
    );
    Ok(())
}

fn connector(dir: &std::path::Path) -> anyhow::Result<TlsConnector> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(dir.join("ca.pem"))?)?;
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Callbacks on `connections` keep-alive connections (over TLS with a
/// connector), all opened first: the rate answered 200 and the latencies.
async fn load(
    port: u16,
    tls: Option<TlsConnector>,
    connections: usize,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<(f64, Vec<std::time::Duration>)> {
    let mut streams = Vec::new();
    for _ in 0..connections {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &tls {
            Some(c) => {
                let name = ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>()?.into());
                Box::new(c.connect(name, tcp).await?)
            }
            None => Box::new(tcp),
        };
        streams.push(stream);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(c, stream)| {
            let seed = seed * 1000 + c as u64 + 1;
            tokio::spawn(post_reports(stream, CHANNEL, PASSWORD, seed, move || {
                Instant::now() < deadline
            }))
        })
        .collect();
    let (mut ok, mut latencies) = (0, Vec::new());
    for t in tasks {
        let (n, l) = t.await??;
        ok += n;
        latencies.extend(l);
    }
    latencies.sort();
    Ok((ok as f64 / started.elapsed().as_secs_f64(), latencies))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}
