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
create index messages_unanswered on messages (channel_id, status, first_seen_at)
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

-- Its histogram, as stats_read_times (V6) is time to read's.
create table stats_deliver_times (
    channel_id text not null,
    hours smallint not null check (hours in (1, 24)),
    start timestamptz not null,
    bin smallint not null,
    shard smallint not null,
    n bigint not null,
    primary key (channel_id, hours, start, bin, shard)
);

-- 6. Statistics (V6) by the five statuses: as statuses only move forward,
-- a message's current status follows from whether it has reached each
-- rank: sent = messages - reached_unreported, unreported = reached_unreported
-- - reached_failed, failed = reached_failed - reached_delivered. Every
-- message stored so far has reached `failed` at least.
alter table stats_counts
    add column reached_unreported bigint not null default 0,
    add column reached_failed bigint not null default 0;
update stats_counts set reached_unreported = messages, reached_failed = messages;

drop trigger stats_on_delete on messages;
drop function koostatus_stats_on_delete();
drop function koostatus_stats_add(text[], timestamptz[], int[], int[], int[], double precision[], int[]);

create function koostatus_stats_add(
    channel_ids text[], seen timestamptz[], messages int[], reached_unreported int[],
    reached_failed int[], reached_delivered int[], reached_read int[],
    read_seconds double precision[], read_n int[],
    deliver_seconds double precision[], deliver_n int[]
) returns void
language sql as $$
    insert into stats_counts as s
        (channel_id, hour, shard, messages, reached_unreported, reached_failed,
         reached_delivered, reached_read)
    select d.channel_id, date_trunc('hour', d.seen, 'UTC'), pg_backend_pid() % 64,
           sum(d.messages), sum(d.reached_unreported), sum(d.reached_failed),
           sum(d.reached_delivered), sum(d.reached_read)
    from unnest(channel_ids, seen, messages, reached_unreported, reached_failed,
                reached_delivered, reached_read)
        as d(channel_id, seen, messages, reached_unreported, reached_failed,
             reached_delivered, reached_read)
    group by 1, 2
    order by 1, 2
    on conflict (channel_id, hour, shard) do update
        set messages = s.messages + excluded.messages,
            reached_unreported = s.reached_unreported + excluded.reached_unreported,
            reached_failed = s.reached_failed + excluded.reached_failed,
            reached_delivered = s.reached_delivered + excluded.reached_delivered,
            reached_read = s.reached_read + excluded.reached_read;

    insert into stats_read_times as r (channel_id, hours, start, bin, shard, n)
    select d.channel_id, h.hours,
           date_trunc(case h.hours when 1 then 'hour' else 'day' end, d.seen, 'UTC'),
           koostatus_read_bin(greatest(d.read_seconds, 0)), pg_backend_pid() % 64,
           sum(d.read_n)
    from unnest(channel_ids, seen, read_seconds, read_n)
        as d(channel_id, seen, read_seconds, read_n)
    cross join (values (1::smallint), (24::smallint)) as h(hours)
    where d.read_n <> 0
    group by 1, 2, 3, 4
    order by 1, 2, 3, 4
    on conflict (channel_id, hours, start, bin, shard) do update
        set n = r.n + excluded.n;

    insert into stats_deliver_times as r (channel_id, hours, start, bin, shard, n)
    select d.channel_id, h.hours,
           date_trunc(case h.hours when 1 then 'hour' else 'day' end, d.seen, 'UTC'),
           koostatus_read_bin(greatest(d.deliver_seconds, 0)), pg_backend_pid() % 64,
           sum(d.deliver_n)
    from unnest(channel_ids, seen, deliver_seconds, deliver_n)
        as d(channel_id, seen, deliver_seconds, deliver_n)
    cross join (values (1::smallint), (24::smallint)) as h(hours)
    where d.deliver_n <> 0
    group by 1, 2, 3, 4
    order by 1, 2, 3, 4
    on conflict (channel_id, hours, start, bin, shard) do update
        set n = r.n + excluded.n;
$$;

create function koostatus_stats_on_delete() returns trigger
language plpgsql as $$
begin
    perform koostatus_stats_add(
        array_agg(channel_id), array_agg(first_seen_at), array_agg(-1),
        array_agg(-(status >= 'unreported')::int), array_agg(-(status >= 'failed')::int),
        array_agg(-(status >= 'delivered')::int), array_agg(-(status = 'read')::int),
        array_agg(extract(epoch from updated_at - first_seen_at)::double precision),
        array_agg(-(status = 'read')::int),
        array_agg(extract(epoch from delivered_at - first_seen_at)::double precision),
        array_agg(-(status >= 'delivered')::int))
    from before_rows;
    return null;
end
$$;

create trigger stats_on_delete after delete on messages
    referencing old table as before_rows
    for each statement execute function koostatus_stats_on_delete();

create or replace function koostatus_stats_rebuild() returns bigint
language sql as $$
    delete from stats_counts;
    delete from stats_read_times;
    delete from stats_deliver_times;
    insert into stats_counts
        (channel_id, hour, shard, messages, reached_unreported, reached_failed,
         reached_delivered, reached_read)
    select channel_id, date_trunc('hour', first_seen_at, 'UTC'), 0, count(*),
           count(*) filter (where status >= 'unreported'),
           count(*) filter (where status >= 'failed'),
           count(*) filter (where status >= 'delivered'),
           count(*) filter (where status = 'read')
    from messages
    group by 1, 2;
    insert into stats_read_times (channel_id, hours, start, bin, shard, n)
    select m.channel_id, h.hours,
           date_trunc(case h.hours when 1 then 'hour' else 'day' end, m.first_seen_at, 'UTC'),
           koostatus_read_bin(greatest(extract(epoch from m.updated_at - m.first_seen_at), 0)),
           0, count(*)
    from messages m
    cross join (values (1::smallint), (24::smallint)) as h(hours)
    where m.status = 'read'
    group by 1, 2, 3, 4;
    insert into stats_deliver_times (channel_id, hours, start, bin, shard, n)
    select m.channel_id, h.hours,
           date_trunc(case h.hours when 1 then 'hour' else 'day' end, m.first_seen_at, 'UTC'),
           koostatus_read_bin(greatest(extract(epoch from m.delivered_at - m.first_seen_at), 0)),
           0, count(*)
    from messages m
    cross join (values (1::smallint), (24::smallint)) as h(hours)
    where m.status >= 'delivered'
    group by 1, 2, 3, 4;
    select coalesce(sum(messages), 0)::bigint from stats_counts;
$$;

-- The messages stored before this migration: their delivery times.
insert into stats_deliver_times (channel_id, hours, start, bin, shard, n)
select m.channel_id, h.hours,
       date_trunc(case h.hours when 1 then 'hour' else 'day' end, m.first_seen_at, 'UTC'),
       koostatus_read_bin(greatest(extract(epoch from m.delivered_at - m.first_seen_at), 0)),
       0, count(*)
from messages m
cross join (values (1::smallint), (24::smallint)) as h(hours)
where m.status >= 'delivered'
group by 1, 2, 3, 4;
