//! The sections of the configuration, one struct each, as `config.toml`
//! lays them out (that file documents every setting and its default).

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::DatabaseUrl;

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
    /// How long a batch that forms while another is being written waits
    /// for that write to end, unless it fills first.
    #[serde(with = "humantime_serde")]
    pub writer_wait: Duration,
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
    pub requests: LogRequests,
}

/// Which requests get a line in the log (`log.requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogRequests {
    /// Every request.
    All,
    /// Requests answered 400 or above.
    Errors,
    /// None; warnings and errors of the service are still logged.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

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
