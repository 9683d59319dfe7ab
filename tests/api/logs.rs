//! The request log as an operator gets it in a file or the journal: no
//! terminal colour codes, and only the requests `log.requests` asks for.

use crate::helpers::{database_with_channel, free_port, report, spawn_serve, wait_ready};

const PASSWORD: &str = "a-webhook-password-9Lq2";

/// The service's log, written to a file, after a callback stored (200) and
/// a request for an unknown route (404), with `log.requests = requests`.
async fn log_of(requests: &str) -> String {
    let db = database_with_channel("ch", PASSWORD).await;
    let log_path = std::env::temp_dir().join(format!("{}-{requests}.log", db.name));
    let port = free_port();
    let server = spawn_serve(
        &db.url(),
        port,
        &[("KOOSTATUS_LOG__REQUESTS", requests)],
        std::fs::File::create(&log_path).unwrap(),
    );
    wait_ready(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let stored = client
        .post(format!("{base}/social/on/whatsapp/koomessage/report/ch"))
        .header("authorization", PASSWORD)
        .json(&report("m1", "read"))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    let unknown = client.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    // The line is written before the answer leaves, and unbuffered.
    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    log
}

fn request_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("koostatus::request"))
        .collect()
}

#[tokio::test]
async fn every_request_gets_a_line_without_colour_codes_by_default() {
    let log = log_of("all").await;
    assert!(
        !log.contains('\x1b'),
        "terminal escape codes in a file: {log:?}"
    );
    let lines = request_lines(&log);
    assert!(
        lines.iter().any(
            |l| l.contains("status=200") && l.contains("outcome=\"stored\"")
                || l.contains("status=200") && l.contains("outcome=stored")
        ),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("status=404")), "{lines:#?}");
}

#[tokio::test]
async fn errors_logs_only_the_requests_answered_400_and_above() {
    let log = log_of("errors").await;
    assert!(!log.contains('\x1b'), "{log:?}");
    let lines = request_lines(&log);
    assert!(lines.iter().any(|l| l.contains("status=404")), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("status=200")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn none_logs_no_request_but_still_the_service_s_own_lines() {
    let log = log_of("none").await;
    assert!(!log.contains('\x1b'), "{log:?}");
    assert_eq!(request_lines(&log), Vec::<&str>::new());
    assert!(!log.trim().is_empty(), "the start-up lines are gone too");
}
