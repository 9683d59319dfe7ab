-- koostatus schema: channels (webhook credentials), messages (current
-- status) and message_history (one row per message and status).

create table channels (
    id text primary key
        check (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    name text not null default '',
    enabled boolean not null default true,
    -- argon2id PHC strings; never a clear password.
    password_hash text not null,
    -- The password replaced by `channel set-password --keep-old-for`, accepted
    -- until previous_password_expires_at so KooMessage can be switched over.
    previous_password_hash text,
    previous_password_expires_at timestamptz,
    created_at timestamptz not null default now(),
    password_changed_at timestamptz not null default now(),
    check ((previous_password_hash is null) = (previous_password_expires_at is null))
);

-- The declaration order is the rank: failed < delivered < read, so that
-- greatest() and > on this type implement the status rule directly.
create type message_status as enum ('failed', 'delivered', 'read');

create table messages (
    channel_id text not null references channels (id),
    message_id text not null,
    sender text not null,
    user_number text not null,
    status message_status not null,
    first_seen_at timestamptz not null,
    -- When the current status last moved forward.
    updated_at timestamptz not null,
    -- The primary key is the only index the webhook needs: every write and
    -- every single-message read is keyed by (channel_id, message_id).
    primary key (channel_id, message_id)
);

create table message_history (
    channel_id text not null,
    message_id text not null,
    status message_status not null,
    first_received_at timestamptz not null,
    last_received_at timestamptz not null,
    receipt_count bigint not null check (receipt_count > 0),
    -- Whether this status moved the current status forward when it first arrived.
    advanced boolean not null,
    -- Fields of the first report of this status beyond the four of the seed.
    extra jsonb not null default '{}' check (jsonb_typeof(extra) = 'object'),
    -- The primary key serves the upsert of a receipt and, as its prefix is
    -- (channel_id, message_id), reading a message's whole history; no
    -- separate index on the foreign key is needed.
    primary key (channel_id, message_id, status),
    foreign key (channel_id, message_id) references messages (channel_id, message_id)
        on delete cascade
);
