//! Messages registered by the sending side (SPEC §13): a message is known,
//! as `sent`, from the moment it is sent, not from its first report.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// A message as the sending side registers it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub message_id: String,
    pub sender: String,
    pub user_number: String,
    pub sent_at: DateTime<Utc>,
    pub tags: Vec<String>,
}

/// What a registration did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Registered {
    /// New messages, now `sent`.
    pub registered: u64,
    /// Known before, with the same sender and user number: status and
    /// history kept (a message known only from reports gains `sent_at` and
    /// `tags`).
    pub already_known: u64,
    /// Known with another sender or user number: nothing of them written.
    pub conflicts: Vec<String>,
}

/// Registers `batch` (no message id twice) in one transaction.
///
/// New messages are inserted as `sent` with their history entry, their
/// change in the feed and their count in the statistics, by one statement
/// that locks message rows in (channel_id, message_id) order as the reports'
/// statement does, so the two cannot deadlock and serialise per message. A
/// message already known keeps its status, history and `first_seen_at` (so
/// that it never moves between statistics buckets); if it was known only
/// from reports it gains `sent_at` and `tags`.
pub async fn register(
    conn: &mut PgConnection,
    channel_id: &str,
    batch: &[Registration],
    received_at: DateTime<Utc>,
) -> sqlx::Result<Registered> {
    let ids: Vec<&str> = batch.iter().map(|r| r.message_id.as_str()).collect();
    let senders: Vec<&str> = batch.iter().map(|r| r.sender.as_str()).collect();
    let numbers: Vec<&str> = batch.iter().map(|r| r.user_number.as_str()).collect();
    let sent: Vec<DateTime<Utc>> = batch.iter().map(|r| r.sent_at).collect();
    // Ragged arrays cannot be bound as text[][]: each message's tags travel
    // as one JSON array.
    let tags: Vec<serde_json::Value> = batch.iter().map(|r| r.tags.clone().into()).collect();
    let mut tx = sqlx::Connection::begin(conn).await?;
    let written = sqlx::query!(
        r#"
        with input as (
            select * from unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[],
                                 $6::jsonb[])
                as t(message_id, sender, user_number, sent_at, tags)
        ),
        message as (
            insert into messages as m
                (channel_id, message_id, sender, user_number, status, first_seen_at, updated_at,
                 changed_xid, sent_at, tags)
            select $1, message_id, sender, user_number, 'sent', sent_at, $7,
                   pg_current_xact_id(), sent_at,
                   array(select jsonb_array_elements_text(tags))
            from input
            order by message_id
            on conflict (channel_id, message_id) do update
                set sent_at = excluded.sent_at,
                    tags = excluded.tags,
                    previous_status = m.status
                where m.sender = excluded.sender and m.user_number = excluded.user_number
                  and m.sent_at is null
            returning m.message_key, m.message_id, m.user_number, m.changed_xid,
                      -- Null only for a row this statement inserted (V6).
                      m.previous_status is null as inserted
        ),
        history as (
            insert into message_history
                (message_key, channel_id, status, first_received_at, last_received_at,
                 receipt_count, advanced, extra)
            select message_key, $1, 'sent', $7, $7, 1, true, '{}'
            from message
            where inserted
            order by message_key
        ),
        change as (
            insert into message_changes (channel_id, message_id, user_number, status, changed_at, xid)
            select $1, message_id, user_number, 'sent', $7, changed_xid
            from message
            where inserted
            order by message_id
        )
        select message_id as "message_id!", inserted as "inserted!" from message
        "#,
        channel_id,
        &ids as &[&str],
        &senders as &[&str],
        &numbers as &[&str],
        &sent,
        &tags,
        received_at,
    )
    .fetch_all(&mut *tx)
    .await?;
    // The statistics: a new message counts under the channel ('') and its
    // tags; one known from reports that gains tags now counts, as it
    // stands, under those tags too. Read back from the rows just written,
    // whose locks this transaction holds.
    let (written_ids, inserted): (Vec<&str>, Vec<bool>) = written
        .iter()
        .map(|w| (w.message_id.as_str(), w.inserted))
        .unzip();
    sqlx::query!(
        r#"
        select koostatus_stats_add(
            array_agg(c.channel_id), array_agg(c.tag), array_agg(c.seen), array_agg(c.messages),
            array_agg(c.reached_unreported), array_agg(c.reached_failed),
            array_agg(c.reached_delivered), array_agg(c.reached_read),
            array_agg(c.read_seconds), array_agg(c.read_n),
            array_agg(c.deliver_seconds), array_agg(c.deliver_n))
        from unnest($2::text[], $3::bool[]) as w(message_id, inserted)
        join messages m on m.channel_id = $1 and m.message_id = w.message_id
        cross join lateral koostatus_stats_contribution(m, 1, w.inserted) c
        "#,
        channel_id,
        &written_ids as &[&str],
        &inserted,
    )
    .execute(&mut *tx)
    .await?;
    // The rest were known before: with the same sender and user number
    // (already known) or not (a conflict). A new statement sees rows that
    // concurrent transactions committed while this one waited for them.
    let written_ids: std::collections::HashSet<&str> = written_ids.into_iter().collect();
    let rest: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !written_ids.contains(id))
        .collect();
    let known = sqlx::query!(
        r#"select message_id, sender, user_number from messages
           where channel_id = $1 and message_id = any($2)"#,
        channel_id,
        &rest as &[&str]
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let inserted = written.iter().filter(|w| w.inserted).count() as u64;
    let mut result = Registered {
        registered: inserted,
        already_known: written.len() as u64 - inserted,
        conflicts: Vec::new(),
    };
    let known: std::collections::HashMap<&str, (&str, &str)> = known
        .iter()
        .map(|k| {
            (
                k.message_id.as_str(),
                (k.sender.as_str(), k.user_number.as_str()),
            )
        })
        .collect();
    // In the order of the request.
    for asked in batch {
        match known.get(asked.message_id.as_str()) {
            Some(&(sender, number)) if sender == asked.sender && number == asked.user_number => {
                result.already_known += 1
            }
            Some(_) => result.conflicts.push(asked.message_id.clone()),
            // Written above, or deleted (pruned) meanwhile.
            None => {}
        }
    }
    Ok(result)
}
