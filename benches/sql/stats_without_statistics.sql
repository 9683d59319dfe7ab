-- db::reports::record_reports as it was before the statistics (c73a0d1),
-- on the history of V18 (without the message's id); the statistics
-- benchmark (benches/stats.rs) runs it beside today's statement.
        with input as (
            select * from unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                 $5::message_status[], $6::timestamptz[], $7::jsonb[])
                as t(channel_id, message_id, sender, user_number, status, received_at, extra)
        ),
        message as (
            insert into messages as m
                (channel_id, message_id, sender, user_number, status, first_seen_at, updated_at,
                 changed_xid)
            select channel_id, message_id, sender, user_number, status, received_at, received_at,
                   pg_current_xact_id()
            from input
            order by channel_id, message_id
            on conflict (channel_id, message_id) do update
                set status = greatest(m.status, excluded.status),
                    updated_at = case when excluded.status > m.status
                                      then excluded.updated_at else m.updated_at end,
                    -- After the message's previous change in feed order (V4).
                    changed_xid = case when excluded.status > m.status
                                       then greatest(excluded.changed_xid, m.changed_xid)
                                       else m.changed_xid end
                where m.sender = excluded.sender and m.user_number = excluded.user_number
            returning m.message_key, m.channel_id, m.message_id, m.user_number, m.status,
                      m.changed_xid
        ),
        history as (
            insert into message_history as h
                (message_key, channel_id, status, first_received_at, last_received_at,
                 receipt_count, advanced, extra)
            select message.message_key, i.channel_id, i.status, i.received_at, i.received_at, 1,
                   message.status = i.status, i.extra
            from input i
            join message on message.channel_id = i.channel_id and message.message_id = i.message_id
            order by message.message_key
            on conflict (message_key, status) do update
                set receipt_count = h.receipt_count + 1,
                    last_received_at = greatest(h.last_received_at, excluded.last_received_at)
            returning h.message_key, h.status, h.first_received_at,
                      h.receipt_count = 1 as first_of_status, h.advanced
        ),
        -- The current status changed exactly when its history entry is new
        -- and is the current status: had the message held that status
        -- before, the entry would exist.
        change as (
            insert into message_changes
                (channel_id, message_id, user_number, status, changed_at, xid)
            select message.channel_id, message.message_id, message.user_number, message.status,
                   h.first_received_at, message.changed_xid
            from history h
            join message on message.message_key = h.message_key
            where h.first_of_status and h.advanced
            order by message.channel_id, message.message_id
        )
        select message.channel_id as channel_id, message.message_id as message_id,
               h.first_of_status as first_of_status, h.advanced as advanced
        from history h
        join message on message.message_key = h.message_key
