//! Read-API benchmark: fills a database with 1,000,000 messages in one
//! channel, starts the service in-process, and prints p50/p99 latencies of a
//! single-message GET, a 1000-id lookup, and page 1 versus page 5,000 of the
//! listing (limit 100), then EXPLAIN of each query with a generic plan.
//!
//! Run: `cargo bench --bench read_api` (PostgreSQL at 127.0.0.1:5432).
//! It creates and finally drops the database `koostatus_bench_read`.

use std::time::Instant;

use koostatus::config::Config;
use koostatus::db::messages::Keyset;
use koostatus::startup::Application;
use sqlx::{Connection, Executor, PgConnection, Row};
use support::{measure, pct};

mod support;

const MESSAGES: i64 = 1_000_000;
const DB: &str = "koostatus_bench_read";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    support::on_scratch_database(DB, |url| async move { run(&url).await }).await
}

async fn run(url: &str) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.database.url = koostatus::config::DatabaseUrl::parse(url).map_err(anyhow::Error::msg)?;
    config.listen = "127.0.0.1:0".parse()?;
    koostatus::db::migrations::run(&config.database).await?;
    let mut conn = PgConnection::connect(url).await?;

    let started = Instant::now();
    conn.execute("insert into channels (id, password_hash) values ('bench', 'x')")
        .await?;
    // Messages 1 s apart in updated_at; a third each failed, delivered, read.
    conn.execute(sqlx::AssertSqlSafe(format!(
        "insert into messages (channel_id, message_id, sender, user_number, status, first_seen_at, updated_at)
         select 'bench', 'msg-' || i, 's', 'user-' || (i % 50000),
                (array['failed','delivered','read']::message_status[])[1 + i % 3],
                timestamptz '2026-01-01' + i * interval '1 second',
                timestamptz '2026-01-01' + i * interval '1 second'
         from generate_series(1, {MESSAGES}) i"
    )))
    .await?;
    conn.execute(
        "insert into message_history (message_key, channel_id, status, first_received_at, last_received_at, receipt_count, advanced)
         select message_key, channel_id, status, updated_at, updated_at, 1, true from messages",
    )
    .await?;
    conn.execute("vacuum analyze").await?;
    println!(
        "filled {MESSAGES} messages and their history in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let pool = koostatus::db::pool(
        &config.database,
        koostatus::db::connect_options(&config.database),
    );
    let app = Application::build(config, pool.clone()).await?;
    let base = format!(
        "http://127.0.0.1:{}/api/v1/channels/bench/messages",
        app.port()
    );
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let (token, hash) = koostatus::auth::tokens::generate();
    koostatus::db::tokens::insert(&pool, "bench", &hash, None, false).await?;
    let client = reqwest::Client::new();

    // The cursor that starts page 5,000 at limit 100: after row 499,900.
    let row = sqlx::query(
        "select updated_at, message_id from messages where channel_id = 'bench'
         order by updated_at desc, message_id desc offset 499899 limit 1",
    )
    .fetch_one(&mut conn)
    .await?;
    let deep = koostatus::api::encode_cursor(&Keyset {
        updated_at: row.get(0),
        message_id: row.get(1),
    });

    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut random_id = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        format!("msg-{}", 1 + seed % MESSAGES as u64)
    };

    let get = measure(300, || {
        let url = format!("{base}/{}", random_id());
        let (client, token) = (client.clone(), token.clone());
        async move { client.get(url).bearer_auth(token).send().await }
    })
    .await?;
    let ids: Vec<Vec<String>> = (0..70)
        .map(|_| (0..1000).map(|_| random_id()).collect())
        .collect();
    let mut batches = ids.into_iter();
    let lookup = measure(60, || {
        let body = serde_json::json!({ "message_ids": batches.next().unwrap() });
        let (client, token, url) = (client.clone(), token.clone(), format!("{base}/lookup"));
        async move { client.post(url).bearer_auth(token).json(&body).send().await }
    })
    .await?;
    let page1 = measure(300, || {
        let (client, token, url) = (client.clone(), token.clone(), format!("{base}?limit=100"));
        async move { client.get(url).bearer_auth(token).send().await }
    })
    .await?;
    let page5000 = measure(300, || {
        let (client, token, url) = (
            client.clone(),
            token.clone(),
            format!("{base}?limit=100&cursor={deep}"),
        );
        async move { client.get(url).bearer_auth(token).send().await }
    })
    .await?;

    // A customer's messages (20 of them, over the 12 days the fill spans).
    let mut customer = 0_u64;
    let by_user = measure(300, || {
        customer = (customer + 7919) % 50_000;
        let (client, token, url) = (
            client.clone(),
            token.clone(),
            format!("{base}?limit=100&user_number=user-{customer}"),
        );
        async move { client.get(url).bearer_auth(token).send().await }
    })
    .await?;

    println!(
        "\n{:<34} {:>9} {:>9}",
        "request (1,000,000 messages)", "p50 ms", "p99 ms"
    );
    for (name, t) in [
        ("GET one message with history", &get),
        ("POST lookup of 1000 ids", &lookup),
        ("GET listing page 1 (limit 100)", &page1),
        ("GET listing page 5,000 (limit 100)", &page5000),
        ("GET listing by user_number", &by_user),
    ] {
        println!("{name:<34} {:>9.2} {:>9.2}", pct(t, 0.50), pct(t, 0.99));
    }
    println!(
        "page 5,000 / page 1, p50: {:.2}x",
        pct(&page5000, 0.5) / pct(&page1, 0.5)
    );

    // The statements of src/db/messages.rs, explained with a generic plan,
    // the plan a prepared statement settles on after five executions.
    conn.execute("set plan_cache_mode = force_generic_plan")
        .await?;
    let plans = [
        (
            "single message",
            "prepare q1(text, text) as select m.*, (select jsonb_agg(h.*) from message_history h where h.message_key = m.message_key) from messages m where m.channel_id = $1 and m.message_id = $2",
            "execute q1('bench', 'msg-42')",
        ),
        (
            "lookup",
            "prepare q2(text, text[]) as select * from messages where channel_id = $1 and message_id = any($2)",
            "execute q2('bench', array['msg-1','msg-2','msg-3'])",
        ),
        (
            "listing",
            "prepare q3(text, timestamptz, text, timestamptz, message_status, int8) as select * from messages where channel_id = $1 and (updated_at, message_id) < (coalesce($2, 'infinity'::timestamptz), $3) and updated_at > coalesce($4, '-infinity'::timestamptz) and ($5::message_status is null or status = $5) order by updated_at desc, message_id desc limit $6",
            "execute q3('bench', now(), 'x', null, null, 101)",
        ),
        (
            "listing by user_number",
            "prepare q4(text, timestamptz, text, timestamptz, message_status, int8, text) as select * from messages where channel_id = $1 and koostatus_day(first_seen_at) = any(array(with recursive days(day) as (select min(koostatus_day(first_seen_at)) from messages where channel_id = $1 union all select (select min(koostatus_day(m.first_seen_at)) from messages m where m.channel_id = $1 and koostatus_day(m.first_seen_at) > days.day) from days where days.day is not null) select day from days where day is not null)) and user_number = $7 and (updated_at, message_id) < (coalesce($2, 'infinity'::timestamptz), $3) and updated_at > coalesce($4, '-infinity'::timestamptz) and ($5::message_status is null or status = $5) order by updated_at desc, message_id desc limit $6",
            "execute q4('bench', null, '', null, null, 101, 'user-7')",
        ),
    ];
    for (name, prepare, execute) in plans {
        conn.execute(prepare).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("explain {execute}")))
            .fetch_all(&mut conn)
            .await?;
        println!("\nEXPLAIN {name}:");
        for r in rows {
            println!("  {}", r.get::<String, _>(0));
        }
    }
    handle.stop(true).await;
    Ok(())
}
