//! Queries on `messages` and `message_history`: recording reports under the
//! status rule.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::{ChannelId, Report, Status};

/// What recording one report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The first report of this status for the message.
    pub first_of_status: bool,
    /// It moved the current status forward.
    pub advanced: bool,
}

/// A report ready to be written: who it is for and when it arrived.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub channel: ChannelId,
    pub report: Report,
    pub received_at: DateTime<Utc>,
}

/// Records reports under the status rule of `Status::merge`, in one
/// statement. The batch must not hold two reports for one message (the
/// writer defers repeats to the next batch). Returns, in input order, what
/// each report did, or `None` for a report whose message is known with
/// another sender or user number: nothing of it was written.
///
/// Concurrency: the upsert of `messages` locks each message's row, in
/// (channel_id, message_id) order, and a history row is only touched while
/// its message's row is locked. So concurrent statements, on any instance,
/// serialise per message and cannot deadlock: locks are always taken in the
/// same order.
///
/// `advanced` needs the status before the update, which RETURNING cannot
/// give; it is derived instead: a status seen for the first time advanced the
/// message exactly when it is now the current status (it cannot equal the old
/// current status, which was seen before).
pub async fn record_reports(
    db: impl PgExecutor<'_>,
    batch: &[Incoming],
) -> sqlx::Result<Vec<Option<Recorded>>> {
    let mut channel_ids = Vec::with_capacity(batch.len());
    let mut message_ids = Vec::with_capacity(batch.len());
    let mut senders = Vec::with_capacity(batch.len());
    let mut user_numbers = Vec::with_capacity(batch.len());
    let mut statuses = Vec::with_capacity(batch.len());
    let mut times = Vec::with_capacity(batch.len());
    let mut extras = Vec::with_capacity(batch.len());
    for i in batch {
        channel_ids.push(i.channel.as_str());
        message_ids.push(i.report.message_id.as_str());
        senders.push(i.report.sender.as_str());
        user_numbers.push(i.report.user_number.as_str());
        statuses.push(i.report.status);
        times.push(i.received_at);
        extras.push(serde_json::Value::Object(i.report.extra.clone()));
    }
    let rows = sqlx::query!(
        r#"
        with input as (
            select * from unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                 $5::message_status[], $6::timestamptz[], $7::jsonb[])
                as t(channel_id, message_id, sender, user_number, status, received_at, extra)
        ),
        message as (
            insert into messages as m
                (channel_id, message_id, sender, user_number, status, first_seen_at, updated_at,
                 changed_xid)
            select channel_id, message_id, sender, user_number, status, received_at, received_at,
                   pg_current_xact_id()
            from input
            order by channel_id, message_id
            on conflict (channel_id, message_id) do update
                set status = greatest(m.status, excluded.status),
                    updated_at = case when excluded.status > m.status
                                      then excluded.updated_at else m.updated_at end,
                    -- After the message's previous change in feed order (V4).
                    changed_xid = case when excluded.status > m.status
                                       then greatest(excluded.changed_xid, m.changed_xid)
                                       else m.changed_xid end
                where m.sender = excluded.sender and m.user_number = excluded.user_number
            returning m.channel_id, m.message_id, m.user_number, m.status, m.changed_xid
        ),
        history as (
            insert into message_history as h
                (channel_id, message_id, status, first_received_at, last_received_at,
                 receipt_count, advanced, extra)
            select i.channel_id, i.message_id, i.status, i.received_at, i.received_at, 1,
                   message.status = i.status, i.extra
            from input i
            join message on message.channel_id = i.channel_id and message.message_id = i.message_id
            order by i.channel_id, i.message_id
            on conflict (channel_id, message_id, status) do update
                set receipt_count = h.receipt_count + 1,
                    last_received_at = greatest(h.last_received_at, excluded.last_received_at)
            returning h.channel_id, h.message_id, h.status, h.first_received_at,
                      h.receipt_count = 1 as first_of_status, h.advanced
        ),
        -- The current status changed exactly when its history entry is new
        -- and is the current status: had the message held that status
        -- before, the entry would exist.
        change as (
            insert into message_changes
                (channel_id, message_id, user_number, status, changed_at, xid)
            select h.channel_id, h.message_id, message.user_number, h.status, h.first_received_at,
                   message.changed_xid
            from history h
            join message on message.channel_id = h.channel_id and message.message_id = h.message_id
            where h.first_of_status and h.advanced
            order by h.channel_id, h.message_id
        )
        select channel_id as "channel_id!", message_id as "message_id!",
               first_of_status as "first_of_status!", advanced as "advanced!"
        from history
        "#,
        &channel_ids as &[&str],
        &message_ids as &[&str],
        &senders as &[&str],
        &user_numbers as &[&str],
        &statuses as &[Status],
        &times,
        &extras,
    )
    .fetch_all(db)
    .await?;
    let mut done: std::collections::HashMap<(String, String), Recorded> = rows
        .into_iter()
        .map(|r| {
            let recorded = Recorded {
                first_of_status: r.first_of_status,
                advanced: r.advanced,
            };
            ((r.channel_id, r.message_id), recorded)
        })
        .collect();
    Ok(batch
        .iter()
        .map(|i| done.remove(&(i.channel.as_str().to_owned(), i.report.message_id.clone())))
        .collect())
}

/// A message as stored, without its history.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub channel_id: String,
    pub message_id: String,
    pub sender: String,
    pub user_number: String,
    pub status: Status,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct HistoryRow {
    pub status: Status,
    pub first_received_at: DateTime<Utc>,
    pub last_received_at: DateTime<Utc>,
    pub receipt_count: i64,
    pub advanced: bool,
    pub extra: serde_json::Value,
}

/// One message with its history, oldest first, read in one statement so the
/// two are consistent with each other.
pub async fn find(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    message_id: &str,
) -> sqlx::Result<Option<(MessageRow, Vec<HistoryRow>)>> {
    let row = sqlx::query!(
        r#"
        select m.channel_id, m.message_id, m.sender, m.user_number,
               m.status as "status: Status", m.first_seen_at, m.updated_at,
               (select jsonb_agg(jsonb_build_object(
                           'status', h.status, 'first_received_at', h.first_received_at,
                           'last_received_at', h.last_received_at, 'receipt_count', h.receipt_count,
                           'advanced', h.advanced, 'extra', h.extra)
                       order by h.first_received_at, h.status)
                from message_history h
                where h.channel_id = m.channel_id and h.message_id = m.message_id) as "history!"
        from messages m
        where m.channel_id = $1 and m.message_id = $2
        "#,
        channel_id,
        message_id
    )
    .fetch_optional(db)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let history = serde_json::from_value(r.history).map_err(|e| sqlx::Error::Decode(e.into()))?;
    let message = MessageRow {
        channel_id: r.channel_id,
        message_id: r.message_id,
        sender: r.sender,
        user_number: r.user_number,
        status: r.status,
        first_seen_at: r.first_seen_at,
        updated_at: r.updated_at,
    };
    Ok(Some((message, history)))
}

/// The messages among `message_ids` that exist, in one query.
pub async fn lookup(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    message_ids: &[String],
) -> sqlx::Result<Vec<MessageRow>> {
    sqlx::query_as!(
        MessageRow,
        r#"select channel_id, message_id, sender, user_number, status as "status: Status",
                  first_seen_at, updated_at
           from messages where channel_id = $1 and message_id = any($2)"#,
        channel_id,
        message_ids
    )
    .fetch_all(db)
    .await
}

/// Where a page of a listing starts: after the row (updated_at, message_id)
/// in newest-first order.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyset {
    pub updated_at: DateTime<Utc>,
    pub message_id: String,
}

pub struct ListFilter {
    pub status: Option<Status>,
    pub user_number: Option<String>,
    pub updated_after: Option<DateTime<Utc>>,
    pub after: Option<Keyset>,
    pub limit: i64,
}

/// A page of a channel's messages, newest change first.
///
/// The keyset condition is always present (the first page starts below
/// +infinity) so that the row comparison is an index condition in every plan,
/// generic or custom: a deep page costs what the first does. A user_number
/// filter has its own statement so it can use its own index.
pub async fn list(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    filter: &ListFilter,
) -> sqlx::Result<Vec<MessageRow>> {
    let (before_time, before_id) = match &filter.after {
        Some(k) => (Some(k.updated_at), k.message_id.as_str()),
        None => (None, ""),
    };
    match &filter.user_number {
        None => {
            sqlx::query_as!(
                MessageRow,
                r#"select channel_id, message_id, sender, user_number, status as "status: Status",
                          first_seen_at, updated_at
                   from messages
                   where channel_id = $1
                     and (updated_at, message_id) < (coalesce($2, 'infinity'::timestamptz), $3)
                     and updated_at > coalesce($4, '-infinity'::timestamptz)
                     and ($5::message_status is null or status = $5)
                   order by updated_at desc, message_id desc
                   limit $6"#,
                channel_id,
                before_time,
                before_id,
                filter.updated_after,
                filter.status as Option<Status>,
                filter.limit
            )
            .fetch_all(db)
            .await
        }
        Some(user_number) => {
            sqlx::query_as!(
                MessageRow,
                r#"select channel_id, message_id, sender, user_number, status as "status: Status",
                          first_seen_at, updated_at
                   from messages
                   where channel_id = $1 and user_number = $7
                     and (updated_at, message_id) < (coalesce($2, 'infinity'::timestamptz), $3)
                     and updated_at > coalesce($4, '-infinity'::timestamptz)
                     and ($5::message_status is null or status = $5)
                   order by updated_at desc, message_id desc
                   limit $6"#,
                channel_id,
                before_time,
                before_id,
                filter.updated_after,
                filter.status as Option<Status>,
                filter.limit,
                user_number
            )
            .fetch_all(db)
            .await
        }
    }
}

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

/// Deletes up to `limit` messages of a channel that last changed before
/// `cutoff`, with their history (the foreign key cascades). Rows a callback
/// is writing are skipped, not waited for, so pruning never holds up
/// ingestion; the index on (channel_id, updated_at) finds the candidates.
pub async fn delete_older(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let deleted = sqlx::query!(
        "with doomed as (
             select channel_id, message_id from messages
             where channel_id = $1 and updated_at < $2
             order by updated_at
             limit $3
             for update skip locked
         )
         delete from messages m using doomed d
         where m.channel_id = d.channel_id and m.message_id = d.message_id",
        channel_id,
        cutoff,
        limit
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}
