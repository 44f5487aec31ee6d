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
use crate::model::{now_ms, Chunk, KeyValue, RateLimit, TableProgress};
use crate::state::{StateError, Store};

use super::conn::{query_err, PgConnector, PgError};
use super::schema::PgTable;
use super::types::{ident, literal, push_copy, Enc};

/// Ferry's bookkeeping in the target database.
pub const BOOKKEEPING: &str = "CREATE SCHEMA IF NOT EXISTS ferry; \
     CREATE TABLE IF NOT EXISTS ferry.chunks (job text NOT NULL, tbl text NOT NULL, \
     chunk integer NOT NULL, rows bigint NOT NULL, PRIMARY KEY (job, tbl, chunk))";

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
                "SELECT chunk, rows FROM ferry.chunks WHERE job = $1 AND tbl = $2",
                &[job, &id],
            )
            .await
            .map_err(query_err("reading ferry.chunks"))?;
        for r in &rows {
            let (chunk, n): (i32, i64) = (r.get(0), r.get(1));
            let index = u32::try_from(chunk).unwrap_or(0);
            if load
                .store
                .chunk_at(job, &id, index)?
                .is_some_and(|c| !c.done)
            {
                load.store
                    .chunk_done(job, &id, index, u64::try_from(n).unwrap_or(0), None)?;
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
            r = copy_chunk(load, s, d, t, p, index, &chunk) => r,
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

/// One chunk: read along the key, written with COPY and recorded in
/// `ferry.chunks` in one target transaction, then recorded in the state.
async fn copy_chunk(
    load: &PgLoad<'_>,
    src: &mut mysql_async::Conn,
    dst: &mut tokio_postgres::Client,
    t: &PgTable,
    progress: &TableProgress,
    index: u32,
    chunk: &Chunk,
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
    let key_at: Vec<usize> = key
        .map(|k| {
            k.columns
                .iter()
                .filter_map(|c| t.columns.iter().position(|x| x.name == *c))
                .collect()
        })
        .unwrap_or_default();
    let encs: Vec<Enc> = t.columns.iter().map(|c| c.enc).collect();
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
        .map_err(load.source.query_err(format!("reading {id}")))?;
    let mut buf: Vec<u8> = Vec::with_capacity(SEND_BYTES + (64 << 10));
    let (mut total, mut in_buf) = (0u64, 0u64);
    while let Some(row) = rows
        .next()
        .await
        .map_err(load.source.query_err(format!("reading {id}")))?
    {
        let values = row.unwrap();
        for (i, (v, enc)) in values.iter().zip(&encs).enumerate() {
            if i > 0 {
                buf.push(b'\t');
            }
            if let Err(unfit) = push_copy(&mut buf, v, *enc, &load.job.mapping) {
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
        let rate = load.limit.get();
        if buf.len() >= SEND_BYTES || (rate > 0 && in_buf >= (rate / 5).max(1)) {
            send(load, &mut sink, &mut buf, in_buf, progress).await?;
            in_buf = 0;
        }
    }
    drop(rows);
    if in_buf > 0 {
        send(load, &mut sink, &mut buf, in_buf, progress).await?;
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(query_err(format!("COPY into {}", t.qualified())))?;
    let n = i64::try_from(total).unwrap_or(i64::MAX);
    let chunk_no = i32::try_from(index).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO ferry.chunks (job, tbl, chunk, rows) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (job, tbl, chunk) DO UPDATE SET rows = EXCLUDED.rows",
        &[&load.job.name, &id, &chunk_no, &n],
    )
    .await
    .map_err(query_err("recording the chunk in ferry.chunks"))?;
    tx.commit().await.map_err(query_err(format!(
        "committing a chunk of {}",
        t.qualified()
    )))?;
    let store = load.store.clone();
    let job = load.job.name.clone();
    let table_done =
        tokio::task::spawn_blocking(move || store.chunk_done(&job, &id, index, total, None))
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

async fn send<S>(
    load: &PgLoad<'_>,
    sink: &mut std::pin::Pin<&mut S>,
    buf: &mut Vec<u8>,
    rows: u64,
    progress: &TableProgress,
) -> Result<()>
where
    S: futures_util::Sink<bytes::Bytes, Error = tokio_postgres::Error>,
{
    tokio::select! {
        _ = load.limit.acquire(rows) => {}
        _ = load.cancel.cancelled() => return Err(LoadError::Cancelled),
    }
    let data = bytes::Bytes::from(std::mem::take(buf));
    sink.send(data)
        .await
        .map_err(query_err("sending COPY data"))?;
    buf.reserve(SEND_BYTES + (64 << 10));
    progress.rows_done.fetch_add(rows, Ordering::Relaxed);
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

/// After the data: keys, indexes and ON UPDATE triggers per table, then
/// the foreign keys, then each identity set past both the highest copied
/// value and the source's next AUTO_INCREMENT. Each step is safe to run
/// again (a resumed job runs them all).
pub async fn finish(load: &PgLoad<'_>, tables: &[PgTable]) -> Result<()> {
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
    let mut src = load.source.connect().await?;
    for t in tables {
        let Some(c) = t.identity() else { continue };
        let next: Option<Option<u64>> = src
            .exec_first(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&t.source.db, &t.source.name),
            )
            .await
            .map_err(load.source.query_err("reading AUTO_INCREMENT"))?;
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
    info!(
        tables = tables.len(),
        "keys, indexes, foreign keys and sequences created"
    );
    Ok(())
}
