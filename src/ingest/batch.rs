//! Writing one batch: its statement and commit on a connection of its own,
//! under a deadline, and the answer to each request in it.

use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

use super::reply::{Reply, send_all};
use crate::db;
use crate::db::announcer::Announcer;
use crate::db::reports::Incoming;

/// Why a report was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The database is unreachable, overloaded or too slow: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of ours.
    #[error("writing the report failed")]
    Failed(#[source] sqlx::Error),
}

pub(super) struct Job {
    pub(super) incoming: Incoming,
    pub(super) reply: Reply,
    /// The request's span: warnings about its report name the request.
    pub(super) span: tracing::Span,
}

impl Job {
    pub(super) fn key(&self) -> (String, String) {
        (
            self.incoming.channel.as_str().to_owned(),
            self.incoming.report.message_id.clone(),
        )
    }
}

/// Writes one batch on a connection of its own and answers its requests.
///
/// The server's statement timeout bounds the statement but not its commit:
/// PostgreSQL turns the timeout off before committing, and a commit on a
/// primary with a synchronous standby waits until the standby confirms it,
/// for as long as that takes (a failover in progress, a standby gone). The
/// batch is given up after `deadline`: its requests get 503 (the report may
/// or may not be committed; the sender's retry is answered as a duplicate
/// if it was), and its connection is closed rather than returned to the
/// pool, so a commit stuck on a failing primary holds neither the writer
/// nor a connection. A connection that finds its server read-only (a
/// demoted primary) is closed too: the pool reconnects to the primary.
///
/// Once the write has ended, whatever its outcome (a batch given up may
/// have committed), its channels are marked for announcement: a needless
/// mark costs at most a notification.
pub(super) async fn write_batch(
    pool: &PgPool,
    announcer: &Announcer,
    batch: Vec<Job>,
    deadline: Duration,
) {
    let (incoming, replies): (Vec<Incoming>, Vec<(Reply, tracing::Span)>) = batch
        .into_iter()
        .map(|j| (j.incoming, (j.reply, j.span)))
        .unzip();
    let conn = match pool.acquire().await {
        Ok(conn) => conn,
        // Whatever keeps the pool from giving a connection (none free in
        // time, the server unreachable or refusing) is the database's state.
        Err(e) => return unavailable(replies, &e.to_string()),
    };
    write_on(conn, &incoming, replies, deadline).await;
    let mut last = None;
    for i in &incoming {
        // A batch is nearly always of one channel.
        if last != Some(i.channel.as_str()) {
            announcer.mark(i.channel.as_str());
            last = Some(i.channel.as_str());
        }
    }
}

async fn write_on(
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    incoming: &[Incoming],
    replies: Vec<(Reply, tracing::Span)>,
    deadline: Duration,
) {
    let started = Instant::now();
    let recorded =
        tokio::time::timeout(deadline, db::reports::record_reports(&mut *conn, incoming)).await;
    metrics::histogram!("koostatus_batch_size").record(incoming.len() as f64);
    metrics::histogram!("koostatus_batch_commit_seconds").record(started.elapsed().as_secs_f64());
    let Ok(recorded) = recorded else {
        return give_up(conn, replies);
    };
    if recorded.as_ref().is_err_and(db::is_read_only) {
        conn.close_on_drop();
    }
    match recorded {
        Ok(results) => {
            send_all(
                replies
                    .into_iter()
                    .zip(results)
                    .map(|((r, _), result)| (r, Ok(result))),
            );
        }
        Err(e) if db::is_unavailable(&e) => unavailable(replies, &e.to_string()),
        // Not the database's state but something in the batch: write each
        // report alone so that one bad report fails only its own request.
        Err(e) if incoming.len() > 1 => {
            let size = incoming.len();
            let mut replies = replies.into_iter();
            for one in incoming {
                let Some((reply, span)) = replies.next() else {
                    break;
                };
                tracing::warn!(parent: &span, error = %e, size, "the batch holding this report failed; writing its reports one by one");
                let single = db::reports::record_reports(&mut *conn, std::slice::from_ref(one));
                // The same deadline as the batch's: one commit stuck on a
                // failing primary must not hold the writer either.
                let Ok(recorded) = tokio::time::timeout(deadline, single).await else {
                    return give_up(conn, std::iter::once((reply, span)).chain(replies));
                };
                let result = match recorded {
                    Ok(mut r) => Ok(r.pop().flatten()),
                    Err(e) if db::is_unavailable(&e) => Err(WriteError::Unavailable(e.to_string())),
                    Err(e) => Err(WriteError::Failed(e)),
                };
                reply.send(result);
            }
        }
        Err(e) => {
            if let Some((reply, _)) = replies.into_iter().next() {
                reply.send(Err(WriteError::Failed(e)));
            }
        }
    }
}

/// A commit not confirmed within the deadline: 503 to every request still
/// waiting, and the connection dropped at once, mid-statement (the pool
/// opens a new one).
fn give_up(
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    replies: impl IntoIterator<Item = (Reply, tracing::Span)>,
) {
    drop(conn.detach());
    let replies: Vec<_> = replies.into_iter().collect();
    let size = replies.len();
    unavailable(replies, "the database did not confirm the commit in time");
    tracing::warn!(
        size,
        "reports were not confirmed within the deadline; answering 503"
    );
}

/// 503 to every request of the batch, for the same reason.
fn unavailable(replies: impl IntoIterator<Item = (Reply, tracing::Span)>, why: &str) {
    send_all(
        replies
            .into_iter()
            .map(|(reply, _)| (reply, Err(WriteError::Unavailable(why.to_owned())))),
    );
}
