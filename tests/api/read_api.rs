//! SPEC §6: the read API, its tokens and its OpenAPI document.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, TestApp, assert_error, report, spawn_app, strings_of, wait_until_sql,
};

const CH: &str = "ch";

async fn app_with_channel() -> TestApp {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    app
}

async fn send(app: &TestApp, body: Value) {
    assert_eq!(app.post_report(CH, PASSWORD, &body).await.status(), 200);
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

#[tokio::test]
async fn get_message_answers_every_field_and_the_history_oldest_first() {
    let app = app_with_channel().await;
    let token = app.create_token("desk", &[]).await;
    let mut delivered = report("m1", "delivered");
    delivered["timestamp"] = json!("1700734600");
    send(&app, delivered.clone()).await;
    send(&app, report("m1", "read")).await;
    send(&app, delivered).await;

    let response = app
        .get(&format!("/api/v1/channels/{CH}/messages/m1"), &token)
        .await;
    assert_eq!(response.status(), 200);
    let m: Value = response.json().await.unwrap();
    assert_eq!(m["channel_id"], CH);
    assert_eq!(m["message_id"], "m1");
    assert_eq!(m["sender"], "86173xxxx4526");
    assert_eq!(m["user_number"], "86187xxxx5632");
    assert_eq!(m["status"], "read");
    let history = m["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    let (d, r) = (&history[0], &history[1]);
    assert_eq!(
        (
            d["status"].as_str(),
            d["receipt_count"].as_i64(),
            d["advanced"].as_bool()
        ),
        (Some("delivered"), Some(2), Some(true))
    );
    assert_eq!(
        (
            r["status"].as_str(),
            r["receipt_count"].as_i64(),
            r["advanced"].as_bool()
        ),
        (Some("read"), Some(1), Some(true))
    );
    assert_eq!(d["extra"], json!({"timestamp": "1700734600"}));
    assert_eq!(r["extra"], json!({}));
    for t in [
        &m["first_seen_at"],
        &m["updated_at"],
        &d["first_received_at"],
        &d["last_received_at"],
        &r["first_received_at"],
    ] {
        assert!(is_rfc3339_utc(t), "{t}");
    }
    assert_eq!(m["first_seen_at"], d["first_received_at"]);
    assert_eq!(m["updated_at"], r["first_received_at"]);
    assert_ne!(d["first_received_at"], d["last_received_at"]);
    let keys: HashSet<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        HashSet::from([
            "channel_id",
            "message_id",
            "sender",
            "user_number",
            "status",
            "first_seen_at",
            "updated_at",
            "sent_at",
            "tags",
            "history"
        ])
    );
    // Not registered: no sending time, no tags.
    assert_eq!(
        (&m["sent_at"], &m["tags"]),
        (&serde_json::Value::Null, &serde_json::json!([]))
    );

    let missing = app
        .get(&format!("/api/v1/channels/{CH}/messages/nope"), &token)
        .await;
    assert_error(missing, 404, "not_found").await;
}

#[tokio::test]
async fn tokens_401_and_scope_404_rules() {
    let app = app_with_channel().await;
    app.add_channel("other", PASSWORD).await;
    send(&app, report("m1", "read")).await;
    let scoped = app.create_token("scoped", &["other"]).await;
    let all = app.create_token("all", &[]).await;
    let path = format!("/api/v1/channels/{CH}/messages/m1");

    let no_token = app
        .client
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.headers()["www-authenticate"], "Bearer");
    assert_error(no_token, 401, "unauthorized").await;
    let basic = app
        .client
        .get(format!("{}{path}", app.address))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_error(basic, 401, "unauthorized").await;
    let (forged, _) = koostatus::auth::tokens::generate();
    assert_error(app.get(&path, &forged).await, 401, "unauthorized").await;
    assert_error(app.get(&path, "kst_short").await, 401, "unauthorized").await;

    assert_eq!(app.get(&path, &all).await.status(), 200);
    // Outside the scope looks exactly like a channel that does not exist.
    let out_of_scope: Value = app.get(&path, &scoped).await.json().await.unwrap();
    let unknown: Value = app
        .get("/api/v1/channels/zz/messages/m1", &all)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(out_of_scope["error"], "not_found");
    assert_eq!(
        out_of_scope["message"]
            .as_str()
            .unwrap()
            .replace("`ch`", "`zz`"),
        unknown["message"].as_str().unwrap()
    );
    for p in [
        format!("/api/v1/channels/{CH}/messages"),
        "/api/v1/channels/zz/messages".into(),
    ] {
        let tok = if p.contains(CH) { &scoped } else { &all };
        assert_error(app.get(&p, tok).await, 404, "not_found").await;
    }
    assert_error(
        app.lookup(CH, &scoped, r#"{"message_ids":["m1"]}"#.into())
            .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        app.get("/api/v1/channels/other/messages", &scoped)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_revoked_token_stops_working_within_5_seconds_and_use_is_recorded() {
    let app = app_with_channel().await;
    let out = crate::helpers::run_cli(
        &app.db.url(),
        &["token", "create", "--name", "desk", "--channel", CH],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("kst_") && token.len() == 68, "{token}");
    let path = format!("/api/v1/channels/{CH}/messages");
    assert_eq!(app.get(&path, &token).await.status(), 200);

    // Last use is written in the background, once; the hash is stored, never the token.
    wait_until_sql(
        &app.pool,
        "the token's last use is recorded",
        "select last_used_at is not null from api_tokens where name = 'desk'",
    )
    .await;
    let list =
        String::from_utf8(crate::helpers::run_cli(&app.db.url(), &["token", "list"], "").stdout)
            .unwrap();
    let line = list.lines().nth(1).unwrap();
    assert!(line.starts_with("desk  ch        20"), "{list}");
    assert!(!line.ends_with("never") && !list.contains(&token), "{list}");

    let out = crate::helpers::run_cli(&app.db.url(), &["token", "revoke", "desk"], "");
    assert!(out.status.success());
    let started = Instant::now();
    while app.get(&path, &token).await.status() != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "revoked token still works"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = crate::helpers::run_cli(&app.db.url(), &["token", "revoke", "desk"], "");
    assert_eq!(again.status.code(), Some(1));
    let bad = crate::helpers::run_cli(
        &app.db.url(),
        &["token", "create", "--name", "x", "--channel", "nope"],
        "",
    );
    assert_eq!(bad.status.code(), Some(1));
}

#[tokio::test]
async fn lookup_answers_known_unknown_and_duplicate_ids_in_one_go() {
    let app = app_with_channel().await;
    let token = app.create_token("desk", &[]).await;
    send(&app, report("a", "read")).await;
    send(&app, report("b", "failed")).await;
    let response = app
        .lookup(
            CH,
            &token,
            json!({"message_ids": ["b", "x", "a", "b", "x", "y"]}).to_string(),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(strings_of(&body["messages"], "message_id"), ["b", "a"]);
    assert_eq!(body["missing"], json!(["x", "y"]));
    assert_eq!(body["messages"][0]["status"], "failed");
    assert!(body["messages"][0].get("history").is_none());
    // 1000 ids is the most.
    let thousand: Vec<String> = (0..1000).map(|i| format!("id-{i}")).collect();
    let response = app
        .lookup(CH, &token, json!({"message_ids": thousand}).to_string())
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["missing"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn lookup_rejects_bad_bodies_with_400() {
    let app = app_with_channel().await;
    let token = app.create_token("desk", &[]).await;
    let too_many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    for (body, code) in [
        ("not json".to_owned(), "invalid_json"),
        ("[]".into(), "invalid_json"),
        (r#"{"ids": ["a"]}"#.into(), "invalid_json"),
        (r#"{"message_ids": "a"}"#.into(), "invalid_json"),
        (r#"{"message_ids": [1]}"#.into(), "invalid_json"),
        (r#"{"message_ids": []}"#.into(), "invalid_message_ids"),
        (r#"{"message_ids": [""]}"#.into(), "invalid_message_ids"),
        (
            json!({"message_ids": ["x".repeat(129)]}).to_string(),
            "invalid_message_ids",
        ),
        (
            json!({"message_ids": too_many}).to_string(),
            "invalid_message_ids",
        ),
    ] {
        assert_error(app.lookup(CH, &token, body).await, 400, code).await;
    }
}

/// Sends `n` reports, one message each, and returns the ids newest first.
async fn fill(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut r = report(&format!("m{i:03}"), ["failed", "delivered", "read"][i % 3]);
        r["user_number"] = json!(format!("user-{}", i % 5));
        send(app, r).await;
        ids.push(format!("m{i:03}"));
    }
    ids.reverse();
    ids
}

async fn page(app: &TestApp, token: &str, query: &str) -> (Vec<String>, Option<String>) {
    let response = app
        .get(&format!("/api/v1/channels/{CH}/messages?{query}"), token)
        .await;
    assert_eq!(response.status(), 200, "{query}");
    let body: Value = response.json().await.unwrap();
    let ids = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect();
    (ids, body["next_cursor"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn paging_250_messages_by_100_gives_3_pages_with_every_message_once() {
    let app = app_with_channel().await;
    let token = app.create_token("desk", &[]).await;
    let expected = fill(&app, 250).await;
    let mut seen = Vec::new();
    let mut query = "limit=100".to_owned();
    let mut pages = 0;
    loop {
        let (ids, next) = page(&app, &token, &query).await;
        pages += 1;
        seen.extend(ids);
        match next {
            Some(cursor) => query = format!("limit=100&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "newest change first, each message once");
    // Default page size is 100.
    assert_eq!(page(&app, &token, "").await.0.len(), 100);
}

#[tokio::test]
async fn listing_filters_by_status_user_number_and_update_time() {
    let app = app_with_channel().await;
    let token = app.create_token("desk", &[]).await;
    let first = fill(&app, 30).await;
    let cut = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let with_user = |id: &str, status: &str, user: &str| {
        let mut r = report(id, status);
        r["user_number"] = json!(user);
        r
    };
    send(&app, with_user("m000", "read", "user-0")).await; // failed -> read: a change after the cut
    send(&app, with_user("m001", "failed", "user-1")).await; // delivered stays: no change

    let (read, _) = page(&app, &token, "status=read").await;
    assert_eq!(read.len(), 11);
    assert_eq!(read[0], "m000");
    let (user, _) = page(&app, &token, "user_number=user-2").await;
    assert_eq!(user, ["m027", "m022", "m017", "m012", "m007", "m002"]);
    let (both, _) = page(&app, &token, "user_number=user-2&status=delivered").await;
    assert_eq!(both, ["m022", "m007"]);
    let after = cut.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (changed, next) = page(
        &app,
        &token,
        &format!("updated_after={}", after.replace('+', "%2B")),
    )
    .await;
    assert_eq!((changed, next), (vec!["m000".to_owned()], None));
    // updated_before: everything but the change after the cut, newest
    // first, paged with its cursor.
    let before = format!("updated_before={}", after.replace('+', "%2B"));
    let (older, next) = page(&app, &token, &format!("{before}&limit=20")).await;
    assert_eq!(older.len(), 20);
    assert!(!older.contains(&"m000".to_owned()));
    assert_eq!(older[0], first[0]);
    let (rest, next) = page(
        &app,
        &token,
        &format!("{before}&limit=20&cursor={}", next.unwrap()),
    )
    .await;
    assert_eq!((rest.len(), next), (9, None));
    let (small, next) = page(&app, &token, "limit=1").await;
    assert_eq!(small, ["m000"]);
    let (second, _) = page(&app, &token, &format!("limit=1&cursor={}", next.unwrap())).await;
    assert_eq!(second, [first[0].clone()]);
}

/// The user-number index holds a customer's messages by the day they were
/// first seen (V17): a listing by user number finds them under every day
/// the channel has messages of, the oldest and the newest included, and
/// pages through them.
#[tokio::test]
async fn a_listing_by_user_number_finds_the_customers_messages_of_every_day() {
    let app = app_with_channel().await;
    let token = app.create_token("desk", &[]).await;
    // Days (and an hour) ago each message was first seen, last changed a
    // minute later: across UTC midnights. `other` is another customer's.
    let days = [("old", 40), ("week", 7), ("yesterday", 1), ("today", 0)];
    for (id, _) in days {
        let mut r = report(id, "delivered");
        r["user_number"] = json!("user-days");
        send(&app, r).await;
    }
    send(&app, report("other", "delivered")).await;
    // A registration may date a message decades back (`sent_at`), and that
    // day is one of the channel's days too.
    let register = app.create_register_token("crm", &[]).await;
    let old_send = json!({"messages": [{"message_id": "1970", "sender": "86173xxxx4526",
        "user_number": "user-days", "sent_at": "1970-01-01T00:00:00Z"}]});
    assert!(
        app.register(CH, &register, &old_send)
            .await
            .status()
            .is_success()
    );
    for (id, ago) in days {
        sqlx::query(
            "update messages
             set first_seen_at = now() - make_interval(days => $2, hours => 1),
                 updated_at = now() - make_interval(days => $2, hours => 1) + interval '1 minute'
             where channel_id = $1 and message_id = $3",
        )
        .bind(CH)
        .bind(ago)
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    }

    let (all, next) = page(&app, &token, "user_number=user-days").await;
    // Newest change first: the registration is the latest change.
    assert_eq!(all, ["1970", "today", "yesterday", "week", "old"]);
    assert_eq!(next, None);
    let (first, next) = page(&app, &token, "user_number=user-days&limit=3").await;
    assert_eq!(first, ["1970", "today", "yesterday"]);
    let (rest, next) = page(
        &app,
        &token,
        &format!("user_number=user-days&limit=3&cursor={}", next.unwrap()),
    )
    .await;
    assert_eq!(rest, ["week", "old"]);
    assert_eq!(next, None);
    let (nobody, _) = page(&app, &token, "user_number=nobody").await;
    assert!(nobody.is_empty());
}

#[tokio::test]
async fn bad_listing_parameters_get_400() {
    let app = app_with_channel().await;
    let token = app.create_token("desk", &[]).await;
    for (query, code) in [
        ("status=pending", "invalid_status"),
        ("updated_after=yesterday", "invalid_time"),
        ("updated_after=2026-11-23", "invalid_time"),
        ("updated_before=soon", "invalid_time"),
        ("limit=0", "invalid_limit"),
        ("limit=501", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("cursor=garbage", "invalid_cursor"),
        ("cursor=", "invalid_cursor"),
        ("colour=blue", "invalid_query"),
        ("user_number=", "invalid_user_number"),
    ] {
        let response = app
            .get(&format!("/api/v1/channels/{CH}/messages?{query}"), &token)
            .await;
        assert_error(response, 400, code).await;
    }
}

/// Same keys and JSON types, recursively: the example documents the answer.
fn same_shape(example: &Value, real: &Value, at: &str) {
    match (example, real) {
        (Value::Object(e), Value::Object(r)) => {
            let (ek, rk): (HashSet<_>, HashSet<_>) = (e.keys().collect(), r.keys().collect());
            if at.ends_with(".extra") {
                return;
            }
            assert_eq!(ek, rk, "keys at {at}");
            for (k, v) in e {
                same_shape(v, &r[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(r)) => {
            if let (Some(e), Some(r)) = (e.first(), r.first()) {
                same_shape(e, r, &format!("{at}[]"));
            }
        }
        (Value::Null, Value::String(_)) | (Value::String(_), Value::Null)
            if at.ends_with("next_cursor") => {}
        (e, r) => assert_eq!(
            std::mem::discriminant(e),
            std::mem::discriminant(r),
            "type at {at}: {e} vs {r}"
        ),
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_its_examples_match_real_answers() {
    let app = app_with_channel().await;
    let token = app.create_token("desk", &[]).await;
    let response = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: HashSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        paths,
        HashSet::from([
            "/social/on/whatsapp/koomessage/report/{channel_id}",
            "/api/v1/channels/{channel_id}/messages/{message_id}",
            "/api/v1/channels/{channel_id}/messages/lookup",
            "/api/v1/channels/{channel_id}/messages",
            "/api/v1/channels/{channel_id}/changes",
            "/api/v1/channels/{channel_id}/events",
            "/api/v1/channels/{channel_id}/export",
            "/api/v1/tickets",
            "/api/v1/channels/{channel_id}/stats",
            "/api/v1/channels",
            "/healthz",
            "/readyz",
            "/metrics",
        ])
    );
    let example = |name: &str| doc["components"]["schemas"][name]["example"].clone();

    // The webhook's example body is accepted as it stands.
    assert_eq!(
        app.post_report(CH, PASSWORD, &example("ReportBody"))
            .await
            .status(),
        200
    );
    send(
        &app,
        report("044852ee407b40ec88ea65adb73ff5c27", "delivered"),
    )
    .await;
    for _ in 0..2 {
        send(&app, report(&format!("more-{}", rand_suffix()), "read")).await;
    }
    let id = "044852ee407b40ec88ea65adb73ff5c27";
    let detail: Value = app
        .get(&format!("/api/v1/channels/{CH}/messages/{id}"), &token)
        .await
        .json()
        .await
        .unwrap();
    same_shape(&example("MessageDetail"), &detail, "MessageDetail");
    let lookup: Value = app
        .lookup(CH, &token, example("LookupRequest").to_string())
        .await
        .json()
        .await
        .unwrap();
    same_shape(&example("LookupResponse"), &lookup, "LookupResponse");
    let page: Value = app
        .get(&format!("/api/v1/channels/{CH}/messages?limit=1"), &token)
        .await
        .json()
        .await
        .unwrap();
    same_shape(&example("MessagePage"), &page, "MessagePage");
    let error: Value = app
        .get(&format!("/api/v1/channels/{CH}/messages/x"), &token)
        .await
        .json()
        .await
        .unwrap();
    same_shape(&example("ErrorBody"), &error, "ErrorBody");
    assert!(page["next_cursor"].is_string());
    let changes: Value = app
        .get(&format!("/api/v1/channels/{CH}/changes?limit=1"), &token)
        .await
        .json()
        .await
        .unwrap();
    same_shape(&example("ChangePage"), &changes, "ChangePage");
    // From a minute ago: the first bucket is today's, which has read messages.
    let from = (chrono::Utc::now() - chrono::TimeDelta::minutes(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let stats: Value = app
        .get(&format!("/api/v1/channels/{CH}/stats?from={from}"), &token)
        .await
        .json()
        .await
        .unwrap();
    same_shape(&example("Stats"), &stats, "Stats");
    same_shape(
        &example("ChangeEntry"),
        &changes["changes"][0],
        "ChangeEntry",
    );
    let ticket = app
        .client
        .post(format!("{}/api/v1/tickets", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ticket.status(), 201);
    same_shape(&example("Ticket"), &ticket.json().await.unwrap(), "Ticket");
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// `database.read_url`: the message queries of the read API go to the
/// replica; the webhook and the feed stay on the primary. A replica that
/// does not answer makes only those queries answer 503.
#[tokio::test]
async fn message_queries_use_the_read_replica_when_one_is_configured() {
    let app = crate::helpers::spawn_app_with(|c| {
        let primary = secrecy::ExposeSecret::expose_secret(&c.database.url).to_owned();
        let (server, _) = primary.rsplit_once('/').unwrap();
        c.database.read_url = Some(
            koostatus::config::DatabaseUrl::parse(&format!("{server}/koostatus_no_such_replica"))
                .unwrap(),
        );
        c.database.acquire_timeout = Duration::from_millis(500);
    })
    .await;
    app.add_channel(CH, PASSWORD).await;
    let token = app.create_token("desk", &[]).await;
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m1", "read"))
            .await
            .status(),
        200
    );
    for path in [
        format!("/api/v1/channels/{CH}/messages/m1"),
        format!("/api/v1/channels/{CH}/messages"),
    ] {
        assert_error(app.get(&path, &token).await, 503, "unavailable").await;
    }
    let feed = app
        .get(&format!("/api/v1/channels/{CH}/changes"), &token)
        .await;
    assert_eq!(feed.status(), 200);

    // Pointed at the primary's database, the same queries answer.
    let same =
        crate::helpers::spawn_app_with(|c| c.database.read_url = Some(c.database.url.clone()))
            .await;
    same.add_channel(CH, PASSWORD).await;
    let token = same.create_token("desk", &[]).await;
    assert_eq!(
        same.post_report(CH, PASSWORD, &report("m1", "read"))
            .await
            .status(),
        200
    );
    let got = same
        .get(&format!("/api/v1/channels/{CH}/messages/m1"), &token)
        .await;
    assert_eq!(got.status(), 200);
}

/// A method a route does not take: 405 with `Allow` naming the ones it
/// does, for the read API and the webhook alike. The lookup's path is also
/// the message whose id is `lookup`.
#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let app = app_with_channel().await;
    let token = app.create_token("desk", &[]).await;
    let cases = [
        (
            reqwest::Method::DELETE,
            format!("/api/v1/channels/{CH}/messages"),
            "GET, POST",
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/channels/{CH}/messages/m1"),
            "GET",
        ),
        (
            reqwest::Method::PUT,
            format!("/api/v1/channels/{CH}/messages/lookup"),
            "GET, POST",
        ),
        (reqwest::Method::GET, "/api/v1/tickets".to_owned(), "POST"),
        (
            reqwest::Method::POST,
            "/api/v1/openapi.json".to_owned(),
            "GET",
        ),
        (
            reqwest::Method::GET,
            app.webhook_url(CH).replace(&app.address, ""),
            "POST",
        ),
        (reqwest::Method::POST, "/metrics".to_owned(), "GET"),
    ];
    for (method, path, allow) in cases {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        assert_error(response, 405, "method_not_allowed").await;
    }
    send(&app, report("lookup", "read")).await;
    let response = app
        .get(&format!("/api/v1/channels/{CH}/messages/lookup"), &token)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message_id"], "lookup");
}
