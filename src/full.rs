//! The full load: every selected table copied in key-range chunks by
//! `threads` workers, each chunk one target transaction, checkpointed in the
//! state only after the target committed it.
//!
//! A worker streams a chunk from the source (binary protocol) and turns the
//! rows into multi-row INSERT statements sized to the target's
//! `max_allowed_packet`; its writer half executes them on the target while
//! the reader goes on. Memory per worker is bounded by two statements.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Params, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::{ColumnKind, Table};
use crate::db::{self, qualified, quote_ident, Connector, DbError};
use crate::job::{ExistingRows, JobSpec};
use crate::sql;
use crate::state::{Chunk, KeyValue, StateError, Store, TablePlan};

#[derive(Debug, thiserror::Error)]
pub enum FullError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "a row of {table} needs a {size}-byte statement, more than the target's \
         max_allowed_packet ({limit}); raise it: SET GLOBAL max_allowed_packet = {suggest};"
    )]
    RowTooLarge {
        table: String,
        size: usize,
        limit: usize,
        suggest: usize,
    },
    #[error("the target changed values of {table} while loading them: {warnings}")]
    LoadWarnings { table: String, warnings: String },
    #[error("stopped")]
    Cancelled,
}

impl FullError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, FullError::Db(e) if e.is_retryable())
    }
}

type Result<T, E = FullError> = std::result::Result<T, E>;

/// Live progress of one table, shared with whoever reports it.
#[derive(Debug)]
pub struct TableProgress {
    pub table: String,
    pub rows_estimate: AtomicU64,
    pub rows_done: AtomicU64,
    pub chunks_total: u32,
    pub chunks_done: AtomicU64,
    pub done: AtomicBool,
    /// Unix ms of the first chunk of this run, 0 before.
    pub started_ms: AtomicU64,
    /// Unix ms when the last chunk committed, 0 before.
    pub finished_ms: AtomicU64,
    /// Rows done before this run (a resume), excluded from rates.
    pub rows_before: u64,
}

/// Rows-per-second limit shared by a job's workers; changeable live.
#[derive(Debug, Default)]
pub struct RateLimit {
    rate: AtomicU64,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimit {
    pub fn new(rows_per_sec: u64) -> Self {
        let r = RateLimit::default();
        r.set(rows_per_sec);
        r
    }

    pub fn set(&self, rows_per_sec: u64) {
        self.rate.store(rows_per_sec, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Waits until `rows` may pass; at most one second of burst.
    pub async fn acquire(&self, rows: u64) {
        let rate = self.get();
        if rate == 0 || rows == 0 {
            return;
        }
        let begin = {
            let now = Instant::now();
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            let begin = next.map_or(now, |n| n.max(floor));
            *next = Some(begin + Duration::from_secs_f64(rows as f64 / rate as f64));
            begin
        };
        if begin > Instant::now() {
            tokio::time::sleep_until(begin.into()).await;
        }
    }
}

/// What a load needs from its caller.
pub struct Load<'a> {
    pub job: &'a JobSpec,
    pub tables: &'a [Table],
    pub source: &'a Connector,
    pub target: &'a Connector,
    pub store: &'a Arc<Store>,
    pub limit: Arc<RateLimit>,
    pub cancel: CancellationToken,
}

impl Load<'_> {
    fn ends(&self) -> Ends<'_> {
        Ends {
            job: self.job,
            source: self.source,
            target: self.target,
            limit: &self.limit,
            cancel: &self.cancel,
        }
    }
}

/// What copying rows needs: the job, both servers, the rate limit and the
/// stop signal.
struct Ends<'a> {
    job: &'a JobSpec,
    source: &'a Connector,
    target: &'a Connector,
    limit: &'a RateLimit,
    cancel: &'a CancellationToken,
}

/// How batches reach the target: `LOAD DATA LOCAL INFILE` streams (about
/// 15% less target CPU per row than INSERT), or multi-row INSERTs where the
/// target has `local_infile` off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMethod {
    LoadData,
    Insert,
}

/// The statements that copy one table, built once.
struct TableCopy {
    id: String,
    select: String,
    key_columns: Vec<String>,
    kinds: Vec<ColumnKind>,
    method: WriteMethod,
    /// `INSERT INTO t (..) VALUES ` (Insert), or empty (LoadData).
    batch_prefix: Vec<u8>,
    /// The LOAD DATA statement (LoadData).
    load_sql: String,
    /// Before copying a keyless table again, empty it on the target.
    reset_sql: Option<String>,
    /// existing_rows = "skip": duplicates are expected and ignored.
    skips_duplicates: bool,
    /// Read in a consistent snapshot whose binlog position is recorded
    /// (keyless tables of CDC jobs; see `TablePlan::snapshot`).
    snapshot: bool,
    progress: Arc<TableProgress>,
}

struct Task {
    table: Arc<TableCopy>,
    index: u32,
    chunk: Chunk,
}

/// Plans what is not planned yet and returns the progress handles, so the
/// caller can report while [`run`] works.
pub async fn plan(load: &Load<'_>) -> Result<Vec<Arc<TableProgress>>> {
    let mut out = Vec::new();
    for t in load.tables {
        let id = t.id();
        let plan = match load.store.table_plan(&load.job.name, &id)? {
            Some(p) => p,
            None => {
                let chunks = split(load, t).await?;
                let plan = TablePlan {
                    chunks: chunks.len() as u32,
                    keyless: t.key.is_none(),
                    rows_estimate: t.rows_estimate,
                    done: false,
                    snapshot: None,
                };
                load.store
                    .put_table_plan(&load.job.name, &id, &plan, &chunks)?;
                plan
            }
        };
        let chunks = load.store.chunks(&load.job.name, &id)?;
        let before: u64 = chunks.iter().filter(|c| c.done).map(|c| c.rows).sum();
        let done = chunks.iter().filter(|c| c.done).count() as u64;
        out.push(Arc::new(TableProgress {
            table: id,
            rows_estimate: AtomicU64::new(plan.rows_estimate.max(before)),
            rows_done: AtomicU64::new(before),
            chunks_total: plan.chunks,
            chunks_done: AtomicU64::new(done),
            done: AtomicBool::new(plan.done),
            started_ms: AtomicU64::new(0),
            finished_ms: AtomicU64::new(0),
            rows_before: before,
        }));
    }
    Ok(out)
}

/// Chunk boundaries along the table's key: every `chunk_rows`-th key.
async fn split(load: &Load<'_>, t: &Table) -> Result<Vec<Chunk>> {
    let open = Chunk {
        lower: None,
        upper: None,
        done: false,
        rows: 0,
    };
    let Some(key) = &t.key else {
        return Ok(vec![open]);
    };
    // Always split, even when the statistics say the table is small: they
    // can be far off, and one chunk is one target transaction.
    let mut conn = load.source.connect().await?;
    let bounds = key_bounds(
        &mut conn,
        load.source,
        t,
        key,
        load.job.full.chunk_rows,
        &load.cancel,
    )
    .await?
    .ok_or(FullError::Cancelled)?;
    let _ = conn.disconnect().await;
    let mut chunks = Vec::with_capacity(bounds.len() + 1);
    let mut lower = None;
    for b in bounds {
        chunks.push(Chunk {
            lower: lower.take(),
            upper: Some(b.clone()),
            done: false,
            rows: 0,
        });
        lower = Some(b);
    }
    chunks.push(Chunk {
        lower,
        upper: None,
        done: false,
        rows: 0,
    });
    Ok(chunks)
}

/// Every `n`-th key of `t` along `key`, read from the source in key order:
/// the upper bounds of chunks of `n` rows. `None` when `cancel` fired.
pub(crate) async fn key_bounds(
    conn: &mut Conn,
    source: &Connector,
    t: &Table,
    key: &crate::catalog::ChunkKey,
    n: u64,
    cancel: &CancellationToken,
) -> Result<Option<Vec<Vec<KeyValue>>>, crate::db::DbError> {
    let cols: Vec<String> = key.columns.iter().map(|c| quote_ident(c)).collect();
    let base = format!(
        "SELECT {} FROM {} FORCE INDEX ({})",
        cols.join(", "),
        qualified(&t.db, &t.name),
        quote_ident(&key.index)
    );
    let order = format!(
        "ORDER BY {} LIMIT 1 OFFSET {}",
        cols.join(", "),
        n.max(1) - 1
    );
    let mut bounds: Vec<Vec<KeyValue>> = Vec::new();
    loop {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let (cond, params) = match bounds.last() {
            Some(last) => range_condition(&key.columns, Some(last), None),
            None => ("1".to_string(), Vec::new()),
        };
        let q = format!("{base} WHERE {cond} {order}");
        let row: Option<mysql_async::Row> = conn
            .exec_first(q, Params::Positional(params))
            .await
            .map_err(source.query_err(format!("splitting {} into chunks", t.id())))?;
        match row {
            Some(r) => bounds.push(r.unwrap().into_iter().map(KeyValue::from).collect()),
            None => return Ok(Some(bounds)),
        }
    }
}

/// `key > lower AND key <= upper` for a composite key, expanded into
/// ORs of ANDs (which the range optimizer handles), with its parameters.
pub(crate) fn range_condition(
    cols: &[String],
    lower: Option<&Vec<KeyValue>>,
    upper: Option<&Vec<KeyValue>>,
) -> (String, Vec<Value>) {
    let mut parts = Vec::new();
    let mut params = Vec::new();
    for (bound, strict, inclusive_last) in [(lower, ">", false), (upper, "<", true)] {
        let Some(vals) = bound else { continue };
        let mut ors = Vec::new();
        for i in 0..cols.len() {
            let mut ands: Vec<String> = Vec::new();
            for (c, v) in cols[..i].iter().zip(vals) {
                ands.push(format!("{} = ?", quote_ident(c)));
                params.push(Value::from(v));
            }
            ands.push(format!("{} {strict} ?", quote_ident(&cols[i])));
            params.push(Value::from(&vals[i]));
            ors.push(format!("({})", ands.join(" AND ")));
        }
        if inclusive_last {
            let ands: Vec<String> = cols
                .iter()
                .map(|c| format!("{} = ?", quote_ident(c)))
                .collect();
            params.extend(vals.iter().map(Value::from));
            ors.push(format!("({})", ands.join(" AND ")));
        }
        parts.push(format!("({})", ors.join(" OR ")));
    }
    if parts.is_empty() {
        ("1".into(), params)
    } else {
        (parts.join(" AND "), params)
    }
}

/// Copies every chunk not yet done. Returns when all are done, on the first
/// error, or when `cancel` fires (with [`FullError::Cancelled`]).
pub async fn run(load: &Load<'_>, progress: &[Arc<TableProgress>]) -> Result<()> {
    let (packet, method) = target_limits(load.target).await?;
    // Chunks of different tables interleaved, so concurrent workers seldom
    // contend for the same table (its AUTO_INCREMENT lock, its index pages).
    let mut per_table: Vec<VecDeque<Task>> = Vec::new();
    for (t, p) in load.tables.iter().zip(progress) {
        if p.done.load(Ordering::Relaxed) {
            continue;
        }
        let copy = Arc::new(table_copy(&load.ends(), t, p.clone(), method));
        let chunks = load.store.chunks(&load.job.name, &copy.id)?;
        per_table.push(
            chunks
                .into_iter()
                .enumerate()
                .filter(|(_, c)| !c.done)
                .map(|(i, chunk)| Task {
                    table: copy.clone(),
                    index: i as u32,
                    chunk,
                })
                .collect(),
        );
    }
    let mut queue = VecDeque::new();
    while per_table.iter().any(|q| !q.is_empty()) {
        for q in per_table.iter_mut() {
            if let Some(task) = q.pop_front() {
                queue.push_back(task);
            }
        }
    }
    if queue.is_empty() {
        return Ok(());
    }
    let queue = Arc::new(Mutex::new(queue));
    let workers = load.job.full.threads.max(1);
    let mut set = Vec::new();
    for _ in 0..workers {
        set.push(worker(load, queue.clone(), packet));
    }
    let results = futures_util::future::join_all(set).await;
    // The first real error wins over the Cancelled of the workers it stopped.
    let mut cancelled = false;
    for r in results {
        match r {
            Ok(()) => {}
            Err(FullError::Cancelled) => cancelled = true,
            Err(e) => return Err(e),
        }
    }
    if cancelled {
        return Err(FullError::Cancelled);
    }
    Ok(())
}

/// The target's max_allowed_packet, and whether it accepts LOAD DATA LOCAL.
async fn target_limits(target: &Connector) -> Result<(usize, WriteMethod)> {
    let mut c = target.connect().await?;
    let packet = db::variable(&mut c, "max_allowed_packet")
        .await
        .map_err(target.query_err("reading max_allowed_packet"))?
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    let local_infile = db::variable(&mut c, "local_infile")
        .await
        .map_err(target.query_err("reading local_infile"))?;
    let _ = c.disconnect().await;
    let method = match local_infile.as_deref() {
        Some(v) if v.eq_ignore_ascii_case("ON") || v == "1" => WriteMethod::LoadData,
        _ => WriteMethod::Insert,
    };
    tracing::info!(packet, ?method, "target limits");
    Ok((packet, method))
}

fn table_copy(
    load: &Ends<'_>,
    t: &Table,
    progress: Arc<TableProgress>,
    method: WriteMethod,
) -> TableCopy {
    let cols: Vec<&crate::catalog::Column> = t.copied_columns().collect();
    let names: Vec<String> = cols.iter().map(|c| quote_ident(&c.name)).collect();
    let (select, key_columns) = match &t.key {
        Some(k) => (
            format!(
                "SELECT {} FROM {} FORCE INDEX ({}) WHERE {{}} ORDER BY {}",
                names.join(", "),
                qualified(&t.db, &t.name),
                quote_ident(&k.index),
                k.columns
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            k.columns.clone(),
        ),
        None => (
            format!(
                "SELECT {} FROM {}",
                names.join(", "),
                qualified(&t.db, &t.name)
            ),
            Vec::new(),
        ),
    };
    // A chunk that is not marked done may still have been committed just
    // before a crash, so keyed chunks are written with REPLACE (on rows the
    // job itself wrote), and keyless tables are emptied first (they are
    // copied whole). Other existing_rows modes decide for themselves.
    let (verb, modifier) = match (load.job.full.existing_rows, t.key.is_some()) {
        (ExistingRows::Overwrite, _) | (ExistingRows::Error, true) => ("REPLACE", "REPLACE"),
        (ExistingRows::Skip, _) => ("INSERT IGNORE", "IGNORE"),
        (ExistingRows::Error, false) => ("INSERT", ""),
    };
    let reset_sql = (t.key.is_none() && load.job.full.existing_rows == ExistingRows::Error)
        .then(|| format!("DELETE FROM {}", qualified(&t.target_db, &t.name)));
    let target_table = qualified(&t.target_db, &t.name);
    let batch_prefix = match method {
        WriteMethod::Insert => {
            format!("{verb} INTO {target_table} ({}) VALUES ", names.join(", ")).into_bytes()
        }
        WriteMethod::LoadData => Vec::new(),
    };
    // Binary values travel as hex into user variables, so no byte is ever
    // reinterpreted in a character set.
    let fields: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| match c.kind {
            ColumnKind::Binary => format!("@b{i}"),
            _ => quote_ident(&c.name),
        })
        .collect();
    let sets: Vec<String> = cols
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == ColumnKind::Binary)
        .map(|(i, c)| format!("{} = UNHEX(@b{i})", quote_ident(&c.name)))
        .collect();
    let load_sql = format!(
        "LOAD DATA LOCAL INFILE 'ferry' {modifier} INTO TABLE {target_table} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({}){}",
        fields.join(", "),
        if sets.is_empty() {
            String::new()
        } else {
            format!(" SET {}", sets.join(", "))
        }
    );
    TableCopy {
        id: t.id(),
        select,
        key_columns,
        kinds: cols.iter().map(|c| c.kind).collect(),
        method,
        batch_prefix,
        load_sql,
        reset_sql,
        skips_duplicates: load.job.full.existing_rows == ExistingRows::Skip,
        snapshot: t.key.is_none() && load.job.mode.needs_binlog(),
        progress,
    }
}

/// Connections a worker keeps between chunks; dropped after an error.
#[derive(Default)]
struct Conns {
    src: Option<Conn>,
    dst: Option<Conn>,
}

async fn worker(load: &Load<'_>, queue: Arc<Mutex<VecDeque<Task>>>, packet: usize) -> Result<()> {
    let mut conns = Conns::default();
    loop {
        if load.cancel.is_cancelled() {
            return Err(FullError::Cancelled);
        }
        let task = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        let Some(task) = task else { break };
        if let Err(e) = copy_chunk(load, &mut conns, &task, packet).await {
            if let Some(mut dst) = conns.dst.take() {
                let _ = dst.query_drop("ROLLBACK").await;
            }
            conns.src = None;
            load.cancel.cancel();
            return Err(e);
        }
    }
    for c in [conns.src.take(), conns.dst.take()].into_iter().flatten() {
        let _ = c.disconnect().await;
    }
    Ok(())
}

enum Msg {
    /// One batch (an INSERT statement or LOAD DATA input) and its rows.
    Rows(Vec<u8>, u64),
    /// Commit what came so far (keyless tables, which have no chunks).
    Commit,
}

async fn copy_chunk(load: &Load<'_>, conns: &mut Conns, task: &Task, packet: usize) -> Result<()> {
    let t = &task.table;
    if conns.src.is_none() {
        conns.src = Some(load.source.connect().await?);
    }
    if conns.dst.is_none() {
        conns.dst = Some(load.target.connect().await?);
    }
    let (Some(src), Some(dst)) = (conns.src.as_mut(), conns.dst.as_mut()) else {
        unreachable!("connections were just opened")
    };
    let _ = t.progress.started_ms.compare_exchange(
        0,
        crate::state::now_ms(),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );

    dst.query_drop("START TRANSACTION")
        .await
        .map_err(load.target.query_err("starting a transaction"))?;
    if let Some(reset) = &t.reset_sql {
        dst.query_drop(reset)
            .await
            .map_err(load.target.query_err(format!("emptying {}", t.id)))?;
    }

    let snapshot = if t.snapshot {
        Some(snapshot_position(load.source, src).await?)
    } else {
        None
    };
    let (tx, rx) = mpsc::channel::<Msg>(2);
    let ends = load.ends();
    let reader = read_chunk(&ends, src, task, packet, tx);
    let writer = write_batches(&ends, dst, t, rx);
    let (rows, _) = tokio::try_join!(reader, writer)?;
    if snapshot.is_some() {
        src.query_drop("COMMIT")
            .await
            .map_err(load.source.query_err("ending the snapshot"))?;
    }

    dst.query_drop("COMMIT").await.map_err(
        load.target
            .query_err(format!("committing a chunk of {}", t.id)),
    )?;
    let store = load.store.clone();
    let (job, id, index) = (load.job.name.clone(), t.id.clone(), task.index);
    let table_done =
        tokio::task::spawn_blocking(move || store.chunk_done(&job, &id, index, rows, snapshot))
            .await
            .map_err(|e| StateError::Io {
                dir: String::new(),
                source: std::io::Error::other(e),
            })??;
    t.progress.chunks_done.fetch_add(1, Ordering::Relaxed);
    if table_done {
        t.progress
            .finished_ms
            .store(crate::state::now_ms(), Ordering::Relaxed);
        t.progress.done.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Opens a consistent snapshot on `src` and returns the binlog position it
/// corresponds to (MariaDB's `binlog_snapshot_file/position`).
async fn snapshot_position(source: &Connector, src: &mut Conn) -> Result<crate::cdc::BinlogPos> {
    let err = || source.query_err("opening a consistent snapshot");
    src.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(err())?;
    let rows: Vec<(String, String)> = src
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(err())?;
    let get = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
        (Some(file), Some(pos)) if !file.is_empty() => Ok(crate::cdc::BinlogPos {
            file,
            pos: pos.parse().unwrap_or(0),
        }),
        // MySQL has no binlog_snapshot_* status: the position is taken under
        // a short read lock on the table instead (not implemented yet).
        _ => Err(FullError::Db(DbError::Query {
            role: "source",
            context: "the source reports no binlog_snapshot_file/position (MariaDB has them); \
                      keyless tables in CDC jobs need them"
                .into(),
            source: mysql_async::Error::Other("no binlog snapshot position".into()),
        })),
    }
}

/// Copies one table whole, now, in one consistent snapshot: its schema
/// (`SHOW CREATE TABLE`, renamed) replaces whatever the target had under
/// that name, then its rows. Returns the snapshot's binlog position: the
/// table's changes up to it are in the copy. A table the source no longer
/// has is dropped on the target. For tables that enter a job's selection
/// while it streams (renamed in, or created from an unselected table).
pub async fn copy_table_now(
    job: &JobSpec,
    source: &Connector,
    target: &Connector,
    db: &str,
    table: &str,
    target_db: &str,
) -> Result<crate::cdc::BinlogPos> {
    let limit = RateLimit::new(0);
    let cancel = CancellationToken::new();
    let ends = Ends {
        job,
        source,
        target,
        limit: &limit,
        cancel: &cancel,
    };
    let name = qualified(db, table);
    let target_name = qualified(target_db, table);
    let mut src = source.connect().await?;
    src.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(source.query_err("opening a consistent snapshot"))?;
    let pos = snapshot_position(source, &mut src).await?;
    let mut dst = target.connect().await?;
    // The first read holds the table's metadata lock until the snapshot
    // ends, so no DDL changes it while it is copied (one that came between
    // the snapshot and this read makes the read fail: the caller retries).
    match src
        .query_drop(format!("SELECT 1 FROM {name} LIMIT 0"))
        .await
    {
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => {
            dst.query_drop(format!("DROP TABLE IF EXISTS {target_name}"))
                .await
                .map_err(target.query_err(format!("dropping {target_name}")))?;
            return Ok(pos);
        }
        other => other.map_err(source.query_err(format!("reading {name}")))?,
    }
    let row: Option<mysql_async::Row> = src
        .query_first(format!("SHOW CREATE TABLE {name}"))
        .await
        .map_err(source.query_err(format!("SHOW CREATE TABLE {name}")))?;
    let ddl = row
        .and_then(|r| r.get_opt::<Vec<u8>, _>(1).and_then(|v| v.ok()))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let t = crate::catalog::Catalog::read_table(&mut src, source, db, table, target_db)
        .await?
        .ok_or_else(|| {
            FullError::Db(DbError::Query {
                role: "source",
                context: format!("{name} has no columns"),
                source: mysql_async::Error::Other("table not found".into()),
            })
        })?;
    for sql in [
        format!("DROP TABLE IF EXISTS {target_name}"),
        crate::schema::create_table_sql(job, &t, &ddl),
    ] {
        dst.query_drop(&sql)
            .await
            .map_err(target.query_err(format!("creating {target_name}")))?;
    }
    let (packet, method) = target_limits(target).await?;
    let progress = Arc::new(TableProgress {
        table: t.id(),
        rows_estimate: AtomicU64::new(0),
        rows_done: AtomicU64::new(0),
        chunks_total: 1,
        chunks_done: AtomicU64::new(0),
        done: AtomicBool::new(false),
        started_ms: AtomicU64::new(0),
        finished_ms: AtomicU64::new(0),
        rows_before: 0,
    });
    let task = Task {
        table: Arc::new(table_copy(&ends, &t, progress, method)),
        index: 0,
        chunk: Chunk {
            lower: None,
            upper: None,
            done: false,
            rows: 0,
        },
    };
    dst.query_drop("START TRANSACTION")
        .await
        .map_err(target.query_err("starting a transaction"))?;
    let (tx, rx) = mpsc::channel::<Msg>(2);
    let reader = read_chunk(&ends, &mut src, &task, packet, tx);
    let writer = write_batches(&ends, &mut dst, &task.table, rx);
    let (rows, _) = tokio::try_join!(reader, writer)?;
    dst.query_drop("COMMIT")
        .await
        .map_err(target.query_err(format!("committing {target_name}")))?;
    let _ = src.query_drop("COMMIT").await;
    let _ = src.disconnect().await;
    let _ = dst.disconnect().await;
    tracing::info!(table = %name, rows, at = %pos, "table copied");
    Ok(pos)
}

/// Streams the chunk's rows into batches of at most `packet` bytes (less
/// headroom) and sends them to the writer.
async fn read_chunk(
    load: &Ends<'_>,
    src: &mut Conn,
    task: &Task,
    packet: usize,
    tx: mpsc::Sender<Msg>,
) -> Result<u64> {
    let t = &task.table;
    let limit = packet.saturating_sub(16 << 10).max(4 << 10);
    let batch_target = limit.min(1 << 20);
    let (query, params) = if t.key_columns.is_empty() {
        (t.select.clone(), Vec::new())
    } else {
        let (cond, params) = range_condition(
            &t.key_columns,
            task.chunk.lower.as_ref(),
            task.chunk.upper.as_ref(),
        );
        (t.select.replacen("{}", &cond, 1), params)
    };
    let mut result = src
        .exec_iter(query, Params::Positional(params))
        .await
        .map_err(load.source.query_err(format!("reading {}", t.id)))?;

    let new_batch = || {
        let mut b = Vec::with_capacity(batch_target + (64 << 10));
        b.extend_from_slice(&t.batch_prefix);
        b
    };
    let mut buf = new_batch();
    let mut in_batch = 0u64;
    let mut total = 0u64;
    let mut since_commit = 0u64;
    let keyless = t.key_columns.is_empty();
    while let Some(row) = result
        .next()
        .await
        .map_err(load.source.query_err(format!("reading {}", t.id)))?
    {
        let row_start = buf.len();
        let values = row.unwrap();
        match t.method {
            WriteMethod::Insert => {
                if in_batch > 0 {
                    buf.push(b',');
                }
                buf.push(b'(');
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    sql::push_literal(&mut buf, v, t.kinds[i]);
                }
                buf.push(b')');
            }
            WriteMethod::LoadData => {
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        buf.push(b'\t');
                    }
                    sql::push_tsv_field(&mut buf, v, t.kinds[i]);
                }
                buf.push(b'\n');
            }
        }
        in_batch += 1;
        total += 1;
        if buf.len() > limit {
            // This row does not fit: send the rows before it, and start the
            // next batch with it (alone it must fit).
            let skip = usize::from(t.method == WriteMethod::Insert && in_batch > 1);
            let row_bytes = buf[row_start + skip..].to_vec();
            if t.batch_prefix.len() + row_bytes.len() > limit {
                let size = t.batch_prefix.len() + row_bytes.len();
                return Err(FullError::RowTooLarge {
                    table: t.id.clone(),
                    size,
                    limit: packet,
                    suggest: (size * 2).next_power_of_two(),
                });
            }
            buf.truncate(row_start);
            send(
                load,
                &tx,
                std::mem::replace(&mut buf, new_batch()),
                in_batch - 1,
            )
            .await?;
            buf.extend_from_slice(&row_bytes);
            in_batch = 1;
        }
        // Under a throttle, batches of at most a fifth of a second of rows
        // keep the rate smooth.
        let rate = load.limit.get();
        if buf.len() >= batch_target || (rate > 0 && in_batch >= (rate / 5).max(1)) {
            send(
                load,
                &tx,
                std::mem::replace(&mut buf, new_batch()),
                in_batch,
            )
            .await?;
            since_commit += in_batch;
            in_batch = 0;
            if keyless && since_commit >= load.job.full.chunk_rows {
                tx.send(Msg::Commit)
                    .await
                    .map_err(|_| FullError::Cancelled)?;
                since_commit = 0;
            }
        }
    }
    if in_batch > 0 {
        send(load, &tx, buf, in_batch).await?;
    }
    Ok(total)
}

async fn send(load: &Ends<'_>, tx: &mpsc::Sender<Msg>, batch: Vec<u8>, rows: u64) -> Result<()> {
    tokio::select! {
        _ = load.limit.acquire(rows) => {}
        _ = load.cancel.cancelled() => return Err(FullError::Cancelled),
    }
    // A closed channel means the writer failed; its error is the one to report.
    tx.send(Msg::Rows(batch, rows))
        .await
        .map_err(|_| FullError::Cancelled)
}

async fn write_batches(
    load: &Ends<'_>,
    dst: &mut Conn,
    t: &TableCopy,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<()> {
    let context = || format!("writing {}", t.id);
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Rows(batch, rows) => {
                match t.method {
                    WriteMethod::Insert => dst
                        .query_drop(batch)
                        .await
                        .map_err(load.target.query_err(context()))?,
                    WriteMethod::LoadData => {
                        let data = bytes::Bytes::from(batch);
                        dst.set_infile_handler(async move {
                            let stream = futures_util::stream::once(async move { Ok(data) });
                            Ok(Box::pin(stream) as mysql_async::InfileData)
                        });
                        dst.query_drop(&t.load_sql)
                            .await
                            .map_err(load.target.query_err(context()))?;
                        // LOCAL turns conversion errors into warnings: any
                        // warning but a skipped duplicate (existing_rows =
                        // "skip") is a value that did not arrive exactly.
                        if dst.get_warnings() > 0 {
                            let warnings: Vec<(String, u32, String)> = dst
                                .query("SHOW WARNINGS LIMIT 10")
                                .await
                                .map_err(load.target.query_err(context()))?;
                            let bad: Vec<String> = warnings
                                .into_iter()
                                .filter(|(_, code, _)| *code != 1062 || !t.skips_duplicates)
                                .map(|(_, code, msg)| format!("{code}: {msg}"))
                                .collect();
                            if !bad.is_empty() {
                                return Err(FullError::LoadWarnings {
                                    table: t.id.clone(),
                                    warnings: bad.join("; "),
                                });
                            }
                        }
                    }
                }
                t.progress.rows_done.fetch_add(rows, Ordering::Relaxed);
            }
            Msg::Commit => {
                dst.query_drop("COMMIT")
                    .await
                    .map_err(load.target.query_err(format!("committing {}", t.id)))?;
                dst.query_drop("START TRANSACTION")
                    .await
                    .map_err(load.target.query_err("starting a transaction"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_ranges() {
        let cols = vec!["a".to_string(), "b".to_string()];
        let lo = vec![KeyValue::Int(1), KeyValue::Int(2)];
        let hi = vec![KeyValue::Int(5), KeyValue::Int(6)];
        let (sql, params) = range_condition(&cols, Some(&lo), Some(&hi));
        assert_eq!(
            sql,
            "((`a` > ?) OR (`a` = ? AND `b` > ?)) AND \
             ((`a` < ?) OR (`a` = ? AND `b` < ?) OR (`a` = ? AND `b` = ?))"
        );
        assert_eq!(
            params,
            vec![
                Value::Int(1),
                Value::Int(1),
                Value::Int(2),
                Value::Int(5),
                Value::Int(5),
                Value::Int(6),
                Value::Int(5),
                Value::Int(6)
            ]
        );
        let (sql, params) = range_condition(&cols[..1], None, None);
        assert_eq!((sql.as_str(), params.len()), ("1", 0));
    }

    #[tokio::test]
    async fn rate_limit_spaces_batches() {
        let r = RateLimit::new(1000);
        let start = Instant::now();
        for _ in 0..5 {
            r.acquire(500).await;
        }
        // 2500 rows at 1000/s with one second of burst: at least 1.5 s.
        assert!(
            start.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            start.elapsed()
        );
        r.set(0);
        let start = Instant::now();
        r.acquire(1_000_000).await;
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
