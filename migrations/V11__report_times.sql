-- When each message was first reported failed, delivered and read: the
-- export's three times (SPEC §15), kept on the message by the statement
-- that writes its history, so that an export reads one index in its own
-- order instead of probing every message's history (a random index probe
-- per message: about 10 µs each at a million messages, two thirds of an
-- export's cost). `delivered_at` (V10) differs: it is the first
-- `delivered` or `read`, for the time to deliver.
alter table messages
    add column first_failed_at timestamptz,
    add column first_delivered_at timestamptz,
    add column first_read_at timestamptz;

update messages m
set first_failed_at = h.failed, first_delivered_at = h.delivered, first_read_at = h.read
from (select channel_id, message_id,
             min(first_received_at) filter (where status = 'failed') as failed,
             min(first_received_at) filter (where status = 'delivered') as delivered,
             min(first_received_at) filter (where status = 'read') as read
      from message_history
      where status in ('failed', 'delivered', 'read')
      group by 1, 2) h
where h.channel_id = m.channel_id and h.message_id = m.message_id;
