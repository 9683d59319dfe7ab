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

/// Records a report under the status rule of `Status::merge`, in one
/// statement. Returns `None`, having written nothing, when the message is
/// known with another sender or user number.
///
/// Concurrency: the upsert of `messages` locks the message's row, and every
/// statement for that message upserts it before touching its history, so
/// concurrent statements (on any instance) serialise on that lock and each
/// sees the committed result of the one before: no read-modify-write race.
///
/// `advanced` needs the status before the update, which RETURNING cannot
/// give; it is derived instead: a status seen for the first time advanced the
/// message exactly when it is now the current status (it cannot equal the old
/// current status, which was seen before).
pub async fn record_report(
    db: impl PgExecutor<'_>,
    channel: &ChannelId,
    report: &Report,
    received_at: DateTime<Utc>,
) -> sqlx::Result<Option<Recorded>> {
    let extra = serde_json::Value::Object(report.extra.clone());
    let row = sqlx::query!(
        r#"
        with message as (
            insert into messages as m
                (channel_id, message_id, sender, user_number, status, first_seen_at, updated_at)
            values ($1, $2, $3, $4, $5, $6, $6)
            on conflict (channel_id, message_id) do update
                set status = greatest(m.status, excluded.status),
                    updated_at = case when excluded.status > m.status
                                      then excluded.updated_at else m.updated_at end
                where m.sender = excluded.sender and m.user_number = excluded.user_number
            returning m.status
        )
        insert into message_history as h
            (channel_id, message_id, status, first_received_at, last_received_at,
             receipt_count, advanced, extra)
        select $1, $2, $5, $6, $6, 1, message.status = $5, $7
        from message
        on conflict (channel_id, message_id, status) do update
            set receipt_count = h.receipt_count + 1,
                last_received_at = greatest(h.last_received_at, excluded.last_received_at)
        returning receipt_count = 1 as "first_of_status!", advanced
        "#,
        channel.as_str(),
        report.message_id,
        report.sender,
        report.user_number,
        report.status as Status,
        received_at,
        extra,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Recorded { first_of_status: r.first_of_status, advanced: r.advanced }))
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
