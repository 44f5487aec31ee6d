//! The job record as the state file stores it.

use serde::{Deserialize, Serialize};

use crate::job::JobSpec;
use crate::model::JobState;

/// A job as the state remembers it: its definition (no secrets) and state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "StoredJob", try_from = "StoredJob")]
pub struct JobRecord {
    pub spec: JobSpec,
    pub state: JobState,
    /// Unix milliseconds of the last state change.
    pub since_ms: u64,
    pub reason: Option<String>,
    /// Schema copied (tables, views, routines) for this job.
    pub schema_done: bool,
    /// The full load's tables are planned: a resumed load copies what is
    /// left of them and never plans tables created since it began (the
    /// CDC creates and fills those).
    pub load_planned: bool,
}

/// A [`JobRecord`] as stored: the definition as JSON, so options added to
/// job files later decode with their defaults.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredJob {
    pub(super) spec_json: String,
    pub(super) state: JobState,
    pub(super) since_ms: u64,
    pub(super) reason: Option<String>,
    pub(super) schema_done: bool,
    pub(super) load_planned: bool,
}

impl From<JobRecord> for StoredJob {
    fn from(r: JobRecord) -> Self {
        StoredJob {
            // A JobSpec always serializes (plain data, no maps with odd keys).
            spec_json: serde_json::to_string(&r.spec).unwrap_or_default(),
            state: r.state,
            since_ms: r.since_ms,
            reason: r.reason,
            schema_done: r.schema_done,
            load_planned: r.load_planned,
        }
    }
}

impl TryFrom<StoredJob> for JobRecord {
    type Error = serde_json::Error;
    fn try_from(s: StoredJob) -> std::result::Result<Self, Self::Error> {
        Ok(JobRecord {
            spec: serde_json::from_str(&s.spec_json)?,
            state: s.state,
            since_ms: s.since_ms,
            reason: s.reason,
            schema_done: s.schema_done,
            load_planned: s.load_planned,
        })
    }
}
