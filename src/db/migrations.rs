//! Schema management: creating the database and applying the refinery
//! migrations of `migrations/`. refinery has no sqlx driver, so this runs
//! over tokio-postgres.

use std::str::FromStr;

use anyhow::Context;

use crate::config::{DatabaseConfig, SslMode};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Held while migrating so that instances starting together do not apply the
/// same migration twice.
const MIGRATION_LOCK: i64 = 0x6b6f_6f73_7461_7475;

/// The version of the newest migration built into this binary.
pub fn latest_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

pub struct Applied {
    pub version: i64,
    pub name: String,
}

/// Applies pending migrations and returns those it applied, oldest first.
pub async fn run(cfg: &DatabaseConfig) -> anyhow::Result<Vec<Applied>> {
    run_to(cfg, None).await
}

/// Applies pending migrations up to `version` (all when None): an upgrade
/// test fills a database as an older build left it, then migrates it.
pub async fn run_to(cfg: &DatabaseConfig, version: Option<i32>) -> anyhow::Result<Vec<Applied>> {
    let target = version.map_or(refinery::Target::Latest, refinery::Target::Version);
    let (mut client, describe) = connect(cfg, None).await?;
    client
        .execute("select pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .with_context(|| format!("Cannot lock {describe} for migrating."))?;
    let report = embedded::migrations::runner()
        .set_target(target)
        .run_async(&mut client)
        .await
        .with_context(|| format!("Migrating {describe} failed."))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| Applied {
            version: i64::from(m.version()),
            name: m.name().to_owned(),
        })
        .collect())
}

/// Creates the configured database when it does not exist yet; returns
/// whether it did.
pub async fn create_database_if_missing(cfg: &DatabaseConfig) -> anyhow::Result<bool> {
    let name = super::connect::connect_options(cfg)
        .get_database()
        .unwrap_or("postgres")
        .to_owned();
    let (client, describe) = connect(cfg, Some("postgres")).await?;
    let exists = client
        .query_opt("select 1 from pg_database where datname = $1", &[&name])
        .await
        .with_context(|| format!("Cannot read the list of databases of {describe}."))?
        .is_some();
    if exists {
        return Ok(false);
    }
    // CREATE DATABASE takes no parameters; the name is quoted as an identifier.
    match client
        .batch_execute(&format!("create database {}", quote_ident(&name)))
        .await
    {
        Ok(()) => Ok(true),
        // Another instance created it in the meantime.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
            Ok(false)
        }
        Err(e) => {
            Err(e).with_context(|| format!("Cannot create database `{name}` through {describe}."))
        }
    }
}

/// What `/readyz` asks of the database.
pub struct Readiness {
    /// The schema version recorded by refinery.
    pub version: Option<i64>,
    /// The server takes writes: not a standby, not read-only (a primary
    /// being demoted in a failover).
    pub writable: bool,
}

pub async fn readiness(db: impl sqlx::PgExecutor<'_>) -> sqlx::Result<Readiness> {
    sqlx::query_as!(
        Readiness,
        r#"
        select (select max(version)::int8 from refinery_schema_history) as "version",
               not pg_is_in_recovery()
                   and current_setting('transaction_read_only') = 'off' as "writable!"
        "#
    )
    .fetch_one(db)
    .await
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn connect(
    cfg: &DatabaseConfig,
    database: Option<&str>,
) -> anyhow::Result<(tokio_postgres::Client, String)> {
    let mut opts = super::connect::connect_options(cfg);
    if let Some(db) = database {
        opts = opts.database(db);
    }
    let describe = match cfg.url.hosts() {
        [_] => super::connect::describe(&opts),
        hosts => format!(
            "database `{}` on {}",
            opts.get_database().unwrap_or("postgres"),
            hosts
                .iter()
                .map(super::connect::address)
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    let mut pg = tokio_postgres::Config::from_str(cfg.url.for_migrations()).map_err(|_| {
        anyhow::anyhow!("Bad setting `database.url`: it is not a valid PostgreSQL URL.")
    })?;
    if let Some(db) = database {
        pg.dbname(db);
    }
    pg.connect_timeout(cfg.connect_timeout);
    pg.application_name("koostatus-migrate");
    // Of several hosts, the one that accepts writes (as db::connect).
    pg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    // TLS as the URL's sslmode says (libpq's meaning; see crate::tls).
    let tls = crate::tls::postgres_client(cfg.url.ssl())
        .context("Bad setting `database.url`: its TLS files do not load")?;
    pg.ssl_mode(match cfg.url.ssl().mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let hosts = u32::try_from(cfg.url.hosts().len()).unwrap_or(u32::MAX);
    let within = cfg.connect_timeout * hosts;
    let timed_out = || {
        anyhow::anyhow!(
            "Cannot connect to {describe}: no answer within {}.",
            humantime::format_duration(cfg.connect_timeout)
        )
    };
    let client = match tls {
        None => open(&pg, tokio_postgres::NoTls, within).await,
        Some(tls) => {
            open(
                &pg,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                within,
            )
            .await
        }
    }
    .map_err(|e| match e {
        Some(e) => anyhow::anyhow!("Cannot connect to {describe}: {}.", brief(&e)),
        None => timed_out(),
    })?;
    Ok((client, describe))
}

/// Connects with `tls` within `within` (Err(None): no answer in time) and
/// drives the connection in a task of its own.
async fn open<T>(
    pg: &tokio_postgres::Config,
    tls: T,
    within: std::time::Duration,
) -> Result<tokio_postgres::Client, Option<tokio_postgres::Error>>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = tokio::time::timeout(within, pg.connect(tls))
        .await
        .map_err(|_| None)?
        .map_err(Some)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "migration connection ended with an error");
        }
    });
    Ok(client)
}

fn brief(e: &tokio_postgres::Error) -> String {
    let said = match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string()),
    };
    match crate::tls::certificate_trouble(&said) {
        Some(sentence) => format!("{sentence} ({said})"),
        None => said,
    }
}
