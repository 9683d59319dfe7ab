-- The changes feed: one row per change of a message's current status,
-- written by the same statement that changes it (db/messages.rs).
--
-- A position is (xid, seq): the writing transaction and an identity in it.
-- Readers return only changes of transactions older than every transaction
-- still running (pg_snapshot_xmin), so a transaction that started earlier
-- but commits later can never land behind a position a follower has already
-- passed: a follower misses nothing and sees nothing twice. A sequence alone
-- cannot promise that, as numbers are taken before commit.
create table message_changes (
    channel_id text not null,
    xid xid8 not null default pg_current_xact_id(),
    seq bigint generated always as identity,
    message_id text not null,
    status message_status not null,
    changed_at timestamptz not null,
    -- Followers read one channel from a position onwards, in position order;
    -- pruning deletes from the oldest end of the same index.
    primary key (channel_id, xid, seq)
);

-- Wakes the live streams (`/events`) of every instance: one notification
-- per channel per committed statement, delivered only on commit. The feed
-- stays the source of truth; a lost notification only delays a push until
-- the next poll.
create function notify_message_changes() returns trigger
language plpgsql as $$
begin
    perform pg_notify('koostatus_changes', c.channel_id)
    from (select distinct channel_id from new_rows) c;
    return null;
end;
$$;

create trigger message_changes_notify
    after insert on message_changes
    referencing new table as new_rows
    for each statement execute function notify_message_changes();
