//! Queries on `event_tickets`: short-lived stand-ins for a token in an
//! `/events` URL, stored as SHA-256 hashes (V5).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// Stores a ticket of the token with this hash and drops that token's
/// expired tickets, so the table holds at most what was issued within a
/// ticket's lifetime. Returns false when the token is gone (revoked).
pub async fn insert(
    db: impl PgExecutor<'_>,
    ticket_hash: &[u8],
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query_scalar!(
        r#"
        with expired as (
            delete from event_tickets where token_hash = $2 and expires_at < now()
        )
        insert into event_tickets (ticket_hash, token_hash, expires_at)
        select $1, token_hash, $3 from api_tokens where token_hash = $2
        returning true as "inserted!"
        "#,
        ticket_hash,
        token_hash,
        expires_at
    )
    .fetch_optional(db)
    .await?;
    Ok(inserted.is_some())
}

/// The hash of the token behind an unexpired ticket.
pub async fn token_of(
    db: impl PgExecutor<'_>,
    ticket_hash: &[u8],
) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar!(
        "select token_hash from event_tickets where ticket_hash = $1 and expires_at > now()",
        ticket_hash
    )
    .fetch_optional(db)
    .await
}
