//! `koostatus serve`: migrate when configured, then run the HTTP service
//! until SIGTERM or Ctrl-C, finishing in-flight requests.

use crate::config::{Config, RetentionConfig};
use crate::db;
use crate::startup::Application;

pub async fn run(config: Config) -> anyhow::Result<()> {
    raise_open_file_limit(config.server.max_connections.get());
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
    let retention = config.retention.clone();
    // Signals are handled here rather than by actix-web, so that the
    // `/events` streams can be ended before the graceful stop waits on them.
    let app = Application::build(config, pool.clone()).await?;
    if !retention.max_age.is_zero() {
        tokio::spawn(prune_on_schedule(
            pool,
            retention,
            app.state.shutdown.clone(),
        ));
    }
    tracing::info!(port = app.port(), https = app.tls.is_some(), "listening");
    if let Some(tls) = app.tls.clone() {
        tokio::spawn(reload_on_hangup(tls));
    }
    let (state, handle) = (app.state.clone(), app.handle());
    let server = app.run_until_stopped();
    tokio::pin!(server);
    tokio::select! {
        stopped = &mut server => stopped?,
        () = stop_signal() => {
            tracing::info!("stopping: finishing in-flight requests");
            state.shutdown.cancel();
            // The server future must be polled for the stop to proceed.
            let (_, stopped) = tokio::join!(handle.stop(true), server);
            stopped?;
        }
    }
    let (batches, reports) = state.writer.stats();
    tracing::info!(
        argon2_verifications = state.credentials.verifications(),
        batches,
        reports,
        "stopped"
    );
    Ok(())
}

async fn prune_on_schedule(
    pool: sqlx::PgPool,
    retention: RetentionConfig,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut every = tokio::time::interval(retention.interval);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let progress = |line: String| tracing::debug!(line, "prune");
        match super::prune::prune(&pool, retention.max_age, false, 1000, progress).await {
            Ok(deleted) => tracing::info!(deleted, "pruned old messages"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "pruning failed; will retry"),
        }
    }
}

/// Every open connection (an `/events` stream is one) is a file descriptor:
/// raise the soft limit to the hard one, and say so when that is still below
/// what the server may accept.
fn raise_open_file_limit(max_connections_per_worker: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < 10_240 => tracing::warn!(
            open_files = limit,
            "the open-file limit is low and could not be raised: each connection and /events stream takes one (raise `ulimit -n` or LimitNOFILE)"
        ),
        Ok(limit) => tracing::info!(
            open_files = limit,
            max_connections_per_worker,
            "open-file limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

/// SIGHUP: the TLS certificate and key again, for new connections.
async fn reload_on_hangup(tls: std::sync::Arc<crate::tls::Reloadable>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("no SIGHUP handler: the TLS certificate is reloaded only by a restart");
        return;
    };
    while hangups.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "SIGHUP: kept the previous TLS certificate and key"
            ),
        }
    }
}

/// SIGTERM or Ctrl-C (SIGINT).
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
