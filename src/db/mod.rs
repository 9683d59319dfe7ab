//! Everything that talks SQL: connection set-up, migrations, and one file of
//! queries per table group. Handlers and commands call these functions.

pub mod changes;
pub mod channels;
pub mod forwarding;
mod handle;
pub mod messages;
pub mod migrations;
pub mod reports;
pub mod retention;
pub mod stats;
pub mod tickets;
pub mod tokens;

pub use handle::Db;

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::config::DatabaseConfig;

/// Where a database lives, for messages: host, port and name, never the
/// password of the URL.
pub fn describe(opts: &PgConnectOptions) -> String {
    format!(
        "database `{}` on {}:{}",
        opts.get_database().unwrap_or("postgres"),
        opts.get_host(),
        opts.get_port()
    )
}

pub fn connect_options(cfg: &DatabaseConfig) -> PgConnectOptions {
    session(cfg, cfg.url.options())
}

/// The replica's options when `database.read_url` is set.
pub fn read_connect_options(cfg: &DatabaseConfig) -> Option<PgConnectOptions> {
    cfg.read_url.as_ref().map(|url| session(cfg, url.options()))
}

/// Every session of ours: the statement timeout and our name.
fn session(cfg: &DatabaseConfig, url: &PgConnectOptions) -> PgConnectOptions {
    let statement_timeout = cfg.statement_timeout.as_millis().to_string();
    url.clone()
        .options([("statement_timeout", statement_timeout.as_str())])
        .application_name("koostatus")
}

/// Connects once to prove the database answers, within `connect_timeout`,
/// then returns a pool that reconnects by itself after an outage.
pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let opts = connect_options(cfg);
    check_reachable(&opts, cfg.connect_timeout).await?;
    Ok(pool(cfg, opts))
}

pub fn pool(cfg: &DatabaseConfig, opts: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(cfg.max_connections.get())
        .acquire_timeout(cfg.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(opts)
}

pub async fn check_reachable(opts: &PgConnectOptions, timeout: Duration) -> anyhow::Result<()> {
    let attempt = async {
        let conn = PgConnection::connect_with(opts).await?;
        conn.close().await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "Cannot connect to {}: {}.",
            describe(opts),
            brief(&e)
        )),
        Err(_) => Err(anyhow::anyhow!(
            "Cannot connect to {}: no answer within {}.",
            describe(opts),
            humantime::format_duration(timeout)
        )),
    }
}

/// An error's text without anything that could carry a URL.
fn brief(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// Whether an error says the database is unreachable, overloaded or too slow,
/// as opposed to a fault in the query: the first kind answers 503 so that the
/// sender retries.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception, 53: insufficient resources,
            // 57: operator intervention (statement timeout, shutdown),
            // 40001/40P01: serialization failure, deadlock;
            // 28 and 3D000 on connecting (credentials refused, no such
            // database): the service's setup, not the request, is at fault.
            code.starts_with("08")
                || code.starts_with("28")
                || code == "3D000"
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}
