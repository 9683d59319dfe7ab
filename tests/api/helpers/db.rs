//! Every test gets its own database, cloned from a template migrated once,
//! and dropped at the end.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koostatus::config::{Config, DatabaseUrl};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};

pub const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432";

fn admin_options() -> PgConnectOptions {
    format!("{SERVER_URL}/postgres").parse().unwrap()
}

/// A template name that changes whenever a migration does, so a stale
/// template from an older schema is never cloned.
fn template_name() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        for b in f
            .file_name()
            .unwrap()
            .as_encoded_bytes()
            .iter()
            .chain(&std::fs::read(&f).unwrap())
        {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("koostatus_test_tmpl_{hash:016x}")
}

pub fn database_config(url: &str) -> koostatus::config::DatabaseConfig {
    let mut cfg = Config::default().database;
    cfg.url = DatabaseUrl::parse(url).unwrap();
    cfg
}

/// Creates an empty database owned by the test; dropped with the guard.
pub async fn empty_database() -> TestDatabase {
    let name = unique_name();
    let mut admin = PgConnection::connect_with(&admin_options()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    TestDatabase { name }
}

/// Creates a database with the current schema, cloned from the template.
pub async fn migrated_database() -> TestDatabase {
    let template = template_name();
    let mut admin = PgConnection::connect_with(&admin_options()).await.unwrap();
    // Test binaries and threads race to build the template; one builds it.
    sqlx::query("select pg_advisory_lock(7466)")
        .execute(&mut admin)
        .await
        .unwrap();
    let exists: Option<i32> = sqlx::query_scalar("select 1 from pg_database where datname = $1")
        .bind(&template)
        .fetch_optional(&mut admin)
        .await
        .unwrap();
    if exists.is_none() {
        let building = format!("{template}_building");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {building}"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {building}")))
            .execute(&mut admin)
            .await
            .unwrap();
        koostatus::db::migrations::run(&database_config(&format!("{SERVER_URL}/{building}")))
            .await
            .unwrap();
        // Renaming only when complete means a half-built template is never used.
        rename_when_idle(&mut admin, &building, &template).await;
    }
    sqlx::query("select pg_advisory_unlock(7466)")
        .execute(&mut admin)
        .await
        .unwrap();
    let name = unique_name();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "create database {name} template {template}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    TestDatabase { name }
}

async fn rename_when_idle(admin: &mut PgConnection, from: &str, to: &str) {
    // The migration connection closes in the background; wait for it.
    for _ in 0..100 {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "alter database {from} rename to {to}"
        )))
        .execute(&mut *admin)
        .await;
        if r.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot rename the template database {from}");
}

fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "koostatus_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct TestDatabase {
    pub name: String,
}

impl TestDatabase {
    pub fn url(&self) -> String {
        format!("{SERVER_URL}/{}", self.name)
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url())
            .await
            .unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context; a thread with its own runtime
        // can block on the drop without stalling the test's runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(mut admin) = PgConnection::connect_with(&admin_options()).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "drop database if exists {name} with (force)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                })
        })
        .join();
    }
}

/// Changes held back by a transaction that ends without notifying anybody,
/// as a write of another channel, or one that writes no change, would:
/// `start` opens a transaction for an early change (its xid comes first)
/// and then the holder; a change committed after that waits for the
/// holder. `commit_early` commits one change of `channel` under the early
/// xid, readable at once; `release` ends the holder.
pub struct HeldBack {
    early: sqlx::Transaction<'static, sqlx::Postgres>,
    holder: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl HeldBack {
    pub async fn start(pool: &PgPool) -> HeldBack {
        let xid = "select pg_current_xact_id()";
        let mut early = pool.begin().await.unwrap();
        sqlx::query(xid).execute(&mut *early).await.unwrap();
        let mut holder = pool.begin().await.unwrap();
        sqlx::query(xid).execute(&mut *holder).await.unwrap();
        HeldBack { early, holder }
    }

    /// Commits the early change; the holder stays open.
    pub async fn commit_early(self, channel: &str, message_id: &str) -> Holder {
        let HeldBack { mut early, holder } = self;
        sqlx::query(
            "insert into message_changes (channel_id, message_id, user_number, status, changed_at)
             values ($1, $2, 'u1', 'delivered', now())",
        )
        .bind(channel)
        .bind(message_id)
        .execute(&mut *early)
        .await
        .unwrap();
        // As the service's writers announce what they commit (V20).
        koostatus::db::changes::notify(&mut *early, &[channel.to_owned()])
            .await
            .unwrap();
        early.commit().await.unwrap();
        Holder(holder)
    }
}

/// The transaction holding changes back; `release` commits it.
pub struct Holder(sqlx::Transaction<'static, sqlx::Postgres>);

impl Holder {
    pub async fn release(self) {
        self.0.commit().await.unwrap();
    }
}
