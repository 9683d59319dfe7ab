//! Reading the statistics' aggregates (kept by triggers on `messages`,
//! migrations/V6), and rebuilding them from the messages.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

use crate::domain::stats::{Bucket, Counts, ReadTimes};

/// The counts of each bucket of `[from, to)` that has messages, by bucket
/// start. `from` and `to` are bucket starts. `tag`: '' for the whole
/// channel.
pub async fn counts(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    tag: &str,
    bucket: Bucket,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<(DateTime<Utc>, Counts)>> {
    let rows = sqlx::query!(
        r#"select date_trunc($2, hour, 'UTC') as "start!",
                  sum(messages)::bigint as "messages!",
                  sum(reached_unreported)::bigint as "reached_unreported!",
                  sum(reached_failed)::bigint as "reached_failed!",
                  sum(reached_delivered)::bigint as "reached_delivered!",
                  sum(reached_read)::bigint as "reached_read!"
           from stats_counts
           where channel_id = $1 and tag = $5 and hour >= $3 and hour < $4
           group by 1
           order by 1"#,
        channel_id,
        bucket.name(),
        from,
        to,
        tag
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let counts = Counts {
                messages: r.messages,
                reached_unreported: r.reached_unreported,
                reached_failed: r.reached_failed,
                reached_delivered: r.reached_delivered,
                reached_read: r.reached_read,
            };
            (r.start, counts)
        })
        .collect())
}

/// A kept histogram of times from `first_seen_at`.
#[derive(Debug, Clone, Copy)]
pub enum Times {
    /// To the first `read` (stats_read_times, V6).
    Read,
    /// To the first `delivered` or `read` (stats_deliver_times, V10).
    Deliver,
}

/// The histogram of each bucket of `[from, to)` that has any.
pub async fn times(
    db: impl PgExecutor<'_>,
    times: Times,
    channel_id: &str,
    tag: &str,
    bucket: Bucket,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<(DateTime<Utc>, ReadTimes)>> {
    // The same statement on two tables of one shape: checked macros take
    // literal table names only.
    macro_rules! from_table {
        ($table:literal) => {
            sqlx::query_as!(
                TimesRow,
                r#"select start, bin, sum(n)::bigint as "n!"
                   from "#
                    + $table
                    + r#"
                   where channel_id = $1 and tag = $5 and hours = $2
                     and start >= $3 and start < $4
                   group by start, bin
                   having sum(n) > 0
                   order by start, bin"#,
                channel_id,
                bucket.hours(),
                from,
                to,
                tag
            )
            .fetch_all(db)
            .await?
        };
    }
    let rows = match times {
        Times::Read => from_table!("stats_read_times"),
        Times::Deliver => from_table!("stats_deliver_times"),
    };
    let mut buckets: Vec<(DateTime<Utc>, ReadTimes)> = Vec::new();
    for r in rows {
        if buckets.last().is_none_or(|(start, _)| *start != r.start) {
            buckets.push((r.start, ReadTimes::default()));
        }
        buckets.last_mut().expect("pushed").1.add(r.bin, r.n);
    }
    Ok(buckets)
}

struct TimesRow {
    start: DateTime<Utc>,
    bin: i16,
    n: i64,
}

/// Recomputes every aggregate from the messages (`koostatus_stats_rebuild`,
/// migrations/V6), in one transaction that holds writers of `messages` off
/// meanwhile (they wait; reads go on), so that no change falls between the
/// old aggregates and the new. Returns how many messages were counted.
pub async fn rebuild(pool: &PgPool) -> sqlx::Result<i64> {
    let mut tx = pool.begin().await?;
    // Millions of messages take longer than the pool's statement timeout.
    sqlx::query!("set local statement_timeout = 0")
        .execute(&mut *tx)
        .await?;
    sqlx::query!("lock table messages in share mode")
        .execute(&mut *tx)
        .await?;
    let counted = sqlx::query_scalar!(r#"select koostatus_stats_rebuild() as "n!""#)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(counted)
}
