//! Telling every instance that a channel's feed has news: the writers mark
//! the channels they wrote changes of, after the commit, and one task sends
//! a notification (`koostatus_changes`, payload: the channel id) for the
//! marked channels, at most once per [`GAP`] under load, always after the
//! last mark. A notification per statement (the trigger before V20) cost
//! PostgreSQL about 6 % of its CPU per report (docs/performance.md), while
//! the readers it wakes read each channel at most ten times a second.
//!
//! The feed stays the source of truth: a notification lost (the service
//! stopped between a commit and its announcement) delays a push until the
//! channel's next notification, as a lost LISTEN connection does.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;

/// Marks that arrive within this of a notification wait for the next one.
const GAP: Duration = Duration::from_millis(20);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// Cheap to clone; the task ends once every clone is dropped, after
/// announcing what was marked.
#[derive(Clone)]
pub struct Announcer {
    marked: Arc<Mutex<HashSet<String>>>,
    /// Holds at most one signal: marks made while one waits share it.
    signal: mpsc::Sender<()>,
}

impl Announcer {
    /// Starts the task on the current runtime (the main one, see
    /// [`super::Db`]).
    pub fn start(pool: PgPool) -> Announcer {
        let (signal, waiting) = mpsc::channel(1);
        let marked = Arc::new(Mutex::new(HashSet::new()));
        tokio::spawn(announce(pool, marked.clone(), waiting));
        Announcer { marked, signal }
    }

    /// `channel`'s feed has committed changes that no notification has
    /// announced yet.
    pub fn mark(&self, channel: &str) {
        let mut marked = self.marked.lock().expect("lock not poisoned");
        if !marked.contains(channel) {
            marked.insert(channel.to_owned());
        }
        drop(marked);
        // Full: a signal is already waiting, and takes this mark too.
        let _ = self.signal.try_send(());
    }
}

async fn announce(
    pool: PgPool,
    marked: Arc<Mutex<HashSet<String>>>,
    mut waiting: mpsc::Receiver<()>,
) {
    loop {
        // Marks put back by a failed round go round again at once; else
        // wait for a mark, or end once every Announcer is gone (what they
        // marked is announced first: the signal outlives them).
        let left = !marked.lock().expect("lock not poisoned").is_empty();
        if !left && waiting.recv().await.is_none() {
            return;
        }
        let channels: Vec<String> = std::mem::take(&mut *marked.lock().expect("lock not poisoned"))
            .into_iter()
            .collect();
        if channels.is_empty() {
            continue;
        }
        match super::changes::notify(&pool, &channels).await {
            Ok(()) => tokio::time::sleep(GAP).await,
            // Nobody left to mark more, or the pool shut: nobody to tell.
            Err(_) if waiting.is_closed() || pool.is_closed() => return,
            Err(e) => {
                tracing::warn!(error = %e, "announcing changes failed; retrying");
                marked.lock().expect("lock not poisoned").extend(channels);
                tokio::time::sleep(RETRY_AFTER_ERROR).await;
            }
        }
    }
}
