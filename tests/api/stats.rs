//! Delivery statistics (SPEC §9): the answer of `/stats` equals a direct
//! computation over the stored rows, for random report sequences.

use chrono::{DateTime, TimeDelta, Utc};
use koostatus::db::registrations::{Registration, register};
use koostatus::db::reports::{Incoming, record_reports};
use koostatus::db::unreported::{SweepRange, sweep};
use koostatus::domain::{ChannelId, Report};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;

use crate::helpers::{PASSWORD, TestApp, assert_error, report, spawn_app};

/// Reports start an hour before a UTC midnight and run past it.
fn base() -> DateTime<Utc> {
    "2026-11-23T22:00:00Z".parse().unwrap()
}

/// One report: which message, which status, how many minutes after `base`.
type Step = (usize, &'static str, i64);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    // Reports of the five statuses, registrations by the sending side and
    // runs of the sweep (which turns messages `sent` for over 30 minutes
    // into `unreported`): every statement that changes a message's status.
    let status = prop::sample::select(vec![
        "failed",
        "delivered",
        "read",
        "sent",
        "unreported",
        "register",
        "sweep",
    ]);
    // Few messages, many reports: duplicates and late reports (a lower
    // status after a higher one) are common. Times up to 26 h cover two
    // hours of one day and the next day; the service's clock only moves
    // forward, so they are sorted.
    prop::collection::vec((0usize..25, status, 0i64..(26 * 60)), 1..80).prop_map(|mut steps| {
        steps.sort_by_key(|s| s.2);
        steps
    })
}

async fn record(app: &TestApp, channel: &str, (m, status, minutes): Step) {
    let at = base() + TimeDelta::minutes(minutes) + TimeDelta::milliseconds(m as i64);
    let body = report(&format!("m{m}"), status);
    match status {
        "register" => {
            let registration = Registration {
                message_id: format!("m{m}"),
                sender: body["sender"].as_str().unwrap().into(),
                user_number: body["user_number"].as_str().unwrap().into(),
                sent_at: at - TimeDelta::minutes(1),
                // Every other message tagged: `?tag=` is compared too.
                tags: match m % 4 {
                    0 => vec!["a".into()],
                    1 => vec!["a".into(), "b".into()],
                    _ => vec![],
                },
            };
            let mut conn = app.pool.acquire().await.unwrap();
            register(&mut conn, channel, &[registration], at)
                .await
                .unwrap();
        }
        "sweep" => {
            let range = SweepRange {
                channel_id: channel,
                sent_before: at - TimeDelta::minutes(30),
                after: None,
                part: 0,
                parts: 1,
            };
            sweep(&app.pool, &range, at, 1000).await.unwrap();
        }
        _ => {
            let incoming = Incoming {
                channel: ChannelId::parse(channel).unwrap(),
                report: Report::from_json(body.to_string().as_bytes()).unwrap(),
                received_at: at,
            };
            record_reports(&app.pool, &[incoming]).await.unwrap();
        }
    }
}

/// The counts of a bucket, in the order of [`COUNTS`].
const COUNTS: [&str; 6] = [
    "messages",
    "sent",
    "unreported",
    "failed",
    "delivered",
    "read",
];
/// A bucket computed directly: its start, its counts and [p50, p90, p99]
/// of time to read and of time to deliver.
type Expected = (DateTime<Utc>, [i64; 6], [Option<[f64; 3]>; 2]);
/// The same as the direct query's row.
type Row = (DateTime<Utc>, Vec<i64>, Option<Vec<f64>>, Option<Vec<f64>>);

/// Buckets as the stored rows say, computed directly; with a tag, of the
/// messages registered with it.
async fn direct(app: &TestApp, channel: &str, unit: &str, tag: Option<&str>) -> Vec<Expected> {
    let rows: Vec<Row> = sqlx::query_as(
        "select date_trunc($2, first_seen_at, 'UTC'),
                array[count(*),
                      count(*) filter (where status = 'sent'),
                      count(*) filter (where status = 'unreported'),
                      count(*) filter (where status = 'failed'),
                      count(*) filter (where status = 'delivered'),
                      count(*) filter (where status = 'read')],
                percentile_disc(array[0.5, 0.9, 0.99]) within group
                    (order by extract(epoch from updated_at - first_seen_at)::float8)
                    filter (where status = 'read'),
                percentile_disc(array[0.5, 0.9, 0.99]) within group
                    (order by extract(epoch from (
                        select min(h.first_received_at) from message_entries h
                        where h.message_key = m.message_key
                          and h.status in ('delivered', 'read')) - first_seen_at)::float8)
                    filter (where status >= 'delivered')
         from messages m where channel_id = $1 and ($3::text is null or $3 = any(tags))
         group by 1 order by 1",
    )
    .bind(channel)
    .bind(unit)
    .bind(tag)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(start, c, read, deliver)| {
            let counts = [c[0], c[1], c[2], c[3], c[4], c[5]];
            let three = |p: Option<Vec<f64>>| p.map(|p| [p[0], p[1], p[2]]);
            (start, counts, [three(read), three(deliver)])
        })
        .collect()
}

async fn stats(app: &TestApp, token: &str, channel: &str, query: &str) -> Value {
    let r = app
        .get(&format!("/api/v1/channels/{channel}/stats?{query}"), token)
        .await;
    assert_eq!(r.status(), 200, "{query}");
    r.json().await.unwrap()
}

fn near(estimate: f64, exact: f64) -> bool {
    (estimate - exact).abs() <= (exact * 0.05).max(1.0)
}

/// Compares one answer with the direct computation, bucket by bucket and
/// in total: the channel's, and those of tags `a` and `b`.
async fn compare(
    app: &TestApp,
    token: &str,
    channel: &str,
    unit: &str,
) -> Result<(), TestCaseError> {
    for tag in [None, Some("a"), Some("b")] {
        compare_tag(
            app,
            token,
            channel,
            unit,
            "2026-11-23T20:00:00Z",
            "2026-11-25T02:00:00Z",
            tag,
        )
        .await?;
    }
    Ok(())
}

async fn compare_within(
    app: &TestApp,
    token: &str,
    channel: &str,
    unit: &str,
    from: &str,
    to: &str,
) -> Result<(), TestCaseError> {
    compare_tag(app, token, channel, unit, from, to, None).await
}

async fn compare_tag(
    app: &TestApp,
    token: &str,
    channel: &str,
    unit: &str,
    from: &str,
    to: &str,
    tag: Option<&str>,
) -> Result<(), TestCaseError> {
    let tag_query = tag.map(|t| format!("&tag={t}")).unwrap_or_default();
    let answer = stats(
        app,
        token,
        channel,
        &format!("from={from}&to={to}&bucket={unit}{tag_query}"),
    )
    .await;
    let expected = direct(app, channel, unit, tag).await;
    let buckets = answer["buckets"].as_array().unwrap();
    let with_messages: Vec<&Value> = buckets.iter().filter(|b| b["messages"] != 0).collect();
    prop_assert_eq!(with_messages.len(), expected.len(), "{}: {}", unit, answer);
    let mut total = [0i64; 6];
    for (b, (start, counts, percentiles)) in with_messages.iter().zip(&expected) {
        prop_assert_eq!(
            b["start"]
                .as_str()
                .unwrap()
                .parse::<DateTime<Utc>>()
                .unwrap(),
            *start
        );
        let got = COUNTS.map(|k| b[k].as_i64().unwrap());
        prop_assert_eq!(got, *counts, "{} bucket {}", unit, start);
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
        let rates = [
            "delivered_rate",
            "read_rate",
            "failed_rate",
            "unreported_rate",
        ]
        .map(|k| b[k].as_f64().unwrap());
        let n = counts[0] as f64;
        let want = [
            (counts[4] + counts[5]) as f64 / n,
            counts[5] as f64 / n,
            counts[3] as f64 / n,
            counts[2] as f64 / n,
        ];
        prop_assert!(
            rates.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9),
            "{:?}",
            rates
        );
        for (key, percentiles) in ["time_to_read_seconds", "time_to_deliver_seconds"]
            .into_iter()
            .zip(percentiles)
        {
            match percentiles {
                None => prop_assert!(b[key].is_null(), "{}", key),
                Some(p) => {
                    let t = &b[key];
                    let got = ["p50", "p90", "p99"].map(|k| t[k].as_f64().unwrap());
                    prop_assert!(
                        got.iter().zip(p).all(|(g, e)| near(*g, *e)),
                        "{} {} bucket {}: {:?} for exact {:?}",
                        key,
                        unit,
                        start,
                        got,
                        p
                    );
                }
            }
        }
    }
    let got = COUNTS.map(|k| answer["total"][k].as_i64().unwrap());
    prop_assert_eq!(got, total);
    Ok(())
}

/// Random sequences of reports (duplicates, late and out-of-order ones,
/// across a UTC day boundary), some followed by a prune: the hourly and
/// daily answers equal a direct computation over the stored rows, counts
/// exactly, percentiles within 5 % or 1 s; so does a rebuild.
#[test]
fn stats_equal_a_direct_computation_over_the_stored_rows() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(spawn_app());
    let token = runtime.block_on(app.create_token("supervisor", &[]));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let strategy = (steps(), prop::option::of(0i64..(26 * 60)));
    let result = runner.run(&strategy, |(steps, prune_before)| {
        runtime.block_on(async {
            let channel = format!(
                "c{}",
                case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            app.add_channel(&channel, PASSWORD).await;
            for step in steps {
                record(&app, &channel, step).await;
            }
            if let Some(minutes) = prune_before {
                let cutoff = base() + TimeDelta::minutes(minutes);
                koostatus::db::retention::delete_older(&app.pool, &channel, cutoff, 1000)
                    .await
                    .unwrap();
            }
            compare(&app, &token, &channel, "hour").await?;
            compare(&app, &token, &channel, "day").await
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // A rebuild from the stored rows gives the same answers.
    let before = runtime.block_on(stats(
        &app,
        &token,
        "c0",
        "from=2026-11-23T00:00:00Z&to=2026-11-26T00:00:00Z&bucket=hour",
    ));
    let out = crate::helpers::run_cli(&app.db.url(), &["stats", "rebuild"], "");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Rebuilt the statistics of "));
    let after = runtime.block_on(stats(
        &app,
        &token,
        "c0",
        "from=2026-11-23T00:00:00Z&to=2026-11-26T00:00:00Z&bucket=hour",
    ));
    assert_eq!(before, after);
    for channel in ["c1", "c2"] {
        runtime
            .block_on(compare(&app, &token, channel, "day"))
            .unwrap();
    }
}

#[tokio::test]
async fn bad_stats_parameters_get_400_with_a_sentence() {
    let app = spawn_app().await;
    app.add_channel("ch", PASSWORD).await;
    let token = app.create_token("supervisor", &[]).await;
    for (query, code) in [
        ("bucket=week", "invalid_bucket"),
        ("from=yesterday", "invalid_time"),
        (
            "from=2026-11-24T00:00:00Z&to=2026-11-24T00:00:00Z",
            "invalid_range",
        ),
        (
            "from=2025-01-01T00:00:00Z&to=2026-11-24T00:00:00Z",
            "invalid_range",
        ),
        ("color=red", "invalid_query"),
    ] {
        let r = app
            .get(&format!("/api/v1/channels/ch/stats?{query}"), &token)
            .await;
        assert_error(r, 400, code).await;
    }
    // Far from now, either way (chrono's nanosecond clock ends in 2262).
    for query in [
        "bucket=hour&to=2263-01-01T00:00:00Z",
        "from=1900-01-01T00:00:00Z&to=1900-01-02T00:00:00Z",
    ] {
        assert_eq!(
            stats(&app, &token, "ch", query).await["total"]["messages"],
            0
        );
    }
    // Defaults: the last 7 days, by day: 8 buckets overlap them.
    let answer = stats(&app, &token, "ch", "").await;
    assert_eq!(answer["buckets"].as_array().unwrap().len(), 8);
    assert_eq!(answer["total"]["messages"], 0);
    assert!(answer["total"]["time_to_read_seconds"].is_null());
}

/// Concurrent callbacks through the webhook (several writers, so several
/// shards and batches that overlap): the counts stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callbacks_keep_exact_counts() {
    let app = spawn_app().await;
    app.add_channel("ch", PASSWORD).await;
    let token = app.create_token("supervisor", &[]).await;
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (client, url) = (
                app.client.clone(),
                format!("{}/social/on/whatsapp/koomessage/report/ch", app.address),
            );
            tokio::spawn(async move {
                for i in 0..40 {
                    let status = ["failed", "delivered", "read"][(c * 7 + i * 3) % 3];
                    let r = client
                        .post(&url)
                        .header("Authorization", PASSWORD)
                        .json(&report(&format!("m{}", (c * 13 + i) % 60), status))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let now = Utc::now();
    let (from, to) = (
        (now - TimeDelta::days(2)).to_rfc3339(),
        (now + TimeDelta::days(1)).to_rfc3339(),
    );
    let (from, to) = (from.replace('+', "%2B"), to.replace('+', "%2B"));
    for unit in ["hour", "day"] {
        compare_within(&app, &token, "ch", unit, &from, &to)
            .await
            .unwrap();
    }
    let answer = stats(&app, &token, "ch", &format!("from={from}&to={to}")).await;
    assert_eq!(answer["total"]["messages"], 60);
}
