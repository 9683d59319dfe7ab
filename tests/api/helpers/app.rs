//! The service in-process on a free port, over its real HTTP interface,
//! and what tests do with it.

use std::time::{Duration, Instant};

use koostatus::auth::password;
use koostatus::config::{Config, DatabaseUrl};
use koostatus::startup::Application;
use sqlx::PgPool;

use super::db::{TestDatabase, migrated_database};

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// A pool of the test's own, for looking at the database.
    pub pool: PgPool,
    pub app: actix_web::web::Data<koostatus::state::AppState>,
    handle: actix_web::dev::ServerHandle,
    pub db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the server and its background tasks; the handle's future
        // need not be awaited.
        self.app.shutdown.cancel();
        drop(self.handle.stop(false));
    }
}

pub fn test_config(db_url: &str) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.database.url = DatabaseUrl::parse(db_url).unwrap();
    config.server.workers = 2;
    // Tests write reports and registrations at fixed dates, which the real
    // clock has long passed: the service's own sweep (it runs as the service
    // starts and then every `sweep_interval`) would turn their `sent`
    // messages `unreported` at a moment no test chose, between two of its
    // reads (it did, in CI, in the statistics property test). Nothing is due
    // for ten years; a test of the sweep sets its own deadline.
    config.reports.unreported_after = std::time::Duration::from_secs(10 * 365 * 86_400);
    if let Ok(filter) = std::env::var("TEST_LOG") {
        config.log.filter = filter;
        koostatus::telemetry::init(&config.log);
    }
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let db = migrated_database().await;
    spawn_app_on(db, adjust).await
}

pub async fn spawn_app_on(db: TestDatabase, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(&db.url());
    adjust(&mut config);
    let app_pool = koostatus::db::pool(
        &config.database,
        koostatus::db::connect_options(&config.database),
    );
    let application = Application::build(config, app_pool).await.unwrap();
    let address = format!("http://127.0.0.1:{}", application.port());
    let handle = application.handle();
    let app = application.state.clone();
    tokio::spawn(application.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        pool: db.pool().await,
        app,
        handle,
        db,
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

pub fn report(message_id: &str, status: &str) -> serde_json::Value {
    serde_json::json!({
        "message_id": message_id,
        "sender": "86173xxxx4526",
        "user_number": "86187xxxx5632",
        "status": status,
    })
}

/// One history row, as the tests look at it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HistoryRow {
    pub status: String,
    pub receipt_count: i64,
    pub advanced: bool,
    pub extra: serde_json::Value,
}

impl TestApp {
    pub async fn add_channel(&self, id: &str, password: &str) {
        let hash = password::hash(&secrecy::SecretString::from(password));
        assert!(
            koostatus::db::channels::insert(&self.pool, id, "test", &hash)
                .await
                .unwrap()
        );
    }

    pub fn webhook_url(&self, channel: &str) -> String {
        format!(
            "{}/social/on/whatsapp/koomessage/report/{channel}",
            self.address
        )
    }

    pub async fn post_report(
        &self,
        channel: &str,
        password: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(self.webhook_url(channel))
            .header("Authorization", password)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Current status of a message, None when unknown.
    pub async fn status(&self, channel: &str, message_id: &str) -> Option<String> {
        sqlx::query_scalar(
            "select status::text from messages where channel_id = $1 and message_id = $2",
        )
        .bind(channel)
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
    }

    /// History in rank order, unranked words last.
    pub async fn history(&self, channel: &str, message_id: &str) -> Vec<HistoryRow> {
        sqlx::query_as(
            "select h.status, receipt_count, advanced, extra from message_entries h
             where channel_id = $1 and message_id = $2
             order by array_position(enum_range(null::message_status)::text[], h.status)
                          nulls last, h.status",
        )
        .bind(channel)
        .bind(message_id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Sends raw bytes on a new connection and returns everything answered
    /// until the server closes it or goes quiet.
    pub async fn raw(&self, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = self.address.rsplit(':').next().unwrap();
        let mut stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        // The server may answer and close before reading everything (413).
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Requests here end with the server closing the connection; the
        // timeout only guards against one that never answers, and must
        // allow a committed write on a busy machine.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    pub fn verifications(&self) -> u64 {
        self.app.credentials.verifications()
    }
}

/// Asserts an error answer: its status and the JSON body of SPEC §4.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/json")
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().expect("a message").to_owned();
    assert!(message.ends_with('.') && message.len() > 10, "{message}");
    message
}

/// Starts another instance of the service on the same database, as a second
/// node behind a load balancer would be. Returns the base of its webhook URL.
pub async fn spawn_second_instance(app: &TestApp) -> String {
    let address = spawn_instance(app, |_| {}).await;
    format!("{address}/social/on/whatsapp/koomessage/report/")
}

/// Another instance of the service on the app's database; its address.
pub async fn spawn_instance(app: &TestApp, adjust: impl FnOnce(&mut Config)) -> String {
    let mut config = test_config(&app.db.url());
    adjust(&mut config);
    let pool = koostatus::db::pool(
        &config.database,
        koostatus::db::connect_options(&config.database),
    );
    let application = Application::build(config, pool).await.unwrap();
    let address = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until_stopped());
    address
}

impl TestApp {
    /// Creates a read-API token; no channels means every channel.
    pub async fn create_token(&self, name: &str, channels: &[&str]) -> String {
        self.create_token_with(name, channels, false).await
    }

    /// A token that may also register messages (`token create --register`).
    pub async fn create_register_token(&self, name: &str, channels: &[&str]) -> String {
        self.create_token_with(name, channels, true).await
    }

    async fn create_token_with(&self, name: &str, channels: &[&str], register: bool) -> String {
        let (token, hash) = koostatus::auth::tokens::generate();
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let scope = (!channels.is_empty()).then_some(channels.as_slice());
        assert!(
            koostatus::db::tokens::insert(&self.pool, name, &hash, scope, register)
                .await
                .unwrap()
        );
        token
    }

    /// `POST /api/v1/channels/{channel}/messages` with `body`.
    pub async fn register(
        &self,
        channel: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/api/v1/channels/{channel}/messages",
                self.address
            ))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn lookup(&self, channel: &str, token: &str, body: String) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/api/v1/channels/{channel}/messages/lookup",
                self.address
            ))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

/// The string `field` of each object of the JSON array `items` (message
/// ids of a listing, statuses of a history), in order.
pub fn strings_of<'a>(items: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    let items = items.as_array().expect("a JSON array");
    items.iter().map(|i| i[field].as_str().unwrap()).collect()
}

/// Polls `check` every 20 ms until it holds: a wait for a state, not for a
/// time. Fails the test after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a query of one boolean (`select exists (…)`) until it is true.
pub async fn wait_until_sql(pool: &PgPool, what: &str, query: &'static str) {
    wait_until(what, Duration::from_secs(5), || async {
        (sqlx::query_scalar::<_, bool>(query).fetch_one(pool).await).unwrap()
    })
    .await;
}
