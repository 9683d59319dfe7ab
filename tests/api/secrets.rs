//! No password or token in clear: not in any log line at any level, not in
//! a Debug print, not in any table.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{TestDatabase, migrated_database, report};
use crate::helpers::{free_port, spawn_serve, wait_ready};

const FIRST: &str = "first-webhook-secret-7Q2x";
const SECOND: &str = "second-webhook-secret-9Z4k";
const WRONG: &str = "guessed-secret-3M8p";
const DB_PASSWORD: &str = "database-secret-5K1w";

/// Runs a CLI command with every log level on, returning stdout and stderr.
fn cli_traced(db: &TestDatabase, args: &[&str], stdin: &str) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_koostatus"))
        .arg("--database-url")
        .arg(url_with_password(db))
        .args(args)
        .env("KOOSTATUS_LOG__FILTER", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Trust authentication ignores the password, so a URL can carry one that
/// must never be shown.
fn url_with_password(db: &TestDatabase) -> String {
    format!(
        "postgres://postgres:{DB_PASSWORD}@127.0.0.1:5432/{}",
        db.name
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_debug_prints_or_tables() {
    let db = migrated_database().await;
    let mut logs = String::new();
    let (_, err) = cli_traced(&db, &["migrate"], "");
    logs += &err;
    let (_, err) = cli_traced(
        &db,
        &["channel", "add", "ch", "--password-stdin"],
        &format!("{FIRST}\n"),
    );
    logs += &err;
    let (token, err) = cli_traced(&db, &["token", "create", "--name", "desk"], "");
    logs += &err;
    let token = token.trim().to_owned();
    assert!(token.starts_with("kst_"));

    let log_path = std::env::temp_dir().join(format!("{}-secrets.log", db.name));
    let port = free_port();
    let mut server = spawn_serve(
        &url_with_password(&db),
        port,
        &[("KOOSTATUS_LOG__FILTER", "trace")],
        std::fs::File::create(&log_path).unwrap(),
    );
    wait_ready(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let webhook = format!("{base}/social/on/whatsapp/koomessage/report/ch");
    for (password, expected) in [(FIRST, 200), (WRONG, 401), (FIRST, 200)] {
        let r = client
            .post(&webhook)
            .header("Authorization", password)
            .json(&report("m1", "read"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
    }
    let (_, err) = cli_traced(
        &db,
        &[
            "channel",
            "set-password",
            "ch",
            "--password-stdin",
            "--keep-old-for",
            "1h",
        ],
        &format!("{SECOND}\n"),
    );
    logs += &err;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = client
        .post(&webhook)
        .header("Authorization", SECOND)
        .json(&report("m1", "delivered"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let api = format!("{base}/api/v1/channels/ch/messages");
    for r in [
        client
            .get(format!("{api}/m1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        client.get(&api).bearer_auth(&token).send().await.unwrap(),
        client
            .post(format!("{api}/lookup"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"message_ids": ["m1"]}))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), 200);
    }
    // A stream ticket, used in a URL as EventSource does.
    let ticket: serde_json::Value = client
        .post(format!("{base}/api/v1/tickets"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let stream = client
        .get(format!(
            "{base}/api/v1/channels/ch/events?ticket={ticket}&user_number=86187xxxx5632"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);
    assert_eq!(
        client
            .get(&api)
            .bearer_auth(format!("{token}x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    for args in [
        &["channel", "list"][..],
        &["token", "list"],
        &["token", "revoke", "desk"],
    ] {
        let (out, err) = cli_traced(&db, args, "");
        logs += &out;
        logs += &err;
    }
    let mut child = server.0.take().unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    logs += &std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).unwrap();
    assert!(
        logs.contains("TRACE") && logs.contains("request"),
        "the logs were captured"
    );
    assert!(
        logs.contains("ticket=…&user_number=…"),
        "query strings are logged by their names"
    );
    assert!(
        logs.contains("open-file limit"),
        "serve says what open-file limit it runs with"
    );

    let dump = Command::new("pg_dump")
        .args(["--data-only", "-h", "127.0.0.1", "-U", "postgres", &db.name])
        .output()
        .unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains("$argon2id$"), "the dump holds the hashes");

    let mut config = koostatus::config::Config::default();
    config.database.url = koostatus::config::DatabaseUrl::parse(&url_with_password(&db)).unwrap();
    let debug = format!("{config:?}");

    for secret in [
        FIRST,
        SECOND,
        WRONG,
        token.as_str(),
        ticket.as_str(),
        DB_PASSWORD,
    ] {
        assert!(!logs.contains(secret), "a secret is in the logs");
        assert!(!dump.contains(secret), "a secret is in the database");
        assert!(!debug.contains(secret), "a secret is in a Debug print");
    }
}
