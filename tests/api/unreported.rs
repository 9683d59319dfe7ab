//! SPEC §13: messages registered as `sent`, the sweep that turns those
//! without a report into `unreported`, and unknown statuses kept.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::receiver::{CLI_ENV, KEY, Receiver};
use crate::helpers::{
    PASSWORD, TestApp, assert_error, report, run_cli_with, spawn_app, spawn_app_with,
    spawn_instance, strings_of, wait_until,
};
use crate::sse::Sse;

const CH: &str = "ch";
const SENDER: &str = "86173xxxx4526";
const NUMBER: &str = "86187xxxx5632";

fn message(id: &str) -> Value {
    json!({"message_id": id, "sender": SENDER, "user_number": NUMBER})
}

async fn app_with_tokens() -> (TestApp, String, String) {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    let register = app.create_register_token("sender", &[CH]).await;
    let read = app.create_token("desk", &[CH]).await;
    (app, register, read)
}

async fn json_of(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A registration's `sent` changes reach a desktop following the channel
/// on another instance with nothing else written after them: the
/// registering instance announces them (V20; the feed's trigger did
/// before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_reaches_a_stream_on_another_instance() {
    let (app, register, read) = app_with_tokens().await;
    let second = spawn_instance(&app, |_| {}).await;
    let mut stream = Sse::open(&second, CH, &read, None).await;
    let body = json!({"messages": [message("m1"), message("m2")]});
    json_of(app.register(CH, &register, &body).await).await;
    let mut sent = Vec::new();
    while sent.len() < 2 {
        let (_, change) = stream
            .next(Duration::from_secs(5))
            .await
            .expect("the registration's changes arrive without another write");
        assert_eq!(change["status"], "sent", "{change}");
        sent.push(change["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(sent, ["m1", "m2"]);
}

#[tokio::test]
async fn a_registered_message_is_known_as_sent_and_reports_move_it_on() {
    let (app, register, read) = app_with_tokens().await;
    let mut first = message("m1");
    first["sent_at"] = "2026-11-23T10:15:00Z".into();
    first["tags"] = json!(["black-friday", "vip"]);
    let body = json!({"messages": [first, message("m2")]});
    let answer = json_of(app.register(CH, &register, &body).await).await;
    assert_eq!(
        answer,
        json!({"registered": 2, "already_known": 0, "conflicts": []})
    );

    let m1 = json_of(
        app.get(&format!("/api/v1/channels/{CH}/messages/m1"), &read)
            .await,
    )
    .await;
    assert_eq!(m1["status"], "sent");
    assert_eq!(m1["sent_at"], "2026-11-23T10:15:00Z");
    assert_eq!(m1["first_seen_at"], "2026-11-23T10:15:00Z");
    assert_eq!(m1["tags"], json!(["black-friday", "vip"]));
    assert_eq!(m1["history"][0]["status"], "sent");
    assert_eq!(m1["history"][0]["advanced"], true);

    // The registration is in the feed, and a report moves the message on.
    // The feed shows a change once every older transaction of the server
    // has ended: a test running beside this one may hold that back a
    // moment.
    let feed = || async {
        let changes = json_of(
            app.get(&format!("/api/v1/channels/{CH}/changes"), &read)
                .await,
        )
        .await;
        changes["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["message_id"].as_str().unwrap().to_owned(),
                    c["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    wait_until(
        "the registrations in the feed",
        Duration::from_secs(10),
        || async { feed().await.len() >= 2 },
    )
    .await;
    let sent = feed().await;
    let sent: Vec<(&str, &str)> = sent.iter().map(|(m, s)| (m.as_str(), s.as_str())).collect();
    assert_eq!(sent, vec![("m1", "sent"), ("m2", "sent")]);
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m1", "delivered"))
            .await
            .status(),
        200
    );
    assert_eq!(app.status(CH, "m1").await.as_deref(), Some("delivered"));

    // Listings filter by tag.
    let tagged = json_of(
        app.get(&format!("/api/v1/channels/{CH}/messages?tag=vip"), &read)
            .await,
    )
    .await;
    assert_eq!(strings_of(&tagged["messages"], "message_id"), ["m1"]);
    let sent_only = json_of(
        app.get(
            &format!("/api/v1/channels/{CH}/messages?status=sent"),
            &read,
        )
        .await,
    )
    .await;
    assert_eq!(sent_only["messages"][0]["message_id"], "m2");
    assert_eq!(sent_only["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn registering_again_changes_nothing_and_conflicts_are_listed_and_not_written() {
    let (app, register, _) = app_with_tokens().await;
    // m0 is known from a report before its registration arrives.
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m0", "read"))
            .await
            .status(),
        200
    );
    let body = json!({"messages": [message("m0"), message("m1"), message("m2")]});
    let first = json_of(app.register(CH, &register, &body).await).await;
    assert_eq!(
        first,
        json!({"registered": 2, "already_known": 1, "conflicts": []})
    );
    let before: Vec<(String, String, i64)> = sqlx::query_as(
        "select message_id, status::text, (select count(*) from message_entries h
                where h.message_key = m.message_key)
         from messages m order by 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let (changes, counts) = (
        app.count("message_changes").await,
        stats_messages(&app).await,
    );

    let again = json_of(app.register(CH, &register, &body).await).await;
    assert_eq!(
        again,
        json!({"registered": 0, "already_known": 3, "conflicts": []})
    );
    let mut conflicting = message("m1");
    conflicting["user_number"] = "someone-else".into();
    let mixed = json!({"messages": [message("m3"), conflicting]});
    let answer = json_of(app.register(CH, &register, &mixed).await).await;
    assert_eq!(
        answer,
        json!({"registered": 1, "already_known": 0, "conflicts": ["m1"]})
    );

    let after: Vec<(String, String, i64)> = sqlx::query_as(
        "select message_id, status::text, (select count(*) from message_entries h
                where h.message_key = m.message_key)
         from messages m where message_id <> 'm3' order by 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        after, before,
        "nothing of a repeat or a conflict is written"
    );
    assert_eq!(before[0], ("m0".into(), "read".into(), 1));
    assert_eq!(app.count("message_changes").await, changes + 1);
    assert_eq!(stats_messages(&app).await, counts + 1);
    let number: String =
        sqlx::query_scalar("select user_number from messages where message_id = 'm1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(number, NUMBER);
}

async fn stats_messages(app: &TestApp) -> i64 {
    sqlx::query_scalar("select coalesce(sum(messages), 0)::int8 from stats_counts")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn only_register_tokens_register_and_bad_registrations_get_400() {
    let (app, register, read) = app_with_tokens().await;
    let one = json!({"messages": [message("m1")]});
    assert_error(app.register(CH, &read, &one).await, 403, "forbidden").await;
    assert_error(
        app.register(CH, "kst_nope", &one).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        app.register("other", &register, &one).await,
        404,
        "not_found",
    )
    .await;
    // The read-only token still reads.
    assert_eq!(
        app.get(&format!("/api/v1/channels/{CH}/messages"), &read)
            .await
            .status(),
        200
    );

    let many: Vec<Value> = (0..1001).map(|i| message(&format!("m{i}"))).collect();
    let future = (chrono::Utc::now() + chrono::TimeDelta::minutes(10)).to_rfc3339();
    let mut cases = vec![
        json!({"messages": many}),
        json!({"messages": []}),
        json!({"messages": [message("m1"), message("m1")]}),
        json!({"messages": [{"message_id": "m1", "sender": SENDER}]}),
        json!({"messages": [{"message_id": "", "sender": SENDER, "user_number": NUMBER}]}),
        json!({"messages": [message("m1")], "extra": 1}),
        json!([1]),
    ];
    for (field, value) in [
        ("sent_at", json!(future)),
        ("sent_at", json!("yesterday")),
        ("tags", json!(["a", "b", "c", "d", "e", "f", "g", "h", "i"])),
        ("tags", json!([""])),
        ("tags", json!(["x".repeat(65)])),
        ("tags", json!("not-a-list")),
    ] {
        let mut m = message("m1");
        m[field] = value;
        cases.push(json!({"messages": [m]}));
    }
    for case in cases {
        let response = app.register(CH, &register, &case).await;
        assert_eq!(response.status(), 400, "{case}");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().ends_with('.'), "{body}");
    }
    assert_eq!(
        app.count("messages").await,
        0,
        "nothing of a 400 is written"
    );
}

#[tokio::test]
async fn an_unknown_status_word_is_kept_counted_and_moves_nothing() {
    let (app, _, _) = app_with_tokens().await;
    for status in ["delivered", "deleted", "deleted"] {
        assert_eq!(
            app.post_report(CH, PASSWORD, &report("m1", status))
                .await
                .status(),
            200
        );
    }
    assert_eq!(app.status(CH, "m1").await.as_deref(), Some("delivered"));
    let history = app.history(CH, "m1").await;
    assert_eq!(history.len(), 2);
    assert_eq!(
        (
            history[1].status.as_str(),
            history[1].advanced,
            history[1].receipt_count
        ),
        ("deleted", false, 2)
    );
    // First known from an unknown word: `sent`, the word kept, no change.
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m2", "warning"))
            .await
            .status(),
        200
    );
    assert_eq!(app.status(CH, "m2").await.as_deref(), Some("sent"));
    for bad in ["Read!", "READ", "1read", "read me"] {
        let response = app.post_report(CH, PASSWORD, &report("m3", bad)).await;
        assert_error(response, 400, "invalid_status").await;
    }
    assert_eq!(app.status(CH, "m3").await, None);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The recorder is shared by every test of the process: at least ours.
    let counted = metrics
        .lines()
        .find(|l| {
            l.starts_with("koostatus_reports_unknown_status_total") && l.contains("channel=\"ch\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(counted >= 3.0, "{counted}");
}

/// Statistics count registered and unreported messages, exactly.
#[tokio::test]
async fn statistics_count_sent_and_unreported() {
    let app = spawn_app_with(|c| {
        c.reports.unreported_after = Duration::from_secs(1);
        c.reports.sweep_interval = Duration::from_millis(200);
    })
    .await;
    app.add_channel(CH, PASSWORD).await;
    let register = app.create_register_token("sender", &[CH]).await;
    let read = app.create_token("desk", &[CH]).await;
    let old = (chrono::Utc::now() - chrono::TimeDelta::minutes(1)).to_rfc3339();
    let mut messages: Vec<Value> = (0..6).map(|i| message(&format!("m{i}"))).collect();
    for m in &mut messages[..3] {
        m["sent_at"] = old.clone().into();
    }
    app.register(CH, &register, &json!({"messages": messages}))
        .await;
    // m0 delivered, m1 failed before the sweep; m2 is left to become
    // unreported; m3..m5 are sent just now, so the sweep waits a second.
    for (id, status) in [("m0", "delivered"), ("m1", "failed")] {
        app.post_report(CH, PASSWORD, &report(id, status)).await;
    }
    wait_until("m2 unreported", Duration::from_secs(10), || async {
        app.status(CH, "m2").await.as_deref() == Some("unreported")
    })
    .await;
    let stats = json_of(
        app.get(&format!("/api/v1/channels/{CH}/stats"), &read)
            .await,
    )
    .await;
    let total = &stats["total"];
    let (sent, unreported) = (
        total["sent"].as_i64().unwrap(),
        total["unreported"].as_i64().unwrap(),
    );
    // m3..m5 may have been swept meanwhile; either way the counts add up
    // and agree with the messages themselves.
    let by_status: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "select status::text, count(*) from messages group by 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(total["messages"], 6);
    assert_eq!(sent, by_status.get("sent").copied().unwrap_or(0));
    assert_eq!(
        unreported,
        by_status.get("unreported").copied().unwrap_or(0)
    );
    assert_eq!(
        (total["failed"].as_i64(), total["delivered"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(sent + unreported, 4);
    let rate = total["unreported_rate"].as_f64().unwrap();
    assert!((rate - unreported as f64 / 6.0).abs() < 1e-9);
}

/// The issue's scenario: 10,000 registered, 9,900 of them reported in
/// random order (some before their registration), two instances,
/// `unreported_after = 3s`: exactly the 100 others end `unreported`, each
/// once in the feed, once on an `/events` stream and once at a forwarding
/// receiver; a late report moves one on to `delivered`. A reported
/// message whose report came more than 3 s after its registration (a slow
/// debug build) is swept first and moved on by its report: correct, and
/// allowed here, but at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_messages_without_a_report_become_unreported_once_across_two_instances() {
    let fast = |c: &mut koostatus::config::Config| {
        c.reports.unreported_after = Duration::from_secs(3);
        c.reports.sweep_interval = Duration::from_millis(250);
        c.forward.secret_key = Some(KEY.into());
        c.forward.allow_private_targets = true;
    };
    let app = spawn_app_with(fast).await;
    app.add_channel(CH, PASSWORD).await;
    let second = spawn_instance(&app, fast).await;
    let register = app.create_register_token("sender", &[CH]).await;
    let read = app.create_token("desk", &[CH]).await;
    let receiver = Receiver::start([]).await;
    let out = run_cli_with(
        &app.db.url(),
        &[
            "forward",
            "add",
            "crm",
            "--channel",
            CH,
            "--url",
            &receiver.url,
        ],
        "",
        CLI_ENV,
    );
    assert!(out.status.success(), "{out:?}");
    // A desktop following the channel's unreported changes as they come.
    let mut stream = Sse::open(&app.address, CH, &read, None).await;
    let streamed = tokio::spawn(async move {
        let mut seen: HashMap<String, usize> = HashMap::new();
        while let Some((_, change)) = stream.next(Duration::from_secs(5)).await {
            if change["status"] == "unreported" {
                *seen
                    .entry(change["message_id"].as_str().unwrap().into())
                    .or_default() += 1;
            }
        }
        seen
    });

    let ids: Vec<String> = (0..10_000).map(|i| format!("{i:033x}")).collect();
    // A fixed shuffle: reports for every id but each hundredth.
    let mut reported: Vec<usize> = (0..10_000).filter(|i| i % 100 != 37).collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in (1..reported.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        reported.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let statuses = ["delivered", "read", "failed"];
    let send = |part: Vec<usize>, base: String| {
        let ids = ids.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let url = format!("{base}/social/on/whatsapp/koomessage/report/{CH}");
            for i in part {
                let r = client
                    .post(&url)
                    .header("Authorization", PASSWORD)
                    .json(&report(&ids[i], statuses[i % 3]))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    // Reports over 8 connections, alternating the instances.
    let send_all = |reports: &[usize]| {
        let tasks: Vec<_> = (0..8)
            .map(|c| {
                let part = reports.iter().skip(c).step_by(8).copied().collect();
                let base = [&app.address, &second][c % 2].clone();
                send(part, base)
            })
            .collect();
        async move {
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    // A tenth of the reports arrive before any registration.
    let (early, late) = reported.split_at(990);
    send_all(early).await;
    for (n, chunk) in ids.chunks(1000).enumerate() {
        let messages: Vec<Value> = chunk.iter().map(|id| message(id)).collect();
        let base = if n % 2 == 0 { &app.address } else { &second };
        let response = app
            .client
            .post(format!("{base}/api/v1/channels/{CH}/messages"))
            .bearer_auth(&register)
            .json(&json!({"messages": messages}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    send_all(late).await;

    let unreported = || async {
        sqlx::query_scalar::<_, String>(
            "select message_id from messages where status = 'unreported' order by 1",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap()
    };
    let expected: Vec<String> = (0..10_000)
        .filter(|i| i % 100 == 37)
        .map(|i| ids[i].clone())
        .collect();
    wait_until("the 100 unreported", Duration::from_secs(13), || async {
        unreported().await.len() >= 100
    })
    .await;
    // A few more sweeps by both instances change nothing more.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(unreported().await, expected);

    // Each exactly once in the feed, read through the API.
    let mut after = "0-0".to_owned();
    let mut seen: HashMap<String, usize> = HashMap::new();
    loop {
        let page = json_of(
            app.get(
                &format!("/api/v1/channels/{CH}/changes?after={after}&limit=1000"),
                &read,
            )
            .await,
        )
        .await;
        let changes = page["changes"].as_array().unwrap();
        for c in changes.iter().filter(|c| c["status"] == "unreported") {
            *seen
                .entry(c["message_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        if changes.is_empty() {
            break;
        }
        after = page["next"].as_str().unwrap().to_owned();
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "each at most once in the feed"
    );
    assert!(
        expected.iter().all(|id| seen.contains_key(id)),
        "the 100 in the feed"
    );

    // The same changes, once each, on the stream and at the receiver (it
    // answers 200 at once, so nothing is delivered twice).
    let feed_total = app.count("message_changes").await as usize;
    wait_until(
        "the receiver has the feed",
        Duration::from_secs(60),
        || async { receiver.accepted_positions().len() >= feed_total },
    )
    .await;
    let mut forwarded: HashMap<String, usize> = HashMap::new();
    for request in receiver.requests() {
        for change in request.json()["changes"].as_array().unwrap() {
            if change["status"] == "unreported" {
                *forwarded
                    .entry(change["message_id"].as_str().unwrap().into())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(forwarded, seen, "forwarded as in the feed");
    let streamed = streamed.await.unwrap();
    assert_eq!(streamed, seen, "streamed as in the feed");

    // A report that comes later still moves it on.
    let late = &expected[0];
    assert_eq!(
        app.post_report(CH, PASSWORD, &report(late, "delivered"))
            .await
            .status(),
        200
    );
    assert_eq!(app.status(CH, late).await.as_deref(), Some("delivered"));
    let history = app.history(CH, late).await;
    let statuses: Vec<_> = history
        .iter()
        .map(|h| (h.status.as_str(), h.advanced))
        .collect();
    assert_eq!(
        statuses,
        vec![("sent", true), ("unreported", true), ("delivered", true)]
    );
}

/// A channel's own `unreported_after` wins over the global one.
#[tokio::test]
async fn a_channel_s_own_unreported_after_is_used() {
    let app = spawn_app_with(|c| {
        c.reports.unreported_after = Duration::from_secs(3600);
        c.reports.sweep_interval = Duration::from_millis(200);
    })
    .await;
    app.add_channel(CH, PASSWORD).await;
    app.add_channel("slow", PASSWORD).await;
    koostatus::db::channels::set_unreported_after(&app.pool, CH, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let register = app.create_register_token("sender", &[]).await;
    let body = json!({"messages": [message("m1")]});
    for channel in [CH, "slow"] {
        assert_eq!(app.register(channel, &register, &body).await.status(), 200);
    }
    wait_until("m1 of ch unreported", Duration::from_secs(10), || async {
        app.status(CH, "m1").await.as_deref() == Some("unreported")
    })
    .await;
    assert_eq!(app.status("slow", "m1").await.as_deref(), Some("sent"));
}

/// The sweep's `unreported` entry (kept on the message since V15) reads
/// like any other through the API, and a report of the word `unreported`
/// after the sweep is a receipt of that entry: no second change in the
/// feed, the same statistics.
#[tokio::test]
async fn a_report_of_unreported_after_the_sweep_is_a_receipt_not_a_change() {
    let app = spawn_app_with(|c| {
        c.reports.unreported_after = Duration::from_secs(1);
        c.reports.sweep_interval = Duration::from_millis(200);
    })
    .await;
    app.add_channel(CH, PASSWORD).await;
    let register = app.create_register_token("sender", &[]).await;
    let read = app.create_token("desk", &[]).await;
    let body = json!({"messages": [message("m1")]});
    assert_eq!(app.register(CH, &register, &body).await.status(), 200);
    wait_until("m1 unreported", Duration::from_secs(10), || async {
        app.status(CH, "m1").await.as_deref() == Some("unreported")
    })
    .await;
    let entries = |message: Value| -> Vec<(String, i64, bool)> {
        message["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let status = h["status"].as_str().unwrap().to_owned();
                (
                    status,
                    h["receipt_count"].as_i64().unwrap(),
                    h["advanced"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let path = format!("/api/v1/channels/{CH}/messages/m1");
    let swept = json_of(app.get(&path, &read).await).await;
    assert_eq!(
        entries(swept.clone()),
        vec![("sent".into(), 1, true), ("unreported".into(), 1, true)]
    );
    let unreported_at = swept["history"][1]["first_received_at"].clone();
    assert_eq!(
        unreported_at, swept["updated_at"],
        "the entry is the change"
    );
    let (changes, stats) = (
        app.count("message_changes").await,
        stats_messages(&app).await,
    );

    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m1", "unreported"))
            .await
            .status(),
        200
    );
    let after = json_of(app.get(&path, &read).await).await;
    assert_eq!(
        entries(after.clone()),
        vec![("sent".into(), 1, true), ("unreported".into(), 2, true)]
    );
    assert_eq!(after["history"][1]["first_received_at"], unreported_at);
    assert_eq!(after["updated_at"], swept["updated_at"]);
    assert_eq!(
        app.count("message_changes").await,
        changes,
        "no second change"
    );
    assert_eq!(stats_messages(&app).await, stats);
    let unreported: i64 = sqlx::query_scalar(
        "select sum(reached_unreported)::bigint from stats_counts where tag = ''",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(unreported, 1, "counted once");
    // A later report still moves it on, with an entry of its own.
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m1", "read"))
            .await
            .status(),
        200
    );
    let read_now = json_of(app.get(&path, &read).await).await;
    assert_eq!(read_now["status"], "read");
    assert_eq!(entries(read_now).len(), 3);
}

/// A registration the database cannot commit in time gets 503 with
/// Retry-After, never 200, and nothing of it is kept; sent again, it is
/// registered.
#[tokio::test]
async fn a_registration_the_database_cannot_commit_gets_503() {
    let app = spawn_app_with(|c| c.database.statement_timeout = Duration::from_millis(300)).await;
    app.add_channel(CH, PASSWORD).await;
    let register = app.create_register_token("sender", &[CH]).await;
    let first = json!({"messages": [message("m1")]});
    assert_eq!(app.register(CH, &register, &first).await.status(), 200);
    // Hold the statistics' rows, which every registration of this hour adds to.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("lock table stats_counts in exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let body = json!({"messages": [message("m2"), message("m3")]});
    let response = app.register(CH, &register, &body).await;
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    assert_error(response, 503, "unavailable").await;
    blocker.rollback().await.unwrap();
    assert_eq!(app.status(CH, "m2").await, None);
    assert_eq!(app.count("message_changes").await, 1);
    let again = json_of(app.register(CH, &register, &body).await).await;
    assert_eq!(again["registered"], 2);
}

#[tokio::test]
async fn an_unreachable_database_gets_503_for_a_registration() {
    let db = crate::helpers::migrated_database().await;
    let app = crate::helpers::spawn_app_on(db, |c| {
        c.database.url =
            koostatus::config::DatabaseUrl::parse("postgres://postgres@127.0.0.1:9/none").unwrap();
        c.database.acquire_timeout = Duration::from_millis(500);
    })
    .await;
    let register = app.create_register_token("sender", &[CH]).await;
    let response = app
        .register(CH, &register, &json!({"messages": [message("m1")]}))
        .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 503, "unavailable").await;
}

/// Data stored under the schema before §13 keeps its meaning: every
/// message, history entry and feed row as it was, the statistics the same
/// (every old message has reached `failed`), times to deliver from the
/// history; and V11 takes the export's report times from the history.
#[tokio::test]
async fn data_stored_before_the_migration_keeps_its_meaning() {
    let db = crate::helpers::empty_database().await;
    let pool = db.pool().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let apply = |version: u32| {
        let pool = pool.clone();
        let dir = dir.clone();
        async move {
            let file = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .starts_with(&format!("V{version}__"))
                })
                .unwrap();
            let sql = std::fs::read_to_string(file).unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    for version in 1..=8 {
        apply(version).await;
    }
    // Three messages as the old service wrote them: one failed, one
    // delivered then read, one delivered.
    sqlx::raw_sql(
        "insert into channels (id, password_hash) values ('ch', 'x');
         insert into messages (channel_id, message_id, sender, user_number, status,
                               first_seen_at, updated_at, changed_xid)
         values ('ch', 'f', 's', 'u', 'failed', '2026-11-01T10:00:00Z', '2026-11-01T10:00:00Z', '1'),
                ('ch', 'r', 's', 'u', 'read', '2026-11-01T10:00:00Z', '2026-11-01T10:05:00Z', '1'),
                ('ch', 'd', 's', 'u', 'delivered', '2026-11-01T11:00:00Z', '2026-11-01T11:00:00Z', '1');
         insert into message_history (channel_id, message_id, status, first_received_at,
                                      last_received_at, receipt_count, advanced)
         values ('ch', 'f', 'failed', '2026-11-01T10:00:00Z', '2026-11-01T10:00:00Z', 1, true),
                ('ch', 'r', 'delivered', '2026-11-01T10:00:00Z', '2026-11-01T10:00:00Z', 2, true),
                ('ch', 'r', 'read', '2026-11-01T10:05:00Z', '2026-11-01T10:05:00Z', 1, true),
                ('ch', 'd', 'delivered', '2026-11-01T11:00:00Z', '2026-11-01T11:00:00Z', 1, true);
         insert into message_changes (channel_id, message_id, user_number, status, changed_at)
         values ('ch', 'r', 'u', 'read', '2026-11-01T10:05:00Z');
         select koostatus_stats_rebuild();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let snapshot = |with_stats: bool| {
        let pool = pool.clone();
        async move {
            let rows: Vec<(String,)> = sqlx::query_as(
                "select concat_ws('|', m.message_id, m.status, m.first_seen_at, m.updated_at,
                        (select string_agg(concat_ws(',', h.status, h.receipt_count, h.advanced,
                                                     h.first_received_at), ';' order by h.status::text)
                         from message_history h
                         -- By the ids before V18 (V8 has no key), by
                         -- the key after (V18 drops the id from history).
                         where coalesce(to_jsonb(h) ->> 'message_id' = m.message_id,
                                        to_jsonb(h) ->> 'message_key'
                                            = to_jsonb(m) ->> 'message_key')))
                 from messages m order by m.message_id",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let feed: Vec<(String,)> = sqlx::query_as(
                "select concat_ws('|', message_id, status, changed_at) from message_changes",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let stats: Option<(i64, i64, i64)> = if with_stats {
                sqlx::query_as(
                    "select sum(messages)::int8, sum(reached_delivered)::int8, sum(reached_read)::int8
                     from stats_counts",
                )
                .fetch_optional(&pool)
                .await
                .unwrap()
            } else {
                None
            };
            (rows, feed, stats)
        }
    };
    let before = snapshot(true).await;
    apply(9).await;
    apply(10).await;
    let after = snapshot(true).await;
    assert_eq!(after, before);
    assert_eq!(before.2, Some((3, 2, 1)));
    let (unreported, failed): (i64, i64) = sqlx::query_as(
        "select sum(reached_unreported)::int8, sum(reached_failed)::int8 from stats_counts where tag = ''",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((unreported, failed), (3, 3));
    let delivered_at: Vec<(String, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("select message_id, delivered_at from messages order by 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    let t = |s: &str| Some(s.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
    assert_eq!(
        delivered_at,
        vec![
            ("d".into(), t("2026-11-01T11:00:00Z")),
            ("f".into(), None),
            ("r".into(), t("2026-11-01T10:00:00Z")),
        ]
    );
    let delivered_times: i64 =
        sqlx::query_scalar("select sum(n)::int8 from stats_deliver_times where hours = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(delivered_times, 2);
    // V11: each message's first failed, delivered and read report, from
    // its history; the rest unchanged.
    let before = snapshot(true).await;
    apply(11).await;
    assert_eq!(snapshot(true).await, before);
    type Times = (
        String,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let reported: Vec<Times> = sqlx::query_as(
        "select message_id, first_failed_at, first_delivered_at, first_read_at
         from messages order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        reported,
        vec![
            ("d".into(), None, t("2026-11-01T11:00:00Z"), None),
            ("f".into(), t("2026-11-01T10:00:00Z"), None, None),
            (
                "r".into(),
                None,
                t("2026-11-01T10:00:00Z"),
                t("2026-11-01T10:05:00Z")
            ),
        ]
    );
}

/// `/metrics` counts a channel's unreported messages and tells how long ago
/// its last report came.
#[tokio::test]
async fn metrics_show_unreported_messages_and_the_age_of_the_last_report() {
    // A channel name of its own: the recorder is shared by every test of
    // the process.
    const OWN: &str = "metrics-unreported";
    let app = spawn_app_with(|c| {
        c.reports.unreported_after = Duration::from_secs(1);
        c.reports.sweep_interval = Duration::from_millis(200);
    })
    .await;
    app.add_channel(OWN, PASSWORD).await;
    let register = app.create_register_token("sender", &[OWN]).await;
    let body = json!({"messages": [message("q1"), message("q2"), message("q3")]});
    assert_eq!(app.register(OWN, &register, &body).await.status(), 200);
    assert_eq!(
        app.post_report(OWN, PASSWORD, &report("q3", "delivered"))
            .await
            .status(),
        200
    );
    let value = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("channel=\"{OWN}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let scrape = || async {
        app.client
            .get(format!("{}/metrics", app.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    wait_until(
        "two unreported in /metrics",
        Duration::from_secs(10),
        || async { value(&scrape().await, "koostatus_messages_unreported") == Some(2.0) },
    )
    .await;
    let age = value(&scrape().await, "koostatus_channel_last_report_age_seconds").unwrap();
    assert!((0.0..10.0).contains(&age), "{age}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = value(&scrape().await, "koostatus_channel_last_report_age_seconds").unwrap();
    assert!(
        later >= age + 1.0,
        "the age grows without reports: {age} then {later}"
    );
}
