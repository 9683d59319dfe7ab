//! Reading `messages` and `message_history`: one message, a lookup, the
//! listing, and what retention deletes. Writing is reports.rs.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::Status;

/// A message as stored, without its history (model::Message mirrors
/// it on purpose: the table's shape is not the API's contract).
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub channel_id: String,
    pub message_id: String,
    pub sender: String,
    pub user_number: String,
    pub status: Status,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the sending side sent it; None when not registered.
    pub sent_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct HistoryRow {
    /// A ranked status or an unranked word kept as reported (SPEC §13).
    pub status: String,
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
               m.status as "status: Status", m.first_seen_at, m.updated_at, m.sent_at, m.tags,
               (select jsonb_agg(jsonb_build_object(
                           'status', e.status, 'first_received_at', e.first_received_at,
                           'last_received_at', e.last_received_at, 'receipt_count', e.receipt_count,
                           'advanced', e.advanced, 'extra', e.extra)
                       order by e.first_received_at, e.status)
                -- The history rows and the sweep's entry, merged (V15).
                from message_entries e
                where e.channel_id = m.channel_id and e.message_id = m.message_id) as "history!"
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
        sent_at: r.sent_at,
        tags: r.tags,
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
                  first_seen_at, updated_at, sent_at, tags
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
    /// Only messages registered with this tag.
    pub tag: Option<String>,
    pub updated_after: Option<DateTime<Utc>>,
    pub after: Option<Keyset>,
    pub limit: i64,
}

/// The listing's statement, its rows of type `$row` with `$columns` (a
/// string literal) beyond a message's, and `$filter` (a string literal) as
/// its user-number condition: checked macros take literals only.
macro_rules! list_where {
    ($row:ty, $columns:literal, $filter:literal, $($arg:expr),+ $(,)?) => {
        sqlx::query_as!(
            $row,
            r#"select channel_id, message_id, sender, user_number, status as "status: Status",
                      first_seen_at, updated_at, sent_at, tags "# + $columns + r#"
               from messages
               where channel_id = $1 "# + $filter + r#"
                 and (updated_at, message_id) < (coalesce($2, 'infinity'::timestamptz), $3)
                 and updated_at > coalesce($4, '-infinity'::timestamptz)
                 and ($5::message_status is null or status = $5)
                 and ($7::text is null or tags @> array[$7])
               order by updated_at desc, message_id desc
               limit $6"#,
            $($arg),+
        )
    };
}

/// Runs the listing's statement for `$filter`'s page, its rows `$row`
/// with `$columns`: one statement without a user-number condition and one
/// with, so that each keeps its index in a generic plan too (`$8 is null
/// or ...` would not).
macro_rules! list_page {
    ($db:expr, $row:ty, $columns:literal, $channel_id:expr, $filter:expr) => {{
        let filter: &ListFilter = $filter;
        let (before_time, before_id) = match &filter.after {
            Some(k) => (Some(k.updated_at), k.message_id.as_str()),
            None => (None, ""),
        };
        let (after, status, limit) = (filter.updated_after, filter.status, filter.limit);
        let tag = filter.tag.as_deref();
        match &filter.user_number {
            None => {
                list_where!(
                    $row,
                    $columns,
                    "",
                    $channel_id,
                    before_time,
                    before_id,
                    after,
                    status as Option<Status>,
                    limit,
                    tag
                )
                .fetch_all($db)
                .await
            }
            Some(n) => {
                list_where!(
                    $row,
                    $columns,
                    // Under each day the channel has messages of (V17):
                    // the index holds a customer's messages by day. The
                    // days are found by skipping from one to the next in
                    // the same index (one descent each), not by counting
                    // every day from the oldest: a registration may date a
                    // message decades back.
                    "and koostatus_day(first_seen_at) = any(array(
                         with recursive days(day) as (
                             select min(koostatus_day(first_seen_at))
                             from messages where channel_id = $1
                             union all
                             select (select min(koostatus_day(m.first_seen_at))
                                     from messages m
                                     where m.channel_id = $1
                                       and koostatus_day(m.first_seen_at) > days.day)
                             from days where days.day is not null)
                         select day from days where day is not null))
                     and user_number = $8",
                    $channel_id,
                    before_time,
                    before_id,
                    after,
                    status as Option<Status>,
                    limit,
                    tag,
                    n
                )
                .fetch_all($db)
                .await
            }
        }
    }};
}

/// A page of a channel's messages, newest change first.
///
/// The keyset condition is always present (the first page starts below
/// +infinity) so that the row comparison is an index condition in every plan,
/// generic or custom: a deep page costs what the first does.
pub async fn list(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    filter: &ListFilter,
) -> sqlx::Result<Vec<MessageRow>> {
    list_page!(db, MessageRow, "", channel_id, filter)
}

/// A message as the export writes it: its fields and when it was first
/// reported failed, delivered and read (V11).
pub struct ExportRow {
    pub channel_id: String,
    pub message_id: String,
    pub sender: String,
    pub user_number: String,
    pub status: Status,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub first_delivered_at: Option<DateTime<Utc>>,
    pub first_read_at: Option<DateTime<Utc>>,
}

/// A page of the export: the listing's page with the three report times.
pub async fn export_page(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    filter: &ListFilter,
) -> sqlx::Result<Vec<ExportRow>> {
    list_page!(
        db,
        ExportRow,
        ", first_failed_at, first_delivered_at, first_read_at",
        channel_id,
        filter
    )
}

/// A read-only transaction on one snapshot, for reading many pages as of
/// one moment (the export). Read-only, it takes no transaction id, so it
/// does not hold back the feed's readers (`pg_snapshot_xmin` counts only
/// transactions with one); a client that stops reading for
/// `idle_for` ends it, so a stalled download cannot hold back vacuum for
/// long.
pub async fn snapshot(
    pool: &sqlx::PgPool,
    idle_for: std::time::Duration,
) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query!("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "select set_config('idle_in_transaction_session_timeout', $1, true)",
        format!("{}ms", idle_for.as_millis())
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(tx)
}
