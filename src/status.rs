//! The status model (`ferry_proto::Status`) built from the state file and,
//! when a runner runs, its live controls. `ferry status --json` prints it and
//! the console renders it.

use std::sync::atomic::Ordering;

use ferry_proto as proto;

use crate::job::Mode;
use crate::model::{now_ms, JobState};
use crate::progress;
use crate::runner::Runner;
use crate::state::{StateError, Store};

/// How many CDC samples (5 s apart) a status carries: the last 10 minutes.
const HISTORY: usize = 120;
/// How many events of each job's log a status carries.
const EVENTS: usize = 50;

/// The status of every job (or of `only`) in `store`; `runner` is the live
/// runner when this process is one.
pub fn build(
    store: &Store,
    runner: Option<&Runner>,
    only: Option<&str>,
) -> Result<proto::Status, StateError> {
    let mut jobs = Vec::new();
    for rec in store.jobs()? {
        let name = rec.spec.name.clone();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let control = runner.and_then(|r| r.control(&name));
        let spec = &rec.spec;

        let full = if spec.mode == Mode::Subscribe {
            None
        } else {
            let live = control
                .as_ref()
                .map(|c| c.progress.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .unwrap_or_default();
            let tables: Vec<proto::Table> = if !live.is_empty() {
                live.iter()
                    .map(|t| {
                        let done = t.rows_done.load(Ordering::Relaxed);
                        let total = t.rows_estimate.load(Ordering::Relaxed).max(done);
                        let finished = t.done.load(Ordering::Relaxed);
                        let rate = progress::rate(t);
                        proto::Table {
                            name: t.table.clone(),
                            rows_done: done,
                            rows_total: if finished { done } else { total },
                            rows_per_s: if finished { 0 } else { rate as u64 },
                            eta_s: (!finished && rate > 0.0)
                                .then(|| ((total - done) as f64 / rate) as u64),
                            done: finished,
                        }
                    })
                    .collect()
            } else {
                store
                    .full_progress(&name)?
                    .into_iter()
                    .map(|t| proto::Table {
                        name: t.table,
                        rows_done: t.rows_done,
                        rows_total: if t.plan.done {
                            t.rows_done
                        } else {
                            t.plan.rows_estimate.max(t.rows_done)
                        },
                        rows_per_s: 0,
                        eta_s: None,
                        done: t.plan.done,
                    })
                    .collect()
            };
            (!tables.is_empty()).then(|| proto::FullLoad {
                rows_done: tables.iter().map(|t| t.rows_done).sum(),
                rows_total: tables.iter().map(|t| t.rows_total).sum(),
                rows_per_s: tables.iter().map(|t| t.rows_per_s).sum(),
                tables,
            })
        };

        let cdc = match store.checkpoint(&name)? {
            None => None,
            Some(cp) => {
                let samples = store.cdc_samples(&name)?;
                let last = samples.last().map(|(_, s)| s.clone());
                let info = control
                    .as_ref()
                    .map(|c| {
                        c.source_info
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .clone()
                    })
                    .unwrap_or_default();
                let history = samples
                    .iter()
                    .skip(samples.len().saturating_sub(HISTORY))
                    .map(|(at, s)| proto::Sample {
                        at_ms: *at,
                        lag_s: s.lag_s,
                        rows_per_s: s.rows_per_s,
                    })
                    .collect();
                // Lag keeps growing while the job does not run.
                let running = rec.state == JobState::Syncing && runner.is_some();
                let lag_s = match (samples.last(), running) {
                    (Some((_, s)), true) => s.lag_s,
                    // Retrying: nothing is applied, so the lag grows from the
                    // last moment known applied (even if the source was idle).
                    (Some((at, s)), false)
                        if matches!(rec.state, JobState::Retrying | JobState::Prechecking) =>
                    {
                        now_ms().saturating_sub(at.saturating_sub(s.lag_s * 1000)) / 1000
                    }
                    (None, false)
                        if matches!(rec.state, JobState::Retrying | JobState::Prechecking) =>
                    {
                        now_ms().saturating_sub(cp.unix_ms) / 1000
                    }
                    (Some((_, s)), false) if s.lag_s > 0 || cp.position.file.is_empty() => {
                        s.lag_s + now_ms().saturating_sub(cp.unix_ms) / 1000
                    }
                    _ => 0,
                };
                Some(proto::Cdc {
                    position: cp.position.to_string(),
                    gtid: cp.gtid.clone(),
                    source_head: info.head,
                    lag_s,
                    lag_bytes: last.as_ref().map_or(0, |s| s.lag_bytes),
                    rows_per_s: if running {
                        last.as_ref().map_or(0, |s| s.rows_per_s)
                    } else {
                        0
                    },
                    events_per_s: if running {
                        last.as_ref().map_or(0, |s| s.events_per_s)
                    } else {
                        0
                    },
                    oldest_binlog: info.oldest,
                    retention_risk: info.risk,
                    history,
                })
            }
        };

        let alert_lag_s = spec.alerts.lag.map(|d| d.as_secs());
        let failed = matches!(rec.state, JobState::Failed | JobState::PrecheckFailed);
        let lagging = matches!((&cdc, alert_lag_s), (Some(c), Some(a)) if c.lag_s > a);
        let events = store.events(&name)?;
        let verification = store
            .last_verify_run(&name)?
            .map(|r| crate::verify::to_proto(&r));
        let differs = verification.as_ref().is_some_and(|v| !v.ok);
        let verifying = control.as_ref().and_then(|c| {
            c.verifying
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        });
        jobs.push(proto::Job {
            name: name.clone(),
            mode: spec.mode.as_str().to_string(),
            state: rec.state.as_str().to_string(),
            since_ms: rec.since_ms,
            reason: rec.reason.clone(),
            retries: control
                .as_ref()
                .map_or(0, |c| c.retries.load(Ordering::Relaxed)),
            throttle_rows_per_sec: control
                .as_ref()
                .map_or(spec.full.rows_per_sec, |c| c.limit.get()),
            full,
            cdc,
            alert_lag_s,
            alert: failed || lagging || differs,
            verification,
            verifying,
            sink: control
                .as_ref()
                .and_then(|c| c.sink.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            events: events
                .into_iter()
                .rev()
                .take(EVENTS)
                .rev()
                .map(|e| proto::Event {
                    at_ms: e.at_ms,
                    kind: e.kind,
                    message: e.message,
                })
                .collect(),
        });
    }
    Ok(proto::Status {
        runner: proto::Runner {
            up: runner.is_some(),
            pid: runner.map(|_| std::process::id()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            state_dir: store.dir().display().to_string(),
            started_ms: runner.map(|r| r.started_ms),
            now_ms: now_ms(),
        },
        jobs,
    })
}

/// The status as text for an 80-column terminal.
pub fn text(status: &proto::Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let r = &status.runner;
    match (r.up, r.pid, r.started_ms) {
        (true, Some(pid), Some(started)) => {
            let _ = writeln!(
                out,
                "runner: up (pid {pid}, {} up), state {}",
                ago(started, r.now_ms),
                r.state_dir
            );
        }
        _ => {
            let _ = writeln!(out, "runner: DOWN (read from {})", r.state_dir);
        }
    }
    if status.jobs.is_empty() {
        out.push_str("no jobs\n");
    }
    for j in &status.jobs {
        let mark = if j.alert { "!" } else { " " };
        let _ = writeln!(
            out,
            "\n{mark}{} ({}): {} for {}{}",
            j.name,
            j.mode,
            j.state.to_uppercase(),
            ago(j.since_ms, r.now_ms),
            match j.throttle_rows_per_sec {
                0 => String::new(),
                n => format!(", throttled to {n} rows/s"),
            }
        );
        if let Some(reason) = &j.reason {
            let _ = writeln!(out, "  reason: {}", clip(reason, 70));
        }
        if j.retries > 0 {
            let _ = writeln!(out, "  retries: {}", j.retries);
        }
        if let Some(f) = &j.full {
            let pct = if f.rows_total > 0 {
                f.rows_done as f64 * 100.0 / f.rows_total as f64
            } else {
                100.0
            };
            let _ = writeln!(
                out,
                "  full load: {}/{} rows ({pct:.1}%), {} rows/s, {}/{} tables done",
                f.rows_done,
                f.rows_total,
                f.rows_per_s,
                f.tables.iter().filter(|t| t.done).count(),
                f.tables.len()
            );
            for t in f
                .tables
                .iter()
                .filter(|t| !t.done && t.rows_done > 0)
                .take(8)
            {
                let _ = writeln!(
                    out,
                    "    {:<30} {:>10}/{:<10} {:>7} rows/s eta {}",
                    clip(&t.name, 30),
                    t.rows_done,
                    t.rows_total,
                    t.rows_per_s,
                    t.eta_s.map_or("?".into(), |s| humantime::format_duration(
                        std::time::Duration::from_secs(s)
                    )
                    .to_string())
                );
            }
        }
        if let Some(c) = &j.cdc {
            let _ = writeln!(
                out,
                "  cdc: at {}{}",
                c.position,
                c.source_head
                    .as_ref()
                    .map_or(String::new(), |h| format!(" (source head {h})"))
            );
            let _ = writeln!(
                out,
                "  lag: {}s, {} bytes{}; {} rows/s, {} events/s",
                c.lag_s,
                c.lag_bytes,
                j.alert_lag_s
                    .map_or(String::new(), |a| format!(" (alert over {a}s)")),
                c.rows_per_s,
                c.events_per_s
            );
            if let Some(risk) = &c.retention_risk {
                let _ = writeln!(out, "  RISK: {}", clip(risk, 70));
            }
        }
        if let Some(s) = &j.sink {
            let _ = writeln!(out, "  sink: {}", clip(s, 72));
        }
        if let Some(v) = &j.verifying {
            let _ = writeln!(out, "  {}", clip(v, 76));
        }
        if let Some(v) = &j.verification {
            let _ = writeln!(out, "  {}", verification_line(v, r.now_ms));
        }
        if let Some(e) = j.events.last() {
            let _ = writeln!(
                out,
                "  last event: {} ago, {}: {}",
                ago(e.at_ms, r.now_ms),
                e.kind,
                clip(&e.message, 40)
            );
        }
    }
    out
}

/// `verify: ok, 12 tables (checksum, online) 3m ago`
pub fn verification_line(v: &proto::Verification, now_ms: u64) -> String {
    let bad = v.tables.iter().filter(|t| !t.ok).count();
    let what = match (&v.error, bad) {
        (Some(e), _) => format!("DID NOT FINISH: {}", clip(e, 40)),
        (None, 0) => format!("ok, {} tables equal", v.tables.len()),
        (None, n) => format!("DIFFERENT in {n} of {} tables", v.tables.len()),
    };
    format!(
        "verify: {what} ({}{}) {} ago",
        v.level,
        if v.online { ", online" } else { "" },
        ago(v.finished_ms.max(v.started_ms), now_ms)
    )
}

/// A verification run as a table, then each differing row.
pub fn verification_text(v: &proto::Verification) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:>11} {:>11} {:>7} {:>7}  result",
        "table", "source rows", "target rows", "chunks", "differ"
    );
    for t in &v.tables {
        let result = if t.ok {
            "ok".to_string()
        } else {
            let n: u64 = t.diffs.iter().map(|d| d.copies).sum();
            format!("DIFFERENT ({n}{} rows)", if t.truncated { "+" } else { "" })
        };
        let _ = writeln!(
            out,
            "{:<32} {:>11} {:>11} {:>7} {:>7}  {result}",
            clip(&t.table, 32),
            t.source_rows,
            t.target_rows,
            t.chunks,
            t.chunks_differing
        );
    }
    for t in v.tables.iter().filter(|t| !t.diffs.is_empty()) {
        let _ = writeln!(out, "\n{} (target {}):", t.table, t.target);
        for d in &t.diffs {
            let copies = if d.copies > 1 {
                format!(" x{}", d.copies)
            } else {
                String::new()
            };
            let cols = if d.columns.is_empty() {
                String::new()
            } else {
                format!("  columns: {}", d.columns.join(", "))
            };
            let _ = writeln!(out, "  {:<9} {}{copies}{cols}", d.class, clip(&d.key, 60));
        }
        if t.truncated {
            let _ = writeln!(out, "  ... more (raise [verify] max_diffs to name them)");
        }
    }
    if let Some(n) = &v.note {
        let _ = writeln!(out, "\nnote: {n}");
    }
    if let Some(e) = &v.error {
        let _ = writeln!(out, "\nerror: {e}");
    }
    let secs = v.finished_ms.saturating_sub(v.started_ms) as f64 / 1000.0;
    let bad = v.tables.iter().filter(|t| !t.ok).count();
    let _ = writeln!(
        out,
        "\n{} ({}{}) in {secs:.1}s: {}",
        if v.ok { "EQUAL" } else { "NOT EQUAL" },
        v.level,
        if v.online { ", online" } else { "" },
        if v.error.is_some() {
            "did not finish".to_string()
        } else if bad == 0 {
            format!("{} tables", v.tables.len())
        } else {
            format!("{bad} of {} tables differ", v.tables.len())
        }
    );
    if let Some(r) = &v.repair {
        let _ = writeln!(
            out,
            "repair: {} statements in {}{}",
            r.statements,
            r.file,
            if r.applied {
                format!(
                    ", applied; re-verified: {} rows still differ",
                    r.still_differing
                )
            } else {
                " (not applied; run it on the target, or use --apply)".to_string()
            }
        );
    }
    out
}

fn ago(then_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

fn clip(s: &str, n: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    if first.chars().count() <= n && !s.contains('\n') {
        return first.to_string();
    }
    let mut c: String = first.chars().take(n.saturating_sub(3)).collect();
    c.push_str("...");
    c
}
