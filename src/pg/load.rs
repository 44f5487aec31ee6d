//! The full load into PostgreSQL: the tables created bare, every chunk
//! read from the source along its key and written with `COPY` in one
//! target transaction that also records the chunk in Ferry's bookkeeping
//! table (`ferry.chunks`); then keys, indexes, foreign keys, sequences
//! and triggers.
//!
//! Chunks come from the same plan as the MySQL load (the state's chunk
//! list, planned a batch at a time) and are copied by `threads` workers in
//! any order, across tables. A crash loses nothing and copies nothing
//! twice: a chunk is on the target exactly when its bookkeeping row is, and
//! a resumed load first marks done what the bookkeeping holds.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures_util::SinkExt;
use mysql_async::prelude::*;
use mysql_async::{Params, Value};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::db::{qualified, quote_ident, Connector, DbError};
use crate::full::{range_condition, FullError, Planner};
use crate::job::JobSpec;
use crate::model::BinlogPos;
use crate::model::{now_ms, Chunk, KeyValue, RateLimit, TableProgress};
use crate::state::{StateError, Store};

use super::conn::{query_err, PgConnector, PgError};
use super::schema::PgTable;
use super::types::{ident, literal, push_copy, Enc};

/// Ferry's bookkeeping in the target database.
pub const BOOKKEEPING: &str = "CREATE SCHEMA IF NOT EXISTS ferry; \
     CREATE TABLE IF NOT EXISTS ferry.chunks (job text NOT NULL, tbl text NOT NULL, \
     chunk integer NOT NULL, rows bigint NOT NULL, PRIMARY KEY (job, tbl, chunk)); \
     ALTER TABLE ferry.chunks ADD COLUMN IF NOT EXISTS snapshot_file text, \
     ADD COLUMN IF NOT EXISTS snapshot_pos bigint";

/// Bytes of `COPY` data sent at a time.
const SEND_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Source(#[from] DbError),
    #[error(transparent)]
    Plan(#[from] FullError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "{table}.{column}: cannot be carried into PostgreSQL: {why} (row with key {key}); \
         the job's [target] mapping keys decide (see README, MySQL to PostgreSQL)"
    )]
    Unfit {
        table: String,
        column: String,
        key: String,
        why: String,
    },
    #[error("stopped")]
    Cancelled,
}

impl LoadError {
    pub fn is_retryable(&self) -> bool {
        match self {
            LoadError::Pg(e) => e.is_retryable(),
            LoadError::Source(e) => e.is_retryable(),
            LoadError::Plan(e) => e.is_retryable(),
            _ => false,
        }
    }
}

type Result<T, E = LoadError> = std::result::Result<T, E>;

/// What a load into PostgreSQL works with.
pub struct PgLoad<'a> {
    pub job: &'a JobSpec,
    pub source: &'a Connector,
    pub target: &'a PgConnector,
    pub store: &'a Arc<Store>,
    pub limit: Arc<RateLimit>,
    pub cancel: CancellationToken,
}

/// Creates the schemas and the bookkeeping table.
pub async fn prepare(target: &PgConnector, tables: &[PgTable]) -> Result<()> {
    let client = target.connect().await?;
    client
        .batch_execute(BOOKKEEPING)
        .await
        .map_err(query_err("creating Ferry's bookkeeping table ferry.chunks"))?;
    let mut schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    schemas.sort_unstable();
    schemas.dedup();
    for s in schemas {
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident(s)))
            .await
            .map_err(query_err(format!("creating schema {s}")))?;
    }
    Ok(())
}

/// Plans what is not planned, creates the tables a load starts afresh and
/// returns the progress handles (so the caller can report).
pub async fn plan(load: &PgLoad<'_>, tables: &[PgTable]) -> Result<Vec<Arc<TableProgress>>> {
    let planner = Planner {
        job: load.job,
        source: load.source,
        store: load.store,
        cancel: &load.cancel,
    };
    let sources: Vec<_> = tables.iter().map(|t| t.source.clone()).collect();
    let progress = planner.plan(&sources).await?;
    let client = load.target.connect().await?;
    let job = &load.job.name;
    for (t, p) in tables.iter().zip(&progress) {
        let id = t.source.id();
        // What the target committed that the state did not record (a
        // crash in between) is done.
        let rows = client
            .query(
                "SELECT chunk, rows, snapshot_file, snapshot_pos FROM ferry.chunks \
                 WHERE job = $1 AND tbl = $2",
                &[job, &id],
            )
            .await
            .map_err(query_err("reading ferry.chunks"))?;
        for r in &rows {
            let (chunk, n): (i32, i64) = (r.get(0), r.get(1));
            let index = u32::try_from(chunk).unwrap_or(0);
            let snapshot = match (r.get::<_, Option<String>>(2), r.get::<_, Option<i64>>(3)) {
                (Some(file), Some(pos)) => Some(BinlogPos {
                    file,
                    pos: u64::try_from(pos).unwrap_or(0),
                }),
                _ => None,
            };
            if load
                .store
                .chunk_at(job, &id, index)?
                .is_some_and(|c| !c.done)
            {
                load.store
                    .chunk_done(job, &id, index, u64::try_from(n).unwrap_or(0), snapshot)?;
                p.chunks_done.fetch_add(1, Ordering::Relaxed);
                p.rows_done
                    .fetch_add(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
            }
        }
        if rows.is_empty() {
            // Nothing of it on the target: (re)created bare.
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {} CASCADE; {}",
                    t.qualified(),
                    t.create_sql()
                ))
                .await
                .map_err(query_err(format!("creating {}", t.qualified())))?;
        }
        if load.store.table_plan(job, &id)?.is_some_and(|p| p.done) {
            p.done.store(true, Ordering::Relaxed);
        }
    }
    Ok(progress)
}

/// The next chunk to copy, across tables: (table, chunk number, chunk).
struct Cursor {
    table: usize,
    from: u32,
}

/// Copies every chunk not done, `threads` at a time; returns when all are
/// done, at the first error, or when `cancel` fires.
pub async fn run(
    load: &PgLoad<'_>,
    tables: &[PgTable],
    progress: &[Arc<TableProgress>],
) -> Result<()> {
    if load.job.mode.needs_binlog() {
        return grouped::run(load, tables, progress).await;
    }
    let cursor = Mutex::new(Cursor { table: 0, from: 0 });
    let workers =
        (0..load.job.full.threads.max(1)).map(|_| worker(load, tables, progress, &cursor));
    let results = futures_util::future::join_all(workers).await;
    let mut cancelled = false;
    for r in results {
        match r {
            Ok(()) => {}
            Err(LoadError::Cancelled) => cancelled = true,
            Err(e) => return Err(e),
        }
    }
    if cancelled || load.cancel.is_cancelled() {
        return Err(LoadError::Cancelled);
    }
    Ok(())
}

fn next_task(
    load: &PgLoad<'_>,
    tables: &[PgTable],
    cursor: &Mutex<Cursor>,
) -> Result<Option<(usize, u32, Chunk)>> {
    let mut c = cursor.lock().unwrap_or_else(|p| p.into_inner());
    while let Some(t) = tables.get(c.table) {
        match load
            .store
            .next_chunk(&load.job.name, &t.source.id(), c.from)?
        {
            Some((index, chunk)) => {
                c.from = index + 1;
                return Ok(Some((c.table, index, chunk)));
            }
            None => {
                c.table += 1;
                c.from = 0;
            }
        }
    }
    Ok(None)
}

async fn worker(
    load: &PgLoad<'_>,
    tables: &[PgTable],
    progress: &[Arc<TableProgress>],
    cursor: &Mutex<Cursor>,
) -> Result<()> {
    let mut src = None;
    let mut dst = None;
    loop {
        if load.cancel.is_cancelled() {
            return Err(LoadError::Cancelled);
        }
        let Some((ti, index, chunk)) = next_task(load, tables, cursor)? else {
            break;
        };
        let (Some(t), Some(p)) = (tables.get(ti), progress.get(ti)) else {
            break;
        };
        if src.is_none() {
            src = Some(load.source.connect().await?);
        }
        if dst.is_none() {
            dst = Some(load.target.connect().await?);
        }
        let (Some(s), Some(d)) = (src.as_mut(), dst.as_mut()) else {
            break;
        };
        let _ = p
            .started_ms
            .compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
        let copied = tokio::select! {
            r = copy_chunk(load, s, d, t, p, (index, &chunk), None) => r,
            () = load.cancel.cancelled() => Err(LoadError::Cancelled),
        };
        if let Err(e) = copied {
            // The session may be inside a COPY the target still runs (a
            // lock wait): its statement is cancelled, and dropping the
            // session ends the transaction there.
            if let Some(d) = dst.take() {
                let _ = d.cancel_token().cancel_query(tokio_postgres::NoTls).await;
            }
            return Err(e);
        }
    }
    if let Some(s) = src {
        let _ = s.disconnect().await;
    }
    Ok(())
}

/// The load of a job that replicates: the tables linked by foreign keys
/// (a *group*; a table without any is a group of its own) are read by one
/// worker in one consistent snapshot, whose binlog position is kept with
/// every chunk (in `ferry.chunks` and the state). The CDC skips a table's
/// changes up to its position and applies those after, so the binlog meets
/// the copy exactly: key moves, unique-key swaps and cascades during the
/// load are seen once, and keys, unique indexes and foreign keys created
/// after the data hold. A group an earlier attempt left half done (its
/// snapshot is gone) is copied again whole. As for MySQL targets.
mod grouped {
    use std::collections::VecDeque;

    use super::*;

    pub(super) async fn run(
        load: &PgLoad<'_>,
        tables: &[PgTable],
        progress: &[Arc<TableProgress>],
    ) -> Result<()> {
        let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
        for members in groups_of(tables) {
            let pending = members.iter().any(|&i| {
                progress
                    .get(i)
                    .is_some_and(|p| !p.done.load(Ordering::Relaxed))
            });
            if pending {
                let rows = members
                    .iter()
                    .filter_map(|&i| tables.get(i))
                    .map(|t| t.source.rows_estimate)
                    .sum();
                groups.push((rows, members));
            }
        }
        // The biggest first, so the workers end together.
        groups.sort_by_key(|(rows, _)| std::cmp::Reverse(*rows));
        let queue: Mutex<VecDeque<Vec<usize>>> =
            Mutex::new(groups.into_iter().map(|(_, m)| m).collect());
        let workers =
            (0..load.job.full.threads.max(1)).map(|_| worker(load, tables, progress, &queue));
        let mut cancelled = false;
        for r in futures_util::future::join_all(workers).await {
            match r {
                Ok(()) => {}
                Err(LoadError::Cancelled) => cancelled = true,
                Err(e) => return Err(e),
            }
        }
        if cancelled || load.cancel.is_cancelled() {
            return Err(LoadError::Cancelled);
        }
        Ok(())
    }

    /// Indexes of `tables` grouped by the foreign keys between them.
    fn groups_of(tables: &[PgTable]) -> Vec<Vec<usize>> {
        let edges: Vec<(String, String, String, String)> = tables
            .iter()
            .flat_map(|t| {
                t.foreign_keys.iter().map(|fk| {
                    (
                        t.schema.clone(),
                        t.source.name.clone(),
                        fk.references.0.clone(),
                        fk.references.1.clone(),
                    )
                })
            })
            .collect();
        let group_of = crate::catalog::fk_groups(&edges);
        let mut out: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            let name = group_of
                .get(&(t.schema.clone(), t.source.name.clone()))
                .cloned()
                .unwrap_or_else(|| t.qualified());
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, members)) => members.push(i),
                None => out.push((name, vec![i])),
            }
        }
        out.into_iter().map(|(_, m)| m).collect()
    }

    async fn worker(
        load: &PgLoad<'_>,
        tables: &[PgTable],
        progress: &[Arc<TableProgress>],
        queue: &Mutex<VecDeque<Vec<usize>>>,
    ) -> Result<()> {
        loop {
            if load.cancel.is_cancelled() {
                return Err(LoadError::Cancelled);
            }
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            let Some(members) = next else {
                return Ok(());
            };
            let mut tries = 0;
            loop {
                let mut dst = load.target.connect().await?;
                let copied = tokio::select! {
                    r = copy_group(load, tables, progress, &members, &mut dst) => r,
                    () = load.cancel.cancelled() => Err(LoadError::Cancelled),
                };
                match copied {
                    Ok(()) => break,
                    // A table changed between the snapshot and its first
                    // read: a new snapshot.
                    Err(LoadError::Source(DbError::Query {
                        source: mysql_async::Error::Server(s),
                        ..
                    })) if s.code == 1412 && tries < 10 => tries += 1,
                    Err(e) => {
                        let _ = dst.cancel_token().cancel_query(tokio_postgres::NoTls).await;
                        load.cancel.cancel();
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn copy_group(
        load: &PgLoad<'_>,
        tables: &[PgTable],
        progress: &[Arc<TableProgress>],
        members: &[usize],
        dst: &mut tokio_postgres::Client,
    ) -> Result<()> {
        let job = &load.job.name;
        let fresh = members.iter().filter_map(|&i| tables.get(i)).all(|t| {
            load.store
                .chunks_done(job, &t.source.id())
                .is_ok_and(|d| d.chunks == 0)
        });
        if !fresh {
            // Chunks from another snapshot: the group starts over.
            for &i in members {
                let (Some(t), Some(p)) = (tables.get(i), progress.get(i)) else {
                    continue;
                };
                load.store.reset_table(job, &t.source.id())?;
                p.reset();
                dst.execute(
                    "DELETE FROM ferry.chunks WHERE job = $1 AND tbl = $2",
                    &[job, &t.source.id()],
                )
                .await
                .map_err(query_err("clearing ferry.chunks"))?;
            }
        }
        let mut src = load.source.connect().await?;
        let snapshot = crate::source::position::required_snapshot(
            load.source,
            &mut src,
            "a load that CDC follows",
        )
        .await?;
        for &i in members {
            let (Some(planned), Some(p)) = (tables.get(i), progress.get(i)) else {
                continue;
            };
            let id = planned.source.id();
            let name = qualified(&planned.source.db, &planned.source.name);
            // The first read takes the table's metadata lock, held until
            // the snapshot ends: no DDL changes it while it is copied.
            match src
                .query_drop(format!("SELECT 1 FROM {name} LIMIT 0"))
                .await
            {
                Err(mysql_async::Error::Server(e)) if e.code == 1146 => {
                    // Dropped since it was planned: the CDC replays the drop.
                    let mut from = 0;
                    while let Some((index, _)) = load.store.next_chunk(job, &id, from)? {
                        from = index + 1;
                        load.store
                            .chunk_done(job, &id, index, 0, Some(snapshot.clone()))?;
                    }
                    p.done.store(true, Ordering::Relaxed);
                    continue;
                }
                other => other.map_err(load.source.query_err(format!("reading {name}")))?,
            }
            // The table as of the snapshot (a DDL may have come since the
            // schema was read), created afresh.
            let t = as_of_snapshot(load, &mut src, planned).await?;
            dst.batch_execute(&format!(
                "DROP TABLE IF EXISTS {} CASCADE; {}",
                t.qualified(),
                t.create_sql()
            ))
            .await
            .map_err(query_err(format!("creating {}", t.qualified())))?;
            if t.source.key != planned.source.key {
                // Its key changed since the plan: one chunk.
                let plan = crate::model::TablePlan {
                    chunks: 1,
                    keyless: t.source.key.is_none(),
                    rows_estimate: t.source.rows_estimate,
                    done: false,
                    snapshot: None,
                };
                let open = Chunk {
                    lower: None,
                    upper: None,
                    done: false,
                    rows: 0,
                };
                load.store.put_table_plan(job, &id, &plan, &[open])?;
            }
            let _ =
                p.started_ms
                    .compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
            let mut from = 0;
            while let Some((index, chunk)) = load.store.next_chunk(job, &id, from)? {
                from = index + 1;
                if load.cancel.is_cancelled() {
                    return Err(LoadError::Cancelled);
                }
                copy_chunk(load, &mut src, dst, &t, p, (index, &chunk), Some(&snapshot)).await?;
            }
        }
        let _ = src.query_drop("COMMIT").await;
        let _ = src.disconnect().await;
        Ok(())
    }

    /// `planned` as the source has it now (under its metadata lock).
    async fn as_of_snapshot(
        load: &PgLoad<'_>,
        src: &mut mysql_async::Conn,
        planned: &PgTable,
    ) -> Result<PgTable> {
        let found = crate::catalog::Catalog::read_table(
            src,
            load.source,
            &planned.source.db,
            &planned.source.name,
            &planned.source.target_db,
        )
        .await?;
        let Some(found) = found else {
            return Ok(planned.clone());
        };
        let catalog = super::only(found);
        let mut read = super::super::schema::read(load.job, load.source, &catalog).await?;
        Ok(match read.pop() {
            Some(mut t) => {
                t.schema = planned.schema.clone();
                t
            }
            None => planned.clone(),
        })
    }
}

/// One chunk: read along the key, written with COPY and recorded in
/// `ferry.chunks` in one target transaction, then recorded in the state.
async fn copy_chunk(
    load: &PgLoad<'_>,
    src: &mut mysql_async::Conn,
    dst: &mut tokio_postgres::Client,
    t: &PgTable,
    progress: &TableProgress,
    (index, chunk): (u32, &Chunk),
    snapshot: Option<&BinlogPos>,
) -> Result<()> {
    let id = t.source.id();
    let names: Vec<String> = t.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let key = t.source.key.as_ref();
    let (cond, params) = match key {
        Some(k) => range_condition(&k.columns, chunk.lower.as_ref(), chunk.upper.as_ref()),
        None => ("1".to_string(), Vec::new()),
    };
    let select = format!(
        "SELECT {} FROM {}{} WHERE {cond}",
        names.join(", "),
        qualified(&t.source.db, &t.source.name),
        key.map(|k| format!(" FORCE INDEX ({})", quote_ident(&k.index)))
            .unwrap_or_default()
    );
    let tx = dst
        .transaction()
        .await
        .map_err(query_err("starting a transaction"))?;
    if key.is_none() {
        // Copied whole, in one transaction: whatever an earlier attempt
        // left goes.
        tx.batch_execute(&format!("TRUNCATE {}", t.qualified()))
            .await
            .map_err(query_err(format!("emptying {}", t.qualified())))?;
    }
    let pace = Pace {
        mapping: &load.job.mapping,
        source: load.source,
        limit: &load.limit,
        cancel: &load.cancel,
    };
    let total = copy_rows(&pace, src, &tx, t, select, params, Some(progress)).await?;
    let n = i64::try_from(total).unwrap_or(i64::MAX);
    let chunk_no = i32::try_from(index).unwrap_or(i32::MAX);
    let (snap_file, snap_pos) = match snapshot {
        Some(p) => (
            Some(p.file.clone()),
            Some(i64::try_from(p.pos).unwrap_or(0)),
        ),
        None => (None, None),
    };
    tx.execute(
        "INSERT INTO ferry.chunks (job, tbl, chunk, rows, snapshot_file, snapshot_pos) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job, tbl, chunk) DO UPDATE SET \
         rows = EXCLUDED.rows, snapshot_file = EXCLUDED.snapshot_file, \
         snapshot_pos = EXCLUDED.snapshot_pos",
        &[&load.job.name, &id, &chunk_no, &n, &snap_file, &snap_pos],
    )
    .await
    .map_err(query_err("recording the chunk in ferry.chunks"))?;
    tx.commit().await.map_err(query_err(format!(
        "committing a chunk of {}",
        t.qualified()
    )))?;
    let store = load.store.clone();
    let job = load.job.name.clone();
    let snapshot = snapshot.cloned();
    let table_done =
        tokio::task::spawn_blocking(move || store.chunk_done(&job, &id, index, total, snapshot))
            .await
            .map_err(|e| StateError::Io {
                dir: String::new(),
                source: std::io::Error::other(e),
            })??;
    progress.chunks_done.fetch_add(1, Ordering::Relaxed);
    if table_done {
        progress.finished_ms.store(now_ms(), Ordering::Relaxed);
        progress.done.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// How rows are written: the mapping, and the rate and stop of the job.
struct Pace<'a> {
    mapping: &'a crate::job::Mapping,
    source: &'a Connector,
    limit: &'a RateLimit,
    cancel: &'a CancellationToken,
}

/// Streams the rows of `select` into `t` with `COPY` inside `tx`; the
/// number of rows.
async fn copy_rows(
    pace: &Pace<'_>,
    src: &mut mysql_async::Conn,
    tx: &tokio_postgres::Transaction<'_>,
    t: &PgTable,
    select: String,
    params: Vec<Value>,
    progress: Option<&TableProgress>,
) -> Result<u64> {
    let id = t.source.id();
    let key = t.source.key.as_ref();
    let key_at: Vec<usize> = key
        .map(|k| {
            k.columns
                .iter()
                .filter_map(|c| t.columns.iter().position(|x| x.name == *c))
                .collect()
        })
        .unwrap_or_default();
    let encs: Vec<Enc> = t.columns.iter().map(|c| c.enc).collect();
    let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN",
            t.qualified(),
            cols.join(", ")
        ))
        .await
        .map_err(query_err(format!("COPY into {}", t.qualified())))?;
    futures_util::pin_mut!(sink);
    let mut rows = src
        .exec_iter(select, Params::Positional(params))
        .await
        .map_err(pace.source.query_err(format!("reading {id}")))?;
    let mut buf: Vec<u8> = Vec::with_capacity(SEND_BYTES + (64 << 10));
    let (mut total, mut in_buf) = (0u64, 0u64);
    while let Some(row) = rows
        .next()
        .await
        .map_err(pace.source.query_err(format!("reading {id}")))?
    {
        let values = row.unwrap();
        for (i, (v, enc)) in values.iter().zip(&encs).enumerate() {
            if i > 0 {
                buf.push(b'\t');
            }
            if let Err(unfit) = push_copy(&mut buf, v, *enc, pace.mapping) {
                return Err(LoadError::Unfit {
                    table: id,
                    column: t.columns.get(i).map(|c| c.name.clone()).unwrap_or_default(),
                    key: key_text(&values, &key_at),
                    why: unfit.0,
                });
            }
        }
        buf.push(b'\n');
        total += 1;
        in_buf += 1;
        let rate = pace.limit.get();
        if buf.len() >= SEND_BYTES || (rate > 0 && in_buf >= (rate / 5).max(1)) {
            send(pace, &mut sink, &mut buf, in_buf, progress).await?;
            in_buf = 0;
        }
    }
    drop(rows);
    if in_buf > 0 {
        send(pace, &mut sink, &mut buf, in_buf, progress).await?;
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(query_err(format!("COPY into {}", t.qualified())))?;
    Ok(total)
}

async fn send<S>(
    pace: &Pace<'_>,
    sink: &mut std::pin::Pin<&mut S>,
    buf: &mut Vec<u8>,
    rows: u64,
    progress: Option<&TableProgress>,
) -> Result<()>
where
    S: futures_util::Sink<bytes::Bytes, Error = tokio_postgres::Error>,
{
    tokio::select! {
        _ = pace.limit.acquire(rows) => {}
        _ = pace.cancel.cancelled() => return Err(LoadError::Cancelled),
    }
    let data = bytes::Bytes::from(std::mem::take(buf));
    sink.send(data)
        .await
        .map_err(query_err("sending COPY data"))?;
    buf.reserve(SEND_BYTES + (64 << 10));
    if let Some(p) = progress {
        p.rows_done.fetch_add(rows, Ordering::Relaxed);
    }
    Ok(())
}

/// A row's key, for messages.
fn key_text(values: &[Value], key_at: &[usize]) -> String {
    let parts: Vec<String> = key_at
        .iter()
        .filter_map(|i| values.get(*i))
        .map(|v| format!("{:?}", KeyValue::from(v.clone())))
        .collect();
    if parts.is_empty() {
        "(no key)".into()
    } else {
        parts.join(", ")
    }
}

/// After the data: keys and indexes per table, then the foreign keys,
/// then each identity set past both the highest copied value and the
/// source's next AUTO_INCREMENT, then (`triggers`) the ON UPDATE triggers.
/// Each step is safe to run again (a resumed job runs them all).
pub async fn finish(load: &PgLoad<'_>, tables: &[PgTable], triggers: bool) -> Result<()> {
    let client = load.target.connect().await?;
    for t in tables {
        for sql in t.after_data_sql() {
            client
                .batch_execute(&sql)
                .await
                .map_err(query_err(format!("indexing {}", t.qualified())))?;
        }
    }
    for t in tables {
        for sql in t.foreign_key_sql() {
            client
                .batch_execute(&sql)
                .await
                .map_err(query_err(format!("foreign keys of {}", t.qualified())))?;
        }
    }
    sequences(load.source, load.target, tables).await?;
    if triggers {
        self::triggers(load.target, tables).await?;
    }
    info!(
        tables = tables.len(),
        "keys, indexes, foreign keys and sequences created"
    );
    Ok(())
}

/// Each identity's sequence set past both the highest value the table
/// holds and the source's next AUTO_INCREMENT (after a load, and again at
/// a cutover).
pub async fn sequences(source: &Connector, target: &PgConnector, tables: &[PgTable]) -> Result<()> {
    let client = target.connect().await?;
    let mut src = source.connect().await?;
    for t in tables {
        let Some(c) = t.identity() else { continue };
        let next: Option<Option<u64>> = src
            .exec_first(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&t.source.db, &t.source.name),
            )
            .await
            .map_err(source.query_err("reading AUTO_INCREMENT"))?;
        let next = next.flatten().unwrap_or(1).max(1);
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence({}, {}), \
             GREATEST((SELECT COALESCE(MAX({col}), 0) + 1 FROM {t}), {next}), false)",
            literal(&t.qualified()),
            literal(&c.name),
            col = ident(&c.name),
            t = t.qualified(),
        );
        // setval(.., n, false): the next value is n.
        client.batch_execute(&sql).await.map_err(query_err(format!(
            "setting the sequence of {}",
            t.qualified()
        )))?;
    }
    let _ = src.disconnect().await;
    Ok(())
}

/// Creates the tables the target does not have yet (bare, as a load
/// would), for a job that starts from an explicit position.
pub async fn create_missing(target: &PgConnector, tables: &[PgTable]) -> Result<()> {
    let client = target.connect().await?;
    for t in tables {
        let exists = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t.qualified()])
            .await
            .map_err(query_err(format!("looking for {}", t.qualified())))?
            .get::<_, bool>(0);
        if !exists {
            client
                .batch_execute(&t.create_sql())
                .await
                .map_err(query_err(format!("creating {}", t.qualified())))?;
        }
    }
    Ok(())
}

/// The ON UPDATE CURRENT_TIMESTAMP triggers.
pub async fn triggers(target: &PgConnector, tables: &[PgTable]) -> Result<()> {
    let client = target.connect().await?;
    for t in tables {
        for sql in t.trigger_sql() {
            client
                .batch_execute(&sql)
                .await
                .map_err(query_err(format!("triggers of {}", t.qualified())))?;
        }
    }
    Ok(())
}

/// Copies `db.table` from the source whole, at one consistent snapshot, to
/// schema `target_db` (what the target had under that name goes first):
/// for a table that enters the selection while CDC streams. Returns the
/// snapshot's binlog position (the table's changes up to it are in the
/// copy); a table the source no longer has is dropped on the target.
pub async fn copy_table_now(
    job: &JobSpec,
    source: &Connector,
    target: &PgConnector,
    db: &str,
    table: &str,
    target_db: &str,
) -> Result<BinlogPos> {
    let mut src = source.connect().await?;
    let pos = crate::source::position::required_snapshot(
        source,
        &mut src,
        "copying a table that enters the selection during CDC",
    )
    .await?;
    let client = target.connect().await?;
    let target_name = format!("{}.{}", ident(target_db), ident(table));
    // The first read holds the table's metadata lock until the snapshot
    // ends, so no DDL changes it while it is copied.
    let name = qualified(db, table);
    match src
        .query_drop(format!("SELECT 1 FROM {name} LIMIT 0"))
        .await
    {
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => {
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {target_name} CASCADE"))
                .await
                .map_err(query_err(format!("dropping {target_name}")))?;
            return Ok(pos);
        }
        other => other.map_err(source.query_err(format!("reading {name}")))?,
    }
    let found = crate::catalog::Catalog::read_table(&mut src, source, db, table, target_db)
        .await?
        .ok_or_else(|| {
            LoadError::Source(DbError::Unexpected {
                role: "source",
                what: format!("{name} vanished while it was being copied"),
            })
        })?;
    let catalog = only(found);
    let mut tables = super::schema::read(job, source, &catalog).await?;
    let Some(t) = tables.first_mut() else {
        return Ok(pos);
    };
    t.schema = target_db.to_string();
    let mut client = client;
    let tx = client
        .transaction()
        .await
        .map_err(query_err("starting a transaction"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}; DROP TABLE IF EXISTS {} CASCADE; {}",
        ident(target_db),
        t.qualified(),
        t.create_sql()
    ))
    .await
    .map_err(query_err(format!("creating {}", t.qualified())))?;
    let names: Vec<String> = t.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let select = format!("SELECT {} FROM {name}", names.join(", "));
    let limit = RateLimit::new(0);
    let cancel = CancellationToken::new();
    let pace = Pace {
        mapping: &job.mapping,
        source,
        limit: &limit,
        cancel: &cancel,
    };
    let rows = copy_rows(&pace, &mut src, &tx, t, select, Vec::new(), None).await?;
    for sql in t.after_data_sql().into_iter().chain(t.foreign_key_sql()) {
        tx.batch_execute(&sql)
            .await
            .map_err(query_err(format!("indexing {}", t.qualified())))?;
    }
    tx.commit().await.map_err(query_err(format!(
        "committing the copy of {}",
        t.qualified()
    )))?;
    let _ = src.query_drop("COMMIT").await;
    let _ = src.disconnect().await;
    info!(table = %name, rows, at = %pos, "copied a table that entered the selection");
    Ok(pos)
}

/// A catalog of one table.
fn only(table: crate::catalog::Table) -> crate::catalog::Catalog {
    crate::catalog::Catalog {
        tables: vec![table],
        views: Vec::new(),
        routines: Vec::new(),
        triggers: Vec::new(),
        events: Vec::new(),
        missing_databases: Vec::new(),
        unmatched_patterns: Vec::new(),
    }
}
