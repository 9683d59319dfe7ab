-- The feed's horizon (V5), unchanged in meaning, in PL/pgSQL: a SQL
-- function that cannot be inlined is planned again on every call, and
-- planning its query over pg_stat_activity cost about 0.3 ms of server CPU
-- per read of the feed, the larger part of a forwarding delivery's
-- statement (measured with benches/forward.rs). PL/pgSQL plans it once per
-- session. Still stable: it runs in the snapshot of the statement that
-- calls it, which pg_current_snapshot() returns.
create or replace function koostatus_feed_horizon() returns xid8
language plpgsql stable as $$
declare
    snapshot pg_snapshot := pg_current_snapshot();
    horizon xid8;
begin
    select min(x) into horizon
    from pg_snapshot_xip(snapshot) x
    where not exists (
              select 1 from pg_stat_activity a
              where a.backend_xid = x::xid and a.datname <> current_database())
      and not exists (
              select 1 from pg_prepared_xacts p
              where p.transaction = x::xid and p.database <> current_database());
    return coalesce(horizon, pg_snapshot_xmax(snapshot));
end;
$$;
