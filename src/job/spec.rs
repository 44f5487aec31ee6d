//! The validated form of a job file, and the error that points at a
//! place in one.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a job does; see DESIGN.md §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Full,
    Sync,
    Migrate,
    Subscribe,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Sync => "sync",
            Mode::Migrate => "migrate",
            Mode::Subscribe => "subscribe",
        }
    }

    /// Modes that read the binlog and so need it configured for CDC.
    pub fn needs_binlog(self) -> bool {
        !matches!(self, Mode::Full)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub mode: Mode,
    pub source: Endpoint,
    pub target: Option<Endpoint>,
    pub select: Vec<Selection>,
    pub full: FullOptions,
    pub cdc: CdcOptions,
    pub verify: VerifyOptions,
    pub sink: Option<SinkSpec>,
    pub alerts: Alerts,
    /// How values without a PostgreSQL equivalent are carried (a
    /// PostgreSQL target's `[target]` keys; defaults otherwise).
    #[serde(default)]
    pub mapping: Mapping,
}

impl JobSpec {
    /// Whether `other` moves the same data the same way, so a run of it may
    /// resume this one's progress: only tunables (threads, rate, verify
    /// schedule, alerts, passwords' sources) may differ.
    pub fn same_data_as(&self, other: &JobSpec) -> bool {
        let ends = |a: &Endpoint, b: &Endpoint| a.host == b.host && a.port == b.port;
        self.name == other.name
            && self.mode == other.mode
            && ends(&self.source, &other.source)
            && match (&self.target, &other.target) {
                (Some(a), Some(b)) => ends(a, b),
                (None, None) => true,
                _ => false,
            }
            && self.select == other.select
            && self.full.chunk_rows == other.full.chunk_rows
            && self.full.existing_rows == other.full.existing_rows
            && self.sink == other.sink
            && self.mapping == other.mapping
            && match (&self.target, &other.target) {
                (Some(a), Some(b)) => a.kind == b.kind && a.database == b.database,
                _ => true,
            }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: PasswordSource,
    pub server_id: Option<u32>,
    pub tls: Tls,
    pub ca: Option<PathBuf>,
    /// What the server is: the source is always MySQL-family; a target may
    /// be PostgreSQL.
    #[serde(default)]
    pub kind: ServerKind,
    /// The PostgreSQL database a target's schemas are created in.
    #[serde(default)]
    pub database: Option<String>,
}

/// A server's engine family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    #[default]
    Mysql,
    Postgresql,
}

impl Endpoint {
    /// `user@host:port`, for messages; never includes the password.
    pub fn display(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Where a password comes from. The password itself is read only when a
/// connection is opened and is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PasswordSource {
    None,
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    Disabled,
    Prefer,
    Required,
    Verify,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub database: String,
    /// Globs; `None` selects every table (and the database's routines).
    pub tables: Option<Vec<String>>,
    pub exclude: Vec<String>,
    /// Target database name.
    pub target_database: String,
}

impl Selection {
    /// Whether `table` (a table or view name) is selected.
    pub fn matches(&self, table: &str) -> bool {
        let included = match &self.tables {
            None => true,
            Some(globs) => globs.iter().any(|g| glob_match(g, table)),
        };
        included && !self.exclude.iter().any(|g| glob_match(g, table))
    }
}

fn glob_match(glob: &str, name: &str) -> bool {
    // Patterns were checked at validation, so a build failure cannot happen;
    // treat it as "no match" rather than panicking.
    globset::Glob::new(glob)
        .map(|g| g.compile_matcher().is_match(name))
        .unwrap_or(false)
}

/// How MySQL values that PostgreSQL has no place for are carried: each is
/// refused (the precheck or the load names it) or mapped as chosen, never
/// truncated silently.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Mapping {
    pub tinyint1: Tinyint1,
    pub zero_dates: ZeroDates,
    pub nul_in_text: NulInText,
    /// Not a job key: whether the target database has PostGIS (spatial
    /// columns become `geometry`, else bytea), read from the target when
    /// a run connects to it (`pg::conn::with_postgis`).
    #[serde(skip)]
    pub postgis: bool,
}

/// The job's choices; what the target offers (`postgis`) is not one.
impl PartialEq for Mapping {
    fn eq(&self, other: &Mapping) -> bool {
        (self.tinyint1, self.zero_dates, self.nul_in_text)
            == (other.tinyint1, other.zero_dates, other.nul_in_text)
    }
}

impl Eq for Mapping {}

/// `TINYINT(1)`, MySQL's BOOLEAN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tinyint1 {
    /// `smallint`: every value fits.
    #[default]
    Smallint,
    /// `boolean`: 0 is false, 1 true; any other value fails the load.
    Boolean,
}

/// Zero dates (`0000-00-00`, or a zero month or day) of a non-strict
/// source, which PostgreSQL has no value for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroDates {
    /// The load stops at the first one, naming its table, column and key.
    #[default]
    Refuse,
    /// NULL (the column is created nullable).
    Null,
    /// `-infinity`.
    Infinity,
}

/// NUL characters in text, which PostgreSQL's text types cannot hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NulInText {
    /// The load stops at the first one, naming its table, column and key.
    #[default]
    Refuse,
    /// The NUL characters are removed.
    Strip,
}

/// What to do when a target table already holds rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExistingRows {
    /// Precheck fails on a non-empty target table.
    Error,
    /// Rows with the same key are replaced by the source's (`REPLACE`).
    Overwrite,
    /// Rows with the same key keep the target's version (`INSERT IGNORE`).
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FullOptions {
    pub threads: usize,
    pub chunk_rows: u64,
    pub rows_per_sec: u64,
    pub existing_rows: ExistingRows,
    /// Whether the target logs the loaded rows in its own binlog. `false`
    /// (like myloader's default) saves target CPU, but the target's replicas
    /// then miss the loaded rows; needs SUPER or BINLOG ADMIN.
    pub target_binlog: bool,
}

impl Default for FullOptions {
    fn default() -> Self {
        FullOptions {
            threads: 4,
            chunk_rows: 10_000,
            rows_per_sec: 0,
            existing_rows: ExistingRows::Error,
            target_binlog: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CdcStart {
    Auto,
    Now,
    FilePos { file: String, pos: u64 },
    Gtid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DdlPolicy {
    Apply,
    Skip,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CdcOptions {
    pub start: CdcStart,
    pub ddl: DdlPolicy,
    pub threads: usize,
    pub retry_for: Duration,
    /// Names of the new table an online schema change tool copies a table
    /// into, with `{table}` for the table's name (gh-ost's `_{table}_gho`,
    /// pt-online-schema-change's `_{table}_new`).
    pub shadow_tables: Vec<String>,
    /// Names such a tool gives the old table and its helper tables.
    pub trash_tables: Vec<String>,
}

/// gh-ost's and pt-online-schema-change's table names.
pub const DEFAULT_SHADOW_TABLES: [&str; 2] = ["_{table}_gho", "_{table}_new"];
pub const DEFAULT_TRASH_TABLES: [&str; 5] = [
    "_{table}_ghc",
    "_{table}_ghk",
    "_{table}_del",
    "_{table}_*_del",
    "_{table}_old",
];

impl Default for CdcOptions {
    fn default() -> Self {
        CdcOptions {
            start: CdcStart::Auto,
            ddl: DdlPolicy::Apply,
            threads: 1,
            retry_for: Duration::from_secs(12 * 3600),
            shadow_tables: DEFAULT_SHADOW_TABLES.map(String::from).to_vec(),
            trash_tables: DEFAULT_TRASH_TABLES.map(String::from).to_vec(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyLevel {
    None,
    Count,
    Checksum,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyOptions {
    pub after_full: VerifyLevel,
    pub every: Option<Duration>,
    /// Rows per checksum chunk.
    pub chunk_rows: u64,
    /// Chunks checked at once (each with a source and a target session).
    pub threads: usize,
    /// Rows read per second on each side; 0 = unlimited.
    pub rows_per_sec: u64,
    /// Differing keys kept per table.
    pub max_diffs: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            after_full: VerifyLevel::None,
            every: None,
            chunk_rows: 20_000,
            threads: 2,
            rows_per_sec: 0,
            max_diffs: 100,
        }
    }
}

/// Where a `subscribe` job delivers its change events, and what it sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkSpec {
    pub kind: SinkKind,
    /// Emit every selected row as an `r` event before streaming changes.
    pub snapshot: bool,
    /// Emit DDL statements as events too.
    pub ddl: bool,
    /// `db.table.column` globs of columns left out of the events.
    pub exclude_columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkKind {
    /// A file (rotated past `rotate_bytes`) or `-` for stdout.
    Jsonl { path: String, rotate_bytes: u64 },
    /// JetStream: `subject` is a template with `{db}` and `{table}`; the
    /// stream `stream` is created over them when missing.
    Nats {
        url: String,
        subject: String,
        stream: String,
    },
    /// `topic` is a template with `{db}` and `{table}`; topics are created
    /// with `partitions` partitions when missing; the message key is the
    /// row's primary key.
    Kafka {
        url: String,
        topic: String,
        partitions: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Alerts {
    pub lag: Option<Duration>,
}

/// A job file error, pointing at the file, line, column and field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JobError {
    pub file: String,
    /// 1-based; 0 when the error is not about a place in the file.
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}
