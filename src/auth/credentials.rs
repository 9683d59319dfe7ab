//! Authenticates webhook callbacks against a channel's argon2id hashes.
//!
//! Two caches (moka) keep argon2 off the steady stream of callbacks:
//! - channel credentials (enabled flag and hashes) expire after
//!   `auth.credential_ttl` and are read again, so a change made on any
//!   instance takes effect everywhere within that time;
//! - successful verifications are remembered under the channel and an HMAC
//!   of the presented password (per-process random key, so the cache never
//!   holds anything that could be attacked offline). An entry counts only
//!   while the hash it matched is still one of the channel's valid hashes.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;

use super::limiter::Limiter;
use super::password;
use super::verifier::Pool;
use crate::config::AuthConfig;
use crate::db::Db;
use crate::domain::ChannelId;

/// Channels and remembered passwords held at most: far above any real
/// deployment, a bound all the same.
const CACHE_CAPACITY: u64 = 100_000;

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

/// Why a verification refused: shared by every callback that waited for it.
#[derive(Debug, Clone)]
enum Refusal {
    Denied,
    Throttled { retry_after_secs: u64 },
}

impl From<Refusal> for AuthError {
    fn from(r: Refusal) -> AuthError {
        match r {
            Refusal::Denied => AuthError::Denied,
            Refusal::Throttled { retry_after_secs } => AuthError::Throttled { retry_after_secs },
        }
    }
}

#[derive(Clone)]
struct Snapshot {
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
type Key = (String, Fingerprint);

pub struct Credentials {
    db: Db,
    /// HMAC-SHA-256 under a random key of this process, the key already
    /// absorbed: each fingerprint clones it, which saves hashing the key's
    /// two pads per callback.
    keyed_mac: Hmac<Sha256>,
    /// Only channels that exist are cached, so the cache is bounded by the
    /// channels table, whatever ids callers make up.
    channels: moka::sync::Cache<String, Snapshot>,
    /// The hash each remembered password matched; only successes are
    /// stored. Callbacks arriving together with one new password share one
    /// verification (moka coalesces them, and lets another waiter take over
    /// when the first one's client disconnects), so a burst pays argon2
    /// once, and nothing stays behind when clients go away.
    verified: moka::future::Cache<Key, Arc<str>>,
    /// Verifications under way, for tests and metrics.
    flights: Arc<AtomicUsize>,
    /// A hash of a random password with the production parameters, so that
    /// an unknown channel costs the same as a wrong password.
    dummy_hash: Arc<str>,
    pool: Pool,
    limiter: Limiter,
}

impl Credentials {
    pub async fn new(db: Db, cfg: &AuthConfig) -> Credentials {
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
            keyed_mac: Hmac::new_from_slice(&hmac_key).expect("any key length"),
            channels: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(cfg.credential_ttl)
                .build(),
            verified: moka::future::Cache::new(CACHE_CAPACITY),
            flights: Arc::default(),
            dummy_hash: dummy_hash.into(),
            pool: Pool::start(cfg.verification_permits()),
            limiter: Limiter::new(cfg),
        }
    }

    /// How many argon2 verifications this process has run.
    pub fn verifications(&self) -> u64 {
        self.pool.verifications()
    }

    /// Verifications waiting or running, and passwords remembered: what
    /// authentication holds in memory besides the channels.
    pub async fn held(&self) -> (usize, u64) {
        self.verified.run_pending_tasks().await;
        (
            self.flights.load(Ordering::Relaxed),
            self.verified.entry_count(),
        )
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
        // Twice at most: a remembered password whose hash is no longer
        // valid (the password was changed) is forgotten and checked again.
        for _ in 0..2 {
            let hash = match self.verified.get(&key).await {
                Some(hash) => {
                    metrics::counter!("koostatus_credential_cache_hits_total").increment(1);
                    hash
                }
                None => self
                    .verified
                    .try_get_with(
                        key.clone(),
                        self.verify_new(&snapshot, presented, client, channel.as_str()),
                    )
                    .await
                    .map_err(|refusal| AuthError::from((*refusal).clone()))?,
            };
            if snapshot.valid_hashes(Utc::now()).any(|h| *h == hash) {
                return Ok(());
            }
            self.verified.invalidate(&key).await;
        }
        Err(AuthError::Denied)
    }

    /// A password not remembered: spends the guessing budget, then argon2
    /// against each valid hash; the hash it matched.
    async fn verify_new(
        &self,
        snapshot: &Snapshot,
        presented: &[u8],
        client: Option<IpAddr>,
        channel: &str,
    ) -> Result<Arc<str>, Refusal> {
        let _flight = Flight::enter(&self.flights);
        if let Err(retry_after_secs) = self.limiter.attempt(client, channel) {
            metrics::counter!("koostatus_auth_throttled_total").increment(1);
            return Err(Refusal::Throttled { retry_after_secs });
        }
        for hash in snapshot.valid_hashes(Utc::now()) {
            if self.pool.verify(hash.clone(), presented).await {
                return Ok(hash.clone());
            }
        }
        metrics::counter!("koostatus_auth_failures_total").increment(1);
        Err(Refusal::Denied)
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
        let _flight = Flight::enter(&self.flights);
        self.pool
            .verify(self.dummy_hash.clone(), presented.unwrap_or_default())
            .await;
        metrics::counter!("koostatus_auth_failures_total").increment(1);
        AuthError::Denied
    }

    fn fingerprint(&self, channel: &ChannelId, presented: &[u8]) -> Fingerprint {
        let mut mac = self.keyed_mac.clone();
        mac.update(channel.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(presented);
        mac.finalize().into_bytes().into()
    }

    async fn snapshot(&self, channel: &ChannelId) -> Result<Option<Snapshot>, sqlx::Error> {
        if let Some(s) = self.channels.get(channel.as_str()) {
            return Ok(Some(s));
        }
        let Some(row) = self.db.channel_credentials(channel.to_string()).await? else {
            self.channels.invalidate(channel.as_str());
            return Ok(None);
        };
        let previous = row
            .previous_password_hash
            .zip(row.previous_password_expires_at);
        let snapshot = Snapshot {
            enabled: row.enabled,
            current: row.password_hash.into(),
            previous: previous.map(|(h, until)| (h.into(), until)),
        };
        self.channels
            .insert(channel.as_str().to_owned(), snapshot.clone());
        Ok(Some(snapshot))
    }
}

/// Counts a verification from its start until it ends or is dropped (its
/// client went away).
struct Flight(Arc<AtomicUsize>);

impl Flight {
    fn enter(count: &Arc<AtomicUsize>) -> Flight {
        count.fetch_add(1, Ordering::Relaxed);
        Flight(count.clone())
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
