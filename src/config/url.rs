//! Database URLs, parsed when the configuration is read: a bad one stops
//! start-up naming its setting, and the database layer gets connection
//! options it need not check again.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use sqlx::postgres::PgConnectOptions;

/// A PostgreSQL URL and its connection options. It may hold a password:
/// `Debug` shows only host, port and database.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: SecretString,
    options: PgConnectOptions,
}

impl DatabaseUrl {
    /// Says what is wrong without quoting the URL.
    pub fn parse(url: &str) -> Result<DatabaseUrl, &'static str> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("it must start with postgres:// or postgresql://");
        }
        // sqlx's parse error can quote the URL.
        let options =
            PgConnectOptions::from_str(url).map_err(|_| "it is not a valid PostgreSQL URL")?;
        Ok(DatabaseUrl {
            url: url.into(),
            options,
        })
    }

    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }
}

/// The URL itself, for the migrations' tokio-postgres client.
impl ExposeSecret<str> for DatabaseUrl {
    fn expose_secret(&self) -> &str {
        self.url.expose_secret()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        write!(
            f,
            "DatabaseUrl({}:{}/{})",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("postgres")
        )
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DatabaseUrl, D::Error> {
        let url = SecretString::deserialize(d)?;
        DatabaseUrl::parse(url.expose_secret()).map_err(serde::de::Error::custom)
    }
}
