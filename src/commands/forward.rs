//! `koostatus forward ...`: subscriptions that push a channel's status
//! changes to other systems (src/forward delivers them).

use anyhow::{Context, bail};
use chrono::Utc;
use secrecy::ExposeSecret;

use super::{print_columns, rfc3339};
use crate::cli::ForwardCommand;
use crate::config::Config;
use crate::db;
use crate::db::changes::Position;
use crate::db::forwarding::{self, Listed, Replay};
use crate::forward::{secret, target};

pub async fn run(command: ForwardCommand, config: Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    match command {
        ForwardCommand::Add {
            name,
            channel,
            url,
            from_start,
        } => {
            let key = config
                .forward
                .secret_key
                .as_ref()
                .and_then(secret::Key::from_config)
                .context("Set forward.secret_key (base64 of 32 random bytes, e.g. `openssl rand -base64 32`; the same on every instance) first: it encrypts the signing secrets in the database.")?;
            let channel = channel.as_str();
            if !db::channels::exists(&pool, channel).await? {
                bail!("There is no channel `{channel}`.");
            }
            let parsed = target::parse(&url).map_err(|why| anyhow::anyhow!("Refused: {why}."))?;
            target::check(&parsed, config.forward.allow_private_targets)
                .await
                .map_err(|why| anyhow::anyhow!("Refused: {why}."))?;
            let (printable, sealed) = key.generate(&name);
            if !forwarding::insert(&pool, &name, channel, parsed.as_str(), &sealed, from_start)
                .await?
            {
                bail!(
                    "A subscription named `{name}` already exists; remove it first or pick another name."
                );
            }
            // The only time the secret is shown: the database keeps it
            // encrypted.
            println!("{}", printable.expose_secret());
            eprintln!(
                "Created subscription `{name}`: changes of channel `{channel}` go to {parsed}, {}. The line above is its signing secret: give it to the receiver now, it cannot be shown again.",
                if from_start {
                    "from the start of the feed"
                } else {
                    "from the next change"
                }
            );
        }
        ForwardCommand::List => {
            let lines: Vec<[String; 6]> = forwarding::list(&pool)
                .await?
                .into_iter()
                .map(|s| {
                    [
                        s.name.clone(),
                        s.channel_id.clone(),
                        s.url.clone(),
                        state(&s),
                        s.position.to_string(),
                        format!(
                            "{} changes, {:.1} s",
                            s.lag_changes,
                            s.lag_seconds.unwrap_or(0.0).max(0.0)
                        ),
                    ]
                })
                .collect();
            print_columns(
                ["NAME", "CHANNEL", "URL", "STATE", "POSITION", "LAG"],
                &lines,
            );
        }
        ForwardCommand::Remove { name } => {
            if !forwarding::remove(&pool, &name).await? {
                bail!("There is no subscription `{name}`.");
            }
            println!("Removed subscription `{name}`.");
        }
        ForwardCommand::Disable { name } => {
            let reason = format!("by the operator at {}", rfc3339(Utc::now()));
            if !forwarding::set_enabled(&pool, &name, false, Some(&reason)).await? {
                bail!("There is no subscription `{name}`.");
            }
            println!("Disabled subscription `{name}`; its position is kept.");
        }
        ForwardCommand::Enable { name } => {
            if !forwarding::set_enabled(&pool, &name, true, None).await? {
                bail!("There is no subscription `{name}`.");
            }
            println!("Enabled subscription `{name}`.");
        }
        ForwardCommand::Replay { name, from } => {
            let Some(position) = Position::parse(&from) else {
                bail!(
                    "`{from}` is not a position; use one from a delivery (changes[].position) or 0-0 for the start."
                );
            };
            match forwarding::replay(&pool, &name, position).await? {
                Replay::Done => println!(
                    "Subscription `{name}` delivers the changes after {position} again, within seconds."
                ),
                Replay::NoSuchSubscription => bail!("There is no subscription `{name}`."),
                Replay::Ahead(at) => bail!(
                    "Subscription `{name}` stands at {at}, before {position}: replay moves back only."
                ),
            }
        }
    }
    Ok(())
}

/// `active`, `retrying since T: <last error>` or `disabled: <why>`.
fn state(s: &Listed) -> String {
    if !s.enabled {
        let why = s.disabled_reason.as_deref().unwrap_or("no reason recorded");
        return format!("disabled: {why}");
    }
    match s.failing_since {
        Some(since) => format!(
            "retrying since {} ({} failed attempt{}): {}",
            rfc3339(since),
            s.attempts,
            if s.attempts == 1 { "" } else { "s" },
            s.last_error.as_deref().unwrap_or("")
        ),
        None => "active".to_owned(),
    }
}
