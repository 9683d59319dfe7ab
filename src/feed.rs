//! Live updates: one LISTEN connection per process turns the notifications
//! of the changes feed (migrations/V3) into wake-ups for the `/events`
//! streams of this process. Whichever instance wrote a change, PostgreSQL
//! notifies every instance on commit. The feed stays the source of truth: a
//! stream reads it after every wake-up, so a lost notification costs only
//! latency, never a change.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::db::Db;

#[derive(Clone, Debug)]
pub enum Wake {
    /// A change on this channel was committed.
    Channel(Arc<str>),
    /// Notifications may have been missed (the LISTEN connection was
    /// re-established): every stream reads the feed again.
    All,
}

impl Wake {
    pub fn concerns(&self, channel: &str) -> bool {
        match self {
            Wake::Channel(c) => **c == *channel,
            Wake::All => true,
        }
    }
}

pub struct Hub {
    wake: broadcast::Sender<Wake>,
}

impl Hub {
    /// Starts listening on the main runtime (see [`Db`]).
    pub fn start(db: &Db) -> Hub {
        // A stream that falls this far behind is told it lagged and simply
        // reads the feed again.
        let (wake, _) = broadcast::channel(1024);
        let weak = wake.downgrade();
        db.spawn(|pool| listen(pool, weak));
        Hub { wake }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Wake> {
        self.wake.subscribe()
    }
}

/// Holds only a weak sender, so that it ends once the hub is dropped
/// (tests build many apps in one process).
async fn listen(pool: sqlx::PgPool, wake: broadcast::WeakSender<Wake>) {
    let send = |w: Wake| match wake.upgrade() {
        Some(sender) => {
            let _ = sender.send(w);
            true
        }
        None => false,
    };
    loop {
        match crate::db::changes::listener(&pool).await {
            Ok(mut listener) => {
                if !send(Wake::All) {
                    return;
                }
                loop {
                    let woke = match listener.try_recv().await {
                        Ok(Some(n)) => send(Wake::Channel(n.payload().into())),
                        // The connection was lost; the next call reconnects
                        // and listens again, but what came in between is gone.
                        Ok(None) => send(Wake::All),
                        Err(e) => {
                            tracing::warn!(error = %e, "listening for changes failed; retrying");
                            break;
                        }
                    };
                    if !woke {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for changes; retrying"),
        }
        if wake.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
