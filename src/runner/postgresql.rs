//! The stages of a job into PostgreSQL, in order: the tables translated
//! and created bare, the chunked `COPY` load, then keys, indexes, foreign
//! keys and sequences, then the verification the job asks for.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::catalog::Catalog;
use crate::db::Connector;
use crate::job::{Endpoint, JobSpec, VerifyLevel};
use crate::model::JobState;
use crate::pg::load::{self, PgLoad};
use crate::pg::{self, PgConnector};
use crate::progress;
use crate::schema::SchemaError;
use crate::state::Store;
use crate::verify;

use super::job::{lock, JobControl, JobError};
use super::verifying::{verified_after_full, verify_job};

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
        let stop_report = CancellationToken::new();
        let report = control
            .observer
            .full_load(&job.name, progress.clone(), stop_report.clone());
        let (result, ()) = tokio::join!(
            async {
                let r = load::run(&l, &tables, &progress).await;
                stop_report.cancel();
                r
            },
            report
        );
        result?;
        let summary = progress::summary(&progress, started);
        info!("{summary}");
        control.observer.say(&job.name, &summary);
        load::finish(&l, &tables).await?;

        if job.verify.after_full != VerifyLevel::None && !verified_after_full(store, job) {
            control.set_state(JobState::Verifying, None)?;
            let opts = verify::Options {
                level: job.verify.after_full,
                tables: Vec::new(),
                trigger: "after_full".into(),
            };
            // A verification that cannot run is reported, not a failed load.
            let _ = verify_job(
                store,
                job,
                Some(control),
                &opts,
                None,
                self.cancel.child_token(),
            )
            .await;
        }
        Ok(())
    }
}
