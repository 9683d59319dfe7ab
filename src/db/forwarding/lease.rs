//! The lease: exactly one instance delivers a subscription at a time, the
//! one whose name is in `lease_holder` until `lease_until`.

use std::time::Duration;

use sqlx::PgExecutor;

use super::interval;
use crate::db::changes::Position;

/// What a delivering instance needs of its subscription.
pub struct Subscription {
    pub channel_id: String,
    pub url: String,
    /// Encrypted (forward/secret.rs).
    pub secret: Vec<u8>,
    pub position: Position,
    /// The delivery in flight: its webhook-id and last change.
    pub pending: Option<(String, Position)>,
    pub attempts: i32,
    pub revision: i64,
    pub generation: i64,
}

/// Takes the lease of every enabled subscription that has none, or whose
/// lease ran out (its instance died): their names.
pub async fn claim(
    db: impl PgExecutor<'_>,
    holder: &str,
    lease: Duration,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"
        update forward_subscriptions
        set lease_holder = $1, lease_until = now() + $2
        where enabled and (lease_until is null or lease_until < now())
        returning name
        "#,
        holder,
        interval(lease)
    )
    .fetch_all(db)
    .await
}

/// Gives the lease up (shutdown, or a subscription disabled), so that
/// another instance need not wait for it to run out.
pub async fn release(db: impl PgExecutor<'_>, name: &str, holder: &str) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        update forward_subscriptions set lease_holder = null, lease_until = null
        where name = $1 and lease_holder = $2
        "#,
        name,
        holder
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Renews the lease and reads the subscription; None when it is not ours to
/// deliver any more (removed, disabled, or taken over).
pub async fn resume(
    db: impl PgExecutor<'_>,
    name: &str,
    holder: &str,
    lease: Duration,
) -> sqlx::Result<Option<Subscription>> {
    let row = sqlx::query!(
        r#"
        update forward_subscriptions
        set lease_until = now() + $3
        where name = $1 and lease_holder = $2 and enabled
        returning channel_id, url, secret,
                  position_xid::text::bigint as "xid!", position_seq,
                  pending_id, pending_xid::text::bigint as pending_xid, pending_seq,
                  attempts, revision, generation
        "#,
        name,
        holder,
        interval(lease)
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Subscription {
        channel_id: r.channel_id,
        url: r.url,
        secret: r.secret,
        position: Position {
            xid: r.xid,
            seq: r.position_seq,
        },
        pending: match (r.pending_id, r.pending_xid, r.pending_seq) {
            (Some(id), Some(xid), Some(seq)) => Some((id, Position { xid, seq })),
            _ => None,
        },
        attempts: r.attempts,
        revision: r.revision,
        generation: r.generation,
    }))
}
