//! The state a delivery persists: the delivery in flight (recorded before
//! its first attempt when it could change if read again) and the
//! subscription's position, moved past each delivery the receiver took.

use crate::db::changes::Position;
use crate::db::forwarding::{self, Advanced};

use super::super::batches::Delivery;
use super::Task;

/// A delivery being made: sent until a 2xx.
pub(super) struct InFlight {
    pub(super) id: String,
    pub(super) delivery: Delivery,
    /// Recorded in the database as the delivery in flight.
    pub(super) recorded: bool,
}

impl InFlight {
    pub(super) fn new(id: String, delivery: Delivery, recorded: bool) -> InFlight {
        InFlight {
            id,
            delivery,
            recorded,
        }
    }
}

impl Task {
    /// [`forwarding::advance`] of this task's subscription, as `sub` was
    /// read.
    pub(super) async fn advance(
        &self,
        sub: &forwarding::Subscription,
        done: Option<&str>,
        position: Position,
        next_id: &str,
        limit: i64,
    ) -> sqlx::Result<Advanced> {
        let context = &self.context;
        let pool = context.db.pool();
        let (name, holder, lease) = (&self.name, &context.holder, context.lease());
        forwarding::advance(
            pool,
            name,
            holder,
            lease,
            sub.revision,
            &sub.channel_id,
            done,
            position,
            next_id,
            limit,
        )
        .await
    }
}
