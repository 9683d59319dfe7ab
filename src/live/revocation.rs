//! Ends the streams of a revoked token. One check per distinct token every
//! `auth.credential_ttl`, however many streams use it: ten thousand desktops
//! sharing a token cost one cache look-up per period, not ten thousand
//! timers.
//!
//! A revoked token's streams are cut out of their channels' flows, which
//! ends them; a stream waits on nothing shared. (Each stream waiting on a
//! shared cancellation token instead took two contended locks per event.)

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::auth::tokens::{TokenHash, Tokens};

/// Checks the tokens of every open stream each `period` until the hub is
/// dropped or shutdown.
pub(super) async fn check_every(
    hub: Weak<Inner>,
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
        let Some(feeds) = hub.upgrade().map(|inner| inner.feeds()) else {
            return;
        };
        let watched: HashSet<TokenHash> = feeds.iter().flat_map(|f| f.tokens()).collect();
        for hash in watched {
            // A database hiccup keeps the streams; only "no such token"
            // ends them.
            if let Ok(None) = tokens.authenticate_hash(hash).await {
                let ended: usize = feeds.iter().map(|f| f.cut_token(&hash)).sum();
                metrics::counter!("koostatus_events_streams_closed_total", "reason" => "revoked")
                    .increment(ended as u64);
            }
        }
    }
}
