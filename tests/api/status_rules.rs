//! SPEC §5 through HTTP and the database: order, duplicates, concurrency.

use std::collections::BTreeMap;

use koostatus::domain::Status;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use crate::helpers::{HistoryRow, PASSWORD, TestApp, report, spawn_app};

const CH: &str = "ch";

/// The statuses KooMessage reports today.
const REPORTED: [Status; 3] = [Status::Failed, Status::Delivered, Status::Read];

fn name(s: Status) -> &'static str {
    s.as_str()
}

/// The history SPEC §5 prescribes for reports arriving serially in `order`,
/// computed with the domain rule.
fn model(order: &[Status]) -> (Status, Vec<HistoryRow>) {
    let mut current = None;
    let mut entries: BTreeMap<Status, HistoryRow> = BTreeMap::new();
    for &s in order {
        let (next, advanced) = Status::merge(current, s);
        current = Some(next);
        entries
            .entry(s)
            .and_modify(|e| e.receipt_count += 1)
            .or_insert(HistoryRow {
                status: name(s).into(),
                receipt_count: 1,
                advanced,
                extra: serde_json::json!({}),
            });
    }
    (current.unwrap(), entries.into_values().collect())
}

async fn send_all(app: &TestApp, message_id: &str, order: &[Status]) {
    for &s in order {
        let response = app
            .post_report(CH, PASSWORD, &report(message_id, name(s)))
            .await;
        assert_eq!(response.status().as_u16(), 200);
    }
}

#[tokio::test]
async fn every_ordered_pair_of_statuses() {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    for a in Status::ALL {
        for b in Status::ALL {
            let id = format!("{a}-{b}");
            send_all(&app, &id, &[a, b]).await;
            let (status, history) = model(&[a, b]);
            assert_eq!(
                app.status(CH, &id).await.as_deref(),
                Some(name(status)),
                "{id}"
            );
            assert_eq!(status, a.max(b));
            assert_eq!(app.history(CH, &id).await, history, "{id}");
        }
    }
    // Spelled out, the case the SPEC names: delivered after read did not advance.
    let h = app.history(CH, "read-delivered").await;
    assert_eq!((h[0].status.as_str(), h[0].advanced), ("delivered", false));
    assert_eq!((h[1].status.as_str(), h[1].advanced), ("read", true));
}

#[tokio::test]
async fn duplicates_count_receipts_and_keep_the_first_reports_extra_fields() {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    for i in 0..3 {
        let mut r = report("m1", "delivered");
        r["attempt"] = i.into();
        assert_eq!(app.post_report(CH, PASSWORD, &r).await.status(), 200);
    }
    let history = app.history(CH, "m1").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].receipt_count, 3);
    assert_eq!(history[0].extra, serde_json::json!({"attempt": 0}));
    let (first, last, updated): (
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    ) = sqlx::query_as(
        "select h.first_received_at, h.last_received_at, m.updated_at
             from message_history h join messages m using (channel_id, message_id)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(last > first);
    // A duplicate is not a change of status.
    assert_eq!(updated, first);
}

fn statuses() -> impl Strategy<Value = Vec<Status>> {
    prop::collection::vec(prop::sample::select(Status::ALL.to_vec()), 1..8)
}

/// Any permutation of any multiset of reports leaves the same current status
/// and the same history set; `advanced` follows the serial order.
#[test]
fn any_permutation_of_any_multiset_gives_the_same_result() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // One app for all cases: a database per case would be slow and test no more.
    let app = runtime.block_on(async {
        let app = spawn_app().await;
        app.add_channel(CH, PASSWORD).await;
        app
    });
    let strategy = statuses().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&strategy, |(order, shuffled)| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (a, b) = (format!("p{case}-a"), format!("p{case}-b"));
        runtime.block_on(async {
            send_all(&app, &a, &order).await;
            send_all(&app, &b, &shuffled).await;
            let (status, expected_a) = model(&order);
            let (_, expected_b) = model(&shuffled);
            prop_assert_eq!(app.status(CH, &a).await, Some(name(status).to_owned()));
            prop_assert_eq!(app.status(CH, &b).await, Some(name(status).to_owned()));
            prop_assert_eq!(&app.history(CH, &a).await, &expected_a);
            prop_assert_eq!(&app.history(CH, &b).await, &expected_b);
            let strip = |h: &[HistoryRow]| {
                h.iter()
                    .map(|r| (r.status.clone(), r.receipt_count))
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(strip(&expected_a), strip(&expected_b));
            Ok(())
        })
    });
    runtime.block_on(async move { drop(app) });
    result.unwrap();
}

/// 50 reports with mixed statuses for one message from parallel clients, on
/// two instances sharing the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_for_one_message_serialise() {
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    let second = crate::helpers::spawn_second_instance(&app).await;
    for round in 0..3 {
        let id = format!("hot-{round}");
        let statuses: Vec<Status> = (0..50).map(|i| REPORTED[(i * 7 + round) % 3]).collect();
        let mut tasks = Vec::new();
        for (i, s) in statuses.iter().enumerate() {
            let target = if i % 2 == 0 {
                app.webhook_url(CH)
            } else {
                second.clone() + CH
            };
            let client = reqwest::Client::new();
            let body = report(&id, name(*s));
            tasks.push(tokio::spawn(async move {
                client
                    .post(target)
                    .header("Authorization", PASSWORD)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().as_u16(), 200);
        }
        let history = app.history(CH, &id).await;
        assert_eq!(app.status(CH, &id).await.as_deref(), Some("read"));
        assert_eq!(history.len(), 3);
        assert_eq!(history.iter().map(|h| h.receipt_count).sum::<i64>(), 50);
        for s in REPORTED {
            let sent = statuses.iter().filter(|x| **x == s).count() as i64;
            assert_eq!(
                history
                    .iter()
                    .find(|h| h.status == name(s))
                    .unwrap()
                    .receipt_count,
                sent
            );
        }
        // The serial order the row lock imposed explains the flags: the top
        // status advanced, and its first receipt is the message's last change;
        // the very first report created the message and advanced it.
        assert!(history[2].advanced);
        let (top_first, updated_at, first_seen_matches): (
            chrono::DateTime<chrono::Utc>,
            chrono::DateTime<chrono::Utc>,
            bool,
        ) = sqlx::query_as(
            "select h.first_received_at, m.updated_at,
                        exists (select 1 from message_history f where f.message_id = m.message_id
                                and f.advanced and f.first_received_at = m.first_seen_at)
                 from messages m join message_history h using (channel_id, message_id)
                 where m.message_id = $1 and h.status = 'read'",
        )
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(top_first, updated_at);
        assert!(first_seen_matches);
    }
}
