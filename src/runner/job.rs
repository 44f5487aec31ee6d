//! A running job's live controls, and how a job ends.

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cdc::{self, CdcError};
use crate::full::FullError;
use crate::job::JobSpec;
use crate::model::RateLimit;
use crate::model::{JobState, TableProgress};
use crate::observe::Observer;
use crate::schema::SchemaError;
use crate::state::{StateError, Store};

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
    #[error(transparent)]
    Pg(crate::pg::load::LoadError),
    #[error("internal error (a bug; please report it with the log): {0}")]
    Bug(String),
}

impl JobError {
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            JobError::Schema(e) => e.is_retryable(),
            JobError::Full(e) => e.is_retryable(),
            JobError::Cdc(e) => e.is_retryable(),
            JobError::Pg(e) => e.is_retryable(),
            JobError::Unreachable(_) => true,
            _ => false,
        }
    }
}

impl From<crate::pg::load::LoadError> for JobError {
    fn from(e: crate::pg::load::LoadError) -> Self {
        use crate::pg::load::LoadError;
        match e {
            // A stop is a stop, whichever target.
            LoadError::Cancelled | LoadError::Plan(FullError::Cancelled) => {
                JobError::Full(FullError::Cancelled)
            }
            e => JobError::Pg(e),
        }
    }
}

impl From<crate::pg::PgError> for JobError {
    fn from(e: crate::pg::PgError) -> Self {
        JobError::Pg(e.into())
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
    pub(super) paused: watch::Sender<bool>,
    /// The running attempt; pausing cancels it (a graceful stop at a
    /// committed boundary) and resuming starts the next one.
    pub(super) attempt: Mutex<CancellationToken>,
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
    pub(super) prechecked: std::sync::atomic::AtomicBool,
    pub(super) store: Arc<Store>,
}

impl JobControl {
    /// Runs a full load (`load`) with its progress reported to the
    /// observer meanwhile, then says its summary.
    pub(super) async fn reported<T, E>(
        &self,
        progress: &[Arc<TableProgress>],
        started: std::time::Instant,
        load: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let stop_report = CancellationToken::new();
        let report = self
            .observer
            .full_load(&self.name, progress.to_vec(), stop_report.clone());
        let (result, ()) = tokio::join!(
            async {
                let r = load.await;
                stop_report.cancel();
                r
            },
            report
        );
        let out = result?;
        let summary = crate::progress::summary(progress, started);
        info!("{summary}");
        self.observer.say(&self.name, &summary);
        Ok(out)
    }

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

    /// What a running stage shares with the job's controls.
    pub(super) fn live(&self) -> cdc::Live<'_> {
        cdc::Live {
            limit: &self.limit,
            stop_at: self.cutover_at.subscribe(),
            source: &self.source_info,
            caught_up: &self.caught_up,
            observer: self.observer.as_ref(),
        }
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

    pub(super) fn set_state(
        &self,
        state: JobState,
        reason: Option<String>,
    ) -> Result<(), StateError> {
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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
