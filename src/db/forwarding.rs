//! Queries on `forward_subscriptions` (migrations/V7): the commands'
//! management, and the delivering instance's lease and progress. Every
//! statement of a delivering instance names its lease (`holder`): a
//! subscription another instance took over, or one removed, matches none.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use sqlx::postgres::types::PgInterval;

use super::changes::{Change, Position, Row as ChangeRow};

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

/// What a delivering instance needs of its subscription.
pub struct Subscription {
    pub channel_id: String,
    pub url: String,
    /// Encrypted (forward/secret.rs).
    pub secret: Vec<u8>,
    pub position: Position,
    /// The delivery in flight: its webhook-id and last change.
    pub pending: Option<(String, Position)>,
    pub attempts: i32,
    pub revision: i64,
    pub generation: i64,
}

pub enum Replay {
    Done,
    NoSuchSubscription,
    /// The position is after the subscription's own: replay moves back only.
    Ahead(Position),
}

/// What follows a position in a channel's feed.
pub enum News {
    /// Changes every reader can see.
    Readable,
    /// Committed changes, all still behind an older running transaction.
    HeldBack,
    None,
}

/// What [`advance`] found.
pub enum Advanced {
    /// The subscription is no longer ours as we knew it (removed, disabled,
    /// replayed, or its lease lost): read it again with [`resume`]. A
    /// success given was recorded unless the lease was lost or a replay
    /// came between.
    Changed,
    /// The next delivery, recorded as in flight; empty when caught up.
    Next(Vec<Change>),
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

/// Takes the lease of every enabled subscription that has none, or whose
/// lease ran out (its instance died): their names.
pub async fn claim(
    db: impl PgExecutor<'_>,
    holder: &str,
    lease: Duration,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"
        update forward_subscriptions
        set lease_holder = $1, lease_until = now() + $2
        where enabled and (lease_until is null or lease_until < now())
        returning name
        "#,
        holder,
        interval(lease)
    )
    .fetch_all(db)
    .await
}

/// Gives the lease up (shutdown, or a subscription disabled), so that
/// another instance need not wait for it to run out.
pub async fn release(db: impl PgExecutor<'_>, name: &str, holder: &str) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        update forward_subscriptions set lease_holder = null, lease_until = null
        where name = $1 and lease_holder = $2
        "#,
        name,
        holder
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Renews the lease and reads the subscription; None when it is not ours to
/// deliver any more (removed, disabled, or taken over).
pub async fn resume(
    db: impl PgExecutor<'_>,
    name: &str,
    holder: &str,
    lease: Duration,
) -> sqlx::Result<Option<Subscription>> {
    let row = sqlx::query!(
        r#"
        update forward_subscriptions
        set lease_until = now() + $3
        where name = $1 and lease_holder = $2 and enabled
        returning channel_id, url, secret,
                  position_xid::text::bigint as "xid!", position_seq,
                  pending_id, pending_xid::text::bigint as pending_xid, pending_seq,
                  attempts, revision, generation
        "#,
        name,
        holder,
        interval(lease)
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Subscription {
        channel_id: r.channel_id,
        url: r.url,
        secret: r.secret,
        position: Position {
            xid: r.xid,
            seq: r.position_seq,
        },
        pending: match (r.pending_id, r.pending_xid, r.pending_seq) {
            (Some(id), Some(xid), Some(seq)) => Some((id, Position { xid, seq })),
            _ => None,
        },
        attempts: r.attempts,
        revision: r.revision,
        generation: r.generation,
    }))
}

/// The progress statement of a delivering instance: the subscription moves
/// to `position` (past the recorded delivery `done`, which a 2xx answered,
/// when given), the next up to
/// `limit` changes after it are read from the feed below its horizon and
/// recorded as the delivery `next_id` in flight, and the lease is renewed;
/// all in one statement.
///
/// A success is recorded as long as the delivery is still the one in
/// flight (a replay clears it); the next one is taken only if the
/// subscription is still enabled and as the instance knew it (`revision`).
#[allow(clippy::too_many_arguments)]
pub async fn advance(
    db: impl PgExecutor<'_>,
    name: &str,
    holder: &str,
    lease: Duration,
    revision: i64,
    channel_id: &str,
    done: Option<&str>,
    position: Position,
    next_id: &str,
    limit: i64,
) -> sqlx::Result<Advanced> {
    let rows = sqlx::query!(
        r#"
        with next as (
            select xid, seq, message_id, user_number, status, changed_at
            from message_changes
            where channel_id = $6 and (xid, seq) > ($7::text::xid8, $8)
              and xid < (select koostatus_feed_horizon())
            order by xid, seq
            limit $10
        ), last as (
            select xid, seq from next order by xid desc, seq desc limit 1
        ), moved as (
            update forward_subscriptions
            set position_xid = $7::text::xid8, position_seq = $8,
                pending_id = case when enabled and revision = $4 and exists (select 1 from last)
                                  then $9 end,
                pending_xid = case when enabled and revision = $4 then (select xid from last) end,
                pending_seq = case when enabled and revision = $4 then (select seq from last) end,
                failing_since = case when $5::text is null then failing_since end,
                attempts = case when $5::text is null then attempts else 0 end,
                last_error = case when $5::text is null then last_error end,
                delivered_at = case when $5::text is null then delivered_at else now() end,
                lease_until = now() + $3
            where name = $1 and lease_holder = $2
              and pending_id is not distinct from $5
              and ((enabled and revision = $4) or $5::text is not null)
            returning enabled and revision = $4 as current
        )
        select m.current as "current!", n.xid::text::bigint as xid, n.seq as "seq?",
               n.message_id as "message_id?", n.user_number as "user_number?",
               n.status as "status?: crate::domain::Status", n.changed_at as "changed_at?"
        from moved m left join next n on true
        order by n.xid, n.seq
        "#,
        name,
        holder,
        interval(lease),
        revision,
        done,
        channel_id,
        position.xid.to_string(),
        position.seq,
        next_id,
        limit
    )
    .fetch_all(db)
    .await?;
    if rows.first().is_none_or(|r| !r.current) {
        return Ok(Advanced::Changed);
    }
    Ok(Advanced::Next(
        rows.into_iter()
            .filter_map(|r| {
                Some(Change::from(ChangeRow {
                    xid: r.xid?,
                    seq: r.seq?,
                    message_id: r.message_id?,
                    user_number: r.user_number?,
                    status: r.status?,
                    changed_at: r.changed_at?,
                }))
            })
            .collect(),
    ))
}

/// Records a failed attempt of the delivery `pending_id`, disabling the
/// subscription once it has failed for `disable_after` without a success.
/// None when the subscription is no longer ours as we knew it; else whether
/// it is still enabled.
pub async fn failed(
    db: impl PgExecutor<'_>,
    name: &str,
    holder: &str,
    lease: Duration,
    pending_id: &str,
    error: &str,
    disable_after: Duration,
) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar!(
        r#"
        update forward_subscriptions
        set attempts = attempts + 1,
            failing_since = coalesce(failing_since, now()),
            last_error = $5,
            enabled = coalesce(failing_since, now()) > (now() - $6::interval),
            disabled_reason = case when coalesce(failing_since, now()) > (now() - $6::interval) then null
                else 'failing since ' || to_char(failing_since at time zone 'UTC',
                                                 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                     || ': ' || $5 end,
            lease_until = now() + $3
        where name = $1 and lease_holder = $2 and enabled and pending_id = $4
        returning enabled
        "#,
        name,
        holder,
        interval(lease),
        pending_id,
        error,
        interval(disable_after)
    )
    .fetch_optional(db)
    .await
}

/// Up to `limit` changes after `after`, below the feed's horizon.
pub async fn read(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    after: Position,
    limit: i64,
) -> sqlx::Result<Vec<Change>> {
    super::changes::read(db, channel_id, after, None, None, limit).await
}

/// Changes after `after` up to and including `upto`: a delivery in flight,
/// read again to retry it.
pub async fn pending_changes(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    after: Position,
    upto: Position,
) -> sqlx::Result<Vec<Change>> {
    super::changes::read(db, channel_id, after, Some(upto), None, 100_000).await
}

/// Changes after the subscription's position, at most `cap` counted: its
/// lag in changes.
pub async fn lag(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    after: Position,
    cap: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"
        select count(*) as "changes!"
        from (
            select 1 from message_changes
            where channel_id = $1 and (xid, seq) > ($2::text::xid8, $3)
            order by xid, seq
            limit $4
        ) behind
        "#,
        channel_id,
        after.xid.to_string(),
        after.seq,
        cap
    )
    .fetch_one(db)
    .await
}

/// Whether changes follow `after`: a cheap look before [`advance`], which
/// writes.
pub async fn news(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    after: Position,
) -> sqlx::Result<News> {
    let row = sqlx::query!(
        r#"
        select exists (
                   select 1 from message_changes
                   where channel_id = $1 and (xid, seq) > ($2::text::xid8, $3)
               ) as "any!",
               exists (
                   select 1 from message_changes
                   where channel_id = $1 and (xid, seq) > ($2::text::xid8, $3)
                     and xid < (select koostatus_feed_horizon())
               ) as "readable!"
        "#,
        channel_id,
        after.xid.to_string(),
        after.seq
    )
    .fetch_one(db)
    .await?;
    Ok(match (row.any, row.readable) {
        (_, true) => News::Readable,
        (true, false) => News::HeldBack,
        (false, false) => News::None,
    })
}
