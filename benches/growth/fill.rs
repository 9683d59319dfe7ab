//! Filling a channel in SQL with messages shaped like real data: the ids
//! KooMessage gives (33 random hex characters), 13-digit user numbers of
//! 1,000,000 customers, first seen over the last 30 days, 10 % failed,
//! 50 % delivered, 40 % read; one history entry (the current status) and
//! one feed entry per message. In batches of 1,000,000, one transaction
//! each, then `VACUUM ANALYZE` as autovacuum would have done.

use std::time::Instant;

use sqlx::PgConnection;

const BATCH: u64 = 1_000_000;

pub async fn fill(db: &mut PgConnection, channel: &str, messages: u64) -> anyhow::Result<()> {
    if messages == 0 {
        return Ok(());
    }
    let started = Instant::now();
    // The template may be filled under a build from before V13 (the
    // history's message key) or V18 (the history without the text ids),
    // when that build is the first of BENCH_BINS.
    let columns = history_columns(db).await?;
    let fill = FILL.replace("{columns}", &columns);
    let mut from = 1;
    while from <= messages {
        let to = (from + BATCH - 1).min(messages);
        sqlx::query(sqlx::AssertSqlSafe(fill.clone()))
            .bind(channel)
            .bind(from as i64)
            .bind(to as i64)
            .execute(&mut *db)
            .await?;
        from = to + 1;
    }
    sqlx::query("vacuum analyze").execute(&mut *db).await?;
    println!(
        "filled {messages} messages with history and feed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Messages `$2` to `$3` of channel `$1`, with their history and feed
/// entries. md5 of the number gives 32 random-looking hex characters, one
/// more from the md5 of its negation: 33, like the seed's ids.
const FILL: &str = "
with numbered as (
    select i,
           md5(i::text) || left(md5((-i)::text), 1) as message_id,
           '86' || lpad(((hashint8(i) & 2147483647) % 1000000)::text, 11, '0') as user_number,
           now() - interval '30 days' * ((hashint8(-i) & 2147483647) / 2147483647.0) as seen,
           (array['failed', 'delivered', 'delivered', 'delivered', 'delivered', 'delivered',
                  'read', 'read', 'read', 'read'])[i % 10 + 1]::message_status as status
    from generate_series($2::int8, $3::int8) i
), messages_in as (
    insert into messages (channel_id, message_id, sender, user_number, status, first_seen_at,
                          updated_at, first_failed_at, first_delivered_at, first_read_at)
    select $1, message_id, '86173xxxx4526', user_number, status, seen,
           seen + interval '5 seconds',
           case when status = 'failed' then seen + interval '5 seconds' end,
           case when status in ('delivered', 'read') then seen + interval '5 seconds' end,
           case when status = 'read' then seen + interval '5 seconds' end
    from numbered
    returning *
), history_in as (
    insert into message_history ({columns}status,
                                 first_received_at, last_received_at, receipt_count, advanced)
    select {columns}status::text, updated_at, updated_at, 1, true
    from messages_in
)
insert into message_changes (channel_id, message_id, status, changed_at, user_number)
select $1, message_id, status, seen + interval '5 seconds', user_number
from numbered
order by seen";

/// `n` more messages of the channel registered as `sent` (SPEC §13), as
/// the registration statement writes them (the message, its `sent`
/// history entry and its feed entry; ids seed-shaped, in random order),
/// then `VACUUM ANALYZE`: their ids and user numbers, in registration order.
pub async fn register(
    db: &mut PgConnection,
    channel: &str,
    n: u64,
) -> anyhow::Result<super::support::Known> {
    let started = Instant::now();
    let register = REGISTER.replace("{columns}", &history_columns(db).await?);
    sqlx::query(sqlx::AssertSqlSafe(register))
        .bind(channel)
        .bind(n as i64)
        .execute(&mut *db)
        .await?;
    sqlx::query("vacuum analyze").execute(&mut *db).await?;
    let known: Vec<(String, String)> = sqlx::query_as(
        "select message_id, user_number from messages
         where channel_id = $1 and status = 'sent' order by message_key",
    )
    .bind(channel)
    .fetch_all(&mut *db)
    .await?;
    println!(
        "  registered {} messages as sent in {:.0} s",
        known.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(known.into())
}

/// `$2` messages of channel `$1` registered now (ids from md5 of "known"
/// and the number: none is one of `FILL`'s).
const REGISTER: &str = "
with numbered as (
    select i,
           md5('known' || i) || left(md5('known' || -i), 1) as message_id,
           '86' || lpad(((hashint8(i) & 2147483647) % 1000000)::text, 11, '0') as user_number
    from generate_series(1, $2::int8) i
), messages_in as (
    insert into messages (channel_id, message_id, sender, user_number, status, first_seen_at,
                          updated_at, changed_xid, sent_at)
    select $1, message_id, '86173xxxx4526', user_number, 'sent', now(), now(),
           pg_current_xact_id(), now()
    from numbered
    order by i
    returning message_key, channel_id, message_id, user_number
), history_in as (
    insert into message_history ({columns}status,
                                 first_received_at, last_received_at, receipt_count, advanced)
    select {columns}'sent', now(), now(), 1, true
    from messages_in
)
insert into message_changes (channel_id, message_id, user_number, status, changed_at)
select $1, message_id, user_number, 'sent', now()
from messages_in";

/// The identifying columns of `message_history` under the database's
/// schema, for an insert that takes them from a message's row by name:
/// the text ids before V13, the key and the ids from V13, the key alone
/// from V18.
async fn history_columns(db: &mut PgConnection) -> anyhow::Result<String> {
    let present: Vec<String> = sqlx::query_scalar(
        "select column_name::text from information_schema.columns
         where table_name = 'message_history'
           and column_name in ('message_key', 'channel_id', 'message_id')
         order by array_position(array['message_key', 'channel_id', 'message_id'],
                                 column_name::text)",
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(present.iter().map(|c| format!("{c}, ")).collect())
}
