//! The runner: takes jobs from precheck through schema and full load to
//! done, each in its own task, recording every state change in the store.
//! Each job has a [`JobControl`] through which the control socket and the
//! signals pause, resume, throttle and cut it over while it runs.

mod cutover;
mod job;
mod postgresql;
mod stages;
mod verifying;

pub use job::{JobControl, JobError, Outcome};
pub use verifying::verify_job;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{warn, Instrument};

use crate::job::JobSpec;
use crate::model::now_ms;
use crate::observe::Observer;
use crate::state::Store;

use job::lock;

/// How long a stop waits for a job to end by itself (a batch or DDL in
/// flight finishing, or being killed) before abandoning it: within the
/// 10 s DESIGN.md promises.
pub const STOP_DEADLINE: Duration = Duration::from_secs(8);

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
                    let outcome = stages::run_job(&store, job, &control, cancel).await;
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
