//! One reader per watched channel: reads the channel's feed after its
//! position when woken and hands each change to the streams that want it.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

use super::flow::{Shared, State, Subscriber, frame};
use super::postman;
use super::{Delivery, Inner};
use crate::auth::tokens::TokenHash;
use crate::db;
use crate::db::changes::Position;

/// The most changes one read takes; a full page is followed by another read
/// at once. Owned by `config`, which checks that `events.buffer` holds one.
const PAGE: i64 = crate::config::FEED_READ_PAGE;
/// A busy channel's commits wake the reader far more often than this; the
/// wake-ups in between are coalesced into one read: at most 10 reads a
/// second per watched channel (unless it is behind by a full page), for
/// 50 ms of latency on average. A read is one write to every stream with
/// news, and the kernel's work per write is most of what a busy desktop
/// costs: fewer, fuller writes.
const MIN_READ_GAP: Duration = Duration::from_millis(100);
/// While committed changes wait behind an older running transaction, look
/// again this often (that transaction's end may notify nobody).
const RETRY_SOON: Duration = Duration::from_millis(100);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// A reader without streams stops after this, so that a desktop reloading
/// its page does not restart it.
const LINGER: Duration = Duration::from_secs(10);

pub struct ChannelFeed {
    id: Arc<str>,
    wake: Notify,
    /// The channel's head when the reader started: where it begins.
    head: OnceCell<Position>,
    state: Mutex<State>,
    hub: Weak<Inner>,
}

/// A stream's place in the shared flow; leaves it when dropped.
pub struct Subscription {
    feed: Arc<ChannelFeed>,
    id: u64,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    shared: Arc<Shared>,
    /// The reader's position when the stream joined: every change after it
    /// arrives through [`Subscription::recv`], every change up to it the
    /// stream reads from the feed itself.
    pub joined_at: Position,
}

impl Subscription {
    /// The next delivery; None once the stream was dropped from the flow
    /// (too slow) after what was handed over, or at once when it was cut
    /// (token revoked, shutdown).
    pub async fn recv(&mut self) -> Option<Delivery> {
        let delivery = self.deliveries.recv().await;
        if self.is_cut() {
            return None;
        }
        let delivery = delivery?;
        (self.shared.pending).fetch_sub(delivery.events().len(), Ordering::Relaxed);
        Some(delivery)
    }

    /// The stream must end now: its token was revoked, or shutdown.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.feed.state.lock().expect("lock not poisoned");
        state.remove(self.id);
        if state.subscribers.is_empty() {
            drop(state);
            self.feed.wake();
        }
    }
}

impl ChannelFeed {
    /// A feed with its reader running on the main runtime.
    pub(super) fn start(id: Arc<str>, hub: &Arc<Inner>) -> Arc<ChannelFeed> {
        let feed = Arc::new(ChannelFeed {
            id,
            wake: Notify::new(),
            head: OnceCell::new(),
            // Idle from the start: a reader that never gets a stream (its
            // first one failed to join) stops after LINGER too.
            state: Mutex::new(State {
                idle_since: Some(Instant::now()),
                ..State::default()
            }),
            hub: Arc::downgrade(hub),
        });
        let (reader, buffer, shutdown) = (feed.clone(), hub.buffer, hub.shutdown.clone());
        hub.db
            .spawn(move |pool| read(reader, pool, buffer, shutdown));
        metrics::gauge!("koostatus_events_watched_channels").increment(1.0);
        feed
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The distinct tokens of the streams in the flow (ten thousand desktops
    /// may share one).
    pub(super) fn tokens(&self) -> HashSet<TokenHash> {
        let state = self.state.lock().expect("lock not poisoned");
        state.subscribers.values().map(|s| s.token).collect()
    }

    /// Ends the streams of `token` at once; how many there were.
    pub(super) fn cut_token(&self, token: &TokenHash) -> usize {
        let mut state = self.state.lock().expect("lock not poisoned");
        state.cut_token(token)
    }

    /// Registers a stream; None when the reader has stopped meanwhile.
    pub(super) async fn join(
        self: &Arc<Self>,
        user_numbers: Option<Arc<[String]>>,
        token: TokenHash,
    ) -> sqlx::Result<Option<Subscription>> {
        let Some(hub) = self.hub.upgrade() else {
            return Err(sqlx::Error::PoolClosed);
        };
        let channel = self.id.to_string();
        let head = *self
            .head
            .get_or_try_init(|| hub.db.changes_head(channel))
            .await?;
        let (deliveries, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let mut state = self.state.lock().expect("lock not poisoned");
        if state.closed {
            return Ok(None);
        }
        let first = state.position.is_none();
        let joined_at = *state.position.get_or_insert(head);
        let id = state.add(Subscriber {
            deliveries,
            postman: postman::here(),
            shared: shared.clone(),
            user_numbers,
            token,
            held: Vec::new(),
            handed_at: None,
        });
        drop(state);
        // The reader waits for a start position; later streams join a
        // reader already woken by every commit, and need not read again.
        if first {
            self.wake();
        }
        Ok(Some(Subscription {
            feed: self.clone(),
            id,
            deliveries: receiver,
            shared,
            joined_at,
        }))
    }
}

/// The reader of one channel: runs until it has had no streams for
/// [`LINGER`], or shutdown.
async fn read(
    feed: Arc<ChannelFeed>,
    pool: sqlx::PgPool,
    buffer: usize,
    shutdown: CancellationToken,
) {
    let mut again: Option<Duration> = None;
    // The earliest time of the next read; None right after a full page,
    // whose rest is read at once.
    let mut next_read: Option<Instant> = None;
    let mut failing = false;
    loop {
        let timer = tokio::time::sleep(again.unwrap_or(LINGER));
        tokio::select! {
            () = feed.wake.notified() => {}
            () = timer => {}
            () = shutdown.cancelled() => break,
        }
        if let Some(at) = next_read {
            tokio::time::sleep_until(at.into()).await;
        }
        let position = {
            let mut state = feed.state.lock().expect("lock not poisoned");
            if state.subscribers.is_empty() {
                if state.idle_since.is_none_or(|t| t.elapsed() >= LINGER) {
                    state.closed = true;
                    break;
                }
                again = None;
                continue;
            }
            match state.position {
                Some(p) => p,
                None => continue,
            }
        };
        next_read = Some(Instant::now() + MIN_READ_GAP);
        metrics::counter!("koostatus_events_feed_reads_total").increment(1);
        let read = tokio::select! {
            read = db::changes::read(&pool, &feed.id, position, None, None, PAGE) => read,
            () = shutdown.cancelled() => break,
        };
        again = match read {
            Ok(changes) => {
                failing = false;
                let full = changes.len() as i64 == PAGE;
                let position = changes.last().map_or(position, |c| c.position);
                let events: Vec<_> = changes.into_iter().map(frame).collect();
                metrics::counter!("koostatus_events_changes_read_total")
                    .increment(events.len() as u64);
                // Also an empty read: held events may be due.
                let held = (feed.state.lock().expect("lock not poisoned")).dispatch(
                    events,
                    buffer,
                    Instant::now(),
                );
                if full {
                    next_read = None;
                    Some(Duration::ZERO)
                } else {
                    // Committed changes held back by an older running
                    // transaction become readable when it ends, and that
                    // end may notify nobody: a transaction of another
                    // channel, or one that wrote no change. Asked after the
                    // read, this also covers one that ended in between.
                    metrics::counter!("koostatus_events_feed_reads_total").increment(1);
                    let soon = match db::changes::any_after(&pool, &feed.id, position).await {
                        Ok(true) => Some(RETRY_SOON),
                        Ok(false) => None,
                        Err(_) => Some(RETRY_AFTER_ERROR),
                    };
                    // Held events go out when due even if nothing else
                    // wakes the reader.
                    soon.into_iter().chain(held).min()
                }
            }
            Err(e) => {
                // Streams stay open (heartbeats go on) and get the changes
                // once the database answers again.
                if !failing {
                    tracing::warn!(error = %e, channel = %feed.id, "reading the changes feed failed; retrying");
                }
                failing = true;
                Some(RETRY_AFTER_ERROR)
            }
        };
    }
    // Streams still joined (shutdown) end.
    let mut state = feed.state.lock().expect("lock not poisoned");
    state.closed = true;
    state.cut_all();
    drop(state);
    metrics::gauge!("koostatus_events_watched_channels").decrement(1.0);
    if let Some(hub) = feed.hub.upgrade() {
        hub.forget(&feed);
    }
}
