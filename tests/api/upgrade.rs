//! Upgrades: a database as an older build left it migrates to the current
//! schema with every message, history entry, feed position and statistic
//! intact, and the read API answers from it what the old data says.

use serde_json::Value;

use crate::helpers::{database_config, empty_database, spawn_app_on, strings_of};

/// Messages as the build before V13 wrote them: one read (two reports of
/// `delivered`, fields beyond the seed's kept), one failed, one sent and
/// then reported with a word beyond the five; their feed and statistics.
const BEFORE_V13: &str = "
    insert into channels (id, password_hash) values ('ch', 'x');
    insert into messages (channel_id, message_id, sender, user_number, status, first_seen_at,
                          updated_at, changed_xid, delivered_at, first_delivered_at,
                          first_read_at, first_failed_at, sent_at, tags)
    values ('ch', 'r', 's', '8613800000001', 'read', '2026-11-01T10:00:00Z',
            '2026-11-01T10:05:00Z', '5', '2026-11-01T10:00:00Z', '2026-11-01T10:00:00Z',
            '2026-11-01T10:05:00Z', null, null, '{}'),
           ('ch', 'f', 's', '8613800000001', 'failed', '2026-11-01T11:00:00Z',
            '2026-11-01T11:00:00Z', '6', null, null, null, '2026-11-01T11:00:00Z', null, '{}'),
           ('ch', 'x', 's', '8613800000002', 'sent', '2026-11-01T12:00:00Z',
            '2026-11-01T12:00:00Z', '7', null, null, null, null, '2026-11-01T12:00:00Z',
            '{campaign}');
    insert into message_history (channel_id, message_id, status, first_received_at,
                                 last_received_at, receipt_count, advanced, extra)
    values ('ch', 'r', 'delivered', '2026-11-01T10:00:00Z', '2026-11-01T10:01:00Z', 2, true,
            '{\"errCode\": \"0\"}'),
           ('ch', 'r', 'read', '2026-11-01T10:05:00Z', '2026-11-01T10:05:00Z', 1, true, '{}'),
           ('ch', 'f', 'failed', '2026-11-01T11:00:00Z', '2026-11-01T11:00:00Z', 1, true, '{}'),
           ('ch', 'x', 'sent', '2026-11-01T12:00:00Z', '2026-11-01T12:00:00Z', 1, true, '{}'),
           ('ch', 'x', 'deleted', '2026-11-01T12:30:00Z', '2026-11-01T12:30:00Z', 1, false, '{}');
    insert into message_changes (channel_id, message_id, user_number, status, changed_at, xid)
    values ('ch', 'r', '8613800000001', 'read', '2026-11-01T10:05:00Z', '5'),
           ('ch', 'f', '8613800000001', 'failed', '2026-11-01T11:00:00Z', '6'),
           ('ch', 'x', '8613800000002', 'sent', '2026-11-01T12:00:00Z', '7');
    select koostatus_stats_rebuild();";

/// Everything the upgrade must keep, as text: messages, history, feed
/// (with its positions), statistics.
const SNAPSHOT: &str = "
    select 'message ' || concat_ws('|', channel_id, message_id, sender, user_number, status,
                                   first_seen_at, updated_at, changed_xid, delivered_at,
                                   first_failed_at, first_delivered_at, first_read_at, sent_at,
                                   tags)
    from messages
    union all
    select 'history ' || concat_ws('|', m.channel_id, m.message_id, h.status,
                                   h.first_received_at, h.last_received_at, h.receipt_count,
                                   h.advanced, h.extra)
    from message_history h
    -- By the ids before V18 (V12 has no key), by the key after (V18
    -- drops the message id from history).
    join messages m
      on coalesce(to_jsonb(h) ->> 'channel_id' = m.channel_id
                      and to_jsonb(h) ->> 'message_id' = m.message_id,
                  to_jsonb(h) ->> 'message_key' = to_jsonb(m) ->> 'message_key')
    union all
    select 'feed ' || concat_ws('|', channel_id, xid, seq, message_id, user_number, status,
                                changed_at)
    from message_changes
    union all
    select 'counts ' || concat_ws('|', channel_id, tag, hour, messages, reached_unreported,
                                  reached_failed, reached_delivered, reached_read)
    from stats_counts
    union all
    select 'read ' || concat_ws('|', channel_id, tag, hours, start, bin, n) from stats_read_times
    union all
    select 'deliver ' || concat_ws('|', channel_id, tag, hours, start, bin, n)
    from stats_deliver_times
    order by 1";

#[tokio::test]
async fn a_database_from_before_v13_migrates_with_everything_intact() {
    let db = empty_database().await;
    let config = database_config(&db.url());
    koostatus::db::migrations::run_to(&config, Some(12))
        .await
        .unwrap();
    let pool = db.pool().await;
    sqlx::raw_sql(BEFORE_V13).execute(&pool).await.unwrap();
    let snapshot = || async {
        sqlx::query_scalar::<_, String>(SNAPSHOT)
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    let before = snapshot().await;
    // 3 messages, 5 history entries, 3 feed entries, 4 hourly counters, 2
    // times to read and 2 to deliver.
    assert_eq!(before.len(), 3 + 5 + 3 + 4 + 2 + 2, "{before:#?}");

    let applied = koostatus::db::migrations::run(&config).await.unwrap();
    assert!(applied.iter().any(|m| m.version == 13));
    assert_eq!(snapshot().await, before);
    // Each message has a key of its own, and its history carries it (the
    // snapshot above joined the history to its message by that key).
    let (keys, distinct, mismatched): (i64, i64, i64) = sqlx::query_as(
        "select count(message_key), count(distinct message_key),
                (select count(*) from message_history h
                 where not exists (select from messages m
                                   where m.message_key = h.message_key))
         from messages",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((keys, distinct, mismatched), (3, 3, 0));

    // The read API answers from the migrated rows what the old ones said
    // (the test configuration's sweep finds nothing due).
    let app = spawn_app_on(db, |_| {}).await;
    let token = app.create_token("desk", &[]).await;
    let message = |id: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            let r = app
                .get(&format!("/api/v1/channels/ch/messages/{id}"), &token)
                .await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let r = message("r").await;
    assert_eq!(r["status"], "read");
    let history: Vec<(String, i64, bool)> = r["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["status"].as_str().unwrap().to_owned(),
                h["receipt_count"].as_i64().unwrap(),
                h["advanced"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [("delivered".into(), 2, true), ("read".into(), 1, true)]
    );
    assert_eq!(r["history"][0]["extra"]["errCode"], "0");
    let x = message("x").await;
    assert_eq!(x["status"], "sent");
    assert_eq!(x["tags"], serde_json::json!(["campaign"]));
    assert_eq!(strings_of(&x["history"], "status"), ["sent", "deleted"]);
    // A customer's listing, which V13 serves from a narrower index.
    let page = app
        .get(
            "/api/v1/channels/ch/messages?user_number=8613800000001",
            &token,
        )
        .await;
    assert_eq!(page.status(), 200);
    let page: Value = page.json().await.unwrap();
    assert_eq!(
        strings_of(&page["messages"], "message_id"),
        ["f", "r"],
        "newest change first"
    );

    // The message still `sent` is in the sweep's index (V14) and becomes
    // `unreported` with its feed entry; the metrics count it from the
    // migrated statistics.
    let now = chrono::Utc::now();
    let range = koostatus::db::unreported::SweepRange {
        channel_id: "ch",
        sent_before: now,
        after: None,
        part: 0,
        parts: 1,
    };
    let swept = koostatus::db::unreported::sweep(&app.pool, &range, now, 1000)
        .await
        .unwrap();
    assert_eq!(swept.changed, 1);
    let x = message("x").await;
    assert_eq!(x["status"], "unreported");
    assert_eq!(
        strings_of(&x["history"], "status"),
        ["sent", "deleted", "unreported"]
    );
    let unreported = koostatus::db::unreported::counts(&app.pool).await.unwrap();
    assert_eq!(unreported, [("ch".to_owned(), 1)]);
}
