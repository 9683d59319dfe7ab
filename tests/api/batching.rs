//! Group commit: several reports in one batch give the serial result, and a
//! batch that fails answers 503 to every request in it.

use std::time::Duration;

use crate::helpers::{PASSWORD, TestApp, report, spawn_app_with};

const CH: &str = "ch";

/// One writer that waits long enough for concurrent requests to share a batch.
async fn batching_app(adjust: impl FnOnce(&mut koostatus::config::Config)) -> TestApp {
    let app = spawn_app_with(|c| {
        c.ingest.writers = std::num::NonZeroUsize::MIN;
        c.ingest.batch_wait = Duration::from_millis(300);
        adjust(c);
    })
    .await;
    app.add_channel(CH, PASSWORD).await;
    app
}

/// Sends all bodies at once, now; the future gives their status codes in
/// order.
fn send_together(
    app: &TestApp,
    bodies: Vec<serde_json::Value>,
) -> impl std::future::Future<Output = Vec<u16>> + Send + 'static {
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (client, url) = (app.client.clone(), app.webhook_url(CH));
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("Authorization", PASSWORD)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    async move {
        let mut codes = Vec::new();
        for t in tasks {
            codes.push(t.await.unwrap());
        }
        codes
    }
}

/// Stores a `delivered` message and locks its row until the transaction
/// returned ends: a batch with a report for it waits.
async fn lock_a_message(
    app: &TestApp,
    message_id: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    assert_eq!(
        app.post_report(CH, PASSWORD, &report(message_id, "delivered"))
            .await
            .status(),
        200
    );
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("select 1 from messages where message_id = $1 for update")
        .bind(message_id)
        .execute(&mut *blocker)
        .await
        .unwrap();
    blocker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_conflicting_reports_in_one_batch_give_the_serial_result() {
    let app = batching_app(|_| {}).await;
    // Warm the credential cache so that every request reaches the writer at once.
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("warm", "read"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("m1", "failed"))
            .await
            .status(),
        200
    );
    let (batches_before, _) = app.app.writer.stats();
    let mut conflicting = report("m1", "read");
    conflicting["sender"] = "someone else".into();
    let mut bodies = vec![
        conflicting,
        report("m1", "delivered"),
        report("m1", "read"),
        report("m1", "delivered"),
        report("m1", "read"),
    ];
    bodies.extend((0..6).map(|i| report(&format!("other-{i}"), "delivered")));
    let codes = send_together(&app, bodies).await;
    assert_eq!(codes[0], 409, "{codes:?}");
    assert!(codes[1..].iter().all(|c| *c == 200), "{codes:?}");

    let (batches_after, _) = app.app.writer.stats();
    // 11 reports: 7 distinct messages share the first batch, the repeats of
    // m1 follow in later ones, in arrival order.
    assert!(
        batches_after - batches_before <= 6,
        "{batches_before} -> {batches_after}"
    );
    assert_eq!(app.status(CH, "m1").await.as_deref(), Some("read"));
    let history = app.history(CH, "m1").await;
    let counts: Vec<(&str, i64)> = history
        .iter()
        .map(|h| (h.status.as_str(), h.receipt_count))
        .collect();
    assert_eq!(counts, [("failed", 1), ("delivered", 2), ("read", 2)]);
    assert!(
        history[0].advanced && history[2].advanced,
        "failed came first; read always advances"
    );
    let sender: String = sqlx::query_scalar("select sender from messages where message_id = 'm1'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sender, "86173xxxx4526");
    assert_eq!(app.count("messages").await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_in_a_batch_fails_only_its_own_request() {
    let app = batching_app(|_| {}).await;
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("known", "delivered"))
            .await
            .status(),
        200
    );
    let (batches_before, reports_before) = app.app.writer.stats();
    let mut conflicting = report("known", "read");
    conflicting["user_number"] = "another customer".into();
    let mut bodies = vec![conflicting];
    bodies.extend((0..8).map(|i| report(&format!("good-{i}"), "read")));
    let codes = send_together(&app, bodies).await;
    assert_eq!(codes[0], 409);
    assert!(codes[1..].iter().all(|c| *c == 200), "{codes:?}");
    let (batches_after, reports_after) = app.app.writer.stats();
    assert_eq!(reports_after - reports_before, 9);
    assert!(batches_after - batches_before < 9, "they shared batches");
    assert_eq!(app.status(CH, "known").await.as_deref(), Some("delivered"));
    assert_eq!(app.history(CH, "known").await.len(), 1);
    for i in 0..8 {
        assert_eq!(
            app.status(CH, &format!("good-{i}")).await.as_deref(),
            Some("read")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_answers_503_to_every_request_in_it_and_stores_none() {
    let app = batching_app(|c| c.database.statement_timeout = Duration::from_millis(500)).await;
    // The batch holding a report for this message cannot finish in time.
    let blocker = lock_a_message(&app, "locked").await;
    let mut bodies = vec![report("locked", "read")];
    bodies.extend((0..5).map(|i| report(&format!("bystander-{i}"), "read")));
    let codes = send_together(&app, bodies).await;
    blocker.rollback().await.unwrap();
    assert_eq!(codes, [503; 6]);
    assert_eq!(
        app.count("messages").await,
        1,
        "nothing of the failed batch was stored"
    );
    assert_eq!(app.status(CH, "locked").await.as_deref(), Some("delivered"));
    // Nothing stays broken: the same reports are accepted afterwards.
    assert_eq!(
        app.post_report(CH, PASSWORD, &report("bystander-0", "read"))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_with_a_new_password_pays_argon2_once() {
    let app = batching_app(|c| c.ingest.batch_wait = Duration::ZERO).await;
    let codes = send_together(
        &app,
        (0..30).map(|i| report(&format!("m{i}"), "read")).collect(),
    )
    .await;
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    assert_eq!(app.verifications(), 1);
}

/// A batch that forms while another is being written waits for that write
/// (up to `ingest.writer_wait`), gathering what arrives meanwhile into one
/// batch; a write held up longer does not hold the next batch for longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_forming_while_another_is_written_gathers_reports_for_a_bounded_time() {
    let app = spawn_app_with(|c| {
        c.ingest.writers = std::num::NonZeroUsize::new(2).unwrap();
        c.ingest.batch_wait = Duration::ZERO;
        c.ingest.writer_wait = Duration::from_secs(2);
        // The held batch must outlast the test's waits.
        c.database.statement_timeout = Duration::from_secs(30);
    })
    .await;
    app.add_channel(CH, PASSWORD).await;
    // One writer's batch waits for this row's lock, for longer than
    // `writer_wait`.
    let blocker = lock_a_message(&app, "locked").await;
    let held = tokio::spawn(send_together(&app, vec![report("locked", "read")]));
    crate::helpers::wait_until(
        "the locked report's batch is written",
        Duration::from_secs(10),
        || async { app.app.writer.stats().1 >= 2 },
    )
    .await;
    let (batches_before, reports_before) = app.app.writer.stats();

    // Two waves 300 ms apart, while that batch is held: the other writer
    // takes both into one batch, and writes it once `writer_wait` has passed.
    let first = send_together(
        &app,
        (0..5)
            .map(|i| report(&format!("first-{i}"), "read"))
            .collect(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = send_together(
        &app,
        (0..5)
            .map(|i| report(&format!("second-{i}"), "read"))
            .collect(),
    )
    .await;
    assert_eq!(second, [200; 5]);
    assert_eq!(first.await, [200; 5]);
    let (batches_after, reports_after) = app.app.writer.stats();
    assert_eq!(reports_after - reports_before, 10);
    assert_eq!(
        batches_after - batches_before,
        1,
        "the two waves shared one batch"
    );
    assert!(
        !held.is_finished(),
        "answered while the first batch is still held"
    );

    blocker.rollback().await.unwrap();
    assert_eq!(held.await.unwrap(), [200]);
    assert_eq!(app.status(CH, "locked").await.as_deref(), Some("read"));
    assert_eq!(app.count("messages").await, 11);
}
