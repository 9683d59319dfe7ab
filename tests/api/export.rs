//! SPEC §15: the export, CSV and NDJSON, against the listing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, assert_error, report, spawn_app_with, wait_until};

const CH: &str = "ch";

/// 10,000 messages of every status, with quotes, commas, newlines and
/// formula-like leading characters in their ids and numbers.
async fn channel_of_10000() -> (TestApp, String) {
    let app = spawn_app_with(|c| {
        c.reports.unreported_after = Duration::from_secs(3600);
        c.reports.sweep_interval = Duration::from_millis(200);
    })
    .await;
    app.add_channel(CH, PASSWORD).await;
    let register = app.create_register_token("sender", &[CH]).await;
    let read = app.create_token("supervisor", &[CH]).await;
    let two_days_ago = (chrono::Utc::now() - chrono::TimeDelta::days(2)).to_rfc3339();
    let odd = [
        "q\"uote",
        "com,ma",
        "new\nline",
        "=1+1",
        "+86",
        "-5",
        "@x",
        "\ttab",
        "plain",
    ];
    for batch in 0..10 {
        let messages: Vec<Value> = (0..1000)
            .map(|j| {
                let i = batch * 1000 + j;
                let mut m = json!({
                    "message_id": format!("{}{i}", odd[i % odd.len()]),
                    "sender": "86173xxxx4526",
                    "user_number": format!("{}{}", odd[(i / 7) % odd.len()], i % 100),
                    "tags": [format!("t{}", i % 3)],
                });
                // A fifth sent two days ago: the sweep makes them unreported.
                if i % 5 == 1 {
                    m["sent_at"] = two_days_ago.clone().into();
                }
                m
            })
            .collect();
        let r = app
            .register(CH, &register, &json!({"messages": messages}))
            .await;
        assert_eq!(r.status(), 200);
    }
    let ids: Vec<(String, String, &str)> = (0..10_000usize)
        .filter_map(|i| {
            let status = ["", "", "failed", "delivered", "read"][i % 5];
            (!status.is_empty()).then(|| {
                (
                    format!("{}{i}", odd[i % odd.len()]),
                    format!("{}{}", odd[(i / 7) % odd.len()], i % 100),
                    status,
                )
            })
        })
        .collect();
    let tasks: Vec<_> = (0..8)
        .map(|c| {
            let mine: Vec<_> = ids.iter().skip(c).step_by(8).cloned().collect();
            let (client, url) = (app.client.clone(), app.webhook_url(CH));
            tokio::spawn(async move {
                for (id, number, status) in mine {
                    let mut body = report(&id, status);
                    body["user_number"] = number.into();
                    let r = client
                        .post(&url)
                        .header("Authorization", PASSWORD)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    wait_until("2,000 unreported", Duration::from_secs(20), || async {
        let n: i64 =
            sqlx::query_scalar("select count(*) from messages where status = 'unreported'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        n == 2000
    })
    .await;
    (app, read)
}

/// Every page of the listing with `query`.
async fn listing(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .get(
                &format!("/api/v1/channels/{CH}/messages?limit=500{query}{cursor}"),
                token,
            )
            .await;
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        all.extend(page["messages"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return all,
        }
    }
}

async fn download(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.get(&format!("/api/v1/channels/{CH}/export?{query}"), token)
        .await
}

/// The CSV as Python's csv module reads it: one object per row.
fn python_csv(text: &str) -> Vec<Value> {
    // One file per call: tests run in parallel.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!(
        "koostatus-export-{}-{call}.csv",
        std::process::id()
    ));
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv, json, sys; json.dump(list(csv.DictReader(open(sys.argv[1], newline='', encoding='utf-8'))), sys.stdout)",
        ])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A cell as the export writes it: a formula made inert.
fn inert(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_owned(),
    }
}

fn instant(t: &str) -> chrono::DateTime<chrono::Utc> {
    t.parse().unwrap()
}

/// A path segment: every byte but unreserved ones percent-encoded.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_ndjson_equal_the_listing_row_for_row_with_every_filter() {
    let (app, token) = channel_of_10000().await;
    for query in [
        "",
        "&status=delivered",
        "&status=unreported",
        "&status=sent&tag=t1",
        "&user_number=%2B8642",
    ] {
        let expected = listing(&app, &token, query).await;
        assert!(!expected.is_empty(), "{query}");

        let response = download(&app, &token, &format!("format=csv{query}")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            disposition.starts_with("attachment; filename=\"koostatus-ch-start-now.csv\""),
            "{disposition}"
        );
        let rows = python_csv(&response.text().await.unwrap());
        assert_eq!(rows.len(), expected.len(), "{query}");
        for (row, m) in rows.iter().zip(&expected) {
            for field in [
                "channel_id",
                "message_id",
                "sender",
                "user_number",
                "status",
                "first_seen_at",
                "updated_at",
                "sent_at",
            ] {
                assert_eq!(
                    text(&row[field]),
                    inert(&text(&m[field])),
                    "{field} {query}"
                );
            }
            let tags: Vec<&str> = m["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert_eq!(text(&row["tags"]), inert(&tags.join(";")));
            // The time it reached its current status is there.
            let status = m["status"].as_str().unwrap();
            if ["failed", "delivered", "read"].contains(&status) {
                assert!(!text(&row[format!("{status}_at")]).is_empty(), "{row}");
            }
        }
        // Each report time is its history's, for a sample of the rows.
        for (row, m) in rows.iter().zip(&expected).step_by(97) {
            let id = m["message_id"].as_str().unwrap();
            let detail: Value = app
                .get(
                    &format!("/api/v1/channels/{CH}/messages/{}", urlencoding(id)),
                    &token,
                )
                .await
                .json()
                .await
                .unwrap();
            for status in ["failed", "delivered", "read"] {
                let history = detail["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|h| h["status"] == status)
                    .map(|h| instant(h["first_received_at"].as_str().unwrap()));
                let cell = text(&row[format!("{status}_at")]);
                assert_eq!(
                    history,
                    (!cell.is_empty()).then(|| instant(&cell)),
                    "{status} of {id}"
                );
            }
        }

        let response = download(&app, &token, &format!("format=ndjson{query}")).await;
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), expected.len());
        for (line, m) in lines.iter().zip(&expected) {
            let mut without = line.clone();
            let times = without.as_object_mut().unwrap();
            let reported: Vec<Value> = ["failed_at", "delivered_at", "read_at"]
                .iter()
                .map(|k| times.remove(*k).unwrap())
                .collect();
            assert_eq!(&without, m);
            let at = ["failed", "delivered", "read"]
                .iter()
                .position(|s| m["status"] == *s);
            if let Some(at) = at {
                assert!(reported[at].is_string(), "{line}");
            }
        }
    }
    // A range: only what changed in it, and the file's name says so.
    let all = listing(&app, &token, "").await;
    let middle = all[all.len() / 2]["updated_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = download(
        &app,
        &token,
        &format!("updated_before={}", middle.replace('+', "%2B")),
    )
    .await;
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("koostatus-ch-start-")
    );
    let rows = python_csv(&response.text().await.unwrap());
    let before: Vec<&Value> = all
        .iter()
        .filter(|m| {
            m["updated_at"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
                < middle.parse::<chrono::DateTime<chrono::Utc>>().unwrap()
        })
        .collect();
    assert_eq!(rows.len(), before.len());
    assert!(
        rows.iter()
            .zip(&before)
            .all(|(r, m)| text(&r["message_id"]) == inert(&text(&m["message_id"])))
    );
}

#[tokio::test]
async fn export_refuses_as_the_listing_does() {
    let app = spawn_app_with(|_| {}).await;
    app.add_channel(CH, PASSWORD).await;
    let token = app.create_token("supervisor", &[CH]).await;
    let other = app.create_token("elsewhere", &["nope"]).await;
    let r = app
        .client
        .get(format!("{}/api/v1/channels/{CH}/export", app.address))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    assert_error(download(&app, &other, "").await, 404, "not_found").await;
    for (query, code) in [
        ("format=xlsx", "invalid_format"),
        ("status=pending", "invalid_status"),
        ("updated_before=yesterday", "invalid_time"),
        ("limit=5", "invalid_query"),
    ] {
        assert_error(download(&app, &token, query).await, 400, code).await;
    }
    // Empty: the header row only.
    let r = download(&app, &token, "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap().trim_end(),
        "channel_id,message_id,sender,user_number,status,first_seen_at,updated_at,sent_at,failed_at,delivered_at,read_at,tags"
    );
}

/// A client that goes away halfway leaves no statement running: the
/// producer stops at its next page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_halfway_leaves_no_query_running() {
    let (app, token) = channel_of_10000().await;
    let mut response = download(&app, &token, "format=ndjson").await;
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(response);
    let db = app.db.name.clone();
    wait_until(
        "no export statement running",
        Duration::from_secs(10),
        || async {
            let running: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
             where datname = $1 and pid <> pg_backend_pid()
               and (state = 'active' and (query like '%message_history%'
                                          or query like '%order by updated_at desc%')
                    -- Nor its snapshot, left open.
                    or state like 'idle in transaction%')",
            )
            .bind(&db)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            running == 0
        },
    )
    .await;
}

/// `n` delivered messages `bulk-000001` (oldest) .. written in SQL: enough
/// that an export outlasts every buffer between it and its client.
async fn bulk_channel(n: i64) -> (TestApp, String) {
    let app = spawn_app_with(|_| {}).await;
    app.add_channel(CH, PASSWORD).await;
    let token = app.create_token("supervisor", &[CH]).await;
    sqlx::query(
        "insert into messages (channel_id, message_id, sender, user_number, status,
                               first_seen_at, updated_at, changed_xid)
         select $1, 'bulk-' || lpad(i::text, 6, '0'), '86173xxxx4526', '86187' || i, 'delivered',
                now() - interval '1 day' + i * interval '1 ms',
                now() - interval '1 day' + i * interval '1 ms', pg_current_xact_id()
         from generate_series(1, $2) i",
    )
    .bind(CH)
    .bind(n)
    .execute(&app.pool)
    .await
    .unwrap();
    (app, token)
}

/// Messages that change while an export runs are each in it once, as they
/// were when it began: keyset pages over `updated_at` read in separate
/// snapshots would lose them (a change moves a message above the pages
/// still to read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_one_moment_even_while_messages_change() {
    let (app, token) = bulk_channel(100_000).await;
    let mut response = download(&app, &token, "format=ndjson").await;
    assert_eq!(response.status(), 200);
    let mut body = response.chunk().await.unwrap().unwrap().to_vec();
    // The oldest 300, which the export reaches last, become read now.
    for i in 1..=300 {
        let mut body = report(&format!("bulk-{i:06}"), "read");
        body["user_number"] = format!("86187{i}").into();
        let r = app.post_report(CH, PASSWORD, &body).await;
        assert_eq!(r.status(), 200);
    }
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let lines: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 100_000, "every message once");
    let ids: std::collections::HashSet<&str> = lines
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 100_000);
    assert!(
        lines.iter().all(|m| m["status"] == "delivered"),
        "as they were when the export began"
    );
    // The next export sees the change.
    let after = download(&app, &token, "format=ndjson&status=read").await;
    assert_eq!(after.text().await.unwrap().lines().count(), 300);
}

/// Two exports at once per instance (each holds a connection while its
/// client reads); a third is told to come back, and the slot frees when a
/// client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_export_at_once_gets_503_and_the_slot_frees_when_one_leaves() {
    let (app, token) = bulk_channel(100_000).await;
    let first = download(&app, &token, "format=ndjson").await;
    let second = download(&app, &token, "format=ndjson").await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = download(&app, &token, "").await;
    assert!(third.headers().contains_key("retry-after"));
    assert_error(third, 503, "busy").await;
    drop(first);
    wait_until("a slot again", Duration::from_secs(10), || async {
        download(&app, &token, "status=sent").await.status() == 200
    })
    .await;
}

/// `/stats?format=csv`: the JSON answer's buckets and total, as rows.
#[tokio::test]
async fn stats_as_csv_equal_the_json_answer() {
    let app = spawn_app_with(|_| {}).await;
    app.add_channel(CH, PASSWORD).await;
    let token = app.create_token("supervisor", &[CH]).await;
    for (i, status) in ["read", "delivered", "failed", "read"].iter().enumerate() {
        app.post_report(CH, PASSWORD, &report(&format!("m{i}"), status))
            .await;
    }
    let query = "bucket=hour&from=2026-12-01T00:00:00Z&to=2036-12-01T00:00:00Z";
    let query = query.replace(
        "2036-12-01",
        &(chrono::Utc::now() + chrono::TimeDelta::days(1))
            .format("%Y-%m-%d")
            .to_string(),
    );
    let json: Value = app
        .get(&format!("/api/v1/channels/{CH}/stats?{query}"), &token)
        .await
        .json()
        .await
        .unwrap();
    let response = app
        .get(
            &format!("/api/v1/channels/{CH}/stats?{query}&format=csv"),
            &token,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"koostatus-ch-stats-")
    );
    let rows = python_csv(&response.text().await.unwrap());
    let buckets = json["buckets"].as_array().unwrap();
    assert_eq!(rows.len(), buckets.len() + 1);
    let total = rows.last().unwrap();
    assert_eq!(total["start"], "total");
    for (row, expected) in rows.iter().zip(buckets.iter().chain([&json["total"]])) {
        for k in [
            "messages",
            "sent",
            "unreported",
            "failed",
            "delivered",
            "read",
        ] {
            assert_eq!(text(&row[k]), expected[k].to_string(), "{k}");
        }
        for k in [
            "delivered_rate",
            "read_rate",
            "failed_rate",
            "unreported_rate",
        ] {
            let got: f64 = text(&row[k]).parse().unwrap();
            assert!((got - expected[k].as_f64().unwrap()).abs() < 1e-12, "{k}");
        }
        let p50 = &expected["time_to_read_seconds"]["p50"];
        assert_eq!(
            text(&row["time_to_read_p50"]).parse::<f64>().ok(),
            p50.as_f64()
        );
    }
    assert_eq!(text(&total["messages"]), "4");
    assert_error(
        app.get(&format!("/api/v1/channels/{CH}/stats?format=xml"), &token)
            .await,
        400,
        "invalid_format",
    )
    .await;
}

/// `koostatus export` writes what the HTTP export sends.
#[tokio::test]
async fn the_command_writes_what_the_http_export_sends() {
    let app = spawn_app_with(|_| {}).await;
    app.add_channel(CH, PASSWORD).await;
    let token = app.create_token("supervisor", &[CH]).await;
    for (i, status) in ["read", "delivered", "failed"].iter().enumerate() {
        let mut body = report(&format!("=m{i},\"x\""), status);
        body["user_number"] = "+8618700001111".into();
        app.post_report(CH, PASSWORD, &body).await;
    }
    for format in ["csv", "ndjson"] {
        let http = download(&app, &token, &format!("format={format}"))
            .await
            .text()
            .await
            .unwrap();
        let out = crate::helpers::run_cli(&app.db.url(), &["export", CH, "--format", format], "");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), http, "{format}");
    }
    let file =
        std::env::temp_dir().join(format!("koostatus-cli-export-{}.csv", std::process::id()));
    let out = crate::helpers::run_cli(
        &app.db.url(),
        &[
            "export",
            CH,
            "--status",
            "read",
            "--since",
            "1h",
            "--output",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let rows = python_csv(&std::fs::read_to_string(&file).unwrap());
    std::fs::remove_file(&file).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(text(&rows[0]["message_id"]), "'=m0,\"x\"");
    let out = crate::helpers::run_cli(&app.db.url(), &["export", CH, "--status", "gone"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a status"));
    // A range that ends before the messages changed: the header row only.
    let out = crate::helpers::run_cli(
        &app.db.url(),
        &[
            "export",
            CH,
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2020-01-02T00:00:00Z",
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let out = crate::helpers::run_cli(
        &app.db.url(),
        &[
            "export",
            CH,
            "--since",
            "1h",
            "--from",
            "2020-01-01T00:00:00Z",
        ],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses --since with --from"
    );
}
