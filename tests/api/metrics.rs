//! `/metrics`: valid Prometheus text, and counters that move with requests
//! by exactly what they did. The service runs as its own process, so its
//! recorder counts this test's requests only (tests in-process share one).

use std::collections::HashMap;

use crate::helpers::{PASSWORD, database_with_channel, free_port, report, spawn_serve, wait_ready};

/// Parses the Prometheus text exposition format strictly enough to catch a
/// malformed line: `# HELP`/`# TYPE` comments and `name{label="value",...} value`.
fn parse(text: &str) -> HashMap<String, f64> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut samples = HashMap::new();
    let mut types = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (
                parts.next().unwrap(),
                parts.next().unwrap_or(""),
                parts.next(),
            );
            assert!(name_ok(name), "bad metric name in {line:?}");
            if kind == "TYPE" {
                let t = rest.unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "bad type in {line:?}"
                );
                assert!(
                    types.insert(name.to_owned(), t.to_owned()).is_none(),
                    "two TYPE lines for {name}"
                );
            } else {
                assert_eq!(kind, "HELP", "unknown comment {line:?}");
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "bad metric name in {line:?}");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("bad labels in {line:?}"));
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (label, quoted) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(
                    name_ok(label) && quoted.starts_with('"'),
                    "bad label in {line:?}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample before its TYPE line: {line:?}"
        );
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn scrape(client: &reqwest::Client, base: &str) -> HashMap<String, f64> {
    let response = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    parse(&response.text().await.unwrap())
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_counters_move_with_requests() {
    let db = database_with_channel("ch", PASSWORD).await;
    let port = free_port();
    let _server = spawn_serve(&db.url(), port, &[], std::process::Stdio::null());
    wait_ready(port).await;
    let (client, base) = (reqwest::Client::new(), format!("http://127.0.0.1:{port}"));
    let post = |password: &'static str, body: serde_json::Value| {
        client
            .post(format!("{base}/social/on/whatsapp/koomessage/report/ch"))
            .header("authorization", password)
            .json(&body)
            .send()
    };
    let before = scrape(&client, &base).await;

    let stored = post(PASSWORD, report("m1", "delivered")).await.unwrap();
    assert_eq!(stored.status(), 200);
    let duplicate = post(PASSWORD, report("m1", "delivered")).await.unwrap();
    assert_eq!(duplicate.status(), 200);
    let wrong = post("wrong", report("m2", "read")).await.unwrap();
    assert_eq!(wrong.status(), 401);
    let after = scrape(&client, &base).await;

    let moved = |series: &str, by: f64| {
        let (b, a) = (value(&before, series), value(&after, series));
        assert_eq!(a - b, by, "{series}: {b} -> {a}");
    };
    moved(
        r#"koostatus_reports_total{channel="ch",status="delivered",outcome="stored"}"#,
        1.0,
    );
    moved(
        r#"koostatus_reports_total{channel="ch",status="delivered",outcome="duplicate"}"#,
        1.0,
    );
    moved(
        r#"koostatus_reports_rejected_total{reason="unauthorized"}"#,
        1.0,
    );
    moved("koostatus_auth_failures_total", 1.0);
    assert_eq!(value(&after, "koostatus_database_up"), 1.0);
    // The right password once (then remembered), the wrong one once.
    moved("koostatus_argon2_verifications_total", 2.0);
    moved("koostatus_credential_cache_hits_total", 1.0);
    moved("koostatus_batch_size_count", 2.0);
    moved("koostatus_batch_commit_seconds_count", 2.0);
    let route = "/social/on/whatsapp/koomessage/report/{channel_id}";
    moved(
        &format!(r#"koostatus_http_requests_total{{route="{route}",method="POST",code="200"}}"#),
        2.0,
    );
    moved(
        &format!(r#"koostatus_http_requests_total{{route="{route}",method="POST",code="401"}}"#),
        1.0,
    );
    moved(
        &format!(r#"koostatus_http_request_duration_seconds_count{{route="{route}"}}"#),
        3.0,
    );
    // The first scrape; each is counted after it has been rendered.
    moved(
        r#"koostatus_http_requests_total{route="/metrics",method="GET",code="200"}"#,
        1.0,
    );
    assert!(value(&after, r#"koostatus_db_pool_connections{state="max"}"#) >= 1.0);
    assert!(after.contains_key(r#"koostatus_db_pool_connections{state="idle"}"#));
}
