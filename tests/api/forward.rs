//! Forwarding (SPEC §11): a receiver started by the test gets every change
//! of a channel, in order, signed, through failures, crashes, a second
//! instance taking over, replays and the operator's commands.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use koostatus::config::Config;
use sqlx::PgPool;

use crate::helpers::receiver::{Answer, CLI_ENV, KEY, Receiver};
use crate::helpers::*;

/// The receiver is on 127.0.0.1: private targets allowed, short timeout.
fn forwarding(config: &mut Config) {
    config.forward.secret_key = Some(KEY.into());
    config.forward.allow_private_targets = true;
    config.forward.timeout = Duration::from_secs(2);
}

/// `forward add` through the CLI; the printed secret.
fn subscribe(db_url: &str, name: &str, channel: &str, url: &str, extra: &[&str]) -> String {
    let mut args = vec!["forward", "add", name, "--channel", channel, "--url", url];
    args.extend(extra);
    let out = run_cli_with(db_url, &args, "", CLI_ENV);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() >= 6 + 32,
        "{secret}"
    );
    assert!(stderr.contains("cannot be shown again"), "{stderr}");
    secret
}

fn cli(db_url: &str, args: &[&str]) -> (bool, String) {
    let out = run_cli_with(db_url, args, "", CLI_ENV);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The channel's feed, positions in order.
async fn feed(pool: &PgPool, channel: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select xid::text || '-' || seq from message_changes where channel_id = $1 order by xid, seq",
    )
    .bind(channel)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn send_reports(client: &reqwest::Client, webhook: &str, ids: std::ops::Range<usize>) {
    for i in ids {
        let response = client
            .post(webhook)
            .header("Authorization", PASSWORD)
            .json(&report(&format!("m{i}"), "delivered"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

/// Every request verifies, and at most one was in flight at a time.
fn assert_signed_and_serial(receiver: &Receiver, secret: &str) {
    for r in receiver.requests() {
        assert!(r.verifies(secret), "signature of {}", r.id());
        assert_eq!(r.headers["content-type"], "application/json");
    }
    assert_eq!(receiver.most_in_flight(), 1, "deliveries overlapped");
}

/// As [`assert_signed_and_serial`], and a change sent twice was sent under
/// one webhook-id (no replay in the test).
fn assert_at_least_once_semantics(receiver: &Receiver, secret: &str) {
    assert_signed_and_serial(receiver, secret);
    let mut id_of: HashMap<String, String> = HashMap::new();
    for r in receiver.requests() {
        for p in r.positions() {
            let first = id_of.entry(p.clone()).or_insert_with(|| r.id().to_owned());
            assert_eq!(first, r.id(), "change {p} repeated under another id");
        }
    }
}

#[tokio::test]
async fn every_change_arrives_in_order_through_errors_timeouts_and_closed_connections() {
    let receiver = Receiver::start([
        Answer::Status(500),
        Answer::Hang,
        Answer::Close,
        Answer::Huge,
    ])
    .await;
    let app = spawn_app_with(forwarding).await;
    app.add_channel("ch1", PASSWORD).await;
    let secret = subscribe(&app.db.url(), "crm-errors", "ch1", &receiver.url, &[]);
    send_reports(&app.client, &app.webhook_url("ch1"), 0..20).await;
    for i in 0..10 {
        let response = app
            .post_report("ch1", PASSWORD, &report(&format!("m{i}"), "read"))
            .await;
        assert_eq!(response.status(), 200);
    }
    let feed = feed(&app.pool, "ch1").await;
    assert_eq!(feed.len(), 30);
    receiver.wait_accepted(30, Duration::from_secs(60)).await;
    let requests = receiver.requests();
    // 500, no answer, connection closed, then a 2xx whose 100 MiB answer is
    // not read: one delivery, attempted four times under one id.
    assert!(
        requests[..4]
            .iter()
            .all(|r| r.id() == requests[0].id() && r.body == requests[0].body),
        "{requests:?}"
    );
    assert!(requests[4..].iter().all(|r| r.id() != requests[0].id()));
    assert_eq!(receiver.accepted_positions(), feed, "in order, none twice");
    assert_at_least_once_semantics(&receiver, &secret);
    let first = requests[0].json();
    assert_eq!(first["channel_id"], "ch1");
    let change = &first["changes"][0];
    assert_eq!(change["message_id"], "m0");
    assert_eq!(change["user_number"], "86187xxxx5632");
    assert_eq!(change["status"], "delivered");
    assert!(change["changed_at"].as_str().unwrap().ends_with('Z'));
    let timestamp: i64 = requests[0].headers["webhook-timestamp"].parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 120);

    // The lag gauge reads 0 once the task has looked and found nothing more.
    let scrape = || async {
        let url = format!("{}/metrics", app.address);
        app.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    wait_until("lag 0", Duration::from_secs(5), || async {
        scrape()
            .await
            .contains("koostatus_forward_lag_changes{subscription=\"crm-errors\"} 0")
    })
    .await;
    let metrics = scrape().await;
    let value = |name: &str, label: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(name)
                    && l.contains("subscription=\"crm-errors\"")
                    && l.contains(label)
            })
            .unwrap_or_else(|| panic!("{name} {label} in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    for outcome in ["rejected", "timeout", "unreachable"] {
        let label = format!("outcome=\"{outcome}\"");
        assert_eq!(
            value("koostatus_forward_deliveries_total", &label),
            1.0,
            "{outcome}"
        );
    }
    assert!(
        value(
            "koostatus_forward_deliveries_total",
            "outcome=\"delivered\""
        ) >= 1.0
    );
    assert_eq!(value("koostatus_forward_changes_total", ""), 30.0);
    assert_eq!(value("koostatus_forward_lag_changes", ""), 0.0);
    assert_eq!(value("koostatus_forward_failed_attempts", ""), 0.0);

    let (ok, list) = cli(&app.db.url(), &["forward", "list"]);
    assert!(ok, "{list}");
    let line = list.lines().find(|l| l.starts_with("crm-errors ")).unwrap();
    assert!(
        line.contains(" active ") && line.contains("0 changes"),
        "{list}"
    );
    assert!(line.contains(&feed[29]), "position shown: {list}");
}

#[tokio::test]
async fn a_killed_instance_loses_nothing_and_repeats_only_under_the_same_id() {
    let db = database_with_channel("ch1", PASSWORD).await;
    let pool = db.pool().await;
    let receiver = Receiver::start([Answer::Hang]).await;
    let env = [CLI_ENV, &[("KOOSTATUS_FORWARD__TIMEOUT", "3s")]].concat();
    let client = reqwest::Client::new();
    let serve = || {
        let port = free_port();
        (port, spawn_serve(&db.url(), port, &env, Stdio::null()))
    };
    let webhook =
        |port: u16| format!("http://127.0.0.1:{port}/social/on/whatsapp/koomessage/report/ch1");
    let kill = |mut instance: KillOnDrop| {
        let mut child = instance.0.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    };
    // 250 changes, then a subscription from the start: the first delivery
    // is a full one (100 changes, nothing written before it is sent), and
    // the instance dies while it waits for the answer.
    let (port, first) = serve();
    wait_ready(port).await;
    send_reports(&client, &webhook(port), 0..250).await;
    let secret = subscribe(&db.url(), "crm", "ch1", &receiver.url, &["--from-start"]);
    wait_until("a delivery in flight", Duration::from_secs(20), || async {
        !receiver.requests().is_empty()
    })
    .await;
    kill(first);
    let full = receiver.requests()[0].clone();
    assert_eq!(full.positions().len(), 100);

    let (port, second) = serve();
    wait_ready(port).await;
    receiver.wait_accepted(250, Duration::from_secs(40)).await;
    let again = receiver.requests()[1].clone();
    assert!(again.accepted());
    assert_eq!(
        again.id(),
        full.id(),
        "the full delivery is sent again under its id"
    );
    assert_eq!(again.body, full.body);

    // A short delivery (fewer than 100 changes, recorded before it is
    // sent) in flight when the next instance dies.
    receiver.script([Answer::Hang]);
    let sent = receiver.requests().len();
    send_reports(&client, &webhook(port), 250..255).await;
    wait_until(
        "a short delivery in flight",
        Duration::from_secs(20),
        || async { receiver.requests().len() > sent },
    )
    .await;
    kill(second);
    let short = receiver.requests()[sent].clone();
    assert!((1..100).contains(&short.positions().len()));
    let (port, _third) = serve();
    wait_ready(port).await;
    receiver.wait_accepted(255, Duration::from_secs(40)).await;
    let again = receiver.requests()[sent + 1].clone();
    assert_eq!(
        again.id(),
        short.id(),
        "the short delivery is sent again under its id"
    );
    assert_eq!(again.body, short.body);

    assert_eq!(receiver.delivered_positions(), feed(&pool, "ch1").await);
    assert_at_least_once_semantics(&receiver, &secret);
}

#[tokio::test]
async fn one_instance_delivers_and_another_takes_over_within_30_seconds() {
    let db = database_with_channel("ch1", PASSWORD).await;
    let receiver = Receiver::start([]).await;
    let secret = subscribe(&db.url(), "crm", "ch1", &receiver.url, &[]);
    // Default forward.timeout: the lease and take-over as in production.
    let client = reqwest::Client::new();
    let pool = db.pool().await;
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = spawn_serve(&db.url(), port_a, CLI_ENV, Stdio::null());
    wait_ready(port_a).await;
    let webhook =
        |port: u16| format!("http://127.0.0.1:{port}/social/on/whatsapp/koomessage/report/ch1");
    send_reports(&client, &webhook(port_a), 0..5).await;
    receiver.wait_accepted(5, Duration::from_secs(20)).await;
    let holder = || async {
        sqlx::query_scalar::<_, Option<String>>(
            "select lease_holder from forward_subscriptions where name = 'crm'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let holder_a = holder().await.unwrap();

    let _b = spawn_serve(&db.url(), port_b, CLI_ENV, Stdio::null());
    wait_ready(port_b).await;
    send_reports(&client, &webhook(port_b), 5..10).await;
    receiver.wait_accepted(10, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(6)).await; // B looked for leases at least once
    send_reports(&client, &webhook(port_b), 10..15).await;
    receiver.wait_accepted(15, Duration::from_secs(20)).await;
    assert_eq!(holder().await.unwrap(), holder_a, "A still delivers alone");

    a.0.as_mut().unwrap().kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    send_reports(&client, &webhook(port_b), 15..20).await;
    receiver.wait_accepted(20, Duration::from_secs(40)).await;
    let took_over = killed.elapsed();
    println!("take-over after SIGKILL: {took_over:?}");
    assert!(took_over <= Duration::from_secs(30), "{took_over:?}");
    assert_ne!(holder().await.unwrap(), holder_a);
    assert_eq!(receiver.delivered_positions(), feed(&pool, "ch1").await);
    assert_at_least_once_semantics(&receiver, &secret);
}

#[tokio::test]
async fn replay_disable_enable_and_remove() {
    let receiver = Receiver::start([]).await;
    let app = spawn_app_with(|c| {
        forwarding(c);
        c.forward.timeout = Duration::from_secs(1);
    })
    .await;
    app.add_channel("ch1", PASSWORD).await;
    let url = app.db.url();
    send_reports(&app.client, &app.webhook_url("ch1"), 0..5).await;
    // From the start: what came before the subscription too.
    let secret = subscribe(&url, "crm", "ch1", &receiver.url, &["--from-start"]);
    receiver.wait_accepted(5, Duration::from_secs(20)).await;
    send_reports(&app.client, &app.webhook_url("ch1"), 5..6).await;
    receiver.wait_accepted(6, Duration::from_secs(20)).await;
    let feed6 = feed(&app.pool, "ch1").await;

    // Replay after the third change: the last three again, under new ids.
    let ids_before: HashSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.id().to_owned())
        .collect();
    let (ok, said) = cli(&url, &["forward", "replay", "crm", "--from", &feed6[2]]);
    assert!(ok, "{said}");
    receiver.wait_accepted(9, Duration::from_secs(20)).await;
    assert_eq!(receiver.accepted_positions()[6..], feed6[3..]);
    assert!(
        receiver
            .requests()
            .iter()
            .skip(ids_before.len())
            .all(|r| !ids_before.contains(r.id())),
        "a replay is sent under new ids"
    );
    let (ok, said) = cli(&url, &["forward", "replay", "crm", "--from", "999999999-0"]);
    assert!(!ok && said.contains("moves back only"), "{said}");
    let (ok, said) = cli(&url, &["forward", "replay", "crm", "--from", "yesterday"]);
    assert!(!ok && said.contains("is not a position"), "{said}");
    let (ok, said) = cli(&url, &["forward", "replay", "nobody", "--from", "0-0"]);
    assert!(!ok && said.contains("no subscription"), "{said}");

    // Disabled: nothing goes out, the position stays; enabled: it resumes.
    let (ok, said) = cli(&url, &["forward", "disable", "crm"]);
    assert!(ok, "{said}");
    send_reports(&app.client, &app.webhook_url("ch1"), 6..8).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.accepted_positions().len(),
        9,
        "nothing while disabled"
    );
    let (_, list) = cli(&url, &["forward", "list"]);
    assert!(list.contains("disabled: by the operator at "), "{list}");
    assert!(list.contains("2 changes"), "{list}");
    let (ok, said) = cli(&url, &["forward", "enable", "crm"]);
    assert!(ok, "{said}");
    receiver.wait_accepted(11, Duration::from_secs(20)).await;
    assert_eq!(
        receiver.accepted_positions()[9..],
        feed(&app.pool, "ch1").await[6..]
    );

    // Removed while a delivery hangs: that attempt is its last.
    receiver.script([Answer::Hang]);
    let sent = receiver.requests().len();
    send_reports(&app.client, &app.webhook_url("ch1"), 8..9).await;
    wait_until("the hanging delivery", Duration::from_secs(10), || async {
        receiver.requests().len() > sent
    })
    .await;
    let (ok, said) = cli(&url, &["forward", "remove", "crm"]);
    assert!(ok, "{said}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.requests().len(), sent + 1, "nothing after remove");
    let (_, list) = cli(&url, &["forward", "list"]);
    assert!(!list.contains("crm"), "{list}");
    assert_signed_and_serial(&receiver, &secret);
}

#[tokio::test]
async fn private_targets_are_refused_when_added_and_at_connect() {
    let receiver = Receiver::start([]).await;
    let app = spawn_app_with(|c| {
        forwarding(c);
        c.forward.allow_private_targets = false;
    })
    .await;
    app.add_channel("ch1", PASSWORD).await;
    let url = app.db.url();
    let strict = [("KOOSTATUS_FORWARD__SECRET_KEY", KEY)];
    for (target, why) in [
        ("http://127.0.0.1:9/hook", "loopback, private"),
        ("http://localhost:9/hook", "loopback, private"),
        ("http://10.1.2.3/hook", "loopback, private"),
        ("http://169.254.169.254/latest", "loopback, private"),
        ("ftp://example.com/", "not an http"),
    ] {
        let out = run_cli_with(
            &url,
            &["forward", "add", "x", "--channel", "ch1", "--url", target],
            "",
            &strict,
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains(why),
            "{target}: {said}"
        );
        assert!(out.stdout.is_empty());
    }
    // Without the key nothing can be kept encrypted.
    let out = run_cli(
        &url,
        &[
            "forward",
            "add",
            "x",
            "--channel",
            "ch1",
            "--url",
            "https://example.com/",
        ],
        "",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Set forward.secret_key"));

    // Added where private targets were allowed, delivered by an instance
    // where they are not: refused at connect, by name and by address.
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    subscribe(
        &url,
        "by-name",
        "ch1",
        &format!("http://localhost:{port}/hook"),
        &[],
    );
    subscribe(&url, "by-address", "ch1", &receiver.url, &[]);
    send_reports(&app.client, &app.webhook_url("ch1"), 0..1).await;
    wait_until("both refused", Duration::from_secs(20), || async {
        let (_, list) = cli(&url, &["forward", "list"]);
        list.lines()
            .filter(|l| l.contains("retrying since"))
            .count()
            == 2
    })
    .await;
    let (_, list) = cli(&url, &["forward", "list"]);
    assert!(
        list.contains("localhost resolves only to loopback"),
        "{list}"
    );
    assert!(list.contains("127.0.0.1 is a loopback"), "{list}");
    assert!(
        receiver.requests().is_empty(),
        "nothing reached the receiver"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let receiver = Receiver::start([Answer::Redirect("/elsewhere")]).await;
    let app = spawn_app_with(forwarding).await;
    app.add_channel("ch1", PASSWORD).await;
    let url = app.db.url();
    let secret = subscribe(&url, "crm", "ch1", &receiver.url, &[]);
    send_reports(&app.client, &app.webhook_url("ch1"), 0..1).await;
    receiver.wait_accepted(1, Duration::from_secs(20)).await;
    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        2,
        "the redirect, then the retry: {requests:?}"
    );
    assert!(
        requests.iter().all(|r| r.path == "/hooks/koo"),
        "{requests:?}"
    );
    assert_eq!(requests[0].id(), requests[1].id());
    assert_at_least_once_semantics(&receiver, &secret);
}

#[tokio::test]
async fn a_subscription_failing_for_disable_after_is_disabled_until_enabled() {
    let receiver = Receiver::start(std::iter::repeat_n(Answer::Status(503), 50)).await;
    let app = spawn_app_with(|c| {
        forwarding(c);
        c.forward.timeout = Duration::from_secs(1);
        c.forward.disable_after = Duration::from_secs(2);
    })
    .await;
    app.add_channel("ch1", PASSWORD).await;
    let url = app.db.url();
    let secret = subscribe(&url, "crm", "ch1", &receiver.url, &[]);
    send_reports(&app.client, &app.webhook_url("ch1"), 0..3).await;
    wait_until("disabled", Duration::from_secs(30), || async {
        cli(&url, &["forward", "list"])
            .1
            .contains("disabled: failing since ")
    })
    .await;
    let (_, list) = cli(&url, &["forward", "list"]);
    assert!(list.contains("HTTP 503"), "{list}");
    let attempts = receiver.requests().len();
    assert!(attempts >= 2, "retried before giving up: {attempts}");
    // Exponential backoff from 1 s: a handful of attempts in 2 s, not more.
    assert!(attempts <= 5, "{attempts} attempts");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.requests().len(),
        attempts,
        "nothing while disabled"
    );

    receiver.clear_script();
    let (ok, said) = cli(&url, &["forward", "enable", "crm"]);
    assert!(ok, "{said}");
    receiver.wait_accepted(3, Duration::from_secs(20)).await;
    // The delivery that failed is sent again under its id. (Not "every
    // request under one id": the first delivery may have been formed
    // before the last two reports committed.)
    assert_at_least_once_semantics(&receiver, &secret);
    let (_, list) = cli(&url, &["forward", "list"]);
    assert!(list.contains(" active "), "{list}");
}

/// A receiver whose certificate no public authority signed (openssl
/// s_server, self-signed): the TLS handshake fails, nothing is delivered.
#[tokio::test]
async fn https_targets_must_present_a_certificate_that_verifies() {
    let dir = std::env::temp_dir().join(format!("koostatus-tls-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let port = free_port();
    let _server = KillOnDrop(Some(
        std::process::Command::new("openssl")
            .args([
                "s_server", "-quiet", "-www", "-cert", "cert.pem", "-key", "key.pem",
            ])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    wait_until("s_server listening", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let app = spawn_app_with(forwarding).await;
    app.add_channel("ch1", PASSWORD).await;
    let url = app.db.url();
    subscribe(
        &url,
        "tls",
        "ch1",
        &format!("https://127.0.0.1:{port}/hook"),
        &[],
    );
    send_reports(&app.client, &app.webhook_url("ch1"), 0..1).await;
    wait_until(
        "refused by the handshake",
        Duration::from_secs(20),
        || async { cli(&url, &["forward", "list"]).1.contains("retrying since") },
    )
    .await;
    let (_, list) = cli(&url, &["forward", "list"]);
    assert!(list.contains("invalid peer certificate"), "{list}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A read that finds a change while a later one is held back by an older
/// running transaction: when that transaction ends without notifying
/// anybody (it wrote to another channel, or wrote no change), the held-back
/// change is delivered at once, not when the next report or the lease's
/// renewal (5 s) comes.
#[tokio::test]
async fn a_change_held_back_by_a_silent_transaction_is_delivered_when_it_ends() {
    let receiver = Receiver::start([]).await;
    let app = spawn_app_with(forwarding).await;
    app.add_channel("ch1", PASSWORD).await;
    let secret = subscribe(&app.db.url(), "crm", "ch1", &receiver.url, &[]);
    let webhook = app.webhook_url("ch1");
    send_reports(&app.client, &webhook, 0..1).await;
    receiver.wait_accepted(1, Duration::from_secs(20)).await;

    let held = HeldBack::start(&app.pool).await;
    send_reports(&app.client, &webhook, 1..2).await;
    let holder = held.commit_early("ch1", "early").await;
    receiver.wait_accepted(2, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.accepted_positions().len(),
        2,
        "m1 waits for the holder"
    );

    let released = Instant::now();
    holder.release().await;
    receiver.wait_accepted(3, Duration::from_secs(2)).await;
    println!(
        "a change held back by a silent transaction was delivered {:?} after it ended",
        released.elapsed()
    );
    assert_eq!(receiver.delivered_positions(), feed(&app.pool, "ch1").await);
    assert_signed_and_serial(&receiver, &secret);
}
