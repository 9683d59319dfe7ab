//! Everything that talks SQL: connection set-up, migrations, and one file of
//! queries per table group. Handlers and commands call these functions.

pub mod announcer;
pub mod changes;
pub mod channels;
mod connect;
pub mod forwarding;
mod handle;
pub mod messages;
pub mod migrations;
pub mod primary;
pub mod registrations;
pub mod replica;
pub mod reports;
pub mod retention;
pub mod stats;
pub mod tickets;
pub mod tokens;
pub mod unreported;

pub use connect::{address, check_reachable, connect, connect_options, describe, pool, read_pool};
pub use handle::Db;

/// Whether an error is a read-only server's refusal to write: a primary
/// demoted in a failover (or a standby); the writes belong on the new primary.
pub fn is_read_only(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("25006"))
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
            // 25006: a read-only server (see is_read_only),
            // 40001/40P01: serialization failure, deadlock;
            // 28 and 3D000 on connecting (credentials refused, no such
            // database): the service's setup, not the request, is at fault.
            code.starts_with("08")
                || code.starts_with("28")
                || is_read_only(e)
                || code == "3D000"
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}
