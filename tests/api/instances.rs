//! Two instances of the service on one database.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use koostatus::domain::Status;

use crate::helpers::{PASSWORD, TestApp, report, spawn_app, spawn_instance};

const CH: &str = "ch";

/// An app with a channel, a second instance on its database, and the
/// webhook URL of each.
async fn two_instances() -> (TestApp, [String; 2]) {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    let second = spawn_instance(&app, |_| {}).await;
    let urls = [
        app.webhook_url(CH),
        format!("{second}/social/on/whatsapp/koomessage/report/{CH}"),
    ];
    (app, urls)
}

/// Conflicting reports for the same messages sent to both instances at
/// once end in the state one instance gives: per message the highest status,
/// one history entry per status with every receipt counted, one feed entry
/// per change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_reports_through_two_instances_end_as_through_one() {
    let (app, urls) = two_instances().await;
    // 20 messages, each sent a fixed mixed multiset of 12 reports, spread
    // over 24 concurrent clients alternating between the instances.
    let plan: Vec<(String, Status)> = (0..20)
        .flat_map(|m| {
            (0..12).map(move |r| {
                (
                    format!("m{m}"),
                    [Status::Failed, Status::Delivered, Status::Read][(m * 5 + r * 7) % 3],
                )
            })
        })
        .collect();
    let tasks: Vec<_> = (0..24)
        .map(|c| {
            let url = urls[c % 2].clone();
            let mine: Vec<_> = plan.iter().skip(c).step_by(24).cloned().collect();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for (id, status) in mine {
                    let r = client
                        .post(&url)
                        .header("Authorization", PASSWORD)
                        .json(&report(&id, status.as_str()))
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
    let mut expected: HashMap<String, (Status, HashMap<Status, i64>)> = HashMap::new();
    for (id, s) in &plan {
        let e = expected.entry(id.clone()).or_insert((*s, HashMap::new()));
        e.0 = Status::merge(Some(e.0), *s).0;
        *e.1.entry(*s).or_default() += 1;
    }
    for (id, (top, receipts)) in &expected {
        assert_eq!(
            app.status(CH, id).await.as_deref(),
            Some(top.as_str()),
            "{id}"
        );
        let history = app.history(CH, id).await;
        assert_eq!(history.len(), receipts.len(), "{id}");
        for h in history {
            let s = Status::parse(&h.status).unwrap();
            assert_eq!(h.receipt_count, receipts[&s], "{id} {s:?}");
        }
        // The feed holds each status the message moved through exactly
        // once, ending at the top one.
        let feed: Vec<String> = sqlx::query_scalar(
            "select status::text from message_changes where message_id = $1 order by xid, seq",
        )
        .bind(id)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert_eq!(feed.last().map(String::as_str), Some(top.as_str()), "{id}");
        let mut sorted = feed.clone();
        sorted.dedup();
        assert_eq!(sorted, feed, "{id}: a status twice in the feed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_through_the_cli_reaches_both_instances_within_5_seconds() {
    let (app, urls) = two_instances().await;
    let client = reqwest::Client::new();
    let status = |url: String, password: &'static str| {
        let client = client.clone();
        async move {
            client
                .post(url)
                .header("Authorization", password)
                .json(&report("m1", "delivered"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Both have the old password verified and cached.
    for url in &urls {
        assert_eq!(status(url.clone(), PASSWORD).await, 200);
    }
    let out = crate::helpers::run_cli(
        &app.db.url(),
        &["channel", "set-password", CH, "--password-stdin"],
        "the new one\n",
    );
    assert!(out.status.success(), "{out:?}");
    let changed = Instant::now();
    for url in &urls {
        while status(url.clone(), PASSWORD).await != 401 {
            assert!(
                changed.elapsed() < Duration::from_secs(5),
                "{url} still takes the old password"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status(url.clone(), "the new one").await, 200);
    }
    println!(
        "password change reached both instances in {:?}",
        changed.elapsed()
    );
}
