//! One subscription's deliveries, by the instance holding its lease: read
//! what follows the position, record it as the delivery in flight, POST it
//! until a 2xx, move on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::Url;
use tokio::sync::broadcast::{self, error::RecvError};

use super::batches::{Delivery, Row, Segment};
use super::secret::{self, Secret};
use super::{Context, RENEW_EVERY, target};
use crate::db::changes::Position;
use crate::db::forwarding::{self, Advanced, News};
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
/// Changes committed but still behind an older running transaction (the
/// feed's horizon): look again this soon, as that transaction's end may
/// notify nobody.
const HELD_BACK_RETRY: Duration = Duration::from_millis(100);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Answers larger than this are not read (the connection is dropped).
const MAX_ANSWER: u64 = 64 * 1024;
/// Lag in changes is counted up to this, at most every [`RENEW_EVERY`].
const LAG_COUNT_CAP: i64 = 1_000_000;

/// A delivery being made: sent until a 2xx.
struct InFlight {
    id: String,
    delivery: Delivery,
    /// Recorded in the database as the delivery in flight.
    recorded: bool,
}

impl InFlight {
    fn new(id: String, delivery: Delivery, recorded: bool) -> InFlight {
        InFlight {
            id,
            delivery,
            recorded,
        }
    }
}

enum Ended {
    /// Removed, disabled or taken over meanwhile.
    NotOurs,
    /// Disabled by its failures.
    Disabled,
    Shutdown,
}

/// Why an attempt failed: a metrics outcome and a sentence for `forward
/// list`.
struct Failure {
    outcome: &'static str,
    error: String,
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

    /// [`forwarding::advance`] of this task's subscription, as `sub` was
    /// read.
    async fn advance(
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

    /// One attempt: signed now (each attempt has its own timestamp, under
    /// the delivery's webhook-id), answered within `forward.timeout`.
    async fn post(&self, url: &Url, secret: &Secret, flight: &InFlight) -> Result<(), Failure> {
        let config = &self.context.config;
        // An address in the URL is not resolved, so the resolver's check
        // does not see it.
        if let Some(ip) = literal_ip(url)
            && !config.allow_private_targets
            && !target::is_public(ip)
        {
            return Err(Failure {
                outcome: "refused",
                error: format!("{ip} is a loopback, private, link-local or multicast address"),
            });
        }
        let timestamp = Utc::now().timestamp();
        let request = self
            .context
            .client
            .post(url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &flight.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                secret.sign(&flight.id, timestamp, &flight.delivery.body),
            )
            .body(flight.delivery.body.clone());
        let answer = async {
            let mut response = request.send().await?;
            let status = response.status();
            // Read (a bounded part of) the answer, so that the connection
            // can serve the next delivery.
            let mut start = Vec::new();
            if response.content_length().is_none_or(|n| n <= MAX_ANSWER) {
                let mut read = 0;
                while let Some(chunk) = response.chunk().await.unwrap_or(None) {
                    read += chunk.len() as u64;
                    if start.len() < 200 {
                        start.extend_from_slice(&chunk[..chunk.len().min(200)]);
                    }
                    if read > MAX_ANSWER {
                        break;
                    }
                }
            }
            Ok::<_, reqwest::Error>((status, response.headers().clone(), start))
        };
        let (status, headers, start) = match tokio::time::timeout(config.timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(Failure::from(e)),
            Err(_) => return Err(timed_out(config.timeout)),
        };
        if status.is_success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&start)
            .chars()
            .take(100)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>();
        let error = if status.is_redirection() {
            let to = headers
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or("nowhere");
            format!("HTTP {status}: a redirect to {to}, not followed")
        } else if said.trim().is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {}", said.trim())
        };
        Err(Failure {
            outcome: "rejected",
            error,
        })
    }

    /// Waits until the channel has readable news, the lease needs renewing,
    /// or shutdown (Some).
    async fn wait_for_news(
        &mut self,
        channel: &str,
        position: Position,
        renewed: Instant,
    ) -> anyhow::Result<Option<Ended>> {
        let renew_at = tokio::time::Instant::from_std(renewed + RENEW_EVERY);
        // Look first: the read that found nothing may have found changes
        // held back by an older running transaction, whose end may notify
        // nobody (a transaction of another channel, or one that wrote no
        // change).
        let mut look_again = Some(tokio::time::Instant::now());
        loop {
            let look = async {
                match look_again {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                notice = self.notices.recv() => match notice {
                    Ok(Some(c)) if &*c != channel => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    // The hub is gone (shutting down): the timers remain.
                    Err(RecvError::Closed) => {
                        tokio::time::sleep_until(renew_at).await;
                        return Ok(None);
                    }
                },
                () = look => {}
                () = tokio::time::sleep_until(renew_at) => return Ok(None),
                () = self.context.shutdown.cancelled() => return Ok(Some(Ended::Shutdown)),
            }
            look_again = None;
            match forwarding::news(self.context.db.pool(), channel, position).await? {
                News::Readable => return Ok(None),
                News::HeldBack => {
                    look_again = Some(tokio::time::Instant::now() + HELD_BACK_RETRY);
                }
                News::None => {}
            }
        }
    }

    /// True when shutdown came first.
    async fn sleep_until(&self, at: Instant) -> bool {
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => false,
            () = self.context.shutdown.cancelled() => true,
        }
    }

    /// Lag of a subscription with a delivery to make: the age of its oldest
    /// change, and how many follow the position (counted, at most every
    /// [`RENEW_EVERY`], when more may wait than were read).
    async fn gauge_lag(
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

    fn gauge_caught_up(&self) {
        let labels = [("subscription", self.name.clone())];
        metrics::gauge!("koostatus_forward_lag_seconds", &labels).set(0.0);
        metrics::gauge!("koostatus_forward_lag_changes", &labels).set(0.0);
    }
}

/// Notices that came before a read are answered by it.
fn drain(notices: &mut broadcast::Receiver<Notice>) {
    while !matches!(
        notices.try_recv(),
        Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
    ) {}
}

/// Exponential from 1 s, doubling per failed attempt up to 5 min, each wait
/// between half and all of that (jitter: receivers coming back are not hit
/// by every sender at once).
fn backoff(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    let full = (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF);
    let mut random = [0u8; 2];
    getrandom::getrandom(&mut random).expect("the OS random source works");
    let fraction = 0.5 + f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX) / 2.0;
    full.mul_f64(fraction).max(FIRST_BACKOFF)
}

fn literal_ip(url: &Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(v4.into()),
        url::Host::Ipv6(v6) => Some(v6.into()),
        url::Host::Domain(_) => None,
    }
}

fn timed_out(after: Duration) -> Failure {
    Failure {
        outcome: "timeout",
        error: format!(
            "no answer within {} (forward.timeout)",
            humantime::format_duration(after)
        ),
    }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Failure {
        let timeout = e.is_timeout();
        let e = e.without_url();
        let mut chain: Vec<String> = vec![e.to_string()];
        let mut refused = false;
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            refused |= s.is::<target::Refused>();
            chain.push(s.to_string());
            source = s.source();
        }
        chain.dedup();
        let outcome = if refused {
            "refused"
        } else if timeout {
            "timeout"
        } else {
            "unreachable"
        };
        Failure {
            outcome,
            error: chain.join(": "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes_with_jitter() {
        for _ in 0..100 {
            assert_eq!(backoff(1), FIRST_BACKOFF);
            let third = backoff(3);
            assert!((Duration::from_secs(2)..=Duration::from_secs(4)).contains(&third));
            let late = backoff(40);
            assert!((Duration::from_secs(150)..=MAX_BACKOFF).contains(&late));
        }
    }
}
