//! The runner: takes jobs from precheck through schema and full load to
//! done, each in its own task, recording every state change in the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::catalog::Catalog;
use crate::cdc::{self, CdcError};
use crate::check::{self, Status};
use crate::db::{Connector, Role};
use crate::full::{self, FullError, Load, RateLimit};
use crate::job::{CdcStart, JobSpec, Mode};
use crate::progress;
use crate::schema::{self, SchemaError};
use crate::state::{now_ms, JobRecord, JobState, StateError, Store};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("precheck failed:\n{0}")]
    Precheck(String),
    #[error("mode {0:?} is not supported by this build yet; modes \"full\" and \"sync\" run")]
    Unsupported(&'static str),
    #[error(
        "the state already holds a job {0:?} with a different definition; \
         use a new --state dir, or a new job name"
    )]
    Changed(String),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Full(#[from] FullError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cdc(#[from] CdcError),
    #[error("internal error (a bug; please report it with the log): {0}")]
    Bug(String),
}

impl JobError {
    fn is_retryable(&self) -> bool {
        match self {
            JobError::Schema(e) => e.is_retryable(),
            JobError::Full(e) => e.is_retryable(),
            JobError::Cdc(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// How one job ended.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// Already done in an earlier run.
    AlreadyDone,
    /// Stopped by a signal; resumes on the next run.
    Stopped,
    Failed(JobError),
}

/// Runs `jobs` concurrently until each is done, failed, or `cancel` fires.
pub async fn run(
    store: Arc<Store>,
    jobs: Vec<JobSpec>,
    cancel: CancellationToken,
) -> Vec<(String, Outcome)> {
    let mut handles = Vec::new();
    for job in jobs {
        let store = store.clone();
        let cancel = cancel.child_token();
        let name = job.name.clone();
        let span = tracing::info_span!("job", name = %name);
        handles.push((
            name,
            tokio::spawn(async move { run_job(&store, job, cancel).await }.instrument(span)),
        ));
    }
    let mut out = Vec::new();
    for (name, h) in handles {
        let outcome = match h.await {
            Ok(o) => o,
            Err(e) => Outcome::Failed(JobError::Bug(format!(
                "the job's task ended abnormally: {e}"
            ))),
        };
        out.push((name, outcome));
    }
    out
}

async fn run_job(store: &Arc<Store>, job: JobSpec, cancel: CancellationToken) -> Outcome {
    match store.job(&job.name) {
        Ok(Some(rec)) if !rec.spec.same_data_as(&job) => {
            return Outcome::Failed(JobError::Changed(job.name.clone()))
        }
        Ok(Some(rec)) if rec.state == JobState::Done => return Outcome::AlreadyDone,
        Ok(Some(_)) => {
            // Tunables may change between runs; keep the latest definition.
            if let Err(e) = store.update_job(&job.name, |j| j.spec = job.clone()) {
                return Outcome::Failed(e.into());
            }
        }
        Ok(None) => {
            let rec = JobRecord {
                spec: job.clone(),
                state: JobState::Pending,
                since_ms: now_ms(),
                reason: None,
                schema_done: false,
            };
            if let Err(e) = store.put_job(&rec) {
                return Outcome::Failed(e.into());
            }
        }
        Err(e) => return Outcome::Failed(e.into()),
    }
    let retry_for = job.cdc.retry_for;
    let mut backoff = Duration::from_secs(1);
    let first_failure = Instant::now();
    loop {
        let result = attempt(store, &job, &cancel).await;
        match result {
            Ok(()) => {
                let _ = store.set_job_state(&job.name, JobState::Done, None);
                info!("job done");
                return Outcome::Done;
            }
            Err(JobError::Full(FullError::Cancelled)) | Err(JobError::Cdc(CdcError::Cancelled)) => {
                info!("job stopped; it resumes from its checkpoint on the next run");
                return Outcome::Stopped;
            }
            Err(e) if e.is_retryable() && first_failure.elapsed() < retry_for => {
                warn!(error = %e, "retrying in {backoff:?}");
                eprintln!(
                    "{}: {e}; retrying in {}",
                    job.name,
                    humantime::format_duration(backoff)
                );
                let _ = store.set_job_state(&job.name, JobState::Retrying, Some(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return Outcome::Stopped,
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
            Err(e) => {
                error!(error = %e, "job failed");
                let state = match e {
                    JobError::Precheck(_) => JobState::PrecheckFailed,
                    _ => JobState::Failed,
                };
                let _ = store.set_job_state(&job.name, state, Some(e.to_string()));
                return Outcome::Failed(e);
            }
        }
    }
}

async fn attempt(
    store: &Arc<Store>,
    job: &JobSpec,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    if !matches!(job.mode, Mode::Full | Mode::Sync) {
        return Err(JobError::Unsupported(job.mode.as_str()));
    }
    let resuming = store.job(&job.name)?.is_some_and(|j| j.schema_done);
    store.set_job_state(&job.name, JobState::Prechecking, None)?;
    let report = check::precheck(job, resuming).await;
    for item in &report.items {
        info!(status = ?item.status, what = %item.what, "{}", item.message);
    }
    if report.failed() {
        let text: Vec<String> = report
            .items
            .iter()
            .filter(|i| i.status == Status::Fail)
            .map(|i| i.to_string())
            .collect();
        return Err(JobError::Precheck(text.join("\n")));
    }
    let catalog: Catalog = report.catalog.unwrap_or_default();
    let Some(target_ep) = &job.target else {
        return Err(JobError::Unsupported(job.mode.as_str()));
    };
    let source = Connector::new(&job.source, Role::Source);
    let target = Connector::new(target_ep, Role::Target);

    store.set_job_state(&job.name, JobState::Schema, None)?;
    schema::copy_schema(job, &catalog, &source, &target).await?;
    store.update_job(&job.name, |j| j.schema_done = true)?;
    info!(tables = catalog.tables.len(), "schema copied");

    // CDC starts where the source was before the full load read anything.
    if job.mode == Mode::Sync {
        cdc::record_start(job, &source, &target, store).await?;
        if job.cdc.start != CdcStart::Auto {
            // An explicit start: CDC only, no full load.
            store.set_job_state(&job.name, JobState::Syncing, None)?;
            eprintln!(
                "{}: streaming changes from [cdc] start (SIGINT/SIGTERM stops)",
                job.name
            );
            cdc::run(job, &source, &target, store, cancel.child_token()).await?;
            return Ok(());
        }
    }

    store.set_job_state(&job.name, JobState::FullLoad, None)?;
    let loader = match job.full.target_binlog {
        true => target.clone(),
        false => target.clone().with_session("SET SESSION sql_log_bin = 0"),
    };
    let load = Load {
        job,
        tables: &catalog.tables,
        source: &source,
        target: &loader,
        store,
        limit: Arc::new(RateLimit::new(job.full.rows_per_sec)),
        cancel: cancel.child_token(),
    };
    let started = Instant::now();
    let progress = full::plan(&load).await?;
    let stop_report = CancellationToken::new();
    let reporter = tokio::spawn(progress::report(
        job.name.clone(),
        progress.clone(),
        stop_report.clone(),
    ));
    let result = full::run(&load, &progress).await;
    stop_report.cancel();
    let _ = reporter.await;
    result?;
    let summary = progress::summary(&job.name, &progress, started);
    info!("{summary}");
    eprintln!("{summary}");

    if job.mode == Mode::Sync {
        // Triggers stay off the target while it replicates: the binlog
        // already holds the rows they wrote on the source.
        cdc::record_handover_end(job, &source, store).await?;
        store.set_job_state(&job.name, JobState::Syncing, None)?;
        info!("syncing");
        eprintln!(
            "{}: full load done; streaming changes (SIGINT/SIGTERM stops)",
            job.name
        );
        cdc::run(job, &source, &target, store, cancel.child_token()).await?;
        return Ok(());
    }
    // Triggers only now, so they never fired on copied rows.
    schema::copy_triggers(job, &catalog, &source, &target).await?;
    Ok(())
}
