//! One `/events` stream: first the changes between its start and the point
//! where it joined the shared flow (read from the feed, only its user
//! numbers), then the shared flow; heartbeats while idle; it ends on
//! shutdown, when its token is revoked, or when it fell too far behind.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{Bytes, BytesMut};
use tokio::time::Instant;

use super::reader::Subscription;
use super::{Delivery, Event};
use crate::db::Db;
use crate::db::changes::Position;

/// Changes read per catch-up query.
const CATCH_UP_PAGE: i64 = 500;

pub struct Stream {
    pub db: Db,
    pub channel: String,
    pub user_numbers: Option<Arc<[String]>>,
    pub subscription: Subscription,
    /// The last change sent (or the start).
    pub position: Position,
    pub heartbeat: Duration,
}

/// A running stream's own state.
pub struct Running {
    s: Stream,
    catching_up: bool,
    // Made once and kept: ten thousand streams must not register with the
    // timer wheel again on every event. A stream waits on its own
    // deliveries and this timer only, nothing shared with other streams:
    // shutdown and revocation reach it through its flow.
    heartbeat: Pin<Box<tokio::time::Sleep>>,
    _open: Subscribed,
}

impl Stream {
    pub fn start(self) -> Running {
        Running {
            catching_up: self.position < self.subscription.joined_at,
            heartbeat: Box::pin(tokio::time::sleep(self.heartbeat)),
            s: self,
            _open: Subscribed::new(),
        }
    }
}

impl Running {
    /// The next piece of the stream; None ends it. The client reconnects
    /// with `Last-Event-ID` and loses nothing.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.s.subscription.is_cut() {
                return None;
            }
            if self.catching_up {
                match self.catch_up().await {
                    Ok(Some(chunk)) => return Some(chunk),
                    Ok(None) => continue,
                    Err(()) => return None,
                }
            }
            tokio::select! {
                delivery = self.s.subscription.recv() => {
                    // None: cut off (shutdown, token revoked), or dropped
                    // from the flow for reading too slowly.
                    if let Some(chunk) = self.take(delivery?) {
                        self.beat_later();
                        return Some(chunk);
                    }
                }
                () = &mut self.heartbeat => {
                    self.beat_later();
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
            }
        }
    }

    /// Something was sent: the next heartbeat is due a period from now.
    fn beat_later(&mut self) {
        let next = Instant::now() + self.s.heartbeat;
        self.heartbeat.as_mut().reset(next);
    }

    /// A delivery as one chunk: one write per read of the feed. Only events
    /// after the stream's position: it may have started ahead of the reader.
    fn take(&mut self, delivery: Delivery) -> Option<Bytes> {
        let events = delivery.events();
        let (first, last) = (events.first()?.position, events.last()?.position);
        if first > self.s.position {
            // All of it, as it was framed: no copy.
            self.s.position = last;
            return Some(match delivery {
                Delivery::All(batch) => batch.frames.clone(),
                Delivery::Some(mut events) if events.len() == 1 => {
                    events.pop().expect("one event").frame
                }
                Delivery::Some(events) => {
                    let mut chunk = BytesMut::new();
                    events
                        .iter()
                        .for_each(|e| chunk.extend_from_slice(&e.frame));
                    chunk.freeze()
                }
            });
        }
        let mut chunk = BytesMut::new();
        for e in delivery.events() {
            if self.after_position(e) {
                chunk.extend_from_slice(&e.frame);
            }
        }
        (!chunk.is_empty()).then(|| chunk.freeze())
    }

    /// Moves the stream's position to `e` when it is after it.
    fn after_position(&mut self, e: &Event) -> bool {
        let after = e.position > self.s.position;
        if after {
            self.s.position = e.position;
        }
        after
    }

    /// The changes after the stream's start up to where it joined the flow,
    /// a page at a time; None when none of them is the stream's.
    async fn catch_up(&mut self) -> Result<Option<Bytes>, ()> {
        let (channel, after, upto) = (
            self.s.channel.clone(),
            self.s.position,
            self.s.subscription.joined_at,
        );
        let numbers = self.s.user_numbers.clone();
        let read = self
            .s
            .db
            .changes_between(channel, after, upto, numbers, CATCH_UP_PAGE)
            .await;
        let changes = match read {
            Ok(changes) => changes,
            Err(e) => {
                tracing::warn!(error = %e, "an events stream could not read the feed; closing it");
                return Err(());
            }
        };
        if (changes.len() as i64) < CATCH_UP_PAGE {
            self.catching_up = false;
        }
        let mut chunk = BytesMut::new();
        for change in changes {
            self.s.position = change.position;
            chunk.extend_from_slice(&super::flow::frame(change).0.frame);
        }
        if chunk.is_empty() {
            return Ok(None);
        }
        self.beat_later();
        Ok(Some(chunk.freeze()))
    }
}

/// Counts open streams for the `koostatus_events_subscribers` gauge.
struct Subscribed;

impl Subscribed {
    fn new() -> Subscribed {
        metrics::gauge!("koostatus_events_subscribers").increment(1.0);
        Subscribed
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        metrics::gauge!("koostatus_events_subscribers").decrement(1.0);
    }
}
