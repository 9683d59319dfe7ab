//! One file per subcommand.

pub mod channel;
pub mod export;
pub mod forward;
pub mod migrate;
pub mod prune;
pub mod serve;
pub mod stats;
pub mod token;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::cli::Command;
use crate::config::Config;

pub async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { .. } => serve::run(config).await,
        Command::Migrate => migrate::run(config).await,
        Command::Channel(command) => channel::run(command, config).await,
        Command::Token(command) => token::run(command, config).await,
        Command::Prune {
            older_than,
            dry_run,
            batch,
        } => prune::run(config, older_than, dry_run, batch).await,
        Command::Stats(command) => stats::run(command, config).await,
        Command::Forward(command) => forward::run(command, config).await,
        Command::Export(args) => export::run(args, config).await,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Prints rows as left-aligned columns under a header.
fn print_columns<const N: usize>(header: [&str; N], lines: &[[String; N]]) {
    let header = header.map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for line in lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for line in std::iter::once(&header).chain(lines) {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
