//! Composes the application: routes and middleware around the shared state
//! (state.rs), and the HTTP server bound to a listener.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use sqlx::PgPool;
use utoipa::OpenApi;

use crate::config::Config;
use crate::error::{ApiError, only};
use crate::state::AppState;
use crate::{api, console, operations, telemetry};

/// The routes, shared by the server and by tests that build an app in-process.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(api::webhook::ROUTE)
            .post(api::webhook::report)
            .default_service(only("POST")),
    )
    .configure(operations_routes)
    .configure(api::routes)
    .configure(console::routes);
}

/// What operators and orchestrators ask: also served alone on
/// `metrics.listen`.
fn operations_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/healthz")
            .get(operations::healthz)
            .default_service(only("GET")),
    )
    .service(
        web::resource("/readyz")
            .get(operations::readyz)
            .default_service(only("GET")),
    )
    .service(
        web::resource("/metrics")
            .get(operations::metrics)
            .default_service(only("GET")),
    );
}

/// The OpenAPI document of the whole service: each layer describes its own
/// routes.
#[derive(OpenApi)]
#[openapi(info(
    title = "koostatus",
    description = "KooMessage WhatsApp delivery reports, kept in PostgreSQL, and a read API for agent desktops."
))]
struct ServiceApi;

pub fn openapi() -> utoipa::openapi::OpenApi {
    ServiceApi::openapi()
        .merge_from(api::webhook::WebhookApi::openapi())
        .merge_from(api::openapi::ReadApi::openapi())
        .merge_from(operations::OperationsApi::openapi())
}

async fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound("No such route.".into()))
}

pub struct Application {
    server: Server,
    port: u16,
    pub state: web::Data<AppState>,
    /// With `tls` set: the certificate and key, reloadable.
    pub tls: Option<std::sync::Arc<crate::tls::Reloadable>>,
    /// With `metrics.listen` set: the plain server of the operations
    /// routes, stopped with the main one.
    operations: Option<actix_web::dev::ServerHandle>,
}

impl Application {
    /// Binds `config.listen` (port 0 picks a free port) and builds the server.
    /// It does not watch signals: `serve` does (and tests run several servers
    /// in one process), stopping it through [`Application::handle`].
    pub async fn build(config: Config, pool: PgPool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("Cannot listen on {} (setting `listen`).", config.listen))?;
        let port = listener.local_addr()?.port();
        let tls = config
            .tls
            .files()
            .map(|(cert, key)| crate::tls::Reloadable::load(cert, key))
            .transpose()?;
        let operations_listener = config
            .metrics
            .listen
            .map(|addr| {
                TcpListener::bind(addr)
                    .with_context(|| format!("Cannot listen on {addr} (setting `metrics.listen`)."))
            })
            .transpose()?;
        let server_cfg = config.server.clone();
        let state = web::Data::new(AppState::new(config, pool).await);
        let app_state = state.clone();
        let cors = api::cors::Cors::new(&state.config.cors).map(web::Data::new);
        // Built and serialised once, not once per worker.
        let document = web::Data::new(api::openapi::Document::new(&openapi()));
        let retry_after = web::Data::new(crate::error::RetryAfter::new(
            state.config.webhook.retry_after,
        ));
        let mut server = HttpServer::new(move || {
            let app = match &cors {
                Some(cors) => App::new().app_data(cors.clone()),
                None => App::new(),
            };
            app.app_data(app_state.clone())
                .app_data(retry_after.clone())
                .app_data(document.clone())
                // A path that does not decode (invalid UTF-8 in %-escapes)
                // names nothing that exists.
                .app_data(web::PathConfig::default().error_handler(|_, _| {
                    ApiError::NotFound("No such route or resource.".into()).into()
                }))
                .wrap(from_fn(crate::error::retry_after))
                .wrap(from_fn(telemetry::log_request))
                .configure(routes)
                .default_service(web::to(not_found))
        })
        .max_connections(server_cfg.max_connections.get())
        .keep_alive(server_cfg.keep_alive)
        .client_request_timeout(server_cfg.client_request_timeout)
        .shutdown_timeout(server_cfg.shutdown_timeout.as_secs());
        if server_cfg.workers > 0 {
            server = server.workers(server_cfg.workers);
        }
        let server = server.disable_signals();
        let server = match &tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls.server_config())?,
            None => server.listen(listener)?,
        }
        .run();
        let operations = match operations_listener {
            Some(listener) => {
                let state = state.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .configure(operations_routes)
                        .default_service(web::to(not_found))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)?
                .run();
                let handle = server.handle();
                tokio::spawn(server);
                Some(handle)
            }
            None => None,
        };
        Ok(Application {
            server,
            port,
            state,
            tls,
            operations,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server gracefully, as SIGTERM does.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stopped = self.server.await;
        if let Some(operations) = self.operations {
            operations.stop(true).await;
        }
        stopped
    }
}
