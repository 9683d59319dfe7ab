//! What follows a subscription's position in its channel's feed, read
//! below the feed's horizon as every reader of it must.

use sqlx::PgExecutor;

use crate::db::changes::{self, Change, Position};

/// What follows a position in a channel's feed.
pub enum News {
    /// Changes every reader can see.
    Readable,
    /// Committed changes, all still behind an older running transaction.
    HeldBack,
    None,
}

/// Up to `limit` changes after `after`, below the feed's horizon.
pub async fn read(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    after: Position,
    limit: i64,
) -> sqlx::Result<Vec<Change>> {
    changes::read(db, channel_id, after, None, None, limit).await
}

/// Changes after `after` up to and including `upto`: a delivery in flight,
/// read again to retry it.
pub async fn pending_changes(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    after: Position,
    upto: Position,
) -> sqlx::Result<Vec<Change>> {
    changes::read(db, channel_id, after, Some(upto), None, 100_000).await
}

/// Changes after the subscription's position, at most `cap` counted: its
/// lag in changes.
pub async fn lag(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    after: Position,
    cap: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"
        select count(*) as "changes!"
        from (
            select 1 from message_changes
            where channel_id = $1 and (xid, seq) > ($2::text::xid8, $3)
            order by xid, seq
            limit $4
        ) behind
        "#,
        channel_id,
        after.xid.to_string(),
        after.seq,
        cap
    )
    .fetch_one(db)
    .await
}

/// Whether changes follow `after`: a cheap look before [`advance`], which
/// writes.
pub async fn news(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    after: Position,
) -> sqlx::Result<News> {
    let row = sqlx::query!(
        r#"
        select exists (
                   select 1 from message_changes
                   where channel_id = $1 and (xid, seq) > ($2::text::xid8, $3)
               ) as "any!",
               exists (
                   select 1 from message_changes
                   where channel_id = $1 and (xid, seq) > ($2::text::xid8, $3)
                     and xid < (select koostatus_feed_horizon())
               ) as "readable!"
        "#,
        channel_id,
        after.xid.to_string(),
        after.seq
    )
    .fetch_one(db)
    .await?;
    Ok(match (row.any, row.readable) {
        (_, true) => News::Readable,
        (true, false) => News::HeldBack,
        (false, false) => News::None,
    })
}
