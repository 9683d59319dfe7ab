//! Log set-up, and the request-log middleware: a span per request with its
//! id, and one line per request with method, route, status, latency and
//! channel. Headers are never logged, and query strings only by their
//! parameter names, so neither the webhook password nor a token or stream
//! ticket can reach a log line.

use std::io::IsTerminal;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat, LogRequests};

/// `log.requests`, for the request log; per process, as the subscriber
/// that [`init`] installs is. Until then (in-process tests) every request.
static REQUESTS: AtomicU8 = AtomicU8::new(LogRequests::All as u8);

pub fn init(cfg: &LogConfig) {
    REQUESTS.store(cfg.requests as u8, Ordering::Relaxed);
    let filter = EnvFilter::try_new(&cfg.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: in a file or the
    // journal they are bytes to store and noise to grep through.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // try_init: tests initialise more than once per process.
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let id = request_id(&req);
    // At warning level, so that it exists whenever warnings are logged:
    // every warning on the request's path names the request, including
    // those of the writer and the argon2 threads, which carry the span.
    let span = tracing::warn_span!("request", request_id = id.to_str().unwrap_or_default());
    let mut response = next.call(req).instrument(span.clone()).await?;
    response.headers_mut().insert(REQUEST_ID, id);
    let _entered = span.enter();
    let request = response.request();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    record_metrics(&response, &route, &method, started.elapsed());
    let wanted = match REQUESTS.load(Ordering::Relaxed) {
        r if r == LogRequests::None as u8 => false,
        r if r == LogRequests::Errors as u8 => response.status().as_u16() >= 400,
        _ => true,
    };
    if !wanted || !tracing::enabled!(target: "koostatus::request", tracing::Level::INFO) {
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

/// The client's `X-Request-ID` (a load balancer's, say) when it is short
/// and plain, else a new one: this process's random prefix and a count.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    static PREFIX: LazyLock<u32> = LazyLock::new(|| {
        let mut bytes = [0u8; 4];
        getrandom::getrandom(&mut bytes).expect("the OS random source works");
        u32::from_ne_bytes(bytes)
    });
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let given = req.headers().get(&REQUEST_ID).filter(|v| {
        let v = v.as_bytes();
        (1..=64).contains(&v.len())
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    given.cloned().unwrap_or_else(|| {
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        HeaderValue::try_from(format!("{:08x}-{n}", *PREFIX)).expect("hex and digits")
    })
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
    crate::metrics::record_request(route, method, status, elapsed.as_secs_f64());
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
