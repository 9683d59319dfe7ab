//! The ceiling: the service's writer driven directly (no HTTP, no
//! authentication), with the same batched SQL.

// The benchmark's settings, types and imports.
use super::*;
use crate::service::fresh_database;

/// The same writer and SQL as the service, fed by as many tasks as the
/// service had connections, without HTTP or authentication.
pub async fn direct_run(connections: usize, duration: Duration) -> anyhow::Result<Run> {
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
        koostatus::db::announcer::Announcer::start(pool.clone()),
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
