//! What the benchmarks read off the machine: a process's CPU time and
//! resident memory, the machine's CPU time by kind (steal among them), and
//! a database's transaction count.

use sqlx::{Executor, PgConnection};

/// Committed and rolled-back transactions of the benchmark's database.
pub async fn transactions(db: &mut PgConnection, name: &str) -> anyhow::Result<i64> {
    // A fresh snapshot of the statistics, not the one cached in this session.
    db.execute("select pg_stat_clear_snapshot()").await?;
    Ok(sqlx::query_scalar(
        "select (xact_commit + xact_rollback)::int8 from pg_stat_database where datname = $1",
    )
    .bind(name)
    .fetch_one(&mut *db)
    .await?)
}

/// User and system CPU time a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// The machine's CPU time by kind, in clock ticks, from /proc/stat.
pub struct MachineTicks {
    busy: u64,
    idle: u64,
    steal: u64,
}

pub fn machine_ticks() -> anyhow::Result<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    let t: Vec<u64> = (line.split_whitespace().skip(1))
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(t.len() >= 8, "/proc/stat has no steal field");
    Ok(MachineTicks {
        busy: t[0] + t[1] + t[2] + t[5] + t[6],
        idle: t[3] + t[4],
        steal: t[7],
    })
}

impl MachineTicks {
    pub fn since(&self, before: &MachineTicks) -> MachineTicks {
        MachineTicks {
            busy: self.busy - before.busy,
            idle: self.idle - before.idle,
            steal: self.steal - before.steal,
        }
    }

    pub fn steal_share(&self) -> f64 {
        self.steal as f64 / (self.busy + self.idle + self.steal).max(1) as f64
    }

    pub fn busy_seconds(&self) -> f64 {
        self.busy as f64 / 100.0
    }
}

/// VmRSS: the service's resident memory now.
pub fn rss_kib(server: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{server}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}
