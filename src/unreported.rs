//! Messages that never got a report (SPEC §13): the sweep that turns those
//! still `sent` after `reports.unreported_after` into `unreported`, and the
//! age of each channel's last report, for operators' alerts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::ReportsConfig;
use crate::db;
use crate::db::announcer::Announcer;
use crate::domain::ChannelId;

/// Messages changed per statement and part: the rows it locks are held for
/// one statement (about 80 ms at full speed), and each statement's commit
/// and round trips are shared by 2,000 messages (before V15, alternating
/// in one session: 2,000 swept 49,200 to 50,700 messages/s, 1,000 45,100
/// to 49,100; docs/performance.md).
const SWEEP_BATCH: i64 = 2000;

/// Parts of a channel swept at once: one per core of the database
/// machine this was measured on (docs/performance.md).
const SWEEP_PARTS: i32 = 2;

/// A report accepted this recently means callbacks are flowing, and the
/// sweep leaves the database room for them.
const CALLBACKS_RECENT: Duration = Duration::from_secs(1);

/// Sweeps every `sweep_interval` until `shutdown`. Runs on every instance:
/// the statement skips rows another holds and re-checks the status, so a
/// message becomes `unreported` once whatever the number of instances.
pub async fn sweep_every(
    pool: PgPool,
    announcer: Announcer,
    config: ReportsConfig,
    reports: Arc<LastReports>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(config.sweep_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = sweep_once(
            &pool,
            &announcer,
            config.unreported_after,
            &reports,
            &shutdown,
        )
        .await
        {
            // The database's state (an outage, a failover): the next tick
            // tries again; nothing is lost, the messages are still `sent`.
            tracing::warn!(error = %e, "the sweep for unreported messages failed; retrying");
        }
    }
}

/// One pass over every channel, each until nothing more is due; returns
/// the messages changed. A channel is swept in [`SWEEP_PARTS`] disjoint
/// parts at once, each on its own connection, so that a backlog uses both
/// the database's cores. Within a part each batch continues after the last
/// message the one before looked at, so a pass reads each waiting message
/// once (rows skipped because a callback held them are taken by the next
/// pass, if still `sent`).
pub async fn sweep_once(
    pool: &PgPool,
    announcer: &Announcer,
    unreported_after: Duration,
    reports: &LastReports,
    shutdown: &CancellationToken,
) -> sqlx::Result<i64> {
    let mut changed = 0;
    for (channel, own) in db::unreported::channel_deadlines(pool).await? {
        let after = TimeDelta::from_std(own.unwrap_or(unreported_after)).unwrap_or(TimeDelta::MAX);
        let parts = (0..SWEEP_PARTS)
            .map(|part| sweep_part(pool, announcer, &channel, after, part, reports, shutdown));
        changed += futures_util::future::try_join_all(parts)
            .await?
            .iter()
            .sum::<i64>();
    }
    Ok(changed)
}

/// Sweeps one part of a channel until nothing more is due in it.
async fn sweep_part(
    pool: &PgPool,
    announcer: &Announcer,
    channel: &str,
    after: TimeDelta,
    part: i32,
    reports: &LastReports,
    shutdown: &CancellationToken,
) -> sqlx::Result<i64> {
    let (mut changed, mut last) = (0, None);
    loop {
        let now = Utc::now();
        let Some(sent_before) = now.checked_sub_signed(after) else {
            return Ok(changed);
        };
        let range = db::unreported::SweepRange {
            channel_id: channel,
            sent_before,
            after: last.as_ref(),
            part,
            parts: SWEEP_PARTS,
        };
        let started = std::time::Instant::now();
        let swept = db::unreported::sweep(pool, &range, now, SWEEP_BATCH).await?;
        changed += swept.changed;
        if swept.changed > 0 {
            announcer.mark(channel);
            metrics::counter!("koostatus_messages_became_unreported_total", "channel" => channel.to_owned())
                .increment(swept.changed as u64);
        }
        last = swept.last;
        if last.is_none() || shutdown.is_cancelled() {
            return Ok(changed);
        }
        // A backlog (an outage of KooMessage, a lowered unreported_after)
        // must not take the database from the callbacks: while this
        // instance is taking reports, each part rests after a batch so
        // that together they use at most two thirds of one connection's
        // time, as one part resting half its batch's time would. Without
        // reports they go on at once.
        if reports.busy(CALLBACKS_RECENT) {
            let rest = started
                .elapsed()
                .mul_f64(1.5 * f64::from(SWEEP_PARTS) - 1.0);
            tokio::time::sleep(rest).await;
        }
    }
}

/// When this instance last accepted a report, per channel (Unix
/// milliseconds), seeded at start-up from the newest report in each
/// channel's feed. Per instance: with several instances behind a load
/// balancer each sees its share of the callbacks, so the freshest of them
/// (the minimum age) is the channel's.
#[derive(Default)]
pub struct LastReports {
    channels: RwLock<HashMap<String, AtomicI64>>,
    /// The newest of them, any channel.
    newest: AtomicI64,
}

impl LastReports {
    /// On every accepted report: a shared lock and an atomic store, except
    /// the first time a channel is seen.
    pub fn record(&self, channel: &ChannelId) {
        self.record_at(channel.as_str(), Utc::now());
    }

    fn record_at(&self, channel: &str, at: DateTime<Utc>) {
        let millis = at.timestamp_millis();
        self.newest.fetch_max(millis, Ordering::Relaxed);
        if let Some(last) = self.channels.read().expect("not poisoned").get(channel) {
            last.fetch_max(millis, Ordering::Relaxed);
            return;
        }
        self.channels
            .write()
            .expect("not poisoned")
            .entry(channel.to_owned())
            .or_insert_with(|| AtomicI64::new(millis))
            .fetch_max(millis, Ordering::Relaxed);
    }

    /// Whether this instance accepted a report in the last `within`.
    pub fn busy(&self, within: Duration) -> bool {
        let age = Utc::now().timestamp_millis() - self.newest.load(Ordering::Relaxed);
        age < i64::try_from(within.as_millis()).unwrap_or(i64::MAX)
    }

    /// Seconds since each channel's last report.
    pub fn ages(&self, now: DateTime<Utc>) -> Vec<(String, f64)> {
        let now = now.timestamp_millis();
        self.channels
            .read()
            .expect("not poisoned")
            .iter()
            .map(|(channel, last)| {
                let age = (now - last.load(Ordering::Relaxed)).max(0);
                (channel.clone(), age as f64 / 1000.0)
            })
            .collect()
    }

    /// Takes the newest report of each channel's feed, so that a channel
    /// that stopped calling before this instance started shows its true age.
    pub async fn seed(&self, pool: &PgPool) {
        match db::unreported::last_reports(pool).await {
            Ok(rows) => rows
                .into_iter()
                .for_each(|(channel, at)| self.record_at(&channel, at)),
            Err(e) => tracing::warn!(error = %e, "cannot read the channels' last reports"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_only_right_after_a_report() {
        let last = LastReports::default();
        assert!(!last.busy(Duration::from_secs(1)), "no report yet");
        last.record_at("a", Utc::now() - TimeDelta::seconds(5));
        assert!(!last.busy(Duration::from_secs(1)));
        last.record_at("b", Utc::now());
        assert!(last.busy(Duration::from_secs(1)));
    }

    #[test]
    fn the_newest_report_wins() {
        let last = LastReports::default();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        last.record_at("a", t("2026-12-01T10:00:10Z"));
        last.record_at("a", t("2026-12-01T10:00:00Z"));
        last.record_at("b", t("2026-12-01T09:00:00Z"));
        let mut ages = last.ages(t("2026-12-01T10:00:20Z"));
        ages.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(ages, vec![("a".into(), 10.0), ("b".into(), 3620.0)]);
    }
}
