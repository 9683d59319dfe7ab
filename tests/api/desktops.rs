//! Agent desktops at contact-centre scale (SPEC §8): many streams sharing
//! one reader per channel, user-number filters, resume across the catch-up
//! boundary, slow clients, revoked tokens, stream tickets, CORS, and a feed
//! that other databases' transactions do not hold back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{HeldBack, PASSWORD, TestApp, empty_database, spawn_app_with, spawn_instance};
use crate::sse::Sse;

const A: &str = "alpha";
const B: &str = "beta";
const USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];

fn report_for(message_id: &str, user_number: &str, status: &str) -> Value {
    json!({
        "message_id": message_id,
        "sender": "86173xxxx4526",
        "user_number": user_number,
        "status": status,
    })
}

/// The whole feed of a channel, from the source of truth: (position,
/// message_id, user_number, status).
async fn feed(app: &TestApp, token: &str, channel: &str) -> Vec<(String, String, String, String)> {
    let (mut all, mut after) = (Vec::new(), "0-0".to_owned());
    loop {
        let page: Value = app
            .get(
                &format!("/api/v1/channels/{channel}/changes?after={after}&limit=1000"),
                token,
            )
            .await
            .json()
            .await
            .unwrap();
        let changes = page["changes"].as_array().unwrap();
        if changes.is_empty() {
            return all;
        }
        for c in changes {
            all.push(entry(c));
        }
        after = page["next"].as_str().unwrap().to_owned();
    }
}

fn entry(c: &Value) -> (String, String, String, String) {
    let s = |k: &str| c[k].as_str().unwrap().to_owned();
    (
        s("position"),
        s("message_id"),
        s("user_number"),
        s("status"),
    )
}

fn events_url(address: &str, channel: &str, users: &[&str]) -> String {
    let query: Vec<String> = users.iter().map(|u| format!("user_number={u}")).collect();
    format!(
        "{address}/api/v1/channels/{channel}/events?{}",
        query.join("&")
    )
}

async fn open(
    address: &str,
    channel: &str,
    users: &[&str],
    token: &str,
    after: Option<&str>,
) -> Sse {
    let mut request = reqwest::Client::new()
        .get(events_url(address, channel, users))
        .bearer_auth(token);
    if let Some(id) = after {
        request = request.header("Last-Event-ID", id);
    }
    Sse::start(request).await
}

/// Streams on two channels and two instances, unfiltered and filtered to one
/// or two user numbers, while writers post through both instances; one more
/// stream resumes from an old position while changes keep coming (its
/// catch-up ends where the shared flow takes over). Each gets exactly the
/// feed's changes it should, in order, none twice; each instance runs one
/// reader per watched channel, however many streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_get_exactly_their_changes_in_order_across_two_instances() {
    let app = spawn_app_with(|_| {}).await;
    app.add_channel(A, PASSWORD).await;
    app.add_channel(B, PASSWORD).await;
    let token = app.create_token("desk", &[]).await;
    let second = spawn_instance(&app, |_| {}).await;
    let addresses = [app.address.clone(), second.clone()];

    // (channel, filter) of every stream, opened before the first report, so
    // each starts at the beginning of the feed.
    let mut specs: Vec<(&str, Vec<&str>)> = Vec::new();
    for _ in &addresses {
        specs.push((A, vec![]));
        specs.push((A, vec![]));
        specs.push((B, vec![]));
        for u in USERS {
            specs.push((A, vec![u]));
        }
        specs.push((A, vec!["u1", "u3"]));
        specs.push((B, vec!["u2"]));
    }
    let mut streams = Vec::new();
    for (i, (channel, users)) in specs.iter().enumerate() {
        let address = &addresses[i % 2];
        streams.push(open(address, channel, users, &token, None).await);
    }
    assert_eq!(app.app.hub.watched_channels(), 2, "one reader per channel");

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let base = format!("{}/social/on/whatsapp/koomessage/report/", addresses[w % 2]);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for m in 0..20 {
                    let channel = if m % 3 == 0 { B } else { A };
                    let id = format!("w{w}-m{m}");
                    let user = USERS[(w + m) % USERS.len()];
                    for status in ["delivered", "read", "delivered"] {
                        let r = client
                            .post(format!("{base}{channel}"))
                            .header("Authorization", PASSWORD)
                            .json(&report_for(&id, user, status))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 200);
                    }
                }
            })
        })
        .collect();
    // Halfway through, a desktop resumes from the feed's start: it must
    // catch up and join the shared flow without a gap or a repeat.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut resumed = open(&second, A, &["u1"], &token, Some("0-0")).await;
    for w in writers {
        w.await.unwrap();
    }

    let feeds: HashMap<&str, _> = [
        (A, feed(&app, &token, A).await),
        (B, feed(&app, &token, B).await),
    ]
    .into_iter()
    .collect();
    assert_eq!(feeds[A].len() + feeds[B].len(), 8 * 20 * 2);
    let wanted = |channel: &str, users: &[&str]| -> Vec<(String, String, String, String)> {
        feeds[channel]
            .iter()
            .filter(|c| users.is_empty() || users.contains(&c.2.as_str()))
            .cloned()
            .collect()
    };
    let mut delivered = 0;
    for ((channel, users), stream) in specs
        .iter()
        .zip(streams.iter_mut())
        .chain([(&(A, vec!["u1"]), &mut resumed)])
    {
        let expected = wanted(channel, users);
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let Some((id, data)) = stream.next(Duration::from_secs(10)).await else {
                panic!(
                    "{channel} {users:?}: {} of {} changes",
                    got.len(),
                    expected.len()
                );
            };
            assert_eq!(id, data["position"]);
            got.push(entry(&data));
        }
        assert_eq!(got, expected, "{channel} {users:?}");
        assert!(
            stream.next(Duration::from_millis(200)).await.is_none(),
            "{channel} {users:?}: nothing more"
        );
        delivered += got.len();
    }
    println!(
        "{} streams on 2 channels and 2 instances (and one resumed from 0-0): {delivered} events, each stream exactly its changes in feed order",
        specs.len()
    );
}

/// A client that stops reading fills its buffer and is dropped from the
/// flow; the others keep their latency; once it reads again its stream ends
/// where it fell behind, and it resumes with Last-Event-ID without loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stops_reading_is_closed_and_slows_nobody() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A buffer above what one commit wave brings, so the fast stream keeps up.
    let app = spawn_app_with(|c| c.events.buffer = 2000).await;
    app.add_channel(A, PASSWORD).await;
    let token = app.create_token("desk", &[]).await;
    let mut fast = open(&app.address, A, &[], &token, None).await;

    // The slow client: a small receive buffer, and it reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let mut slow = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    slow.write_all(
        format!("GET /api/v1/channels/{A}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    // The answer's head comes once the stream has joined the flow; then it
    // reads nothing more.
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 256];
        let n = slow.read(&mut buf).await.unwrap();
        assert!(n > 0, "the slow stream was refused");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    let closed_before = slow_closures(&app).await;
    // More than the kernel buffers between the two hold (4 MiB on loopback):
    // big frames (long ids), written straight to the database a thousand at
    // a time, as a busy channel would commit them.
    let total = 12_000;
    let long = "x".repeat(120);
    let mut latencies = Vec::new();
    for batch in 0..(total / 1000) {
        let reports: Vec<_> = (0..1000)
            .map(|i| koostatus::db::reports::Incoming {
                channel: koostatus::domain::ChannelId::parse(A).unwrap(),
                report: koostatus::domain::Report::from_json(
                    report_for(&format!("{long}-{batch}-{i}"), &long, "delivered")
                        .to_string()
                        .as_bytes(),
                )
                .unwrap(),
                received_at: chrono::Utc::now(),
            })
            .collect();
        koostatus::db::reports::record_reports(&app.pool, &reports)
            .await
            .unwrap();
        // As the service's writers announce what they commit (V20).
        koostatus::db::changes::notify(&app.pool, &[A.to_owned()])
            .await
            .unwrap();
        let committed = Instant::now();
        // The fast stream keeps up: the whole wave arrives soon after commit.
        for _ in 0..1000 {
            fast.next(Duration::from_secs(5))
                .await
                .expect("the fast stream keeps up");
        }
        latencies.push(committed.elapsed());
    }
    assert!(
        slow_closures(&app).await > closed_before,
        "the slow stream was dropped from the flow"
    );

    // The slow client reads again: what was buffered, then the end.
    let mut received = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
            .await
            .expect("the stream ends rather than going quiet")
            .unwrap();
        received.extend_from_slice(&buf[..n]);
        // The end of a chunked response.
        if n == 0 || received.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&received);
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert!(
        ids.len() < total,
        "it did fall behind ({} events)",
        ids.len()
    );
    let last = ids.last().copied().unwrap_or("0-0");
    let mut resumed = open(&app.address, A, &[], &token, Some(last)).await;
    let rest = resumed.drain(Duration::from_millis(1500)).await;
    assert_eq!(ids.len() + rest.len(), total, "nothing lost, nothing twice");
    latencies.sort();
    println!(
        "slow stream dropped after {} of {total} events, resumed the other {}; fast stream: 1000 events after commit, max {:?}",
        ids.len(),
        rest.len(),
        latencies.last().unwrap()
    );
}

async fn slow_closures(app: &TestApp) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("koostatus_events_streams_closed_total{reason=\"slow\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Tickets: created with a token, accepted only by `/events`, with the
/// token's scope; they expire, and die with their token, as does an open
/// stream of that token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_open_streams_with_the_token_s_scope_and_die_with_it() {
    let app = spawn_app_with(|c| {
        c.auth.credential_ttl = Duration::from_secs(1);
        c.events.ticket_ttl = Duration::from_secs(2);
    })
    .await;
    app.add_channel(A, PASSWORD).await;
    app.add_channel(B, PASSWORD).await;
    let token = app.create_token("desk", &[A]).await;
    let ticket = |token: String| {
        let app = &app;
        async move {
            let r = app
                .client
                .post(format!("{}/api/v1/tickets", app.address))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let body: Value = r.json().await.unwrap();
            let expires =
                chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
            let left = expires
                .signed_duration_since(chrono::Utc::now())
                .num_milliseconds();
            assert!((1000..=2100).contains(&left), "{left} ms");
            body["ticket"].as_str().unwrap().to_owned()
        }
    };
    let t = ticket(token.clone()).await;
    assert!(t.starts_with("kstt_"));
    let events = |channel: &str, ticket: &str| {
        app.client.get(format!(
            "{}/api/v1/channels/{channel}/events?ticket={ticket}",
            app.address
        ))
    };
    let mut stream = Sse::start(events(A, &t)).await;
    // The token's scope: another channel is not there.
    assert_eq!(events(B, &t).send().await.unwrap().status(), 404);
    // Not a bearer token anywhere, nor a ticket elsewhere.
    assert_eq!(
        app.get(&format!("/api/v1/channels/{A}/messages"), &t)
            .await
            .status(),
        401
    );
    let r = app
        .client
        .get(format!(
            "{}/api/v1/channels/{A}/messages?ticket={t}",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 401), "{}", r.status());
    assert_eq!(
        events(A, "kstt_nonsense").send().await.unwrap().status(),
        401
    );
    assert_eq!(events(A, &token).send().await.unwrap().status(), 401);
    // Without any credential.
    let r = app
        .client
        .get(format!("{}/api/v1/channels/{A}/events", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        app.post_report(A, PASSWORD, &report_for("m1", "u1", "read"))
            .await
            .status(),
        200
    );
    let (_, data) = stream.next(Duration::from_secs(5)).await.expect("pushed");
    assert_eq!(data["message_id"], "m1");
    assert_eq!(data["user_number"], "u1");

    // Expiry: a ticket opens streams for ticket_ttl only; an open one goes on.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(events(A, &t).send().await.unwrap().status(), 401);
    assert_eq!(
        app.post_report(A, PASSWORD, &report_for("m2", "u1", "read"))
            .await
            .status(),
        200
    );
    assert!(stream.next(Duration::from_secs(5)).await.is_some());

    // Revoking the token: its fresh ticket stops working and its streams end
    // within credential_ttl.
    let fresh = ticket(token.clone()).await;
    let mut by_bearer = crate::sse::Sse::open(&app.address, A, &token, None).await;
    assert!(
        koostatus::db::tokens::revoke(&app.pool, "desk")
            .await
            .unwrap()
    );
    let revoked = Instant::now();
    assert!(stream.drain(Duration::from_secs(5)).await.is_empty());
    assert!(stream.ended, "the ticket's stream ended");
    by_bearer.drain(Duration::from_secs(5)).await;
    assert!(by_bearer.ended, "the token's stream ended");
    assert!(
        revoked.elapsed() < Duration::from_secs(4),
        "{:?}",
        revoked.elapsed()
    );
    assert_eq!(events(A, &fresh).send().await.unwrap().status(), 401);
    println!(
        "revoked token: its streams ended and its ticket refused {:?} later",
        revoked.elapsed()
    );
}

/// Filters are validated: up to 100 user numbers, none empty.
#[tokio::test]
async fn bad_filters_get_400() {
    let app = spawn_app_with(|_| {}).await;
    app.add_channel(A, PASSWORD).await;
    let token = app.create_token("desk", &[]).await;
    let many: Vec<String> = (0..101).map(|i| format!("user_number={i}")).collect();
    for query in [
        many.join("&"),
        "user_number=".into(),
        "after=x".into(),
        "colour=red".into(),
    ] {
        let r = app
            .get(&format!("/api/v1/channels/{A}/events?{query}"), &token)
            .await;
        crate::helpers::assert_error(
            r,
            400,
            if query.starts_with("colour") {
                "invalid_query"
            } else if query.starts_with("after") {
                "invalid_position"
            } else {
                "invalid_user_number"
            },
        )
        .await;
    }
}

/// CORS for the read API: preflight and real answers (errors too) for an
/// allowed origin, nothing for others, and never on the webhook or metrics.
#[tokio::test]
async fn cors_answers_allowed_origins_on_the_read_api_only() {
    const DESK: &str = "https://desk.example.com";
    let app = spawn_app_with(|c| c.cors.allowed_origins = vec![DESK.into()]).await;
    app.add_channel(A, PASSWORD).await;
    let token = app.create_token("desk", &[]).await;
    let url = |path: &str| format!("{}{path}", app.address);
    let preflight = |path: &str, origin: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, url(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header(
                "Access-Control-Request-Headers",
                "authorization, last-event-id",
            )
            .send()
    };
    let acao = |r: &reqwest::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    for path in [
        format!("/api/v1/channels/{A}/messages/m1"),
        format!("/api/v1/channels/{A}/events"),
        "/api/v1/tickets".into(),
    ] {
        let r = preflight(&path, DESK).await.unwrap();
        assert_eq!(r.status(), 204, "{path}");
        assert_eq!(acao(&r).as_deref(), Some(DESK));
        let h = |n: &str| r.headers()[n].to_str().unwrap().to_lowercase();
        assert!(h("access-control-allow-methods").contains("get"));
        for header in ["authorization", "content-type", "last-event-id"] {
            assert!(
                h("access-control-allow-headers").contains(header),
                "{header}"
            );
        }
        assert_eq!(h("access-control-max-age"), "3600");
        let r = preflight(&path, "https://evil.example.com").await.unwrap();
        assert_eq!(acao(&r), None, "{path}");
    }
    let get = |path: String, origin: &'static str, token: &str| {
        app.client
            .get(url(&path))
            .header("Origin", origin)
            .bearer_auth(token)
            .send()
    };
    // Real answers: a 404, a 401 and a 200.
    for (path, token, status) in [
        (
            format!("/api/v1/channels/{A}/messages/m1"),
            token.as_str(),
            404,
        ),
        (format!("/api/v1/channels/{A}/messages"), "kst_wrong", 401),
        (
            format!("/api/v1/channels/{A}/messages"),
            token.as_str(),
            200,
        ),
        ("/api/v1/no-such-route".into(), token.as_str(), 404),
    ] {
        let r = get(path.clone(), DESK, token).await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(acao(&r).as_deref(), Some(DESK), "{path}");
        assert!(
            r.headers()
                .get_all("vary")
                .iter()
                .any(|v| v.to_str().unwrap().contains("Origin")),
            "{path}"
        );
        let r = get(path.clone(), "https://evil.example.com", token)
            .await
            .unwrap();
        assert_eq!(r.status(), status, "served, without CORS: {path}");
        assert_eq!(acao(&r), None);
    }
    // Never on the webhook or /metrics.
    let hook = "/social/on/whatsapp/koomessage/report/alpha";
    let r = preflight(hook, DESK).await.unwrap();
    assert_eq!(acao(&r), None);
    assert_ne!(r.status(), 204);
    let r = app
        .client
        .post(url(hook))
        .header("Origin", DESK)
        .header("Authorization", PASSWORD)
        .json(&report_for("m1", "u1", "read"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(acao(&r), None);
    let r = app
        .client
        .get(url("/metrics"))
        .header("Origin", DESK)
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&r), None);

    // Without allowed origins (the default), no CORS headers at all.
    let plain = spawn_app_with(|_| {}).await;
    let token = plain.create_token("desk", &[]).await;
    let r = plain
        .client
        .get(format!("{}/api/v1/channels/{A}/messages", plain.address))
        .header("Origin", DESK)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(acao(&r), None);
}

/// A transaction that wrote in another database of the cluster and stays
/// open holds nobody back: only this database's transactions bound the feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writing_transaction_in_another_database_does_not_hold_the_feed_back() {
    let app = spawn_app_with(|_| {}).await;
    app.add_channel(A, PASSWORD).await;
    let token = app.create_token("desk", &[]).await;
    let mut stream = open(&app.address, A, &[], &token, None).await;

    let elsewhere = empty_database().await;
    let other = elsewhere.pool().await;
    let mut long = other.begin().await.unwrap();
    sqlx::query("create table held (a int)")
        .execute(&mut *long)
        .await
        .unwrap();
    sqlx::query("insert into held values (1)")
        .execute(&mut *long)
        .await
        .unwrap();
    let xid: i64 = sqlx::query_scalar("select pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *long)
        .await
        .unwrap();

    let sent = Instant::now();
    assert_eq!(
        app.post_report(A, PASSWORD, &report_for("m1", "u1", "read"))
            .await
            .status(),
        200
    );
    let (position, data) = stream
        .next(Duration::from_secs(3))
        .await
        .expect("not held back");
    let pushed = sent.elapsed();
    assert_eq!(data["message_id"], "m1");
    let listed = feed(&app, &token, A).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, position);
    // The other transaction really was older and still running.
    let (x, _) = position.split_once('-').unwrap();
    assert!(x.parse::<i64>().unwrap() > xid);
    long.rollback().await.unwrap();
    println!("a change passed a writing transaction of another database in {pushed:?}");
}

/// A read that finds some changes while a later one is held back by an
/// older running transaction: when that transaction ends without notifying
/// anybody (it wrote to another channel, or wrote no change), the held-back
/// change still arrives at once, not when the next report or the reader's
/// idle timer (10 s) comes.
#[tokio::test]
async fn a_change_held_back_by_a_silent_transaction_arrives_when_it_ends() {
    let app = spawn_app_with(|_| {}).await;
    app.add_channel(A, PASSWORD).await;
    let token = app.create_token("desk", &[]).await;
    let mut stream = open(&app.address, A, &[], &token, None).await;

    let held = HeldBack::start(&app.pool).await;
    let late = report_for("late", "u1", "read");
    assert_eq!(app.post_report(A, PASSWORD, &late).await.status(), 200);
    // The reader has seen the late change's notification, found it held
    // back, and looks again while it waits; the early change's own
    // notification then wakes the read that finds it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let holder = held.commit_early(A, "early").await;
    let (_, data) = stream.next(Duration::from_secs(3)).await.expect("early");
    assert_eq!(data["message_id"], "early");
    assert!(
        stream.next(Duration::from_millis(300)).await.is_none(),
        "the late change waits for the holder"
    );

    let released = Instant::now();
    holder.release().await;
    let (_, data) = stream
        .next(Duration::from_secs(2))
        .await
        .expect("the late change within 2 s of the holder's end");
    assert_eq!(data["message_id"], "late");
    println!(
        "a change held back by a silent transaction arrived {:?} after it ended",
        released.elapsed()
    );
}

/// A desktop that was just written to has its next event held for up to
/// 150 ms (fewer, fuller writes); when the channel then falls quiet, the
/// held event still goes out without another report (not at the next
/// report or the reader's 10 s idle timer).
#[tokio::test]
async fn a_held_event_goes_out_when_the_channel_falls_quiet() {
    let app = spawn_app_with(|_| {}).await;
    app.add_channel(A, PASSWORD).await;
    let token = app.create_token("desk", &[]).await;
    let mut stream = open(&app.address, A, &["u1"], &token, None).await;
    let first = report_for("first", "u1", "delivered");
    assert_eq!(app.post_report(A, PASSWORD, &first).await.status(), 200);
    let (_, data) = stream.next(Duration::from_secs(3)).await.expect("first");
    assert_eq!(data["message_id"], "first");

    // Right after the stream's write: this one is held.
    let posted = Instant::now();
    let second = report_for("second", "u1", "delivered");
    assert_eq!(app.post_report(A, PASSWORD, &second).await.status(), 200);
    let (_, data) = stream
        .next(Duration::from_secs(2))
        .await
        .expect("the held event within 2 s");
    assert_eq!(data["message_id"], "second");
    println!(
        "a held event arrived {:?} after its report",
        posted.elapsed()
    );
}
