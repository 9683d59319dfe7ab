//! `koostatus channel ...`: create channels, rotate their webhook password,
//! enable and disable them.

use std::io::BufRead;

use anyhow::{Context, bail};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use super::{print_columns, rfc3339};
use crate::auth::password;
use crate::cli::{ChannelCommand, UnreportedAfter};
use crate::config::Config;
use crate::db;

pub async fn run(command: ChannelCommand, config: Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    match command {
        ChannelCommand::Add {
            id,
            name,
            unreported_after,
            ..
        } => {
            let hash = hash_stdin_password().await?;
            if !db::channels::insert(&pool, id.as_str(), &name, &hash).await? {
                bail!(
                    "Channel `{id}` already exists; use `channel set-password` to change its password."
                );
            }
            if unreported_after.is_some() {
                db::channels::set_unreported_after(&pool, id.as_str(), unreported_after).await?;
            }
            println!("Created channel `{id}`.");
        }
        ChannelCommand::Set {
            id,
            unreported_after,
        } => {
            let after = match unreported_after {
                UnreportedAfter::Default => None,
                UnreportedAfter::After(d) => Some(d),
            };
            if !db::channels::set_unreported_after(&pool, id.as_str(), after).await? {
                bail!("There is no channel `{id}`.");
            }
            match after {
                Some(d) => println!(
                    "Messages of channel `{id}` still `sent` after {} become `unreported`.",
                    humantime::format_duration(d)
                ),
                None => println!(
                    "Channel `{id}` follows reports.unreported_after ({}).",
                    humantime::format_duration(config.reports.unreported_after)
                ),
            }
        }
        ChannelCommand::SetPassword {
            id, keep_old_for, ..
        } => {
            let hash = hash_stdin_password().await?;
            let keep_until = keep_old_for
                .map(|d| chrono::Duration::from_std(d).map(|d| Utc::now() + d))
                .transpose()
                .context("The --keep-old-for duration is too long.")?;
            if !db::channels::set_password(&pool, id.as_str(), &hash, keep_until).await? {
                bail!("There is no channel `{id}`.");
            }
            match keep_until {
                Some(until) => println!(
                    "Changed the password of channel `{id}`; the old one works until {}.",
                    rfc3339(until)
                ),
                None => {
                    println!("Changed the password of channel `{id}`; the old one no longer works.")
                }
            }
        }
        ChannelCommand::List => print_table(&db::channels::list(&pool).await?),
        ChannelCommand::Disable { id } => set_enabled(&pool, &id, false).await?,
        ChannelCommand::Enable { id } => set_enabled(&pool, &id, true).await?,
    }
    Ok(())
}

async fn set_enabled(
    pool: &sqlx::PgPool,
    id: &crate::domain::ChannelId,
    enabled: bool,
) -> anyhow::Result<()> {
    if !db::channels::set_enabled(pool, id.as_str(), enabled).await? {
        bail!("There is no channel `{id}`.");
    }
    println!(
        "Channel `{id}` is {}.",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

/// The password is the first line of standard input, never an argument
/// (arguments show in `ps` and shell history).
async fn hash_stdin_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("Cannot read the password from standard input.")?;
    let line = SecretString::from(line);
    let password = line.expose_secret().trim_end_matches(['\n', '\r']);
    password::validate_new(password).map_err(anyhow::Error::msg)?;
    let password = SecretString::from(password);
    Ok(tokio::task::spawn_blocking(move || password::hash(&password)).await?)
}

fn print_table(rows: &[db::channels::ChannelRow]) {
    let lines: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.name.clone(),
                if r.enabled { "yes" } else { "no" }.into(),
                rfc3339(r.created_at),
                rfc3339(r.password_changed_at),
            ]
        })
        .collect();
    print_columns(
        ["ID", "NAME", "ENABLED", "CREATED", "PASSWORD CHANGED"],
        &lines,
    );
}
