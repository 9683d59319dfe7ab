//! Log set-up, and the request-log middleware: one line per request with
//! method, route, status, latency and channel. Headers are never logged, and
//! query strings only by their parameter names, so neither the webhook
//! password nor a token or stream ticket can reach a log line.

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
    let query = query_names(request.query_string());
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
        query,
        outcome,
        "request"
    );
    Ok(response)
}

/// `ticket=…&user_number=…`: the names of a query's parameters, never their
/// values (a ticket is a credential).
fn query_names(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split('=').next().unwrap_or_default())
        .map(|name| {
            // A name is the client's text too: keep it short and plain.
            let plain: String = name
                .chars()
                .take(32)
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            format!("{plain}=…")
        })
        .collect::<Vec<_>>()
        .join("&")
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
}

/// Set on a response by a handler to say what became of a report
/// (stored, late, duplicate), for the request log.
#[derive(Clone, Copy)]
pub struct Outcome(pub &'static str);

#[cfg(test)]
mod tests {
    #[test]
    fn query_strings_are_logged_without_values() {
        assert_eq!(
            super::query_names("ticket=kstt_abc&user_number=1&after=5-2"),
            "ticket=…&user_number=…&after=…"
        );
        assert_eq!(super::query_names(""), "");
        assert_eq!(super::query_names("a%3Db"), "a3Db=…");
    }
}
