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

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

use crate::config::DatabaseConfig;

/// How often the pool's host is checked, and how long a check may take.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// When this process last moved its pool to another host, in milliseconds
/// after [`epoch`]; 0: never. One per process (`serve` has one writing
/// pool); a test process running several services drops some connections
/// of the others too, which only costs a reconnection.
static MOVED_AT: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Whether a connection of this age was opened before the pool last moved:
/// it is on the old host (a demoted primary, a standby, a server that came
/// back), and is closed rather than reused.
pub fn opened_before_last_move(age: Duration) -> bool {
    match MOVED_AT.load(Ordering::Relaxed) {
        0 => false,
        moved => {
            age > epoch()
                .elapsed()
                .saturating_sub(Duration::from_millis(moved))
        }
    }
}

fn record_move() {
    let now = epoch().elapsed().as_millis().max(1);
    MOVED_AT.store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// `host:port` of connection options.
pub fn address(opts: &PgConnectOptions) -> String {
    format!("{}:{}", opts.get_host(), opts.get_port())
}

/// Whether the host commits within [`CHECK_EVERY`]; why not, in the debug
/// log.
async fn commits(opts: &PgConnectOptions) -> bool {
    let started = std::time::Instant::now();
    let outcome = super::commits(opts, CHECK_EVERY).await;
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
            let candidate = super::session(&cfg, host);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connections_older_than_the_last_move_are_dropped() {
        record_move();
        std::thread::sleep(Duration::from_millis(20));
        assert!(opened_before_last_move(Duration::from_secs(3600)));
        assert!(!opened_before_last_move(Duration::from_millis(5)));
    }
}
