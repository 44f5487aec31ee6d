//! The stages of a job into PostgreSQL, in order: the tables translated
//! and created bare, the chunked `COPY` load, then keys, indexes, foreign
//! keys and sequences; then either the verification the job asks for
//! (`full`) or the binlog applied until a cutover (`sync`, `migrate`).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::catalog::Catalog;
use crate::cdc;
use crate::db::Connector;
use crate::job::{CdcStart, Endpoint, JobSpec, Mode};
use crate::model::JobState;
use crate::pg::load::{self, PgLoad};
use crate::pg::schema::PgTable;
use crate::pg::{self, PgConnector};
use crate::schema::SchemaError;
use crate::state::Store;

use super::cutover::{announce_cutover, equal_counts};
use super::job::{lock, JobControl, JobError};
use super::verifying::{verify_after_full, verify_schedule};

/// What the stages work with.
pub(super) struct IntoPostgresql<'a> {
    pub store: &'a Arc<Store>,
    pub job: &'a JobSpec,
    pub control: &'a Arc<JobControl>,
    pub cancel: &'a CancellationToken,
    pub source: &'a Connector,
    pub target: &'a Endpoint,
}

impl IntoPostgresql<'_> {
    /// Schema, load, keys, then verification or CDC. A resumed job plans
    /// nothing it did not plan at first, and copies only what is not on
    /// the target; a job whose load is behind it resumes its CDC.
    pub(super) async fn run(&self, catalog: &Catalog, planned: bool) -> Result<(), JobError> {
        let (store, job) = (self.store, self.job);
        let target = PgConnector::new(self.target);
        let replicates = matches!(job.mode, Mode::Sync | Mode::Migrate);
        // The hand-over's end is recorded after the load and its keys: a
        // job that has it goes straight back to its CDC.
        let loaded = store
            .checkpoint(&job.name)?
            .is_some_and(|cp| cp.safe_until.is_some());
        if replicates && loaded {
            return self.cdc(&target, catalog).await;
        }
        self.control.set_state(JobState::Schema, None)?;
        let mut tables = pg::schema::read(job, self.source, catalog)
            .await
            .map_err(SchemaError::Db)?;
        if planned {
            let plans = store.full_progress(&job.name)?;
            tables.retain(|t| plans.iter().any(|p| p.table == t.source.id()));
        }
        load::prepare(&target, &tables).await?;
        store.update_job(&job.name, |j| j.schema_done = true)?;
        info!(
            tables = tables.len(),
            "schemas ready on the PostgreSQL target"
        );
        if replicates {
            // Before the load reads anything.
            cdc::record_start_postgresql(job, self.source, &target, store).await?;
        }
        let l = PgLoad {
            job,
            source: self.source,
            target: &target,
            store,
            limit: self.control.limit.clone(),
            cancel: self.cancel.child_token(),
        };
        if replicates && job.cdc.start != CdcStart::Auto {
            // An explicit start: the target holds the data already; the
            // tables it lacks are created empty.
            load::create_missing(&target, &tables).await?;
            store.update_job(&job.name, |j| j.load_planned = true)?;
        } else {
            self.load(&l, &tables).await?;
        }
        // ON UPDATE triggers wait for the cutover while the binlog is
        // applied: the source's values arrive with the rows.
        load::finish(&l, &tables, !replicates).await?;
        if !replicates {
            return verify_after_full(store, job, self.control, self.cancel).await;
        }
        if job.cdc.start == CdcStart::Auto {
            cdc::record_handover_end(job, self.source, store).await?;
        }
        self.cdc(&target, catalog).await
    }

    async fn load(&self, l: &PgLoad<'_>, tables: &[PgTable]) -> Result<(), JobError> {
        let (store, job, control) = (self.store, self.job, self.control);
        control.set_state(JobState::FullLoad, None)?;
        let started = Instant::now();
        let progress = load::plan(l, tables).await?;
        store.update_job(&job.name, |j| j.load_planned = true)?;
        *lock(&control.progress) = progress.clone();
        control
            .reported(&progress, started, load::run(l, tables, &progress))
            .await?;
        Ok(())
    }

    /// The binlog applied until a cutover's position is (or the job
    /// stops), then the cutover: counts, sequences, triggers.
    async fn cdc(&self, target: &PgConnector, catalog: &Catalog) -> Result<(), JobError> {
        let (store, job, control) = (self.store, self.job, self.control);
        control.set_state(JobState::Syncing, None)?;
        control
            .observer
            .say(&job.name, "streaming changes (SIGINT/SIGTERM stops)");
        // `[verify] after_full` once the load is behind, then every
        // `[verify] every`, online, while the changes stream.
        let loaded_here = job.cdc.start == CdcStart::Auto;
        let result = tokio::select! {
            r = cdc::run_postgresql(
                job,
                self.source,
                target,
                store,
                self.cancel.child_token(),
                control.live(),
            ) => r,
            never = verify_schedule(store, job, control, loaded_here, self.cancel) => match never {},
        };
        control.caught_up.send_replace(None);
        result?;
        // CDC only returns when a cutover's position has been applied.
        control.set_state(JobState::Verifying, Some("cutover: counting rows".into()))?;
        let catalog = match Catalog::read(job, self.source).await {
            Ok(c) => c,
            Err(_) => catalog.clone(),
        };
        let tables = pg::schema::read(job, self.source, &catalog)
            .await
            .map_err(SchemaError::Db)?;
        let results = pg::verify::tables(
            job,
            self.source,
            target,
            &tables,
            (false, None),
            self.cancel,
            &|_| {},
        )
        .await
        .map_err(|e| JobError::Cutover(e.to_string()))?;
        let counts: Vec<(String, u64, u64)> = results
            .into_iter()
            .map(|t| (t.table, t.source_rows, t.target_rows))
            .collect();
        equal_counts(&counts)?;
        load::sequences(self.source, target, &tables).await?;
        load::triggers(target, &tables).await?;
        announce_cutover(job, store, control, counts)
    }
}
