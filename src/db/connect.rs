//! Connecting: which host of `database.url` to use (the first that takes
//! writes, as libpq's `target_session_attrs=read-write`), the settings every
//! session of ours gets, the pool, and the bookkeeping of the pool's moves to
//! another host (see `primary`), which the pool consults before reusing a
//! connection.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// The first host of `database.url`.
pub fn connect_options(cfg: &DatabaseConfig) -> PgConnectOptions {
    session(cfg, cfg.url.options())
}

/// The pool of `database.read_url`, when set: of several hosts, the first
/// standby that answers, else the first host that answers (the primary
/// serves reads too), else the first host (the pool reconnects later).
pub async fn read_pool(cfg: &DatabaseConfig) -> Option<PgPool> {
    let hosts = cfg.read_url.as_ref()?.hosts();
    let mut answering = None;
    if hosts.len() > 1 {
        for host in hosts {
            let opts = session(cfg, host);
            match accepts_writes(&opts, cfg.connect_timeout).await {
                Ok(false) => return Some(pool(cfg, opts)),
                Ok(true) => answering = answering.or(Some(opts)),
                Err(_) => {}
            }
        }
    }
    Some(pool(
        cfg,
        answering.unwrap_or_else(|| session(cfg, &hosts[0])),
    ))
}

/// Every session of ours: the statement timeout and our name.
pub(crate) fn session(cfg: &DatabaseConfig, url: &PgConnectOptions) -> PgConnectOptions {
    let statement_timeout = cfg.statement_timeout.as_millis().to_string();
    url.clone()
        .options([("statement_timeout", statement_timeout.as_str())])
        .application_name("koostatus")
}

/// Connects to the first host of `database.url` that accepts writes (as
/// libpq's `target_session_attrs=read-write`: in the URL's order, skipping
/// hosts that do not answer within `connect_timeout` and standbys), then
/// returns a pool on it that reconnects by itself after an outage.
pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let hosts = cfg.url.hosts();
    if let [only] = hosts {
        let opts = session(cfg, only);
        check_reachable(&opts, cfg.connect_timeout).await?;
        return Ok(pool(cfg, opts));
    }
    let mut refused = Vec::new();
    for host in hosts {
        let opts = session(cfg, host);
        match commits(&opts, cfg.connect_timeout).await {
            Ok(true) => return Ok(pool(cfg, opts)),
            Ok(false) => refused.push(format!("{} is read-only (a standby)", describe(&opts))),
            Err(e) => refused.push(format!("{e:#}").trim_end_matches('.').to_owned()),
        }
    }
    anyhow::bail!(
        "No host of `database.url` accepts writes: {}.",
        refused.join("; ")
    )
}

/// Whether the server at `opts` takes writes: not in recovery, not
/// read-only by default. Tells a standby from a primary; see
/// [`commits`] for whether writes would go through now.
pub(crate) async fn accepts_writes(
    opts: &PgConnectOptions,
    timeout: Duration,
) -> anyhow::Result<bool> {
    probe(opts, timeout, false).await
}

/// As [`accepts_writes`], and a transaction (an id assigned, so a commit
/// record written) commits within `timeout`. During a failover a primary
/// can say it is writable while no commit goes through: restarted in place
/// after a crash while its synchronous standby is being promoted, or
/// waiting to be demoted. Its commits wait for a standby that no longer
/// follows it; the host to write to is the one whose commits return.
pub(crate) async fn commits(opts: &PgConnectOptions, timeout: Duration) -> anyhow::Result<bool> {
    probe(opts, timeout, true).await
}

async fn probe(opts: &PgConnectOptions, timeout: Duration, commit: bool) -> anyhow::Result<bool> {
    let mut committing = false;
    let attempt = async {
        let mut conn = PgConnection::connect_with(opts).await?;
        warn_if_fell_back_to_plain_text(opts, &mut conn).await;
        let writable = sqlx::query_scalar::<_, bool>(
            "select not pg_is_in_recovery() and current_setting('transaction_read_only') = 'off'",
        )
        .fetch_one(&mut conn)
        .await?;
        if writable && commit {
            committing = true;
            sqlx::query("select pg_current_xact_id()")
                .execute(&mut conn)
                .await?;
        }
        conn.close().await?;
        Ok::<_, sqlx::Error>(writable)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(writable)) => Ok(writable),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "Cannot connect to {}: {}",
            describe(opts),
            brief(&e)
        )),
        Err(_) if committing => Err(anyhow::anyhow!(
            "{} does not commit within {} (its synchronous standby does not confirm: a failover under way?)",
            describe(opts),
            humantime::format_duration(timeout)
        )),
        Err(_) => Err(anyhow::anyhow!(
            "Cannot connect to {}: no answer within {}",
            describe(opts),
            humantime::format_duration(timeout)
        )),
    }
}

pub fn pool(cfg: &DatabaseConfig, opts: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(cfg.max_connections.get())
        .acquire_timeout(cfg.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .max_lifetime(cfg.max_lifetime)
        // sqlx pings every connection when it comes back to the pool, and
        // its own test pings it again when handed out: two round trips
        // around each batch of reports and each read-API query. A connection
        // returned within the last second is taken as it is (a fault since
        // then fails that one statement, as it would a moment later); one
        // idle for longer is pinged first, and dropped if it does not
        // answer.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                // After a failover, connections to the old host are not reused.
                if opened_before_last_move(meta.age) {
                    return Ok(false);
                }
                Ok(meta.idle_for < PING_WHEN_IDLE_FOR || conn.ping().await.is_ok())
            })
        })
        .connect_lazy_with(opts)
}

/// How long a pooled connection may have been idle and still be handed out
/// without a ping.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

pub async fn check_reachable(opts: &PgConnectOptions, timeout: Duration) -> anyhow::Result<()> {
    let attempt = async {
        let mut conn = PgConnection::connect_with(opts).await?;
        warn_if_fell_back_to_plain_text(opts, &mut conn).await;
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

/// `sslmode=prefer` (the default) falls back to plain text when the server
/// does not offer TLS, silently in libpq; koostatus says so, once per host,
/// when the host is not this machine (on loopback plain text crosses no
/// network).
async fn warn_if_fell_back_to_plain_text(opts: &PgConnectOptions, conn: &mut PgConnection) {
    use sqlx::postgres::PgSslMode;
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    if !matches!(opts.get_ssl_mode(), PgSslMode::Prefer) || is_loopback(opts.get_host()) {
        return;
    }
    // Unchecked, as the probe's own query: it runs before the schema is
    // known to exist, on any database.
    let encrypted =
        sqlx::query_scalar::<_, bool>("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
            .fetch_one(conn)
            .await;
    if let Ok(false) = encrypted {
        let host = address(opts);
        let mut warned = WARNED.lock().expect("never poisoned");
        if !warned.contains(&host) {
            tracing::warn!(
                host,
                "connected without TLS: the server does not offer it and sslmode=prefer falls back to plain text (set sslmode=require or verify-full to refuse that)"
            );
            warned.push(host);
        }
    }
}

/// Loopback addresses and names, and Unix sockets (a path).
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error's text without anything that could carry a URL.
fn brief(e: &sqlx::Error) -> String {
    let said = match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    match crate::tls::certificate_trouble(&said) {
        Some(sentence) => format!("{sentence} ({said})"),
        None => said,
    }
}

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

pub(crate) fn record_move() {
    let now = epoch().elapsed().as_millis().max(1);
    MOVED_AT.store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// `host:port` of connection options.
pub fn address(opts: &PgConnectOptions) -> String {
    format!("{}:{}", opts.get_host(), opts.get_port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_this_machine_is_loopback() {
        for host in [
            "localhost",
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "/var/run/postgresql",
        ] {
            assert!(super::is_loopback(host), "{host}");
        }
        for host in ["db.example.internal", "10.0.0.5", "192.168.1.2"] {
            assert!(!super::is_loopback(host), "{host}");
        }
    }

    #[test]
    fn only_connections_older_than_the_last_move_are_dropped() {
        super::record_move();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(super::opened_before_last_move(
            std::time::Duration::from_secs(3600)
        ));
        assert!(!super::opened_before_last_move(
            std::time::Duration::from_millis(5)
        ));
    }
}
