//! Recording reports into `messages` and `message_history` (and the feed
//! and the statistics, by the same statement) under the status rule.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::{ChannelId, Report, Status};

/// What the statement needs of a report's status: its word, and its rank
/// when it has one (None for an unranked word, SPEC §13).
fn status_columns(report: &Report) -> (&str, Option<Status>) {
    (report.status.as_str(), report.status.ranked())
}

/// What recording one report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The first report of this status for the message.
    pub first_of_status: bool,
    /// It moved the current status forward.
    pub advanced: bool,
}

/// A report ready to be written: who it is for and when it arrived.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub channel: ChannelId,
    pub report: Report,
    pub received_at: DateTime<Utc>,
}

/// Records reports under the status rule of `Status::merge`, in one
/// statement. The batch must not hold two reports for one message (the
/// writer defers repeats to the next batch). Returns, in input order, what
/// each report did, or `None` for a report whose message is known with
/// another sender or user number: nothing of it was written.
///
/// Concurrency: the upsert of `messages` locks each message's row, in
/// (channel_id, message_id) order, and a history row is only touched while
/// its message's row is locked. So concurrent statements, on any instance,
/// serialise per message and cannot deadlock: locks are always taken in the
/// same order.
///
/// `advanced` needs the status before the update, which RETURNING cannot
/// give; it is derived instead: a status seen for the first time advanced the
/// message exactly when it is now the current status (it cannot equal the old
/// current status, which was seen before).
pub async fn record_reports(
    db: impl PgExecutor<'_>,
    batch: &[Incoming],
) -> sqlx::Result<Vec<Option<Recorded>>> {
    let mut channel_ids = Vec::with_capacity(batch.len());
    let mut message_ids = Vec::with_capacity(batch.len());
    let mut senders = Vec::with_capacity(batch.len());
    let mut user_numbers = Vec::with_capacity(batch.len());
    let mut statuses = Vec::with_capacity(batch.len());
    let mut ranks = Vec::with_capacity(batch.len());
    let mut times = Vec::with_capacity(batch.len());
    let mut extras = Vec::with_capacity(batch.len());
    for i in batch {
        channel_ids.push(i.channel.as_str());
        message_ids.push(i.report.message_id.as_str());
        senders.push(i.report.sender.as_str());
        user_numbers.push(i.report.user_number.as_str());
        let (word, rank) = status_columns(&i.report);
        statuses.push(word);
        ranks.push(rank);
        times.push(i.received_at);
        extras.push(serde_json::Value::Object(i.report.extra.clone()));
    }
    let rows = sqlx::query!(
        r#"
        with input as (
            select * from unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                 $5::text[], $8::message_status[], $6::timestamptz[],
                                 $7::jsonb[])
                with ordinality
                as t(channel_id, message_id, sender, user_number, word, status, received_at,
                     extra, n)
        ),
        message as (
            insert into messages as m
                (channel_id, message_id, sender, user_number, status, first_seen_at, updated_at,
                 changed_xid, delivered_at, first_failed_at, first_delivered_at, first_read_at,
                 first_status, first_extra)
            -- An unranked word never moves the status; a message first
            -- known from one is `sent` (KooMessage reports only on what
            -- it sent). A ranked first report's history entry is kept on
            -- the row (V19).
            select channel_id, message_id, sender, user_number, coalesce(status, 'sent'),
                   received_at, received_at, pg_current_xact_id(),
                   case when status >= 'delivered' then received_at end,
                   case when status = 'failed' then received_at end,
                   case when status = 'delivered' then received_at end,
                   case when status = 'read' then received_at end,
                   status, case when status is not null and extra <> '{}' then extra end
            from input
            order by channel_id, message_id
            on conflict (channel_id, message_id) do update
                set status = greatest(m.status, excluded.status),
                    updated_at = case when excluded.status > m.status
                                      then excluded.updated_at else m.updated_at end,
                    -- After the message's previous change in feed order (V4).
                    changed_xid = case when excluded.status > m.status
                                       then greatest(excluded.changed_xid, m.changed_xid)
                                       else m.changed_xid end,
                    -- The status before, under the row's lock, for the
                    -- statistics below (V6).
                    previous_status = m.status,
                    -- The first time it reached `delivered` or `read`.
                    delivered_at = coalesce(m.delivered_at, excluded.delivered_at),
                    -- The first report of each (V11), as its history has it.
                    first_failed_at = coalesce(m.first_failed_at, excluded.first_failed_at),
                    first_delivered_at = coalesce(m.first_delivered_at, excluded.first_delivered_at),
                    first_read_at = coalesce(m.first_read_at, excluded.first_read_at)
                where m.sender = excluded.sender and m.user_number = excluded.user_number
            returning m.message_key, m.channel_id, m.message_id, m.user_number, m.status,
                      m.changed_xid, m.first_seen_at, m.updated_at, m.previous_status,
                      m.delivered_at, m.tags, m.unreported_at, m.first_status
        ),
        -- Each report's history entry. A new message's first report of a
        -- ranked status has its entry on the message's row, written above
        -- (V19): no previous status, as this statement inserted the row.
        -- Otherwise the entry cannot exist yet when the message is new (an
        -- unranked word) or when the report moved the status up: a message
        -- has only held statuses up to its current one, and its history is
        -- only written under its row's lock, held here. Such an entry is a
        -- plain insert, which PostgreSQL writes as one WAL record instead of
        -- the two of a speculative insertion (the insert and its
        -- confirmation). Only the others (a repeat, a late lower status, an
        -- unranked word) may find their entry and take a receipt; a repeat
        -- of the entry on the row adds a row of receipts that the history's
        -- view merges with it.
        entry as (
            select message.message_key, i.n, i.channel_id, i.word, i.received_at,
                   coalesce(message.status = i.status, false) as advanced, i.extra,
                   message.previous_status is null and i.status is not null as entry_on_row,
                   coalesce(message.previous_status is null
                            or (message.status = i.status
                                and message.previous_status < message.status),
                            false) as entry_is_new,
                   coalesce(message.first_status = i.status, false) as repeats_row_entry
            from input i
            join message on message.channel_id = i.channel_id and message.message_id = i.message_id
        ),
        history_of_new as (
            insert into message_history
                (message_key, channel_id, status, first_received_at, last_received_at,
                 receipt_count, advanced, extra)
            select message_key, channel_id, word, received_at, received_at, 1, advanced, extra
            from entry
            where entry_is_new and not entry_on_row
            order by message_key
            returning message_key, status, first_received_at, true as first_of_status, advanced
        ),
        history_of_known as (
            insert into message_history as h
                (message_key, channel_id, status, first_received_at, last_received_at,
                 receipt_count, advanced, extra)
            select message_key, channel_id, word, received_at, received_at, 1,
                   advanced and not repeats_row_entry, extra
            from entry
            where not entry_is_new
            order by message_key
            on conflict (message_key, status) do update
                set receipt_count = h.receipt_count + 1,
                    last_received_at = greatest(h.last_received_at, excluded.last_received_at)
            returning h.message_key, h.status, h.first_received_at,
                      h.receipt_count = 1 as first_of_status, h.advanced
        ),
        history as (
            select message_key, word as status, received_at as first_received_at,
                   true as first_of_status, true as advanced
            from entry
            where entry_on_row
            union all
            select * from history_of_new
            union all
            -- A repeat of the entry on the row is its first history row,
            -- not its status's first report.
            select k.message_key, k.status, k.first_received_at,
                   k.first_of_status and not e.repeats_row_entry, k.advanced
            from history_of_known k
            join entry e on e.message_key = k.message_key
        ),
        -- The current status changed exactly when its history entry is new
        -- and is the current status: had the message held that status
        -- before, the entry would exist. A swept message's `unreported`
        -- entry is its `unreported_at` (V15), not a row: a report of that
        -- word after the sweep is a receipt, not a change.
        change as (
            insert into message_changes
                (channel_id, message_id, user_number, status, changed_at, xid)
            select message.channel_id, message.message_id, message.user_number, message.status,
                   h.first_received_at, message.changed_xid
            from history h
            join message on message.message_key = h.message_key
            where h.first_of_status and h.advanced
              and not (h.status = 'unreported' and message.unreported_at is not null)
            order by message.channel_id, message.message_id
        ),
        -- The statistics (V6, V10): what each message that is new or
        -- changed status adds to its hour's counters, under the channel
        -- ('') and each of its tags. The same sums as koostatus_stats_add,
        -- written out because this statement is prepared once and runs for
        -- every batch.
        delta as (
            select channel_id, t.tag, first_seen_at,
                   (previous_status is null)::int as messages,
                   (status >= 'unreported')::int
                       - coalesce((previous_status >= 'unreported')::int, 0)
                       as reached_unreported,
                   (status >= 'failed')::int
                       - coalesce((previous_status >= 'failed')::int, 0) as reached_failed,
                   (status >= 'delivered')::int
                       - coalesce((previous_status >= 'delivered')::int, 0) as reached_delivered,
                   (status = 'read')::int
                       - coalesce((previous_status = 'read')::int, 0) as reached_read,
                   extract(epoch from updated_at - first_seen_at)::float8 as read_seconds,
                   extract(epoch from delivered_at - first_seen_at)::float8 as deliver_seconds
            from message
            cross join lateral unnest(array[''] || tags) as t(tag)
            where previous_status is distinct from status
        ),
        counts as (
            insert into stats_counts as s
                (channel_id, tag, hour, shard, messages, reached_unreported, reached_failed,
                 reached_delivered, reached_read)
            select channel_id, tag, date_trunc('hour', first_seen_at, 'UTC'),
                   pg_backend_pid() % 64, sum(messages), sum(reached_unreported),
                   sum(reached_failed), sum(reached_delivered), sum(reached_read)
            from delta
            group by 1, 2, 3
            order by 1, 2, 3
            on conflict (channel_id, tag, hour, shard) do update
                set messages = s.messages + excluded.messages,
                    reached_unreported = s.reached_unreported + excluded.reached_unreported,
                    reached_failed = s.reached_failed + excluded.reached_failed,
                    reached_delivered = s.reached_delivered + excluded.reached_delivered,
                    reached_read = s.reached_read + excluded.reached_read
        ),
        read_times as (
            insert into stats_read_times as r (channel_id, tag, hours, start, bin, shard, n)
            select d.channel_id, d.tag, h.hours,
                   date_trunc(case h.hours when 1 then 'hour' else 'day' end,
                              d.first_seen_at, 'UTC'),
                   koostatus_read_bin(greatest(d.read_seconds, 0)), pg_backend_pid() % 64,
                   count(*)
            from delta d
            cross join (values (1::smallint), (24::smallint)) as h(hours)
            where d.reached_read = 1
            group by 1, 2, 3, 4, 5
            order by 1, 2, 3, 4, 5
            on conflict (channel_id, tag, hours, start, bin, shard) do update
                set n = r.n + excluded.n
        ),
        deliver_times as (
            insert into stats_deliver_times as r (channel_id, tag, hours, start, bin, shard, n)
            select d.channel_id, d.tag, h.hours,
                   date_trunc(case h.hours when 1 then 'hour' else 'day' end,
                              d.first_seen_at, 'UTC'),
                   koostatus_read_bin(greatest(d.deliver_seconds, 0)), pg_backend_pid() % 64,
                   count(*)
            from delta d
            cross join (values (1::smallint), (24::smallint)) as h(hours)
            where d.reached_delivered = 1
            group by 1, 2, 3, 4, 5
            order by 1, 2, 3, 4, 5
            on conflict (channel_id, tag, hours, start, bin, shard) do update
                set n = r.n + excluded.n
        )
        -- Each answer by its report's place in the batch (RETURNING cannot
        -- name the input; the batch holds one report per message, so the
        -- key finds it), so that the service matches them without hashing
        -- ids.
        select e.n as "n!", h.first_of_status as "first_of_status!", h.advanced as "advanced!"
        from history h
        join entry e on e.message_key = h.message_key
        "#,
        &channel_ids as &[&str],
        &message_ids as &[&str],
        &senders as &[&str],
        &user_numbers as &[&str],
        &statuses as &[&str],
        &times,
        &extras,
        &ranks as &[Option<Status>],
    )
    .fetch_all(db)
    .await?;
    let mut done = vec![None; batch.len()];
    for r in rows {
        // `with ordinality` counts from 1.
        let place = usize::try_from(r.n - 1).expect("a place in this batch");
        done[place] = Some(Recorded {
            first_of_status: r.first_of_status,
            advanced: r.advanced,
        });
    }
    Ok(done)
}
