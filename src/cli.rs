//! Command-line definitions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::domain::ChannelId;

#[derive(Debug, Parser)]
#[command(
    name = "koostatus",
    version,
    about = "KooMessage WhatsApp delivery reports, kept in PostgreSQL"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file [default: ./config.toml when present]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL; overrides DATABASE_URL and the config file
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080]
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Apply pending database migrations
    Migrate,
    /// Manage KooMessage channels and their webhook passwords
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Manage API tokens of the read API
    #[command(subcommand)]
    Token(TokenCommand),
    /// Delete messages (and their history) whose status last changed before a cut-off
    Prune {
        /// Age of the last change, e.g. 90d
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Only count what would be deleted
        #[arg(long)]
        dry_run: bool,
        /// Messages deleted per transaction
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch: i64,
    },
    /// Delivery statistics' aggregates
    #[command(subcommand)]
    Stats(StatsCommand),
    /// Push a channel's status changes to other systems (signed HTTP POSTs)
    #[command(subcommand)]
    Forward(ForwardCommand),
    /// Write a channel's messages as CSV or NDJSON, as the HTTP export does
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The channel whose messages to write
    #[arg(value_name = "CHANNEL")]
    pub channel: ChannelId,
    /// csv or ndjson
    #[arg(long, default_value = "csv", value_parser = ["csv", "ndjson"])]
    pub format: String,
    /// Only messages whose current status is this
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub user_number: Option<String>,
    #[arg(long)]
    pub tag: Option<String>,
    /// Only messages whose status last changed within this long before now (24h, 7d)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          conflicts_with_all = ["from", "to"])]
    pub since: Option<Duration>,
    /// Only messages whose status last changed after this RFC 3339 time
    #[arg(long, value_name = "TIME")]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Only messages whose status last changed before this RFC 3339 time
    #[arg(long, value_name = "TIME")]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Write here instead of standard output
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Create a subscription and print its signing secret once
    Add {
        #[arg(value_parser = subscription_name)]
        name: String,
        #[arg(long, value_name = "ID")]
        channel: ChannelId,
        /// Where deliveries are POSTed (http:// or https://)
        #[arg(long)]
        url: String,
        /// Deliver the channel's whole feed, not only what comes next
        #[arg(long)]
        from_start: bool,
    },
    /// List subscriptions: state, position and lag
    List,
    /// Delete a subscription; a delivery in flight is its last
    Remove { name: String },
    /// Stop delivering (the position is kept)
    Disable { name: String },
    /// Deliver again from where it stopped, with a fresh backoff
    Enable { name: String },
    /// Move a subscription back so that the changes after POSITION are delivered again
    Replay {
        name: String,
        /// A position from a delivery (`changes[].position`), or 0-0 for the start
        #[arg(long, value_name = "POSITION")]
        from: String,
    },
}

fn subscription_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    ok.then(|| s.to_owned())
        .ok_or_else(|| "a subscription name is 1 to 64 letters, digits, '.', '_' or '-'".into())
}

#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// Recompute the statistics from the stored messages (writes wait meanwhile)
    Rebuild,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once; without --channel it reads every channel
    Create {
        #[arg(long, value_parser = token_name)]
        name: String,
        /// A channel the token may read; repeat for several
        #[arg(long = "channel", value_name = "ID")]
        channels: Vec<ChannelId>,
        /// The token may also register messages (POST .../messages)
        #[arg(long)]
        register: bool,
    },
    /// List tokens: name, scope, created, last used (never the secret)
    List,
    /// Revoke a token; requests with it get 401 within seconds
    Revoke { name: String },
}

/// `channel set --unreported-after`: a duration, or the global setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnreportedAfter {
    Default,
    After(Duration),
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err("must be at least 1s".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn duration_or_default(s: &str) -> Result<UnreportedAfter, String> {
    if s == "default" {
        return Ok(UnreportedAfter::Default);
    }
    positive_duration(s).map(UnreportedAfter::After)
}

fn token_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic());
    ok.then(|| s.to_owned())
        .ok_or_else(|| "a token name is 1 to 64 printable ASCII characters without spaces".into())
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Create a channel; the webhook password is read from standard input
    Add {
        id: ChannelId,
        #[arg(long, default_value = "")]
        name: String,
        /// Read the password from the first line of standard input
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Messages still `sent` this long become `unreported` [default:
        /// reports.unreported_after]
        #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
        unreported_after: Option<Duration>,
    },
    /// Change a channel's settings
    Set {
        id: ChannelId,
        /// Messages still `sent` this long become `unreported`; `default`
        /// for reports.unreported_after
        #[arg(long, value_name = "DURATION|default", value_parser = duration_or_default)]
        unreported_after: UnreportedAfter,
    },
    /// Replace a channel's webhook password, read from standard input
    SetPassword {
        id: ChannelId,
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Keep accepting the old password for this long, e.g. 24h
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        keep_old_for: Option<Duration>,
    },
    /// List channels
    List,
    /// Refuse every callback of a channel (401)
    Disable { id: ChannelId },
    /// Accept callbacks of a channel again
    Enable { id: ChannelId },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
