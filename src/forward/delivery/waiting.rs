//! Waiting for news: a caught-up subscription sleeps until its channel
//! commits a change it can read (the hub's notices, or a look again when
//! changes are held back below the feed's horizon), its lease needs
//! renewing, or shutdown.

use std::time::{Duration, Instant};

use tokio::sync::broadcast::{self, error::RecvError};

use super::super::RENEW_EVERY;
use super::{Ended, Task};
use crate::db::changes::Position;
use crate::db::forwarding::{self, News};
use crate::live::Notice;

/// Changes committed but still behind an older running transaction (the
/// feed's horizon): look again this soon, as that transaction's end may
/// notify nobody.
const HELD_BACK_RETRY: Duration = Duration::from_millis(100);

impl Task {
    /// Waits until the channel has readable news, the lease needs renewing,
    /// or shutdown (Some).
    pub(super) async fn wait_for_news(
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
    pub(super) async fn sleep_until(&self, at: Instant) -> bool {
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => false,
            () = self.context.shutdown.cancelled() => true,
        }
    }
}

/// Notices that came before a read are answered by it.
pub(super) fn drain(notices: &mut broadcast::Receiver<Notice>) {
    while !matches!(
        notices.try_recv(),
        Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
    ) {}
}
