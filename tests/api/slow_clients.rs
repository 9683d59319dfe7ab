//! Slow and greedy clients: 500 connections that send a byte now and then
//! neither stop valid callbacks nor stay open past the configured timeouts.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{PASSWORD, report, spawn_app_with};

/// Sends `head`, then one byte a second; returns how long the server kept
/// the connection open and the first bytes it answered.
async fn drip(port: u16, head: String) -> (Duration, String) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while started.elapsed() < Duration::from_secs(15) {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
            }
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slow_connections_do_not_stop_valid_callbacks() {
    let app = spawn_app_with(|c| {
        c.server.client_request_timeout = Duration::from_secs(2);
        c.server.body_timeout = Duration::from_secs(2);
    })
    .await;
    app.add_channel("ch", PASSWORD).await;
    assert_eq!(
        app.post_report("ch", PASSWORD, &report("warm", "read"))
            .await
            .status(),
        200
    );
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();

    // 400 never finish their headers; 100 send valid headers and drip the body.
    let slow: Vec<_> = (0..500)
        .map(|i| {
            let head = if i < 400 {
                "POST /social/on/whatsapp/koomessage/report/ch HTTP/1.1\r\nhost: x\r\n".to_owned()
            } else {
                format!(
                    "POST /social/on/whatsapp/koomessage/report/ch HTTP/1.1\r\nhost: x\r\nauthorization: {PASSWORD}\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{{"
                )
            };
            tokio::spawn(drip(port, head))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let started = Instant::now();
        let status = app
            .post_report("ch", PASSWORD, &report(&format!("during-{i}"), "read"))
            .await
            .status();
        assert_eq!(status, 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a valid callback took {slowest:?}"
    );

    let mut header_408 = 0;
    let mut body_408 = 0;
    for (i, task) in slow.into_iter().enumerate() {
        let (open_for, answer) = task.await.unwrap();
        assert!(
            open_for < Duration::from_secs(6),
            "connection {i} stayed open {open_for:?}"
        );
        if i < 400 && answer.starts_with("HTTP/1.1 408") {
            header_408 += 1;
        }
        if i >= 400 {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
            body_408 += 1;
        }
    }
    println!(
        "slow clients: {header_408} of 400 header drips answered 408, {body_408} of 100 body drips answered 408; slowest valid callback {slowest:?}"
    );
    assert_eq!(header_408, 400, "every header drip is told 408");
    assert_eq!(body_408, 100, "every body drip is told 408");
}
