-- A message first known from a report of a ranked status keeps that
-- report's history entry on its own row instead of in a history row: the
-- insert of the message already writes that row, and the history row cost
-- a heap tuple and an index entry more per new message (measured: about a
-- fifth of a new message's WAL, docs/performance.md). Adding columns
-- without a default changes only the catalogue: no rewrite, no wait; rows
-- written before keep their history rows (`first_status` null).
--
-- The entry on the row is the first report's: received at `first_seen_at`,
-- once, advancing (it set the status), with its extra fields (null when it
-- had none). A later report of the same status adds a history row of its
-- own, which the view merges with this entry (its receipts add up, as the
-- sweep's `unreported` entry's do, V15). Messages first known from a
-- registration or from an unranked word keep their first entry in
-- `message_history`.
alter table messages add column first_status message_status,
                     add column first_extra jsonb;

-- The history as the API shows it: its rows, the sweep's entry (V15) and
-- the first report's entry on the row, merged by status.
create or replace view message_entries as
select m.message_key, m.channel_id, m.message_id, e.status, e.first_received_at,
       e.last_received_at, e.receipt_count, e.advanced, e.extra
from messages m
cross join lateral (
    select status,
           min(first_received_at) as first_received_at,
           max(last_received_at) as last_received_at,
           sum(receipt_count)::bigint as receipt_count,
           bool_or(advanced) as advanced,
           (array_agg(extra order by first_received_at))[1] as extra
    from (
        select h.status, h.first_received_at, h.last_received_at, h.receipt_count,
               h.advanced, h.extra
        from message_history h
        where h.message_key = m.message_key
        union all
        select 'unreported', m.unreported_at, m.unreported_at, 1, true, '{}'::jsonb
        where m.unreported_at is not null
        union all
        select m.first_status::text, m.first_seen_at, m.first_seen_at, 1, true,
               coalesce(m.first_extra, '{}'::jsonb)
        where m.first_status is not null
    ) as entries
    group by status
) as e;
