//! The state store: one redb file per state dir, owned by one process.
//!
//! Every table name carries a version (`"jobs-1"`); values are postcard bytes
//! decoded here, with errors rather than panics. The `meta-1` table holds the
//! file's format version, and a file written by a newer Ferry is refused.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::*;

mod record;
mod v2;

pub use record::JobRecord;

/// Format of the state file this build writes. Bump it with a migration.
/// 2: job definitions carry `[verify]` tuning and the `[sink]` options
/// (format 1 files, from before, are refused: nothing to migrate yet).
/// 3: a job's definition is stored as JSON in its record (new job-file
/// options then default without a migration); format 2 is migrated.
/// 4: each table's count of chunks done (`full-done-1`), so recording a
/// chunk and reading progress cost the same for any number of chunks.
pub const FORMAT_VERSION: u32 = 4;

/// `"format_version"` → u32 little-endian.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");
/// job name → postcard [`JobRecord`] (format 3: see [`StoredJob`]).
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs-1");
/// (job, `db.table`) → postcard [`TablePlan`].
const FULL_TABLES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("full-tables-1");
/// (job, `db.table`, chunk number) → postcard [`Chunk`].
const FULL_CHUNKS: TableDefinition<(&str, &str, u32), &[u8]> =
    TableDefinition::new("full-chunks-1");
/// (job, `db.table`) → postcard [`ChunksDone`]: kept with every chunk
/// recorded, so no one counts the chunks.
const FULL_DONE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("full-done-1");
/// job name → postcard [`Checkpoint`].
const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoints-1");
/// (job, unix ms) → postcard [`CdcSample`]; the last [`CDC_HISTORY_MS`] only.
const CDC_STATS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("cdc-stats-1");

/// (job, sequence) → postcard [`Event`]; the last [`EVENTS_KEPT`] per job.
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events-1");

/// (job, started unix ms) → postcard [`VerifyRun`]; the last
/// [`VERIFY_RUNS_KEPT`] per job.
const VERIFY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("verify-1");

/// (job, XID) → postcard [`XaRows`]: the rows of an XA transaction
/// prepared on the source and not yet committed or rolled back.
const XA: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("xa-1");

/// job → postcard list of ((database, shadow table), [`Ghost`]): the
/// online schema changes in progress on the source.
const GHOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("ghosts-1");

/// job → postcard [`BinlogPos`]: a statement sent to the target whose
/// position is not checkpointed yet (a replay after a crash may find it
/// applied).
const DDL_PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("ddl-pending-1");

/// How many verification runs the state keeps per job.
pub const VERIFY_RUNS_KEPT: usize = 50;

/// How many events the state keeps per job.
pub const EVENTS_KEPT: usize = 200;

/// How much CDC history (lag, throughput) the state keeps per job.
pub const CDC_HISTORY_MS: u64 = 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state dir {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error(
        "state dir {dir} is in use by another ferry runner{}; \
         stop it first, or use another --state",
        .pid.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { dir: String, pid: Option<String> },
    #[error(
        "state file {path} has format version {found}, newer than this ferry \
         understands ({supported}); use a newer ferry"
    )]
    NewerFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error(
        "state file {path} was written by an older Ferry (format {found}; this build reads \
         format {supported}) and cannot be migrated; finish its jobs with that version, or \
         start them again with a new --state dir"
    )]
    OlderFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("state file: {0}")]
    Db(Box<redb::Error>),
    #[error("state file: cannot decode {table} entry {key}: {source}")]
    Decode {
        table: &'static str,
        key: String,
        source: postcard::Error,
    },
    #[error("state file: cannot encode a value: {0}")]
    Encode(postcard::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StateError {
            fn from(e: $t) -> Self { StateError::Db(Box::new(e.into())) }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// A table's full-load progress as the state holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStatus {
    pub table: String,
    pub plan: TablePlan,
    pub rows_done: u64,
}

/// The open state dir: the redb file plus the lock that makes this process
/// its only owner.
pub struct Store {
    db: Database,
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the state in `dir`, taking its lock.
    pub fn open(dir: &Path) -> Result<Store> {
        let io = |source| StateError::Io {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir.join("logs")).map_err(io)?;
        let lock_path = dir.join("ferry.lock");
        let mut lock = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&lock_path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty());
                return Err(StateError::Locked {
                    dir: dir.display().to_string(),
                    pid,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        lock.set_len(0).map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;

        let path = dir.join("ferry.redb");
        let db = Database::create(&path)?;
        let store = Store {
            db,
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        store.init(&path)?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the tables and checks or writes the format version.
    fn init(&self, path: &Path) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let found = meta.get("format_version")?.map(|v| {
                let mut le = [0u8; 4];
                for (to, from) in le.iter_mut().zip(v.value()) {
                    *to = *from;
                }
                u32::from_le_bytes(le)
            });
            match found {
                Some(v) if v > FORMAT_VERSION => {
                    return Err(StateError::NewerFormat {
                        path: path.display().to_string(),
                        found: v,
                        supported: FORMAT_VERSION,
                    })
                }
                // Ordered: each step takes the file one format further.
                Some(v @ 2..) if v < FORMAT_VERSION => {
                    if v < 3 {
                        migrate_v2(&tx, path)?;
                    }
                    if v < 4 {
                        migrate_v3(&tx, path)?;
                    }
                    meta.insert("format_version", FORMAT_VERSION.to_le_bytes().as_slice())?;
                }
                // Format 1 has no migration.
                Some(v) if v < FORMAT_VERSION => {
                    return Err(StateError::OlderFormat {
                        path: path.display().to_string(),
                        found: v,
                        supported: FORMAT_VERSION,
                    })
                }
                Some(_) => {}
                None => {
                    meta.insert("format_version", FORMAT_VERSION.to_le_bytes().as_slice())?;
                }
            }
            tx.open_table(JOBS)?;
            tx.open_table(FULL_TABLES)?;
            tx.open_table(FULL_CHUNKS)?;
            tx.open_table(FULL_DONE)?;
            tx.open_table(CHECKPOINTS)?;
            tx.open_table(CDC_STATS)?;
            tx.open_table(EVENTS)?;
            tx.open_table(VERIFY)?;
            tx.open_table(XA)?;
            tx.open_table(GHOSTS)?;
            tx.open_table(DDL_PENDING)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn job(&self, name: &str) -> Result<Option<JobRecord>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(JOBS)?;
        t.get(name)?
            .map(|v| decode("jobs-1", name, v.value()))
            .transpose()
    }

    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(JOBS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push(decode("jobs-1", k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn put_job(&self, job: &JobRecord) -> Result<()> {
        let bytes = encode(job)?;
        let tx = self.db.begin_write()?;
        tx.open_table(JOBS)?
            .insert(job.spec.name.as_str(), bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Moves a job to `state`, recording when and why.
    pub fn set_job_state(&self, name: &str, state: JobState, reason: Option<String>) -> Result<()> {
        self.update_job(name, |j| {
            j.state = state;
            j.since_ms = now_ms();
            j.reason = reason;
        })
    }

    pub fn update_job(&self, name: &str, f: impl FnOnce(&mut JobRecord)) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(JOBS)?;
            let current = t.get(name)?.map(|v| v.value().to_vec());
            if let Some(bytes) = current {
                let mut job: JobRecord = decode("jobs-1", name, &bytes)?;
                f(&mut job);
                t.insert(name, encode(&job)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets a job's full-load progress (plans and chunks).
    pub fn clear_full_load(&self, job: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut tables = tx.open_table(FULL_TABLES)?;
            let keys: Vec<String> = tables
                .range((job, "")..)?
                .map_while(|e| e.ok())
                .take_while(|(k, _)| k.value().0 == job)
                .map(|(k, _)| k.value().1.to_string())
                .collect();
            for t in &keys {
                tables.remove((job, t.as_str()))?;
            }
            let mut chunks = tx.open_table(FULL_CHUNKS)?;
            chunks.retain(|(j, _, _), _| j != job)?;
            tx.open_table(FULL_DONE)?.retain(|(j, _), _| j != job)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn table_plan(&self, job: &str, table: &str) -> Result<Option<TablePlan>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(FULL_TABLES)?;
        t.get((job, table))?
            .map(|v| decode("full-tables-1", table, v.value()))
            .transpose()
    }

    /// Stores a table's plan and its chunks in one transaction (a plan of
    /// a few chunks; a long one is written with [`Store::begin_table_plan`],
    /// [`Store::put_chunks`] and [`Store::finish_table_plan`]).
    pub fn put_table_plan(
        &self,
        job: &str,
        table: &str,
        plan: &TablePlan,
        chunks: &[Chunk],
    ) -> Result<()> {
        let tx = self.db.begin_write()?;
        clear_plan(&tx, job, table)?;
        write_chunks(&tx, job, table, 0, chunks)?;
        let mut done = ChunksDone::default();
        for chunk in chunks.iter().filter(|c| c.done) {
            done.chunks += 1;
            done.rows += chunk.rows;
        }
        write_plan(&tx, job, table, plan, &done)?;
        tx.commit()?;
        Ok(())
    }

    /// Begins a table's plan written in parts: forgets what an unfinished
    /// plan of it left. Until [`Store::finish_table_plan`] the table has no
    /// plan (a crash in between plans it again).
    pub fn begin_table_plan(&self, job: &str, table: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        clear_plan(&tx, job, table)?;
        tx.commit()?;
        Ok(())
    }

    /// Chunks `first..` of a table whose plan is being written.
    pub fn put_chunks(&self, job: &str, table: &str, first: u32, chunks: &[Chunk]) -> Result<()> {
        let tx = self.db.begin_write()?;
        write_chunks(&tx, job, table, first, chunks)?;
        tx.commit()?;
        Ok(())
    }

    /// The plan of a table whose chunks (none done yet) are written.
    pub fn finish_table_plan(&self, job: &str, table: &str, plan: &TablePlan) -> Result<()> {
        let tx = self.db.begin_write()?;
        write_plan(&tx, job, table, plan, &ChunksDone::default())?;
        tx.commit()?;
        Ok(())
    }

    /// Every chunk of a table (tests and small tables; a load walks them
    /// with [`Store::next_chunk`]).
    pub fn chunks(&self, job: &str, table: &str) -> Result<Vec<Chunk>> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some((i, c)) = self.chunk_from(job, table, from, false)? {
            out.push(c);
            from = i + 1;
        }
        Ok(out)
    }

    /// The first chunk from `from` on that is not done, with its index.
    pub fn next_chunk(&self, job: &str, table: &str, from: u32) -> Result<Option<(u32, Chunk)>> {
        self.chunk_from(job, table, from, true)
    }

    fn chunk_from(
        &self,
        job: &str,
        table: &str,
        from: u32,
        undone: bool,
    ) -> Result<Option<(u32, Chunk)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(FULL_CHUNKS)?;
        for entry in t.range((job, table, from)..=(job, table, u32::MAX))? {
            let (k, v) = entry?;
            let index = k.value().2;
            let chunk: Chunk = decode("full-chunks-1", &format!("{table}#{index}"), v.value())?;
            if !(undone && chunk.done) {
                return Ok(Some((index, chunk)));
            }
        }
        Ok(None)
    }

    /// Chunk `index` of a table.
    pub fn chunk_at(&self, job: &str, table: &str, index: u32) -> Result<Option<Chunk>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(FULL_CHUNKS)?;
        let chunk = t.get((job, table, index))?;
        chunk
            .map(|v| decode("full-chunks-1", &format!("{table}#{index}"), v.value()))
            .transpose()
    }

    /// How many of a table's chunks are done, and their rows.
    pub fn chunks_done(&self, job: &str, table: &str) -> Result<ChunksDone> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(FULL_DONE)?;
        let done = t.get((job, table))?;
        done.map(|v| decode("full-done-1", table, v.value()))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Records that chunk `index` of `table` is committed on the target;
    /// marks the table done when it was the last one.
    pub fn chunk_done(
        &self,
        job: &str,
        table: &str,
        index: u32,
        rows: u64,
        snapshot: Option<BinlogPos>,
    ) -> Result<bool> {
        let tx = self.db.begin_write()?;
        let table_done;
        {
            let mut c = tx.open_table(FULL_CHUNKS)?;
            let key = format!("{table}#{index}");
            let current = c.get((job, table, index))?.map(|v| v.value().to_vec());
            let Some(bytes) = current else {
                return Ok(false);
            };
            let mut chunk: Chunk = decode("full-chunks-1", &key, &bytes)?;
            let mut counts = tx.open_table(FULL_DONE)?;
            let mut done: ChunksDone = match counts.get((job, table))? {
                Some(v) => decode("full-done-1", table, v.value())?,
                None => ChunksDone::default(),
            };
            if chunk.done {
                done.rows = done.rows.saturating_sub(chunk.rows);
            } else {
                done.chunks += 1;
            }
            done.rows += rows;
            chunk.done = true;
            chunk.rows = rows;
            c.insert((job, table, index), encode(&chunk)?.as_slice())?;
            counts.insert((job, table), encode(&done)?.as_slice())?;
            let planned = match tx.open_table(FULL_TABLES)?.get((job, table))? {
                Some(v) => decode::<TablePlan>("full-tables-1", table, v.value())?.chunks,
                None => 0,
            };
            let all_done = done.chunks >= planned;
            table_done = all_done;
            if all_done || snapshot.is_some() {
                let mut t = tx.open_table(FULL_TABLES)?;
                let plan = t.get((job, table))?.map(|v| v.value().to_vec());
                if let Some(bytes) = plan {
                    let mut plan: TablePlan = decode("full-tables-1", table, &bytes)?;
                    plan.done |= all_done;
                    plan.snapshot = snapshot.or(plan.snapshot);
                    t.insert((job, table), encode(&plan)?.as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(table_done)
    }

    /// The snapshot positions of a job's tables (see [`TablePlan::snapshot`]).
    pub fn snapshots(&self, job: &str) -> Result<Vec<(String, BinlogPos)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(FULL_TABLES)?;
        let mut out = Vec::new();
        for entry in t.range((job, "")..)? {
            let (k, v) = entry?;
            let (j, table) = k.value();
            if j != job {
                break;
            }
            let plan: TablePlan = decode("full-tables-1", table, v.value())?;
            if let Some(pos) = plan.snapshot {
                out.push((table.to_string(), pos));
            }
        }
        Ok(out)
    }

    /// Adds a CDC sample at `at_ms` and forgets the job's samples older than
    /// [`CDC_HISTORY_MS`], so the history stays bounded.
    pub fn put_cdc_sample(&self, job: &str, at_ms: u64, sample: &CdcSample) -> Result<()> {
        let bytes = encode(sample)?;
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(CDC_STATS)?;
            t.insert((job, at_ms), bytes.as_slice())?;
            let cutoff = at_ms.saturating_sub(CDC_HISTORY_MS);
            let old: Vec<u64> = t
                .range((job, 0)..(job, cutoff))?
                .map_while(|e| e.ok())
                .map(|(k, _)| k.value().1)
                .collect();
            for ms in old {
                t.remove((job, ms))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A job's CDC history, oldest first.
    pub fn cdc_samples(&self, job: &str) -> Result<Vec<(u64, CdcSample)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CDC_STATS)?;
        let mut out = Vec::new();
        for entry in t.range((job, 0)..=(job, u64::MAX))? {
            let (k, v) = entry?;
            let ms = k.value().1;
            out.push((
                ms,
                decode("cdc-stats-1", &format!("{job}@{ms}"), v.value())?,
            ));
        }
        Ok(out)
    }

    /// Appends to a job's event log, forgetting all but the newest
    /// [`EVENTS_KEPT`].
    pub fn add_event(&self, job: &str, kind: &str, message: &str) -> Result<()> {
        let event = Event {
            at_ms: now_ms(),
            kind: kind.to_string(),
            message: message.to_string(),
        };
        let bytes = encode(&event)?;
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(EVENTS)?;
            let last = t
                .range((job, 0)..=(job, u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().1);
            let seq = last.map_or(0, |s| s + 1);
            t.insert((job, seq), bytes.as_slice())?;
            let keep_from = (seq + 1).saturating_sub(EVENTS_KEPT as u64);
            if keep_from > 0 {
                let old: Vec<u64> = t
                    .range((job, 0)..(job, keep_from))?
                    .map_while(|e| e.ok())
                    .map(|(k, _)| k.value().1)
                    .collect();
                for seq in old {
                    t.remove((job, seq))?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A job's event log, oldest first.
    pub fn events(&self, job: &str) -> Result<Vec<Event>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(EVENTS)?;
        let mut out = Vec::new();
        for entry in t.range((job, 0)..=(job, u64::MAX))? {
            let (k, v) = entry?;
            out.push(decode(
                "events-1",
                &format!("{job}#{}", k.value().1),
                v.value(),
            )?);
        }
        Ok(out)
    }

    /// Every table of a job's full load with the rows its finished chunks hold.
    pub fn full_progress(&self, job: &str) -> Result<Vec<TableStatus>> {
        let tx = self.db.begin_read()?;
        let tables = tx.open_table(FULL_TABLES)?;
        let done = tx.open_table(FULL_DONE)?;
        let mut out = Vec::new();
        for entry in tables.range((job, "")..)? {
            let (k, v) = entry?;
            let (j, table) = k.value();
            if j != job {
                break;
            }
            let plan: TablePlan = decode("full-tables-1", table, v.value())?;
            let rows_done = match done.get((job, table))? {
                Some(v) => decode::<ChunksDone>("full-done-1", table, v.value())?.rows,
                None => 0,
            };
            out.push(TableStatus {
                table: table.to_string(),
                plan,
                rows_done,
            });
        }
        Ok(out)
    }

    /// Stores a verification run (a re-stored run replaces itself), keeping
    /// the newest [`VERIFY_RUNS_KEPT`] of the job.
    pub fn put_verify_run(&self, job: &str, run: &VerifyRun) -> Result<()> {
        let bytes = encode(run)?;
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(VERIFY)?;
            t.insert((job, run.started_ms), bytes.as_slice())?;
            let keys: Vec<u64> = t
                .range((job, 0)..=(job, u64::MAX))?
                .map_while(|e| e.ok())
                .map(|(k, _)| k.value().1)
                .collect();
            for old in keys
                .iter()
                .take(keys.len().saturating_sub(VERIFY_RUNS_KEPT))
            {
                t.remove((job, *old))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A job's verification runs, oldest first.
    pub fn verify_runs(&self, job: &str) -> Result<Vec<VerifyRun>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(VERIFY)?;
        let mut out = Vec::new();
        for entry in t.range((job, 0)..=(job, u64::MAX))? {
            let (k, v) = entry?;
            out.push(decode(
                "verify-1",
                &format!("{job}#{}", k.value().1),
                v.value(),
            )?);
        }
        Ok(out)
    }

    /// The newest verification run of a job.
    pub fn last_verify_run(&self, job: &str) -> Result<Option<VerifyRun>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(VERIFY)?;
        let last = t
            .range((job, 0)..=(job, u64::MAX))?
            .next_back()
            .transpose()?;
        last.map(|(k, v)| decode("verify-1", &format!("{job}#{}", k.value().1), v.value()))
            .transpose()
    }

    pub fn checkpoint(&self, job: &str) -> Result<Option<Checkpoint>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CHECKPOINTS)?;
        t.get(job)?
            .map(|v| decode("checkpoints-1", job, v.value()))
            .transpose()
    }

    pub fn put_checkpoint(&self, job: &str, cp: &Checkpoint) -> Result<()> {
        let bytes = encode(cp)?;
        let tx = self.db.begin_write()?;
        tx.open_table(CHECKPOINTS)?.insert(job, bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets what was copied of a table (it is copied again from scratch).
    pub fn reset_table(&self, job: &str, table: &str) -> Result<()> {
        let Some(mut plan) = self.table_plan(job, table)? else {
            return Ok(());
        };
        let chunks: Vec<Chunk> = self
            .chunks(job, table)?
            .into_iter()
            .map(|c| Chunk {
                done: false,
                rows: 0,
                ..c
            })
            .collect();
        plan.done = false;
        plan.snapshot = None;
        self.put_table_plan(job, table, &plan, &chunks)
    }

    /// Records a table copied whole during CDC (it entered the selection):
    /// done, with the binlog position of its snapshot.
    pub fn put_copied_table(&self, job: &str, table: &str, snapshot: &BinlogPos) -> Result<()> {
        let plan = TablePlan {
            chunks: 1,
            keyless: false,
            rows_estimate: 0,
            done: true,
            snapshot: Some(snapshot.clone()),
        };
        let chunk = Chunk {
            lower: None,
            upper: None,
            done: true,
            rows: 0,
        };
        self.put_table_plan(job, table, &plan, &[chunk])
    }

    pub fn put_xa(&self, job: &str, xid: &str, rows: &XaRows) -> Result<()> {
        let bytes = encode(rows)?;
        let tx = self.db.begin_write()?;
        tx.open_table(XA)?.insert((job, xid), bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub fn xa(&self, job: &str, xid: &str) -> Result<Option<XaRows>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(XA)?;
        t.get((job, xid))?
            .map(|v| decode("xa-1", xid, v.value()))
            .transpose()
    }

    pub fn remove_xa(&self, job: &str, xid: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(XA)?.remove((job, xid))?;
        tx.commit()?;
        Ok(())
    }

    pub fn ghosts(&self, job: &str) -> Result<crate::model::Ghosts> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(GHOSTS)?;
        let list: Vec<((String, String), Ghost)> = match t.get(job)? {
            Some(v) => decode("ghosts-1", job, v.value())?,
            None => Vec::new(),
        };
        Ok(list.into_iter().collect())
    }

    pub fn put_ghosts(&self, job: &str, ghosts: &crate::model::Ghosts) -> Result<()> {
        let list: Vec<(&(String, String), &Ghost)> = ghosts.iter().collect();
        let bytes = encode(&list)?;
        let tx = self.db.begin_write()?;
        tx.open_table(GHOSTS)?.insert(job, bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub fn ddl_pending(&self, job: &str) -> Result<Option<BinlogPos>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(DDL_PENDING)?;
        t.get(job)?
            .map(|v| decode("ddl-pending-1", job, v.value()))
            .transpose()
    }

    pub fn set_ddl_pending(&self, job: &str, at: Option<&BinlogPos>) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(DDL_PENDING)?;
            match at {
                Some(at) => {
                    t.insert(job, encode(at)?.as_slice())?;
                }
                None => {
                    t.remove(job)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Format 2 → 3: job records re-encoded with the definition as JSON.
fn migrate_v2(tx: &redb::WriteTransaction, path: &Path) -> Result<()> {
    let mut jobs = tx.open_table(JOBS)?;
    let mut records = Vec::new();
    for entry in jobs.iter()? {
        let (k, v) = entry?;
        let old: v2::JobRecord = decode("jobs-1 (format 2)", k.value(), v.value())?;
        records.push((k.value().to_string(), JobRecord::from(old)));
    }
    for (name, record) in records {
        jobs.insert(name.as_str(), encode(&record)?.as_slice())?;
    }
    tracing::info!(path = %path.display(), "state file migrated from format 2 to 3");
    Ok(())
}

/// Format 3 → 4: each planned table's chunks counted once.
fn migrate_v3(tx: &redb::WriteTransaction, path: &Path) -> Result<()> {
    let tables = tx.open_table(FULL_TABLES)?;
    let chunks = tx.open_table(FULL_CHUNKS)?;
    let mut counts = tx.open_table(FULL_DONE)?;
    for entry in tables.iter()? {
        let (k, _) = entry?;
        let (job, table) = k.value();
        let mut done = ChunksDone::default();
        for c in chunks.range((job, table, 0)..=(job, table, u32::MAX))? {
            let (_, v) = c?;
            let chunk: Chunk = decode("full-chunks-1", table, v.value())?;
            if chunk.done {
                done.chunks += 1;
                done.rows += chunk.rows;
            }
        }
        counts.insert((job, table), encode(&done)?.as_slice())?;
    }
    tracing::info!(path = %path.display(), "state file migrated from format 3 to 4");
    Ok(())
}

/// Removes a table's plan, chunks and done count.
fn clear_plan(tx: &redb::WriteTransaction, job: &str, table: &str) -> Result<()> {
    tx.open_table(FULL_CHUNKS)?
        .retain_in((job, table, 0)..=(job, table, u32::MAX), |_, _| false)?;
    tx.open_table(FULL_TABLES)?.remove((job, table))?;
    tx.open_table(FULL_DONE)?.remove((job, table))?;
    Ok(())
}

fn write_chunks(
    tx: &redb::WriteTransaction,
    job: &str,
    table: &str,
    first: u32,
    chunks: &[Chunk],
) -> Result<()> {
    let mut c = tx.open_table(FULL_CHUNKS)?;
    for (i, chunk) in (first..).zip(chunks) {
        c.insert((job, table, i), encode(chunk)?.as_slice())?;
    }
    Ok(())
}

fn write_plan(
    tx: &redb::WriteTransaction,
    job: &str,
    table: &str,
    plan: &TablePlan,
    done: &ChunksDone,
) -> Result<()> {
    tx.open_table(FULL_TABLES)?
        .insert((job, table), encode(plan)?.as_slice())?;
    tx.open_table(FULL_DONE)?
        .insert((job, table), encode(done)?.as_slice())?;
    Ok(())
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(StateError::Encode)
}

fn decode<T: DeserializeOwned>(table: &'static str, key: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| StateError::Decode {
        table,
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// One value of each type the state file stores, encoded. A change of
    /// any of these bytes is a change of the state format: bump
    /// `FORMAT_VERSION`, freeze the old types in a `vN` module with a
    /// migration (as `v2`), add a fixture under `testdata/upgrade/`, and
    /// only then update the bytes here.
    fn pinned() -> Vec<(&'static str, Vec<u8>)> {
        let pos = |p| BinlogPos {
            file: "binlog.000007".into(),
            pos: p,
        };
        let key = vec![
            KeyValue::Null,
            KeyValue::Int(-5),
            KeyValue::UInt(7),
            KeyValue::Float(1.5),
            KeyValue::Double(-2.25),
            KeyValue::Bytes(b"ab".to_vec()),
            KeyValue::Date(2026, 12, 2, 1, 2, 3, 456),
            KeyValue::Time(true, 1, 2, 3, 4, 5),
        ];
        let context = SessionContext {
            timestamp: 1_700_000_000,
            micros: Some(12),
            flags2: Some(0x4000),
            sql_mode: Some(0x20_0000),
            auto_increment: Some((2, 1)),
            charset: Some((45, 45, 224)),
            time_zone: Some("+02:00".into()),
            lc_time_names: Some(0),
            explicit_defaults_for_timestamp: None,
            mariadb: true,
        };
        let mut ghosts = Ghosts::new();
        ghosts.insert(
            ("shop".into(), "_t_gho".into()),
            Ghost {
                table: "t".into(),
                statements: vec![GhostStatement {
                    at: pos(99),
                    sql: "ALTER TABLE t ADD c INT".into(),
                    default_db: "shop".into(),
                    context,
                }],
            },
        );
        vec![
            (
                "jobs-1",
                enc(&record::StoredJob {
                    spec_json: "{}".into(),
                    state: JobState::Syncing,
                    since_ms: 1,
                    reason: Some("r".into()),
                    schema_done: true,
                    load_planned: false,
                }),
            ),
            (
                "full-tables-1",
                enc(&TablePlan {
                    chunks: 3,
                    keyless: false,
                    rows_estimate: 1000,
                    done: true,
                    snapshot: Some(pos(4)),
                }),
            ),
            (
                "full-chunks-1",
                enc(&Chunk {
                    lower: None,
                    upper: Some(key.clone()),
                    done: true,
                    rows: 12,
                }),
            ),
            (
                "checkpoints-1",
                enc(&Checkpoint {
                    position: pos(1234),
                    gtid: Some("0-1-5".into()),
                    unix_ms: 2,
                    safe_until: Some(pos(2000)),
                }),
            ),
            (
                "cdc-stats-1",
                enc(&CdcSample {
                    position: pos(5),
                    lag_s: 1,
                    lag_bytes: 2,
                    rows_per_s: 3,
                    events_per_s: 4,
                }),
            ),
            (
                "events-1",
                enc(&Event {
                    at_ms: 9,
                    kind: "ddl".into(),
                    message: "m".into(),
                }),
            ),
            (
                "verify-1",
                enc(&VerifyRun {
                    started_ms: 1,
                    finished_ms: 2,
                    level: "checksum".into(),
                    trigger: "command".into(),
                    online: true,
                    tables: vec![VerifyTable {
                        table: "a.t".into(),
                        target: "b.t".into(),
                        source_rows: 10,
                        target_rows: 9,
                        chunks: 1,
                        chunks_differing: 1,
                        key_columns: vec!["id".into()],
                        keyless: false,
                        diffs: vec![VerifyDiff {
                            class: DiffClass::Missing,
                            key: vec![KeyValue::Int(3)],
                            columns: vec!["v".into()],
                            copies: 1,
                        }],
                        truncated: false,
                        duration_ms: 5,
                    }],
                    error: None,
                    note: Some("n".into()),
                    repair: Some(RepairSummary {
                        file: "f.sql".into(),
                        statements: 1,
                        applied: true,
                        still_differing: 0,
                    }),
                }),
            ),
            (
                "xa-1",
                enc(&XaRows {
                    events: vec![StoredRows {
                        db: "d".into(),
                        table: "t".into(),
                        op: 1,
                        no_foreign_key_checks: true,
                        relaxed_unique_checks: false,
                        end: pos(77),
                        columns: [
                            vec![StoredColumn {
                                name: "id".into(),
                                ty: 3,
                                unsigned: false,
                                primary: true,
                                collation: 63,
                            }],
                            Vec::new(),
                        ],
                        rows: vec![(Some(key), None)],
                    }],
                }),
            ),
            ("ghosts-1", enc(&ghosts.into_iter().collect::<Vec<_>>())),
            ("ddl-pending-1", enc(&pos(8))),
            (
                "full-done-1",
                enc(&ChunksDone {
                    chunks: 3,
                    rows: 1000,
                }),
            ),
        ]
    }

    fn enc<T: Serialize>(v: &T) -> Vec<u8> {
        postcard::to_stdvec(v).expect("encodes")
    }

    #[test]
    fn stored_encodings_are_pinned() {
        let expected: &[(&str, &str)] = &[
            ("jobs-1", "027b7d06010101720100"),
            ("full-tables-1", "0300e80701010d62696e6c6f672e30303030303704"),
            ("full-chunks-1", "0001080001090207030000c03f0400000000000002c00502616206ea0f0c02010203c80307010102030405010c"),
            ("checkpoints-1", "0d62696e6c6f672e303030303037d2090105302d312d3502010d62696e6c6f672e303030303037d00f"),
            ("cdc-stats-1", "0d62696e6c6f672e3030303030370501020304"),
            ("events-1", "090364646c016d"),
            ("verify-1", "010208636865636b73756d07636f6d6d616e64010103612e7403622e740a090101010269640001000101060101760100050001016e0105662e73716c010100"),
            ("xa-1", "01016401740101000d62696e6c6f672e3030303030374d010269640300013f000101080001090207030000c03f0400000000000002c00502616206ea0f0c02010203c8030701010203040500"),
            ("ghosts-1", "010473686f70065f745f67686f0174010d62696e6c6f672e3030303030376317414c544552205441424c45207420414444206320494e540473686f7080e2cfaa06010c018080010180808001010201012d2de00101062b30323a303001000001"),
            ("ddl-pending-1", "0d62696e6c6f672e30303030303708"),
            ("full-done-1", "03e807"),
        ];
        let got: Vec<(&str, String)> = pinned().into_iter().map(|(t, b)| (t, hex(&b))).collect();
        assert_eq!(
            got.iter()
                .map(|(t, h)| (*t, h.as_str()))
                .collect::<Vec<_>>(),
            expected,
            "a stored type changed: see `pinned`"
        );
    }

    #[test]
    fn the_event_log_is_bounded_per_job() {
        let dir = tmp();
        let store = Store::open(dir.path()).expect("store");
        for i in 0..EVENTS_KEPT + 5 {
            store
                .add_event("a", "stage", &format!("e{i}"))
                .expect("add");
        }
        store.add_event("b", "pause", "only").expect("add");
        let a = store.events("a").expect("events");
        assert_eq!(a.len(), EVENTS_KEPT);
        assert_eq!(a[0].message, "e5");
        assert_eq!(a.last().map(|e| e.message.as_str()), Some("e204"));
        assert_eq!(store.events("b").expect("events").len(), 1);
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn a_second_owner_is_refused() {
        let dir = tmp();
        let _first = Store::open(dir.path()).expect("first");
        let second = Store::open(dir.path());
        match second {
            Err(StateError::Locked { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id().to_string()))
            }
            other => panic!("expected Locked, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tmp();
        {
            let s = Store::open(dir.path()).expect("open");
            let tx = s.db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert(
                    "format_version",
                    (FORMAT_VERSION + 1).to_le_bytes().as_slice(),
                )
                .unwrap();
            tx.commit().unwrap();
        }
        let e = Store::open(dir.path()).err().expect("refused");
        assert!(matches!(e, StateError::NewerFormat { .. }), "{e}");
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[test]
    fn an_older_format_is_refused_clearly() {
        let dir = tmp();
        {
            let s = Store::open(dir.path()).expect("open");
            let tx = s.db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("format_version", 1u32.to_le_bytes().as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let e = Store::open(dir.path()).err().expect("refused");
        assert!(matches!(e, StateError::OlderFormat { found: 1, .. }), "{e}");
        assert!(e.to_string().contains("new --state dir"), "{e}");
    }

    #[test]
    fn chunks_round_trip_and_finish_the_table() {
        let dir = tmp();
        let s = Store::open(dir.path()).expect("open");
        let plan = TablePlan {
            chunks: 2,
            keyless: false,
            rows_estimate: 10,
            done: false,
            snapshot: None,
        };
        let chunks = vec![
            Chunk {
                lower: None,
                upper: Some(vec![KeyValue::Int(5), KeyValue::Bytes(b"x".to_vec())]),
                done: false,
                rows: 0,
            },
            Chunk {
                lower: Some(vec![KeyValue::Int(5), KeyValue::Bytes(b"x".to_vec())]),
                upper: None,
                done: false,
                rows: 0,
            },
        ];
        s.put_table_plan("j", "db.t", &plan, &chunks).unwrap();
        s.put_table_plan("j2", "db.t", &plan, &chunks[..1]).unwrap();
        assert_eq!(s.chunks("j", "db.t").unwrap(), chunks);
        assert!(!s.chunk_done("j", "db.t", 1, 7, None).unwrap());
        let at = BinlogPos {
            file: "binlog.000001".into(),
            pos: 99,
        };
        assert!(s.chunk_done("j", "db.t", 0, 3, Some(at.clone())).unwrap());
        assert_eq!(s.snapshots("j").unwrap(), vec![("db.t".to_string(), at)]);
        assert!(s.snapshots("j2").unwrap().is_empty());
        assert!(s.table_plan("j", "db.t").unwrap().unwrap().done);
        assert!(!s.table_plan("j2", "db.t").unwrap().unwrap().done);
        s.clear_full_load("j").unwrap();
        assert!(s.chunks("j", "db.t").unwrap().is_empty());
        assert_eq!(s.chunks("j2", "db.t").unwrap().len(), 1);
    }

    #[test]
    fn a_plan_written_in_parts_counts_only_once_finished_and_replaces_a_torn_one() {
        let dir = tmp();
        let s = Store::open(dir.path()).expect("open");
        let chunk = |n: i64| Chunk {
            lower: Some(vec![KeyValue::Int(n)]),
            upper: Some(vec![KeyValue::Int(n + 1)]),
            done: false,
            rows: 0,
        };
        let plan = |chunks| TablePlan {
            chunks,
            keyless: false,
            rows_estimate: 0,
            done: false,
            snapshot: None,
        };
        s.put_table_plan("other", "db.t", &plan(1), &[chunk(0)])
            .unwrap();
        // A plan torn by a crash: chunks, no plan.
        s.begin_table_plan("j", "db.t").unwrap();
        let batch: Vec<Chunk> = (0..5).map(chunk).collect();
        s.put_chunks("j", "db.t", 0, &batch).unwrap();
        assert!(s.table_plan("j", "db.t").unwrap().is_none());
        // Planned again, in two parts, shorter.
        s.begin_table_plan("j", "db.t").unwrap();
        s.put_chunks("j", "db.t", 0, &batch[..2]).unwrap();
        s.put_chunks("j", "db.t", 2, &[chunk(10)]).unwrap();
        s.finish_table_plan("j", "db.t", &plan(3)).unwrap();
        assert_eq!(s.table_plan("j", "db.t").unwrap(), Some(plan(3)));
        let chunks = s.chunks("j", "db.t").unwrap();
        assert_eq!(chunks, vec![chunk(0), chunk(1), chunk(10)]);
        assert_eq!(s.chunks_done("j", "db.t").unwrap(), ChunksDone::default());
        assert_eq!(s.chunks("other", "db.t").unwrap(), vec![chunk(0)]);
    }

    #[test]
    fn chunk_counts_follow_every_chunk_and_survive_the_v3_migration() {
        let dir = tmp();
        let n = 2000u32;
        let chunk = |done: bool, rows: u64| Chunk {
            lower: None,
            upper: None,
            done,
            rows,
        };
        let plan = TablePlan {
            chunks: n,
            keyless: false,
            rows_estimate: 0,
            done: false,
            snapshot: None,
        };
        {
            let s = Store::open(dir.path()).expect("open");
            let chunks: Vec<Chunk> = (0..n).map(|_| chunk(false, 0)).collect();
            s.put_table_plan("j", "db.t", &plan, &chunks).unwrap();
            // Out of order, one twice (a re-copy after a retry).
            for i in (0..n - 1).rev() {
                assert!(!s.chunk_done("j", "db.t", i, 2, None).unwrap());
            }
            assert!(!s.chunk_done("j", "db.t", 5, 4, None).unwrap());
            let done = s.chunks_done("j", "db.t").unwrap();
            assert_eq!((done.chunks, done.rows), (n - 1, u64::from(n - 1) * 2 + 2));
            assert_eq!(
                s.next_chunk("j", "db.t", 0).unwrap().map(|c| c.0),
                Some(n - 1)
            );
            assert_eq!(s.full_progress("j").unwrap()[0].rows_done, done.rows);
            // As a format 3 file was: no counts.
            let tx = s.db.begin_write().unwrap();
            tx.open_table(FULL_DONE)
                .unwrap()
                .remove(("j", "db.t"))
                .unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("format_version", 3u32.to_le_bytes().as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let s = Store::open(dir.path()).expect("migrated");
        let done = s.chunks_done("j", "db.t").unwrap();
        assert_eq!((done.chunks, done.rows), (n - 1, u64::from(n - 1) * 2 + 2));
        assert!(
            s.chunk_done("j", "db.t", n - 1, 1, None).unwrap(),
            "the last one finishes it"
        );
        assert!(s.table_plan("j", "db.t").unwrap().unwrap().done);
        assert_eq!(s.next_chunk("j", "db.t", 0).unwrap(), None);
    }

    #[test]
    fn cdc_history_is_bounded() {
        let dir = tmp();
        let s = Store::open(dir.path()).expect("open");
        let sample = |lag_s| CdcSample {
            position: BinlogPos {
                file: "binlog.000001".into(),
                pos: 4,
            },
            lag_s,
            lag_bytes: 0,
            rows_per_s: 10,
            events_per_s: 5,
        };
        let t0 = 10 * CDC_HISTORY_MS;
        for i in 0..10 {
            s.put_cdc_sample("j", t0 + i * CDC_HISTORY_MS / 4, &sample(i))
                .unwrap();
        }
        s.put_cdc_sample("other", t0, &sample(99)).unwrap();
        let kept = s.cdc_samples("j").unwrap();
        // Only the last hour: samples 5..=9 (one every quarter hour).
        assert_eq!(
            kept.iter().map(|(_, x)| x.lag_s).collect::<Vec<_>>(),
            vec![5, 6, 7, 8, 9]
        );
        assert_eq!(s.cdc_samples("other").unwrap().len(), 1);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let dir = tmp();
        let s = Store::open(dir.path()).expect("open");
        let tx = s.db.begin_write().unwrap();
        tx.open_table(JOBS)
            .unwrap()
            .insert("bad", [0xffu8, 0xff, 0xff].as_slice())
            .unwrap();
        tx.commit().unwrap();
        let e = s.job("bad").unwrap_err();
        assert!(matches!(e, StateError::Decode { .. }), "{e}");
    }
}
