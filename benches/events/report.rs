//! The events benchmark's results: each phase against the phases alone
//! beside it, printed per phase and per configuration, and the checks that
//! fail the run (an answer other than 200, an event lost, repeated, out of
//! order or of another user number).

use std::time::Duration;

use crate::support::pct;
use crate::{Figures, Phase};

/// Prints the table and summary of `results` (one per phase of `phases`)
/// and fails on a wrong answer or event.
pub fn report(
    phases: &[&Phase],
    mut results: Vec<Figures>,
    alone: &Phase,
    few: &Phase,
    lots: &Phase,
) -> anyhow::Result<()> {
    // Each phase against its baseline: the phases alone on either side of
    // it, or for those alone, all of them. A configuration's ratio is the
    // mean of its phases' ratios.
    let alone_runs = runs_of(phases, &results, alone);
    let alone_rate = mean(&alone_runs, |f| f.callbacks_per_s);
    let alone_tps = mean(&alone_runs, |f| f.tps);
    let alone_busy = mean(&alone_runs, |f| f.busy_us_per_callback);
    let alone_steal = mean(&alone_runs, |f| f.steal);
    let alone_phases = alone_runs.len();
    let alone_cpu = mean(&alone_runs, cpu_per_callback);
    let baselines: Vec<(f64, f64, f64)> = (0..phases.len())
        .map(|i| {
            if std::ptr::eq(phases[i], alone) {
                return (alone_rate, alone_tps, alone_cpu);
            }
            let (before, after) = (&results[i - 1], &results[i + 1]);
            (
                (before.callbacks_per_s + after.callbacks_per_s) / 2.0,
                (before.tps + after.tps) / 2.0,
                (cpu_per_callback(before) + cpu_per_callback(after)) / 2.0,
            )
        })
        .collect();
    for (f, (rate, tps, cpu_per_callback)) in results.iter_mut().zip(baselines) {
        f.rate_ratio = f.callbacks_per_s / rate;
        f.tps_ratio = f.tps / tps;
        // What the service spent beyond its callbacks (at their cost
        // alone, beside), per event it delivered.
        let beyond = f.service_cpu - cpu_per_callback * f.callbacks_per_s;
        f.event_cpu_us = beyond * 1e6 / f.events_per_s.max(1.0);
    }
    println!(
        "\n{:<42} {:>11} {:>6} {:>8} {:>8} {:>6} {:>9} {:>9} {:>6} {:>6} {:>12}",
        "phase, in the order run",
        "callbacks/s",
        "ratio",
        "p99 ms",
        "db tx/s",
        "ratio",
        "event p50",
        "event p99",
        "lost",
        "twice",
        "RSS/stream"
    );
    let name = |phase: &Phase| match (phase.filtered, phase.unfiltered) {
        (0, _) | (_, 1..) => phase.name.to_owned(),
        (n, 0) if phase.users < n => {
            format!(
                "+ {n} filtered streams, {} per user number",
                n / phase.users
            )
        }
        (n, 0) => format!("+ {n} filtered streams"),
    };
    for (phase, f) in phases.iter().zip(&results) {
        let (p50, p99) = if f.streams > 0 {
            (
                format!("{:.1} ms", pct(&f.latencies, 0.5)),
                format!("{:.1} ms", pct(&f.latencies, 0.99)),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<42} {:>11.0} {:>6.2} {:>8.2} {:>8} {:>6} {p50:>9} {p99:>9} {:>6} {:>6} {:>12}",
            name(phase),
            f.callbacks_per_s,
            f.rate_ratio,
            f.p99_ms,
            unless_nan(f.tps, 0),
            unless_nan(f.tps_ratio, 2),
            f.lost,
            f.repeated,
            f.rss_per_stream_kib
                .map_or("-".into(), |k| format!("{k:.1} KiB")),
        );
    }
    println!(
        "\nsummary (each configuration: the mean of its phases, and of their ratios to the phases alone beside them; alone: the mean of its {} phases):",
        alone_phases
    );
    for kind in [few, lots] {
        let runs = runs_of(phases, &results, kind);
        if runs.is_empty() {
            continue;
        }
        let mut latencies: Vec<Duration> = runs
            .iter()
            .flat_map(|f| f.latencies.iter().copied())
            .collect();
        latencies.sort();
        println!(
            "{}: callbacks {:.0}/s = {:.2} of alone (all phases alone: {alone_rate:.0}/s), p99 {:.1} ms; db {} tx/s = {} of alone ({}); events p50 {:.1} ms, p99 {:.1} ms; lost {}, twice {}; RSS {:.1} KiB per open stream (first opening)",
            name(kind),
            mean(&runs, |f| f.callbacks_per_s),
            mean(&runs, |f| f.rate_ratio),
            mean(&runs, |f| f.p99_ms),
            unless_nan(mean(&runs, |f| f.tps), 0),
            unless_nan(mean(&runs, |f| f.tps_ratio), 2),
            unless_nan(alone_tps, 0),
            pct(&latencies, 0.5),
            pct(&latencies, 0.99),
            runs.iter().map(|f| f.lost).sum::<usize>(),
            runs.iter().map(|f| f.repeated).sum::<usize>(),
            // The first opening: later ones reuse memory freed before.
            runs[0].rss_per_stream_kib.unwrap_or(0.0),
        );
        let ratios: Vec<String> = runs
            .iter()
            .map(|f| format!("{:.2}", f.rate_ratio))
            .collect();
        println!(
            "{}: ratio per phase {}; standard error of their mean {:.3}",
            name(kind),
            ratios.join(", "),
            standard_error(&runs, |f| f.rate_ratio),
        );
        println!(
            "{}: {:.0} events delivered/s; service CPU per event beyond its callbacks' cost alone {:.2} us (per phase: {})",
            name(kind),
            mean(&runs, |f| f.events_per_s),
            mean(&runs, |f| f.event_cpu_us),
            runs.iter()
                .map(|f| format!("{:.2}", f.event_cpu_us))
                .collect::<Vec<_>>()
                .join(", "),
        );
        // A second view of the streams' cost beside the rate; it rises with
        // steal too (seen here), so neither view is free of the host.
        println!(
            "{}: machine busy CPU per callback {:.0} us = {:.2} of alone ({:.0} us); stolen {:.0} % (alone {:.0} %)",
            name(kind),
            mean(&runs, |f| f.busy_us_per_callback),
            mean(&runs, |f| f.busy_us_per_callback) / alone_busy,
            alone_busy,
            mean(&runs, |f| f.steal) * 100.0,
            alone_steal * 100.0,
        );
    }
    for (phase, f) in phases.iter().zip(&results) {
        if f.streams > 0 {
            println!(
                "{}: {} streams, {} events expected, {} delivered",
                phase.name,
                f.streams,
                f.expected,
                f.latencies.len()
            );
        }
        println!(
            "{}: the service's transactions: {:.0} write batches/s, {:.0} feed reads/s; CPU: service {:.2}, this benchmark's clients {:.2} cores",
            phase.name, f.batches_per_s, f.feed_reads_per_s, f.service_cpu, f.client_cpu
        );
        println!(
            "{}: machine: {:.0} % stolen by the hypervisor, {:.0} us of busy CPU per callback",
            phase.name,
            f.steal * 100.0,
            f.busy_us_per_callback
        );
        if phase.filtered > 0 {
            println!(
                "{}: each filtered stream was written {:.2} times a second, {:.2} events per write",
                phase.name, f.filtered_writes_per_s, f.filtered_events_per_write
            );
        }
        anyhow::ensure!(
            f.errors == 0,
            "{}: {} callbacks not answered 200",
            phase.name,
            f.errors
        );
        anyhow::ensure!(
            f.lost == 0 && f.repeated == 0,
            "{}: {} events lost, {} repeated",
            phase.name,
            f.lost,
            f.repeated
        );
        anyhow::ensure!(
            f.foreign == 0,
            "{}: {} events of another user number or out of order",
            phase.name,
            f.foreign
        );
    }
    Ok(())
}

/// The results of one configuration's phases.
fn runs_of<'a>(phases: &[&Phase], results: &'a [Figures], kind: &Phase) -> Vec<&'a Figures> {
    (phases.iter().zip(results))
        .filter(|(p, _)| std::ptr::eq(**p, kind))
        .map(|(_, f)| f)
        .collect()
}

/// The service's CPU seconds per callback acknowledged.
fn cpu_per_callback(f: &Figures) -> f64 {
    f.service_cpu / f.callbacks_per_s
}

fn mean(runs: &[&Figures], f: fn(&Figures) -> f64) -> f64 {
    runs.iter().map(|x| f(x)).sum::<f64>() / runs.len() as f64
}

/// `x` with `decimals`, or `-` when not measured (BENCH_DB_STATS=0).
fn unless_nan(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.decimals$}")
    }
}

/// Of the mean of `f` over `runs`: how far it may be off by chance.
fn standard_error(runs: &[&Figures], f: fn(&Figures) -> f64) -> f64 {
    let (n, m) = (runs.len() as f64, mean(runs, f));
    let variance = runs.iter().map(|x| (f(x) - m).powi(2)).sum::<f64>() / (n - 1.0);
    (variance / n).sqrt()
}
