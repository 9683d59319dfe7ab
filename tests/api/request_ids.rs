//! Every request has an id: the client's `X-Request-ID` when it is short and
//! plain, else a new one. It comes back in the answer and is on the request's
//! log line and on every warning logged on the request's way, also on the
//! argon2 threads.

use std::time::{Duration, Instant};

use crate::helpers::{database_with_channel, free_port, report, spawn_serve, wait_ready};

const PASSWORD: &str = "a-webhook-password-4R7t";

#[tokio::test]
async fn a_warning_on_the_argon2_thread_names_its_request() {
    let db = database_with_channel("ch", PASSWORD).await;
    // A hash damaged by hand: the verification, on an argon2 thread, warns.
    sqlx::query("update channels set password_hash = 'not-a-phc-string' where id = 'ch'")
        .execute(&db.pool().await)
        .await
        .unwrap();
    let log_path = std::env::temp_dir().join(format!("{}-request-ids.log", db.name));
    let port = free_port();
    let _server = spawn_serve(
        &db.url(),
        port,
        &[("KOOSTATUS_LOG__FORMAT", "json")],
        std::fs::File::create(&log_path).unwrap(),
    );
    wait_ready(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let r = client
        .post(format!("{base}/social/on/whatsapp/koomessage/report/ch"))
        .header("authorization", PASSWORD)
        .header("x-request-id", "lb-7f3a.42")
        .json(&report("m1", "read"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-request-id"], "lb-7f3a.42");

    // Without an id, or with one that is not plain: a new one each time.
    let mut ids = Vec::new();
    for given in [None, Some("not plain: spaces"), None] {
        let mut request = client.get(format!("{base}/healthz"));
        if let Some(id) = given {
            request = request.header("x-request-id", id);
        }
        let r = request.send().await.unwrap();
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
    }
    assert!(ids.iter().all(|id| !id.is_empty() && !id.contains(' ')));
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);

    // The log: the warning from the argon2 thread and the request line,
    // both in the request's span.
    let in_request = |line: &serde_json::Value| line["span"]["request_id"] == "lb-7f3a.42";
    let started = Instant::now();
    let (warning, request_line) = loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log_path)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let warning = lines.iter().find(|l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("stored password hash"))
        });
        let request_line = lines
            .iter()
            .find(|l| l["message"] == "request" && l["status"] == 401);
        if let (Some(w), Some(r)) = (warning, request_line) {
            break (w.clone(), r.clone());
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no warning and request line in the log: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(in_request(&warning), "{warning}");
    assert!(in_request(&request_line), "{request_line}");
    std::fs::remove_file(&log_path).unwrap();
}
