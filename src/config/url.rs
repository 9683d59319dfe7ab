//! Database URLs, parsed when the configuration is read: a bad one stops
//! start-up naming its setting, and the database layer gets connection
//! options it need not check again.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use sqlx::postgres::PgConnectOptions;

/// A PostgreSQL URL and its connection options, one per host: like libpq,
/// a URL may name several (`postgres://u@h1:5432,h2:5433/db`), tried in
/// order (see `db::connect`). It may hold a password: `Debug` shows only
/// hosts, ports and database.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: SecretString,
    hosts: Vec<PgConnectOptions>,
}

impl DatabaseUrl {
    /// Says what is wrong without quoting the URL.
    pub fn parse(url: &str) -> Result<DatabaseUrl, &'static str> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err("it must start with postgres:// or postgresql://");
        };
        if !matches!(scheme, "postgres" | "postgresql") {
            return Err("it must start with postgres:// or postgresql://");
        }
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (user, host_list) = match authority.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), authority),
        };
        if host_list.contains(',') && host_list.split(',').any(str::is_empty) {
            return Err("it names an empty host in its list of hosts");
        }
        // sqlx's parse error can quote the URL; it takes one host, so each
        // is parsed in a URL of its own.
        let hosts = host_list
            .split(',')
            .map(|host| {
                let single = format!("{scheme}://{user}{host}{tail}");
                PgConnectOptions::from_str(&single).map_err(|_| "it is not a valid PostgreSQL URL")
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DatabaseUrl {
            url: url.into(),
            hosts,
        })
    }

    /// The first host's options.
    pub fn options(&self) -> &PgConnectOptions {
        &self.hosts[0]
    }

    /// Every host's options, in the URL's order.
    pub fn hosts(&self) -> &[PgConnectOptions] {
        &self.hosts
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
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|o| format!("{}:{}", o.get_host(), o.get_port()))
            .collect();
        let database = self.options().get_database().unwrap_or("postgres");
        write!(f, "DatabaseUrl({}/{database})", hosts.join(","))
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DatabaseUrl, D::Error> {
        let url = SecretString::deserialize(d)?;
        DatabaseUrl::parse(url.expose_secret()).map_err(serde::de::Error::custom)
    }
}
