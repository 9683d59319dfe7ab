//! Settings: built-in defaults < config file < environment < command-line flags.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;

mod url;
pub use url::{DatabaseUrl, Ssl, SslMode};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP service binds.
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    pub webhook: WebhookConfig,
    pub ingest: IngestConfig,
    pub auth: AuthConfig,
    pub server: ServerConfig,
    pub retention: RetentionConfig,
    pub reports: ReportsConfig,
    pub log: LogConfig,
    pub cors: CorsConfig,
    pub events: EventsConfig,
    pub forward: ForwardConfig,
    pub tls: TlsConfig,
    pub metrics: MetricsConfig,
}

/// Where Prometheus scrapes besides `listen`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A plain-HTTP address of its own for `/metrics`, `/healthz` and
    /// `/readyz` only (Prometheus scrapes from inside, while `listen` may
    /// speak HTTPS to the outside); unset: those routes on `listen` only.
    pub listen: Option<SocketAddr>,
}

/// HTTPS on `listen` (SPEC §14): both files, or neither for plain HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, the server's certificate first.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The two files when HTTPS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    /// A replica for the read API's message queries; None uses `url`.
    pub read_url: Option<DatabaseUrl>,
    pub max_connections: NonZeroU32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Pooled connections are replaced after this long, so that a renewed
    /// client certificate or CA file is used without a restart.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    pub auto_migrate: bool,
}

impl DatabaseConfig {
    /// How long a write batch's statement and commit may take before it is
    /// given up with 503. Half a second past the server's own statement
    /// timeout: only a commit waiting for a synchronous standby (which the
    /// statement timeout does not cover) or a server that stopped answering
    /// reaches it.
    pub fn commit_deadline(&self) -> Duration {
        self.statement_timeout + Duration::from_millis(500)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Callbacks only from these networks (the client address, as
    /// auth.trusted_proxies tells it); empty: from anywhere.
    pub allowed_networks: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Most reports written by one statement and transaction; 1 writes each
    /// report in its own transaction.
    pub batch_max: NonZeroUsize,
    /// How long a batch waits for more reports once it has one.
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Batches written at once, each on its own connection.
    pub writers: NonZeroUsize,
    /// Reports waiting for a writer at most; more requests wait to queue.
    pub queue_capacity: NonZeroUsize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// 0 means one per CPU core.
    pub max_concurrent_verifications: usize,
    #[serde(with = "humantime_serde")]
    pub credential_ttl: Duration,
    /// Authentication attempts that need argon2, per client and per channel.
    pub client_failures_per_minute: NonZeroU32,
    pub client_failure_burst: NonZeroU32,
    pub channel_failures_per_minute: NonZeroU32,
    pub channel_failure_burst: NonZeroU32,
    /// Peers whose X-Forwarded-For / X-Real-IP name the real client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub workers: usize,
    pub max_connections: NonZeroUsize,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    #[serde(with = "humantime_serde")]
    pub client_request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// A comment line on an idle `/events` stream this often, so that load
    /// balancers do not close it.
    #[serde(with = "humantime_serde")]
    pub events_heartbeat: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// `serve` prunes messages whose last change is older than this; 0 is off.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// A message still `sent` this long after it was sent becomes
    /// `unreported` (per channel: `channel set --unreported-after`).
    #[serde(with = "humantime_serde")]
    pub unreported_after: Duration,
    /// How often `serve` looks for messages due to become `unreported`.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`scheme://host[:port]`) whose pages may call `/api/v1/`.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// How long a stream ticket opens `/events`.
    #[serde(with = "humantime_serde")]
    pub ticket_ttl: Duration,
    /// Events waiting for one slow stream at most; beyond, it is closed.
    pub buffer: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Most changes in one delivery.
    pub batch_max: NonZeroU32,
    /// A delivery not answered with a 2xx within this has failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A subscription failing for this long, without a success, is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// Targets on loopback, private, link-local or multicast addresses.
    pub allow_private_targets: bool,
    /// Encrypts the subscriptions' signing secrets in the database: base64
    /// of 32 bytes. Without it nothing is forwarded.
    pub secret_key: Option<secrecy::SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// The defaults are `config.toml` of this repository, built into the
/// binary: the file documents every setting and is the only place a
/// default is written.
const DEFAULTS: &str = include_str!("../../config.toml");

impl Default for Config {
    fn default() -> Self {
        Figment::from(Toml::string(DEFAULTS))
            .extract()
            .expect("the built-in config.toml is a valid configuration")
    }
}

/// What the command line says, which wins over every other source.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub database_url: Option<String>,
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl AuthConfig {
    pub fn verification_permits(&self) -> usize {
        match self.max_concurrent_verifications {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        }
    }
}

impl Config {
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        match &overrides.config_file {
            Some(path) if !path.is_file() => {
                return Err(ConfigError(format!(
                    "The config file {} does not exist or is not a file.",
                    path.display()
                )));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("config.toml").is_file() => {
                figment = figment.merge(Toml::file_exact("config.toml"))
            }
            None => {}
        }
        figment = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(Env::prefixed("KOOSTATUS_").split("__"));
        if let Some(url) = &overrides.database_url {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::default("listen", listen));
        }
        let config: Config = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
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
        // One read of the feed (live/reader.rs) must fit.
        if !(crate::live::READ_PAGE as usize..=1_000_000).contains(&self.events.buffer) {
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

fn describe(errors: figment::Error) -> ConfigError {
    let sentences: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            format!("Bad setting `{path}`{source}: {}.", e.kind)
        })
        .collect();
    ConfigError(sentences.join(" "))
}

#[cfg(test)]
mod tests;
