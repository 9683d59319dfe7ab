//! The built binary as its own process: CLI commands and `serve`.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A migrated database with channel `channel` added through the CLI, for a
/// `serve` started afterwards.
pub async fn database_with_channel(channel: &str, password: &str) -> super::TestDatabase {
    let db = super::migrated_database().await;
    let added = run_cli(
        &db.url(),
        &["channel", "add", channel, "--password-stdin"],
        &format!("{password}\n"),
    );
    assert!(added.status.success());
    db
}

/// A CLI command against `db_url`, its stdin given; waits for it.
pub fn run_cli(db_url: &str, args: &[&str], stdin: &str) -> Output {
    run_cli_with(db_url, args, stdin, &[])
}

/// As [`run_cli`], with extra environment.
pub fn run_cli_with(db_url: &str, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_koostatus"))
        .arg("--database-url")
        .arg(db_url)
        .args(args)
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused at parsing exits before reading: ignore a broken pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// A child process that a failing test must not leave running.
pub struct KillOnDrop(pub Option<std::process::Child>);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `koostatus serve` as its own process on `port`, with extra environment.
pub fn spawn_serve(
    db_url: &str,
    port: u16,
    env: &[(&str, &str)],
    stderr: impl Into<Stdio>,
) -> KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_koostatus"))
        .args([
            "--database-url",
            db_url,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .envs(env.iter().copied())
        .stderr(stderr)
        .spawn()
        .unwrap();
    KillOnDrop(Some(child))
}

/// Waits until `/readyz` answers 200, at most 20 s.
pub async fn wait_ready(port: u16) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
