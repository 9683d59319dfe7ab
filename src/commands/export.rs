//! `koostatus export`: what `GET …/export` sends, to standard output or a
//! file, with a progress line when standard error is a terminal.

use std::io::{IsTerminal, Write};

use anyhow::{Context, bail};

use crate::cli::ExportArgs;
use crate::config::Config;
use crate::db;
use crate::db::messages::{Keyset, ListFilter};
use crate::domain::Status;
use crate::export::{Format, PAGE, encode, produce};

pub async fn run(args: ExportArgs, config: Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database).await?;
    if !db::channels::exists(&pool, args.channel.as_str()).await? {
        bail!("There is no channel `{}`.", args.channel);
    }
    let status = args
        .status
        .as_deref()
        .map(|s| {
            Status::parse(s).with_context(|| {
                format!("`{s}` is not a status: sent, unreported, failed, delivered or read.")
            })
        })
        .transpose()?;
    let format = Format::parse(&args.format).expect("clap checks the format");
    let updated_after = match args.since {
        Some(since) => Some(
            chrono::Utc::now()
                - chrono::TimeDelta::from_std(since).context("`--since` is too long.")?,
        ),
        None => args.from,
    };
    if let (Some(from), Some(to)) = (updated_after, args.to)
        && from >= to
    {
        bail!("`--from` must be before `--to`.");
    }
    let filter = ListFilter {
        status,
        user_number: args.user_number,
        tag: args.tag,
        updated_after,
        // Strictly before: any message id sorts after ''.
        after: args.to.map(|t| Keyset {
            updated_at: t,
            message_id: String::new(),
        }),
        limit: PAGE,
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("Cannot create `{}`.", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let (pages, mut received) = tokio::sync::mpsc::channel(2);
    // Alone in its process: nothing to yield to.
    tokio::spawn(produce(pool, args.channel.to_string(), filter, pages, None));
    let progress = std::io::stderr().is_terminal();
    let (mut pages_written, mut bytes) = (0u64, 0usize);
    while let Some(page) = received.recv().await {
        let page = encode(format, page.context("Reading the messages failed.")?);
        out.write_all(&page).context("Writing the export failed.")?;
        pages_written += 1;
        bytes += page.len();
        if progress {
            eprint!("\r{} pages ({} KiB) written", pages_written, bytes / 1024);
        }
    }
    out.flush().context("Writing the export failed.")?;
    if progress {
        eprintln!();
    }
    Ok(())
}
