//! Password guessing is limited per client and per channel; the client is
//! named by X-Forwarded-For only when the peer is a trusted proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::helpers::{PASSWORD, TestApp, assert_error, report, spawn_app_with};

const CH: &str = "ch";

async fn post_from(
    app: &TestApp,
    client_ip: Option<&str>,
    password: &str,
    id: &str,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.webhook_url(CH))
        .header("Authorization", password)
        .json(&report(id, "read"));
    if let Some(ip) = client_ip {
        request = request.header("X-Forwarded-For", format!("{ip}, 10.9.9.9"));
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_guessing_client_gets_429_without_argon2_while_others_and_valid_passwords_pass() {
    let app = spawn_app_with(|c| {
        c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap(), "10.9.9.9".parse().unwrap()];
        c.auth.client_failure_burst = std::num::NonZeroU32::new(5).unwrap();
        c.auth.client_failures_per_minute = std::num::NonZeroU32::new(1).unwrap(); // no refill during the test
    })
    .await;
    app.add_channel(CH, PASSWORD).await;
    assert_eq!(
        post_from(&app, Some("192.0.2.1"), PASSWORD, "m0")
            .await
            .status(),
        200
    );
    for i in 0..5 {
        assert_eq!(
            post_from(&app, Some("192.0.2.66"), "guess", &format!("g{i}"))
                .await
                .status(),
            401
        );
    }
    let before = app.verifications();
    let throttled = post_from(&app, Some("192.0.2.66"), "guess", "g5").await;
    assert!(throttled.headers().contains_key("retry-after"));
    assert_error(throttled, 429, "too_many_attempts").await;
    // Throttled, even with the right password while it is not remembered...
    assert_eq!(
        post_from(&app, Some("192.0.2.66"), "other", "g6")
            .await
            .status(),
        429
    );
    assert_eq!(
        app.verifications(),
        before,
        "no argon2 for throttled attempts"
    );
    // ...but a remembered valid password passes, from the same client too.
    assert_eq!(
        post_from(&app, Some("192.0.2.66"), PASSWORD, "m1")
            .await
            .status(),
        200
    );
    // Another client behind the same load balancer is not affected.
    assert_eq!(
        post_from(&app, Some("192.0.2.7"), "guess", "g7")
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let app = spawn_app_with(|c| {
        c.auth.client_failure_burst = std::num::NonZeroU32::new(3).unwrap();
        c.auth.client_failures_per_minute = std::num::NonZeroU32::new(1).unwrap();
    })
    .await;
    app.add_channel(CH, PASSWORD).await;
    // Each request claims another address; the peer (127.0.0.1) is what counts.
    for i in 0..3 {
        assert_eq!(
            post_from(&app, Some(&format!("192.0.2.{i}")), "guess", "g")
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        post_from(&app, Some("192.0.2.99"), "guess", "g")
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn guesses_spread_over_many_clients_are_limited_per_channel() {
    let app = spawn_app_with(|c| {
        c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.auth.channel_failure_burst = std::num::NonZeroU32::new(4).unwrap();
        c.auth.channel_failures_per_minute = std::num::NonZeroU32::new(1).unwrap();
    })
    .await;
    app.add_channel(CH, PASSWORD).await;
    // The first use of a password needs argon2, so it spends one unit too.
    assert_eq!(
        post_from(&app, Some("192.0.2.1"), PASSWORD, "m0")
            .await
            .status(),
        200
    );
    for i in 0..3 {
        assert_eq!(
            post_from(&app, Some(&format!("198.51.100.{i}")), "guess", "g")
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        post_from(&app, Some("198.51.100.200"), "guess", "g")
            .await
            .status(),
        429
    );
    assert_eq!(
        post_from(&app, Some("192.0.2.1"), PASSWORD, "m1")
            .await
            .status(),
        200
    );
}

/// Valid callbacks run for 3 s alone, then 3 s beside a flood of wrong
/// passwords at over 1,000 requests/s through the same load balancer. The
/// flood gets only 401 or 429 and almost no argon2; the rates are printed.
/// In this debug build the flood's own HTTP client takes most of the CPU,
/// so the throughput ratio is measured by `cargo bench --bench ingest`
/// (release, a raw HTTP client) instead of asserted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_gets_only_401_or_429_and_little_argon2() {
    let app = Arc::new(
        spawn_app_with(|c| c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await,
    );
    app.add_channel(CH, PASSWORD).await;
    assert_eq!(
        post_from(&app, Some("192.0.2.1"), PASSWORD, "warm")
            .await
            .status(),
        200
    );
    let window = Duration::from_secs(3);

    let valid = |tag: &'static str| {
        let tasks: Vec<_> = (0..8)
            .map(|c| {
                let app = app.clone();
                tokio::spawn(async move {
                    let deadline = Instant::now() + window;
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let r =
                            post_from(&app, Some("192.0.2.1"), PASSWORD, &format!("{tag}-{c}-{n}"))
                                .await;
                        assert_eq!(r.status(), 200);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        async move {
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total as f64 / window.as_secs_f64()
        }
    };
    let alone = valid("alone").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (flood_sent, flood_bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flooders: Vec<_> = (0..8)
        .map(|c| {
            let (app, stop, sent, bad) = (
                app.clone(),
                stop.clone(),
                flood_sent.clone(),
                flood_bad.clone(),
            );
            tokio::spawn(async move {
                // Paced: each flooder sends 150 requests/s, 1,200/s in all.
                let mut tick = tokio::time::interval(Duration::from_micros(6_667));
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    i += 1;
                    let attacker = format!("203.0.113.{}", c * 10 + i % 10);
                    let r = post_from(&app, Some(&attacker), "guess", "x").await;
                    if !matches!(r.status().as_u16(), 401 | 429) {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flood_started = (Instant::now(), flood_sent.load(Ordering::Relaxed));
    let loaded = valid("loaded").await;
    let flood_rate = (flood_sent.load(Ordering::Relaxed) - flood_started.1) as f64
        / flood_started.0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await.unwrap();
    }
    println!(
        "flood: {flood_rate:.0} wrong passwords/s; valid callbacks {alone:.0}/s alone, {loaded:.0}/s under the flood, ratio {:.2}; argon2 checks {}",
        loaded / alone,
        app.verifications()
    );
    assert_eq!(
        flood_bad.load(Ordering::Relaxed),
        0,
        "the flood got something other than 401 or 429"
    );
    // The rate itself depends on how busy this debug build's machine is
    // (6,000 paced; 1,567 seen under a full CI run, 911 on a slower day);
    // the release benchmark holds 1,000/s. The floor only has to dwarf the
    // argon2 allowance below (151), so that the budget, not the number of
    // guesses, is what bounds argon2.
    let flood_total = flood_sent.load(Ordering::Relaxed);
    assert!(flood_total >= 500, "the flood sent only {flood_total}");
    // Every guess spends the channel's budget too (burst 100, 10/s):
    // far fewer argon2 checks than the thousands of guesses.
    assert!(
        app.verifications() <= 1 + 100 + 10 * 5,
        "{} argon2 checks",
        app.verifications()
    );
    // Under the flood valid callbacks keep a fair share of their rate (0.45
    // seen in a debug build beside the other tests; 0.9 and more in the
    // release benchmark): a flood that starved them would fail here.
    assert!(
        loaded >= alone * 0.1,
        "valid callbacks fell to {loaded:.0}/s from {alone:.0}/s"
    );
}

/// A refused guess leaves its connection open: through a load balancer's
/// pooled connections, guesses must not cost a new connection each.
#[tokio::test]
async fn refused_guesses_keep_the_connection_open() {
    let app = spawn_app_with(|_| {}).await;
    app.add_channel(CH, PASSWORD).await;
    let body = report("m1", "read").to_string();
    let one = |connection: &str| {
        format!(
            "POST /social/on/whatsapp/koomessage/report/{CH} HTTP/1.1\r\nhost: t\r\nauthorization: wrong\r\nconnection: {connection}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // The last asks to close, so that reading ends there.
    let requests = one("keep-alive").repeat(2) + &one("close");
    let answers = app.raw(requests.as_bytes()).await;
    assert_eq!(answers.matches("HTTP/1.1 401").count(), 3, "{answers}");
}
