//! Plans that must hold whatever PostgreSQL's statistics say. A fresh
//! deployment that autovacuum reached while its tables were empty has
//! statistics saying "empty"; a plan made then (a sequential scan) is kept
//! by a pooled connection for its lifetime, and ingest must not pay a scan
//! of `messages` per report when the table has grown.

use std::time::{Duration, Instant};

use crate::helpers::{database_with_channel, free_port, report, spawn_serve, wait_ready};

const PASSWORD: &str = "a-webhook-password-P1an";
const REPORTS: i64 = 300;

#[tokio::test]
async fn ingest_does_not_scan_messages_per_report_after_vacuum_analyze_of_empty_tables() {
    let db = database_with_channel("ch", PASSWORD).await;
    let pool = db.pool().await;
    sqlx::query("vacuum analyze").execute(&pool).await.unwrap();
    let scans = || async {
        sqlx::query("select pg_stat_clear_snapshot()")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query_as::<_, (i64, i64)>(
            "select seq_scan, n_tup_ins from pg_stat_user_tables where relname = 'messages'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let (scans_before, _) = scans().await;

    let port = free_port();
    let server = spawn_serve(&db.url(), port, &[], std::process::Stdio::null());
    wait_ready(port).await;
    let client = reqwest::Client::new();
    for i in 0..REPORTS {
        let r = client
            .post(format!(
                "http://127.0.0.1:{port}/social/on/whatsapp/koomessage/report/ch"
            ))
            .header("authorization", PASSWORD)
            .json(&report(&format!("m{i}"), "delivered"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The service's connections end with it, and a backend reports its
    // statistics when it ends.
    drop(server);
    let started = Instant::now();
    let (scans_after, inserted) = loop {
        let (scans, inserted) = scans().await;
        if inserted >= REPORTS || started.elapsed() > Duration::from_secs(20) {
            break (scans, inserted);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        inserted >= REPORTS,
        "statistics not reported: {inserted} inserts"
    );
    // The service's own start-up and background queries may scan the
    // (then tiny) table a few times; a scan per report is what must not be.
    assert!(
        scans_after - scans_before < 30,
        "{} sequential scans of messages for {REPORTS} reports",
        scans_after - scans_before
    );
}
