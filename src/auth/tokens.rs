//! API tokens of the read API: `kst_` and 64 hex digits (256 random bits),
//! stored only as their SHA-256. A token needs no slow hash: it is random,
//! not chosen by a person, so its hash cannot be guessed backwards.

use std::sync::Arc;
use std::time::Duration;

use crate::db::Db;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::db;

pub const PREFIX: &str = "kst_";
/// Stream tickets (see [`Tokens::issue_ticket`]): another prefix, so that a
/// ticket is never taken for a token, nor a token for a ticket.
pub const TICKET_PREFIX: &str = "kstt_";
const HEX_LEN: usize = 64;
/// `last_used_at` is written at most this often per token and instance.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

pub type TokenHash = [u8; 32];

/// A new token and the hash to store.
pub fn generate() -> (String, TokenHash) {
    generate_with(PREFIX)
}

fn generate_with(prefix: &str) -> (String, TokenHash) {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).expect("the OS random source works");
    let token = format!("{prefix}{}", hex(&secret));
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
    well_formed_with(token, PREFIX)
}

fn well_formed_with(token: &str, prefix: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|h| {
        h.len() == HEX_LEN
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What a token may read.
#[derive(Debug, Clone)]
pub struct Scope {
    pub name: String,
    /// The token's hash: how a long-lived stream checks that its token
    /// still exists.
    pub token: TokenHash,
    /// None: every channel.
    pub channels: Option<Arc<[String]>>,
    /// Made with `--register`: may also register messages (SPEC §13).
    pub register: bool,
}

impl Scope {
    pub fn allows(&self, channel_id: &str) -> bool {
        self.channels
            .as_ref()
            .is_none_or(|c| c.iter().any(|id| id == channel_id))
    }
}

/// Tokens held at most in each cache: far above any real deployment.
const CACHE_CAPACITY: u64 = 100_000;

pub struct Tokens {
    db: Db,
    /// Known tokens only, so bounded by the table; a revoked token is gone
    /// from every instance within `auth.credential_ttl`.
    cache: moka::sync::Cache<TokenHash, Scope>,
    /// Tokens whose use was recorded within TOUCH_EVERY, by name.
    touched: moka::sync::Cache<String, ()>,
}

impl Tokens {
    pub fn new(db: Db, ttl: Duration) -> Tokens {
        Tokens {
            db,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(ttl)
                .build(),
            touched: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(TOUCH_EVERY)
                .build(),
        }
    }

    /// The scope of a valid token, None for an unknown one.
    pub async fn authenticate(&self, token: &str) -> sqlx::Result<Option<Scope>> {
        if !well_formed(token) {
            return Ok(None);
        }
        self.authenticate_hash(hash(token)).await
    }

    /// As [`Tokens::authenticate`], for the token with this hash: cached for
    /// `ttl`, so a revoked token is refused on every instance within `ttl`.
    pub async fn authenticate_hash(&self, key: TokenHash) -> sqlx::Result<Option<Scope>> {
        let scope = match self.cache.get(&key) {
            Some(scope) => scope,
            None => {
                let Some(row) = self.db.token(key).await? else {
                    self.cache.invalidate(&key);
                    return Ok(None);
                };
                let scope = Scope {
                    name: row.name,
                    token: key,
                    channels: row.channels.map(Into::into),
                    register: row.can_register,
                };
                self.cache.insert(key, scope.clone());
                scope
            }
        };
        self.touch(&scope.name);
        Ok(Some(scope))
    }

    /// A stream ticket for the caller's token, valid until the returned time
    /// (or until the token is revoked: deleting the token deletes it).
    pub async fn issue_ticket(
        &self,
        scope: &Scope,
        ttl: Duration,
    ) -> sqlx::Result<Option<(String, DateTime<Utc>)>> {
        let (ticket, ticket_hash) = generate_with(TICKET_PREFIX);
        let expires_at =
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX);
        let token = scope.token;
        let stored = self
            .db
            .insert_ticket(ticket_hash, token, expires_at)
            .await?;
        Ok(stored.then_some((ticket, expires_at)))
    }

    /// The scope of the token behind an unexpired ticket. Not cached: a
    /// ticket is redeemed once per stream (re)connection.
    pub async fn redeem_ticket(&self, ticket: &str) -> sqlx::Result<Option<Scope>> {
        if !well_formed_with(ticket, TICKET_PREFIX) {
            return Ok(None);
        }
        let ticket_hash = hash(ticket);
        let token = self.db.ticket_token(ticket_hash).await?;
        match token.and_then(|t| TokenHash::try_from(t.as_slice()).ok()) {
            Some(token) => self.authenticate_hash(token).await,
            None => Ok(None),
        }
    }

    /// Records the use in the background, at most once per TOUCH_EVERY.
    fn touch(&self, name: &str) {
        if self.touched.contains_key(name) {
            return;
        }
        self.touched.insert(name.to_owned(), ());
        let (name, now, span) = (name.to_owned(), Utc::now(), tracing::Span::current());
        self.db.spawn(|pool| async move {
            if let Err(e) = db::tokens::touch(&pool, &name, now).await {
                tracing::warn!(parent: &span, error = %e, "recording a token's last use failed");
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
        let (ticket, _) = generate_with(TICKET_PREFIX);
        assert!(!well_formed(&ticket) && well_formed_with(&ticket, TICKET_PREFIX));
        assert!(!well_formed_with(&a, TICKET_PREFIX));
    }
}
