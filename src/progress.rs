//! Full-load progress as text: a live line per table being copied, a
//! line per finished table, the closing summary. Whoever shows them
//! (the binary's terminal, status) decides where they go.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{now_ms, TableProgress};

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

pub fn live_line(t: &TableProgress) -> String {
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

pub fn finished_line(t: &TableProgress) -> String {
    format!(
        "{} done: {} rows in {:.1}s ({:.0} rows/s)",
        t.table,
        t.rows_done.load(Ordering::Relaxed),
        elapsed(t),
        rate(t)
    )
}

/// The closing summary of a full load.
pub fn summary(tables: &[Arc<TableProgress>], started: Instant) -> String {
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
        "full load done: {} tables, {rows} rows ({fresh} copied by this run) in {:.1}s, {:.0} rows/s",
        tables.len(),
        secs,
        if secs > 0.0 { fresh as f64 / secs } else { 0.0 }
    )
}
