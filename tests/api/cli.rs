//! The command line, run as the built binary against real databases.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{
    PASSWORD, database_with_channel, empty_database, free_port, migrated_database, report, run_cli,
    spawn_serve, wait_ready,
};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn migrate_applies_then_is_a_no_op() {
    let db = empty_database().await;
    let first = run_cli(&db.url(), &["migrate"], "");
    assert!(first.status.success(), "{first:?}");
    assert_eq!(
        text(&first.stdout),
        "Applied migration V1__init.\nApplied migration V2__read_api.\nApplied migration V3__changes_feed.\nApplied migration V4__change_order.\nApplied migration V5__live_desktops.\nApplied migration V6__statistics.\nApplied migration V7__forwarding.\nApplied migration V8__feed_horizon_plan_once.\nApplied migration V9__sent_statuses.\nApplied migration V10__registration_and_unreported.\nApplied migration V11__report_times.\nApplied migration V12__history_without_foreign_key.\nApplied migration V13__narrow_keys.\nApplied migration V14__sweep_index.\nApplied migration V15__unreported_at.\nApplied migration V16__messages_without_channel_foreign_key.\nApplied migration V17__user_numbers_by_day.\nApplied migration V18__history_without_message_id.\nApplied migration V19__first_entry_in_message.\nApplied migration V20__changes_announced_by_the_service.\n"
    );
    let second = run_cli(&db.url(), &["migrate"], "");
    assert!(second.status.success());
    assert!(
        text(&second.stdout).starts_with("No pending migrations; the schema is at version 20.")
    );
}

#[tokio::test]
async fn channel_add_list_disable_enable_set_password() {
    let db = migrated_database().await;
    let url = db.url();
    let out = run_cli(
        &url,
        &[
            "channel",
            "add",
            "c-1",
            "--name",
            "Sales desk",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\r\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "Created channel `c-1`.\n");

    let list = text(&run_cli(&url, &["channel", "list"], "").stdout);
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines[0].starts_with("ID   NAME        ENABLED  CREATED"),
        "{list}"
    );
    assert!(lines[1].starts_with("c-1  Sales desk  yes"), "{list}");

    assert!(
        run_cli(&url, &["channel", "disable", "c-1"], "")
            .status
            .success()
    );
    assert!(
        text(&run_cli(&url, &["channel", "list"], "").stdout)
            .lines()
            .nth(1)
            .unwrap()
            .contains(" no ")
    );
    assert!(
        run_cli(&url, &["channel", "enable", "c-1"], "")
            .status
            .success()
    );
    assert!(
        text(&run_cli(&url, &["channel", "list"], "").stdout)
            .lines()
            .nth(1)
            .unwrap()
            .contains(" yes ")
    );

    let pool = db.pool().await;
    let stored: String = sqlx::query_scalar("select password_hash from channels")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"));
    assert!(
        koostatus::auth::password::verify(&stored, PASSWORD.as_bytes()),
        "CRLF stripped"
    );
    let out = run_cli(
        &url,
        &["channel", "set-password", "c-1", "--password-stdin"],
        "second\n",
    );
    assert!(out.status.success(), "{out:?}");
    let stored: String = sqlx::query_scalar("select password_hash from channels")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(koostatus::auth::password::verify(&stored, b"second"));
}

#[tokio::test]
async fn mistakes_exit_1_with_a_sentence_and_usage_errors_exit_2() {
    let db = migrated_database().await;
    let url = db.url();
    assert!(
        run_cli(&url, &["channel", "add", "c1", "--password-stdin"], "pw\n")
            .status
            .success()
    );
    let failures: [(&[&str], &str, &str); 5] = [
        (
            &["channel", "add", "c1", "--password-stdin"],
            "pw\n",
            "Channel `c1` already exists",
        ),
        (
            &["channel", "add", "c2", "--password-stdin"],
            "\n",
            "The password read from standard input is empty.",
        ),
        (
            &["channel", "add", "c2", "--password-stdin"],
            "",
            "The password read from standard input is empty.",
        ),
        (
            &["channel", "set-password", "nope", "--password-stdin"],
            "pw\n",
            "There is no channel `nope`.",
        ),
        (
            &["channel", "disable", "nope"],
            "",
            "There is no channel `nope`.",
        ),
    ];
    for (args, stdin, expected) in failures {
        let out = run_cli(&url, args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    for args in [
        &["channel", "add", "bad id", "--password-stdin"][..],
        &["channel", "add", "c3"],
        &["channel", "add", "c3", "--password", "pw"],
        &[
            "channel",
            "set-password",
            "c1",
            "--password-stdin",
            "--keep-old-for",
            "soon",
        ],
        &["frobnicate"],
    ] {
        assert_eq!(
            run_cli(&url, args, "pw\n").status.code(),
            Some(2),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_database_fails_fast_naming_host_and_database_but_not_the_password() {
    let started = Instant::now();
    let out = run_cli(
        "postgres://koo:topsecret@127.0.0.1:9/koodb",
        &["channel", "list"],
        "",
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("`koodb` on 127.0.0.1:9"), "{err}");
    assert!(
        !err.contains("topsecret") && !err.contains("panicked"),
        "{err}"
    );

    // A host that swallows packets: the connect timeout bounds the wait.
    let started = Instant::now();
    let out = run_cli(
        "postgres://koo:topsecret@10.255.255.1:5432/koodb",
        &["migrate"],
        "",
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stderr).contains("topsecret"));

    let out = run_cli("mysql://nope", &["channel", "list"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("`database.url`"),
        "{}",
        text(&out.stderr)
    );
}

/// `serve` on a database that does not exist yet: it creates and migrates
/// it, stores a callback, logs no secret, and exits 0 on SIGTERM.
#[tokio::test]
async fn serve_creates_the_database_and_stops_cleanly_on_sigterm() {
    let db = crate::helpers::TestDatabase {
        name: format!("{}_fresh", empty_database().await.name),
    };
    let log_path = std::env::temp_dir().join(format!("{}.log", db.name));
    let port = free_port();
    let mut server = spawn_serve(
        &db.url(),
        port,
        &[
            ("KOOSTATUS_LOG__FILTER", "trace"),
            ("KOOSTATUS_LOG__FORMAT", "json"),
        ],
        // A file, not a pipe: nobody reads a pipe until the end, and a full
        // one would block the server's logging.
        std::fs::File::create(&log_path).unwrap(),
    );
    wait_ready(port).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let out = run_cli(
        &db.url(),
        &["channel", "add", "c1", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success());
    let response = client
        .post(format!("{base}/social/on/whatsapp/koomessage/report/c1"))
        .header("Authorization", PASSWORD)
        .json(&crate::helpers::report("m1", "read"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bad = client
        .post(format!("{base}/social/on/whatsapp/koomessage/report/c1"))
        .header("Authorization", "a-wrong-secret-guess")
        .json(&crate::helpers::report("m1", "read"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let stored: Option<String> =
        sqlx::query_scalar("select status::text from messages where message_id = 'm1'")
            .fetch_optional(&db.pool().await)
            .await
            .unwrap();
    assert_eq!(stored.as_deref(), Some("read"));

    // A live stream open at SIGTERM is ended rather than holding the stop
    // for the whole grace period (30 s).
    let out = run_cli(&db.url(), &["token", "create", "--name", "desk"], "");
    let token = text(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("kst_"))
        .expect("the token is printed")
        .to_owned();
    let mut events = client
        .get(format!("{base}/api/v1/channels/c1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);

    let mut server = server.0.take().unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let stopping = Instant::now();
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    while let Ok(Some(_)) = events.chunk().await {}
    let log = std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).unwrap();
    assert!(
        log.contains(r#""route":"/social/on/whatsapp/koomessage/report/{channel_id}""#),
        "{log}"
    );
    assert!(
        log.contains(r#""channel":"c1""#)
            && log.contains(r#""status":200"#)
            && log.contains("latency_ms")
    );
    for secret in [PASSWORD, "a-wrong-secret-guess"] {
        assert!(!log.contains(secret), "secret in the log");
    }
    assert!(
        !log.to_lowercase().contains("authorization"),
        "the header appears in the log"
    );
}

#[tokio::test]
async fn prune_deletes_old_messages_and_their_history_in_batches() {
    let app = crate::helpers::spawn_app().await;
    app.add_channel("ch", PASSWORD).await;
    // Two reports each: the first report's entry is on the message's row
    // (V19), the second one's a history row.
    for i in 0..25 {
        for status in ["delivered", "read"] {
            let r = app
                .post_report(
                    "ch",
                    PASSWORD,
                    &crate::helpers::report(&format!("m{i}"), status),
                )
                .await;
            assert_eq!(r.status(), 200);
        }
    }
    assert_eq!(app.count("message_history").await, 25);
    // Age 20 of them: their last change was 100 days ago.
    sqlx::query(
        "update messages set updated_at = now() - interval '100 days' where message_id <> all($1)",
    )
    .bind(vec!["m0", "m1", "m2", "m3", "m4"])
    .execute(&app.pool)
    .await
    .unwrap();
    let url = app.db.url();
    let dry = run_cli(&url, &["prune", "--older-than", "90d", "--dry-run"], "");
    assert!(dry.status.success(), "{dry:?}");
    assert!(
        text(&dry.stdout)
            .ends_with("Would delete 20 messages last changed more than 90 days ago.\n"),
        "{}",
        text(&dry.stdout)
    );
    assert_eq!(app.count("messages").await, 25);
    let out = run_cli(&url, &["prune", "--older-than", "90d", "--batch", "8"], "");
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("channel ch: deleted 8 (total 8)")
            && stdout.contains("deleted 4 (total 20)"),
        "{stdout}"
    );
    assert_eq!(app.count("messages").await, 5);
    assert_eq!(
        app.count("message_history").await,
        5,
        "the history went with its messages"
    );
    assert_eq!(app.count("message_entries").await, 10);
    assert_eq!(
        run_cli(&url, &["prune", "--older-than", "soon"], "")
            .status
            .code(),
        Some(2)
    );
}

#[tokio::test]
async fn serve_prunes_on_a_schedule_when_configured() {
    let db = migrated_database().await;
    let pool = db.pool().await;
    let hash = koostatus::auth::password::hash(&secrecy::SecretString::from(PASSWORD));
    koostatus::db::channels::insert(&pool, "ch", "", &hash)
        .await
        .unwrap();
    sqlx::query(
        "insert into messages select 'ch', 'm' || i, 's', 'u', 'read', now() - interval '200 days',
                now() - (case when i <= 3 then interval '200 days' else interval '1 day' end)
         from generate_series(1, 5) i",
    )
    .execute(&pool)
    .await
    .unwrap();
    let _server = spawn_serve(
        &db.url(),
        free_port(),
        &[
            ("KOOSTATUS_RETENTION__MAX_AGE", "90d"),
            ("KOOSTATUS_RETENTION__INTERVAL", "1s"),
        ],
        Stdio::null(),
    );
    let started = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar("select count(*) from messages")
            .fetch_one(&pool)
            .await
            .unwrap();
        if left == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{left} messages left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `database.url` with several hosts, as libpq writes it: commands and
/// `serve` use the first that answers and accepts writes.
#[tokio::test]
async fn a_multi_host_url_skips_a_host_that_is_down() {
    let db = database_with_channel("ch1", "pw-multi").await;
    let (down, also_down) = (free_port(), free_port());
    let url = format!(
        "postgres://postgres@127.0.0.1:{down},127.0.0.1:5432/{}",
        db.name
    );
    let listed = run_cli(&url, &["channel", "list"], "");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).contains("ch1"));
    let migrated = run_cli(&url, &["migrate"], "");
    assert!(
        text(&migrated.stdout).starts_with("No pending migrations"),
        "{migrated:?}"
    );

    let port = free_port();
    let _serve = spawn_serve(&url, port, &[], Stdio::null());
    wait_ready(port).await;
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/social/on/whatsapp/koomessage/report/ch1"
        ))
        .header("Authorization", "pw-multi")
        .json(&report("m1", "delivered"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let nowhere = format!(
        "postgres://postgres@127.0.0.1:{down},127.0.0.1:{also_down}/{}",
        db.name
    );
    let refused = run_cli(&nowhere, &["channel", "list"], "");
    let said = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        said.contains("No host of `database.url` accepts writes"),
        "{said}"
    );
    assert!(
        said.contains(&format!("127.0.0.1:{down}"))
            && said.contains(&format!("127.0.0.1:{also_down}")),
        "{said}"
    );
}
