-- A history row repeats its message's id (V13 kept it for people reading
-- the table): 34 bytes of a row of about 120 that its key, `message_key`,
-- already gives; `message_entries` (V15) shows the history with the ids.
-- Without it each report writes 2 % less WAL and the batch statement joins
-- its parts by the key (docs/performance.md). `channel_id` stays: it is
-- the distribution column of a sharded history (docs/operations.md).
-- Dropping a column changes only the catalogue: no rewrite, no wait; rows
-- written before keep the bytes until retention deletes them.
alter table message_history drop column message_id;
