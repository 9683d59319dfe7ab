//! Queries on `forward_subscriptions` (migrations/V7): the commands'
//! management, and the delivering instance's lease and progress. Every
//! statement of a delivering instance names its lease (`holder`): a
//! subscription another instance took over, or one removed, matches none.
//! This file holds the commands' management of subscriptions; beside it,
//! `lease` (which instance delivers), `progress` (the delivery in flight
//! and the position) and `feed` (what follows a position).

mod feed;
mod lease;
mod progress;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use sqlx::postgres::types::PgInterval;

pub use feed::{News, lag, news, pending_changes, read};
pub use lease::{Subscription, claim, release, resume};
pub use progress::{Advanced, advance, failed};

use super::changes::Position;

/// A subscription as `forward list` shows it.
pub struct Listed {
    pub name: String,
    pub channel_id: String,
    pub url: String,
    pub position: Position,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// Changes after the position, and the age of the oldest of them.
    pub lag_changes: i64,
    pub lag_seconds: Option<f64>,
}

pub enum Replay {
    Done,
    NoSuchSubscription,
    /// The position is after the subscription's own: replay moves back only.
    Ahead(Position),
}

fn interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}

/// Creates a subscription starting after the channel's latest readable
/// change, or at the start of its feed. False when the name is taken.
pub async fn insert(
    db: impl PgExecutor<'_>,
    name: &str,
    channel_id: &str,
    url: &str,
    secret: &[u8],
    from_start: bool,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        r#"
        insert into forward_subscriptions
            (name, channel_id, url, secret, position_xid, position_seq)
        select $1, $2, $3, $4,
               coalesce(head.xid, '0'::xid8), coalesce(head.seq, 0)
        from (select 1) one
        left join lateral (
            select xid, seq from message_changes
            where channel_id = $2 and not $5
              and xid < (select koostatus_feed_horizon())
            order by xid desc, seq desc
            limit 1
        ) head on true
        on conflict (name) do nothing
        "#,
        name,
        channel_id,
        url,
        secret,
        from_start
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Listed>> {
    let rows = sqlx::query!(
        r#"
        select f.name, f.channel_id, f.url,
               f.position_xid::text::bigint as "xid!", f.position_seq,
               f.enabled, f.disabled_reason, f.failing_since, f.attempts, f.last_error,
               lag.changes as "lag_changes!",
               extract(epoch from now() - lag.oldest)::float8 as lag_seconds
        from forward_subscriptions f
        cross join lateral (
            select count(*) as changes, min(c.changed_at) as oldest
            from message_changes c
            where c.channel_id = f.channel_id
              and (c.xid, c.seq) > (f.position_xid, f.position_seq)
        ) lag
        order by f.name
        "#
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Listed {
            name: r.name,
            channel_id: r.channel_id,
            url: r.url,
            position: Position {
                xid: r.xid,
                seq: r.position_seq,
            },
            enabled: r.enabled,
            disabled_reason: r.disabled_reason,
            failing_since: r.failing_since,
            attempts: r.attempts,
            last_error: r.last_error,
            lag_changes: r.lag_changes,
            lag_seconds: r.lag_seconds,
        })
        .collect())
}

/// False when there is no such subscription.
pub async fn remove(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<bool> {
    let deleted = sqlx::query!("delete from forward_subscriptions where name = $1", name)
        .execute(db)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Enabling starts the backoff afresh. False when there is no such
/// subscription.
pub async fn set_enabled(
    db: impl PgExecutor<'_>,
    name: &str,
    enabled: bool,
    reason: Option<&str>,
) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        r#"
        update forward_subscriptions
        set enabled = $2, disabled_reason = $3, revision = revision + 1,
            failing_since = case when $2 then null else failing_since end,
            attempts = case when $2 then 0 else attempts end
        where name = $1
        "#,
        name,
        enabled,
        reason
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Moves the subscription back to `from`: what follows is delivered again,
/// under new webhook-ids (a receiver that drops repeated ids would drop a
/// replay sent under the old ones): a new generation.
pub async fn replay(db: impl PgExecutor<'_>, name: &str, from: Position) -> sqlx::Result<Replay> {
    let row = sqlx::query!(
        r#"
        with target as (
            select name, position_xid::text::bigint as xid, position_seq as seq
            from forward_subscriptions where name = $1
        ), moved as (
            update forward_subscriptions f
            set position_xid = $2::text::xid8, position_seq = $3,
                pending_id = null, pending_xid = null, pending_seq = null,
                failing_since = null, attempts = 0, last_error = null,
                revision = revision + 1, generation = generation + 1
            where f.name = $1 and (f.position_xid, f.position_seq) >= ($2::text::xid8, $3)
            returning 1
        )
        select t.xid as "xid!", t.seq as "seq!", exists (select 1 from moved) as "moved!"
        from target t
        "#,
        name,
        from.xid.to_string(),
        from.seq
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => Replay::NoSuchSubscription,
        Some(r) if r.moved => Replay::Done,
        Some(r) => Replay::Ahead(Position {
            xid: r.xid,
            seq: r.seq,
        }),
    })
}

/// Whether any subscription exists (serve warns when it cannot deliver).
pub async fn any(db: impl PgExecutor<'_>) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"select exists (select 1 from forward_subscriptions) as "any!""#)
        .fetch_one(db)
        .await
}
