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
/// looked at, in (first_seen_at, message_key) order.
pub type SweepKey = (DateTime<Utc>, i64);

/// What one statement of the sweep did.
pub struct Swept {
    /// Messages turned `unreported`.
    pub changed: i64,
    /// The last message looked at; None when there was none (the pass is
    /// over).
    pub last: Option<SweepKey>,
}

/// Which messages of a channel one statement looks at: those due, after
/// the last one this part looked at, in one of `parts` disjoint parts.
pub struct SweepRange<'a> {
    pub channel_id: &'a str,
    /// Sent at or before this.
    pub sent_before: DateTime<Utc>,
    pub after: Option<&'a SweepKey>,
    /// `message_key % parts = part`: parts that run at once never look at
    /// the same messages.
    pub part: i32,
    pub parts: i32,
}

/// Turns up to `limit` messages of `range` that are still `sent` into
/// `unreported`, each with its history entry (the message's
/// `unreported_at`, V15), its change in the feed (and so in `/events` and
/// forwarding) and the statistics.
///
/// It never waits for a row lock: rows a report's statement holds are
/// skipped (`skip locked`) and taken by a later sweep if still `sent`. The
/// status is checked again on the locked row, so a report that committed
/// first wins, and two instances sweeping at once change each message once.
/// The partial index `messages_unsent` (V14) serves the search and a swept
/// message leaves it, so the cost follows the messages changed, not the
/// table.
pub async fn sweep(
    pool: &sqlx::PgPool,
    range: &SweepRange<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Swept> {
    let (after_seen, after_key) = match range.after {
        Some((seen, key)) => (Some(*seen), *key),
        None => (None, i64::MIN),
    };
    // The plan must walk messages_unsent in its order and stop after
    // `limit` rows. Right after many messages arrive, before autovacuum has
    // analysed them, the planner believes a channel has a handful and may
    // fetch them all by another index and sort them: a full sort per batch
    // (measured: 1.7 s per 1,000). Without sorts it takes the index's order.
    // Disabling sorts adds a huge cost to the plan's estimate, which would
    // make PostgreSQL JIT-compile the statement on every run (measured:
    // 450 ms of a 560 ms batch), so JIT goes off with it.
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "select set_config('enable_sort', 'off', true) as sort, set_config('jit', 'off', true) as jit,
                set_config('plan_cache_mode', 'force_generic_plan', true) as plans"
    )
    .fetch_one(&mut *tx)
    .await?;
    let row = sqlx::query!(
        r#"
        with due as (
            select ctid, first_seen_at, message_key from messages
            where channel_id = $1 and status = 'sent' and first_seen_at <= $2
              and (first_seen_at, message_key) > (coalesce($5, '-infinity'::timestamptz), $6)
              and message_key % $7 = $8
            order by first_seen_at, message_key
            limit $4
            for update skip locked
        ),
        message as (
            update messages m
            set status = 'unreported',
                updated_at = $3,
                -- Its history's `unreported` entry (V15): a row of its
                -- own would cost a heap tuple and an index entry more.
                unreported_at = $3,
                -- After the message's previous change in feed order (V4).
                changed_xid = greatest(pg_current_xact_id(), m.changed_xid),
                previous_status = m.status
            from due
            -- The row `due` locked, by its place: no second search of the
            -- primary key. Should it have moved meanwhile, the update
            -- follows it and checks the status again on its newest version.
            where m.ctid = due.ctid and m.status = 'sent'
            returning m.message_key, m.message_id, m.user_number, m.first_seen_at,
                      m.changed_xid, m.tags
        ),
        change as (
            insert into message_changes (channel_id, message_id, user_number, status, changed_at, xid)
            select $1, message_id, user_number, 'unreported', $3, changed_xid
            from message
            order by message_id
        ),
        counts as (
            -- Under the channel ('') and each of the message's tags:
            -- counted per hour and set of tags first, so that the tags of
            -- a thousand messages are unnested a few times, not a thousand.
            insert into stats_counts as s
                (channel_id, tag, hour, shard, messages, reached_unreported, reached_failed,
                 reached_delivered, reached_read)
            select $1, t.tag, g.hour, pg_backend_pid() % 64, 0, sum(g.n), 0, 0, 0
            from (select date_trunc('hour', first_seen_at, 'UTC') as hour, tags, count(*) as n
                  from message group by 1, 2) as g
            cross join lateral unnest(array[''] || g.tags) as t(tag)
            group by 2, 3
            order by 2, 3
            on conflict (channel_id, tag, hour, shard) do update
                set reached_unreported = s.reached_unreported + excluded.reached_unreported
        )
        select (select count(*) from message) as "changed!",
               last.first_seen_at as "last_seen?", last.message_key as "last_key?"
        from (select 1) as one
        left join (select first_seen_at, message_key from due
                   order by first_seen_at desc, message_key desc limit 1) as last on true
        "#,
        range.channel_id,
        range.sent_before,
        now,
        limit,
        after_seen,
        after_key,
        range.parts as i64,
        range.part as i64,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Swept {
        changed: row.changed,
        last: row.last_seen.zip(row.last_key),
    })
}

/// Messages now `unreported`, per channel that has any, from the
/// statistics (V10): the messages that reached `unreported` but not
/// `failed`. Exact, and it reads a few rows per hour of a channel's
/// history however many messages that hour had.
pub async fn counts(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"select c.id as "channel_id!", sum(s.reached_unreported - s.reached_failed)::bigint as "n!"
           from channels c
           join stats_counts s on s.channel_id = c.id and s.tag = ''
           group by c.id
           having sum(s.reached_unreported - s.reached_failed) > 0"#
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
