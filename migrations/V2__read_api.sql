-- The read API for agent desktops: API tokens and the listing indexes.

create table api_tokens (
    name text primary key check (length(name) between 1 and 64),
    -- SHA-256 of the token; the token itself is shown once and never stored.
    -- Unique: it is how a request finds its token.
    token_hash bytea not null unique check (length(token_hash) = 32),
    -- Channels the token may read; null means every channel.
    channels text[],
    created_at timestamptz not null default now(),
    -- Written at most once a minute per token and instance, not per request.
    last_used_at timestamptz
);

-- Listing a channel's messages, newest change first, with keyset pagination
-- on (updated_at, message_id): the index delivers rows in that order from the
-- cursor onwards, so page 10,000 costs what page 1 does.
create index messages_by_update on messages (channel_id, updated_at, message_id);

-- The same listing filtered to one customer (a desktop showing one
-- conversation): without it that filter would walk the whole channel.
create index messages_by_user_number on messages (channel_id, user_number, updated_at, message_id);
