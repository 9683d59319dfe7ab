-- The feed's notification (`koostatus_changes`, V3) is sent by the service
-- (db/announcer.rs) instead of a trigger on every statement that writes
-- the feed: the writers mark the channels they changed, and one task per
-- instance notifies at most once per 20 ms under load. A notification per
-- statement, about 400 a second at full load, cost PostgreSQL about 6 % of
-- its CPU per report (docs/performance.md); the readers they wake read a
-- channel at most ten times a second. Whoever writes the feed by hand
-- notifies as the service does: select pg_notify('koostatus_changes', id).
drop trigger message_changes_notify on message_changes;
drop function notify_message_changes();
