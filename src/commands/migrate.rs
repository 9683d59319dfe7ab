//! `koostatus migrate`: apply pending migrations and say which.

use crate::config::Config;
use crate::db;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let applied = db::migrations::run(&config.database).await?;
    if applied.is_empty() {
        println!(
            "No pending migrations; the schema is at version {}.",
            db::migrations::latest_version()
        );
    }
    for m in applied {
        println!("Applied migration V{}__{}.", m.version, m.name);
    }
    Ok(())
}
