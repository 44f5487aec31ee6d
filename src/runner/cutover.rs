//! The end of a `migrate` job, whatever its target: counts compared once
//! the last position is applied, and the final position told to the
//! waiting `ferry cutover`.

use std::sync::Arc;

use crate::job::JobSpec;
use crate::state::Store;

use super::job::{JobControl, JobError};

/// A cutover needs every table's counts equal once the last position is
/// applied.
pub(super) fn equal_counts(counts: &[(String, u64, u64)]) -> Result<(), JobError> {
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
    Ok(())
}

/// Tells the waiting `ferry cutover` where the source stopped.
pub(super) fn announce_cutover(
    job: &JobSpec,
    store: &Arc<Store>,
    control: &Arc<JobControl>,
    counts: Vec<(String, u64, u64)>,
) -> Result<(), JobError> {
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
