//! Messages that never got a report (SPEC §13): the sweep that turns those
//! still `sent` after `reports.unreported_after` into `unreported`, and the
//! age of each channel's last report, for operators' alerts.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::ReportsConfig;
use crate::db;
use crate::domain::ChannelId;

/// Messages changed per statement: small enough that the rows it locks are
/// held for a few milliseconds only, large enough to keep up with any
/// sending rate (measured in benches/ingest.rs).
const SWEEP_BATCH: i64 = 1000;

/// Sweeps every `sweep_interval` until `shutdown`. Runs on every instance:
/// the statement skips rows another holds and re-checks the status, so a
/// message becomes `unreported` once whatever the number of instances.
pub async fn sweep_every(pool: PgPool, config: ReportsConfig, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(config.sweep_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = sweep_once(&pool, config.unreported_after, &shutdown).await {
            // The database's state (an outage, a failover): the next tick
            // tries again; nothing is lost, the messages are still `sent`.
            tracing::warn!(error = %e, "the sweep for unreported messages failed; retrying");
        }
    }
}

/// One pass over every channel, each until nothing more is due; returns
/// the messages changed. Within a channel each batch continues after the
/// last message the one before looked at, so a pass reads each waiting
/// message once (rows skipped because a callback held them are taken by the
/// next pass, if still `sent`).
pub async fn sweep_once(
    pool: &PgPool,
    unreported_after: Duration,
    shutdown: &CancellationToken,
) -> sqlx::Result<i64> {
    let mut changed = 0;
    for (channel, own) in db::unreported::channel_deadlines(pool).await? {
        let after = TimeDelta::from_std(own.unwrap_or(unreported_after)).unwrap_or(TimeDelta::MAX);
        let mut last = None;
        loop {
            let now = Utc::now();
            let Some(sent_before) = now.checked_sub_signed(after) else {
                break;
            };
            let started = std::time::Instant::now();
            let swept =
                db::unreported::sweep(pool, &channel, sent_before, now, last.as_ref(), SWEEP_BATCH)
                    .await?;
            changed += swept.changed;
            if swept.changed > 0 {
                metrics::counter!("koostatus_messages_became_unreported_total", "channel" => channel.clone())
                    .increment(swept.changed as u64);
            }
            last = swept.last;
            if last.is_none() || shutdown.is_cancelled() {
                break;
            }
            // A backlog (an outage of KooMessage, a lowered
            // unreported_after) must not take the database from the
            // callbacks: between batches the sweep rests half as long as
            // the batch took, so it uses at most two thirds of one
            // connection's time.
            tokio::time::sleep(started.elapsed() / 2).await;
        }
    }
    Ok(changed)
}

/// When this instance last accepted a report, per channel (Unix
/// milliseconds), seeded at start-up from the newest report in each
/// channel's feed. Per instance: with several instances behind a load
/// balancer each sees its share of the callbacks, so the freshest of them
/// (the minimum age) is the channel's.
#[derive(Default)]
pub struct LastReports {
    channels: RwLock<HashMap<String, AtomicI64>>,
}

impl LastReports {
    /// On every accepted report: a shared lock and an atomic store, except
    /// the first time a channel is seen.
    pub fn record(&self, channel: &ChannelId) {
        self.record_at(channel.as_str(), Utc::now());
    }

    fn record_at(&self, channel: &str, at: DateTime<Utc>) {
        let millis = at.timestamp_millis();
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
