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

/// Messages whose first failed, delivered or read time (V11, for the
/// export) is not their history's first report of that status.
async fn report_times_off_history(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "select count(*) from messages m
         cross join lateral (
             select min(first_received_at) filter (where status = 'failed') as failed,
                    min(first_received_at) filter (where status = 'delivered') as delivered,
                    min(first_received_at) filter (where status = 'read') as read
             from message_entries h
             where h.message_key = m.message_key) h
         where (m.first_failed_at, m.first_delivered_at, m.first_read_at)
               is distinct from (h.failed, h.delivered, h.read)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
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
             from message_entries h join messages m using (message_key)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(last > first);
    // A duplicate is not a change of status.
    assert_eq!(updated, first);
}

/// A new message's first report keeps its history entry on the message's
/// row (V19): no history row of its own; a repeat of it is a receipt of
/// that entry, not a change, and the history reads as the rule says.
#[tokio::test]
async fn a_first_reports_entry_on_the_message_row_takes_its_repeats() {
    use Status::{Delivered, Read};
    let app = spawn_app().await;
    app.add_channel(CH, PASSWORD).await;
    send_all(&app, "m", &[Delivered]).await;
    assert_eq!(app.count("message_history").await, 0);
    assert_eq!(app.history(CH, "m").await, model(&[Delivered]).1);
    send_all(&app, "m", &[Delivered, Read, Delivered]).await;
    let history = app.history(CH, "m").await;
    assert_eq!(history, model(&[Delivered, Delivered, Read, Delivered]).1);
    assert_eq!(history[0].receipt_count, 3);
    assert_eq!(
        app.count("message_changes").await,
        2,
        "one change to delivered, one to read"
    );
    assert_eq!(report_times_off_history(&app).await, 0);
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
            prop_assert_eq!(report_times_off_history(&app).await, 0);
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
                        exists (select 1 from message_entries f where f.message_key = m.message_key
                                and f.advanced and f.first_received_at = m.first_seen_at)
                 from messages m join message_entries h using (message_key)
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

/// One step of the sending side, KooMessage or the sweep for one message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Report(Status),
    /// Registration (`sent`), sent two days ago.
    Register,
    /// The sweep: `unreported` if the message is still `sent`.
    Sweep,
    /// A word outside the five: kept, moves nothing.
    Unranked,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        prop::sample::select(Status::ALL.to_vec()).prop_map(Step::Report),
        Just(Step::Register),
        Just(Step::Sweep),
        Just(Step::Unranked),
    ];
    prop::collection::vec(step, 1..8)
}

/// The current status the rule gives for `steps` in this order. The sweep
/// acts on a message still `sent` whose `first_seen_at` is past the
/// deadline: one that its registration made known (sent two days ago), not
/// one first known from a report just now (a later registration keeps its
/// `first_seen_at`).
fn model_steps(steps: &[Step]) -> Option<Status> {
    let mut current: Option<Status> = None;
    let mut registered_first = false;
    for step in steps {
        if current.is_none() {
            registered_first = *step == Step::Register;
        }
        current = match step {
            Step::Report(s) => Some(Status::merge(current, *s).0),
            Step::Register | Step::Unranked => Some(current.unwrap_or(Status::Sent)),
            Step::Sweep if current == Some(Status::Sent) && registered_first => {
                Some(Status::Unreported)
            }
            Step::Sweep => current,
        };
    }
    current
}

/// Registration and the sweep interleaved with reports of all five
/// statuses and unranked words, alternating between two instances: every
/// order of the same steps ends in the status the rule gives (the sweep
/// depends on when it runs: it acts only on a message still `sent`).
#[test]
fn registration_and_sweep_interleaved_with_reports_follow_the_rule() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, second, token) = runtime.block_on(async {
        // No sweep of its own: the test runs the sweep's statement itself,
        // at the step it chose. (The service's sweep still runs once as it
        // starts; the test configuration's deadline of ten years leaves it
        // nothing to do.)
        let quiet = |c: &mut koostatus::config::Config| {
            c.reports.sweep_interval = std::time::Duration::from_secs(3600)
        };
        let app = crate::helpers::spawn_app_with(quiet).await;
        app.add_channel(CH, PASSWORD).await;
        let second = crate::helpers::spawn_instance(&app, quiet).await;
        let token = app.create_register_token("sender", &[CH]).await;
        (app, second, token)
    });
    let strategy = steps().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&strategy, |(order, shuffled)| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(async {
            for (k, steps) in [&order, &shuffled].into_iter().enumerate() {
                let id = format!("s{case}-{k}");
                for (i, step) in steps.iter().enumerate() {
                    // Alternate the instances.
                    let base = if i % 2 == 0 {
                        app.address.clone()
                    } else {
                        second.clone()
                    };
                    run_step(&app, &base, &token, &id, *step).await;
                }
                prop_assert_eq!(
                    app.status(CH, &id).await,
                    model_steps(steps).map(|s| name(s).to_owned()),
                    "{:?}",
                    steps
                );
            }
            prop_assert_eq!(report_times_off_history(&app).await, 0);
            Ok(())
        })
    });
    runtime.block_on(async move { drop(app) });
    result.unwrap();
}

async fn run_step(app: &TestApp, base: &str, token: &str, id: &str, step: Step) {
    let two_days_ago = (chrono::Utc::now() - chrono::TimeDelta::days(2)).to_rfc3339();
    let body = report(id, "read");
    match step {
        Step::Report(s) => {
            let r = app
                .client
                .post(format!("{base}/social/on/whatsapp/koomessage/report/{CH}"))
                .header("Authorization", PASSWORD)
                .json(&report(id, name(s)))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        Step::Unranked => {
            let r = app
                .client
                .post(format!("{base}/social/on/whatsapp/koomessage/report/{CH}"))
                .header("Authorization", PASSWORD)
                .json(&report(id, "deleted"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        Step::Register => {
            let r = app
                .client
                .post(format!("{base}/api/v1/channels/{CH}/messages"))
                .bearer_auth(token)
                .json(&serde_json::json!({"messages": [{
                    "message_id": id, "sender": body["sender"], "user_number": body["user_number"],
                    "sent_at": two_days_ago}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        Step::Sweep => {
            let now = chrono::Utc::now();
            let range = koostatus::db::unreported::SweepRange {
                channel_id: CH,
                sent_before: now - chrono::TimeDelta::days(1),
                after: None,
                part: 0,
                parts: 1,
            };
            koostatus::db::unreported::sweep(&app.pool, &range, now, 1000)
                .await
                .unwrap();
        }
    }
}
