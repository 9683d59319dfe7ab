//! The sweep that turns messages still `sent` after their channel's
//! `unreported_after` into `unreported` (SPEC §13), and what the metrics
//! read about them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// Each channel and its own `unreported_after`, None for the global one.
pub async fn channel_deadlines(
    db: impl PgExecutor<'_>,
) -> sqlx::Result<Vec<(String, Option<Duration>)>> {
    let rows = sqlx::query!(
        r#"select id, extract(epoch from unreported_after)::float8 as seconds
           from channels order by id"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.seconds.map(Duration::from_secs_f64)))
        .collect())
}

/// Where a pass of the sweep has got to in a channel: the last message it
/// looked at, in (first_seen_at, message_id) order.
pub type SweepKey = (DateTime<Utc>, String);

/// What one statement of the sweep did.
pub struct Swept {
    /// Messages turned `unreported`.
    pub changed: i64,
    /// The last message looked at; None when there was none (the pass is
    /// over).
    pub last: Option<SweepKey>,
}

/// Turns up to `limit` messages of the channel that are still `sent`, were
/// sent at or before `sent_before` and come after `after` into
/// `unreported`, each with its history entry, its change in the feed (and
/// so in `/events` and forwarding) and the statistics.
///
/// It never waits for a row lock: rows a report's statement holds are
/// skipped (`skip locked`) and taken by a later sweep if still `sent`. The
/// status is checked again on the locked row, so a report that committed
/// first wins, and two instances sweeping at once change each message once.
/// The partial index `messages_unanswered` (V10) serves the search, so the
/// cost follows the messages changed, not the table.
pub async fn sweep(
    pool: &sqlx::PgPool,
    channel_id: &str,
    sent_before: DateTime<Utc>,
    now: DateTime<Utc>,
    after: Option<&SweepKey>,
    limit: i64,
) -> sqlx::Result<Swept> {
    let (after_seen, after_id) = match after {
        Some((seen, id)) => (Some(*seen), id.as_str()),
        None => (None, ""),
    };
    // The plan must walk messages_unanswered in its order and stop after
    // `limit` rows. Right after many messages arrive, before autovacuum has
    // analysed them, the planner believes a channel has a handful and may
    // fetch them all by another index and sort them: a full sort per batch
    // (measured: 1.7 s per 1,000). Without sorts it takes the index's order.
    // Disabling sorts adds a huge cost to the plan's estimate, which would
    // make PostgreSQL JIT-compile the statement on every run (measured:
    // 450 ms of a 560 ms batch), so JIT goes off with it.
    let mut tx = pool.begin().await?;
    sqlx::query!("set local enable_sort = off")
        .execute(&mut *tx)
        .await?;
    sqlx::query!("set local jit = off")
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query!(
        r#"
        with due as (
            select message_id, first_seen_at from messages
            where channel_id = $1 and status = 'sent' and first_seen_at <= $2
              and (first_seen_at, message_id) > (coalesce($5, '-infinity'::timestamptz), $6)
            order by first_seen_at, message_id
            limit $4
            for update skip locked
        ),
        message as (
            update messages m
            set status = 'unreported',
                updated_at = $3,
                -- After the message's previous change in feed order (V4).
                changed_xid = greatest(pg_current_xact_id(), m.changed_xid),
                previous_status = m.status
            from due
            where m.channel_id = $1 and m.message_id = due.message_id and m.status = 'sent'
            returning m.message_key, m.message_id, m.user_number, m.first_seen_at,
                      m.changed_xid, m.tags
        ),
        history as (
            insert into message_history
                (message_key, channel_id, message_id, status, first_received_at,
                 last_received_at, receipt_count, advanced, extra)
            select message_key, $1, message_id, 'unreported', $3, $3, 1, true, '{}'
            from message
            order by message_key
            on conflict (message_key, status) do nothing
        ),
        change as (
            insert into message_changes (channel_id, message_id, user_number, status, changed_at, xid)
            select $1, message_id, user_number, 'unreported', $3, changed_xid
            from message
            order by message_id
        ),
        counts as (
            -- Under the channel ('') and each of the message's tags.
            insert into stats_counts as s
                (channel_id, tag, hour, shard, messages, reached_unreported, reached_failed,
                 reached_delivered, reached_read)
            select $1, t.tag, date_trunc('hour', first_seen_at, 'UTC'), pg_backend_pid() % 64,
                   0, count(*), 0, 0, 0
            from message
            cross join lateral unnest(array[''] || tags) as t(tag)
            group by 2, 3
            order by 2, 3
            on conflict (channel_id, tag, hour, shard) do update
                set reached_unreported = s.reached_unreported + excluded.reached_unreported
        )
        select (select count(*) from message) as "changed!",
               last.first_seen_at as "last_seen?", last.message_id as "last_id?"
        from (select 1) as one
        left join (select first_seen_at, message_id from due
                   order by first_seen_at desc, message_id desc limit 1) as last on true
        "#,
        channel_id,
        sent_before,
        now,
        limit,
        after_seen,
        after_id
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Swept {
        changed: row.changed,
        last: row.last_seen.zip(row.last_id),
    })
}

/// Messages now `unreported`, per channel that has any (from the partial
/// index, not the table).
pub async fn counts(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"select channel_id, count(*) as "n!" from messages
           where status = 'unreported'
           group by channel_id"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.channel_id, r.n)).collect())
}

/// When each channel last had a report that KooMessage sent (a ranked
/// status above `unreported`), from the newest end of its feed: where an
/// instance starts counting the age of a channel's last report.
pub async fn last_reports(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(String, DateTime<Utc>)>> {
    let rows = sqlx::query!(
        r#"select c.id as "id!", l.changed_at as "changed_at!"
           from channels c
           cross join lateral (
               select changed_at from message_changes
               where channel_id = c.id and status >= 'failed'
               order by xid desc, seq desc
               limit 1) l"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.changed_at)).collect())
}
