//! The read replica's delay, for `/metrics`.

use sqlx::PgExecutor;

/// Seconds the server lags its primary: 0 when it has replayed all it
/// received (an idle primary sends nothing, which is no delay), else the age
/// of the last transaction it replayed; None when it is not a standby.
pub async fn lag_seconds(db: impl PgExecutor<'_>) -> sqlx::Result<Option<f64>> {
    sqlx::query_scalar!(
        r#"
        select case
            when not pg_is_in_recovery() then null
            when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0
            else coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp())::float8, 0)
        end as lag
        "#
    )
    .fetch_one(db)
    .await
}
