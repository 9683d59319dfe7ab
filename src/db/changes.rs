//! The changes feed (see migrations/V3__changes_feed.sql for why a position
//! is a transaction id and a sequence, and why reads stop at the oldest
//! running transaction, and V5 for which transactions count).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use sqlx::postgres::{PgListener, PgPoolOptions};

use crate::domain::Status;

/// A place in a channel's feed: changes after it are (xid, seq) greater.
/// (0, 0) is before the first change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub xid: i64,
    pub seq: i64,
}

impl Position {
    /// `<xid>-<seq>`, as [`Position`]'s Display writes it.
    pub fn parse(s: &str) -> Option<Position> {
        let (xid, seq) = s.split_once('-')?;
        let number = |n: &str| {
            n.parse::<i64>()
                .ok()
                .filter(|&v| v >= 0 && !n.starts_with('+'))
        };
        Some(Position {
            xid: number(xid)?,
            seq: number(seq)?,
        })
    }
}

/// `<xid>-<seq>`; "0-0" is before the first change. Opaque to clients.
impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.xid, self.seq)
    }
}

pub struct Change {
    pub position: Position,
    pub message_id: String,
    pub user_number: String,
    pub status: Status,
    pub changed_at: DateTime<Utc>,
}

/// A row of the feed as the queries below (and forwarding's) read it.
pub(super) struct Row {
    pub xid: i64,
    pub seq: i64,
    pub message_id: String,
    pub user_number: String,
    pub status: Status,
    pub changed_at: DateTime<Utc>,
}

impl From<Row> for Change {
    fn from(r: Row) -> Change {
        Change {
            position: Position {
                xid: r.xid,
                seq: r.seq,
            },
            message_id: r.message_id,
            user_number: r.user_number,
            status: r.status,
            changed_at: r.changed_at,
        }
    }
}

/// Up to `limit` changes after `after` (and at most `upto`, only of
/// `user_numbers`, when given), in position order, of transactions that
/// every later reader will see too: below the feed's horizon (V5). The
/// shared reader asks for everything after its position; a stream that
/// resumes behind it catches up to where it joined, its user numbers only.
pub async fn read(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    after: Position,
    upto: Option<Position>,
    user_numbers: Option<&[String]>,
    limit: i64,
) -> sqlx::Result<Vec<Change>> {
    let rows = sqlx::query_as!(
        Row,
        r#"
        select xid::text::bigint as "xid!", seq, message_id, user_number,
               status as "status: Status", changed_at
        from message_changes
        where channel_id = $1
          and (xid, seq) > ($2::text::xid8, $3)
          and ($4::text is null or (xid, seq) <= ($4::text::xid8, $5))
          and ($6::text[] is null or user_number = any($6))
          and xid < (select koostatus_feed_horizon())
        order by xid, seq
        limit $7
        "#,
        channel_id,
        after.xid.to_string(),
        after.seq,
        upto.map(|p| p.xid.to_string()),
        upto.map_or(0, |p| p.seq),
        user_numbers as Option<&[String]>,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Change::from).collect())
}

/// Whether committed changes after `after` exist, readable or not yet (held
/// back by an older running transaction, see [`read`]).
pub async fn any_after(
    db: impl PgExecutor<'_>,
    channel_id: &str,
    after: Position,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"
        select exists (
            select 1 from message_changes
            where channel_id = $1 and (xid, seq) > ($2::text::xid8, $3)
        ) as "any!"
        "#,
        channel_id,
        after.xid.to_string(),
        after.seq
    )
    .fetch_one(db)
    .await
}

/// The position of the channel's latest change that every reader sees: a
/// stream that starts "now" starts there.
pub async fn head(db: impl PgExecutor<'_>, channel_id: &str) -> sqlx::Result<Position> {
    let row = sqlx::query!(
        r#"
        select xid::text::bigint as "xid!", seq
        from message_changes
        where channel_id = $1 and xid < (select koostatus_feed_horizon())
        order by xid desc, seq desc
        limit 1
        "#,
        channel_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map_or(Position::default(), |r| Position {
        xid: r.xid,
        seq: r.seq,
    }))
}

/// A connection of its own, outside `pool` so that it takes none of the
/// connections requests need, receiving the feed's notifications
/// (`koostatus_changes`, payload: the channel id).
pub async fn listener(pool: &sqlx::PgPool) -> sqlx::Result<PgListener> {
    // The pool's acquire timeout, not sqlx's 30 s: a dead host refuses and
    // is retried until then, and after a failover the caller must try the
    // pool's new host soon.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = PgListener::connect_with(&own).await?;
    listener.listen("koostatus_changes").await?;
    Ok(listener)
}

/// Notifies every listener (see [`listener`]) that these channels' feeds
/// have news, in one statement (db/announcer.rs decides when).
pub async fn notify(db: impl PgExecutor<'_>, channels: &[String]) -> sqlx::Result<()> {
    sqlx::query!(
        r#"select count(pg_notify('koostatus_changes', c)::text) as "n!"
           from unnest($1::text[]) as c"#,
        channels
    )
    .fetch_one(db)
    .await?;
    Ok(())
}
