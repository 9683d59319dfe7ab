//! Slows down password guessing: every authentication that would cost an
//! argon2 check (anything but a remembered valid password) spends one unit
//! of the client's and of the channel's budget; an empty budget answers 429
//! without running argon2. Valid, remembered passwords never spend budget,
//! so KooMessage's callbacks pass while a channel is under attack.

use std::net::IpAddr;
use std::num::NonZeroU32;

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::AuthConfig;

pub struct Limiter {
    per_client: DefaultKeyedRateLimiter<IpAddr>,
    per_channel: DefaultKeyedRateLimiter<String>,
    trusted_proxies: Vec<IpAddr>,
}

fn quota(per_minute: NonZeroU32, burst: NonZeroU32) -> Quota {
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl Limiter {
    pub fn new(cfg: &AuthConfig) -> Limiter {
        Limiter {
            per_client: RateLimiter::keyed(quota(
                cfg.client_failures_per_minute,
                cfg.client_failure_burst,
            )),
            per_channel: RateLimiter::keyed(quota(
                cfg.channel_failures_per_minute,
                cfg.channel_failure_burst,
            )),
            trusted_proxies: cfg.trusted_proxies.clone(),
        }
    }

    /// The address of the client: the peer, unless the peer is a trusted
    /// proxy, then the nearest address in `X-Forwarded-For` that is not one
    /// (else `X-Real-IP`). All KooMessage traffic comes through one load
    /// balancer: limiting its address would throttle everyone.
    pub fn client(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let forwarded = header("x-forwarded-for").and_then(|list| {
            list.rsplit(',')
                .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                .find(|a| !self.trusted_proxies.contains(a))
        });
        forwarded
            .or_else(|| header("x-real-ip")?.trim().parse().ok())
            .or(Some(peer))
    }

    /// Spends one attempt of the client's and the channel's budget. Err
    /// holds the seconds until an attempt is allowed again.
    pub fn attempt(&self, client: Option<IpAddr>, channel: &str) -> Result<(), u64> {
        let now = DefaultClock::default().now();
        let wait = |e: governor::NotUntil<_>| e.wait_time_from(now).as_secs() + 1;
        if let Some(ip) = client {
            self.per_client.check_key(&ip).map_err(wait)?;
        }
        self.per_channel
            .check_key(&channel.to_owned())
            .map_err(wait)
    }

    /// Forgets clients and channels whose budget is full again, so the maps
    /// stay small whatever addresses and ids callers make up.
    pub fn forget_idle(&self) {
        self.per_client.retain_recent();
        self.per_client.shrink_to_fit();
        self.per_channel.retain_recent();
        self.per_channel.shrink_to_fit();
    }
}
