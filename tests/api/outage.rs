//! A database outage, made by a TCP proxy the test owns between the service
//! and PostgreSQL (the shared server itself is never stopped).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{PASSWORD, assert_error, migrated_database, report, spawn_app, spawn_app_on};

struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().unwrap().push(link);
            }
        });
        Proxy { port, up, links }
    }

    /// Cuts every open connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_callbacks_get_503_quickly_and_the_service_recovers_by_itself() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let db = migrated_database().await;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name);
    let app = spawn_app_on(db, |c| {
        c.database.url = koostatus::config::DatabaseUrl::parse(&via_proxy).unwrap();
        c.database.acquire_timeout = Duration::from_millis(800);
        c.database.statement_timeout = Duration::from_secs(2);
    })
    .await;
    app.add_channel("ch", PASSWORD).await;
    assert_eq!(
        app.post_report("ch", PASSWORD, &report("before", "read"))
            .await
            .status(),
        200
    );

    proxy.cut();
    // Long enough for the credential cache to expire: the uncached path
    // must answer 503 too.
    let outage_started = Instant::now();
    let mut answers = 0;
    while outage_started.elapsed() < Duration::from_secs(3) {
        let sent = Instant::now();
        let batch: Vec<_> = (0..8)
            .map(|i| {
                let (client, url) = (app.client.clone(), app.webhook_url("ch"));
                tokio::spawn(async move {
                    client
                        .post(url)
                        .header("Authorization", PASSWORD)
                        .json(&report(&format!("during-{i}"), "read"))
                        .send()
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in batch {
            let response = t.await.unwrap();
            assert!(response.headers().contains_key("retry-after"));
            assert_error(response, 503, "unavailable").await;
            answers += 1;
        }
        // Bounded: acquire timeout plus a margin, never a hang.
        assert!(
            sent.elapsed() < Duration::from_secs(4),
            "{:?}",
            sent.elapsed()
        );
    }
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_error(ready, 503, "unavailable").await;

    proxy.restore();
    let recovering = Instant::now();
    loop {
        let status = app
            .post_report("ch", PASSWORD, &report("after", "read"))
            .await
            .status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            recovering.elapsed() < Duration::from_secs(10),
            "no recovery without a restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Nothing answered 503 was stored.
    let during: i64 =
        sqlx::query_scalar("select count(*) from messages where message_id like 'during-%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(during, 0);
    println!(
        "outage: {answers} callbacks answered 503, recovered in {:?}",
        recovering.elapsed()
    );
}

/// The server ends every session of the service while they are idle (a
/// restart, an operator's `pg_terminate_backend`): the next callback is
/// answered 200 on a new connection, not 503, because a pooled connection
/// idle for over a second is pinged before it is handed out (db::connect).
#[tokio::test]
async fn sessions_the_server_ended_while_idle_are_replaced_before_use() {
    let app = spawn_app().await;
    app.add_channel("ch", PASSWORD).await;
    let before = app
        .post_report("ch", PASSWORD, &report("before", "read"))
        .await;
    assert_eq!(before.status(), 200);

    let ended: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
                               where datname = $1 and pid <> pg_backend_pid()) as t",
    )
    .bind(&app.db.name)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(ended > 0, "the service had sessions to end");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let after = app
        .post_report("ch", PASSWORD, &report("after", "read"))
        .await;
    assert_eq!(after.status(), 200);
}
