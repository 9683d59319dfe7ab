//! Random requests over raw HTTP: whatever a client sends, the answer is
//! never a 500, and every 4xx carries the JSON error body.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use crate::helpers::{PASSWORD, spawn_app};

const CH: &str = "fuzz";

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("POST".to_owned()),
        2 => Just("GET".to_owned()),
        1 => prop::sample::select(vec!["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FROB"]).prop_map(str::to_owned),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(CH.to_owned()),
        "[A-Za-z0-9._-]{1,70}",
        "(%[0-9A-Fa-f]{2}|[a-z/]){1,20}",
        Just("%FF%FE".to_owned()),
        Just("..".to_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => segment().prop_map(|c| format!("/social/on/whatsapp/koomessage/report/{c}")),
        1 => (segment(), segment()).prop_map(|(c, m)| format!("/api/v1/channels/{c}/messages/{m}")),
        1 => (segment(), "[a-z=&%0-9_+:-]{0,60}").prop_map(|(c, q)| format!("/api/v1/channels/{c}/messages?{q}")),
        1 => segment().prop_map(|c| format!("/api/v1/channels/{c}/messages/lookup")),
        // A request target always starts with "/": a malformed request line
        // is HTTP framing, answered by the HTTP layer before any route.
        1 => "/([a-z0-9%]{0,12}/?){0,6}",
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(Some("application/json; charset=UTF-8".to_owned())),
        1 => Just(None),
        1 => "[ -~]{0,40}".prop_map(Some),
        1 => Just(Some("application/problem+json".to_owned())),
    ]
}

fn authorization() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        12 => Just(Some(PASSWORD.to_owned())),
        1 => Just(None),
        1 => "[ -~]{0,30}".prop_map(Some),
        1 => "Bearer kst_[0-9a-f]{64}".prop_map(Some),
    ]
}

fn json_value(depth: u32) -> BoxedStrategy<serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(Into::into),
        any::<i64>().prop_map(Into::into),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Into::into),
        "\\PC{0,140}".prop_map(Into::into),
        prop::sample::select(vec!["read", "delivered", "failed", "READ", ""]).prop_map(Into::into),
    ];
    leaf.prop_recursive(depth, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Into::into),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn report_like() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        4 => "[a-z0-9]{1,20}".prop_map(serde_json::Value::from),
        1 => json_value(2),
    ];
    let status = prop_oneof![
        4 => prop::sample::select(vec!["read", "delivered", "failed"]).prop_map(serde_json::Value::from),
        1 => json_value(1),
    ];
    (
        field.clone(),
        field.clone(),
        field,
        status,
        prop::collection::btree_map("[a-z]{1,8}", json_value(2), 0..3),
    )
        .prop_map(|(m, s, u, st, extra)| {
            let mut o = serde_json::Map::new();
            o.insert("message_id".into(), m);
            o.insert("sender".into(), s);
            o.insert("user_number".into(), u);
            o.insert("status".into(), st);
            o.extend(extra);
            serde_json::to_vec(&o).unwrap()
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => report_like(),
        2 => report_like().prop_flat_map(|b| { let n = b.len(); (Just(b), 0..n) }).prop_map(|(b, cut)| b[..cut].to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..300),
        1 => (1usize..3000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()),
        1 => Just(br#"{"message_id":"a","message_id":"b","sender":"s","user_number":"u","status":"read"}"#.to_vec()),
        1 => Just(br#"{"message_id":1,"sender":2,"user_number":3,"status":4}"#.to_vec()),
        1 => Just(b"{\"message_id\":\"\xff\xfe\",\"sender\":\"s\",\"user_number\":\"u\",\"status\":\"read\"}".to_vec()),
        1 => (16_000usize..40_000).prop_map(|n| format!("{{\"pad\":\"{}\"}}", "x".repeat(n)).into_bytes()),
        1 => json_value(4).prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

/// 10,000 requests; wrong passwords pay argon2, so most use the right one
/// and reach the body parser, which is where the variety matters.
#[test]
fn random_requests_never_get_a_500_and_every_4xx_has_the_json_error_body() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(async {
        let app = spawn_app().await;
        app.add_channel(CH, PASSWORD).await;
        // The right password is verified once before the random guesses
        // spend the channel's budget: remembered, it never meets the
        // limiter, so every well-formed report below must be stored.
        let first = app
            .post_report(CH, PASSWORD, &crate::helpers::report("warm-up", "read"))
            .await;
        assert_eq!(first.status(), 200);
        app
    });
    let cases: u32 = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (method(), path(), content_type(), authorization(), body());
    let valid = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |(method, path, ct, auth, body)| {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        if let Some(ct) = &ct {
            head.push_str(&format!("content-type: {ct}\r\n"));
        }
        if let Some(auth) = &auth {
            head.push_str(&format!("authorization: {auth}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(&body);
        let answer = runtime.block_on(app.raw(&request));
        let status: u16 = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        prop_assert!(status != 0, "no answer to {method} {path}");
        prop_assert!(status != 500, "500 for {method} {path}: {answer}");
        prop_assert!(
            status < 500 || status == 503,
            "{status} for {method} {path}"
        );
        // A well-formed report for the channel, with the right password and
        // a JSON type, must be stored: 200, or 409 when an earlier case sent
        // the same message with another sender or user number.
        let well_formed = method == "POST"
            && path == format!("/social/on/whatsapp/koomessage/report/{CH}")
            && ct.as_deref().is_some_and(|t| {
                t == "application/json; charset=UTF-8" || t == "application/problem+json"
            })
            && auth.as_deref() == Some(PASSWORD)
            && koostatus::domain::Report::from_json(&body).is_ok();
        if well_formed {
            valid.set(valid.get() + 1);
            prop_assert!(
                status == 200 || status == 409,
                "{status} for a well-formed report: {answer}"
            );
        }
        if (400..500).contains(&status) {
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(body);
            prop_assert!(
                parsed
                    .as_ref()
                    .is_ok_and(|v| v["error"].is_string() && v["message"].is_string()),
                "{status} without the JSON error body for {method} {path}: {answer}"
            );
        }
        Ok(())
    });
    runtime.block_on(async move { drop(app) });
    result.unwrap();
    // The check above must have had something to check.
    // About 1.3 % of the cases are (126 of 10,000 here).
    assert!(
        valid.get() >= cases / 200,
        "only {} well-formed reports in {cases} cases",
        valid.get()
    );
    println!(
        "fuzz: {cases} requests, {} of them well-formed reports, all stored",
        valid.get()
    );
}
