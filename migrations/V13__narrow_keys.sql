-- Where a report's WAL goes on a large table (docs/performance.md, the
-- growth benchmark): page images of indexes whose inserts land on a random
-- leaf each. Two of the three stop doing so here.

-- 1. A narrow internal key per message, given at first sight in arrival
-- order. Nothing outside looks messages up by it, so it needs no index of
-- its own: it is found through the message's row.
alter table messages add column message_key bigint generated always as identity;

-- 2. History is keyed by (message_key, status) instead of the text ids:
-- a new message's history lands at the right edge of the index, and so do
-- the later reports of recent messages, which are most of them (a message
-- is reported within minutes of being sent). The index entry shrinks from
-- about 60 to 16 bytes. The text ids stay in the row for people reading
-- the table; the table is rebuilt in key order rather than updated in
-- place, which would leave every row's old version behind.
alter table message_history rename to message_history_v12;
create table message_history (
    message_key bigint not null,
    channel_id text not null,
    message_id text not null,
    status text not null
        constraint message_history_status_word check (status ~ '^[a-z][a-z_]{0,31}$'),
    first_received_at timestamptz not null,
    last_received_at timestamptz not null,
    receipt_count bigint not null
        constraint message_history_receipt_count_check check (receipt_count > 0),
    -- Whether this status moved the current status forward when it first arrived.
    advanced boolean not null,
    -- Fields of the first report of this status beyond the four of the seed.
    extra jsonb not null default '{}'
        constraint message_history_extra_check check (jsonb_typeof(extra) = 'object')
);
-- History whose message is gone (none: retention deletes both in one
-- statement since V12) has no key to take and is left behind.
insert into message_history
select m.message_key, h.channel_id, h.message_id, h.status, h.first_received_at,
       h.last_received_at, h.receipt_count, h.advanced, h.extra
from message_history_v12 h
join messages m on m.channel_id = h.channel_id and m.message_id = h.message_id
order by m.message_key, h.status;
drop table message_history_v12;
-- The primary key serves the upsert of a receipt and, as its prefix is the
-- message's key, reading and deleting a message's whole history.
alter table message_history add primary key (message_key, status);

-- 3. The user-number lookup without the update time: a customer's
-- messages share one key, which the index stores once with a list of rows
-- (B-tree deduplication), so the index is a tenth of its size at 1,000,000
-- customers and a new message touches a leaf that was a tenth as likely to
-- be written since the last checkpoint. A listing by user number sorts that
-- customer's messages, tens to hundreds, instead of reading them in order.
drop index messages_by_user_number;
create index messages_by_user_number on messages (channel_id, user_number);
