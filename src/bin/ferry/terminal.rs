//! The runner's lines on stderr: stage changes, pauses, retries and
//! summaries, and a full load's progress (live lines on a terminal, a line
//! per finished table otherwise). Silent while the console owns the screen.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry::model::TableProgress;
use ferry::observe::{Observer, Watch};
use ferry::progress::{finished_line, live_line};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Terminal {
    /// Set while the console owns the terminal: nothing may print over it.
    quiet: Arc<AtomicBool>,
}

impl Terminal {
    pub fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::Relaxed);
    }
}

impl Observer for Terminal {
    fn say(&self, job: &str, line: &str) {
        if !self.quiet.load(Ordering::Relaxed) {
            eprintln!("{job}: {line}");
        }
    }

    fn full_load(
        &self,
        job: &str,
        tables: Vec<Arc<TableProgress>>,
        done: CancellationToken,
    ) -> Watch {
        Box::pin(report(job.to_string(), tables, done, self.quiet.clone()))
    }
}

/// Reports until `stop` fires; prints nothing for tables already done.
async fn report(
    job: String,
    tables: Vec<Arc<TableProgress>>,
    stop: CancellationToken,
    quiet: Arc<AtomicBool>,
) {
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
        if quiet.load(Ordering::Relaxed) {
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
            let active = tables
                .iter()
                .filter(|t| {
                    !t.done.load(Ordering::Relaxed) && t.started_ms.load(Ordering::Relaxed) > 0
                })
                .take(12);
            for t in active {
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
