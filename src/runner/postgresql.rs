//! The stages of a job into PostgreSQL, in order: the tables translated
//! and created bare, the chunked `COPY` load, then keys, indexes, foreign
//! keys and sequences, then the verification the job asks for.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::catalog::Catalog;
use crate::db::Connector;
use crate::job::{Endpoint, JobSpec};
use crate::model::JobState;
use crate::pg::load::{self, PgLoad};
use crate::pg::{self, PgConnector};
use crate::schema::SchemaError;
use crate::state::Store;

use super::job::{lock, JobControl, JobError};
use super::verifying::verify_after_full;

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
    /// Schema, load, keys, verification. A resumed job plans nothing it
    /// did not plan at first, and copies only what is not on the target.
    pub(super) async fn run(&self, catalog: &Catalog, planned: bool) -> Result<(), JobError> {
        let (store, job, control) = (self.store, self.job, self.control);
        let target = PgConnector::new(self.target);
        control.set_state(JobState::Schema, None)?;
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

        control.set_state(JobState::FullLoad, None)?;
        let l = PgLoad {
            job,
            source: self.source,
            target: &target,
            store,
            limit: control.limit.clone(),
            cancel: self.cancel.child_token(),
        };
        let started = Instant::now();
        let progress = load::plan(&l, &tables).await?;
        store.update_job(&job.name, |j| j.load_planned = true)?;
        *lock(&control.progress) = progress.clone();
        control
            .reported(&progress, started, load::run(&l, &tables, &progress))
            .await?;
        load::finish(&l, &tables).await?;
        verify_after_full(store, job, control, self.cancel).await
    }
}
