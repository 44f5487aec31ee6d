//! The `ferry` command line. Exit codes: 0 success, 1 a check or job
//! failed, 2 a usage or job-file error.

mod terminal;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use ferry::check::{self, Status};
use ferry::control::{self, Client, ClientError};
use ferry::job::{self, JobSpec};
use ferry::runner::{Outcome, Runner};
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
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9184).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Attach the console in this process.
        #[arg(long)]
        console: bool,
    },
    /// Attach the console to a running runner (`q` detaches; the jobs go on).
    Console,
    /// Every job's state, progress, lag and last events.
    Status {
        /// One job (a name or its job file).
        job: Option<String>,
        /// The status model as JSON (see README).
        #[arg(long)]
        json: bool,
    },
    /// Pause a job (or every job) at a committed boundary.
    Pause {
        job: Option<String>,
        #[arg(long, conflicts_with = "job")]
        all: bool,
    },
    /// Resume a paused job (or every job).
    Resume {
        job: Option<String>,
        #[arg(long, conflicts_with = "job")]
        all: bool,
    },
    /// Change a job's live rate limit.
    Throttle {
        job: String,
        /// Rows per second; 0 = unlimited.
        #[arg(long)]
        rows_per_sec: u64,
    },
    /// `migrate` jobs: apply up to the source's head, verify counts, finish.
    Cutover {
        job: String,
        /// Set the source read-only first (SET GLOBAL read_only = 1).
        #[arg(long)]
        read_only_source: bool,
    },
    /// Compare a job's target with its source: counts, chunked checksums,
    /// differing rows named. Online through the runner when it runs the
    /// job, else directly against the servers. Exit 1 on a difference.
    Verify {
        /// The job (a name in the state, or its job file).
        job: String,
        /// Row counts only.
        #[arg(long, conflicts_with = "checksum")]
        count: bool,
        /// Chunked checksums, narrowed to rows (the default).
        #[arg(long)]
        checksum: bool,
        /// Only these tables (`db.table` or `table`, globs); repeatable.
        #[arg(long = "table", value_name = "T")]
        tables: Vec<String>,
        /// Write the statements that make the target equal for the
        /// differing rows (to --repair-file, default
        /// ./ferry-repair-JOB-TIME.sql).
        #[arg(long)]
        repair: bool,
        /// Run the repair statements on the target, then re-verify the rows.
        #[arg(long, requires = "repair")]
        apply: bool,
        #[arg(long, value_name = "FILE", requires = "repair")]
        repair_file: Option<PathBuf>,
        /// The result as JSON (the status model's `verification`).
        #[arg(long)]
        json: bool,
    },
    /// Stop the runner gracefully.
    Stop,
    /// Benchmark aid: read and decode the source's binlog between two
    /// positions without applying it (a null sink); prints rows, events,
    /// seconds.
    #[command(hide = true)]
    DecodeBench {
        job: PathBuf,
        /// FILE:POS
        from: String,
        /// FILE:POS
        to: String,
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

/// Opens the state for a runner. A command that reads the state while no
/// runner is up (`ferry status`, `ferry verify`) holds it for a moment:
/// wait that out; another runner holds it for good.
fn open_for_runner(dir: &std::path::Path) -> Result<Store, ferry::state::StateError> {
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

fn real_main(cli: Cli) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    match cli.command {
        Command::Check { job } => {
            let spec = match load_jobs(&[job]) {
                Ok(mut j) => j.remove(0).1,
                Err(code) => return Ok(code),
            };
            rt.block_on(check_cmd(&spec))
        }
        Command::Run {
            jobs,
            metrics,
            console,
        } => {
            let specs = match load_jobs(&jobs) {
                Ok(j) => j,
                Err(code) => return Ok(code),
            };
            let store = match open_for_runner(&cli.state) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    eprintln!("ferry: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let _guard = init_logging(&cli.state);
            rt.block_on(run_cmd(store, specs, jobs, metrics, console))
        }
        Command::Status { job, json } => {
            let job = job.map(|j| job_name(&j)).transpose()?;
            rt.block_on(status_cmd(&cli.state, job, json))
        }
        Command::Pause { job, all } => {
            let job = one_or_all(job, all)?;
            rt.block_on(call(&cli.state, ferry_proto::Command::Pause { job }))
        }
        Command::Resume { job, all } => {
            let job = one_or_all(job, all)?;
            rt.block_on(call(&cli.state, ferry_proto::Command::Resume { job }))
        }
        Command::Throttle { job, rows_per_sec } => rt.block_on(call(
            &cli.state,
            ferry_proto::Command::Throttle {
                job: job_name(&job)?,
                rows_per_sec,
            },
        )),
        Command::Cutover {
            job,
            read_only_source,
        } => rt.block_on(call(
            &cli.state,
            ferry_proto::Command::Cutover {
                job: job_name(&job)?,
                read_only_source,
            },
        )),
        Command::Stop => rt.block_on(call(&cli.state, ferry_proto::Command::Stop)),
        Command::Verify {
            job,
            count,
            checksum: _,
            tables,
            repair,
            apply,
            repair_file,
            json,
        } => {
            let opts = ferry::verify::Options {
                level: if count {
                    job::VerifyLevel::Count
                } else {
                    job::VerifyLevel::Checksum
                },
                tables,
                trigger: "command".into(),
            };
            let repair = match repair {
                false => None,
                true => Some((repair_path(&job, repair_file)?, apply)),
            };
            rt.block_on(verify_cmd(&cli.state, &job, opts, repair, json))
        }
        Command::Console => {
            rt.block_on(ferry_tui::console::run(
                control::socket_path(&cli.state),
                false,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DecodeBench { job, from, to } => {
            let spec = job::load_job(&job)?;
            let pos = |s: &str| -> Result<ferry::model::BinlogPos> {
                let (file, pos) = s.rsplit_once(':').context("expected FILE:POS")?;
                Ok(ferry::model::BinlogPos {
                    file: file.to_string(),
                    pos: pos.parse().context("expected FILE:POS")?,
                })
            };
            let (from, to) = (pos(&from)?, pos(&to)?);
            let source = ferry::db::Connector::new(&spec.source, ferry::db::Role::Source);
            let started = std::time::Instant::now();
            let (rows, events) =
                rt.block_on(ferry::cdc::decode_only(&spec, &source, &from, &to))?;
            println!("{rows} {events} {:.3}", started.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A job named on the command line: a name, or a job file to read it from.
fn job_name(arg: &str) -> Result<String> {
    let path = Path::new(arg);
    if arg.ends_with(".toml") || path.is_file() {
        return Ok(job::load_job(path)?.name);
    }
    Ok(arg.to_string())
}

fn one_or_all(job: Option<String>, all: bool) -> Result<Option<String>> {
    match (job, all) {
        (Some(j), false) => Ok(Some(job_name(&j)?)),
        (None, true) => Ok(None),
        _ => anyhow::bail!("name a job, or pass --all"),
    }
}

/// One request to the runner; its reply printed. Exit 1 on an error reply
/// or when no runner runs.
async fn call(state: &Path, cmd: ferry_proto::Command) -> Result<ExitCode> {
    let cutover = matches!(cmd, ferry_proto::Command::Cutover { .. });
    let mut client = Client::connect(state).await?;
    if cutover {
        eprintln!("waiting for the job to apply everything up to the source's head...");
    }
    let reply = client.call(cmd).await?;
    if !reply.ok {
        eprintln!("ferry: {}", reply.error.unwrap_or_default());
        return Ok(ExitCode::from(1));
    }
    if let Some(m) = reply.message.filter(|m| !m.is_empty()) {
        println!("{m}");
    }
    if let Some(c) = reply.cutover {
        for (table, s, t) in &c.counts {
            println!("  {table}: {s} rows on the source, {t} on the target");
        }
        println!("final position: {}", c.position);
        if let Some(g) = c.gtid {
            println!("final GTID: {g}");
        }
        println!("switch the application to the target now");
    }
    Ok(ExitCode::SUCCESS)
}

/// Through the runner when one runs (online if it syncs the job), else
/// against the servers directly, the run stored in the state either way.
async fn verify_cmd(
    state: &Path,
    job_arg: &str,
    opts: ferry::verify::Options,
    repair: Option<(PathBuf, bool)>,
    json: bool,
) -> Result<ExitCode> {
    let name = job_name(job_arg)?;
    let verification = match Client::connect(state).await {
        Ok(mut client) => {
            eprintln!("verifying {name} through the runner...");
            let reply = client
                .call(ferry_proto::Command::Verify {
                    job: name.clone(),
                    count: opts.level == job::VerifyLevel::Count,
                    tables: opts.tables.clone(),
                    repair: repair.as_ref().map(|(f, _)| f.display().to_string()),
                    apply: repair.as_ref().is_some_and(|(_, a)| *a),
                    wait: true,
                })
                .await?;
            match reply.verification {
                Some(v) if reply.ok => v,
                _ => {
                    eprintln!("ferry: {}", reply.error.unwrap_or_default());
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Err(ClientError::NoRunner(_)) => {
            let path = Path::new(job_arg);
            let from_file = job_arg.ends_with(".toml") || path.is_file();
            if !from_file && !state.join("ferry.redb").exists() {
                anyhow::bail!(
                    "no state in {} (nothing has run there); name the job file",
                    state.display()
                );
            }
            let store = Arc::new(Store::open(state)?);
            let spec = match (store.job(&name)?, from_file) {
                (_, true) => job::load_job(path)?,
                (Some(rec), false) => rec.spec,
                (None, false) => anyhow::bail!("no job {name:?} in {}", state.display()),
            };
            if store.job(&name)?.is_none() {
                // Recorded so its runs can be looked up by name later; it
                // has not run (a runner given its file starts it afresh).
                store.put_job(&ferry::state::JobRecord {
                    spec: spec.clone(),
                    state: ferry::model::JobState::Pending,
                    since_ms: ferry::model::now_ms(),
                    reason: None,
                    schema_done: false,
                    load_planned: false,
                })?;
            }
            eprintln!("verifying {name} (no runner runs it: offline)...");
            let run = ferry::runner::verify_job(
                &store,
                &spec,
                None,
                &opts,
                repair,
                CancellationToken::new(),
            )
            .await;
            match run {
                Ok(run) => ferry::verify::to_proto(&run),
                Err(e @ ferry::verify::VerifyError::NoTables(_)) => {
                    eprintln!("ferry: {e}");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => anyhow::bail!("verify {name}: {e}"),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&verification)?);
    } else {
        print!("{}", ferry::status::verification_text(&verification));
    }
    Ok(match verification.ok {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    })
}

/// `--repair-file`, or ./ferry-repair-JOB-TIME.sql; absolute, for the runner.
fn repair_path(job_arg: &str, file: Option<PathBuf>) -> Result<PathBuf> {
    let file = match file {
        Some(f) => f,
        None => {
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string()
                .replace([':', '-'], "");
            PathBuf::from(format!("ferry-repair-{}-{stamp}.sql", job_name(job_arg)?))
        }
    };
    Ok(std::path::absolute(&file)?)
}

/// From the runner when one runs, else from the state file.
async fn status_cmd(state: &Path, job: Option<String>, json: bool) -> Result<ExitCode> {
    let status = match Client::connect(state).await {
        Ok(mut client) => {
            let reply = client
                .call(ferry_proto::Command::Status { job: job.clone() })
                .await?;
            match reply.status {
                Some(s) if reply.ok => s,
                _ => {
                    eprintln!("ferry: {}", reply.error.unwrap_or_default());
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Err(ClientError::NoRunner(_)) => {
            if !state.join("ferry.redb").exists() {
                anyhow::bail!("no state in {} (nothing has run there)", state.display());
            }
            let store = Store::open(state)?;
            if let Some(j) = &job {
                if store.job(j)?.is_none() {
                    anyhow::bail!("no job {j:?} in {}", state.display());
                }
            }
            ferry::status::build(&store, None, job.as_deref())?
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", ferry::status::text(&status));
    }
    Ok(if status.jobs.iter().any(|j| j.alert) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Loads and validates job files; config errors are printed and exit 2.
fn load_jobs(paths: &[PathBuf]) -> Result<Vec<(PathBuf, JobSpec)>, ExitCode> {
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

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn check_cmd(spec: &JobSpec) -> Result<ExitCode> {
    let report = check::precheck(spec, None).await;
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

async fn run_cmd(
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
