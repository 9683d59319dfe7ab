//! Where the WAL goes: a window of the server's WAL read with `pg_waldump`,
//! each record's bytes counted to the relation of its first block, and
//! every full-page image to its block's relation.

use std::collections::HashMap;
use std::process::Command;

use sqlx::PgConnection;

const PG_WALDUMP: &str = "/usr/lib/postgresql/15/bin/pg_waldump";

/// The replication slot that keeps the window's WAL until it is read.
pub const SLOT: &str = "koostatus_bench_growth_wal";

/// Drops the slot if a run left it behind (it would keep WAL forever).
pub async fn drop_slot(db: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query(
        "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1",
    )
    .bind(SLOT)
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Default)]
struct Share {
    bytes: u64,
    records: u64,
    page_images: u64,
}

/// Prints each relation's share of the WAL bytes and page images from
/// `start` to `end`, and its records per report (`reports` were written
/// meanwhile); then drops the slot that held that WAL.
pub async fn print_by_relation(
    db: &mut PgConnection,
    start: &str,
    end: &str,
    reports: f64,
) -> anyhow::Result<()> {
    let data_directory: String = sqlx::query_scalar("show data_directory")
        .fetch_one(&mut *db)
        .await?;
    let names: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "select relfilenode::text, relname::text from pg_class",
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .collect();
    let out = Command::new(PG_WALDUMP)
        .args([
            "-p",
            &format!("{data_directory}/pg_wal"),
            "-s",
            start,
            "-e",
            end,
        ])
        .output()?;
    drop_slot(db).await?;
    // It may still stop early (a segment missing, were the slot gone): the shares
    // below are of what it read, which it says.
    let stopped =
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).trim().to_owned());
    let mut shares: HashMap<String, Share> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // rmgr: Btree len (rec/tot): 64/ 64, tx: ..., desc: ..., blkref #0: rel 1663/5/16400 blk 1 FPW
        let Some(total) = line
            .split_once("len (rec/tot):")
            .and_then(|(_, rest)| rest.split(',').next())
            .and_then(|lens| lens.split('/').nth(1))
            .and_then(|tot| tot.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let mut blocks = line.split("blkref #").skip(1);
        let relation = |block: &str| -> String {
            let node = block
                .split_once("rel ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("");
            let name = names.get(node).cloned();
            name.unwrap_or_else(|| format!("other ({})", rmgr(line)))
        };
        let first = blocks.next();
        let owner = first.map_or_else(|| format!("no block ({})", rmgr(line)), relation);
        let share = shares.entry(owner).or_default();
        share.bytes += total;
        share.records += 1;
        for block in first.into_iter().chain(blocks) {
            if block.contains("FPW") {
                shares.entry(relation(block)).or_default().page_images += 1;
            }
        }
    }
    let mut sorted: Vec<(String, Share)> = shares.into_iter().collect();
    sorted.sort_by_key(|(_, share)| std::cmp::Reverse(share.bytes));
    let read: u64 = sorted.iter().map(|(_, s)| s.bytes).sum();
    let images: u64 = sorted.iter().map(|(_, s)| s.page_images).sum();
    println!(
        "  WAL by relation, 5 s near the end of the load ({start} to {end}, {:.1} MB read{}):",
        read as f64 / 1e6,
        stopped.map_or(String::new(), |e| format!(
            "; pg_waldump stopped early: {e}"
        ))
    );
    println!(
        "    {:<36} {:>8} {:>8} {:>12}",
        "relation", "bytes", "records", "page images"
    );
    for (name, share) in sorted.iter().take(12) {
        println!(
            "    {name:<36} {:>7.1}% {:>8.2} {:>11.1}%",
            share.bytes as f64 * 100.0 / read.max(1) as f64,
            share.records as f64 / reports,
            share.page_images as f64 * 100.0 / images.max(1) as f64
        );
    }
    Ok(())
}

fn rmgr(line: &str) -> &str {
    line.strip_prefix("rmgr: ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("?")
}
