//! Forwarding status changes to other systems (SPEC §11): each subscription
//! is a position in one channel's feed; what follows it is POSTed to the
//! subscription's URL, signed, in order, at least once.
//!
//! - Exactly one instance delivers a subscription at a time: it holds the
//!   subscription's lease (`lease_holder`, `lease_until` in PostgreSQL),
//!   renewed by every statement of its delivery and at least every
//!   [`RENEW_EVERY`]. Every instance looks for leases nobody holds, or that
//!   ran out, every [`CLAIM_EVERY`]: when an instance dies, another takes
//!   its subscriptions over within the lease (`forward.timeout` + 10 s)
//!   plus [`CLAIM_EVERY`], 25 s with the defaults. An instance starts a
//!   POST only while its lease has more than `forward.timeout` left, and a
//!   POST ends within `forward.timeout`: deliveries never overlap.
//! - A delivery is recorded before its first attempt (its webhook-id and
//!   its last change, [`crate::db::forwarding::advance`]), so that every
//!   retry, by this instance after a failure or by another after a crash,
//!   sends the same changes under the same webhook-id. A 2xx moves the
//!   position past it in the statement that records the next one.
//! - The feed is read below its horizon (migrations/V5), as every reader of
//!   it must: no change is skipped.

mod batches;
mod delivery;
pub mod secret;
pub mod target;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::ForwardConfig;
use crate::db::{Db, forwarding};
use crate::live::{Hub, Notice};

/// How often every instance looks for subscriptions nobody delivers.
pub const CLAIM_EVERY: Duration = Duration::from_secs(5);
/// A delivering instance renews its lease at least this often.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// What every delivery task of an instance shares.
struct Context {
    db: Db,
    client: reqwest::Client,
    key: secret::Key,
    config: ForwardConfig,
    /// This instance, in `lease_holder`.
    holder: String,
    /// Subscriptions this instance delivers.
    running: Mutex<HashSet<String>>,
    /// Each channel's changes read ahead, shared by its subscriptions.
    segments: batches::Shared,
    shutdown: CancellationToken,
}

impl Context {
    /// A lease outlasts the longest POST by 10 s: time for the statements
    /// around it.
    fn lease(&self) -> Duration {
        self.config.timeout + Duration::from_secs(10)
    }
}

/// Starts forwarding on the main runtime (see [`Db`]) when
/// `forward.secret_key` is set; without it nothing can be signed, and `serve`
/// says so when subscriptions exist. Ends when `shutdown` is cancelled,
/// giving its leases up.
pub fn start(db: &Db, config: &ForwardConfig, hub: &Hub, shutdown: CancellationToken) {
    let Some(key) = config
        .secret_key
        .as_ref()
        .and_then(secret::Key::from_config)
    else {
        db.spawn(|pool| async move {
            if forwarding::any(&pool).await.unwrap_or(false) {
                tracing::error!(
                    "subscriptions exist but forward.secret_key is not set: nothing is forwarded"
                );
            }
        });
        return;
    };
    let client = reqwest::Client::builder()
        // A redirect is an answer that is not a 2xx: retried, not followed.
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would connect where the address check cannot see.
        .no_proxy()
        .timeout(config.timeout)
        .dns_resolver(Arc::new(target::GuardedResolver {
            allow_private: config.allow_private_targets,
        }))
        .user_agent(concat!("koostatus/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's settings are valid");
    let context = Arc::new(Context {
        db: db.clone(),
        client,
        key,
        config: config.clone(),
        holder: secret::delivery_id().replace("msg_", "instance_"),
        running: Mutex::default(),
        segments: batches::Shared::default(),
        shutdown,
    });
    let notices = hub.notices();
    db.spawn(move |_| claim_every(context, notices));
}

/// Takes the subscriptions nobody delivers and starts a delivery task for
/// each.
async fn claim_every(context: Arc<Context>, notices: broadcast::Receiver<Notice>) {
    let mut every = tokio::time::interval(CLAIM_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = context.shutdown.cancelled() => return,
        }
        let claimed = forwarding::claim(context.db.pool(), &context.holder, context.lease());
        let names = match claimed.await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for subscriptions to deliver; retrying");
                continue;
            }
        };
        for name in names {
            // Its lease ran out while this instance still delivers it (a
            // stalled task): the task goes on under the renewed lease.
            if !context
                .running
                .lock()
                .expect("lock not poisoned")
                .insert(name.clone())
            {
                continue;
            }
            tracing::info!(subscription = name, "delivering");
            tokio::spawn(delivery::run(context.clone(), name, notices.resubscribe()));
        }
    }
}
