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
