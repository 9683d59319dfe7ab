//! Live events at contact-centre scale: thousands of `/events` streams per
//! instance, database work per watched channel rather than per stream.
//!
//! - One LISTEN connection per process turns the feed's notifications
//!   (migrations/V3) into wake-ups; whichever instance wrote a change,
//!   PostgreSQL notifies every instance on commit.
//! - One reader per channel with streams ([`reader`]) reads that channel's
//!   feed after its position when woken, serialises each change once and
//!   hands it to the streams that want it (all, or those following its
//!   user number), through one postman per worker thread ([`postman`]).
//! - Each stream ([`stream`]) has a bounded buffer. A stream that joins
//!   behind the reader (`Last-Event-ID`) first reads the gap from the feed
//!   itself, then takes the shared flow from the exact position the reader
//!   had when it joined: no gap, no repeat.
//!
//! The feed stays the source of truth: a lost notification costs latency,
//! never a change.

mod flow;
mod postman;
mod reader;
mod revocation;
pub mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::auth::tokens::{TokenHash, Tokens};
use crate::db::Db;
use crate::db::changes::Position;
pub use flow::ChangeEntry;
use reader::ChannelFeed;

/// A change as every stream sends it: serialised once.
#[derive(Clone)]
pub struct Event {
    pub position: Position,
    /// The whole SSE frame: `id`, `event` and `data` lines.
    pub frame: Bytes,
}

/// What a reader hands a stream from one read of the feed: the whole read,
/// framed once for every unfiltered stream, or the few events of it that a
/// filtered stream follows. One wake-up and one write per read, not per
/// event.
pub enum Delivery {
    All(Arc<Batch>),
    Some(Vec<Event>),
}

pub struct Batch {
    pub events: Vec<Event>,
    /// Every event's frame, one after the other.
    pub frames: Bytes,
}

impl Delivery {
    pub fn events(&self) -> &[Event] {
        match self {
            Delivery::All(batch) => &batch.events,
            Delivery::Some(events) => events,
        }
    }
}

pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    channels: Mutex<HashMap<Arc<str>, Arc<ChannelFeed>>>,
    /// Events waiting for one stream at most (`events.buffer`).
    buffer: usize,
    shutdown: CancellationToken,
    /// Every notification, for other followers of the feed (forwarding).
    notices: broadcast::Sender<Notice>,
}

/// A channel's feed has news; None: any channel's may have (notifications
/// may have been missed).
pub type Notice = Option<Arc<str>>;

impl Hub {
    /// Starts listening on the main runtime (see [`Db`]). Everything ends
    /// when `shutdown` is cancelled or the hub is dropped. Streams of a token
    /// end within `recheck` of its revocation.
    pub fn start(
        db: &Db,
        tokens: Arc<Tokens>,
        buffer: usize,
        recheck: Duration,
        shutdown: CancellationToken,
    ) -> Hub {
        let inner = Arc::new(Inner {
            db: db.clone(),
            channels: Mutex::default(),
            buffer,
            shutdown,
            notices: broadcast::channel(1024).0,
        });
        let weak = Arc::downgrade(&inner);
        db.spawn(|pool| listen(pool, weak));
        let (weak, stop) = (Arc::downgrade(&inner), inner.shutdown.clone());
        db.spawn(move |_| revocation::check_every(weak, tokens, recheck, stop));
        Hub { inner }
    }

    /// Joins the shared flow of `channel`'s changes, all of them or only
    /// those of `user_numbers`, for a stream opened with `token`: it is cut
    /// off when the token is revoked. Starts the channel's reader when it is
    /// the first stream.
    pub async fn subscribe(
        &self,
        channel: &str,
        user_numbers: Option<Arc<[String]>>,
        token: TokenHash,
    ) -> sqlx::Result<reader::Subscription> {
        loop {
            let feed = {
                let mut channels = self.inner.channels.lock().expect("lock not poisoned");
                match channels.get(channel) {
                    Some(feed) => feed.clone(),
                    None => {
                        let feed = ChannelFeed::start(channel.into(), &self.inner);
                        channels.insert(channel.into(), feed.clone());
                        feed
                    }
                }
            };
            // None: the reader had just stopped for want of streams; the
            // next round starts a new one.
            if let Some(subscription) = feed.join(user_numbers.clone(), token).await? {
                return Ok(subscription);
            }
            self.inner.forget(&feed);
        }
    }

    /// The feed's notifications as they arrive; a receiver that falls
    /// behind gets `Lagged`, which means any channel may have news.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.inner.notices.subscribe()
    }

    /// Channels with a running reader, for the metrics and tests.
    pub fn watched_channels(&self) -> usize {
        self.inner.channels.lock().expect("lock not poisoned").len()
    }
}

impl Inner {
    fn feeds(&self) -> Vec<Arc<ChannelFeed>> {
        let channels = self.channels.lock().expect("lock not poisoned");
        channels.values().cloned().collect()
    }

    fn forget(&self, feed: &Arc<ChannelFeed>) {
        let mut channels = self.channels.lock().expect("lock not poisoned");
        if channels
            .get(feed.id())
            .is_some_and(|f| Arc::ptr_eq(f, feed))
        {
            channels.remove(feed.id());
        }
    }

    fn wake(&self, channel: Option<&str>) {
        if self.notices.receiver_count() > 0 {
            let _ = self.notices.send(channel.map(Arc::from));
        }
        let channels = self.channels.lock().expect("lock not poisoned");
        match channel {
            Some(id) => {
                if let Some(feed) = channels.get(id) {
                    feed.wake();
                }
            }
            None => channels.values().for_each(|f| f.wake()),
        }
    }
}

/// Holds only a weak reference, so that it ends once the hub is dropped
/// (tests build many apps in one process).
async fn listen(pool: sqlx::PgPool, hub: std::sync::Weak<Inner>) {
    let Some(shutdown) = hub.upgrade().map(|h| h.shutdown.clone()) else {
        return;
    };
    loop {
        match crate::db::changes::listener(&pool).await {
            Ok(mut listener) => {
                // Notifications may have been missed while (re)connecting:
                // every reader looks again.
                match hub.upgrade() {
                    Some(inner) => inner.wake(None),
                    None => return,
                }
                loop {
                    // Pinned where it is made: `select!` would otherwise move
                    // sqlx's future (about 15 KB) into place at every
                    // notification.
                    let next = std::pin::pin!(listener.try_recv());
                    let received = tokio::select! {
                        received = next => received,
                        () = shutdown.cancelled() => return,
                    };
                    let Some(inner) = hub.upgrade() else { return };
                    match received {
                        Ok(Some(n)) => inner.wake(Some(n.payload())),
                        // The connection was lost; the next call reconnects
                        // and listens again, but what came in between is gone.
                        Ok(None) => inner.wake(None),
                        Err(e) => {
                            tracing::warn!(error = %e, "listening for changes failed; retrying");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for changes; retrying"),
        }
        if hub.upgrade().is_none() || shutdown.is_cancelled() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
