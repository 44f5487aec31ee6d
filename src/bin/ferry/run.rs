//! `ferry run`: the runner in the foreground, its job files, signals and
//! the console it may own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use ferry::control::{self};
use ferry::job::{self, JobSpec};
use ferry::runner::{Outcome, Runner};
use ferry::state::Store;

use crate::terminal;

/// Opens the state for a runner. A command that reads the state while no
/// runner is up (`ferry status`, `ferry verify`) holds it for a moment:
/// wait that out; another runner holds it for good.
pub fn open_for_runner(dir: &std::path::Path) -> Result<Store, ferry::state::StateError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match Store::open(dir) {
            Err(ferry::state::StateError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

pub async fn run_cmd(
    store: Arc<Store>,
    specs: Vec<(PathBuf, JobSpec)>,
    paths: Vec<PathBuf>,
    metrics: Option<std::net::SocketAddr>,
    console: bool,
) -> Result<ExitCode> {
    let cancel = CancellationToken::new();
    let terminal = Arc::new(terminal::Terminal::default());
    let runner = Runner::new(store, cancel.clone(), terminal.clone());
    if let Some(addr) = metrics {
        if let Err(e) = ferry::metrics::serve(runner.clone(), addr) {
            eprintln!("ferry: {e}");
            return Ok(ExitCode::from(2));
        }
    }
    for (file, spec) in specs {
        runner.start(spec, Some(file));
    }
    spawn_signal_handler(runner.clone(), paths)?;
    let server = runner.tasks.spawn(control::serve(runner.clone()));
    let mut console_task = None;
    if console {
        // The console owns the terminal: job lines go to the log only.
        terminal.set_quiet(true);
        let socket = control::socket_path(runner.store.dir());
        let runner = runner.clone();
        let terminal = terminal.clone();
        console_task = Some(tokio::spawn(async move {
            let exit = ferry_tui::console::run(socket, true).await;
            terminal.set_quiet(false);
            match exit {
                Ok(ferry_tui::console::Exit::StopRunner) => {
                    eprintln!("ferry: stopping the jobs");
                    runner.cancel.cancel();
                }
                Ok(ferry_tui::console::Exit::Detached) => {
                    eprintln!("ferry: console detached; the jobs go on (SIGINT stops them)")
                }
                Err(e) => eprintln!("ferry: console: {e}; the jobs go on"),
            }
        }));
    }
    let outcomes = runner.wait().await;
    if let Some(task) = console_task.filter(|t| !t.is_finished()) {
        // Every job has ended; the console shows how until the user leaves.
        let _ = task.await;
    }
    cancel.cancel();
    match server.await {
        Ok(Err(e)) => eprintln!("ferry: control socket: {e}"),
        Err(e) => eprintln!("ferry: control socket task: {e}"),
        Ok(Ok(())) => {}
    }
    runner.shutdown().await;
    let mut failed = false;
    for (name, outcome) in outcomes {
        match outcome {
            Outcome::Done => eprintln!("{name}: done"),
            Outcome::AlreadyDone => {
                eprintln!("{name}: already done in an earlier run; nothing to do")
            }
            Outcome::Stopped => eprintln!("{name}: stopped; run again to resume"),
            Outcome::Failed(e) => {
                failed = true;
                eprintln!("{name}: FAILED: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Loads and validates job files; config errors are printed and exit 2.
pub fn load_jobs(paths: &[PathBuf]) -> Result<Vec<(PathBuf, JobSpec)>, ExitCode> {
    let files = match job::job_files(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ferry: {e}");
            return Err(ExitCode::from(2));
        }
    };
    if files.is_empty() {
        eprintln!("ferry: no job files (*.toml) in {}", show(paths));
        return Err(ExitCode::from(2));
    }
    let mut specs: Vec<(PathBuf, JobSpec)> = Vec::new();
    let mut bad = false;
    for f in &files {
        match job::load_job(f) {
            Ok(s) => {
                if specs.iter().any(|(_, o)| o.name == s.name) {
                    eprintln!(
                        "ferry: {}: job name {:?} is used twice",
                        f.display(),
                        s.name
                    );
                    bad = true;
                }
                specs.push((f.clone(), s))
            }
            Err(e) => {
                eprintln!("ferry: {e}");
                bad = true;
            }
        }
    }
    if bad {
        return Err(ExitCode::from(2));
    }
    Ok(specs)
}

pub fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// SIGINT/SIGTERM: graceful stop; a second one exits at once (the state is
/// consistent at every commit, so this loses nothing). SIGUSR1 pauses every
/// job, SIGUSR2 resumes them, SIGHUP rescans the job files.
fn spawn_signal_handler(runner: Arc<Runner>, paths: Vec<PathBuf>) -> Result<()> {
    use futures_util::StreamExt;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let mut signals = signal_hook_tokio::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2])
        .context("installing signal handlers")?;
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            match sig {
                SIGINT | SIGTERM if runner.cancel.is_cancelled() => {
                    eprintln!("ferry: second signal, exiting now");
                    std::process::exit(130);
                }
                SIGINT | SIGTERM => {
                    tracing::info!(signal = sig, "graceful stop requested");
                    eprintln!("ferry: stopping (again to force)");
                    runner.cancel.cancel();
                }
                SIGUSR1 => runner.controls().iter().for_each(|c| c.pause()),
                SIGUSR2 => runner.controls().iter().for_each(|c| c.resume()),
                SIGHUP => rescan(&runner, &paths),
                _ => {}
            }
        }
    });
    Ok(())
}

/// SIGHUP: new job files start, removed ones stop; a changed file of a
/// running job is refused (stop the job first: remove its file, SIGHUP).
fn rescan(runner: &Runner, paths: &[PathBuf]) {
    tracing::info!("SIGHUP: rescanning job files");
    let specs = match load_jobs(paths) {
        Ok(s) => s,
        Err(_) => {
            eprintln!("ferry: rescan: job files have errors (above); nothing changed");
            tracing::warn!("rescan refused: job files have errors");
            return;
        }
    };
    for msg in runner.rescan(specs) {
        eprintln!("ferry: rescan: {msg}");
    }
}
