//! `koostatus serve`: migrate when configured, then run the HTTP service
//! until SIGTERM or Ctrl-C, finishing in-flight requests.

use crate::config::Config;
use crate::db;
use crate::startup::Application;

pub async fn run(config: Config) -> anyhow::Result<()> {
    if config.database.auto_migrate {
        if db::migrations::create_database_if_missing(&config.database).await? {
            tracing::info!("created the database");
        }
        for applied in db::migrations::run(&config.database).await? {
            tracing::info!(version = applied.version, name = applied.name, "applied migration");
        }
    }
    let pool = db::connect(&config.database).await?;
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
