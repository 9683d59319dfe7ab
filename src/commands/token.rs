//! `koostatus token ...`: API tokens of the read API.

use anyhow::bail;

use super::{print_columns, rfc3339};
use crate::auth::tokens;
use crate::cli::TokenCommand;
use crate::config::Config;
use crate::db;

pub async fn run(command: TokenCommand, config: Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    match command {
        TokenCommand::Create {
            name,
            channels,
            register,
        } => {
            let ids: Vec<String> = channels.iter().map(|c| c.as_str().to_owned()).collect();
            for id in &ids {
                if !db::channels::exists(&pool, id).await? {
                    bail!("There is no channel `{id}`.");
                }
            }
            let (token, hash) = tokens::generate();
            let scope = (!ids.is_empty()).then_some(ids.as_slice());
            if !db::tokens::insert(&pool, &name, &hash, scope, register).await? {
                bail!(
                    "A token named `{name}` already exists; revoke it first or pick another name."
                );
            }
            // The only time the token is shown: only its hash is stored.
            println!("{token}");
            eprintln!("Created token `{name}`. Store it now: it cannot be shown again.");
        }
        TokenCommand::List => {
            let lines: Vec<[String; 5]> = db::tokens::list(&pool)
                .await?
                .into_iter()
                .map(|t| {
                    [
                        t.name,
                        t.channels.map_or_else(|| "*".to_owned(), |c| c.join(",")),
                        rfc3339(t.created_at),
                        t.last_used_at.map_or_else(|| "never".to_owned(), rfc3339),
                        if t.can_register {
                            "read, register"
                        } else {
                            "read"
                        }
                        .into(),
                    ]
                })
                .collect();
            print_columns(["NAME", "CHANNELS", "CREATED", "LAST USED", "MAY"], &lines);
        }
        TokenCommand::Revoke { name } => {
            if !db::tokens::revoke(&pool, &name).await? {
                bail!("There is no token `{name}`.");
            }
            println!("Revoked token `{name}`.");
        }
    }
    Ok(())
}
