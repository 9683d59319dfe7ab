//! Settings: built-in defaults < config file < environment < command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;

mod sections;
mod url;
mod validate;

pub use sections::*;
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

/// How many changes a channel's live-events reader takes from the feed at
/// once. Here, not in `live`, because `events.buffer` must hold one read and
/// the settings are checked here.
pub const FEED_READ_PAGE: i64 = 2000;

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
