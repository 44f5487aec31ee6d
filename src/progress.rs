//! Full-load progress on stderr: live lines on a terminal, one line per
//! finished table otherwise, and a summary at the end.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::full::TableProgress;
use crate::model::now_ms;

/// Set while the console owns the terminal: nothing may print over it.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A line for the operator on stderr (unless the console owns the screen).
pub fn say(line: impl std::fmt::Display) {
    if !quiet() {
        eprintln!("{line}");
    }
}

/// Reports until `stop` fires; prints nothing for tables already done.
pub async fn report(job: String, tables: Vec<Arc<TableProgress>>, stop: CancellationToken) {
    let tty = std::io::stderr().is_terminal();
    let mut announced: Vec<bool> = tables
        .iter()
        .map(|t| t.done.load(Ordering::Relaxed))
        .collect();
    let mut drawn = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(if tty { 500 } else { 1000 }));
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        if quiet() {
            if stopping {
                return;
            }
            continue;
        }
        let mut err = std::io::stderr().lock();
        if tty && drawn > 0 {
            let _ = write!(err, "\x1b[{drawn}A\x1b[J");
            drawn = 0;
        }
        for (t, said) in tables.iter().zip(announced.iter_mut()) {
            if !*said && t.done.load(Ordering::Relaxed) {
                *said = true;
                let _ = writeln!(err, "{job}: {}", finished_line(t));
            }
        }
        if tty && !stopping {
            let active: Vec<&Arc<TableProgress>> = tables
                .iter()
                .filter(|t| {
                    !t.done.load(Ordering::Relaxed) && t.started_ms.load(Ordering::Relaxed) > 0
                })
                .take(12)
                .collect();
            for t in &active {
                let _ = writeln!(err, "{job}: {}", live_line(t));
                drawn += 1;
            }
        }
        let _ = err.flush();
        if stopping {
            return;
        }
    }
}

/// Seconds this run has worked on the table (until it finished).
fn elapsed(t: &TableProgress) -> f64 {
    let started = t.started_ms.load(Ordering::Relaxed);
    if started == 0 {
        return 0.0;
    }
    let end = match t.finished_ms.load(Ordering::Relaxed) {
        0 => now_ms(),
        f => f,
    };
    end.saturating_sub(started) as f64 / 1000.0
}

pub fn rate(t: &TableProgress) -> f64 {
    let secs = elapsed(t);
    let rows = t
        .rows_done
        .load(Ordering::Relaxed)
        .saturating_sub(t.rows_before) as f64;
    if secs > 0.0 {
        rows / secs
    } else {
        0.0
    }
}

fn live_line(t: &TableProgress) -> String {
    let done = t.rows_done.load(Ordering::Relaxed);
    let est = t.rows_estimate.load(Ordering::Relaxed).max(done);
    let pct = if est > 0 {
        done as f64 * 100.0 / est as f64
    } else {
        0.0
    };
    let r = rate(t);
    let eta = if r > 0.0 {
        humantime::format_duration(Duration::from_secs(((est - done) as f64 / r) as u64))
            .to_string()
    } else {
        "?".into()
    };
    format!(
        "{:<24} {:>9}/{:<9} {:>5.1}% {:>7.0} rows/s eta {} ({}/{} chunks)",
        t.table,
        done,
        est,
        pct,
        r,
        eta,
        t.chunks_done.load(Ordering::Relaxed),
        t.chunks_total
    )
}

fn finished_line(t: &TableProgress) -> String {
    format!(
        "{} done: {} rows in {:.1}s ({:.0} rows/s)",
        t.table,
        t.rows_done.load(Ordering::Relaxed),
        elapsed(t),
        rate(t)
    )
}

/// The closing summary of a full load.
pub fn summary(job: &str, tables: &[Arc<TableProgress>], started: Instant) -> String {
    let rows: u64 = tables
        .iter()
        .map(|t| t.rows_done.load(Ordering::Relaxed))
        .sum();
    let fresh: u64 = tables
        .iter()
        .map(|t| {
            t.rows_done
                .load(Ordering::Relaxed)
                .saturating_sub(t.rows_before)
        })
        .sum();
    let secs = started.elapsed().as_secs_f64();
    format!(
        "{job}: full load done: {} tables, {rows} rows ({fresh} copied by this run) in {:.1}s, {:.0} rows/s",
        tables.len(),
        secs,
        if secs > 0.0 { fresh as f64 / secs } else { 0.0 }
    )
}
