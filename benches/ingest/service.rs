//! The service as a process of its own for one run: started on a fresh
//! database with the run's settings, measured (peak RSS, CPU), stopped, and
//! checked (every report answered 200 is in the database).

// The benchmark's settings, types and imports.
use super::*;

pub async fn fresh_database() -> anyhow::Result<()> {
    support::drop_database(DB).await
}

pub async fn service_run(
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
    let bin = std::env!("CARGO_BIN_EXE_koostatus");
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
pub fn peak_rss(server: &Child) -> anyhow::Result<u64> {
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
pub async fn stop(server: &mut Child, port: u16) -> anyhow::Result<ServerStats> {
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
pub async fn missing(url: &str, acked: &[(String, Status)]) -> anyhow::Result<usize> {
    let mut conn = PgConnection::connect(url).await?;
    let rows: Vec<(String, String)> =
        sqlx::query_as("select message_id, status::text from message_entries")
            .fetch_all(&mut conn)
            .await?;
    let stored: HashSet<(String, String)> = rows.into_iter().collect();
    Ok(acked
        .iter()
        .filter(|(id, s)| !stored.contains(&(id.clone(), s.as_str().to_owned())))
        .count())
}
