//! A subscription's progress: the delivery in flight (recorded before its
//! first attempt) and the position, moved past each delivery taken, in one
//! statement with the next delivery; and the failures of an attempt.

use std::time::Duration;

use sqlx::PgExecutor;

use super::interval;
use crate::db::changes::{Change, Position, Row as ChangeRow};

/// What [`advance`] found.
pub enum Advanced {
    /// The subscription is no longer ours as we knew it (removed, disabled,
    /// replayed, or its lease lost): read it again with [`resume`]. A
    /// success given was recorded unless the lease was lost or a replay
    /// came between.
    Changed,
    /// The next delivery, recorded as in flight; empty when caught up.
    Next(Vec<Change>),
}

/// The progress statement of a delivering instance: the subscription moves
/// to `position` (past the recorded delivery `done`, which a 2xx answered,
/// when given), the next up to
/// `limit` changes after it are read from the feed below its horizon and
/// recorded as the delivery `next_id` in flight, and the lease is renewed;
/// all in one statement.
///
/// A success is recorded as long as the delivery is still the one in
/// flight (a replay clears it); the next one is taken only if the
/// subscription is still enabled and as the instance knew it (`revision`).
#[allow(clippy::too_many_arguments)]
pub async fn advance(
    db: impl PgExecutor<'_>,
    name: &str,
    holder: &str,
    lease: Duration,
    revision: i64,
    channel_id: &str,
    done: Option<&str>,
    position: Position,
    next_id: &str,
    limit: i64,
) -> sqlx::Result<Advanced> {
    let rows = sqlx::query!(
        r#"
        with next as (
            select xid, seq, message_id, user_number, status, changed_at
            from message_changes
            where channel_id = $6 and (xid, seq) > ($7::text::xid8, $8)
              and xid < (select koostatus_feed_horizon())
            order by xid, seq
            limit $10
        ), last as (
            select xid, seq from next order by xid desc, seq desc limit 1
        ), moved as (
            update forward_subscriptions
            set position_xid = $7::text::xid8, position_seq = $8,
                pending_id = case when enabled and revision = $4 and exists (select 1 from last)
                                  then $9 end,
                pending_xid = case when enabled and revision = $4 then (select xid from last) end,
                pending_seq = case when enabled and revision = $4 then (select seq from last) end,
                failing_since = case when $5::text is null then failing_since end,
                attempts = case when $5::text is null then attempts else 0 end,
                last_error = case when $5::text is null then last_error end,
                delivered_at = case when $5::text is null then delivered_at else now() end,
                lease_until = now() + $3
            where name = $1 and lease_holder = $2
              and pending_id is not distinct from $5
              and ((enabled and revision = $4) or $5::text is not null)
            returning enabled and revision = $4 as current
        )
        select m.current as "current!", n.xid::text::bigint as xid, n.seq as "seq?",
               n.message_id as "message_id?", n.user_number as "user_number?",
               n.status as "status?: crate::domain::Status", n.changed_at as "changed_at?"
        from moved m left join next n on true
        order by n.xid, n.seq
        "#,
        name,
        holder,
        interval(lease),
        revision,
        done,
        channel_id,
        position.xid.to_string(),
        position.seq,
        next_id,
        limit
    )
    .fetch_all(db)
    .await?;
    if rows.first().is_none_or(|r| !r.current) {
        return Ok(Advanced::Changed);
    }
    Ok(Advanced::Next(
        rows.into_iter()
            .filter_map(|r| {
                Some(Change::from(ChangeRow {
                    xid: r.xid?,
                    seq: r.seq?,
                    message_id: r.message_id?,
                    user_number: r.user_number?,
                    status: r.status?,
                    changed_at: r.changed_at?,
                }))
            })
            .collect(),
    ))
}

/// Records a failed attempt of the delivery `pending_id`, disabling the
/// subscription once it has failed for `disable_after` without a success.
/// None when the subscription is no longer ours as we knew it; else whether
/// it is still enabled.
pub async fn failed(
    db: impl PgExecutor<'_>,
    name: &str,
    holder: &str,
    lease: Duration,
    pending_id: &str,
    error: &str,
    disable_after: Duration,
) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar!(
        r#"
        update forward_subscriptions
        set attempts = attempts + 1,
            failing_since = coalesce(failing_since, now()),
            last_error = $5,
            enabled = coalesce(failing_since, now()) > (now() - $6::interval),
            disabled_reason = case when coalesce(failing_since, now()) > (now() - $6::interval) then null
                else 'failing since ' || to_char(failing_since at time zone 'UTC',
                                                 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                     || ': ' || $5 end,
            lease_until = now() + $3
        where name = $1 and lease_holder = $2 and enabled and pending_id = $4
        returning enabled
        "#,
        name,
        holder,
        interval(lease),
        pending_id,
        error,
        interval(disable_after)
    )
    .fetch_optional(db)
    .await
}
