//! SPEC §12, in part: `serve` on a multi-host `database.url` follows the
//! primary by itself. Here the first host is a PostgreSQL cluster of the
//! test's own that is killed (no replication: that is the formation's
//! test); the service must move to the next host that accepts writes and
//! answer 200 again without a restart, 503 (never 200) meanwhile.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::helpers::certs;
use crate::helpers::receiver::{CLI_ENV, Receiver};
use crate::helpers::*;
use crate::sse::Sse;

/// A throwaway PostgreSQL cluster on its own port, run as `postgres`.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

/// The PostgreSQL server's programs: `pg_config --bindir`, else Debian's
/// place for them.
fn bindir() -> PathBuf {
    let configured = Command::new("pg_config").arg("--bindir").output().ok();
    if let Some(out) = configured.filter(|o| o.status.success()) {
        return PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL's programs");
    let newest = versions
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .max()
        .unwrap();
    newest.join("bin")
}

/// As the `postgres` user when running as root (PostgreSQL refuses root).
fn as_postgres(program: PathBuf, args: &[&str]) -> bool {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

impl Cluster {
    /// An empty directory of the `postgres` user (mode 700), and a free port.
    fn place() -> (PathBuf, u16) {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("koostatus-cluster-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chmod").arg("700").arg(&dir).status();
        let _ = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status();
        (dir, port)
    }

    fn start() -> Cluster {
        let (dir, port) = Cluster::place();
        let data = dir.to_str().unwrap();
        assert!(as_postgres(
            bindir().join("initdb"),
            &["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]
        ));
        Cluster::run(dir, port)
    }

    /// A hot standby streaming from `primary`.
    fn standby_of(primary: &Cluster) -> Cluster {
        let (dir, port) = Cluster::place();
        let data = dir.to_str().unwrap();
        let from = primary.port.to_string();
        assert!(as_postgres(
            bindir().join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &from,
                "-U",
                "postgres",
                "-D",
                data,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ]
        ));
        Cluster::run(dir, port)
    }

    /// A cluster that speaks TLS only (SPEC §14): the certificate
    /// `server.pem` of `certs` (for 127.0.0.1, signed by `ca.pem`), every
    /// TCP line `hostssl`, and `certuser` let in by a client certificate
    /// signed by `ca.pem`. It listens on 127.0.0.1 and 127.0.0.2.
    fn start_tls(certs: &std::path::Path) -> Cluster {
        let (dir, port) = Cluster::place();
        let data = dir.to_str().unwrap();
        assert!(as_postgres(
            bindir().join("initdb"),
            &["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]
        ));
        for file in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(certs.join(file), dir.join(file)).unwrap();
        }
        std::fs::write(
            dir.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all certuser 127.0.0.0/8 cert\n\
             hostssl all all 127.0.0.0/8 trust\n",
        )
        .unwrap();
        let conf = dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(
            "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\nssl_ca_file = 'ca.pem'\n",
        );
        std::fs::write(&conf, text).unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        let _ = Command::new("chmod")
            .arg("600")
            .arg(dir.join("server.key"))
            .status();
        Cluster::run_on(dir, port, "127.0.0.1,127.0.0.2")
    }

    fn run(dir: PathBuf, port: u16) -> Cluster {
        Cluster::run_on(dir, port, "127.0.0.1")
    }

    fn run_on(dir: PathBuf, port: u16, addresses: &str) -> Cluster {
        let data = dir.to_str().unwrap();
        let options = format!(
            "-p {port} -c listen_addresses={addresses} -c unix_socket_directories={data} -c shared_buffers=16MB -c fsync=off"
        );
        let log = format!("{data}/log");
        assert!(as_postgres(
            bindir().join("pg_ctl"),
            &["-D", data, "-l", &log, "-w", "-o", &options, "start"]
        ));
        Cluster { dir, port }
    }

    /// As a crash: no shutdown checkpoint, connections cut.
    fn kill(&self) {
        let data = self.dir.to_str().unwrap();
        as_postgres(
            bindir().join("pg_ctl"),
            &["-D", data, "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Channel ch1 added through `url`.
fn channel_on(url: &str) {
    let added = run_cli(
        url,
        &["channel", "add", "ch1", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success(), "{added:?}");
}

/// A callback to ch1 on the service at `port`: its status, 0 for no answer
/// within 10 s.
async fn post_report(port: u16, id: String) -> u16 {
    reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/social/on/whatsapp/koomessage/report/ch1"
        ))
        .header("Authorization", PASSWORD)
        .json(&report(&id, "delivered"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Posts reports `after-N` until one is answered 200 (within 20 s of
/// `since`, which names the event for the log), asserting 503 for every
/// one before it; the id of the report answered 200.
async fn answers_503_until_200(port: u16, since: &str) -> String {
    let started = Instant::now();
    let mut answers = Vec::new();
    loop {
        let id = format!("after-{}", answers.len() + 1);
        let status = post_report(port, id.clone()).await;
        answers.push(status);
        if status == 200 {
            println!("first 200 {:?} after {since}", started.elapsed());
            assert!(
                answers[..answers.len() - 1].iter().all(|&s| s == 503),
                "{answers:?}"
            );
            return id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no 200 within 20 s of {since}: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `sql` (a setting changed for the whole server) on `cluster`.
async fn configure(cluster: &Cluster, sql: &'static str) {
    use sqlx::{Connection, Executor};
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    conn.execute(sql).await.unwrap();
    let load_time = "select pg_conf_load_time()";
    let before: DateTime<Utc> = sqlx::query_scalar(load_time)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.execute("select pg_reload_conf()").await.unwrap();
    // pg_reload_conf only signals the server; the service's sessions take
    // the setting at their next statement once the server has read the file
    // and signalled them, which a new session's load time shows.
    wait_until(
        "the server read its settings again",
        Duration::from_secs(10),
        || async {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let now: DateTime<Utc> = sqlx::query_scalar(load_time)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            now > before
        },
    )
    .await;
    // Whether commits wait for a synchronous standby is not the sessions'
    // setting alone: the checkpointer publishes it to them once it has read
    // the file again itself, a moment later and with no sign to wait for.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The host `/readyz` says the service writes to.
async fn database_host(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let ready: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(ready["writable"], true, "{ready}");
    ready["database_host"].as_str().unwrap().to_owned()
}

/// `serve` on two hosts: first a PostgreSQL cluster of the test's own, then
/// the machine's server (its database made with channel ch1). serve creates
/// and migrates the database on the first host, where the channel is added
/// through the same URL; a first report is stored there.
struct TwoHosts {
    first: Cluster,
    second: TestDatabase,
    url: String,
    port: u16,
    _serve: KillOnDrop,
}

impl TwoHosts {
    async fn serve(env: &[(&str, &str)]) -> TwoHosts {
        let second = database_with_channel("ch1", PASSWORD).await;
        let first = Cluster::start();
        let url = format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:5432/{}",
            first.port, second.name
        );
        let port = free_port();
        let serve = spawn_serve(&url, port, env, Stdio::null());
        wait_ready(port).await;
        channel_on(&url);
        assert_eq!(post_report(port, "before".into()).await, 200);
        TwoHosts {
            first,
            second,
            url,
            port,
            _serve: serve,
        }
    }
}

#[tokio::test]
async fn serve_follows_the_primary_to_the_next_host_without_a_restart() {
    let TwoHosts {
        first,
        second,
        port,
        ..
    } = &TwoHosts::serve(&[]).await;
    let port = *port;
    assert_eq!(
        database_host(port).await,
        format!("127.0.0.1:{}", first.port)
    );

    first.kill();
    let acked = answers_503_until_200(port, "the kill").await;
    // The acknowledged report is on the host that now takes writes.
    let pool = second.pool().await;
    let stored: i64 = sqlx::query_scalar("select count(*) from messages where message_id = $1")
        .bind(acked)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    assert_eq!(database_host(port).await, "127.0.0.1:5432");
}

/// A standby first in `database.url` is skipped for writes; `read_url`
/// with both hosts reads from the standby (`/metrics` shows its delay,
/// which only a standby has).
#[tokio::test]
async fn writes_go_to_the_primary_and_reads_to_the_standby() {
    let primary = Cluster::start();
    let name = "koostatus_ha";
    let only_primary = format!("postgres://postgres@127.0.0.1:{}/{name}", primary.port);
    {
        // Creates and migrates the database, then the standby copies it.
        let port = free_port();
        let _serve = spawn_serve(&only_primary, port, &[], Stdio::null());
        wait_ready(port).await;
    }
    channel_on(&only_primary);
    let token = run_cli(&only_primary, &["token", "create", "--name", "desk"], "");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let standby = Cluster::standby_of(&primary);
    {
        // On the standby alone: up, but not ready, and /readyz says why.
        let only_standby = format!("postgres://postgres@127.0.0.1:{}/{name}", standby.port);
        let port = free_port();
        let env = [("KOOSTATUS_DATABASE__AUTO_MIGRATE", "false")];
        let _serve = spawn_serve(&only_standby, port, &env, Stdio::null());
        wait_until("serve answers", Duration::from_secs(10), || async {
            reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
                .await
                .is_ok()
        })
        .await;
        let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .unwrap();
        assert_eq!(ready.status(), 503);
        assert!(ready.headers().contains_key("retry-after"));
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(body["writable"], false, "{body}");
        assert_eq!(
            body["database_host"],
            format!("127.0.0.1:{}", standby.port),
            "{body}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("does not take writes"),
            "{body}"
        );
    }

    let both = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{name}",
        standby.port, primary.port
    );
    let port = free_port();
    let env = [("KOOSTATUS_DATABASE__READ_URL", both.as_str())];
    let _serve = spawn_serve(&both, port, &env, Stdio::null());
    wait_ready(port).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(
        database_host(port).await,
        format!("127.0.0.1:{}", primary.port)
    );
    let post = |id: &'static str| {
        client
            .post(format!("{base}/social/on/whatsapp/koomessage/report/ch1"))
            .header("Authorization", PASSWORD)
            .json(&report(id, "delivered"))
            .send()
    };
    assert_eq!(post("m1").await.unwrap().status(), 200);
    let get = || {
        client
            .get(format!("{base}/api/v1/channels/ch1/messages/m1"))
            .bearer_auth(&token)
            .send()
    };
    wait_until(
        "replicated to the standby",
        Duration::from_secs(10),
        || async { get().await.unwrap().status() == 200 },
    )
    .await;
    let metrics = reqwest::get(format!("{base}/metrics")).await;
    let metrics = metrics.unwrap().text().await.unwrap();
    let lag = metrics
        .lines()
        .find(|l| l.starts_with("koostatus_replica_lag_seconds "))
        .unwrap_or_else(|| panic!("replica lag in\n{metrics}"));
    let lag: f64 = lag.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((0.0..10.0).contains(&lag), "{lag}");

    // The primary gone, none to take over: callbacks get 503, promptly.
    primary.kill();
    let started = Instant::now();
    assert_eq!(post("m2").await.unwrap().status(), 503);
    println!("503 after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A primary whose commits wait for a synchronous standby that never
/// confirms (a failover under way): each callback gets 503 within the
/// deadline, and the waiting commits hold neither the writers nor their
/// connections, so once another host takes writes the service answers 200
/// there without a restart.
#[tokio::test]
async fn a_commit_waiting_for_a_standby_gets_503_and_holds_nothing() {
    let env = [("KOOSTATUS_DATABASE__STATEMENT_TIMEOUT", "1s")];
    let TwoHosts { first, port, .. } = &TwoHosts::serve(&env).await;
    let port = *port;

    // A standby that does not exist must confirm every commit from now on.
    configure(
        first,
        "alter system set synchronous_standby_names = 'nobody'",
    )
    .await;
    // More callbacks than writers, at once and then one by one: without a
    // deadline each writer would wait in its commit for good.
    let at_once: Vec<_> = (0..4)
        .map(|n| tokio::spawn(post_report(port, format!("waiting-{n}"))))
        .collect();
    let started = Instant::now();
    for answer in at_once {
        assert_eq!(answer.await.unwrap(), 503);
    }
    // The commit deadline is 1.5 s here; with the wait for a connection
    // and a batch, the answer comes within 4.5 s.
    println!("503 for waiting commits after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5));
    for n in 0..3 {
        assert_eq!(post_report(port, format!("still-{n}")).await, 503);
    }

    // Connections to the first host wait idle in the pool.
    let readyz = || reqwest::get(format!("http://127.0.0.1:{port}/readyz"));
    futures_util::future::join_all((0..12).map(|_| readyz())).await;
    // The first host stops taking writes; the second does.
    configure(first, "alter system set default_transaction_read_only = on").await;
    let switched = Instant::now();
    wait_until("the service moved", Duration::from_secs(20), || async {
        let ready: serde_json::Value = readyz().await.unwrap().json().await.unwrap();
        ready["database_host"] == "127.0.0.1:5432"
    })
    .await;
    println!("moved {:?} after the switch", switched.elapsed());
    // The idle connections to the first host, now read-only, are not
    // reused: every readiness check and the next callback run on the second.
    for _ in 0..30 {
        assert_eq!(database_host(port).await, "127.0.0.1:5432");
    }
    assert_eq!(post_report(port, "after".into()).await, 200);
}

/// A batch that fails for one report's data is written again a report at a
/// time, and those commits are bound by the same deadline: on a primary
/// whose commits wait for a standby that never confirms, the one writer
/// gives up instead of waiting in a commit for good, so once another host
/// takes writes the service answers 200 there without a restart.
#[tokio::test]
async fn reports_written_one_at_a_time_are_bound_by_the_commit_deadline_too() {
    let env = [
        ("KOOSTATUS_DATABASE__STATEMENT_TIMEOUT", "1s"),
        ("KOOSTATUS_INGEST__WRITERS", "1"),
        // Long enough for the four reports below to share one batch.
        ("KOOSTATUS_INGEST__BATCH_WAIT", "300ms"),
    ];
    let TwoHosts {
        first,
        second,
        port,
        ..
    } = &TwoHosts::serve(&env).await;
    let port = *port;
    // On the first host a report for message `poison` fails for its data,
    // and with it any batch that holds it.
    let poisoned = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        first.port, second.name
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&poisoned)
        .await
        .unwrap();
    sqlx::raw_sql(
        "create function poison() returns trigger language plpgsql as $$
         begin
           if new.message_id = 'poison' then raise exception 'a poisoned report'; end if;
           return new;
         end $$;
         create trigger poison before insert on messages
           for each row execute function poison();",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    configure(
        first,
        "alter system set synchronous_standby_names = 'nobody'",
    )
    .await;
    let together: Vec<_> = ["poison", "one", "two", "three"]
        .into_iter()
        .map(|id| tokio::spawn(post_report(port, id.into())))
        .collect();
    for answer in together {
        let status = answer.await.unwrap();
        assert!(status == 503 || status == 500, "{status}");
    }

    configure(first, "alter system set default_transaction_read_only = on").await;
    // The writer is free again: the next callbacks reach the second host.
    let id = answers_503_until_200(port, "the switch").await;
    let stored: bool =
        sqlx::query_scalar("select exists (select 1 from messages where message_id = $1)")
            .bind(&id)
            .fetch_one(&second.pool().await)
            .await
            .unwrap();
    assert!(stored, "{id} is on the second host");
}

/// After the move to the next host, live events (LISTEN) and forwarding
/// work there without a restart: the LISTEN connection and the forwarding
/// tasks connect through the pool that followed the primary.
#[tokio::test]
async fn live_events_and_forwarding_follow_the_primary() {
    let TwoHosts {
        first,
        second,
        url,
        port,
        ..
    } = &TwoHosts::serve(CLI_ENV).await;
    let port = *port;

    first.kill();
    let killed = Instant::now();
    wait_until(
        "a 200 on the next host",
        Duration::from_secs(20),
        || async { post_report(port, "moved".into()).await == 200 },
    )
    .await;
    assert_eq!(database_host(port).await, "127.0.0.1:5432");
    // The LISTEN connection comes back on the new host (it retries every
    // second, each attempt bounded by the acquire timeout; notifications in
    // between are lost, which costs latency, never a change).
    let pool = second.pool().await;
    wait_until(
        "LISTEN on the new host",
        Duration::from_secs(10),
        || async {
            sqlx::query_scalar::<_, bool>(
                "select exists (select 1 from pg_stat_activity
                            where datname = current_database() and query ilike 'listen%')",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        },
    )
    .await;
    println!(
        "LISTEN on the new host {:?} after the kill",
        killed.elapsed()
    );

    // Set up on the host now in use, through the same URL.
    let token = run_cli(url, &["token", "create", "--name", "desk"], "");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let receiver = Receiver::start([]).await;
    let added = run_cli_with(
        url,
        &[
            "forward",
            "add",
            "crm",
            "--channel",
            "ch1",
            "--url",
            &receiver.url,
        ],
        "",
        CLI_ENV,
    );
    assert!(added.status.success(), "{added:?}");
    let mut events = Sse::open(&format!("http://127.0.0.1:{port}"), "ch1", &token, None).await;

    let sent = Instant::now();
    assert_eq!(post_report(port, "live".into()).await, 200);
    // Without the notification the reader would look only after 10 s.
    let (_, event) = events.next(Duration::from_secs(3)).await.expect("an event");
    assert_eq!(event["message_id"], "live");
    println!("event after {:?}", sent.elapsed());
    // Claimed within forward's 5 s claim period, then delivered.
    receiver.wait_accepted(1, Duration::from_secs(15)).await;
    let delivered: Vec<String> = receiver
        .requests()
        .iter()
        .flat_map(|r| r.json()["changes"].as_array().unwrap().clone())
        .map(|c| c["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(delivered.contains(&"live".to_owned()), "{delivered:?}");
}

/// A CA, a server certificate for 127.0.0.1 it signed, a client
/// certificate for `certuser` it signed, and a CA nobody trusts.
fn database_certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("koostatus-pg-tls-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    for ca in ["ca", "other-ca"] {
        certs::make_ca(&dir, ca);
    }
    certs::make_signed(
        &dir,
        "server",
        "/CN=127.0.0.1",
        "ca",
        "subjectAltName=IP:127.0.0.1",
    );
    certs::make_signed(
        &dir,
        "client",
        "/CN=certuser",
        "ca",
        "extendedKeyUsage=clientAuth",
    );
    // The client's key is read by koostatus as root or as its own user.
    let _ = Command::new("chmod")
        .arg("600")
        .arg(dir.join("client.key"))
        .status();
    dir
}

/// SPEC §14: every sslmode as libpq means it, for sqlx's connections (a
/// command) and refinery's (migrate) alike; a client certificate when
/// asked; and `serve` on `verify-full` stores the seed request.
#[tokio::test]
async fn every_sslmode_behaves_as_libpq_does_and_serve_runs_over_verify_full() {
    let certs = database_certificates();
    let cluster = Cluster::start_tls(&certs);
    let port = cluster.port;
    let file = |name: &str| certs.join(name).display().to_string();
    let url = |host: &str, user: &str, query: &str| {
        format!("postgres://{user}@{host}:{port}/koostatus?{query}")
    };
    let works = |url: &str, args: &[&str]| {
        let out = run_cli(url, args, "");
        assert!(
            out.status.success(),
            "{url} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let refused = |url: &str, args: &[&str], says: &str| {
        let out = run_cli(url, args, "");
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert_eq!(out.status.code(), Some(1), "{url} {args:?} was let in");
        assert!(stderr.contains(says), "{url} {args:?}: {stderr}");
    };
    let ca = file("ca.pem");
    let full = url(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    // Creates the database and migrates over TLS (tokio-postgres), then
    // sqlx's connections.
    assert!(
        Command::new("psql")
            .args([
                &url("127.0.0.1", "postgres", "sslmode=require")
                    .replace("/koostatus?", "/postgres?"),
                "-qc",
                "create database koostatus"
            ])
            .status()
            .unwrap()
            .success()
    );
    works(&full, &["migrate"]);
    works(&full, &["channel", "list"]);
    // disable: the server takes TLS only.
    refused(
        &url("127.0.0.1", "postgres", "sslmode=disable"),
        &["channel", "list"],
        "no encryption",
    );
    refused(
        &url("127.0.0.1", "postgres", "sslmode=disable"),
        &["migrate"],
        "no encryption",
    );
    // require: encrypted, the certificate unchecked (a CA nobody trusts is fine).
    works(
        &url("127.0.0.1", "postgres", "sslmode=require"),
        &["channel", "list"],
    );
    works(
        &url("127.0.0.1", "postgres", "sslmode=prefer"),
        &["migrate"],
    );
    // verify-full: a host name the certificate does not name is refused,
    // verify-ca lets it in; a CA nobody trusts is refused by both.
    let other_host = |mode: &str, root: &str| {
        url(
            "127.0.0.2",
            "postgres",
            &format!("sslmode={mode}&sslrootcert={root}"),
        )
    };
    refused(
        &other_host("verify-full", &ca),
        &["channel", "list"],
        "does not name the host",
    );
    refused(
        &other_host("verify-full", &ca),
        &["migrate"],
        "does not name the host",
    );
    works(&other_host("verify-ca", &ca), &["channel", "list"]);
    works(&other_host("verify-ca", &ca), &["migrate"]);
    let untrusted = file("other-ca.pem");
    refused(
        &other_host("verify-ca", &untrusted),
        &["channel", "list"],
        "not signed by an authority of `sslrootcert`",
    );
    refused(
        &other_host("verify-ca", &untrusted),
        &["migrate"],
        "not signed by an authority of `sslrootcert`",
    );
    let full_untrusted = url(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={untrusted}"),
    );
    for args in [&["channel", "list"][..], &["migrate"]] {
        refused(
            &full_untrusted,
            args,
            "not signed by an authority of `sslrootcert`",
        );
    }
    // A client certificate: certuser gets in with it, not without.
    assert!(
        Command::new("psql")
            .args([
                &full.replace("/koostatus?", "/postgres?"),
                "-qc",
                "create role certuser login superuser"
            ])
            .status()
            .unwrap()
            .success()
    );
    let with_cert = url(
        "127.0.0.1",
        "certuser",
        &format!(
            "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
            file("client.pem"),
            file("client.key")
        ),
    );
    works(&with_cert, &["channel", "list"]);
    works(&with_cert, &["migrate"]);
    refused(
        &url(
            "127.0.0.1",
            "certuser",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        &["channel", "list"],
        "certificate",
    );

    // serve on verify-full: pool, LISTEN and probes over TLS.
    channel_on(&full);
    let http = free_port();
    let _server = spawn_serve(&full, http, &[], Stdio::null());
    wait_ready(http).await;
    assert_eq!(post_report(http, "over-tls".to_owned()).await, 200);
    let _ = std::fs::remove_dir_all(&certs);
}

/// SPEC §14 with §12: `serve` on a two-host URL with `sslmode=verify-full`
/// follows the primary from one TLS-only cluster to the next.
#[tokio::test]
async fn serve_follows_the_primary_over_verify_full_on_a_two_host_url() {
    let certs = database_certificates();
    let (first, second) = (Cluster::start_tls(&certs), Cluster::start_tls(&certs));
    let query = format!(
        "sslmode=verify-full&sslrootcert={}",
        certs.join("ca.pem").display()
    );
    let on = |ports: &str| format!("postgres://postgres@{ports}/koostatus?{query}");
    // The second host ready to take over: its database, schema and channel.
    let second_only = on(&format!("127.0.0.1:{}", second.port));
    assert!(
        Command::new("psql")
            .args([
                &second_only.replace("/koostatus?", "/postgres?"),
                "-qc",
                "create database koostatus"
            ])
            .status()
            .unwrap()
            .success()
    );
    assert!(run_cli(&second_only, &["migrate"], "").status.success());
    channel_on(&second_only);

    let both = on(&format!(
        "127.0.0.1:{},127.0.0.1:{}",
        first.port, second.port
    ));
    let port = free_port();
    let _serve = spawn_serve(&both, port, &[], Stdio::null());
    wait_ready(port).await;
    channel_on(&both);
    assert_eq!(post_report(port, "before".into()).await, 200);
    assert_eq!(
        database_host(port).await,
        format!("127.0.0.1:{}", first.port)
    );

    first.kill();
    let acked = answers_503_until_200(port, "the kill").await;
    assert_eq!(
        database_host(port).await,
        format!("127.0.0.1:{}", second.port)
    );
    let out = run_cli(&second_only, &["channel", "list"], "");
    assert!(out.status.success());
    let stored = Command::new("psql")
        .args([
            &second_only,
            "-Atc",
            &format!("select count(*) from messages where message_id = '{acked}'"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stored.stdout).trim(), "1");
    let _ = std::fs::remove_dir_all(&certs);
}

/// SPEC §14: `sslmode=prefer` falls back to plain text when the server
/// offers no TLS, and koostatus says so for a host that is not loopback
/// (here this machine's own network address); with `require` it refuses.
#[tokio::test]
async fn prefer_falling_back_to_plain_text_on_a_network_host_is_logged() {
    let addresses = Command::new("hostname").arg("-I").output().unwrap();
    let address = String::from_utf8_lossy(&addresses.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .expect("a non-loopback IPv4 address of this machine (hostname -I)")
        .to_owned();
    let (dir, port) = Cluster::place();
    let data = dir.to_str().unwrap();
    assert!(as_postgres(
        bindir().join("initdb"),
        &["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]
    ));
    // No TLS on this cluster (initdb's default), plain connections allowed.
    std::fs::write(
        dir.join("pg_hba.conf"),
        format!("local all all trust\nhost all all {address}/32 trust\n"),
    )
    .unwrap();
    let _cluster = Cluster::run_on(dir.clone(), port, &address);
    let url = |query: &str| format!("postgres://postgres@{address}:{port}/postgres{query}");
    let out = run_cli(&url(""), &["channel", "list"], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("connected without TLS").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{address}:{port}")), "{stderr}");
    let out = run_cli(&url("?sslmode=require"), &["channel", "list"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not support TLS"));
}
