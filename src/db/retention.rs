//! Retention: what `koostatus prune` (and `serve` on a schedule) deletes.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// How many messages of a channel last changed before `cutoff`.
pub async fn count_older(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    cutoff: DateTime<Utc>,
) -> sqlx::Result<i64> {
    let n = sqlx::query_scalar!(
        r#"select count(*) as "n!" from messages where channel_id = $1 and updated_at < $2"#,
        channel_id,
        cutoff
    )
    .fetch_one(db)
    .await?;
    Ok(n)
}

/// What one batch deleted.
pub struct Deleted {
    pub messages: u64,
    pub feed_entries: u64,
}

/// Deletes up to `limit` messages of a channel that last changed before
/// `cutoff`, with their history (in the same statement: no foreign key
/// does it, see migrations/V12), and up to
/// `limit` of its feed entries older than `cutoff`, oldest positions first.
/// Message rows a callback is writing are skipped, not waited for, so
/// pruning never holds up ingestion; the indexes on (channel_id,
/// updated_at) and (channel_id, xid, seq) find the candidates.
pub async fn delete_older(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Deleted> {
    let row = sqlx::query!(
        r#"with doomed_messages as (
               select channel_id, message_id, message_key from messages
               where channel_id = $1 and updated_at < $2
               order by updated_at
               limit $3
               for update skip locked
           ), messages_gone as (
               delete from messages m using doomed_messages d
               where m.channel_id = d.channel_id and m.message_id = d.message_id
               returning 1
           ), history_gone as (
               delete from message_history h using doomed_messages d
               where h.message_key = d.message_key
           ), doomed_entries as (
               select xid, seq from message_changes
               where channel_id = $1 and changed_at < $2
               order by xid, seq
               limit $3
           ), entries_gone as (
               delete from message_changes c using doomed_entries d
               where c.channel_id = $1 and c.xid = d.xid and c.seq = d.seq
               returning 1
           )
           select (select count(*) from messages_gone) as "messages!",
                  (select count(*) from entries_gone) as "entries!""#,
        channel_id,
        cutoff,
        limit
    )
    .fetch_one(db)
    .await?;
    Ok(Deleted {
        messages: row.messages as u64,
        feed_entries: row.entries as u64,
    })
}
