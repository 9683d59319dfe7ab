//! API tokens of the read API: `kst_` and 64 hex digits (256 random bits),
//! stored only as their SHA-256. A token needs no slow hash: it is random,
//! not chosen by a person, so its hash cannot be guessed backwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::db::Db;
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::db;

pub const PREFIX: &str = "kst_";
const HEX_LEN: usize = 64;
/// `last_used_at` is written at most this often per token and instance.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

pub type TokenHash = [u8; 32];

/// A new token and the hash to store.
pub fn generate() -> (String, TokenHash) {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).expect("the OS random source works");
    let token = format!("{PREFIX}{}", hex(&secret));
    let hash = hash(&token);
    (token, hash)
}

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn well_formed(token: &str) -> bool {
    token.strip_prefix(PREFIX).is_some_and(|h| {
        h.len() == HEX_LEN
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What a token may read.
#[derive(Debug, Clone)]
pub struct Scope {
    pub name: String,
    /// None: every channel.
    pub channels: Option<Arc<[String]>>,
}

impl Scope {
    pub fn allows(&self, channel_id: &str) -> bool {
        self.channels
            .as_ref()
            .is_none_or(|c| c.iter().any(|id| id == channel_id))
    }
}

pub struct Tokens {
    db: Db,
    ttl: Duration,
    /// Known tokens only, so bounded by the table; a revoked token is gone
    /// from every instance within `ttl`.
    cache: RwLock<HashMap<TokenHash, (Instant, Scope)>>,
    touched: Mutex<HashMap<String, Instant>>,
}

impl Tokens {
    pub fn new(db: Db, ttl: Duration) -> Tokens {
        Tokens {
            db,
            ttl,
            cache: RwLock::default(),
            touched: Mutex::default(),
        }
    }

    /// The scope of a valid token, None for an unknown one.
    pub async fn authenticate(&self, token: &str) -> sqlx::Result<Option<Scope>> {
        if !well_formed(token) {
            return Ok(None);
        }
        let key = hash(token);
        let cached = self
            .cache
            .read()
            .expect("lock not poisoned")
            .get(&key)
            .cloned();
        let scope = match cached.filter(|(at, _)| at.elapsed() < self.ttl) {
            Some((_, scope)) => scope,
            None => {
                let Some(row) = self
                    .db
                    .run(|pool| async move { db::tokens::find_by_hash(&pool, &key).await })
                    .await?
                else {
                    self.cache.write().expect("lock not poisoned").remove(&key);
                    return Ok(None);
                };
                let scope = Scope {
                    name: row.name,
                    channels: row.channels.map(Into::into),
                };
                self.cache
                    .write()
                    .expect("lock not poisoned")
                    .insert(key, (Instant::now(), scope.clone()));
                scope
            }
        };
        self.touch(&scope.name);
        Ok(Some(scope))
    }

    /// Records the use in the background, at most once per TOUCH_EVERY.
    fn touch(&self, name: &str) {
        {
            let mut touched = self.touched.lock().expect("lock not poisoned");
            if touched
                .get(name)
                .is_some_and(|at| at.elapsed() < TOUCH_EVERY)
            {
                return;
            }
            touched.insert(name.to_owned(), Instant::now());
        }
        let (name, now) = (name.to_owned(), Utc::now());
        self.db.spawn(|pool| async move {
            if let Err(e) = db::tokens::touch(&pool, &name, now).await {
                tracing::warn!(error = %e, "recording a token's last use failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let (a, ha) = generate();
        let (b, hb) = generate();
        assert!(well_formed(&a) && well_formed(&b));
        assert_eq!(a.len(), 68);
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(hash(&a), ha);
        assert!(!well_formed("kst_short"));
        assert!(!well_formed(&a.to_uppercase()));
    }
}
