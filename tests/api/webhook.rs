//! The webhook's answers, one test per row of SPEC §4, and the order of checks.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{PASSWORD, assert_error, report, spawn_app, spawn_app_with};

const CH: &str = "202105102694809992";

#[tokio::test]
async fn the_seed_example_replayed_with_its_headers_is_stored() {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    let body = r#"{ "sender": "86173xxxx4526", "user_number": "86187xxxx5632", "message_id": "044852ee407b40ec88ea65adb73ff5c27", "status": "read" }"#;
    let request = format!(
        "POST /social/on/whatsapp/koomessage/report/{CH} HTTP/1.1\r\nhost: 10.10.10.2:18446\r\nconnection: Keep-Alive\r\nx-forwarded-for: 10.10.10.3, 10.10.10.4\r\nx-real-ip: 10.10.10.5\r\ncontent-length: {}\r\nremote-host: 10.10.10.6\r\nuser-agent: java/socket\r\nAuthorization: {PASSWORD}\r\ncontent-type: application/json; charset=utf-8\r\naccept: */*\r\n\r\n{body}",
        body.len()
    );
    let port = app.address.rsplit(':').next().unwrap();
    let mut stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    // Twice on one connection: keep-alive must hold.
    for _ in 0..2 {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).to_lowercase();
        assert!(answer.starts_with("http/1.1 200 ok\r\n"), "{answer}");
        assert!(answer.contains("content-length: 0\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "empty body: {answer}");
    }
    assert_eq!(
        app.status(CH, "044852ee407b40ec88ea65adb73ff5c27")
            .await
            .as_deref(),
        Some("read")
    );
    let row: (String, String) = sqlx::query_as("select sender, user_number from messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(row, ("86173xxxx4526".into(), "86187xxxx5632".into()));
    assert_eq!(
        app.history(CH, "044852ee407b40ec88ea65adb73ff5c27").await[0].receipt_count,
        2
    );
}

#[tokio::test]
async fn an_accepted_report_is_committed_with_its_extra_fields_and_an_empty_200() {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    let mut body = report("m1", "delivered");
    body["timestamp"] = serde_json::json!("1620612345");
    body["nested"] = serde_json::json!({"a": [1, 2]});
    let response = app.post_report(CH, PASSWORD, &body).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 0);
    assert_eq!(app.status(CH, "m1").await.as_deref(), Some("delivered"));
    let history = app.history(CH, "m1").await;
    assert_eq!(history.len(), 1);
    assert_eq!(
        history[0].extra,
        serde_json::json!({"timestamp": "1620612345", "nested": {"a": [1, 2]}})
    );
    assert!(history[0].advanced);
}

#[tokio::test]
async fn content_type_parameters_in_any_case_are_accepted() {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    for (i, ct) in [
        "application/json",
        "Application/JSON; Charset=UTF-8",
        "application/json;charset=utf-8",
        " application/json ; charset=utf-8",
        "application/vnd.koomessage+JSON",
    ]
    .iter()
    .enumerate()
    {
        let response = app
            .client
            .post(app.webhook_url(CH))
            .header("Authorization", PASSWORD)
            .header("Content-Type", *ct)
            .body(report(&format!("m{i}"), "read").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{ct}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let app = spawn_app_with(|c| c.webhook.max_body_bytes = 1024).await;
    app.add_channel(CH, PASSWORD).await;
    let mut body = report("m1", "read");
    body["padding"] = serde_json::json!("x".repeat(2000));
    let response = app.post_report(CH, PASSWORD, &body).await;
    assert_error(response, 413, "payload_too_large").await;
    // Without a Content-Length (chunked), the limit holds while reading.
    let body = body.to_string();
    let request = format!(
        "POST /social/on/whatsapp/koomessage/report/{CH} HTTP/1.1\r\nhost: x\r\nauthorization: {PASSWORD}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let answer = app.raw(request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(r#""error":"payload_too_large""#),
        "{answer}"
    );
    assert_eq!(app.count("messages").await, 0);
}

#[tokio::test]
async fn every_authentication_failure_is_the_same_401_and_costs_one_argon2_check() {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    app.add_channel("off", PASSWORD).await;
    koostatus::db::channels::set_enabled(&app.pool, "off", false)
        .await
        .unwrap();
    let body = report("m1", "read");
    let mut bodies = Vec::new();
    let cases: [(&str, Option<&str>); 5] = [
        (CH, None),
        (CH, Some("wrong password")),
        ("unknown", Some(PASSWORD)),
        ("off", Some(PASSWORD)),
        ("not a valid id!", Some(PASSWORD)),
    ];
    for (channel, password) in cases {
        let before = app.verifications();
        let mut request = app.client.post(app.webhook_url(channel)).json(&body);
        if let Some(p) = password {
            request = request.header("Authorization", p);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{channel} {password:?}");
        bodies.push(response.text().await.unwrap());
        // Same cost whatever failed: one verification, real or dummy.
        assert_eq!(app.verifications() - before, 1, "{channel} {password:?}");
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    let parsed: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(parsed["error"], "unauthorized");
    assert_eq!(app.count("messages").await, 0);
}

#[tokio::test]
async fn a_missing_or_foreign_content_type_gets_415() {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    let body = report("m1", "read").to_string();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("nonsense"),
        Some("application/jsonp"),
        Some("application/+json"),
        Some("text/json"),
        Some("json"),
    ] {
        let mut request = app
            .client
            .post(app.webhook_url(CH))
            .header("Authorization", PASSWORD)
            .body(body.clone());
        if let Some(ct) = ct {
            request = request.header("Content-Type", ct);
        }
        assert_error(request.send().await.unwrap(), 415, "unsupported_media_type").await;
    }
    assert_eq!(app.count("messages").await, 0);
}

#[tokio::test]
async fn every_bad_body_gets_400_with_its_code() {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    let with = |field: &str, value: serde_json::Value| {
        let mut r = report("m1", "read");
        r[field] = value;
        r.to_string()
    };
    let without = |field: &str| {
        let mut r = report("m1", "read");
        r.as_object_mut().unwrap().remove(field);
        r.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "invalid_json"),
        ("".into(), "invalid_json"),
        ("{\"message_id\": \"m1\"".into(), "invalid_json"),
        (
            b"\xff\xfe".iter().map(|&b| b as char).collect(),
            "invalid_json",
        ),
        ("[1, 2]".into(), "not_an_object"),
        ("\"read\"".into(), "not_an_object"),
        (without("message_id"), "missing_field"),
        (without("sender"), "missing_field"),
        (without("user_number"), "missing_field"),
        (without("status"), "missing_field"),
        (with("message_id", "".into()), "invalid_field"),
        (with("sender", "x".repeat(129).into()), "invalid_field"),
        (with("user_number", 8618712345_i64.into()), "invalid_field"),
        (with("message_id", serde_json::Value::Null), "invalid_field"),
        (with("status", "READ".into()), "invalid_status"),
        (with("status", "Read!".into()), "invalid_status"),
        (with("status", "read me".into()), "invalid_status"),
        (with("extra", "nul \u{0000} inside".into()), "invalid_field"),
    ];
    for (body, code) in cases {
        let response = app
            .client
            .post(app.webhook_url(CH))
            .header("Authorization", PASSWORD)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_error(response, 400, code).await;
    }
    assert_eq!(app.count("messages").await, 0);
}

#[tokio::test]
async fn a_known_message_with_another_sender_or_user_number_gets_409_and_nothing_is_written() {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m1", "delivered"))
            .await
            .status(),
        200
    );
    for field in ["sender", "user_number"] {
        let mut other = report("m1", "read");
        other[field] = "someone else".into();
        assert_error(app.post_report(CH, PASSWORD, &other).await, 409, "conflict").await;
    }
    assert_eq!(app.status(CH, "m1").await.as_deref(), Some("delivered"));
    let history = app.history(CH, "m1").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].receipt_count, 1);
    // The same message id on another channel is another message.
    app.add_channel("other", PASSWORD).await;
    let mut other = report("m1", "read");
    other["sender"] = "someone else".into();
    assert_eq!(
        app.post_report("other", PASSWORD, &other).await.status(),
        200
    );
}

#[tokio::test]
async fn checks_run_in_order_size_auth_content_type_body_state() {
    let app = spawn_app_with(|c| c.webhook.max_body_bytes = 1024).await;
    app.add_channel(CH, PASSWORD).await;
    let post = |password: &'static str, ct: &'static str, body: String| {
        app.client
            .post(app.webhook_url(CH))
            .header("Authorization", password)
            .header("Content-Type", ct)
            .body(body)
            .send()
    };
    let huge = "x".repeat(2048);
    // Size before authentication.
    assert_error(
        post("wrong", "text/plain", huge).await.unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    // Authentication before content type and body.
    assert_error(
        post("wrong", "text/plain", "garbage".into()).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        post("wrong", "application/json", "garbage".into())
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // Content type before body.
    assert_error(
        post(PASSWORD, "text/plain", "garbage".into())
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    // Body before state: a bad body for a conflicting message is a 400.
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m1", "read"))
            .await
            .status(),
        200
    );
    let mut bad = report("m1", "Bogus!");
    bad["sender"] = "other".into();
    assert_error(
        post(PASSWORD, "application/json", bad.to_string())
            .await
            .unwrap(),
        400,
        "invalid_status",
    )
    .await;
}

#[tokio::test]
async fn a_database_too_slow_gets_503_with_retry_after_and_nothing_is_acknowledged() {
    let app = spawn_app_with(|c| c.database.statement_timeout = Duration::from_millis(300)).await;
    app.add_channel(CH, PASSWORD).await;
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m1", "delivered"))
            .await
            .status(),
        200
    );
    // Hold the message's row lock so the write cannot finish in time.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("select 1 from messages where message_id = 'm1' for update")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = Instant::now();
    let response = app.post_report(CH, PASSWORD, &report("m1", "read")).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    assert_error(response, 503, "unavailable").await;
    blocker.rollback().await.unwrap();
    assert_eq!(app.status(CH, "m1").await.as_deref(), Some("delivered"));
    assert_eq!(app.history(CH, "m1").await.len(), 1);
    // And it recovers: the same report is accepted now.
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m1", "read"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_unreachable_database_gets_503_with_retry_after_within_the_acquire_timeout() {
    let db = crate::helpers::migrated_database().await;
    let app = crate::helpers::spawn_app_on(db, |c| {
        // A port where nothing listens: every connection attempt fails.
        c.database.url =
            koostatus::config::DatabaseUrl::parse("postgres://postgres@127.0.0.1:9/none").unwrap();
        c.database.acquire_timeout = Duration::from_millis(500);
    })
    .await;
    let started = Instant::now();
    let response = app.post_report(CH, PASSWORD, &report("m1", "read")).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 503, "unavailable").await;
    let response = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_error(response, 503, "unavailable").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
    let response = app.client.get(app.webhook_url(CH)).send().await.unwrap();
    assert_error(response, 405, "method_not_allowed").await;
}

/// webhook.allowed_networks (SPEC §14): a callback from elsewhere gets 403
/// before any password is checked (a wrong password too: no 401, no
/// guessing budget spent), and nothing is stored; from inside, as usual;
/// behind a trusted proxy the forwarded client address decides.
#[tokio::test]
async fn callbacks_from_outside_the_allowed_networks_get_403_before_the_password() {
    let outside = spawn_app_with(|c| {
        c.webhook.allowed_networks = vec!["10.10.10.0/24".parse().unwrap()];
    })
    .await;
    outside.add_channel(CH, PASSWORD).await;
    for password in [PASSWORD, "wrong"] {
        assert_error(
            outside
                .post_report(CH, password, &report("m1", "read"))
                .await,
            403,
            "forbidden",
        )
        .await;
    }
    assert_eq!(outside.status(CH, "m1").await, None);
    assert_eq!(outside.verifications(), 0, "no password was checked");

    let inside = spawn_app_with(|c| {
        c.webhook.allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    inside.add_channel(CH, PASSWORD).await;
    assert_eq!(
        inside
            .post_report(CH, PASSWORD, &report("m1", "read"))
            .await
            .status(),
        200
    );

    // Behind a trusted proxy (127.0.0.1 here), X-Forwarded-For names the client.
    let proxied = spawn_app_with(|c| {
        c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.webhook.allowed_networks = vec!["10.10.10.0/24".parse().unwrap()];
    })
    .await;
    proxied.add_channel(CH, PASSWORD).await;
    for (client, code) in [("10.10.10.7", 200), ("192.0.2.1", 403)] {
        let r = proxied
            .client
            .post(proxied.webhook_url(CH))
            .header("Authorization", PASSWORD)
            .header("X-Forwarded-For", client)
            .json(&report(&format!("from-{client}"), "read"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code, "{client}");
    }
}
