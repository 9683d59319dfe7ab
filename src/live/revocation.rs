//! Ends the streams of a revoked token. One check per distinct token every
//! `auth.credential_ttl`, however many streams use it: ten thousand desktops
//! sharing a token cost one cache look-up per period, not ten thousand
//! timers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::tokens::{TokenHash, Tokens};

#[derive(Default)]
pub struct Revocations {
    watched: Mutex<HashMap<TokenHash, Watched>>,
}

struct Watched {
    revoked: CancellationToken,
    streams: usize,
}

/// A stream's hold on its token; `revoked` fires when the token is gone.
pub struct TokenWatch {
    pub revoked: CancellationToken,
    token: TokenHash,
    revocations: Weak<Revocations>,
}

impl Drop for TokenWatch {
    fn drop(&mut self) {
        let Some(revocations) = self.revocations.upgrade() else {
            return;
        };
        let mut watched = revocations.watched.lock().expect("lock not poisoned");
        if let Some(w) = watched.get_mut(&self.token) {
            w.streams -= 1;
            if w.streams == 0 {
                watched.remove(&self.token);
            }
        }
    }
}

impl Revocations {
    pub fn watch(self: &Arc<Self>, token: TokenHash) -> TokenWatch {
        let mut watched = self.watched.lock().expect("lock not poisoned");
        let w = watched.entry(token).or_insert_with(|| Watched {
            revoked: CancellationToken::new(),
            streams: 0,
        });
        w.streams += 1;
        TokenWatch {
            revoked: w.revoked.clone(),
            token,
            revocations: Arc::downgrade(self),
        }
    }

    /// Checks every watched token each `period` until the hub is dropped.
    pub async fn check_every(
        revocations: Weak<Revocations>,
        tokens: Arc<Tokens>,
        period: Duration,
        shutdown: CancellationToken,
    ) {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let Some(revocations) = revocations.upgrade() else {
                return;
            };
            let hashes: Vec<TokenHash> = revocations
                .watched
                .lock()
                .expect("lock not poisoned")
                .keys()
                .copied()
                .collect();
            for hash in hashes {
                // A database hiccup keeps the streams; only "no such token"
                // ends them.
                if let Ok(None) = tokens.authenticate_hash(hash).await {
                    let gone = revocations
                        .watched
                        .lock()
                        .expect("lock not poisoned")
                        .remove(&hash);
                    if let Some(w) = gone {
                        metrics::counter!("koostatus_events_streams_closed_total", "reason" => "revoked")
                            .increment(w.streams as u64);
                        w.revoked.cancel();
                    }
                }
            }
        }
    }
}
