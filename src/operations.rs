//! What operators and orchestrators ask of a running instance: liveness,
//! readiness and the Prometheus metrics.

use ::metrics::gauge;
use actix_web::{HttpResponse, web};
use utoipa::OpenApi;

use crate::db;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// This module's part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(healthz, readyz, metrics))]
pub struct OperationsApi;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process serves")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready when the database answers, takes writes, and its schema is this
/// binary's latest.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "The database answers, takes writes, and the schema is current: `{\"status\": \"ready\", \"schema_version\": N, \"database_host\": \"host:port\", \"writable\": true}`; `database_host` is the host the service writes to"),
    (status = 503, description = "The database does not answer, does not take writes (a standby, or a primary being demoted: a failover under way; the message names the host), or the schema is behind", body = ErrorBody),
))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ready = state.db.readiness().await?;
    let latest = db::migrations::latest_version();
    let host = db::address(&state.db.pool().connect_options());
    if ready.version != Some(latest) {
        return Err(ApiError::unavailable(format!(
            "the schema is at version {:?}, this binary needs {latest}; run `koostatus migrate`",
            ready.version
        )));
    }
    if !ready.writable {
        // Said to the caller (not only logged, as other 503s are): which
        // host, and that it is the failover's doing rather than an outage.
        return Ok(HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "error": "unavailable",
            "message": format!("The database host {host} does not take writes (a standby, or a primary being demoted); with several hosts in database.url the service moves to the one that does."),
            "database_host": host,
            "writable": false,
        })));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "schema_version": latest,
        "database_host": host,
        "writable": true,
    })))
}

// The pool's gauges are read when scraped; every other metric is recorded
// where it happens.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain"),
))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let pool = state.db.pool();
    let (size, idle) = (pool.size() as f64, pool.num_idle() as f64);
    gauge!("koostatus_db_pool_connections", "state" => "idle").set(idle);
    gauge!("koostatus_db_pool_connections", "state" => "in_use").set(size - idle);
    gauge!("koostatus_db_pool_connections", "state" => "max")
        .set(pool.options().get_max_connections() as f64);
    // -1: the replica does not answer; absent without `database.read_url`.
    match state.db.replica_lag().await {
        Ok(Some(lag)) => gauge!("koostatus_replica_lag_seconds").set(lag),
        Ok(None) => {}
        Err(_) => gauge!("koostatus_replica_lag_seconds").set(-1.0),
    }
    // Exact and cheap: the partial index holds only messages waiting for
    // a report. A channel that had some and has none now reads 0.
    let ages = state.last_reports.ages(chrono::Utc::now());
    let counts = state.db.unreported_counts().await;
    gauge!("koostatus_database_up").set(if counts.is_ok() { 1.0 } else { 0.0 });
    if let Ok(counts) = counts {
        let counts: std::collections::HashMap<String, i64> = counts.into_iter().collect();
        for (channel, _) in ages.iter().filter(|(c, _)| !counts.contains_key(c)) {
            gauge!("koostatus_messages_unreported", "channel" => channel.clone()).set(0.0);
        }
        for (channel, n) in counts {
            gauge!("koostatus_messages_unreported", "channel" => channel).set(n as f64);
        }
    }
    for (channel, age) in ages {
        gauge!("koostatus_channel_last_report_age_seconds", "channel" => channel).set(age);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::handle().render())
}
