//! Queries on `channels`: webhook credentials and their management.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

pub struct ChannelRow {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub password_changed_at: DateTime<Utc>,
}

/// What authenticating a callback needs to know about a channel.
pub struct CredentialRow {
    pub enabled: bool,
    pub password_hash: String,
    pub previous_password_hash: Option<String>,
    pub previous_password_expires_at: Option<DateTime<Utc>>,
}

/// Returns false when a channel with this id already exists.
pub async fn insert(
    db: impl PgExecutor<'_>,
    id: &str,
    name: &str,
    password_hash: &str,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "insert into channels (id, name, password_hash) values ($1, $2, $3)
         on conflict (id) do nothing",
        id,
        name,
        password_hash
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Replaces the password. With `keep_old_until`, the replaced one stays valid
/// until then; without, any previous password stops working at once.
/// Returns false when the channel does not exist.
pub async fn set_password(
    db: impl PgExecutor<'_>,
    id: &str,
    password_hash: &str,
    keep_old_until: Option<DateTime<Utc>>,
) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        "update channels
         set previous_password_hash = case when $3::timestamptz is null then null else password_hash end,
             previous_password_expires_at = $3,
             password_hash = $2,
             password_changed_at = now()
         where id = $1",
        id,
        password_hash,
        keep_old_until
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Sets the channel's own `unreported_after` (None: the global setting).
/// Returns false when the channel does not exist.
pub async fn set_unreported_after(
    db: impl PgExecutor<'_>,
    id: &str,
    after: Option<std::time::Duration>,
) -> sqlx::Result<bool> {
    let seconds = after.map(|d| d.as_secs_f64());
    let updated = sqlx::query!(
        "update channels set unreported_after = make_interval(secs => $2) where id = $1",
        id,
        seconds
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Returns false when the channel does not exist.
pub async fn set_enabled(db: impl PgExecutor<'_>, id: &str, enabled: bool) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        "update channels set enabled = $2 where id = $1",
        id,
        enabled
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<ChannelRow>> {
    sqlx::query_as!(
        ChannelRow,
        "select id, name, enabled, created_at, password_changed_at from channels order by id"
    )
    .fetch_all(db)
    .await
}

pub async fn credentials(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<CredentialRow>> {
    sqlx::query_as!(
        CredentialRow,
        "select enabled, password_hash, previous_password_hash, previous_password_expires_at
         from channels where id = $1",
        id
    )
    .fetch_optional(db)
    .await
}

pub async fn exists(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<bool> {
    let found = sqlx::query_scalar!(
        r#"select exists (select 1 from channels where id = $1) as "found!""#,
        id
    )
    .fetch_one(db)
    .await?;
    Ok(found)
}

pub async fn ids(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!("select id from channels order by id")
        .fetch_all(db)
        .await
}
