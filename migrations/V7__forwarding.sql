-- Forwarding (SPEC §11): a subscription is a position in one channel's
-- feed and a target URL; src/forward delivers what follows the position.
create table forward_subscriptions (
    name text primary key check (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    channel_id text not null references channels (id) on delete cascade,
    url text not null,
    -- The signing secret, encrypted with forward.secret_key
    -- (XChaCha20-Poly1305: 24-byte nonce, then ciphertext and tag); never
    -- the clear secret.
    secret bytea not null,
    created_at timestamptz not null default now(),
    -- Delivered up to here (V3: a feed position is (xid, seq)).
    position_xid xid8 not null,
    position_seq bigint not null,
    -- The delivery in flight: its webhook-id and the last change it holds
    -- (the first is the one after the position). Recorded before the first
    -- attempt, so that every retry, by this instance or by the one that
    -- takes over, sends the same changes under the same id.
    pending_id text,
    pending_xid xid8,
    pending_seq bigint,
    enabled boolean not null default true,
    disabled_reason text,
    -- Consecutive failed attempts of the delivery in flight, since when,
    -- and the last error; cleared by a 2xx.
    failing_since timestamptz,
    attempts integer not null default 0,
    last_error text,
    delivered_at timestamptz,
    -- Which instance delivers it, until when (see src/forward/mod.rs).
    lease_holder text,
    lease_until timestamptz,
    -- Bumped by every command that changes what is to be delivered
    -- (replay, enable, disable): a delivering instance waiting out a
    -- backoff notices it at its next lease renewal.
    revision bigint not null default 0,
    -- Bumped by replay only: webhook-ids of deliveries made from the feed's
    -- contents (src/forward/delivery.rs) include it, so that a replay is
    -- sent under new ids and a restart under the same ones.
    generation bigint not null default 0,
    check ((pending_id is null) = (pending_xid is null)
           and (pending_id is null) = (pending_seq is null))
);
