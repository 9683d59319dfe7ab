-- The history's foreign key to messages goes. Every statement that writes
-- history writes its message in the same statement (db/reports.rs,
-- db/registrations.rs, db/unreported.rs), so the check guaranteed nothing
-- those statements do not. It cost, per history row, a probe of messages
-- and a lock on the message row; and its plan, cached per connection, was
-- a sequential scan of messages when made while the statistics said the
-- table was empty (a fresh deployment that autovacuum had reached): a scan
-- per report, for the connection's lifetime. Retention now deletes a
-- message's history with the message (db/retention.rs).
alter table message_history
    drop constraint message_history_channel_id_message_id_fkey;
