//! The changes feed and its live push: lossless under concurrent and
//! out-of-order commits, across instances, resumable with Last-Event-ID.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use koostatus::db::reports::Incoming;
use koostatus::domain::{ChannelId, Report};
use serde_json::Value;

use crate::helpers::{
    PASSWORD, TestApp, assert_error, report, spawn_app, spawn_instance, wait_until_sql,
};
use crate::sse::Sse;

const CH: &str = "ch";

async fn app_with_channel() -> (TestApp, String) {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    let token = app.create_token("desk", &[CH]).await;
    (app, token)
}

async fn page(app: &TestApp, token: &str, after: &str) -> Value {
    let response = app
        .get(
            &format!("/api/v1/channels/{CH}/changes?after={after}&limit=50"),
            token,
        )
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// (position, message_id, status) of a page's changes.
fn entries(page: &Value) -> Vec<(String, String, String)> {
    page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["position"].as_str().unwrap().to_owned(),
                c["message_id"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn position_key(p: &str) -> (i64, i64) {
    let (x, s) = p.split_once('-').unwrap();
    (x.parse().unwrap(), s.parse().unwrap())
}

#[tokio::test]
async fn the_feed_lists_changes_of_current_status_only_in_order() {
    let (app, token) = app_with_channel().await;
    for (id, status) in [
        ("m1", "delivered"),
        ("m1", "delivered"), // duplicate: no change
        ("m2", "read"),
        ("m1", "read"),
        ("m1", "delivered"), // late: no change
        ("m2", "failed"),    // late: no change
    ] {
        assert_eq!(
            app.post_report(CH, PASSWORD, &report(id, status))
                .await
                .status(),
            200
        );
    }
    let first = page(&app, &token, "0-0").await;
    let got: Vec<(String, String)> = entries(&first)
        .into_iter()
        .map(|(_, m, s)| (m, s))
        .collect();
    assert_eq!(
        got,
        [("m1", "delivered"), ("m2", "read"), ("m1", "read")]
            .map(|(m, s)| (m.to_owned(), s.to_owned()))
    );
    // Nothing after the end; `next` stays put.
    let next = first["next"].as_str().unwrap();
    let empty = page(&app, &token, next).await;
    assert!(empty["changes"].as_array().unwrap().is_empty());
    assert_eq!(empty["next"], next);
    // Bad parameters and scope.
    for query in [
        "after=abc",
        "after=1",
        "after=-1-2",
        "limit=0",
        "limit=1001",
        "colour=red",
    ] {
        let r = app
            .get(&format!("/api/v1/channels/{CH}/changes?{query}"), &token)
            .await;
        assert_eq!(r.status(), 400, "{query}");
    }
    let other = app.create_token("other", &["elsewhere"]).await;
    assert_error(
        app.get(&format!("/api/v1/channels/{CH}/changes"), &other)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get(&format!("/api/v1/channels/{CH}/events"), &other)
            .await,
        404,
        "not_found",
    )
    .await;
}

/// The case a plain sequence gets wrong: a transaction that wrote its change
/// first commits after later ones were already read.
#[tokio::test]
async fn a_change_committed_late_by_an_earlier_transaction_is_not_skipped() {
    let (app, token) = app_with_channel().await;
    let mut early = app.pool.begin().await.unwrap();
    let body = br#"{"message_id":"early","sender":"86173xxxx4526","user_number":"86187xxxx5632","status":"delivered"}"#;
    koostatus::db::reports::record_reports(
        &mut *early,
        &[Incoming {
            channel: ChannelId::parse(CH).unwrap(),
            report: Report::from_json(body).unwrap(),
            received_at: chrono::Utc::now(),
        }],
    )
    .await
    .unwrap();
    for i in 0..5 {
        assert_eq!(
            app.post_report(CH, PASSWORD, &report(&format!("later-{i}"), "read"))
                .await
                .status(),
            200
        );
    }
    // The later changes are committed, but not readable while the earlier
    // transaction runs: a follower cannot pass the early change.
    let blocked = page(&app, &token, "0-0").await;
    assert!(entries(&blocked).is_empty(), "{blocked}");
    early.commit().await.unwrap();
    let all = page(&app, &token, "0-0").await;
    let ids: Vec<String> = entries(&all).into_iter().map(|(_, m, _)| m).collect();
    assert_eq!(ids[0], "early");
    assert_eq!(ids.len(), 6);
}

/// Followers read the feed while 16 clients on two instances commit
/// concurrently (group commit, several writers per instance): every change
/// arrives once, in increasing positions, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_misses_nothing_and_sees_nothing_twice_under_concurrent_writers() {
    let (app, token) = app_with_channel().await;
    let second = spawn_instance(&app, |_| {}).await;
    // A live stream on the second instance, from the start, alongside.
    let mut stream = Sse::open(&second, CH, &token, Some("0-0")).await;
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let url = if w % 2 == 0 {
                app.webhook_url(CH)
            } else {
                format!("{second}/social/on/whatsapp/koomessage/report/{CH}")
            };
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut expected = Vec::new();
                for m in 0..15 {
                    let id = format!("w{w}-m{m}");
                    // Changes: delivered, then read; the late and duplicate
                    // reports change nothing.
                    for status in ["delivered", "read", "delivered", "read"] {
                        let r = client
                            .post(&url)
                            .header("Authorization", PASSWORD)
                            .json(&report(&id, status))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 200);
                    }
                    expected.push((id.clone(), "delivered".to_owned()));
                    expected.push((id, "read".to_owned()));
                }
                expected
            })
        })
        .collect();
    let follower = {
        let (address, client, token) = (app.address.clone(), app.client.clone(), token.clone());
        tokio::spawn(async move {
            let (mut seen, mut after, mut last) = (Vec::new(), "0-0".to_owned(), (0, 0));
            let started = Instant::now();
            while seen.len() < 16 * 15 * 2 {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "only {} changes",
                    seen.len()
                );
                let page: Value = client
                    .get(format!(
                        "{address}/api/v1/channels/{CH}/changes?after={after}&limit=37"
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for (position, id, status) in entries(&page) {
                    let key = position_key(&position);
                    assert!(key > last, "{position} after {last:?}");
                    last = key;
                    seen.push((id, status));
                }
                after = page["next"].as_str().unwrap().to_owned();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (seen, after)
        })
    };
    let mut expected = HashSet::new();
    for w in writers {
        expected.extend(w.await.unwrap());
    }
    let (seen, after) = follower.await.unwrap();
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a change was seen twice");
    assert_eq!(unique, expected);
    // And nothing more comes.
    assert!(entries(&page(&app, &token, &after).await).is_empty());
    let mut pushed = Vec::new();
    while pushed.len() < seen.len() {
        let (_, data) = stream
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("only {} events", pushed.len()));
        pushed.push((
            data["message_id"].as_str().unwrap().to_owned(),
            data["status"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(pushed, seen, "the stream and the feed agree, in order");
    assert!(stream.next(Duration::from_millis(300)).await.is_none());
    println!(
        "feed follower and event stream: {} changes from 2 instances, 0 missing, 0 repeated",
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_subscribers_of_another_instance_and_resume_after_last_event_id() {
    let (app, token) = app_with_channel().await;
    let other = spawn_instance(&app, |c| {
        c.server.events_heartbeat = Duration::from_millis(300)
    })
    .await;
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("before", "read"))
            .await
            .status(),
        200
    );
    // Readable first: a transaction running anywhere in the cluster (other
    // tests) can hold a committed change back, and a stream starts after the
    // last readable one.
    while entries(&page(&app, &token, "0-0").await).is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Without Last-Event-ID a stream starts with the next change.
    let mut events = Sse::open(&other, CH, &token, None).await;
    let mut latencies = Vec::new();
    for i in 0..5 {
        let sent = Instant::now();
        assert_eq!(
            app.post_report(CH, PASSWORD, &report(&format!("m{i}"), "delivered"))
                .await
                .status(),
            200
        );
        let (id, data) = events
            .next(Duration::from_secs(5))
            .await
            .expect("pushed within 5 s");
        latencies.push(sent.elapsed());
        assert_eq!(data["message_id"], format!("m{i}"));
        assert_eq!(data["status"], "delivered");
        assert_eq!(data["position"], id);
    }
    // Idle: heartbeats keep the connection alive.
    assert!(events.next(Duration::from_millis(1000)).await.is_none());
    assert!(events.heartbeats >= 2, "{} heartbeats", events.heartbeats);
    // The stream began with one comment, before any change (Firefox opens
    // an EventSource only at the body's first bytes).
    assert_eq!(events.opened, 1);
    let (last_id, _) = {
        // The last event seen; then the client goes away.
        let r = app.post_report(CH, PASSWORD, &report("m4", "read")).await;
        assert_eq!(r.status(), 200);
        events.next(Duration::from_secs(5)).await.unwrap()
    };
    drop(events);
    // Changes while disconnected, through both instances.
    for i in 0..3 {
        assert_eq!(
            app.post_report(CH, PASSWORD, &report(&format!("gap{i}"), "failed"))
                .await
                .status(),
            200
        );
    }
    let via_other = reqwest::Client::new()
        .post(format!("{other}/social/on/whatsapp/koomessage/report/{CH}"))
        .header("Authorization", PASSWORD)
        .json(&report("gap3", "read"))
        .send()
        .await
        .unwrap();
    assert_eq!(via_other.status(), 200);
    let mut resumed = Sse::open(&app.address, CH, &token, Some(&last_id)).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (_, data) = resumed
            .next(Duration::from_secs(5))
            .await
            .expect("the missed changes");
        ids.push(data["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids, ["gap0", "gap1", "gap2", "gap3"]);
    assert!(
        resumed.next(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );
    latencies.sort();
    println!(
        "events across instances: 5 pushed, latency report-to-event max {:?}; 4 changes missed while disconnected all resumed",
        latencies.last().unwrap()
    );
}

/// A change committed while an older transaction that changes no status
/// is still running cannot be read yet, and that transaction's end notifies
/// nobody: the stream must still deliver soon after it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_deliver_a_change_held_back_by_a_transaction_that_notifies_nobody() {
    let (app, token) = app_with_channel().await;
    let mut events = Sse::open(&app.address, CH, &token, None).await;
    let mut older = app.pool.begin().await.unwrap();
    // Takes a transaction id, writes no feed entry.
    sqlx::query("update channels set name = name where id = $1")
        .bind(CH)
        .execute(&mut *older)
        .await
        .unwrap();
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m1", "read"))
            .await
            .status(),
        200
    );
    assert!(
        events.next(Duration::from_millis(1500)).await.is_none(),
        "read past a running transaction"
    );
    older.commit().await.unwrap();
    let ended = Instant::now();
    let (_, data) = events
        .next(Duration::from_secs(5))
        .await
        .expect("delivered");
    assert_eq!(data["message_id"], "m1");
    assert!(
        ended.elapsed() < Duration::from_secs(1),
        "{:?} after the older transaction ended",
        ended.elapsed()
    );
}

fn incoming(id: &str, status: &str) -> Incoming {
    let body = format!(
        r#"{{"message_id":"{id}","sender":"86173xxxx4526","user_number":"86187xxxx5632","status":"{status}"}}"#
    );
    Incoming {
        channel: ChannelId::parse(CH).unwrap(),
        report: Report::from_json(body.as_bytes()).unwrap(),
        received_at: chrono::Utc::now(),
    }
}

/// Transaction ids come from a transaction's first write, not its commit:
/// a writer with the lower id that waits for a message's row lock changes
/// the message after the writer holding it, and the feed must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_s_changes_are_in_feed_order_whatever_the_transaction_ids() {
    let (app, token) = app_with_channel().await;
    use koostatus::db::reports::record_reports as record;
    let mut lower = app.pool.begin().await.unwrap();
    record(&mut *lower, &[incoming("first-write", "delivered")])
        .await
        .unwrap();
    let mut higher = app.pool.begin().await.unwrap();
    record(&mut *higher, &[incoming("m1", "failed")])
        .await
        .unwrap();
    // The lower id now waits for m1, which the higher one holds.
    let waiting = tokio::spawn(async move {
        record(&mut *lower, &[incoming("m1", "read")])
            .await
            .unwrap();
        lower.commit().await.unwrap();
    });
    wait_until_sql(
        &app.pool,
        "the lower transaction waits for m1's lock",
        "select exists (select 1 from pg_stat_activity
                        where datname = current_database() and wait_event_type = 'Lock')",
    )
    .await;
    higher.commit().await.unwrap();
    waiting.await.unwrap();
    let m1: Vec<String> = entries(&page(&app, &token, "0-0").await)
        .into_iter()
        .filter(|(_, m, _)| m == "m1")
        .map(|(_, _, s)| s)
        .collect();
    assert_eq!(m1, ["failed", "read"]);
}
