-- A swept message keeps when it became `unreported` on its own row instead
-- of in a history row of its own: the sweep's update of the message already
-- writes that row, and the history row cost a heap tuple and an index entry
-- more per message (measured: the sweep 20 % faster without it,
-- docs/performance.md). Adding a column without a default changes only the
-- catalogue: no rewrite, no wait.
--
-- The history the API shows is `message_history` plus, for a message with
-- `unreported_at`, its `unreported` entry (the sweep's: received then, once,
-- advancing). A report of the word `unreported` after the sweep adds its
-- receipt to that entry, as it did to the sweep's row before.
alter table messages add column unreported_at timestamptz;

-- The history as the API shows it, in one place: the service reads a
-- message's through this view (db/messages.rs), and so can operators and
-- tests. Per message: its history rows and, when swept, the sweep's entry,
-- merged by status (a later report of `unreported` adds its receipt).
create view message_entries as
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
    ) as entries
    group by status
) as e;
