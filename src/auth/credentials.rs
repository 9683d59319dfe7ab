//! Authenticates webhook callbacks against a channel's argon2id hashes.
//!
//! Two caches keep argon2 off the steady stream of callbacks:
//! - channel credentials (enabled flag and hashes) are re-read from the
//!   database after `auth.credential_ttl`, so a change made on any instance
//!   takes effect everywhere within that time;
//! - successful verifications are remembered under the channel and an HMAC
//!   of the presented password (per-process random key, so the cache never
//!   holds anything that could be attacked offline). An entry counts only
//!   while the hash it matched is still one of the channel's valid hashes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::db::Db;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

use std::net::IpAddr;

use super::limiter::Limiter;
use super::password;
use crate::config::AuthConfig;
use crate::db;
use crate::domain::ChannelId;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No, wrong or stale password, unknown or disabled channel: callers must
    /// not tell these apart.
    #[error("authentication failed")]
    Denied,
    #[error("reading the channel's credentials failed")]
    Database(#[from] sqlx::Error),
    /// Too many attempts from this client or for this channel.
    #[error("too many authentication attempts")]
    Throttled { retry_after_secs: u64 },
}

#[derive(Clone)]
struct Snapshot {
    fetched_at: Instant,
    enabled: bool,
    current: Arc<str>,
    previous: Option<(Arc<str>, DateTime<Utc>)>,
}

impl Snapshot {
    fn valid_hashes(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Arc<str>> {
        let previous = self
            .previous
            .as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(h, _)| h);
        std::iter::once(&self.current).chain(previous)
    }
}

type Fingerprint = [u8; 32];

pub struct Credentials {
    db: Db,
    ttl: Duration,
    hmac_key: [u8; 32],
    /// Only channels that exist are cached, so the map is bounded by the
    /// channels table, whatever ids callers make up.
    channels: RwLock<HashMap<String, Snapshot>>,
    /// Bounded by channels x valid passwords: only successes are stored.
    verified: RwLock<HashMap<(String, Fingerprint), Arc<str>>>,
    /// argon2 runs on these threads only, one verification each at a time:
    /// the bound on concurrent checks, and on memory (each check takes
    /// 19 MiB, which the allocator keeps per thread).
    verifiers: std::sync::mpsc::Sender<VerifyJob>,
    /// One verification at a time per (channel, presented password): a burst
    /// of callbacks with a new password pays argon2 once, not once each.
    in_flight: std::sync::Mutex<HashMap<(String, Fingerprint), Arc<tokio::sync::Mutex<()>>>>,
    /// A hash of a random password with the production parameters, so that
    /// an unknown channel costs the same as a wrong password.
    dummy_hash: Arc<str>,
    verifications: AtomicU64,
    limiter: Limiter,
}

impl Credentials {
    pub async fn new(db: Db, cfg: &AuthConfig) -> Credentials {
        let (ttl, max_concurrent) = (cfg.credential_ttl, cfg.verification_permits());
        let mut hmac_key = [0u8; 32];
        getrandom::getrandom(&mut hmac_key).expect("the OS random source works");
        let mut dummy = [0u8; 32];
        getrandom::getrandom(&mut dummy).expect("the OS random source works");
        let dummy = SecretString::from(format!("{dummy:?}"));
        let dummy_hash = tokio::task::spawn_blocking(move || password::hash(&dummy))
            .await
            .expect("hashing does not panic");
        Credentials {
            db,
            ttl,
            hmac_key,
            channels: RwLock::default(),
            verified: RwLock::default(),
            verifiers: start_verifiers(max_concurrent),
            in_flight: std::sync::Mutex::default(),
            dummy_hash: dummy_hash.into(),
            verifications: AtomicU64::new(0),
            limiter: Limiter::new(cfg),
        }
    }

    /// How many argon2 verifications this process has run.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Succeeds when `presented` is a valid password of an enabled channel.
    /// Every failure costs one argon2 verification, so that timing does not
    /// tell which check failed; anything that would need argon2 first spends
    /// the budget of `client` and of the channel.
    pub async fn authenticate(
        &self,
        channel: &ChannelId,
        presented: Option<&[u8]>,
        client: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let snapshot = self.snapshot(channel).await?;
        let (Some(presented), Some(snapshot)) = (presented, snapshot.filter(|s| s.enabled)) else {
            return Err(self.reject(presented, client, channel.as_str()).await);
        };
        let key = (
            channel.as_str().to_owned(),
            self.fingerprint(channel, presented),
        );
        if self.remembered(&key, &snapshot) {
            metrics::counter!("koostatus_credential_cache_hits_total").increment(1);
            return Ok(());
        }
        let gate = self
            .in_flight
            .lock()
            .expect("lock not poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _turn = gate.lock().await;
            // Whoever held the gate before may have verified this password.
            if self.remembered(&key, &snapshot) {
                Ok(())
            } else if let Err(retry_after_secs) = self.limiter.attempt(client, channel.as_str()) {
                metrics::counter!("koostatus_auth_throttled_total").increment(1);
                Err(AuthError::Throttled { retry_after_secs })
            } else {
                self.verify_against(&key, &snapshot, presented).await
            }
        };
        let mut in_flight = self.in_flight.lock().expect("lock not poisoned");
        // Only the map and this call hold it: nobody else is waiting.
        if Arc::strong_count(&gate) == 2 {
            in_flight.remove(&key);
        }
        result
    }

    /// Whether this password was verified before against a hash that is
    /// still valid for the channel.
    fn remembered(&self, key: &(String, Fingerprint), snapshot: &Snapshot) -> bool {
        let hash = self
            .verified
            .read()
            .expect("lock not poisoned")
            .get(key)
            .cloned();
        match hash {
            Some(hash) if snapshot.valid_hashes(Utc::now()).any(|h| *h == hash) => true,
            Some(_) => {
                self.verified
                    .write()
                    .expect("lock not poisoned")
                    .remove(key);
                false
            }
            None => false,
        }
    }

    async fn verify_against(
        &self,
        key: &(String, Fingerprint),
        snapshot: &Snapshot,
        presented: &[u8],
    ) -> Result<(), AuthError> {
        for hash in snapshot.valid_hashes(Utc::now()) {
            if self.verify(hash.clone(), presented).await {
                self.verified
                    .write()
                    .expect("lock not poisoned")
                    .insert(key.clone(), hash.clone());
                return Ok(());
            }
        }
        metrics::counter!("koostatus_auth_failures_total").increment(1);
        Err(AuthError::Denied)
    }

    /// Fails the way a wrong password does, for a channel that does not
    /// exist or is disabled, or a request without a password.
    pub async fn reject(
        &self,
        presented: Option<&[u8]>,
        client: Option<IpAddr>,
        channel: &str,
    ) -> AuthError {
        if let Err(retry_after_secs) = self.limiter.attempt(client, channel) {
            metrics::counter!("koostatus_auth_throttled_total").increment(1);
            return AuthError::Throttled { retry_after_secs };
        }
        self.verify(self.dummy_hash.clone(), presented.unwrap_or_default())
            .await;
        metrics::counter!("koostatus_auth_failures_total").increment(1);
        AuthError::Denied
    }

    fn fingerprint(&self, channel: &ChannelId, presented: &[u8]) -> Fingerprint {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.hmac_key).expect("any key length");
        mac.update(channel.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(presented);
        mac.finalize().into_bytes().into()
    }

    async fn snapshot(&self, channel: &ChannelId) -> Result<Option<Snapshot>, sqlx::Error> {
        let cached = self
            .channels
            .read()
            .expect("lock not poisoned")
            .get(channel.as_str())
            .cloned();
        if let Some(s) = cached.filter(|s| s.fetched_at.elapsed() < self.ttl) {
            return Ok(Some(s));
        }
        let fetched_at = Instant::now();
        let id = channel.to_string();
        let Some(row) = self
            .db
            .run(|pool| async move { db::channels::credentials(&pool, &id).await })
            .await?
        else {
            self.channels
                .write()
                .expect("lock not poisoned")
                .remove(channel.as_str());
            return Ok(None);
        };
        let previous = row
            .previous_password_hash
            .zip(row.previous_password_expires_at);
        let snapshot = Snapshot {
            fetched_at,
            enabled: row.enabled,
            current: row.password_hash.into(),
            previous: previous.map(|(h, until)| (h.into(), until)),
        };
        self.channels
            .write()
            .expect("lock not poisoned")
            .insert(channel.as_str().to_owned(), snapshot.clone());
        Ok(Some(snapshot))
    }

    /// argon2 on the verifier threads: a flood of wrong passwords queues
    /// there instead of occupying the async workers.
    async fn verify(&self, hash: Arc<str>, presented: &[u8]) -> bool {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = VerifyJob {
            hash,
            presented: SecretSlice::from(presented.to_vec()),
            reply,
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("koostatus_argon2_verifications_total").increment(1);
        self.verifiers.send(job).is_ok() && answer.await.unwrap_or(false)
    }
}

struct VerifyJob {
    hash: Arc<str>,
    presented: SecretSlice<u8>,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// Threads that stop when the `Credentials` holding the sender is dropped.
fn start_verifiers(count: usize) -> std::sync::mpsc::Sender<VerifyJob> {
    let (sender, receiver) = std::sync::mpsc::channel::<VerifyJob>();
    let receiver = Arc::new(std::sync::Mutex::new(receiver));
    for i in 0..count {
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || {
                lower_priority();
                let mut verifier = password::Verifier::default();
                loop {
                    let job = match receiver.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let ok = verifier.verify(&job.hash, job.presented.expose_secret());
                    let _ = job.reply.send(ok);
                }
            })
            .expect("the OS starts a thread");
    }
    sender
}

/// Verifications run at nice 10: when the CPU is saturated, a flood of
/// guesses gets what committed traffic leaves over (about a tenth of a
/// contended core) instead of an equal share, and still progresses. Linux
/// applies `setpriority` on a thread id to that thread alone.
fn lower_priority() {
    // SAFETY: plain system calls on this thread's own id; no memory passed.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
    };
    if result != 0 {
        tracing::debug!("could not lower the priority of an argon2 thread");
    }
}
