-- Agent desktops in browsers, at contact-centre scale.

-- 1. Every change names its message's user number, so that a desktop can
-- follow only its own conversations (`/events?user_number=`). A message's
-- user number is fixed by its first report, so copying it is safe. Changes
-- whose message was already pruned get '' (no desktop follows that).
alter table message_changes add column user_number text;
update message_changes c set user_number = m.user_number
from messages m
where m.channel_id = c.channel_id and m.message_id = c.message_id;
update message_changes set user_number = '' where user_number is null;
alter table message_changes alter column user_number set not null;

-- 2. The feed's horizon: readers return only changes of transactions below
-- it (db/changes.rs). pg_snapshot_xmin alone is cluster-wide, so a long
-- transaction in any other database of the PostgreSQL cluster would hold
-- every stream back. Only sessions of this database can write our tables,
-- so the horizon is the oldest transaction still running that may be ours:
-- every running transaction of the snapshot except those that
-- pg_stat_activity (or pg_prepared_xacts) shows in another database. A
-- transaction seen nowhere (it ended a moment ago, a background process)
-- counts as ours: that delays a reader, it never lets one skip a change.
-- pg_stat_activity shows datid and backend_xid of every session to every
-- role, so this needs no privilege beyond connecting.
--
-- Stable, so it sees the snapshot of the statement that calls it; callers
-- wrap it in a scalar subquery so that it is evaluated once.
create function koostatus_feed_horizon() returns xid8
language sql stable as $$
    select coalesce(
        (select min(x)
         from pg_snapshot_xip(pg_current_snapshot()) x
         where not exists (
                   select 1 from pg_stat_activity a
                   where a.backend_xid = x::xid and a.datname <> current_database())
           and not exists (
                   select 1 from pg_prepared_xacts p
                   where p.transaction = x::xid and p.database <> current_database())),
        pg_snapshot_xmax(pg_current_snapshot()))
$$;

-- 3. Stream tickets: a browser's EventSource cannot send an Authorization
-- header, so a desktop exchanges its token for a ticket that it puts in the
-- URL. Stored as SHA-256 like tokens; revoking the token deletes its tickets.
create table event_tickets (
    ticket_hash bytea primary key check (length(ticket_hash) = 32),
    token_hash bytea not null references api_tokens (token_hash) on delete cascade,
    expires_at timestamptz not null
);
create index event_tickets_by_token on event_tickets (token_hash, expires_at);
