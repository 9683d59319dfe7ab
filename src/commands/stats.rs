//! `koostatus stats rebuild`: the statistics' aggregates recomputed from the
//! stored messages, for a database whose aggregates were lost or doubted
//! (the migration that added them filled them once).

use std::time::Instant;

use crate::cli::StatsCommand;
use crate::config::Config;
use crate::db;

pub async fn run(command: StatsCommand, config: Config) -> anyhow::Result<()> {
    match command {
        StatsCommand::Rebuild => {
            let pool = db::connect(&config.database).await?;
            let started = Instant::now();
            let counted = db::stats::rebuild(&pool).await?;
            println!(
                "Rebuilt the statistics of {counted} messages in {:.1} s.",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}
