//! One subscription's deliveries, by the instance holding its lease: read
//! what follows the position, record it as the delivery in flight, POST it
//! until a 2xx, move on. This file is the loop; beside it: `answer` (one
//! signed attempt and what the receiver said), `retry` (backoff),
//! `progress` (what is persisted: the delivery in flight, the position),
//! `waiting` (sleeping until news) and `lag` (the lag gauges).

mod answer;
mod lag;
mod progress;
mod retry;
mod waiting;

use progress::InFlight;
use retry::{RETRY_AFTER_ERROR, backoff};
use waiting::drain;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::batches::{Delivery, Row, Segment};
use super::secret;
use super::{Context, RENEW_EVERY, target};
use crate::db::forwarding::{self, Advanced};
use crate::live::Notice;

/// Once caught up, the next read waits at least this long after the last:
/// a busy channel commits far more often, and fewer, fuller deliveries
/// cost the receiver and the database less, for 25 ms of latency on
/// average.
const MIN_GAP: Duration = Duration::from_millis(50);
/// Full deliveries read from the feed at once.
const READ_AHEAD: usize = 10;
/// While delivering full deliveries, progress is written this often: a
/// crash sends what followed again, under the same webhook-ids.
const RECORD_EVERY: Duration = Duration::from_millis(250);

enum Ended {
    /// Removed, disabled or taken over meanwhile.
    NotOurs,
    /// Disabled by its failures.
    Disabled,
    Shutdown,
}

pub(super) async fn run(context: Arc<Context>, name: String, notices: broadcast::Receiver<Notice>) {
    let mut task = Task {
        context,
        name,
        notices,
        own: Segment::default(),
        lag_counted: None,
    };
    loop {
        let ended = match task.deliver().await {
            Ok(ended) => ended,
            Err(e) => {
                tracing::warn!(
                    subscription = task.name,
                    error = format!("{e:#}"),
                    "forwarding failed; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(RETRY_AFTER_ERROR) => continue,
                    () = task.context.shutdown.cancelled() => Ended::Shutdown,
                }
            }
        };
        // Given up even when not ours (disabled by the operator), so that
        // enabling it need not wait for the lease to run out.
        let (pool, holder) = (task.context.db.pool(), &task.context.holder);
        if let Err(e) = forwarding::release(pool, &task.name, holder).await {
            tracing::warn!(subscription = task.name, error = %e, "cannot give the lease up; it runs out by itself");
        }
        let why = match ended {
            Ended::NotOurs => "removed, disabled or taken over",
            Ended::Disabled => "disabled by its failures",
            Ended::Shutdown => "shutting down",
        };
        tracing::info!(subscription = task.name, why, "no longer delivering");
        let mut running = task.context.running.lock().expect("lock not poisoned");
        running.remove(&task.name);
        return;
    }
}

struct Task {
    context: Arc<Context>,
    name: String,
    notices: broadcast::Receiver<Notice>,
    /// What this subscription read while behind the channel's shared
    /// segment.
    own: Segment,
    /// When the lag in changes was last counted.
    lag_counted: Option<Instant>,
}

impl Task {
    /// Delivers until the subscription is not ours any more, or shutdown;
    /// a database error ends it early (the caller starts it again, from
    /// what the database holds).
    ///
    /// Two kinds of delivery. A full one (`forward.batch_max` changes) read
    /// from the feed is fixed by where it starts: the feed below its
    /// horizon never gains a change between two it has (V3), so whoever
    /// reads after that position, now or after a crash, gets the same
    /// changes; its webhook-id is made from them ([`Secret::batch_id`]),
    /// and nothing need be written before sending it. Several are read at
    /// once, and progress is written at most every [`RECORD_EVERY`]: after
    /// a crash, what followed the last record is sent again under the same
    /// ids. A shorter one (caught up) could grow if read again, so it is
    /// recorded as the delivery in flight, under an id of its own, before
    /// its first attempt; so is a full one that fails.
    async fn deliver(&mut self) -> anyhow::Result<Ended> {
        let context = self.context.clone();
        let (pool, holder, lease) = (context.db.pool(), &context.holder, context.lease());
        let batch_max = context.config.batch_max.get() as usize;
        let name = self.name.clone();
        let name = name.as_str();
        'resume: loop {
            let renewing = Instant::now();
            let Some(sub) = forwarding::resume(pool, name, holder, lease).await? else {
                return Ok(Ended::NotOurs);
            };
            let mut renewed = renewing;
            let secret = context.key.decrypt(name, &sub.secret)?;
            let url = target::parse(&sub.url).map_err(anyhow::Error::msg)?;
            let channel = sub.channel_id.as_str();
            // Delivered up to here; `recorded` when the database says so
            // too; `done`: the recorded delivery in flight that a 2xx
            // answered since.
            let mut position = sub.position;
            let (mut recorded, mut done) = (true, None::<String>);
            let mut in_flight = None;
            if let Some((id, upto)) = sub.pending.clone() {
                let changes = forwarding::pending_changes(pool, channel, position, upto).await?;
                match Delivery::of_changes(channel, changes) {
                    Some(delivery) => in_flight = Some(InFlight::new(id, delivery, true)),
                    // Pruned meanwhile (retention): nothing left to send.
                    None => (position, done) = (upto, Some(id)),
                }
            }
            let mut attempts = sub.attempts;
            // When a read of the feed last came back with less than it
            // asked for: the head.
            let mut head_read: Option<Instant> = None;
            let mut waited = false;
            // Writes progress and renews the lease, or starts again from
            // the database when the subscription changed under us.
            macro_rules! record {
                () => {{
                    let recording = Instant::now();
                    let advanced = self.advance(&sub, done.as_deref(), position, "", 0);
                    match advanced.await? {
                        Advanced::Changed => continue 'resume,
                        Advanced::Next(_) => (recorded, done, renewed) = (true, None, recording),
                    }
                }};
            }
            loop {
                let flight = match in_flight.take() {
                    Some(flight) => flight,
                    None => 'next: loop {
                        // What was read already, by any subscription of
                        // the channel or by this one.
                        let (rows, end) = context
                            .segments
                            .take(channel, position, batch_max)
                            .or_else(|| self.own.take(position, batch_max))
                            .unwrap_or((Vec::new(), position));
                        if rows.len() == batch_max {
                            let delivery = Delivery::new(channel, &rows).expect("a full delivery");
                            let id = secret.batch_id(sub.generation, position, delivery.last);
                            let flight = InFlight::new(id, delivery, false);
                            self.gauge_lag(channel, position, &flight, true).await?;
                            break 'next flight;
                        }
                        // The last read reached the head, or another
                        // subscription of the channel is reading there: let
                        // the next read gather for a moment, once progress
                        // is written.
                        // (Another's read is waited for once: a channel
                        // with many subscriptions must not defer each one's
                        // own read again and again.)
                        let others = match waited {
                            false => context.segments.read_at(channel, end),
                            true => None,
                        };
                        if let Some(at) = head_read.max(others)
                            && at.elapsed() < MIN_GAP
                        {
                            if !recorded || done.is_some() {
                                record!();
                            }
                            if self.sleep_until(at + MIN_GAP).await {
                                return Ok(Ended::Shutdown);
                            }
                            waited = true;
                            continue 'next;
                        }
                        waited = false;
                        drain(&mut self.notices);
                        context.segments.reading(channel, end);
                        let want = READ_AHEAD * batch_max;
                        let read = forwarding::read(pool, channel, end, want as i64).await?;
                        let at_head = read.len() < want;
                        head_read = at_head.then(Instant::now);
                        let read_len = read.len();
                        let read: Vec<Row> = read.into_iter().map(Row::from).collect();
                        if !context.segments.add(channel, end, &read) {
                            self.own.add(end, read);
                        }
                        if !at_head || rows.len() + read_len >= batch_max {
                            continue 'next;
                        }
                        // Fewer than a full delivery exist: it could grow if
                        // read again, so it is recorded first, under an id
                        // of its own.
                        let next_id = secret::delivery_id();
                        let recording = Instant::now();
                        let limit = batch_max as i64;
                        let advanced =
                            self.advance(&sub, done.as_deref(), position, &next_id, limit);
                        let Advanced::Next(changes) = advanced.await? else {
                            continue 'resume;
                        };
                        (recorded, done, renewed) = (true, None, recording);
                        match Delivery::of_changes(channel, changes) {
                            Some(delivery) => {
                                let flight = InFlight::new(next_id, delivery, true);
                                self.gauge_lag(channel, position, &flight, false).await?;
                                break 'next flight;
                            }
                            None => {
                                self.gauge_caught_up();
                                match self.wait_for_news(channel, position, renewed).await? {
                                    Some(ended) => return Ok(ended),
                                    None => continue 'next,
                                }
                            }
                        }
                    },
                };
                // Start a POST only while the lease outlasts it.
                if renewed.elapsed() + context.config.timeout + Duration::from_secs(2) > lease {
                    record!();
                }
                let attempt = tokio::select! {
                    attempt = self.post(&url, &secret, &flight) => attempt,
                    () = context.shutdown.cancelled() => return Ok(Ended::Shutdown),
                };
                let labels = [("subscription", name.to_owned())];
                match attempt {
                    Ok(()) => {
                        metrics::counter!("koostatus_forward_deliveries_total", "subscription" => name.to_owned(), "outcome" => "delivered").increment(1);
                        metrics::counter!("koostatus_forward_changes_total", &labels)
                            .increment(flight.delivery.changes as u64);
                        metrics::gauge!("koostatus_forward_failed_attempts", &labels).set(0.0);
                        (position, attempts) = (flight.delivery.last, 0);
                        if flight.recorded {
                            done = Some(flight.id);
                        } else {
                            recorded = false;
                        }
                        if renewed.elapsed() >= RECORD_EVERY {
                            record!();
                        }
                    }
                    Err(failure) => {
                        metrics::counter!("koostatus_forward_deliveries_total", "subscription" => name.to_owned(), "outcome" => failure.outcome).increment(1);
                        attempts += 1;
                        metrics::gauge!("koostatus_forward_failed_attempts", &labels)
                            .set(f64::from(attempts));
                        tracing::warn!(
                            subscription = name,
                            webhook_id = flight.id,
                            attempts,
                            error = failure.error,
                            "delivery failed; will retry"
                        );
                        if !flight.recorded {
                            // Recorded under its own id, with what was
                            // delivered before it: retries, a take-over and
                            // `forward list` go by the database.
                            let (id, limit) = (&flight.id, batch_max as i64);
                            let advanced = self.advance(&sub, done.as_deref(), position, id, limit);
                            match advanced.await? {
                                Advanced::Next(c)
                                    if c.last().map(|c| c.position)
                                        == Some(flight.delivery.last) =>
                                {
                                    (recorded, done) = (true, None);
                                }
                                // Not the same changes (pruned meanwhile):
                                // start from what the database holds.
                                _ => continue 'resume,
                            }
                        }
                        let recording = Instant::now();
                        let failed = forwarding::failed(
                            pool,
                            name,
                            holder,
                            lease,
                            &flight.id,
                            &failure.error,
                            context.config.disable_after,
                        );
                        match failed.await? {
                            None => continue 'resume,
                            Some(false) => {
                                tracing::error!(
                                    subscription = name,
                                    "disabled: every delivery failed for forward.disable_after"
                                );
                                return Ok(Ended::Disabled);
                            }
                            Some(true) => renewed = recording,
                        }
                        // Wait the backoff out, renewing the lease; an
                        // operator's change (replay, enable) ends the wait.
                        let until = Instant::now() + backoff(attempts);
                        while Instant::now() < until {
                            let step = until.min(Instant::now() + RENEW_EVERY);
                            if self.sleep_until(step).await {
                                return Ok(Ended::Shutdown);
                            }
                            if Instant::now() >= until {
                                break;
                            }
                            let renewing = Instant::now();
                            match forwarding::resume(pool, name, holder, lease).await? {
                                None => return Ok(Ended::NotOurs),
                                Some(now) if now.revision != sub.revision => continue 'resume,
                                Some(_) => renewed = renewing,
                            }
                        }
                        in_flight = Some(InFlight {
                            recorded: true,
                            ..flight
                        });
                    }
                }
            }
        }
    }
}
