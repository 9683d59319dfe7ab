//! What the types cannot say about the settings: ranges, and settings that
//! must agree with each other. A bad one stops start-up with a sentence
//! naming it.

use std::time::Duration;

use super::{Config, ConfigError, FEED_READ_PAGE};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |setting: &str, why: &str| Err(ConfigError(format!("Bad setting `{setting}`: {why}.")));
        for (name, d) in [
            ("database.connect_timeout", self.database.connect_timeout),
            ("database.acquire_timeout", self.database.acquire_timeout),
            (
                "database.statement_timeout",
                self.database.statement_timeout,
            ),
            (
                "server.client_request_timeout",
                self.server.client_request_timeout,
            ),
            ("server.body_timeout", self.server.body_timeout),
            ("database.max_lifetime", self.database.max_lifetime),
            ("server.events_heartbeat", self.server.events_heartbeat),
        ] {
            if d.is_zero() {
                return bad(name, "must be longer than 0s");
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return bad(
                "tls",
                "`cert_file` and `key_file` go together: set both for HTTPS, or neither",
            );
        }
        if self.ingest.batch_max.get() > 10_000 {
            return bad("ingest.batch_max", "must be from 1 to 10000");
        }
        if self.ingest.writers.get() as u64 >= u64::from(self.database.max_connections.get()) {
            return bad(
                "ingest.writers",
                "must be below `database.max_connections`, which other requests need too",
            );
        }
        if self.ingest.batch_wait > Duration::from_secs(1) {
            return bad("ingest.batch_wait", "must be at most 1s");
        }
        if self.ingest.writer_wait > Duration::from_secs(5) {
            return bad("ingest.writer_wait", "must be at most 5s");
        }
        if self.webhook.max_body_bytes < 256 {
            return bad("webhook.max_body_bytes", "must be at least 256 bytes");
        }
        // The contract promises that a changed password takes effect within 5 s.
        if self.auth.credential_ttl > Duration::from_secs(5) {
            return bad("auth.credential_ttl", "must be at most 5s");
        }
        if self.reports.unreported_after < Duration::from_secs(1) {
            return bad("reports.unreported_after", "must be at least 1s");
        }
        if self.reports.sweep_interval < Duration::from_millis(100) {
            return bad("reports.sweep_interval", "must be at least 100ms");
        }
        if !self.retention.max_age.is_zero() && self.retention.interval < Duration::from_secs(1) {
            return bad("retention.interval", "must be at least 1s");
        }
        for origin in &self.cors.allowed_origins {
            if !is_origin(origin) {
                return bad(
                    "cors.allowed_origins",
                    &format!(
                        "`{origin}` is not an origin; write scheme://host or scheme://host:port, without a path"
                    ),
                );
            }
        }
        if self.events.ticket_ttl.is_zero() || self.events.ticket_ttl > Duration::from_secs(86_400)
        {
            return bad(
                "events.ticket_ttl",
                "must be longer than 0s and at most 24h",
            );
        }
        // One read of the feed must fit.
        if !(FEED_READ_PAGE as usize..=1_000_000).contains(&self.events.buffer) {
            return bad("events.buffer", "must be from 2000 to 1000000");
        }
        if self.forward.batch_max.get() > 10_000 {
            return bad("forward.batch_max", "must be from 1 to 10000");
        }
        // A delivery must end well within its lease (src/forward).
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.forward.timeout) {
            return bad("forward.timeout", "must be from 1s to 60s");
        }
        if self.forward.disable_after < Duration::from_secs(1) {
            return bad("forward.disable_after", "must be at least 1s");
        }
        if let Some(key) = &self.forward.secret_key {
            use base64::Engine;
            use secrecy::ExposeSecret;
            let decoded = base64::engine::general_purpose::STANDARD.decode(key.expose_secret());
            if decoded.map_or(true, |k| k.len() != 32) {
                return bad(
                    "forward.secret_key",
                    "must be base64 of 32 bytes, e.g. the output of `openssl rand -base64 32`",
                );
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return bad("log.filter", &e.to_string());
        }
        Ok(())
    }
}

/// `http://host` or `https://host:port`, as a browser sends it in `Origin`.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
}
