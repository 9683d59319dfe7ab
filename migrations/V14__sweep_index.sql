-- The sweep's index (V10's messages_unanswered) held `unreported` messages
-- too, so turning a message `unreported` inserted a new entry into it on
-- top of the three every update of a message makes, and the index kept
-- every message that never got a report, for ever. It now holds only the
-- messages still `sent`: a swept message leaves it, and it stays as small
-- as the backlog. The metrics count `unreported` messages from the
-- statistics instead (db/unreported.rs), which are exact and do not grow
-- with the messages.
--
-- The narrow key replaces the text id as the tie-break that makes the
-- order total (a pass continues after its last message): 8 bytes instead
-- of 34, and it is what the sweep partitions by when it runs in parallel.
drop index messages_unanswered;
create index messages_unsent on messages (channel_id, first_seen_at, message_key)
    where status = 'sent';
