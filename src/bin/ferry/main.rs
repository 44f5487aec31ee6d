//! The `ferry` command line. Exit codes: 0 success, 1 a check or job
//! failed, 2 a usage or job-file error.

mod commands;
mod logging;
mod run;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use ferry::control::{self};
use ferry::job::{self};

use commands::{call, check_cmd, job_name, one_or_all, repair_path, status_cmd, verify_cmd};
use logging::init_logging;
use run::{load_jobs, open_for_runner, run_cmd};

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
