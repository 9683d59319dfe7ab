-- The feed position of a message's latest change, so that its next change
-- lands after it. A position's xid is its writer's transaction id, and ids
-- are taken at a transaction's first write, not in commit order: a batch
-- that wrote other rows first (lower id) and then waited for a message's row
-- lock would otherwise place its change before the one it waited for. The
-- next change of a message takes the greater of its own transaction id and
-- this one (db/messages.rs); the feed stays lossless, as a position's xid is
-- still never below its writer's own.
alter table messages add column changed_xid xid8;
