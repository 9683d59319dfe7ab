//! The state every handler shares: configuration, the database, the
//! credential and token caches, the writer, the live-events hub, and the
//! token that stops the background tasks (forwarding among them).

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::Credentials;
use crate::auth::tokens::Tokens;
use crate::config::Config;
use crate::db::Db;
use crate::live::Hub;
use crate::unreported::LastReports;
use crate::{db, ingest};

pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub credentials: Arc<Credentials>,
    pub tokens: Arc<Tokens>,
    pub writer: ingest::Writer,
    pub hub: Hub,
    /// Each channel's last accepted report, for `/metrics`.
    pub last_reports: Arc<LastReports>,
    /// Exports running on this instance, each holding a connection.
    pub exports: Arc<tokio::sync::Semaphore>,
    /// Encodes their pages at the lowest CPU priority.
    pub export_encoder: crate::export::Encoder,
    /// Cancelled on SIGTERM / Ctrl-C: ends the background tasks, and the
    /// `/events` streams, which would otherwise hold the graceful shutdown
    /// for its whole grace period.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Must be called on the main runtime (see [`Db`]).
    pub async fn new(config: Config, pool: PgPool) -> AppState {
        crate::metrics::handle();
        let read = db::read_pool(&config.database).await;
        let db = Db::new(pool, read);
        // Stops the background tasks (event streams and their readers,
        // LISTEN, token checks, limiter upkeep, scheduled pruning) on
        // SIGTERM; the writers stop by themselves once the server has let
        // go of them, after the last request in flight.
        let shutdown = CancellationToken::new();
        let credentials = Arc::new(Credentials::new(db.clone(), &config.auth).await);
        let (forgetful, stop) = (Arc::downgrade(&credentials), shutdown.clone());
        tokio::spawn(async move {
            let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every_minute.tick() => {}
                    () = stop.cancelled() => break,
                }
                let Some(credentials) = forgetful.upgrade() else {
                    break;
                };
                credentials.limiter().forget_idle();
            }
        });
        let tokens = Arc::new(Tokens::new(db.clone(), config.auth.credential_ttl));
        let writer = ingest::Writer::start(
            db.pool().clone(),
            db.announcer().clone(),
            &config.ingest,
            config.database.commit_deadline(),
        );
        let hub = Hub::start(
            &db,
            tokens.clone(),
            config.events.buffer,
            config.auth.credential_ttl,
            shutdown.clone(),
        );
        crate::forward::start(&db, &config.forward, &hub, shutdown.clone());
        let last_reports = Arc::new(LastReports::default());
        let (reports, stop, seeded, announcer) = (
            config.reports.clone(),
            shutdown.clone(),
            last_reports.clone(),
            db.announcer().clone(),
        );
        db.spawn(move |pool| async move {
            seeded.seed(&pool).await;
            crate::unreported::sweep_every(pool, announcer, reports, seeded, stop).await
        });
        if config.database.url.hosts().len() > 1 {
            let (pool, cfg, stop) = (db.pool().clone(), config.database.clone(), shutdown.clone());
            tokio::spawn(db::primary::follow(pool, cfg, stop));
        }
        AppState {
            config: Arc::new(config),
            db,
            credentials,
            tokens,
            writer,
            hub,
            last_reports,
            exports: Arc::new(tokio::sync::Semaphore::new(crate::export::MAX_CONCURRENT)),
            export_encoder: crate::export::Encoder::start(),
            shutdown,
        }
    }
}
