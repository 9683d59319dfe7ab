//! Prometheus metrics: the process-wide recorder and what each metric means
//! (operations.rs serves them). Counters are recorded where things happen
//! (handlers, credentials, writer, request middleware); gauges of the pool
//! are read when scraped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder, installed on first use: tests build many apps in one
/// process, and a process has one global recorder.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("koostatus_batch_size".into()), SIZE_BUCKETS)
            })
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if ::metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        // Histogram samples wait in the recorder until folded into buckets;
        // fold them even when nobody scrapes, so memory stays bounded.
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    if let Some(handle) = HANDLE.get() {
                        handle.run_upkeep();
                    }
                }
            })
            .expect("a thread can be started");
        handle
    })
}

/// Handles of the labelled metrics recorded at every callback, per thread:
/// `counter!` with labels allocates its key and looks it up in the registry
/// at each call (a few per cent of a callback's instructions under
/// callgrind). Their label values are few (route patterns, channels), and
/// so are the handles.
#[derive(Default)]
struct Handles {
    /// By route pattern: its durations, and a count per method and status.
    routes: HashMap<String, Route>,
    /// By channel: a count per report status and outcome.
    reports: HashMap<String, Counts<(&'static str, &'static str)>>,
}

struct Route {
    durations: Histogram,
    /// By method and status.
    counts: Counts<(&'static str, u16)>,
}

/// Counters by the rest of their labels: a handful, searched in order.
type Counts<K> = Vec<(K, Counter)>;

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

/// A request answered: its route pattern (never a raw path: a client cannot
/// create series), method, status and duration.
pub fn record_request(route: &str, method: &'static str, status: u16, seconds: f64) {
    HANDLES.with_borrow_mut(|h| {
        let r = by_name(&mut h.routes, route, || Route {
            durations: histogram!("koostatus_http_request_duration_seconds", "route" => route.to_owned()),
            counts: Vec::new(),
        });
        r.durations.record(seconds);
        kept(&mut r.counts, (method, status), || {
            counter!("koostatus_http_requests_total", "route" => route.to_owned(),
                "method" => method, "code" => status.to_string())
        })
        .increment(1);
    });
}

/// A report answered 200: its channel, status (ranked, or `other`) and
/// outcome.
pub fn count_report(channel: &str, status: &'static str, outcome: &'static str) {
    HANDLES.with_borrow_mut(|h| {
        let counts = by_name(&mut h.reports, channel, Vec::new);
        kept(counts, (status, outcome), || {
            counter!("koostatus_reports_total", "channel" => channel.to_owned(),
                "status" => status, "outcome" => outcome)
        })
        .increment(1);
    });
}

/// What is kept under `name`, made (after the recorder) the first time.
/// Looked up by `&str`, so that a request allocates nothing once it is kept.
fn by_name<'a, V>(
    kept: &'a mut HashMap<String, V>,
    name: &str,
    make: impl FnOnce() -> V,
) -> &'a mut V {
    if !kept.contains_key(name) {
        handle();
        kept.insert(name.to_owned(), make());
    }
    kept.get_mut(name).expect("inserted above")
}

/// The counter kept for `key`, made (after the recorder) the first time.
fn kept<K: PartialEq + Copy>(
    counts: &mut Counts<K>,
    key: K,
    make: impl FnOnce() -> Counter,
) -> &Counter {
    let i = match counts.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            handle();
            counts.push((key, make()));
            counts.len() - 1
        }
    };
    &counts[i].1
}

fn describe() {
    describe_counter!(
        "koostatus_reports_total",
        "Reports answered 200, by channel, report status and outcome (stored: the first of its status and it moved the status; late: the first of its status, behind the current one; duplicate)."
    );
    describe_counter!(
        "koostatus_reports_rejected_total",
        "Webhook calls not answered 200, by reason (the error code of the answer, e.g. unauthorized, too_many_attempts, conflict, unavailable)."
    );
    describe_counter!(
        "koostatus_auth_failures_total",
        "Webhook authentications that failed: wrong or missing password, unknown or disabled channel."
    );
    describe_counter!(
        "koostatus_auth_throttled_total",
        "Webhook authentications refused with 429 because a guessing budget was empty."
    );
    describe_counter!(
        "koostatus_argon2_verifications_total",
        "argon2id verifications run (each costs about 20 ms of CPU)."
    );
    describe_counter!(
        "koostatus_credential_cache_hits_total",
        "Webhook authentications answered from the cache of verified passwords."
    );
    describe_histogram!(
        "koostatus_batch_size",
        Unit::Count,
        "Reports per group-commit batch."
    );
    describe_histogram!(
        "koostatus_batch_commit_seconds",
        Unit::Seconds,
        "Time to write and commit one batch."
    );
    describe_counter!(
        "koostatus_http_requests_total",
        "HTTP requests by route pattern, method and status code."
    );
    describe_histogram!(
        "koostatus_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route pattern."
    );
    describe_gauge!(
        "koostatus_db_pool_connections",
        "Database connections of this process, by state (idle, in_use) and the maximum (max)."
    );
    describe_gauge!(
        "koostatus_database_up",
        "1 when the database answered this scrape's query, else 0."
    );
    describe_counter!(
        "koostatus_reports_unknown_status_total",
        "Reports answered 200 whose status is a word outside the five, kept in the history without changing the status, by channel."
    );
    describe_counter!(
        "koostatus_messages_became_unreported_total",
        "Messages this instance's sweep turned from sent to unreported, by channel."
    );
    describe_gauge!(
        "koostatus_messages_unreported",
        "Messages now unreported (sent, and no report within reports.unreported_after), by channel."
    );
    describe_gauge!(
        "koostatus_channel_last_report_age_seconds",
        "Seconds since the channel's last accepted report, on this instance (seeded from the feed at start); alert on the minimum over instances."
    );
    describe_gauge!(
        "koostatus_events_subscribers",
        "Open Server-Sent Events streams."
    );
    describe_gauge!(
        "koostatus_replica_lag_seconds",
        "How far the read replica (database.read_url) lags its primary; -1 when it does not answer."
    );
    describe_counter!(
        "koostatus_forward_deliveries_total",
        "Forwarding attempts per subscription by outcome: delivered, rejected (a non-2xx answer), timeout, unreachable, refused (address not allowed)."
    );
    describe_counter!(
        "koostatus_forward_changes_total",
        "Changes delivered to a subscription's receiver."
    );
    describe_gauge!(
        "koostatus_forward_failed_attempts",
        "Consecutive failed attempts of a subscription's delivery in flight."
    );
    describe_gauge!(
        "koostatus_forward_lag_changes",
        "Changes after a subscription's position (on the instance delivering it)."
    );
    describe_gauge!(
        "koostatus_forward_lag_seconds",
        "Age of the oldest change a subscription has not delivered (on the instance delivering it)."
    );
}
