-- Delivery statistics (GET /api/v1/channels/{id}/stats): aggregates kept
-- by the statements that change `messages` (the batch upsert of
-- db/reports.rs, and a trigger on deletes), so that a request reads a few
-- rows per bucket instead of scanning a channel.
--
-- Messages are counted in the UTC hour of their first_seen_at, which never
-- changes. Statuses only move forward (failed < delivered < read), so a
-- message's current status follows from two counters: whether it has
-- reached `delivered` (delivered or read) and whether it has reached `read`.
-- failed = messages - reached_delivered, delivered = reached_delivered -
-- reached_read, read = reached_read.
--
-- Every batch of reports touches the current hour's row. One row per hour
-- would be a lock that every concurrent batch waits for until the one
-- before it commits; so each row is split into shards, one per database
-- session (its backend pid), and a request adds the shards up.
create table stats_counts (
    channel_id text not null,
    hour timestamptz not null,
    shard smallint not null,
    messages bigint not null,
    reached_delivered bigint not null,
    reached_read bigint not null,
    primary key (channel_id, hour, shard)
);

-- Time to read (first_seen_at to the first `read` report, which is the
-- read message's updated_at) as a histogram: bin 0 holds under 1 s, bin k
-- holds [1.1^(k-1), 1.1^k) s, so a bin's geometric middle is within 5 % of
-- every value in it. Kept per hour and per UTC day (`hours` 1 or 24), so
-- that a 90-day daily request reads days, not hours.
create table stats_read_times (
    channel_id text not null,
    hours smallint not null check (hours in (1, 24)),
    start timestamptz not null,
    bin smallint not null,
    shard smallint not null,
    n bigint not null,
    primary key (channel_id, hours, start, bin, shard)
);

create function koostatus_read_bin(seconds double precision) returns smallint
language sql immutable as $$
    select case when seconds < 1 then 0
                else 1 + floor(ln(seconds) / ln(1.1))::int end::smallint
$$;

-- Adds changes to the aggregates, one array element per changed message:
-- its channel, first_seen_at, the change of the three counters, its time
-- to read in seconds and the change of the read count (+1 became read, -1
-- a read message deleted, 0 neither). Rows in key order, so that
-- concurrent statements lock them in one order.
create function koostatus_stats_add(
    channel_ids text[], seen timestamptz[], messages int[], reached_delivered int[],
    reached_read int[], read_seconds double precision[], read_n int[]
) returns void
language sql as $$
    insert into stats_counts as s
        (channel_id, hour, shard, messages, reached_delivered, reached_read)
    select d.channel_id, date_trunc('hour', d.seen, 'UTC'), pg_backend_pid() % 64,
           sum(d.messages), sum(d.reached_delivered), sum(d.reached_read)
    from unnest(channel_ids, seen, messages, reached_delivered, reached_read)
        as d(channel_id, seen, messages, reached_delivered, reached_read)
    group by 1, 2
    order by 1, 2
    on conflict (channel_id, hour, shard) do update
        set messages = s.messages + excluded.messages,
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
$$;

-- The batch upsert (db/reports.rs) needs each message's status before
-- the statement, under the row's lock, which RETURNING cannot give in
-- PostgreSQL 15: the upsert copies it here. Null for a message inserted by
-- that statement.
alter table messages add column previous_status message_status;

-- Deleted messages (pruning) leave the statistics. The transition table
-- holds the rows as the delete removed them.
create function koostatus_stats_on_delete() returns trigger
language plpgsql as $$
begin
    perform koostatus_stats_add(
        array_agg(channel_id), array_agg(first_seen_at), array_agg(-1),
        array_agg(-(status >= 'delivered')::int), array_agg(-(status = 'read')::int),
        array_agg(extract(epoch from updated_at - first_seen_at)::double precision),
        array_agg(-(status = 'read')::int))
    from before_rows;
    return null;
end
$$;

create trigger stats_on_delete after delete on messages
    referencing old table as before_rows
    for each statement execute function koostatus_stats_on_delete();

-- Recomputes every aggregate from the messages (`koostatus stats rebuild`
-- calls it under a lock that holds writers off); returns the messages
-- counted. Here it counts the messages stored before this migration.
create function koostatus_stats_rebuild() returns bigint
language sql as $$
    delete from stats_counts;
    delete from stats_read_times;
    insert into stats_counts
        (channel_id, hour, shard, messages, reached_delivered, reached_read)
    select channel_id, date_trunc('hour', first_seen_at, 'UTC'), 0, count(*),
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
    select coalesce(sum(messages), 0)::bigint from stats_counts;
$$;

select koostatus_stats_rebuild();
