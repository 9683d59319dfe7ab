//! The lag gauges of a subscription: the age of its oldest undelivered
//! change and how many changes wait.

use std::time::Instant;

use chrono::Utc;

use super::super::RENEW_EVERY;
use super::Task;
use super::progress::InFlight;
use crate::db::changes::Position;
use crate::db::forwarding;

/// Lag in changes is counted up to this, at most every [`RENEW_EVERY`].
const LAG_COUNT_CAP: i64 = 1_000_000;

impl Task {
    /// Lag of a subscription with a delivery to make: the age of its oldest
    /// change, and how many follow the position (counted, at most every
    /// [`RENEW_EVERY`], when more may wait than were read).
    pub(super) async fn gauge_lag(
        &mut self,
        channel: &str,
        position: Position,
        flight: &InFlight,
        more: bool,
    ) -> anyhow::Result<()> {
        let labels = [("subscription", self.name.clone())];
        let seconds = (Utc::now() - flight.delivery.oldest).num_milliseconds() as f64 / 1000.0;
        metrics::gauge!("koostatus_forward_lag_seconds", &labels).set(seconds.max(0.0));
        if !more {
            let behind = flight.delivery.changes as f64;
            metrics::gauge!("koostatus_forward_lag_changes", &labels).set(behind);
        } else if self
            .lag_counted
            .is_none_or(|at| at.elapsed() >= RENEW_EVERY)
        {
            self.lag_counted = Some(Instant::now());
            let pool = self.context.db.pool();
            let changes = forwarding::lag(pool, channel, position, LAG_COUNT_CAP).await?;
            metrics::gauge!("koostatus_forward_lag_changes", &labels).set(changes as f64);
        }
        Ok(())
    }

    pub(super) fn gauge_caught_up(&self) {
        let labels = [("subscription", self.name.clone())];
        metrics::gauge!("koostatus_forward_lag_seconds", &labels).set(0.0);
        metrics::gauge!("koostatus_forward_lag_changes", &labels).set(0.0);
    }
}
