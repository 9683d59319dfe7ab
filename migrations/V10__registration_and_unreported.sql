-- SPEC §13: messages registered by the sending side, the sweep that turns
-- messages without any report into `unreported`, and unknown statuses kept.

-- 1. History keeps any lowercase status word KooMessage sends, not only the
-- five ranked ones: an unknown status (`deleted`, `warning`) is kept with
-- advanced = false and never moves the current status (db/reports.rs).
alter table message_history alter column status type text using status::text;
alter table message_history
    add constraint message_history_status_word check (status ~ '^[a-z][a-z_]{0,31}$');

-- 2. Registration: when the sending side sent it, and its tags (a campaign,
-- a team). sent_at is null for a message known only from reports.
alter table messages
    add column sent_at timestamptz,
    add column tags text[] not null default '{}';

-- The sweep finds a channel's messages still `sent` oldest first, and the
-- metrics count a channel's `unreported` ones, reading only those rows: the
-- partial index holds just the messages waiting for a report, so its cost
-- follows what the sweep changes, not the size of the table. Its inserts
-- land at the right edge of a channel's range (first_seen_at is about now).
-- message_id makes the order total, so that a pass of the sweep continues
-- after its last batch instead of walking again over the entries that
-- batch left behind (db/unreported.rs).
create index messages_unanswered on messages (channel_id, status, first_seen_at, message_id)
    where status in ('sent', 'unreported');

-- 3. Per channel `unreported_after` (`channel add|set --unreported-after`);
-- null: the global `reports.unreported_after`.
alter table channels add column unreported_after interval
    check (unreported_after > interval '0');

-- 4. Tokens that may register messages (`token create --register`).
alter table api_tokens add column can_register boolean not null default false;

-- 5. Time to deliver (SPEC §13): when a message first reached `delivered`
-- (or `read`, which proves delivery), kept so that the statistics can take
-- it back out when the message is pruned. Taken from the history for the
-- messages stored so far.
alter table messages add column delivered_at timestamptz;
update messages m set delivered_at = h.first
from (select channel_id, message_id, min(first_received_at) as first
      from message_history
      where status in ('delivered', 'read')
      group by 1, 2) h
where h.channel_id = m.channel_id and h.message_id = m.message_id;

-- 6. Statistics (V6) by the five statuses, per tag, with time to deliver.
--
-- Statuses only move forward, so a message's current status follows from
-- whether it has reached each rank: sent = messages - reached_unreported,
-- unreported = reached_unreported - reached_failed, failed =
-- reached_failed - reached_delivered. Every message stored so far has
-- reached `failed` at least.
--
-- `tag`: '' counts the whole channel; a message registered with tags is
-- also counted under each of them, by the same statements, so that
-- `?tag=` reads a few rows per bucket as the channel's statistics do.
alter table stats_counts
    add column tag text not null default '',
    add column reached_unreported bigint not null default 0,
    add column reached_failed bigint not null default 0;
-- (Filled by the rebuild at the end of this migration.)
alter table stats_counts drop constraint stats_counts_pkey,
    add primary key (channel_id, tag, hour, shard);

alter table stats_read_times add column tag text not null default '';
alter table stats_read_times drop constraint stats_read_times_pkey,
    add primary key (channel_id, tag, hours, start, bin, shard);

-- Time to deliver as a histogram, as stats_read_times is time to read's.
create table stats_deliver_times (
    channel_id text not null,
    tag text not null,
    hours smallint not null check (hours in (1, 24)),
    start timestamptz not null,
    bin smallint not null,
    shard smallint not null,
    n bigint not null,
    primary key (channel_id, tag, hours, start, bin, shard)
);

drop trigger stats_on_delete on messages;
drop function koostatus_stats_on_delete();
drop function koostatus_stats_add(text[], timestamptz[], int[], int[], int[], double precision[], int[]);

-- Adds changes to the aggregates, one array element per changed message
-- and tag ('' for the channel): the change of each counter, its times to
-- read and to deliver in seconds and the change of their counts. Rows in
-- key order, so that concurrent statements lock them in one order.
create function koostatus_stats_add(
    channel_ids text[], tags text[], seen timestamptz[], messages int[],
    reached_unreported int[], reached_failed int[], reached_delivered int[],
    reached_read int[], read_seconds double precision[], read_n int[],
    deliver_seconds double precision[], deliver_n int[]
) returns void
language sql as $$
    insert into stats_counts as s
        (channel_id, tag, hour, shard, messages, reached_unreported, reached_failed,
         reached_delivered, reached_read)
    select d.channel_id, d.tag, date_trunc('hour', d.seen, 'UTC'), pg_backend_pid() % 64,
           sum(d.messages), sum(d.reached_unreported), sum(d.reached_failed),
           sum(d.reached_delivered), sum(d.reached_read)
    from unnest(channel_ids, tags, seen, messages, reached_unreported, reached_failed,
                reached_delivered, reached_read)
        as d(channel_id, tag, seen, messages, reached_unreported, reached_failed,
             reached_delivered, reached_read)
    group by 1, 2, 3
    order by 1, 2, 3
    on conflict (channel_id, tag, hour, shard) do update
        set messages = s.messages + excluded.messages,
            reached_unreported = s.reached_unreported + excluded.reached_unreported,
            reached_failed = s.reached_failed + excluded.reached_failed,
            reached_delivered = s.reached_delivered + excluded.reached_delivered,
            reached_read = s.reached_read + excluded.reached_read;

    insert into stats_read_times as r (channel_id, tag, hours, start, bin, shard, n)
    select d.channel_id, d.tag, h.hours,
           date_trunc(case h.hours when 1 then 'hour' else 'day' end, d.seen, 'UTC'),
           koostatus_read_bin(greatest(d.read_seconds, 0)), pg_backend_pid() % 64,
           sum(d.read_n)
    from unnest(channel_ids, tags, seen, read_seconds, read_n)
        as d(channel_id, tag, seen, read_seconds, read_n)
    cross join (values (1::smallint), (24::smallint)) as h(hours)
    where d.read_n <> 0
    group by 1, 2, 3, 4, 5
    order by 1, 2, 3, 4, 5
    on conflict (channel_id, tag, hours, start, bin, shard) do update
        set n = r.n + excluded.n;

    insert into stats_deliver_times as r (channel_id, tag, hours, start, bin, shard, n)
    select d.channel_id, d.tag, h.hours,
           date_trunc(case h.hours when 1 then 'hour' else 'day' end, d.seen, 'UTC'),
           koostatus_read_bin(greatest(d.deliver_seconds, 0)), pg_backend_pid() % 64,
           sum(d.deliver_n)
    from unnest(channel_ids, tags, seen, deliver_seconds, deliver_n)
        as d(channel_id, tag, seen, deliver_seconds, deliver_n)
    cross join (values (1::smallint), (24::smallint)) as h(hours)
    where d.deliver_n <> 0
    group by 1, 2, 3, 4, 5
    order by 1, 2, 3, 4, 5
    on conflict (channel_id, tag, hours, start, bin, shard) do update
        set n = r.n + excluded.n;
$$;

-- What a message as it stands contributes, under the channel ('') and each
-- of its tags: added by a registration that tags a message known from
-- reports, taken out (sign -1) when a message is deleted, summed by a
-- rebuild.
create function koostatus_stats_contribution(m messages, sign int, with_channel boolean)
returns table (
    channel_id text, tag text, seen timestamptz, messages int, reached_unreported int,
    reached_failed int, reached_delivered int, reached_read int,
    read_seconds double precision, read_n int, deliver_seconds double precision,
    deliver_n int)
language sql stable as $$
    select m.channel_id, t.tag, m.first_seen_at, sign,
           sign * (m.status >= 'unreported')::int, sign * (m.status >= 'failed')::int,
           sign * (m.status >= 'delivered')::int, sign * (m.status = 'read')::int,
           extract(epoch from m.updated_at - m.first_seen_at)::double precision,
           sign * (m.status = 'read')::int,
           extract(epoch from m.delivered_at - m.first_seen_at)::double precision,
           sign * (m.status >= 'delivered')::int
    from unnest(case when with_channel then array[''] || m.tags else m.tags end) as t(tag)
$$;

create function koostatus_stats_on_delete() returns trigger
language plpgsql as $$
begin
    perform koostatus_stats_add(
        array_agg(c.channel_id), array_agg(c.tag), array_agg(c.seen), array_agg(c.messages),
        array_agg(c.reached_unreported), array_agg(c.reached_failed),
        array_agg(c.reached_delivered), array_agg(c.reached_read),
        array_agg(c.read_seconds), array_agg(c.read_n),
        array_agg(c.deliver_seconds), array_agg(c.deliver_n))
    from before_rows b
    cross join lateral koostatus_stats_contribution(b, -1, true) c;
    return null;
end
$$;

create trigger stats_on_delete after delete on messages
    referencing old table as before_rows
    for each statement execute function koostatus_stats_on_delete();

-- Recomputes every aggregate from the messages (`koostatus stats rebuild`
-- calls it under a lock that holds writers off); returns the messages
-- counted. Here it counts the messages stored before this migration.
create or replace function koostatus_stats_rebuild() returns bigint
language sql as $$
    delete from stats_counts;
    delete from stats_read_times;
    delete from stats_deliver_times;
    insert into stats_counts
        (channel_id, tag, hour, shard, messages, reached_unreported, reached_failed,
         reached_delivered, reached_read)
    select c.channel_id, c.tag, date_trunc('hour', c.seen, 'UTC'), 0, sum(c.messages),
           sum(c.reached_unreported), sum(c.reached_failed), sum(c.reached_delivered),
           sum(c.reached_read)
    from messages m
    cross join lateral koostatus_stats_contribution(m, 1, true) c
    group by 1, 2, 3;
    insert into stats_read_times (channel_id, tag, hours, start, bin, shard, n)
    select c.channel_id, c.tag, h.hours,
           date_trunc(case h.hours when 1 then 'hour' else 'day' end, c.seen, 'UTC'),
           koostatus_read_bin(greatest(c.read_seconds, 0)), 0, count(*)
    from messages m
    cross join lateral koostatus_stats_contribution(m, 1, true) c
    cross join (values (1::smallint), (24::smallint)) as h(hours)
    where c.read_n = 1
    group by 1, 2, 3, 4, 5;
    insert into stats_deliver_times (channel_id, tag, hours, start, bin, shard, n)
    select c.channel_id, c.tag, h.hours,
           date_trunc(case h.hours when 1 then 'hour' else 'day' end, c.seen, 'UTC'),
           koostatus_read_bin(greatest(c.deliver_seconds, 0)), 0, count(*)
    from messages m
    cross join lateral koostatus_stats_contribution(m, 1, true) c
    cross join (values (1::smallint), (24::smallint)) as h(hours)
    where c.deliver_n = 1
    group by 1, 2, 3, 4, 5;
    select coalesce(sum(messages), 0)::bigint from stats_counts where tag = '';
$$;

select koostatus_stats_rebuild();
