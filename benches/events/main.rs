//! Live events benchmark: callbacks beside thousands of agent desktops.
//!
//! Run: `cargo bench --bench events` (PostgreSQL at 127.0.0.1:5432).
//! Options through the environment: BENCH_CONNECTIONS (64 callback
//! connections), BENCH_SECONDS (10 per phase), BENCH_STREAMS (10000; 0
//! leaves that configuration out), BENCH_PER_USER (1: desktops per user
//! number in that configuration; 10 spreads the streams over a tenth as
//! many numbers, each change then going to 10 streams), BENCH_ROUNDS (1: how often the sequence
//! below runs), BENCH_DB_STATS (1; 0 skips PostgreSQL's transaction counts
//! and the 23 s per phase they wait for). A quick, finer estimate of the
//! 1,000-stream ratio alone: `BENCH_STREAMS=0 BENCH_DB_STATS=0
//! BENCH_ROUNDS=6`, twelve phases with streams, each between two alone.
//!
//! One release `koostatus serve` (its own process), one channel, phases of
//! BENCH_SECONDS each in three configurations:
//! - callbacks alone;
//! - callbacks with 1,000 streams each filtered to one user number plus 10
//!   unfiltered streams;
//! - callbacks with BENCH_STREAMS streams each filtered to one user number;
//!
//! after an unmeasured warm-up of callbacks (BENCH_SECONDS / 2), run in
//! the order alone, then per round 1,000, alone, many, alone, many,
//! alone, 1,000, alone: every phase with streams lies between two phases
//! alone, and its ratio is to the mean of those two, so that drift of this
//! shared machine (the rate alone moves by 10 % or more within a run) falls
//! on the baseline it is compared with; each configuration's ratio is the
//! mean of its phases' ratios, printed with its standard error.
//!
//! Every callback is a new message to one of the streams' user numbers, so
//! each change is wanted by exactly one filtered stream (and the unfiltered
//! ones). The stream clients run on a runtime of their own, apart from the
//! callback load. Printed per phase: callbacks/s and the ratio to alone, callback
//! p99, PostgreSQL transactions/s of the database (pg_stat_database) and the
//! ratio to alone, delivery latency from the callback's 200 to the event at
//! the client (p50/p99), events lost and repeated, and the service's
//! resident memory per open stream. Lost or repeated events, an event of
//! another user number, or an answer other than 200 fail the run; speeds
//! are for people to read.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use support::{Service, cli, env, wait_ready};

mod desktops;
mod load;
mod phase;
mod report;
#[path = "../support/mod.rs"]
mod support;

use desktops::Desktops;
use load::load;

const DB: &str = "koostatus_bench_events";
const CHANNEL: &str = "bench";
const PASSWORD: &str = "bench-webhook-password";
/// How late PostgreSQL's statistics may be, and a margin.
const STATS_LAG: Duration = Duration::from_millis(11_500);

struct Phase {
    name: &'static str,
    filtered: usize,
    unfiltered: usize,
    /// The user numbers the filtered streams follow, stream `i` the
    /// number `i % users`, and the callbacks go to: several desktops per
    /// customer when fewer than `filtered`.
    users: usize,
}

#[derive(Default)]
struct Figures {
    callbacks_per_s: f64,
    p99_ms: f64,
    tps: f64,
    latencies: Vec<Duration>,
    expected: usize,
    lost: usize,
    repeated: usize,
    foreign: usize,
    errors: usize,
    rss_per_stream_kib: Option<f64>,
    streams: usize,
    /// The service's own account of its transactions: write batches and
    /// reads of the feed by the live readers, per second.
    batches_per_s: f64,
    feed_reads_per_s: f64,
    /// Writes (HTTP chunks with events) per second that each filtered
    /// stream received during the load, and events per write.
    filtered_writes_per_s: f64,
    filtered_events_per_write: f64,
    /// CPU seconds per second of the service, and of this process (the
    /// load and the stream clients), during the load.
    service_cpu: f64,
    client_cpu: f64,
    /// The share of the machine's time the hypervisor gave to others
    /// (steal), and the machine's busy CPU (all processes, without steal
    /// and idle) per callback acknowledged.
    steal: f64,
    busy_us_per_callback: f64,
    /// Events delivered per second (each acknowledged change once per
    /// stream that wanted it), and the service's CPU per delivered event
    /// beyond what its callbacks cost alone (see `report`).
    events_per_s: f64,
    event_cpu_us: f64,
    /// Callbacks/s and transactions/s against the phase's baseline (see
    /// `run`).
    rate_ratio: f64,
    tps_ratio: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let connections: usize = env("BENCH_CONNECTIONS", 64);
    let seconds: u64 = env("BENCH_SECONDS", 10);
    let many: usize = env("BENCH_STREAMS", 10_000);
    let per_user: usize = env::<usize>("BENCH_PER_USER", 1).max(1);
    let rounds: usize = env("BENCH_ROUNDS", 1);
    let db_stats = env::<u8>("BENCH_DB_STATS", 1) != 0;
    let duration = Duration::from_secs(seconds);
    // Every stream is a socket here and in the service.
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    anyhow::ensure!(
        limit as usize > many + connections + 100,
        "the open-file limit ({limit}) is too low for {many} streams"
    );
    println!(
        "{connections} callback connections, {seconds} s per phase, {} cores, open-file limit {limit}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    support::with_service(DB, &[], |service| {
        run(
            service,
            connections,
            duration,
            many,
            per_user,
            rounds,
            db_stats,
        )
    })
    .await
}

async fn run(
    service: Service,
    connections: usize,
    duration: Duration,
    many: usize,
    per_user: usize,
    rounds: usize,
    db_stats: bool,
) -> anyhow::Result<()> {
    let (url, port, server) = (service.url.as_str(), service.port, service.pid);
    wait_ready(port).await?;
    let channel_add = ["channel", "add", CHANNEL, "--password-stdin"];
    cli(url, &[], &channel_add, PASSWORD)?;
    let token = cli(url, &[], &["token", "create", "--name", "bench"], "")?;
    let token = token.trim().to_owned();
    let alone = Phase {
        name: "callbacks alone",
        filtered: 0,
        unfiltered: 0,
        users: 1000,
    };
    let few = Phase {
        name: "+ 1,000 filtered + 10 unfiltered streams",
        filtered: 1000,
        unfiltered: 10,
        users: 1000,
    };
    let lots = Phase {
        name: "+ many filtered streams",
        filtered: many,
        unfiltered: 0,
        users: (many / per_user).max(1),
    };
    // Each configuration twice a round, in mirrored order, every time
    // between two phases alone: its baseline (see the ratios below).
    // BENCH_STREAMS=0 leaves the many streams out.
    let with_streams = (0..rounds)
        .flat_map(|_| [&few, &lots, &lots, &few])
        .filter(|p| p.filtered > 0);
    let phases: Vec<&Phase> = std::iter::once(&alone)
        .chain(with_streams.flat_map(|p| [p, &alone]))
        .collect();
    let desktops = Desktops::new()?;
    let mut db = PgConnection::connect(url).await?;
    // Unmeasured: the first phase would otherwise run on empty tables and
    // indexes, faster than every later one, and raise the baseline of the
    // first phase with streams.
    println!(
        "warming up: callbacks alone for {:.0} s, not counted",
        duration.as_secs_f64() / 2.0
    );
    let (_, _, errors) = load(port, connections, 1000, phases.len(), duration / 2).await?;
    anyhow::ensure!(errors == 0, "warm-up: {errors} callbacks not answered 200");
    let mut results = Vec::new();
    let bench = phase::Bench {
        port,
        server,
        token: &token,
        desktops: &desktops,
        connections,
        duration,
        db_stats,
    };
    for (index, phase) in phases.iter().enumerate() {
        results.push(phase::run(&bench, &mut db, phase, index).await?);
    }
    report::report(&phases, results, &alone, &few, &lots)
}
