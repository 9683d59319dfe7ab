//! One phase of the events benchmark: open its streams, run the callback
//! load, and collect what the service and the streams did.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgConnection;

use crate::desktops::{Desktops, RECEIVED, Received, key, received_total, stream_client};
use crate::load::load;
use crate::support::machine::{cpu_seconds, machine_ticks, rss_kib, transactions};
use crate::support::{metric, pct};
use crate::{DB, Figures, Phase, STATS_LAG};

/// What every phase runs against.
pub struct Bench<'a> {
    pub port: u16,
    pub server: u32,
    pub token: &'a str,
    pub desktops: &'a Desktops,
    pub connections: usize,
    pub duration: Duration,
    pub db_stats: bool,
}

/// Runs `phase` (the `index`th) and returns its figures.
pub async fn run(
    bench: &Bench<'_>,
    db: &mut PgConnection,
    phase: &Phase,
    index: usize,
) -> anyhow::Result<Figures> {
    let &Bench {
        port,
        server,
        token,
        desktops,
        connections,
        duration,
        db_stats,
    } = bench;
    println!("running: {}", phase.name);
    let rss_before = rss_kib(server)?;
    RECEIVED.store(0, std::sync::atomic::Ordering::Relaxed);
    let mut clients = Vec::new();
    let opened = Instant::now();
    // Open the streams, 200 at a time.
    let specs: Vec<Option<usize>> = (0..phase.filtered)
        .map(|i| Some(i % phase.users))
        .chain((0..phase.unfiltered).map(|_| None))
        .collect();
    for group in specs.chunks(200) {
        let mut starting = Vec::new();
        for &user in group {
            let token = token.to_owned();
            let received = Arc::new(Mutex::new(Received::default()));
            let (ready, is_ready) = tokio::sync::oneshot::channel();
            starting.push(is_ready);
            clients.push((
                desktops.spawn(stream_client(port, token, user, ready, received.clone())),
                received,
            ));
        }
        for r in starting {
            r.await??;
        }
    }
    let streams = clients.len();
    let rss_per_stream_kib = (streams > 0).then(|| {
        let after = rss_kib(server).unwrap_or(rss_before);
        after.saturating_sub(rss_before) as f64 / streams as f64
    });
    if streams > 0 {
        println!(
            "  {streams} streams open in {:.1} s; service RSS {:.1} -> {:.1} MiB",
            opened.elapsed().as_secs_f64(),
            rss_before as f64 / 1024.0,
            rss_kib(server)? as f64 / 1024.0
        );
    }
    // An idle backend reports its transactions to pg_stat_database up
    // to 10 s late (PGSTAT_IDLE_INTERVAL): let the opening settle first.
    // Without the counts, a second for the opening's own work.
    let lag = if db_stats {
        STATS_LAG
    } else {
        Duration::from_secs(1)
    };
    tokio::time::sleep(lag).await;
    let tx_before = transactions(db, DB).await?;
    let batches_before = metric(port, "koostatus_batch_size_count").await?;
    let reads_before = metric(port, "koostatus_events_feed_reads_total").await?;
    let cpu_before = (cpu_seconds(server)?, cpu_seconds(std::process::id())?);
    let machine_before = machine_ticks()?;
    let started = Instant::now();
    let users = phase.users;
    let (acked, mut latencies, errors) = load(port, connections, users, index, duration).await?;
    let load_end = Instant::now();
    let elapsed = load_end - started;
    let machine = machine_ticks()?.since(&machine_before);
    let cpu = (
        (cpu_seconds(server)? - cpu_before.0) / elapsed.as_secs_f64(),
        (cpu_seconds(std::process::id())? - cpu_before.1) / elapsed.as_secs_f64(),
    );
    let batches = metric(port, "koostatus_batch_size_count").await? - batches_before;
    let reads = metric(port, "koostatus_events_feed_reads_total").await? - reads_before;
    let tps = if db_stats {
        tokio::time::sleep(STATS_LAG).await;
        (transactions(db, DB).await? - tx_before) as f64 / elapsed.as_secs_f64()
    } else {
        f64::NAN
    };
    latencies.sort();

    // Every stream should have what was acked for it; wait for
    // stragglers, then stop the clients.
    let wanted = |user: Option<usize>| -> usize {
        match user {
            Some(u) => acked.iter().filter(|a| a.1 == u).count(),
            None => acked.len(),
        }
    };
    let expected: usize = specs.iter().map(|&u| wanted(u)).sum();
    let settle = Instant::now();
    while streams > 0 && received_total() < expected && settle.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (task, _) in &clients {
        task.abort();
    }
    let acked_at: HashMap<u64, Instant> = acked.iter().map(|(id, _, at)| (key(id), *at)).collect();
    let mut figures = Figures {
        callbacks_per_s: acked.len() as f64 / elapsed.as_secs_f64(),
        p99_ms: pct(&latencies, 0.99),
        tps,
        errors,
        expected,
        rss_per_stream_kib,
        streams,
        batches_per_s: batches / elapsed.as_secs_f64(),
        feed_reads_per_s: reads / elapsed.as_secs_f64(),
        service_cpu: cpu.0,
        client_cpu: cpu.1,
        steal: machine.steal_share(),
        busy_us_per_callback: machine.busy_seconds() * 1e6 / acked.len().max(1) as f64,
        ..Default::default()
    };
    let (mut filtered_writes, mut filtered_events) = (0, 0);
    for ((task, received), &user) in clients.into_iter().zip(&specs) {
        if let Ok(outcome) = task.await {
            outcome?; // it ended by itself: only an error may end it
        }
        let got = std::mem::take(&mut *received.lock().unwrap());
        if user.is_some() {
            filtered_writes += got.writes.iter().filter(|&&t| t <= load_end).count();
            filtered_events += got.events.iter().filter(|e| e.1 <= load_end).count();
        }
        let mut seen = HashSet::new();
        for (id, at) in &got.events {
            if !seen.insert(*id) {
                figures.repeated += 1;
            } else if let Some(acked) = acked_at.get(id) {
                figures.latencies.push(at.saturating_duration_since(*acked));
            }
        }
        figures.foreign += got.foreign + got.out_of_order;
        figures.lost += wanted(user).saturating_sub(seen.len());
    }
    if phase.filtered > 0 {
        figures.filtered_writes_per_s =
            filtered_writes as f64 / phase.filtered as f64 / elapsed.as_secs_f64();
        figures.filtered_events_per_write = filtered_events as f64 / filtered_writes.max(1) as f64;
    }
    figures.events_per_s = figures.latencies.len() as f64 / elapsed.as_secs_f64();
    figures.latencies.sort();
    // Wait until the service has let go of the streams.
    let gone = Instant::now();
    while metric(port, "koostatus_events_subscribers").await? > 0.0
        && gone.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(figures)
}
