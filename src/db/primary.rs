//! Following the primary of a multi-host `database.url` while `serve`
//! runs. sqlx connects to one host; on a failover (the primary dies, a
//! standby is promoted) its pool would keep reconnecting to the dead host.
//! So every second, when the pool's host no longer commits a transaction
//! within a second (it is down, a standby, read-only, or its commits wait
//! for a synchronous standby that left it), the hosts are tried again in
//! the URL's order and the pool is pointed at the first that does (the
//! probe costs a transaction id a second). Meanwhile requests that need the
//! database answer 503 (they fail to connect, get the read-only refusal of
//! a demoted server, or their commit outlasts the commit deadline), never
//! 200 for a report that is not committed on the primary.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

use super::connect::{address, record_move, session};
use crate::config::DatabaseConfig;

/// How often the pool's host is checked, and how long a check may take.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Whether the host commits within [`CHECK_EVERY`]; why not, in the debug
/// log.
async fn commits(opts: &PgConnectOptions) -> bool {
    let started = std::time::Instant::now();
    let outcome = super::connect::commits(opts, CHECK_EVERY).await;
    tracing::debug!(
        host = address(opts),
        outcome = match &outcome {
            Ok(true) => "commits".to_owned(),
            Ok(false) => "read-only".to_owned(),
            Err(e) => e.to_string(),
        },
        elapsed_ms = started.elapsed().as_millis() as u64,
        "checked a database host"
    );
    matches!(outcome, Ok(true))
}

/// Runs until `shutdown` (only worth running with several hosts).
pub async fn follow(pool: PgPool, cfg: DatabaseConfig, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let current = (*pool.connect_options()).clone();
        if commits(&current).await {
            continue;
        }
        for host in cfg.url.hosts() {
            let candidate = session(&cfg, host);
            if !commits(&candidate).await {
                continue;
            }
            if address(&candidate) != address(&current) {
                tracing::warn!(
                    from = address(&current),
                    to = address(&candidate),
                    "the database's primary moved; connecting there"
                );
                pool.set_connect_options(candidate);
                record_move();
            }
            break;
        }
    }
}
