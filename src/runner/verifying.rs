//! Verifications a runner starts: on request, after the full load, and
//! every `[verify] every` while a job syncs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::job::{JobSpec, VerifyLevel};
use crate::model::{now_ms, JobState, VerifyRun};
use crate::state::Store;
use crate::verify::{self, Verifier, VerifyError};

use super::job::{lock, JobControl, JobError};

pub(super) fn verified_after_full(store: &Store, job: &JobSpec) -> bool {
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
pub(super) async fn verify_schedule(
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

/// The verification `[verify] after_full` asks for, once; one that cannot
/// run is reported, not a failed load.
pub(super) async fn verify_after_full(
    store: &Arc<Store>,
    job: &JobSpec,
    control: &Arc<JobControl>,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    if job.verify.after_full != VerifyLevel::None && !verified_after_full(store, job) {
        control.set_state(JobState::Verifying, None)?;
        let opts = verify::Options {
            level: job.verify.after_full,
            tables: Vec::new(),
            trigger: "after_full".into(),
        };
        let _ = verify_job(store, job, Some(control), &opts, None, cancel.child_token()).await;
    }
    Ok(())
}
