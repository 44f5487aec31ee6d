//! What the state file records of a job besides its definition: its
//! stage, its full-load plan and chunks, its CDC checkpoint and history,
//! its events and verification runs. Plain data; the store encodes them
//! (a change to one of these is a change of the state format: see
//! `state::FORMAT_VERSION` and the pinned encodings in its tests).

use serde::{Deserialize, Serialize};

use super::position::BinlogPos;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Prechecking,
    PrecheckFailed,
    Schema,
    FullLoad,
    CatchingUp,
    Syncing,
    Paused,
    Verifying,
    Retrying,
    Failed,
    Done,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Prechecking => "prechecking",
            JobState::PrecheckFailed => "precheck_failed",
            JobState::Schema => "schema",
            JobState::FullLoad => "full_load",
            JobState::CatchingUp => "catching_up",
            JobState::Syncing => "syncing",
            JobState::Paused => "paused",
            JobState::Verifying => "verifying",
            JobState::Retrying => "retrying",
            JobState::Failed => "failed",
            JobState::Done => "done",
        }
    }
}

/// A table's full-load plan: how many chunks, and whether it is finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablePlan {
    pub chunks: u32,
    /// Chunked along no key: copied as one stream, restarted whole.
    pub keyless: bool,
    pub rows_estimate: u64,
    pub done: bool,
    /// For a keyless table of a CDC job: the binlog position of the
    /// consistent snapshot it was copied in. CDC skips the table's changes
    /// up to there (they are in the copy), since replaying them on a table
    /// without a key would duplicate rows.
    pub snapshot: Option<BinlogPos>,
}

/// One key value of a chunk boundary, as it came from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyValue {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    Bytes(Vec<u8>),
    /// year, month, day, hour, minute, second, microsecond
    Date(u16, u8, u8, u8, u8, u8, u32),
    /// negative, days, hours, minutes, seconds, microseconds
    Time(bool, u32, u8, u8, u8, u32),
}

impl From<mysql_async::Value> for KeyValue {
    fn from(v: mysql_async::Value) -> Self {
        use mysql_async::Value as V;
        match v {
            V::NULL => KeyValue::Null,
            V::Int(i) => KeyValue::Int(i),
            V::UInt(u) => KeyValue::UInt(u),
            V::Float(f) => KeyValue::Float(f),
            V::Double(d) => KeyValue::Double(d),
            V::Bytes(b) => KeyValue::Bytes(b),
            V::Date(y, mo, d, h, mi, s, us) => KeyValue::Date(y, mo, d, h, mi, s, us),
            V::Time(n, d, h, m, s, us) => KeyValue::Time(n, d, h, m, s, us),
        }
    }
}

impl From<&KeyValue> for mysql_async::Value {
    fn from(v: &KeyValue) -> Self {
        use mysql_async::Value as V;
        match v.clone() {
            KeyValue::Null => V::NULL,
            KeyValue::Int(i) => V::Int(i),
            KeyValue::UInt(u) => V::UInt(u),
            KeyValue::Float(f) => V::Float(f),
            KeyValue::Double(d) => V::Double(d),
            KeyValue::Bytes(b) => V::Bytes(b),
            KeyValue::Date(y, mo, d, h, mi, s, us) => V::Date(y, mo, d, h, mi, s, us),
            KeyValue::Time(n, d, h, m, s, us) => V::Time(n, d, h, m, s, us),
        }
    }
}

/// A key range of a table: lower bound exclusive, upper bound inclusive;
/// `None` is open-ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub lower: Option<Vec<KeyValue>>,
    pub upper: Option<Vec<KeyValue>>,
    /// Committed on the target (and so never copied again).
    pub done: bool,
    /// Rows copied, once done.
    pub rows: u64,
}

/// How many of a table's chunks are done, and the rows they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunksDone {
    pub chunks: u32,
    pub rows: u64,
}

/// Where CDC resumes: the end of the last transaction the target
/// committed, and the end of the hand-over window (safe mode until past it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub position: BinlogPos,
    pub gtid: Option<String>,
    pub unix_ms: u64,
    pub safe_until: Option<BinlogPos>,
}

impl Checkpoint {
    /// Where CDC starts: `position`, recorded now, no hand-over window yet.
    pub fn start(position: BinlogPos, gtid: Option<String>) -> Checkpoint {
        Checkpoint {
            position,
            gtid,
            unix_ms: super::clock::now_ms(),
            safe_until: None,
        }
    }
}

/// One point of a CDC job's history, for status and sparklines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdcSample {
    pub position: BinlogPos,
    /// Seconds between the last applied event's time and now; 0 when idle.
    pub lag_s: u64,
    /// Bytes of binlog between the applied position and the source's head
    /// (a lower bound when they are in different files).
    pub lag_bytes: u64,
    pub rows_per_s: u64,
    pub events_per_s: u64,
}

/// An entry of a job's event log: stage changes, pauses, throttles, DDL,
/// errors with their position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub kind: String,
    pub message: String,
}

/// One verification run of a job: what was compared, and what differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyRun {
    pub started_ms: u64,
    pub finished_ms: u64,
    /// "count" or "checksum".
    pub level: String,
    /// What started it: "after_full", "every", "command".
    pub trigger: String,
    /// Compared while the job's CDC ran (differences rechecked after it
    /// applied past the source position of the first look).
    pub online: bool,
    pub tables: Vec<VerifyTable>,
    /// Why the run could not finish, if it could not.
    pub error: Option<String>,
    /// A caveat on the result (e.g. the CDC did not catch up in time).
    pub note: Option<String>,
    pub repair: Option<RepairSummary>,
}

impl VerifyRun {
    /// Finished, and every table the same on both sides.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.tables.iter().all(VerifyTable::ok)
    }
}

/// One table of a verification run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyTable {
    /// `db.table` on the source.
    pub table: String,
    /// `db.table` on the target.
    pub target: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub chunks: u64,
    pub chunks_differing: u64,
    /// The key columns a difference names (every column for a keyless table).
    pub key_columns: Vec<String>,
    pub keyless: bool,
    /// The differences found, up to `[verify] max_diffs`.
    pub diffs: Vec<VerifyDiff>,
    /// More differences exist than `diffs` holds.
    pub truncated: bool,
    pub duration_ms: u64,
}

impl VerifyTable {
    pub fn ok(&self) -> bool {
        self.source_rows == self.target_rows && self.chunks_differing == 0 && self.diffs.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiffClass {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// On both, with different values.
    Different,
}

impl DiffClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DiffClass::Missing => "missing",
            DiffClass::Extra => "extra",
            DiffClass::Different => "different",
        }
    }
}

/// A differing row: its key (every column of a keyless table's row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyDiff {
    pub class: DiffClass,
    pub key: Vec<KeyValue>,
    /// The columns whose values differ (class `Different`).
    pub columns: Vec<String>,
    /// Copies of this row missing or extra (keyless tables; else 1).
    pub copies: u64,
}

/// What `--repair` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSummary {
    pub file: String,
    pub statements: u64,
    pub applied: bool,
    /// Rows that still differ when re-verified after applying.
    pub still_differing: u64,
}
