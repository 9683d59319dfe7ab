//! The shared flow of one channel: which streams want which changes, and
//! handing each read of the feed to them (reader.rs does the reading).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::web::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::postman::{Postman, Round};
use super::{Batch, Delivery, Event};
use crate::auth::tokens::TokenHash;
use crate::db::changes::{Change, Position};
use crate::domain::Status;

#[derive(Default)]
pub(super) struct State {
    /// Every change up to here has been handed to the streams; None until
    /// the head is known.
    pub(super) position: Option<Position>,
    /// The reader stopped: nobody may join this feed any more.
    pub(super) closed: bool,
    pub(super) next_id: u64,
    pub(super) subscribers: HashMap<u64, Subscriber>,
    /// Streams that take every change of the channel.
    pub(super) unfiltered: Vec<u64>,
    /// Streams that follow some user numbers, by user number.
    pub(super) by_user: HashMap<String, Vec<u64>>,
    pub(super) idle_since: Option<Instant>,
}

pub(super) struct Subscriber {
    pub(super) deliveries: mpsc::UnboundedSender<Delivery>,
    /// Of the worker thread that runs the stream.
    pub(super) postman: Postman,
    pub(super) shared: Arc<Shared>,
    pub(super) user_numbers: Option<Arc<[String]>>,
    /// The token the stream was opened with (directly or by a ticket).
    pub(super) token: TokenHash,
    /// A filtered stream's events not handed yet, and when it last was
    /// handed some (see [`HOLD`]).
    pub(super) held: Vec<Event>,
    pub(super) handed_at: Option<Instant>,
}

/// A filtered stream is handed events at most once per this. A desktop
/// whose conversations change at every read of the feed (100 ms apart) is
/// then written every other read, half the socket writes, its events
/// waiting about 200 ms at most; a quiet desktop's event goes out at once.
/// Each write is a system call and, for the desktop, a wake-up and a read:
/// with a thousand busy desktops, most of what they cost the instance.
pub(super) const HOLD: Duration = Duration::from_millis(150);

/// What the flow and a stream both see of the stream, without a lock.
#[derive(Default)]
pub(super) struct Shared {
    /// Events handed over and not yet taken by the stream: bounded by
    /// `events.buffer`, which makes the channel bounded in events.
    pub(super) pending: AtomicUsize,
    /// Cut out of the flow (token revoked, shutdown): the stream ends at
    /// once, without sending what it still holds.
    pub(super) cut: AtomicBool,
}

impl State {
    pub(super) fn add(&mut self, subscriber: Subscriber) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        match &subscriber.user_numbers {
            None => self.unfiltered.push(id),
            Some(numbers) => {
                for n in numbers.iter() {
                    self.by_user.entry(n.clone()).or_default().push(id);
                }
            }
        }
        self.subscribers.insert(id, subscriber);
        self.idle_since = None;
        id
    }

    /// Ends the streams of `token` at once; how many there were.
    pub(super) fn cut_token(&mut self, token: &TokenHash) -> usize {
        let ids: Vec<u64> = (self.subscribers.iter())
            .filter(|(_, s)| s.token == *token)
            .map(|(id, _)| *id)
            .collect();
        ids.iter().for_each(|&id| self.cut(id));
        ids.len()
    }

    /// Ends every stream at once (shutdown).
    pub(super) fn cut_all(&mut self) {
        let ids: Vec<u64> = self.subscribers.keys().copied().collect();
        ids.into_iter().for_each(|id| self.cut(id));
    }

    fn cut(&mut self, id: u64) {
        if let Some(subscriber) = self.subscribers.get(&id) {
            // Before its sender goes: the stream looks when its channel
            // closes.
            subscriber.shared.cut.store(true, Ordering::Release);
        }
        self.remove(id);
    }

    /// Drops a stream from the flow: it sends what it holds, then ends.
    pub(super) fn remove(&mut self, id: u64) {
        let Some(subscriber) = self.subscribers.remove(&id) else {
            return;
        };
        match subscriber.user_numbers {
            None => self.unfiltered.retain(|&s| s != id),
            Some(numbers) => {
                for n in numbers.iter() {
                    if let Some(ids) = self.by_user.get_mut(n) {
                        ids.retain(|&s| s != id);
                        if ids.is_empty() {
                            self.by_user.remove(n);
                        }
                    }
                }
            }
        }
        if self.subscribers.is_empty() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// Hands one read's changes to their streams: the whole batch, framed
    /// once, to every unfiltered stream; to each filtered one its own
    /// changes, or it holds them until [`HOLD`] after its last hand-over.
    /// A stream that would hold more than `buffer` events not yet sent is
    /// dropped from the flow: it sends what it has, then ends, and its
    /// client resumes with `Last-Event-ID`. Nobody waits for a slow client.
    /// An empty read hands over what is due. While some stream holds
    /// events: how soon the first of them is due, for the reader to come
    /// back then.
    pub(super) fn dispatch(
        &mut self,
        read: Vec<(Event, String)>,
        buffer: usize,
        now: Instant,
    ) -> Option<Duration> {
        let last = read.last().map(|(e, _)| e.position);
        let mut events = Vec::with_capacity(read.len());
        for (event, user_number) in read {
            for id in self.by_user.get(&user_number).into_iter().flatten() {
                let subscriber = self.subscribers.get_mut(id).expect("indexed");
                subscriber.held.push(event.clone());
            }
            events.push(event);
        }
        let (mut slow, mut round) = (Vec::new(), Round::default());
        if !self.unfiltered.is_empty() && !events.is_empty() {
            let mut frames = BytesMut::new();
            for e in &events {
                frames.extend_from_slice(&e.frame);
            }
            let batch = Arc::new(Batch {
                events,
                frames: frames.freeze(),
            });
            for id in &self.unfiltered {
                let delivery = Delivery::All(batch.clone());
                if !self.subscribers[id].hand(delivery, buffer, &mut round) {
                    slow.push(*id);
                }
            }
        }
        // Ten thousand streams are a walk of some tens of microseconds, ten
        // times a second: cheaper than keeping a second index right.
        let mut next_due: Option<Duration> = None;
        for (id, s) in &mut self.subscribers {
            if s.held.is_empty() {
                continue;
            }
            let wait = s
                .handed_at
                .map_or(Duration::ZERO, |t| HOLD.saturating_sub(now - t));
            // A reader catching up reads full pages back to back: hand
            // those over at once rather than gather them without bound.
            if !wait.is_zero() && s.held.len() < buffer / 2 {
                next_due = Some(next_due.map_or(wait, |d| d.min(wait)));
                continue;
            }
            s.handed_at = Some(now);
            let delivery = Delivery::Some(std::mem::take(&mut s.held));
            if !s.hand(delivery, buffer, &mut round) {
                slow.push(*id);
            }
        }
        round.send();
        if let Some(last) = last {
            self.position = Some(last);
        }
        for id in slow {
            self.remove(id);
        }
        next_due
    }
}

impl Subscriber {
    /// False when the stream is gone or too far behind.
    fn hand(&self, delivery: Delivery, buffer: usize, round: &mut Round) -> bool {
        if self.deliveries.is_closed() {
            return false;
        }
        let n = delivery.events().len();
        if self.shared.pending.load(Ordering::Relaxed) + n > buffer {
            metrics::counter!("koostatus_events_streams_closed_total", "reason" => "slow")
                .increment(1);
            return false;
        }
        self.shared.pending.fetch_add(n, Ordering::Relaxed);
        round.add(&self.postman, (self.deliveries.clone(), delivery));
        true
    }
}

/// The SSE frame of a change, built once for all its streams.
pub(super) fn frame(change: Change) -> (Event, String) {
    let position = change.position;
    let user_number = change.user_number.clone();
    let data = serde_json::to_string(&ChangeEntry::from(change)).expect("a change serialises");
    let frame = Bytes::from(format!("id: {position}\nevent: change\ndata: {data}\n\n"));
    (Event { position, frame }, user_number)
}

// The wire form of a change, for `/changes` pages and `/events` frames
// alike.
/// A change of a message's current status, at its place in the channel's feed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "position": "48213-1077",
    "message_id": "044852ee407b40ec88ea65adb73ff5c27",
    "user_number": "86187xxxx5632",
    "status": "read",
    "changed_at": "2026-11-23T10:16:40.5Z"
}))]
pub struct ChangeEntry {
    /// Opaque; ask for changes after it, or send it as `Last-Event-ID`.
    pub position: String,
    pub message_id: String,
    /// The customer of the message (fixed by its first report).
    pub user_number: String,
    /// The message's new current status.
    pub status: Status,
    /// When the report that changed it was received.
    pub changed_at: DateTime<Utc>,
}

impl From<Change> for ChangeEntry {
    fn from(c: Change) -> ChangeEntry {
        ChangeEntry {
            position: c.position.to_string(),
            message_id: c.message_id,
            user_number: c.user_number,
            status: c.status,
            changed_at: c.changed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::postman;

    fn event(n: i64) -> (Event, String) {
        let position = Position { xid: n, seq: 1 };
        let frame = Bytes::from(n.to_string());
        (Event { position, frame }, "u1".to_owned())
    }

    /// A filtered stream: its first event goes out at once, the next ones
    /// wait until HOLD after that (the reader is told when), and a pile as
    /// big as half the buffer goes out at once.
    #[test]
    fn a_busy_filtered_stream_is_handed_events_at_most_once_per_hold() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let (deliveries, mut stream) = mpsc::unbounded_channel();
            let mut state = State::default();
            state.add(Subscriber {
                deliveries,
                postman: postman::here(),
                shared: Arc::default(),
                user_numbers: Some(Arc::from(vec!["u1".to_owned()])),
                token: crate::auth::tokens::hash("t"),
                held: Vec::new(),
                handed_at: None,
            });
            let mut handed = async || {
                tokio::task::yield_now().await; // the postman runs
                let mut got = Vec::new();
                while let Ok(d) = stream.try_recv() {
                    got.push(
                        d.events()
                            .iter()
                            .map(|e| e.position.xid)
                            .collect::<Vec<_>>(),
                    );
                }
                got
            };
            let (buffer, t0) = (8, Instant::now());
            let at = |ms| t0 + Duration::from_millis(ms);

            assert_eq!(state.dispatch(vec![event(1)], buffer, at(0)), None);
            assert_eq!(handed().await, [vec![1]], "the first event at once");
            let wait = state.dispatch(vec![event(2)], buffer, at(100));
            assert_eq!(wait, Some(Duration::from_millis(50)));
            let wait = state.dispatch(vec![event(3)], buffer, at(120));
            assert_eq!(wait, Some(Duration::from_millis(30)));
            assert!(handed().await.is_empty(), "held until 150 ms");
            assert_eq!(state.dispatch(vec![], buffer, at(150)), None);
            assert_eq!(handed().await, [vec![2, 3]], "both in one delivery");
            assert_eq!(state.position, Some(Position { xid: 3, seq: 1 }));

            // Half the buffer is not held, whenever it comes.
            let pile: Vec<_> = (4..8).map(event).collect();
            assert_eq!(state.dispatch(pile, buffer, at(160)), None);
            assert_eq!(handed().await, [vec![4, 5, 6, 7]]);
        });
    }
}
