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
    /// The URL without libpq's TLS parameters, for tokio-postgres, which
    /// knows `sslmode` only up to `require` (the TLS it gets is built from
    /// `ssl` instead).
    url_for_migrations: SecretString,
    hosts: Vec<PgConnectOptions>,
    ssl: Ssl,
}

/// libpq's TLS parameters of a URL (SPEC §14), with libpq's meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ssl {
    pub mode: SslMode,
    /// `sslrootcert`: the CA certificates to trust (PEM); else the public
    /// web roots.
    pub root_cert: Option<std::path::PathBuf>,
    /// `sslcert` and `sslkey`: a client certificate and its key (PEM).
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// Taken as `prefer` (TLS first; libpq tries plain text first): with a
    /// server that takes both, the connection is encrypted.
    Allow,
    /// libpq's default: TLS when the server offers it, else plain.
    #[default]
    Prefer,
    /// TLS, the certificate unchecked (checked against `sslrootcert` when
    /// one is given, as libpq does).
    Require,
    /// TLS, the certificate chain checked, not the host name.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
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
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let mut ssl = Ssl::default();
        let mut kept = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let file = || Some(std::path::PathBuf::from(value.as_ref()));
            match key.as_ref() {
                "sslmode" => ssl.mode = SslMode::parse(&value).ok_or(
                    "its sslmode must be disable, allow, prefer, require, verify-ca or verify-full",
                )?,
                "sslrootcert" => ssl.root_cert = file(),
                "sslcert" => ssl.client_cert = file(),
                "sslkey" => ssl.client_key = file(),
                _ => {
                    kept.append_pair(&key, &value);
                }
            }
        }
        if ssl.client_cert.is_some() != ssl.client_key.is_some() {
            return Err("its sslcert and sslkey go together");
        }
        // sqlx reads the same parameters for its connections, but treats
        // `allow` as `disable` and `require` with a root certificate as
        // unchecked; libpq and our migrations' TLS (crate::tls) do not.
        let sqlx_mode = match ssl.mode {
            SslMode::Allow => Some(sqlx::postgres::PgSslMode::Prefer),
            SslMode::Require if ssl.root_cert.is_some() => {
                Some(sqlx::postgres::PgSslMode::VerifyCa)
            }
            _ => None,
        };
        let hosts = match sqlx_mode {
            Some(mode) => hosts.into_iter().map(|o| o.ssl_mode(mode)).collect(),
            None => hosts,
        };
        let kept = kept.finish();
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{kept}")
        };
        Ok(DatabaseUrl {
            url: url.into(),
            url_for_migrations: format!("{scheme}://{authority}{path}{query}").into(),
            hosts,
            ssl,
        })
    }

    /// The URL's TLS parameters.
    pub fn ssl(&self) -> &Ssl {
        &self.ssl
    }

    /// The URL without its TLS parameters, for tokio-postgres.
    pub fn for_migrations(&self) -> &str {
        self.url_for_migrations.expose_secret()
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
