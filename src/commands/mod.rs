//! One file per subcommand.

pub mod channel;
pub mod migrate;
pub mod prune;
pub mod serve;
pub mod token;

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
    }
}
