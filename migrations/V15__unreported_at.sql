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

-- The same history for whoever reads it in SQL (operators, tests); the
-- service reads one message's in db/messages.rs, by its row.
create view message_entries as
select message_key, channel_id, message_id, status,
       min(first_received_at) as first_received_at,
       max(last_received_at) as last_received_at,
       sum(receipt_count)::bigint as receipt_count,
       bool_or(advanced) as advanced,
       (array_agg(extra order by first_received_at))[1] as extra
from (
    select message_key, channel_id, message_id, status, first_received_at,
           last_received_at, receipt_count, advanced, extra
    from message_history
    union all
    select message_key, channel_id, message_id, 'unreported', unreported_at,
           unreported_at, 1, true, '{}'::jsonb
    from messages
    where unreported_at is not null
) as entries
group by message_key, channel_id, message_id, status;
