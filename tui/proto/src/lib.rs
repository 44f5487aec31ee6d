//! The control socket protocol between the runner and its clients (the
//! CLI and the console): newline-delimited JSON over `STATE/ferry.sock`,
//! one request per line, one reply per line (a `subscribe` gets a status
//! reply every second until it disconnects). Every message carries `"v"`;
//! a runner answers a request of another version with an error.
//!
//! This crate holds only data: serde types, no I/O, so the console links
//! neither the database driver nor the state store.

use serde::{Deserialize, Serialize};

/// The protocol version.
pub const VERSION: u32 = 1;

/// A request line: `{"v":1,"cmd":"pause","job":"shop"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub cmd: Command,
}

impl Request {
    pub fn new(cmd: Command) -> Self {
        Request { v: VERSION, cmd }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// One status reply; `job` narrows it to one job.
    Status {
        #[serde(default)]
        job: Option<String>,
    },
    /// A status reply now and every second after.
    Subscribe {
        #[serde(default)]
        job: Option<String>,
    },
    /// Pause one job, or every job when `job` is absent.
    Pause {
        #[serde(default)]
        job: Option<String>,
    },
    Resume {
        #[serde(default)]
        job: Option<String>,
    },
    /// The live rate limit in rows per second (0 = unlimited).
    Throttle { job: String, rows_per_sec: u64 },
    /// Graceful stop of the runner.
    Stop,
    /// `migrate` jobs: catch up, verify counts, finish.
    Cutover {
        job: String,
        #[serde(default)]
        read_only_source: bool,
    },
    /// Verify a job's target against its source (online while it syncs).
    Verify {
        job: String,
        /// Row counts only (default: chunked checksums).
        #[serde(default)]
        count: bool,
        /// `db.table` or `table` names (globs); empty = every table.
        #[serde(default)]
        tables: Vec<String>,
        /// Write the fixing statements to this file (an absolute path).
        #[serde(default)]
        repair: Option<String>,
        /// Run them on the target, then re-verify the keys.
        #[serde(default)]
        apply: bool,
        /// Reply when it has finished (with the result) rather than at once.
        #[serde(default)]
        wait: bool,
    },
}

/// A reply line. `ok` false carries `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<Cutover>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Self {
        Reply {
            v: VERSION,
            ok: true,
            error: None,
            message: Some(message.into()),
            status: None,
            cutover: None,
            verification: None,
        }
    }

    pub fn error(error: impl Into<String>) -> Self {
        Reply {
            v: VERSION,
            ok: false,
            error: Some(error.into()),
            message: None,
            status: None,
            cutover: None,
            verification: None,
        }
    }

    pub fn status(status: Status) -> Self {
        Reply {
            status: Some(status),
            message: None,
            ..Reply::ok("")
        }
    }
}

/// Everything `ferry status` and the console show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub runner: Runner,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runner {
    /// False when the status was read from the state file with no runner.
    pub up: bool,
    pub pid: Option<u32>,
    pub version: String,
    pub state_dir: String,
    /// Unix milliseconds.
    pub started_ms: Option<u64>,
    pub now_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    /// full | sync | migrate | subscribe
    pub mode: String,
    /// pending, prechecking, precheck_failed, schema, full_load,
    /// catching_up, syncing, paused, verifying, retrying, failed, done
    pub state: String,
    /// Unix milliseconds of the last state change.
    pub since_ms: u64,
    /// Why it is in this state (the last error when failed or retrying).
    pub reason: Option<String>,
    pub retries: u32,
    /// Rows per second the job is held to; 0 = unlimited.
    pub throttle_rows_per_sec: u64,
    pub full: Option<FullLoad>,
    pub cdc: Option<Cdc>,
    /// `[alerts] lag` in seconds.
    pub alert_lag_s: Option<u64>,
    /// The job needs attention: failed, lag over its alert, or its last
    /// verification found differences.
    pub alert: bool,
    /// The newest verification run.
    #[serde(default)]
    pub verification: Option<Verification>,
    /// What a running verification is doing.
    #[serde(default)]
    pub verifying: Option<String>,
    /// A subscribe job's sink and how it is doing.
    #[serde(default)]
    pub sink: Option<String>,
    /// Newest last.
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FullLoad {
    pub rows_done: u64,
    pub rows_total: u64,
    pub rows_per_s: u64,
    pub tables: Vec<Table>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// `db.table` on the source.
    pub name: String,
    pub rows_done: u64,
    /// The source's estimate.
    pub rows_total: u64,
    pub rows_per_s: u64,
    pub eta_s: Option<u64>,
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cdc {
    /// `file:pos` the target has committed.
    pub position: String,
    pub gtid: Option<String>,
    /// The source's binlog head at the last sample.
    pub source_head: Option<String>,
    pub lag_s: u64,
    pub lag_bytes: u64,
    pub rows_per_s: u64,
    pub events_per_s: u64,
    /// The oldest binlog the source still has.
    pub oldest_binlog: Option<String>,
    /// Set when the source may purge the binlog the job resumes from.
    pub retention_risk: Option<String>,
    /// Recent samples, oldest first: (unix ms, lag s, rows/s).
    pub history: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    pub lag_s: u64,
    pub rows_per_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    /// stage | pause | resume | throttle | ddl | error | retry | cutover
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cutover {
    /// The final position: the application switches after it.
    pub position: String,
    pub gtid: Option<String>,
    /// Per table: (name, rows on the source, rows on the target).
    pub counts: Vec<(String, u64, u64)>,
}

/// One verification run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Unix milliseconds.
    pub started_ms: u64,
    pub finished_ms: u64,
    /// count | checksum
    pub level: String,
    /// after_full | every | command
    pub trigger: String,
    /// Compared while the job's CDC ran (differences rechecked after it
    /// caught up).
    pub online: bool,
    /// Finished, and every table equal.
    pub ok: bool,
    pub error: Option<String>,
    pub note: Option<String>,
    pub tables: Vec<VerifyTable>,
    pub repair: Option<Repair>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyTable {
    /// `db.table` on the source and on the target.
    pub table: String,
    pub target: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub chunks: u64,
    pub chunks_differing: u64,
    pub ok: bool,
    /// More rows differ than `diffs` lists (`[verify] max_diffs`).
    pub truncated: bool,
    pub duration_ms: u64,
    pub diffs: Vec<VerifyDiff>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyDiff {
    /// missing (source only) | extra (target only) | different
    pub class: String,
    /// `col=value,...` (every column of a keyless table's row).
    pub key: String,
    /// The differing columns (class different).
    pub columns: Vec<String>,
    /// Copies of a keyless row missing or extra; 1 otherwise.
    pub copies: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repair {
    pub file: String,
    pub statements: u64,
    pub applied: bool,
    /// Rows still differing when re-verified after applying.
    pub still_differing: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_flat_json_with_a_version() {
        let r = Request::new(Command::Throttle {
            job: "shop".into(),
            rows_per_sec: 500,
        });
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"cmd":"throttle","job":"shop","rows_per_sec":500}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let pause: Request = serde_json::from_str(r#"{"v":1,"cmd":"pause"}"#).unwrap();
        assert_eq!(pause.cmd, Command::Pause { job: None });
        assert!(serde_json::from_str::<Request>(r#"{"v":1,"cmd":"explode"}"#).is_err());
    }
}
