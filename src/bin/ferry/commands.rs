//! The commands that talk to a runner or read the state: status, pause,
//! resume, throttle, cutover, stop, verify, check.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use ferry::check::{self, Status};
use ferry::control::{Client, ClientError};
use ferry::job::{self, JobSpec};
use ferry::state::Store;

/// A job named on the command line: a name, or a job file to read it from.
pub fn job_name(arg: &str) -> Result<String> {
    let path = Path::new(arg);
    if arg.ends_with(".toml") || path.is_file() {
        return Ok(job::load_job(path)?.name);
    }
    Ok(arg.to_string())
}

pub fn one_or_all(job: Option<String>, all: bool) -> Result<Option<String>> {
    match (job, all) {
        (Some(j), false) => Ok(Some(job_name(&j)?)),
        (None, true) => Ok(None),
        _ => anyhow::bail!("name a job, or pass --all"),
    }
}

/// One request to the runner; its reply printed. Exit 1 on an error reply
/// or when no runner runs.
pub async fn call(state: &Path, cmd: ferry_proto::Command) -> Result<ExitCode> {
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
pub async fn verify_cmd(
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
pub fn repair_path(job_arg: &str, file: Option<PathBuf>) -> Result<PathBuf> {
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
pub async fn status_cmd(state: &Path, job: Option<String>, json: bool) -> Result<ExitCode> {
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

pub async fn check_cmd(spec: &JobSpec) -> Result<ExitCode> {
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
