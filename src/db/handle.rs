//! [`Db`]: the pool as request handlers and background tasks use it, with
//! a method per query that takes owned arguments, so callers need no
//! closures or clones.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;

use super::announcer::Announcer;
use super::changes::{Change, Position};
use super::messages::{HistoryRow, ListFilter, MessageRow};
use super::stats::Times;
use super::{changes, channels, messages, migrations, stats, tickets, tokens};
use crate::domain::stats::{Bucket, Counts, ReadTimes};

/// Counts, time-to-read and time-to-deliver histograms by bucket start.
pub type StatsRows = (
    Vec<(DateTime<Utc>, Counts)>,
    Vec<(DateTime<Utc>, ReadTimes)>,
    Vec<(DateTime<Utc>, ReadTimes)>,
);

/// The pool, and the Tokio runtime its connections belong to.
///
/// A connection's socket is registered with the runtime that opened it, and
/// sqlx opens connections inside whichever task acquires. actix-web runs each
/// worker on a runtime of its own and, on graceful shutdown, stops an idle
/// worker's runtime while the others still answer: a connection opened there
/// then fails under whoever holds it (seen as a 503 for a report in flight
/// during SIGTERM). So request handlers run their queries through
/// [`Db::run`], on the main runtime, which outlives every worker.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    /// The replica of `database.read_url`, else the same pool.
    read: PgPool,
    /// Whether `read` is a pool of its own (`database.read_url`).
    replica: bool,
    runtime: tokio::runtime::Handle,
    /// Tells every instance of the changes written here.
    announcer: Announcer,
}

impl Db {
    /// Must be called on the runtime that outlives the HTTP workers.
    pub fn new(pool: PgPool, read: Option<PgPool>) -> Db {
        Db {
            replica: read.is_some(),
            read: read.unwrap_or_else(|| pool.clone()),
            announcer: Announcer::start(pool.clone()),
            pool,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// For the writers of the feed: they mark each channel they changed,
    /// after the commit.
    pub fn announcer(&self) -> &Announcer {
        &self.announcer
    }

    /// For code that already runs on the main runtime (writers, commands).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `query` on the main runtime. It completes even if the caller is
    /// dropped (a client gone mid-request), so a connection is never
    /// abandoned mid-statement.
    pub async fn run<T, F, Fut>(&self, query: F) -> sqlx::Result<T>
    where
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = sqlx::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        match self.runtime.spawn(query(self.pool.clone())).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down.
            Err(_) => Err(sqlx::Error::PoolClosed),
        }
    }

    /// As [`Db::run`], on the read replica when one is configured: for
    /// queries that may lag the primary by the replica's delay.
    pub async fn run_read<T, F, Fut>(&self, query: F) -> sqlx::Result<T>
    where
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = sqlx::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let read = self.read.clone();
        self.run(move |_| query(read)).await
    }

    /// Runs `query` on the main runtime without waiting for it.
    pub fn spawn<Fut>(&self, query: impl FnOnce(PgPool) -> Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(query(self.pool.clone()));
    }
}

/// One method per query the handlers and tasks run, on the main runtime.
impl Db {
    /// Every channel: id, name and whether it takes callbacks.
    pub async fn channels(&self) -> sqlx::Result<Vec<channels::ChannelRow>> {
        self.run(|pool| async move { channels::list(&pool).await })
            .await
    }

    pub async fn channel_exists(&self, id: String) -> sqlx::Result<bool> {
        self.run(|pool| async move { channels::exists(&pool, &id).await })
            .await
    }

    pub async fn channel_credentials(
        &self,
        id: String,
    ) -> sqlx::Result<Option<channels::CredentialRow>> {
        self.run(|pool| async move { channels::credentials(&pool, &id).await })
            .await
    }

    /// On the replica when one is configured.
    pub async fn message(
        &self,
        channel: String,
        id: String,
    ) -> sqlx::Result<Option<(MessageRow, Vec<HistoryRow>)>> {
        self.run_read(|pool| async move { messages::find(&pool, &channel, &id).await })
            .await
    }

    /// On the replica when one is configured.
    pub async fn lookup(
        &self,
        channel: String,
        ids: Arc<[String]>,
    ) -> sqlx::Result<Vec<MessageRow>> {
        self.run_read(|pool| async move { messages::lookup(&pool, &channel, &ids).await })
            .await
    }

    /// The statistics' aggregates of `[from, to)` (bucket starts): counts
    /// and time-to-read histograms by bucket. On the replica when one is
    /// configured.
    pub async fn stats(
        &self,
        channel: String,
        tag: Option<String>,
        bucket: Bucket,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> sqlx::Result<StatsRows> {
        self.run_read(move |pool| async move {
            // '': the whole channel's aggregates.
            let tag = tag.as_deref().unwrap_or("");
            let counts = stats::counts(&pool, &channel, tag, bucket, from, to).await?;
            let read = stats::times(&pool, Times::Read, &channel, tag, bucket, from, to).await?;
            let deliver =
                stats::times(&pool, Times::Deliver, &channel, tag, bucket, from, to).await?;
            Ok((counts, read, deliver))
        })
        .await
    }

    /// On the replica when one is configured.
    pub async fn list(&self, channel: String, filter: ListFilter) -> sqlx::Result<Vec<MessageRow>> {
        self.run_read(|pool| async move { messages::list(&pool, &channel, &filter).await })
            .await
    }

    pub async fn changes_after(
        &self,
        channel: String,
        after: Position,
        limit: i64,
    ) -> sqlx::Result<Vec<Change>> {
        self.run(
            |pool| async move { changes::read(&pool, &channel, after, None, None, limit).await },
        )
        .await
    }

    pub async fn changes_between(
        &self,
        channel: String,
        after: Position,
        upto: Position,
        user_numbers: Option<Arc<[String]>>,
        limit: i64,
    ) -> sqlx::Result<Vec<Change>> {
        self.run(|pool| async move {
            let numbers = user_numbers.as_deref();
            changes::read(&pool, &channel, after, Some(upto), numbers, limit).await
        })
        .await
    }

    pub async fn changes_head(&self, channel: String) -> sqlx::Result<Position> {
        self.run(|pool| async move { changes::head(&pool, &channel).await })
            .await
    }

    /// The read replica's delay in seconds; None without `database.read_url`
    /// or when that server is not a standby.
    pub async fn replica_lag(&self) -> sqlx::Result<Option<f64>> {
        if !self.replica {
            return Ok(None);
        }
        self.run_read(|pool| async move { super::replica::lag_seconds(&pool).await })
            .await
    }

    pub async fn readiness(&self) -> sqlx::Result<migrations::Readiness> {
        self.run(|pool| async move { migrations::readiness(&pool).await })
            .await
    }

    pub async fn token(&self, hash: [u8; 32]) -> sqlx::Result<Option<tokens::TokenRow>> {
        self.run(|pool| async move { tokens::find_by_hash(&pool, &hash).await })
            .await
    }

    pub async fn insert_ticket(
        &self,
        ticket_hash: [u8; 32],
        token_hash: [u8; 32],
        expires_at: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        self.run(|pool| async move {
            tickets::insert(&pool, &ticket_hash, &token_hash, expires_at).await
        })
        .await
    }

    /// Registers messages of the sending side (SPEC §13), committed on return.
    pub async fn register(
        &self,
        channel: String,
        batch: Vec<super::registrations::Registration>,
        received_at: DateTime<Utc>,
    ) -> sqlx::Result<super::registrations::Registered> {
        let announcer = self.announcer.clone();
        self.run(|pool| async move {
            let mut conn = pool.acquire().await?;
            let registered =
                super::registrations::register(&mut conn, &channel, &batch, received_at).await?;
            if registered.registered > 0 {
                announcer.mark(&channel);
            }
            Ok(registered)
        })
        .await
    }

    /// Messages now `unreported`, per channel that has any.
    pub async fn unreported_counts(&self) -> sqlx::Result<Vec<(String, i64)>> {
        self.run(|pool| async move { super::unreported::counts(&pool).await })
            .await
    }

    pub async fn ticket_token(&self, ticket_hash: [u8; 32]) -> sqlx::Result<Option<Vec<u8>>> {
        self.run(|pool| async move { tickets::token_of(&pool, &ticket_hash).await })
            .await
    }
}
