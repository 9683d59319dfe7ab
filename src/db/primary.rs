//! Following the primary of a multi-host `database.url` while `serve`
//! runs. sqlx connects to one host; on a failover (the primary dies, a
//! standby is promoted) its pool would keep reconnecting to the dead host.
//! So every second, when the pool's host no longer accepts writes, the
//! hosts are tried again in the URL's order and the pool is pointed at the
//! first that does. Meanwhile requests that need the database answer 503
//! (they fail to connect, or get the read-only refusal of a demoted
//! server), never 200 for a report that is not committed on the primary.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

use crate::config::DatabaseConfig;

/// How often the pool's host is checked, and how long a check may take.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// `host:port` of connection options.
pub fn address(opts: &PgConnectOptions) -> String {
    format!("{}:{}", opts.get_host(), opts.get_port())
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
        if matches!(super::accepts_writes(&current, CHECK_EVERY).await, Ok(true)) {
            continue;
        }
        for host in cfg.url.hosts() {
            let candidate = super::session(&cfg, host);
            if !matches!(
                super::accepts_writes(&candidate, CHECK_EVERY).await,
                Ok(true)
            ) {
                continue;
            }
            if address(&candidate) != address(&current) {
                tracing::warn!(
                    from = address(&current),
                    to = address(&candidate),
                    "the database's primary moved; connecting there"
                );
                pool.set_connect_options(candidate);
            }
            break;
        }
    }
}
