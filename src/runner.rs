//! The runner: takes jobs from precheck through schema and full load to
//! done, each in its own task, recording every state change in the store.
//! Each job has a [`JobControl`] through which the control socket and the
//! signals pause, resume, throttle and cut it over while it runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};

use crate::catalog::Catalog;
use crate::cdc::{self, CdcError};
use crate::check::{self, Status};
use crate::db::{Connector, Role};
use crate::full::{self, FullError, Load};
use crate::job::{CdcStart, JobSpec, Mode, VerifyLevel};
use crate::model::RateLimit;
use crate::model::{now_ms, JobState, TableProgress, VerifyRun};
use crate::observe::Observer;
use crate::progress;
use crate::schema::{self, SchemaError};
use crate::state::{JobRecord, StateError, Store};
use crate::verify::{self, Verifier, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("precheck failed:\n{0}")]
    Precheck(String),
    #[error("a server cannot be reached:\n{0}")]
    Unreachable(String),
    #[error("mode {0:?} is not supported by this build yet; modes full, sync and migrate run")]
    Unsupported(&'static str),
    #[error("cutover: {0}")]
    Cutover(String),
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
            JobError::Unreachable(_) => true,
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

/// Live controls of one job, shared by its task, the control socket and
/// the signal handler.
pub struct JobControl {
    pub name: String,
    /// Who is told what happens (the binary's terminal, or nobody).
    pub observer: Arc<dyn Observer>,
    paused: watch::Sender<bool>,
    /// The running attempt; pausing cancels it (a graceful stop at a
    /// committed boundary) and resuming starts the next one.
    attempt: Mutex<CancellationToken>,
    /// Rows per second for the full load and the CDC apply; changeable live.
    pub limit: Arc<RateLimit>,
    /// Full-load progress of the running attempt.
    pub progress: Mutex<Vec<Arc<TableProgress>>>,
    pub retries: AtomicU32,
    /// Its task has ended.
    pub finished: std::sync::atomic::AtomicBool,
    /// A cutover asked for: CDC stops once it has applied this position.
    pub cutover_at: watch::Sender<Option<crate::model::BinlogPos>>,
    /// The cutover's outcome, once it has one.
    pub cutover_done: watch::Sender<Option<Result<ferry_proto::Cutover, String>>>,
    /// The source's binlog head and oldest binlog, and a retention risk.
    pub source_info: Mutex<cdc::SourceInfo>,
    /// While CDC runs: the source position up to which everything read
    /// has been applied (online verification waits on it); else `None`.
    pub caught_up: watch::Sender<Option<crate::model::BinlogPos>>,
    /// What a running verification is doing; `None` when none runs.
    pub verifying: Arc<Mutex<Option<String>>>,
    /// A subscribe job's sink: what it is and how it is doing.
    pub sink: cdc::subscribe::SinkState,
    /// The last attempt was paused after its precheck passed: the next
    /// one (a resume) goes on without checking again.
    prechecked: std::sync::atomic::AtomicBool,
    store: Arc<Store>,
}

impl JobControl {
    pub fn new(store: Arc<Store>, job: &JobSpec, observer: Arc<dyn Observer>) -> Arc<JobControl> {
        Arc::new(JobControl {
            name: job.name.clone(),
            observer,
            paused: watch::Sender::new(false),
            attempt: Mutex::new(CancellationToken::new()),
            limit: Arc::new(RateLimit::new(job.full.rows_per_sec)),
            progress: Mutex::new(Vec::new()),
            retries: AtomicU32::new(0),
            finished: Default::default(),
            cutover_at: watch::Sender::new(None),
            cutover_done: watch::Sender::new(None),
            source_info: Mutex::new(cdc::SourceInfo::default()),
            caught_up: watch::Sender::new(None),
            verifying: Arc::default(),
            sink: Mutex::new(None),
            prechecked: Default::default(),
            store,
        })
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Pauses the job: the running attempt stops at a committed boundary
    /// and releases its connections.
    pub fn pause(&self) {
        if self.paused.send_replace(true) {
            return;
        }
        self.event("pause", "paused");
        lock(&self.attempt).cancel();
    }

    pub fn resume(&self) {
        if self.paused.send_replace(false) {
            self.event("resume", "resumed");
        }
    }

    pub fn throttle(&self, rows_per_sec: u64) {
        self.limit.set(rows_per_sec);
        let what = match rows_per_sec {
            0 => "throttle off (unlimited)".to_string(),
            n => format!("throttled to {n} rows/s"),
        };
        self.event("throttle", &what);
    }

    pub fn event(&self, kind: &str, message: &str) {
        info!(job = %self.name, kind, "{message}");
        if let Err(e) = self.store.add_event(&self.name, kind, message) {
            warn!(error = %e, "could not record an event");
        }
    }

    fn set_state(&self, state: JobState, reason: Option<String>) -> Result<(), StateError> {
        let changed = self.store.job(&self.name)?.is_none_or(|j| j.state != state);
        self.store
            .set_job_state(&self.name, state, reason.clone())?;
        if changed {
            let message = match &reason {
                Some(r) => format!("{}: {r}", state.as_str()),
                None => state.as_str().to_string(),
            };
            let kind = match state {
                JobState::Failed | JobState::PrecheckFailed => "error",
                JobState::Retrying => "retry",
                _ => "stage",
            };
            self.event(kind, &message);
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A job the runner runs.
pub struct RunningJob {
    pub spec: JobSpec,
    pub control: Arc<JobControl>,
    /// Stops this job alone (a job file removed on rescan).
    pub cancel: CancellationToken,
    pub task: Option<JoinHandle<Outcome>>,
    /// Where its definition came from.
    pub file: Option<PathBuf>,
}

/// The runner's jobs and their controls.
pub struct Runner {
    pub store: Arc<Store>,
    pub observer: Arc<dyn Observer>,
    /// Every task the runner starts (jobs, control clients, verifications,
    /// the metrics refresher): all end with it.
    pub tasks: TaskTracker,
    /// When the stop began, once it has.
    stopping: std::sync::OnceLock<Instant>,
    pub started_ms: u64,
    pub cancel: CancellationToken,
    pub jobs: Mutex<BTreeMap<String, RunningJob>>,
    /// Wakes whoever waits for jobs to end when one is added.
    pub changed: tokio::sync::Notify,
}

impl Runner {
    pub fn new(
        store: Arc<Store>,
        cancel: CancellationToken,
        observer: Arc<dyn Observer>,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            store,
            observer,
            tasks: TaskTracker::new(),
            stopping: std::sync::OnceLock::new(),
            started_ms: now_ms(),
            cancel,
            jobs: Mutex::new(BTreeMap::new()),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Starts a job in its own task.
    pub fn start(&self, job: JobSpec, file: Option<PathBuf>) {
        let control = JobControl::new(self.store.clone(), &job, self.observer.clone());
        let cancel = self.cancel.child_token();
        let span = tracing::info_span!("job", name = %job.name);
        let task = {
            let (store, job, control, cancel) = (
                self.store.clone(),
                job.clone(),
                control.clone(),
                cancel.clone(),
            );
            self.tasks.spawn(
                async move {
                    let outcome = run_job(&store, job, &control, cancel).await;
                    control.finished.store(true, Ordering::Relaxed);
                    outcome
                }
                .instrument(span),
            )
        };
        lock(&self.jobs).insert(
            job.name.clone(),
            RunningJob {
                spec: job,
                control,
                cancel,
                task: Some(task),
                file,
            },
        );
        self.changed.notify_one();
    }

    /// Applies a rescan of the job files: starts new jobs, stops the jobs
    /// whose file is gone, refuses changed definitions of running jobs.
    /// Returns what it did, for the operator.
    pub fn rescan(&self, specs: Vec<(PathBuf, JobSpec)>) -> Vec<String> {
        let mut said = Vec::new();
        let mut start = Vec::new();
        {
            let mut jobs = lock(&self.jobs);
            for (file, spec) in &specs {
                match jobs.get_mut(&spec.name) {
                    None => start.push((file.clone(), spec.clone())),
                    Some(j) if j.spec == *spec => {}
                    Some(j) if j.control.finished.load(Ordering::Relaxed) => {
                        start.push((file.clone(), spec.clone()))
                    }
                    Some(j) => {
                        let msg = format!(
                            "{}: its job file changed while it runs; refused (stop the job \
                             first: move its file away and SIGHUP, then put the new one back \
                             and SIGHUP)",
                            spec.name
                        );
                        j.control.event("error", &msg);
                        said.push(msg);
                    }
                }
            }
            for (name, j) in jobs.iter() {
                let kept = specs.iter().any(|(_, s)| &s.name == name);
                if !kept && j.file.is_some() && !j.cancel.is_cancelled() {
                    j.cancel.cancel();
                    j.control.event("stage", "stopping: its job file is gone");
                    said.push(format!("{name}: job file removed; stopping it"));
                }
            }
        }
        for (file, spec) in start {
            said.push(format!("{}: starting ({})", spec.name, file.display()));
            self.start(spec, Some(file));
        }
        said
    }

    /// The definition of a job this runner runs or ran.
    pub fn spec(&self, name: &str) -> Option<JobSpec> {
        lock(&self.jobs).get(name).map(|j| j.spec.clone())
    }

    pub fn control(&self, name: &str) -> Option<Arc<JobControl>> {
        lock(&self.jobs).get(name).map(|j| j.control.clone())
    }

    pub fn controls(&self) -> Vec<Arc<JobControl>> {
        lock(&self.jobs)
            .values()
            .map(|j| j.control.clone())
            .collect()
    }

    /// Waits until every job's task has ended (jobs started meanwhile
    /// included); returns each job's outcome.
    pub async fn wait(&self) -> Vec<(String, Outcome)> {
        let mut out = Vec::new();
        loop {
            let next = lock(&self.jobs)
                .iter_mut()
                .find_map(|(name, j)| j.task.take().map(|t| (name.clone(), t)));
            let Some((name, task)) = next else {
                return out;
            };
            let mut task = task;
            let joined = tokio::select! {
                joined = &mut task => joined,
                _ = self.stop_deadline() => {
                    // Something on a server does not give way (a lock wait,
                    // a long statement): the job's connections close with
                    // it; its last transaction, checkpoint included, is
                    // rolled back by the server.
                    warn!(job = %name, "not stopped after {STOP_DEADLINE:?}; abandoning it");
                    task.abort();
                    let _ = task.await;
                    Ok(Outcome::Stopped)
                }
            };
            let outcome = match joined {
                Ok(o) => o,
                Err(e) => Outcome::Failed(JobError::Bug(format!(
                    "the job's task ended abnormally: {e}"
                ))),
            };
            out.push((name, outcome));
        }
    }

    /// Resolves [`STOP_DEADLINE`] after the runner was told to stop.
    async fn stop_deadline(&self) {
        self.cancel.cancelled().await;
        let since = *self.stopping.get_or_init(Instant::now);
        tokio::time::sleep_until((since + STOP_DEADLINE).into()).await;
    }

    /// Stops everything the runner started and waits (briefly) for it:
    /// call after [`Runner::wait`].
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(2), self.tasks.wait())
            .await
            .is_err()
        {
            warn!("some of the runner's tasks did not end in time");
        }
    }
}

/// How long a stop waits for a job to end by itself (a batch or DDL in
/// flight finishing, or being killed) before abandoning it: within the
/// 10 s DESIGN.md promises.
pub const STOP_DEADLINE: Duration = Duration::from_secs(8);

/// An attempt that lasted this long before failing is not part of the
/// same outage as earlier failures.
const HEALTHY_ATTEMPT: Duration = Duration::from_secs(120);

async fn run_job(
    store: &Arc<Store>,
    job: JobSpec,
    control: &Arc<JobControl>,
    cancel: CancellationToken,
) -> Outcome {
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
                load_planned: false,
            };
            if let Err(e) = store.put_job(&rec) {
                return Outcome::Failed(e.into());
            }
        }
        Err(e) => return Outcome::Failed(e.into()),
    }
    let retry_for = job.cdc.retry_for;
    let mut backoff = Duration::from_secs(1);
    let mut first_failure: Option<Instant> = None;
    let mut paused = control.paused.subscribe();
    loop {
        if *paused.borrow_and_update() {
            let _ = control.set_state(JobState::Paused, None);
            control.observer.say(&job.name, "paused");
            let watch_retention = cdc::watch_retention(&job, store, &control.source_info);
            tokio::select! {
                _ = paused.wait_for(|p| !*p) => {}
                _ = watch_retention => {}
                _ = cancel.cancelled() => return Outcome::Stopped,
            }
            control.observer.say(&job.name, "resumed");
            continue;
        }
        let attempt_cancel = cancel.child_token();
        *lock(&control.attempt) = attempt_cancel.clone();
        if control.is_paused() {
            continue;
        }
        let began = Instant::now();
        let result = attempt(store, &job, control, &attempt_cancel).await;
        // An attempt that ran a while was healthy: a failure after it opens
        // a new retry window (`[cdc] retry_for` counts from the first
        // failure of an outage, not from the start of the job).
        if began.elapsed() >= HEALTHY_ATTEMPT {
            first_failure = None;
            backoff = Duration::from_secs(1);
        }
        match result {
            Ok(()) => {
                let _ = control.set_state(JobState::Done, None);
                info!("job done");
                return Outcome::Done;
            }
            // Stopped by a pause (the job itself goes on), even when the
            // resume came before the attempt had wound down.
            Err(JobError::Full(FullError::Cancelled)) | Err(JobError::Cdc(CdcError::Cancelled))
                if !cancel.is_cancelled() =>
            {
                // The resume goes on where the pause stopped, unchecked.
                control.prechecked.store(true, Ordering::Relaxed);
                continue;
            }
            Err(JobError::Full(FullError::Cancelled)) | Err(JobError::Cdc(CdcError::Cancelled)) => {
                info!("job stopped; it resumes from its checkpoint on the next run");
                return Outcome::Stopped;
            }
            Err(e)
                if e.is_retryable()
                    && first_failure.get_or_insert_with(Instant::now).elapsed() < retry_for =>
            {
                // A retry checks again what may have broken.
                control.prechecked.store(false, Ordering::Relaxed);
                warn!(error = %e, "retrying in {backoff:?}");
                control.observer.say(
                    &job.name,
                    &format!("{e}; retrying in {}", humantime::format_duration(backoff)),
                );
                control.retries.fetch_add(1, Ordering::Relaxed);
                let _ = control.set_state(JobState::Retrying, Some(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = paused.wait_for(|p| *p) => {}
                    _ = cancel.cancelled() => return Outcome::Stopped,
                    _ = cdc::sample_while_down(&job, store, &control.source_info) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
            Err(e) => {
                error!(error = %e, "job failed");
                let state = match e {
                    JobError::Precheck(_) => JobState::PrecheckFailed,
                    _ => JobState::Failed,
                };
                let _ = control.set_state(state, Some(e.to_string()));
                if let JobError::Cutover(_) = &e {
                    control.cutover_done.send_replace(Some(Err(e.to_string())));
                }
                return Outcome::Failed(e);
            }
        }
    }
}

async fn attempt(
    store: &Arc<Store>,
    job: &JobSpec,
    control: &Arc<JobControl>,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let record = store.job(&job.name)?;
    let resuming = record.as_ref().is_some_and(|j| j.schema_done);
    let planned = record.as_ref().is_some_and(|j| j.load_planned);
    let source = Connector::new(&job.source, Role::Source);
    // A resume after a pause goes on where it stopped; any other attempt
    // checks first. A job that ran before is checked for what can have
    // broken, never judged against today's source schema.
    let mut catalog: Option<Catalog> = None;
    if !control.prechecked.swap(false, Ordering::Relaxed) {
        control.set_state(JobState::Prechecking, None)?;
        let checkpoint = store.checkpoint(&job.name)?;
        let resume = resuming.then(|| check::Resume {
            position: checkpoint.as_ref().map(|c| &c.position),
        });
        let report = check::precheck(job, resume).await;
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
            // A job that has run before waits out a server restart instead of
            // failing on it; a first start fails fast.
            if resuming && report.unreachable {
                return Err(JobError::Unreachable(text.join("\n")));
            }
            return Err(JobError::Precheck(text.join("\n")));
        }
        catalog = report.catalog;
    }
    run_stages(
        store, job, control, cancel, &source, catalog, resuming, planned,
    )
    .await
}

/// The stages after the precheck: schema, full load, CDC or the sink.
#[allow(clippy::too_many_arguments)]
async fn run_stages(
    store: &Arc<Store>,
    job: &JobSpec,
    control: &Arc<JobControl>,
    cancel: &CancellationToken,
    source: &Connector,
    catalog: Option<Catalog>,
    resuming: bool,
    planned: bool,
) -> Result<(), JobError> {
    let cdc_mode = matches!(job.mode, Mode::Sync | Mode::Migrate);
    if job.mode == Mode::Subscribe {
        store.update_job(&job.name, |j| j.schema_done = true)?;
        control.set_state(JobState::Syncing, None)?;
        let live = cdc::Live {
            limit: &control.limit,
            stop_at: control.cutover_at.subscribe(),
            source: &control.source_info,
            caught_up: &control.caught_up,
            observer: control.observer.as_ref(),
        };
        let result = cdc::subscribe::run(
            job,
            source,
            store,
            cancel.child_token(),
            live,
            &control.sink,
        )
        .await;
        if let Err(e) = &result {
            if !matches!(e, CdcError::Cancelled) {
                *lock(&control.sink) = Some(format!("error: {e}"));
            }
        }
        result?;
        return Ok(());
    }
    let Some(target_ep) = &job.target else {
        return Err(JobError::Unsupported(job.mode.as_str()));
    };
    let target = Connector::new(target_ep, Role::Target);
    let catalog = match catalog {
        Some(c) => c,
        None => Catalog::read(job, source).await.map_err(SchemaError::Db)?,
    };

    if !resuming {
        control.set_state(JobState::Schema, None)?;
        schema::copy_schema(job, &catalog, source, &target).await?;
        store.update_job(&job.name, |j| j.schema_done = true)?;
        info!(tables = catalog.tables.len(), "schema copied");
    }

    // CDC starts where the source was before the full load read anything.
    let mut full_load = true;
    if cdc_mode {
        cdc::record_start(job, source, &target, store).await?;
        // An explicit start: CDC only, no full load.
        full_load = job.cdc.start == CdcStart::Auto;
    }
    // A resumed load copies what is left of the tables it planned; tables
    // created since it began reach the target through the CDC.
    // (The finished ones stay in the load: a group with a half-done table
    // is copied again whole.)
    let mut tables = catalog.tables.clone();
    if planned {
        let plans = store.full_progress(&job.name)?;
        tables.retain(|t| plans.iter().any(|p| p.table == t.id()));
        if plans.iter().all(|p| p.plan.done) {
            full_load = false;
        }
    }

    if full_load {
        control.set_state(JobState::FullLoad, None)?;
        let loader = match job.full.target_binlog {
            true => target.clone(),
            false => target.clone().with_session("SET SESSION sql_log_bin = 0"),
        };
        let load = Load {
            job,
            tables: &tables,
            source,
            target: &loader,
            store,
            limit: control.limit.clone(),
            cancel: cancel.child_token(),
        };
        let started = Instant::now();
        let progress = full::plan(&load).await?;
        store.update_job(&job.name, |j| j.load_planned = true)?;
        *lock(&control.progress) = progress.clone();
        let stop_report = CancellationToken::new();
        let reporter = tokio::spawn(control.observer.full_load(
            &job.name,
            progress.clone(),
            stop_report.clone(),
        ));
        let result = full::run(&load, &progress).await;
        stop_report.cancel();
        let _ = reporter.await;
        result?;
        let summary = progress::summary(&progress, started);
        info!("{summary}");
        control.observer.say(&job.name, &summary);
    } else if !planned {
        store.update_job(&job.name, |j| j.load_planned = true)?;
    }

    if cdc_mode {
        // Triggers stay off the target while it replicates: the binlog
        // already holds the rows they wrote on the source. Safe mode covers
        // the hand-over window of a full load (an explicit start has none).
        if job.cdc.start == CdcStart::Auto {
            cdc::record_handover_end(job, source, store).await?;
        }
        control.set_state(JobState::Syncing, None)?;
        control
            .observer
            .say(&job.name, "streaming changes (SIGINT/SIGTERM stops)");
        let live = cdc::Live {
            limit: &control.limit,
            stop_at: control.cutover_at.subscribe(),
            source: &control.source_info,
            caught_up: &control.caught_up,
            observer: control.observer.as_ref(),
        };
        let result = tokio::select! {
            r = cdc::run(job, source, &target, store, cancel.child_token(), live) => r,
            never = verify_schedule(store, job, control, job.cdc.start == CdcStart::Auto, cancel) => match never {},
        };
        control.caught_up.send_replace(None);
        result?;
        // CDC only returns when a cutover's position has been applied.
        return finish_cutover(job, source, &target, store, control).await;
    }
    // Triggers only now, so they never fired on copied rows.
    schema::copy_triggers(job, source, &target).await?;
    if job.verify.after_full != VerifyLevel::None && !verified_after_full(store, job) {
        control.set_state(JobState::Verifying, None)?;
        let opts = verify::Options {
            level: job.verify.after_full,
            tables: Vec::new(),
            trigger: "after_full".into(),
        };
        // A verification that cannot run is reported, not a failed load.
        let _ = verify_job(store, job, Some(control), &opts, None, cancel.child_token()).await;
    }
    Ok(())
}

fn verified_after_full(store: &Store, job: &JobSpec) -> bool {
    store
        .verify_runs(&job.name)
        .is_ok_and(|runs| runs.iter().any(|r| r.trigger == "after_full"))
}

/// Runs one verification of `job` (online when its CDC runs in this
/// process), records it in the job's event log, and with `repair` writes
/// (and with its flag applies) the fixing statements.
pub async fn verify_job(
    store: &Arc<Store>,
    job: &JobSpec,
    control: Option<&Arc<JobControl>>,
    opts: &verify::Options,
    repair: Option<(PathBuf, bool)>,
    cancel: CancellationToken,
) -> Result<VerifyRun, VerifyError> {
    let event = |kind: &str, message: &str| match control {
        Some(c) => c.event(kind, message),
        None => {
            info!(job = %job.name, kind, "{message}");
            let _ = store.add_event(&job.name, kind, message);
        }
    };
    let mut verifier = Verifier::new(job.clone(), store.clone())?.cancel(cancel);
    let mut _guard = None;
    if let Some(c) = control {
        {
            let mut v = lock(&c.verifying);
            if v.is_some() {
                return Err(VerifyError::AlreadyRunning(job.name.clone()));
            }
            *v = Some("verifying: starting".into());
        }
        _guard = Some(ClearOnDrop(c.verifying.clone()));
        verifier = verifier.progress(c.verifying.clone());
        // Online while the job streams changes here: rechecks wait for
        // its CDC to apply past the source's head.
        let streaming = store
            .job(&job.name)
            .ok()
            .flatten()
            .is_some_and(|r| matches!(r.state, JobState::Syncing | JobState::CatchingUp));
        if streaming || c.caught_up.borrow().is_some() {
            verifier = verifier.online(c.caught_up.subscribe());
        }
    }
    event("verify", &format!("verify ({}) started", opts.trigger));
    let say = |line: &str| {
        if let Some(c) = control {
            c.observer.say(&job.name, line);
        }
    };
    say(&format!("verifying ({})", opts.trigger));
    let mut run = match verifier.run(opts).await {
        Ok(r) => r,
        Err(e) => {
            event("error", &format!("verify: {e}"));
            return Err(e);
        }
    };
    let line = verify::summary(&run);
    event(if run.ok() { "verify" } else { "error" }, &line);
    say(&line);
    if let Some((file, apply)) = repair {
        let r = verifier.repair(&mut run, &file, apply).await?;
        event(
            "verify",
            &format!(
                "repair: {} statements written to {}{}",
                r.statements,
                r.file,
                match r.applied {
                    true => format!(", applied; {} rows still differ", r.still_differing),
                    false => String::new(),
                }
            ),
        );
    }
    Ok(run)
}

/// Clears a job's "verifying" mark however the verification ends.
struct ClearOnDrop(Arc<Mutex<Option<String>>>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        *lock(&self.0) = None;
    }
}

/// The job's verifications while it syncs: `[verify] after_full` once
/// after the full load, then every `[verify] every`. Never returns; a
/// verification's failure is reported, not the job's.
async fn verify_schedule(
    store: &Arc<Store>,
    job: &JobSpec,
    control: &Arc<JobControl>,
    full_load: bool,
    cancel: &CancellationToken,
) -> std::convert::Infallible {
    let level = match job.verify.after_full {
        VerifyLevel::None => VerifyLevel::Checksum,
        l => l,
    };
    let mut opts = verify::Options {
        level,
        tables: Vec::new(),
        trigger: "after_full".into(),
    };
    if full_load && job.verify.after_full != VerifyLevel::None && !verified_after_full(store, job) {
        let _ = verify_job(store, job, Some(control), &opts, None, cancel.child_token()).await;
    }
    let Some(every) = job.verify.every else {
        return std::future::pending().await;
    };
    opts.trigger = "every".into();
    loop {
        let last = store
            .last_verify_run(&job.name)
            .ok()
            .flatten()
            .map(|r| r.finished_ms.max(r.started_ms));
        let wait = match last {
            Some(at) => {
                Duration::from_millis((at + every.as_millis() as u64).saturating_sub(now_ms()))
            }
            None => every,
        };
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
        match verify_job(store, job, Some(control), &opts, None, cancel.child_token()).await {
            Err(VerifyError::AlreadyRunning(_)) => {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Err(e) => {
                warn!(error = %e, "scheduled verification failed");
                // Not again at once: the run stored nothing to wait from.
                tokio::time::sleep(every).await;
            }
            Ok(_) => {}
        }
    }
}

/// The end of a `migrate` job: triggers, a count verification, the final
/// position for the application switch.
async fn finish_cutover(
    job: &JobSpec,
    source: &Connector,
    target: &Connector,
    store: &Arc<Store>,
    control: &Arc<JobControl>,
) -> Result<(), JobError> {
    control.set_state(JobState::Verifying, Some("cutover: counting rows".into()))?;
    let counts = crate::verify::counts(job, source, target)
        .await
        .map_err(|e| JobError::Cutover(e.to_string()))?;
    let differ: Vec<String> = counts
        .iter()
        .filter(|(_, s, t)| s != t)
        .map(|(n, s, t)| format!("{n}: {s} rows on the source, {t} on the target"))
        .collect();
    if !differ.is_empty() {
        return Err(JobError::Cutover(format!(
            "row counts differ after applying the last position (were writes still \
             reaching the source? use --read-only-source): {}",
            differ.join("; ")
        )));
    }
    schema::copy_triggers(job, source, target).await?;
    let cp = store
        .checkpoint(&job.name)?
        .ok_or_else(|| JobError::Cutover("no checkpoint".into()))?;
    let result = ferry_proto::Cutover {
        position: cp.position.to_string(),
        gtid: cp.gtid.clone(),
        counts,
    };
    control.event(
        "cutover",
        &format!(
            "cut over at {} ({} tables, counts equal)",
            result.position,
            result.counts.len()
        ),
    );
    control.cutover_done.send_replace(Some(Ok(result)));
    Ok(())
}
