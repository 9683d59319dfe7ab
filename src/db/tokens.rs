//! Queries on `api_tokens`: read-API credentials, stored as SHA-256 hashes.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

pub struct TokenRow {
    pub name: String,
    pub channels: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub can_register: bool,
}

/// Returns false when a token with this name exists.
pub async fn insert(
    db: impl PgExecutor<'_>,
    name: &str,
    token_hash: &[u8],
    channels: Option<&[String]>,
    can_register: bool,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "insert into api_tokens (name, token_hash, channels, can_register) values ($1, $2, $3, $4)
         on conflict (name) do nothing",
        name,
        token_hash,
        channels,
        can_register
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        "select name, channels, created_at, last_used_at, can_register from api_tokens order by name"
    )
    .fetch_all(db)
    .await
}

/// Returns false when there is no such token.
pub async fn revoke(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<bool> {
    let deleted = sqlx::query!("delete from api_tokens where name = $1", name)
        .execute(db)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

pub async fn find_by_hash(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> sqlx::Result<Option<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        "select name, channels, created_at, last_used_at, can_register from api_tokens
         where token_hash = $1",
        token_hash
    )
    .fetch_optional(db)
    .await
}

pub async fn touch(db: impl PgExecutor<'_>, name: &str, at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query!(
        "update api_tokens set last_used_at = greatest(last_used_at, $2) where name = $1",
        name,
        at
    )
    .execute(db)
    .await?;
    Ok(())
}
