//! The `ferry` command line. Exit codes: 0 success, 1 a check or job
//! failed, 2 a usage or job-file error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use ferry::check::{self, Status};
use ferry::job::{self, JobSpec};
use ferry::runner::{self, Outcome};
use ferry::state::Store;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Move a live MySQL-family database and keep it in sync"
)]
struct Cli {
    /// State directory (ferry.redb, ferry.sock, logs/).
    #[arg(long, global = true, env = "FERRY_STATE", default_value = ".ferry")]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Precheck a job: every item PASS/WARN/FAIL with the fix.
    Check {
        /// The job file.
        job: PathBuf,
    },
    /// Run jobs in the foreground until each is done (or a signal stops them).
    Run {
        /// Job files or directories of them.
        #[arg(required = true)]
        jobs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    match cli.command {
        Command::Check { job } => {
            let spec = match load_jobs(&[job]) {
                Ok(mut j) => j.remove(0),
                Err(code) => return Ok(code),
            };
            rt.block_on(check_cmd(&spec))
        }
        Command::Run { jobs } => {
            let specs = match load_jobs(&jobs) {
                Ok(j) => j,
                Err(code) => return Ok(code),
            };
            let store = match Store::open(&cli.state) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    eprintln!("ferry: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let _guard = init_logging(&cli.state);
            rt.block_on(run_cmd(store, specs))
        }
    }
}

/// Loads and validates job files; config errors are printed and exit 2.
fn load_jobs(paths: &[PathBuf]) -> Result<Vec<JobSpec>, ExitCode> {
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
    let mut specs: Vec<JobSpec> = Vec::new();
    let mut bad = false;
    for f in &files {
        match job::load_job(f) {
            Ok(s) => {
                if specs.iter().any(|o| o.name == s.name) {
                    eprintln!(
                        "ferry: {}: job name {:?} is used twice",
                        f.display(),
                        s.name
                    );
                    bad = true;
                }
                specs.push(s)
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

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn check_cmd(spec: &JobSpec) -> Result<ExitCode> {
    let report = check::precheck(spec, false).await;
    for item in &report.items {
        println!("{item}");
    }
    let fails = report
        .items
        .iter()
        .filter(|i| i.status == Status::Fail)
        .count();
    let warns = report
        .items
        .iter()
        .filter(|i| i.status == Status::Warn)
        .count();
    println!(
        "{}: {} passed, {warns} warnings, {fails} failed",
        spec.name,
        report.items.len() - fails - warns
    );
    Ok(if fails > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_cmd(store: Arc<Store>, specs: Vec<JobSpec>) -> Result<ExitCode> {
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone())?;
    let outcomes = runner::run(store, specs, cancel).await;
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

/// SIGINT/SIGTERM: graceful stop; a second one exits at once (the state is
/// consistent at every commit, so this loses nothing).
fn spawn_signal_handler(cancel: CancellationToken) -> Result<()> {
    use futures_util::StreamExt;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let mut signals = signal_hook_tokio::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2])
        .context("installing signal handlers")?;
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            match sig {
                SIGINT | SIGTERM if cancel.is_cancelled() => {
                    eprintln!("ferry: second signal, exiting now");
                    std::process::exit(130);
                }
                SIGINT | SIGTERM => {
                    tracing::info!(signal = sig, "graceful stop requested");
                    eprintln!("ferry: stopping (again to force)");
                    cancel.cancel();
                }
                other => {
                    tracing::warn!(signal = other, "signal not handled by this build; ignored")
                }
            }
        }
    });
    Ok(())
}

/// Logs go to STATE/logs/ferry.log.YYYY-MM-DD, never to the terminal.
fn init_logging(state: &Path) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let appender = tracing_appender::rolling::daily(state.join("logs"), "ferry.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init()
        .ok()?;
    Some(guard)
}
