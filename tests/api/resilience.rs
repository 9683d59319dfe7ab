//! The service as a process: killed mid-stream it loses nothing it
//! acknowledged; stopped with SIGTERM it finishes what is in flight.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::helpers::{KillOnDrop, free_port, run_cli, spawn_serve, wait_ready};
use crate::helpers::{PASSWORD, TestDatabase, migrated_database, report};

const CH: &str = "ch";

fn start_server(db: &TestDatabase, port: u16) -> KillOnDrop {
    spawn_serve(
        &db.url(),
        port,
        &[
            ("KOOSTATUS_LOG__FILTER", "warn"),
            // A busy CI machine must not turn the deliberately held lock into
            // a statement timeout.
            ("KOOSTATUS_DATABASE__STATEMENT_TIMEOUT", "30s"),
            // Few connections, so the writers reuse those that requests
            // opened: a connection belongs to the runtime that opened it, and
            // an HTTP worker's runtime stops during shutdown.
            ("KOOSTATUS_DATABASE__MAX_CONNECTIONS", "3"),
        ],
        std::fs::File::create(std::env::temp_dir().join(format!("koostatus-{port}.log"))).unwrap(),
    )
}

/// Clients posting until `stop`; returns what was answered 200 and the
/// answers that were neither 200 nor a broken connection.
async fn load(
    port: u16,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<(String, String)>, Vec<String>) {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let url =
                    format!("http://127.0.0.1:{port}/social/on/whatsapp/koomessage/report/{CH}");
                let (mut acked, mut bad) = (Vec::new(), Vec::new());
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // Ids sort after "held": a batch holding the held report
                    // locks nothing before it, so only that batch waits.
                    let (id, status) = (
                        format!("z{c}-m{}", i % 40),
                        ["failed", "delivered", "read"][i % 3],
                    );
                    let sent = client
                        .post(&url)
                        .header("Authorization", PASSWORD)
                        .json(&report(&id, status))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => acked.push((id, status.to_owned())),
                        Ok(r) => bad.push(format!(
                            "{} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        // Refused or cut: not acknowledged, nothing promised.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                (acked, bad)
            })
        })
        .collect();
    let (mut acked, mut bad) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, b) = t.await.unwrap();
        acked.extend(a);
        bad.extend(b);
    }
    (acked, bad)
}

/// Every acknowledged (message, status) has its history entry.
async fn assert_all_stored(db: &TestDatabase, acked: &[(String, String)]) {
    let rows: Vec<(String, String)> =
        sqlx::query_as("select message_id, status::text from message_entries")
            .fetch_all(&db.pool().await)
            .await
            .unwrap();
    let stored: std::collections::HashSet<_> = rows.into_iter().collect();
    let lost: Vec<_> = acked.iter().filter(|a| !stored.contains(*a)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged reports lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_report() {
    let db = migrated_database().await;
    assert!(
        run_cli(
            &db.url(),
            &["channel", "add", CH, "--password-stdin"],
            &format!("{PASSWORD}\n")
        )
        .status
        .success()
    );
    let port = free_port();
    let mut server = start_server(&db, port);
    wait_ready(port).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(port, 32, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.0.as_mut().unwrap().kill().unwrap(); // SIGKILL
    server.0.as_mut().unwrap().wait().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, bad) = load.await.unwrap();
    assert!(
        acked.len() > 100,
        "only {} acknowledged before the kill",
        acked.len()
    );
    assert!(bad.is_empty(), "answers other than 200: {bad:?}");
    // Restarted on the same database, it serves again and nothing acknowledged is missing.
    let _server = start_server(&db, port);
    wait_ready(port).await;
    assert_all_stored(&db, &acked).await;
    println!(
        "crash test: {} reports acknowledged before SIGKILL, 0 lost",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_requests_then_exits_0() {
    sigterm_with_a_request_held_in_flight(16).await;
}

/// Without load an HTTP worker goes idle at SIGTERM and its runtime stops
/// while the held request still waits: the held report must not depend on
/// anything that runtime owned (it once did: database connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_idle_worker_still_commits_the_request_in_flight() {
    sigterm_with_a_request_held_in_flight(0).await;
}

/// Holds a report in flight (its write waits on a row lock), sends SIGTERM
/// while `clients` post reports, and releases the lock a second later.
async fn sigterm_with_a_request_held_in_flight(clients: usize) {
    let db = migrated_database().await;
    assert!(
        run_cli(
            &db.url(),
            &["channel", "add", CH, "--password-stdin"],
            &format!("{PASSWORD}\n")
        )
        .status
        .success()
    );
    let port = free_port();
    let mut server = start_server(&db, port);
    wait_ready(port).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/social/on/whatsapp/koomessage/report/{CH}");
    let send = |id: &str, status: &str| {
        client
            .post(&url)
            .header("Authorization", PASSWORD)
            .json(&report(id, status))
            .send()
    };
    assert_eq!(send("held", "delivered").await.unwrap().status(), 200);
    // Requests that need the database, on every HTTP worker.
    let mut ready = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let request = client.get(format!("http://127.0.0.1:{port}/readyz"));
        ready.spawn(async move { request.send().await.unwrap().status() });
    }
    while let Some(status) = ready.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(port, clients, stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A request that is in flight when SIGTERM arrives: its write waits on a row lock.
    let pool = db.pool().await;
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("select 1 from messages where message_id = 'held' for update")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let in_flight = tokio::spawn(send("held", "read"));
    // In flight for sure: its batch waits on the lock inside PostgreSQL.
    let waiting_since = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            waiting_since.elapsed() < Duration::from_secs(10),
            "the request never reached the database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = server.0.as_ref().unwrap().id();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    blocker.rollback().await.unwrap();

    let answer = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    let status = answer.status();
    let log = std::fs::read_to_string(std::env::temp_dir().join(format!("koostatus-{port}.log")))
        .unwrap_or_default();
    assert_eq!(status, 200, "{} {log}", answer.text().await.unwrap());
    let mut child = server.0.take().unwrap();
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
    let (acked, bad) = load.await.unwrap();
    assert!(
        bad.is_empty(),
        "answered other than 200 during shutdown: {bad:?}\n{log}"
    );
    assert!(clients == 0 || acked.len() > 50);
    let mut all = acked;
    all.push(("held".into(), "read".into()));
    assert_all_stored(&db, &all).await;
}
