use std::process::ExitCode;

use clap::Parser;
use koostatus::cli::{Cli, Command};
use koostatus::config::{Config, Overrides};
use koostatus::{commands, telemetry};

/// mimalloc instead of glibc's malloc: a request allocates and frees dozens
/// of small blocks across threads (actix workers, the writer on the main
/// runtime), and glibc's arenas spent about a tenth of the service's CPU
/// per callback on them (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status: 0 success, 1 failure at run time (one sentence on stderr),
/// 2 bad usage (clap's own exit).
fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        config_file: cli.global.config.clone(),
        database_url: cli.global.database_url.clone(),
        listen: match &cli.command {
            Command::Serve { listen } => *listen,
            _ => None,
        },
    };
    let config = match Config::load(&overrides) {
        Ok(config) => config,
        Err(e) => return fail(&e.into()),
    };
    telemetry::init(&config.log);
    koostatus::tls::install_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e.into()),
    };
    match runtime.block_on(commands::run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("koostatus: {e:#}");
    ExitCode::FAILURE
}
