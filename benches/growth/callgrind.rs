//! The service's instructions per callback, counted by callgrind, and the
//! functions they go to: the steadiest measure of the service's own cost,
//! since it does not move with the machine's other load.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::{callbacks, wait_ready, with_service_on};
use crate::{CHANNEL, DB, PASSWORD};

/// Callbacks on this many connections: each connection's first callback
/// pays argon2, which under callgrind takes seconds.
const CONNECTIONS: usize = 8;

/// Runs `bin` under callgrind on a copy of `template`: 10 s of callbacks
/// unmeasured, counters zeroed, `seconds` of callbacks counted. Prints
/// instructions per callback and the top functions by their own
/// instructions.
pub async fn run(bin: &str, index: usize, template: &str, seconds: u64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "koostatus-callgrind-{}-{index}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let wrapper = dir.join("koostatus");
    let out = dir.join("callgrind.out");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={} {bin} \"$@\"\n",
            out.display()
        ),
    )?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let wrapper = wrapper.to_str().unwrap_or_default().to_owned();
    let dumps = dir.clone();
    let outcome = with_service_on(DB, Some(template), &wrapper, &[], |service| async move {
        // Starting under valgrind takes longer than wait_ready allows once.
        let mut ready = wait_ready(service.port).await;
        for _ in 0..3 {
            if ready.is_ok() {
                break;
            }
            ready = wait_ready(service.port).await;
        }
        ready?;
        let warm_up = Duration::from_secs(10);
        callbacks(service.port, CHANNEL, PASSWORD, CONNECTIONS, warm_up, 7).await?;
        control(service.pid, "-z")?;
        let duration = Duration::from_secs(seconds);
        let (_, latencies) =
            callbacks(service.port, CHANNEL, PASSWORD, CONNECTIONS, duration, 8).await?;
        control(service.pid, "-d")?;
        // Before the service stops: its exit writes a dump of its own.
        anyhow::Ok((latencies.len(), newest_dump(&dumps)?))
    })
    .await;
    let (counted, dump) = outcome?;
    let text = std::fs::read_to_string(&dump)?;
    let total: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals: ")
                .or_else(|| l.strip_prefix("summary: "))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no totals in {}", dump.display()))?;
    println!(
        "  under callgrind: {counted} callbacks, {:.0} instructions per callback; by function (own instructions):",
        total / counted as f64
    );
    for (name, own) in own_costs(&text).into_iter().take(15) {
        let name: String = name.chars().take(120).collect();
        println!("    {:5.1} %  {name}", 100.0 * own as f64 / total);
    }
    println!(
        "  (the whole profile: callgrind_annotate {})",
        dump.display()
    );
    Ok(())
}

/// Instructions each function spent itself (not in its callees), largest
/// first, read from the profile: callgrind_annotate here puts a thread's
/// whole cost on its entry function (`clone`), whatever its options.
///
/// The format: `fn=(id) name` opens a function (later just `fn=(id)`); a
/// line of numbers is a position and its cost, the function's own unless a
/// `calls=` line precedes it, which makes it the cost of that call.
fn own_costs(profile: &str) -> Vec<(String, u64)> {
    let mut names: std::collections::HashMap<String, String> = Default::default();
    let mut own: std::collections::HashMap<String, u64> = Default::default();
    let mut current = String::new();
    let mut call_follows = false;
    for line in profile.lines() {
        if let Some(spec) = line.strip_prefix("fn=") {
            current = match spec.split_once(' ') {
                Some((id, name)) => {
                    names.insert(id.to_owned(), name.to_owned());
                    name.to_owned()
                }
                None => names.get(spec).cloned().unwrap_or_else(|| spec.to_owned()),
            };
        } else if line.starts_with("calls=") {
            call_follows = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            if !std::mem::take(&mut call_follows) {
                let cost = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
                *own.entry(current.clone()).or_default() += cost.unwrap_or(0);
            }
        } else if let Some(spec) = line.strip_prefix("cfn=") {
            // A callee named for the first time defines its id too.
            if let Some((id, name)) = spec.split_once(' ') {
                names.insert(id.to_owned(), name.to_owned());
            }
        }
    }
    let mut own: Vec<(String, u64)> = own.into_iter().collect();
    own.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    own
}

fn control(pid: u32, what: &str) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .args([what, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "callgrind_control {what} failed");
    Ok(())
}

/// The dump `callgrind_control -d` wrote: the newest file of `dir` named
/// after the output file.
fn newest_dump(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let mut dumps: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            name.starts_with("callgrind.out")
                .then(|| Some((e.metadata().ok()?.modified().ok()?, e.path())))?
        })
        .collect();
    dumps.sort();
    dumps
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| anyhow::anyhow!("callgrind wrote no dump in {}", dir.display()))
}
