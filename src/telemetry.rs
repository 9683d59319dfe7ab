//! Log set-up, and the request-log middleware: one line per request with
//! method, route, status, latency and channel. Headers are never logged, so
//! neither the webhook password nor a token can reach a log line.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_new(&cfg.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: tests initialise more than once per process.
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let response = next.call(req).await?;
    let request = response.request();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    record_metrics(&response, &route, &method, started.elapsed());
    if !tracing::enabled!(target: "koostatus::request", tracing::Level::INFO) {
        return Ok(response);
    }
    let channel = request.match_info().get("channel_id").unwrap_or("-");
    let outcome = response
        .response()
        .extensions()
        .get::<Outcome>()
        .map_or("-", |o| o.0);
    tracing::info!(
        target: "koostatus::request",
        %method,
        route,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        channel,
        outcome,
        "request"
    );
    Ok(response)
}

/// Only route patterns become labels, never raw paths: a client cannot
/// create series.
fn record_metrics<B>(
    response: &ServiceResponse<B>,
    route: &str,
    method: &actix_web::http::Method,
    elapsed: std::time::Duration,
) {
    let status = response.status().as_u16();
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    metrics::counter!("koostatus_http_requests_total", "route" => route.to_owned(), "method" => method, "code" => status.to_string())
        .increment(1);
    metrics::histogram!("koostatus_http_request_duration_seconds", "route" => route.to_owned())
        .record(elapsed.as_secs_f64());
    if route == crate::ingest::ROUTE {
        if let Some(ErrorCode(reason)) = response.response().extensions().get::<ErrorCode>() {
            metrics::counter!("koostatus_reports_rejected_total", "reason" => *reason).increment(1);
        }
    }
}

/// Set on an error response: its error code, for the metrics.
#[derive(Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Set on a response by a handler to say what became of a report
/// (stored, late, duplicate), for the request log.
#[derive(Clone, Copy)]
pub struct Outcome(pub &'static str);
