//! `koostatus prune`: retention. Deletes messages (and their history) whose
//! status last changed before a cut-off, and feed entries older than it, a
//! bounded batch per transaction.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use crate::config::Config;
use crate::db;

pub async fn run(
    config: Config,
    older_than: Duration,
    dry_run: bool,
    batch: i64,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    let report = |line: String| println!("{line}");
    let total = prune(&pool, older_than, dry_run, batch, report).await?;
    let verb = if dry_run { "Would delete" } else { "Deleted" };
    println!(
        "{verb} {total} messages last changed more than {} ago.",
        describe(older_than)
    );
    Ok(())
}

/// "90 days" rather than humantime's "2months 29days 2h 52m 48s".
fn describe(d: Duration) -> String {
    match d.as_secs() {
        s if s > 0 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// Returns how many messages were (or, with `dry_run`, would be) deleted;
/// `progress` gets a line per batch.
pub async fn prune(
    pool: &PgPool,
    older_than: Duration,
    dry_run: bool,
    batch: i64,
    mut progress: impl FnMut(String),
) -> anyhow::Result<u64> {
    let cutoff = Utc::now() - chrono::Duration::from_std(older_than)?;
    let mut total = 0;
    for channel in db::channels::ids(pool).await? {
        if dry_run {
            let n = db::retention::count_older(pool, &channel, cutoff).await? as u64;
            progress(format!("channel {channel}: {n} messages to delete"));
            total += n;
            continue;
        }
        // The feed's entries of that age go too; followers that far behind
        // start again from a listing.
        loop {
            let deleted = db::retention::delete_older(pool, &channel, cutoff, batch).await?;
            let n = deleted.messages;
            if n > 0 {
                total += n;
                progress(format!("channel {channel}: deleted {n} (total {total})"));
            }
            if n == 0 && deleted.feed_entries == 0 {
                break;
            }
        }
    }
    Ok(total)
}
