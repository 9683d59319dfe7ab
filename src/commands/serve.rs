//! `koostatus serve`: migrate when configured, then run the HTTP service
//! until SIGTERM or Ctrl-C, finishing in-flight requests.

use crate::config::{Config, RetentionConfig};
use crate::db;
use crate::startup::Application;

pub async fn run(config: Config) -> anyhow::Result<()> {
    if config.database.auto_migrate {
        if db::migrations::create_database_if_missing(&config.database).await? {
            tracing::info!("created the database");
        }
        for applied in db::migrations::run(&config.database).await? {
            tracing::info!(
                version = applied.version,
                name = applied.name,
                "applied migration"
            );
        }
    }
    let pool = db::connect(&config.database).await?;
    if !config.retention.max_age.is_zero() {
        tokio::spawn(prune_on_schedule(pool.clone(), config.retention.clone()));
    }
    let app = Application::build(config, pool, true).await?;
    tracing::info!(port = app.port(), "listening");
    let state = app.state.clone();
    app.run_until_stopped().await?;
    let (batches, reports) = state.writer.stats();
    tracing::info!(
        argon2_verifications = state.credentials.verifications(),
        batches,
        reports,
        "stopped"
    );
    Ok(())
}

async fn prune_on_schedule(pool: sqlx::PgPool, retention: RetentionConfig) {
    let mut every = tokio::time::interval(retention.interval);
    loop {
        every.tick().await;
        let progress = |line: String| tracing::debug!(line, "prune");
        match super::prune::prune(&pool, retention.max_age, false, 1000, progress).await {
            Ok(deleted) => tracing::info!(deleted, "pruned old messages"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "pruning failed; will retry"),
        }
    }
}
