-- The user-number index by the day a message was first seen. Keyed by
-- (channel, user number) alone, every new message wrote a leaf chosen by
-- its customer: at 1,000,000 customers a random leaf of an index far
-- larger than the buffer cache, so nearly every new message paid a
-- full-page image of that leaf after each checkpoint (39 % of the WAL at
-- 30,000,000 messages), and that WAL brought the next checkpoint sooner.
-- With the day first, the day's messages go to the day's part of the
-- index, a few thousand leaves that stay in the cache and take one image
-- each per checkpoint whatever the load.
--
-- A listing by user number then looks up that customer under each day
-- the channel has messages of (two descents per day: the next day, then
-- the customer in it; see db/messages.rs) instead of once: about 150
-- buffer reads for a month of messages, a few milliseconds for a year.
--
-- Days in UTC, counted from 2000-01-01 so that the value never depends on
-- a session's time zone (date_bin is immutable for timestamptz). A SQL
-- function of one immutable call is inlined, so the index and the queries
-- compute the same expression without calling a function per row.
create function koostatus_day(at timestamptz) returns timestamptz
language sql immutable parallel safe
return date_bin('1 day', at, timestamptz '2000-01-01 00:00:00+00');

drop index messages_by_user_number;
create index messages_by_user_number on messages (channel_id, koostatus_day(first_seen_at), user_number);
