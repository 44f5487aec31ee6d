//! A job's life, stage by stage: precheck, schema, full load, hand-over,
//! CDC (or the subscription), then its end (triggers, a verification, or
//! the cutover). Failures are retried here, with backoff, while they can
//! heal.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::catalog::{Catalog, Table};
use crate::cdc::{self, CdcError};
use crate::check::{self, Status};
use crate::db::{Connector, Role};
use crate::full::{self, FullError, Load};
use crate::job::{CdcStart, JobSpec, Mode, ServerKind};
use crate::model::{now_ms, JobState};
use crate::schema::{self, SchemaError};
use crate::state::{JobRecord, Store};

use super::cutover::{announce_cutover, equal_counts};
use super::job::{lock, JobControl, JobError, Outcome};
use super::verifying::{verify_after_full, verify_schedule};

/// An attempt that lasted this long before failing is not part of the
/// same outage as earlier failures.
const HEALTHY_ATTEMPT: Duration = Duration::from_secs(120);

pub(super) async fn run_job(
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

/// The stages after the precheck, in order. A subscription streams to
/// its sink; every other job copies the schema, loads what its plan has
/// left, then either follows the binlog (until a cutover) or finishes.
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
    if job.mode == Mode::Subscribe {
        return subscribe(store, job, control, cancel, source).await;
    }
    let Some(target) = &job.target else {
        return Err(JobError::Unsupported(job.mode.as_str()));
    };
    if target.kind == ServerKind::Postgresql {
        let catalog = match catalog {
            Some(c) => c,
            None => Catalog::read(job, source).await.map_err(SchemaError::Db)?,
        };
        let job = &crate::pg::conn::with_postgis(job, &crate::pg::PgConnector::new(target)).await?;
        let stages = super::postgresql::IntoPostgresql {
            store,
            job,
            control,
            cancel,
            source,
            target,
        };
        return stages.run(&catalog, planned).await;
    }
    let s = Stage {
        store,
        job,
        control,
        cancel,
        source,
        target: Connector::new(target, Role::Target),
    };
    let catalog = match catalog {
        Some(c) => c,
        None => Catalog::read(job, source).await.map_err(SchemaError::Db)?,
    };
    if !resuming {
        s.schema(&catalog).await?;
    }
    let load = s.hand_over_start(&catalog, planned).await?;
    match load {
        Some(tables) => s.full_load(&tables).await?,
        None if !planned => store.update_job(&job.name, |j| j.load_planned = true)?,
        None => {}
    }
    if matches!(job.mode, Mode::Sync | Mode::Migrate) {
        s.cdc().await?;
        // CDC only returns when a cutover's position has been applied.
        return finish_cutover(job, source, &s.target, store, control).await;
    }
    s.finish().await
}

/// What every stage of a job with a target works with.
struct Stage<'a> {
    store: &'a Arc<Store>,
    job: &'a JobSpec,
    control: &'a Arc<JobControl>,
    cancel: &'a CancellationToken,
    source: &'a Connector,
    target: Connector,
}

impl Stage<'_> {
    /// Databases, tables, views and routines on the target.
    async fn schema(&self, catalog: &Catalog) -> Result<(), JobError> {
        self.control.set_state(JobState::Schema, None)?;
        schema::copy_schema(self.job, catalog, self.source, &self.target).await?;
        self.store
            .update_job(&self.job.name, |j| j.schema_done = true)?;
        info!(tables = catalog.tables.len(), "schema copied");
        Ok(())
    }

    /// Records where CDC starts (before the full load reads anything) and
    /// returns the tables the full load still has to copy, if any: a
    /// resumed load copies what is left of the tables it planned; tables
    /// created since it began reach the target through the CDC (the
    /// finished ones stay in the load: a group with a half-done table is
    /// copied again whole). An explicit CDC start has no full load.
    async fn hand_over_start(
        &self,
        catalog: &Catalog,
        planned: bool,
    ) -> Result<Option<Vec<Table>>, JobError> {
        let job = self.job;
        if matches!(job.mode, Mode::Sync | Mode::Migrate) {
            cdc::record_start(job, self.source, &self.target, self.store).await?;
            if job.cdc.start != CdcStart::Auto {
                return Ok(None);
            }
        }
        let mut tables = catalog.tables.clone();
        if planned {
            let plans = self.store.full_progress(&job.name)?;
            tables.retain(|t| plans.iter().any(|p| p.table == t.id()));
            if plans.iter().all(|p| p.plan.done) {
                return Ok(None);
            }
        }
        Ok(Some(tables))
    }

    /// The chunked, resumable copy of `tables`, reported to the observer.
    async fn full_load(&self, tables: &[Table]) -> Result<(), JobError> {
        let (job, control) = (self.job, self.control);
        control.set_state(JobState::FullLoad, None)?;
        let loader = match job.full.target_binlog {
            true => self.target.clone(),
            false => self
                .target
                .clone()
                .with_session("SET SESSION sql_log_bin = 0"),
        };
        let load = Load {
            job,
            tables,
            source: self.source,
            target: &loader,
            store: self.store,
            limit: control.limit.clone(),
            cancel: self.cancel.child_token(),
        };
        let started = Instant::now();
        let progress = full::plan(&load).await?;
        self.store
            .update_job(&job.name, |j| j.load_planned = true)?;
        *lock(&control.progress) = progress.clone();
        control
            .reported(&progress, started, full::run(&load, &progress))
            .await?;
        Ok(())
    }

    /// Follows the binlog until a cutover's position is applied (or the
    /// job stops), verifying on schedule meanwhile. Triggers stay off the
    /// target while it replicates: the binlog already holds the rows they
    /// wrote on the source. Safe mode covers the hand-over window of a full
    /// load (an explicit start has none).
    async fn cdc(&self) -> Result<(), JobError> {
        let (job, control, store) = (self.job, self.control, self.store);
        let auto = job.cdc.start == CdcStart::Auto;
        if auto {
            cdc::record_handover_end(job, self.source, store).await?;
        }
        control.set_state(JobState::Syncing, None)?;
        control
            .observer
            .say(&job.name, "streaming changes (SIGINT/SIGTERM stops)");
        let live = control.live();
        let result = tokio::select! {
            r = cdc::run(job, self.source, &self.target, store, self.cancel.child_token(), live) => r,
            never = verify_schedule(store, job, control, auto, self.cancel) => match never {},
        };
        control.caught_up.send_replace(None);
        Ok(result?)
    }

    /// The end of a full copy: triggers (only now, so they never fired on
    /// copied rows), then the verification the job asks for.
    async fn finish(&self) -> Result<(), JobError> {
        let job = self.job;
        schema::copy_triggers(job, self.source, &self.target).await?;
        verify_after_full(self.store, job, self.control, self.cancel).await
    }
}

/// A subscription: change events to the job's sink until it stops.
async fn subscribe(
    store: &Arc<Store>,
    job: &JobSpec,
    control: &Arc<JobControl>,
    cancel: &CancellationToken,
    source: &Connector,
) -> Result<(), JobError> {
    store.update_job(&job.name, |j| j.schema_done = true)?;
    control.set_state(JobState::Syncing, None)?;
    let result = cdc::subscribe::run(
        job,
        source,
        store,
        cancel.child_token(),
        control.live(),
        &control.sink,
    )
    .await;
    if let Err(e) = &result {
        if !matches!(e, CdcError::Cancelled) {
            *lock(&control.sink) = Some(format!("error: {e}"));
        }
    }
    Ok(result?)
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
    equal_counts(&counts)?;
    schema::copy_triggers(job, source, target).await?;
    announce_cutover(job, store, control, counts)
}
