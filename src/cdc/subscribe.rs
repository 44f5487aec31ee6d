//! `mode = "subscribe"`: the source's binlog delivered as change events
//! (see [`super::event`]) to a sink, at least once.
//!
//! Events of a source transaction are collected until its commit; whole
//! transactions are sent in batches, and the position after the last one
//! is checkpointed in the state only once the sink acknowledged the batch.
//! After a crash the stream resumes from the checkpoint, so events sent
//! but not checkpointed are sent again, with the same `source.file`,
//! `source.pos` and `source.row` (consumers deduplicate on them; JetStream
//! does by itself within its duplicate window, from the message id).
//!
//! With `[sink] snapshot = true`, every selected row is first sent as an
//! `r` event, read in one consistent snapshot whose binlog position
//! (MariaDB's `binlog_snapshot_file/position`) is where streaming starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::*;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::event::{self, MetaCache, Source, TableMeta};
use super::follow::{Follow, Step};
use super::{position, server_id, start_position, BinlogPos, CdcError, Live, Stats};
use crate::catalog::Catalog;
use crate::db::{qualified, quote_ident, Connector};
use crate::job::JobSpec;
use crate::sink::{Record, Sink};
use crate::source::binlog::{BinlogReader, Change, ChangeSource, Op, Rows, Start};
use crate::source::decode::{self as decode, Image};
use crate::state::{now_ms, Checkpoint, Store, XaRows};

/// A batch is sent when it holds this many events (at a transaction end)
/// or when the stream pauses.
const BATCH_EVENTS: usize = 10_000;
const BATCH_BYTES: usize = 8 << 20;

/// JSON columns per `db.table` (MariaDB's JSON is LONGTEXT with a
/// `json_valid` check; MySQL's has its own type in the binlog).
type JsonColumns = HashMap<(String, String), Vec<String>>;

async fn json_columns(job: &JobSpec, source: &Connector) -> Result<JsonColumns, CdcError> {
    let mut conn = source.connect().await?;
    let rows: Vec<(String, String, String)> = conn
        .query(
            "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE \
             FROM information_schema.CHECK_CONSTRAINTS WHERE CHECK_CLAUSE LIKE 'json_valid(%'",
        )
        .await
        .unwrap_or_default();
    let _ = conn.disconnect().await;
    let mut out = JsonColumns::new();
    for (db, table, clause) in rows {
        if !job
            .select
            .iter()
            .any(|s| s.database == db && s.matches(&table))
        {
            continue;
        }
        // json_valid(`col`)
        if let Some(col) = clause
            .strip_prefix("json_valid(`")
            .and_then(|c| c.strip_suffix("`)"))
        {
            out.entry((db, table))
                .or_default()
                .push(col.replace("``", "`"));
        }
    }
    Ok(out)
}

/// The `[sink] exclude_columns` globs, matched against `db.table.column`.
fn exclusions(job: &JobSpec) -> globset::GlobSet {
    let mut b = globset::GlobSetBuilder::new();
    for g in job.sink.iter().flat_map(|s| &s.exclude_columns) {
        if let Ok(g) = globset::Glob::new(g) {
            b.add(g);
        }
    }
    b.build().unwrap_or_else(|_| globset::GlobSet::empty())
}

/// What the runner sees of the sink: where, and how it is doing.
pub type SinkState = Mutex<Option<String>>;

/// Streams from the checkpoint (after the snapshot, if asked and not done)
/// into the job's sink until `cancel` fires or an error.
pub async fn run(
    job: &JobSpec,
    source: &Connector,
    store: &Store,
    cancel: CancellationToken,
    live: Live<'_>,
    sink_state: &SinkState,
) -> Result<(), CdcError> {
    let Some(spec) = &job.sink else {
        return Err(CdcError::Setup("a subscribe job needs a [sink]".into()));
    };
    let mut sink = Sink::open(&spec.kind).await?;
    let what = sink.describe();
    *sink_state.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{what}: connected"));
    let mut json = json_columns(job, source).await?;
    let excluded = exclusions(job);
    let mut cp = match store.checkpoint(&job.name)? {
        Some(cp) => cp,
        None => {
            let (position, gtid) = match spec.snapshot {
                true => {
                    snapshot(
                        job, source, &mut sink, &json, &excluded, &cancel, live.limit,
                    )
                    .await?
                }
                false => start_position(job, source).await?,
            };
            let cp = Checkpoint {
                position,
                gtid,
                unix_ms: now_ms(),
                safe_until: None,
            };
            store.put_checkpoint(&job.name, &cp)?;
            info!(at = %cp.position, "subscription starts");
            cp
        }
    };
    let start = cp.position.clone();
    let mut reader = BinlogReader::open(
        source,
        Start {
            position: &start,
            gtid: cp.gtid.as_deref(),
            server_id: server_id(job),
        },
    )
    .await?;
    crate::progress::say(format!(
        "{}: streaming changes to {what} from {start} (SIGINT/SIGTERM stops)",
        job.name
    ));
    let mut follow = Follow::new(job, store.ghosts(&job.name)?);
    let mut in_txn = false;
    let mut stats = Stats::new(store, job, source, live.source);
    let mut rows = 0u64;
    let mut metas = MetaCache::default();
    // Rows of an open XA transaction: sent only if it commits.
    let mut xa_rows: Option<Vec<Rows>> = None;
    // Events of the open transaction; whole transactions waiting for the sink.
    let mut txn: Vec<Record> = Vec::new();
    let mut out = Outbox {
        sink,
        what,
        state: sink_state,
        records: Vec::new(),
        bytes: 0,
        end: None,
        delivered: 0,
        xa_done: Vec::new(),
    };
    // The GTID of the open transaction.
    let mut txn_gtid: Option<String> = cp.gtid.clone();
    loop {
        let pause = match out.end.is_some() && !in_txn {
            true => Duration::from_millis(20),
            false => Duration::from_secs(3600),
        };
        let wants = |db: &str, t: &str| follow.follows(db, t);
        let next = tokio::select! {
            c = reader.next_change(&wants) => Some(c),
            _ = tokio::time::sleep(pause) => None,
            _ = cancel.cancelled() => {
                // Whole transactions read so far go out; anything the sink
                // has not acknowledged is sent again next time.
                if out.end.is_some() {
                    let _ = out.flush(store, job, &mut cp).await;
                }
                stats.sample(&cp, &reader, rows).await;
                return Err(CdcError::Cancelled);
            }
        };
        // The stream paused with whole transactions waiting: send them.
        let Some(change) = next else {
            out.flush(store, job, &mut cp).await?;
            continue;
        };
        let mut end: Option<(BinlogPos, Option<String>)> = None;
        match change? {
            Change::Heartbeat { .. } => {
                if !in_txn && out.end.is_some() {
                    out.flush(store, job, &mut cp).await?;
                }
            }
            Change::Begin { xa, gtid } => {
                in_txn = true;
                txn_gtid = gtid;
                if xa {
                    xa_rows = Some(Vec::new());
                }
            }
            Change::Rows(r) => match xa_rows.as_mut() {
                Some(buf) => buf.push(r),
                None => {
                    rows += r.images.len() as u64;
                    live.limit.acquire(r.images.len() as u64).await;
                    let ctx = RecordContext {
                        job,
                        json: &json,
                        excluded: &excluded,
                        gtid: txn_gtid.as_deref(),
                    };
                    ctx.records(&mut metas, r, None, &mut txn);
                }
            },
            Change::Commit { end: e, gtid } => {
                in_txn = false;
                if let Some(buf) = xa_rows.take() {
                    let ctx = RecordContext {
                        job,
                        json: &json,
                        excluded: &excluded,
                        gtid: gtid.as_deref(),
                    };
                    for r in buf {
                        ctx.records(&mut metas, r, None, &mut txn);
                    }
                }
                end = Some((e, gtid));
            }
            Change::Rollback { .. } => {
                in_txn = false;
                xa_rows = None;
                txn.clear();
            }
            Change::XaPrepare { xid, end: e, gtid } => {
                in_txn = false;
                let buf = xa_rows.take().unwrap_or_default();
                store.put_xa(&job.name, &xid, &XaRows::from_rows(&buf))?;
                end = Some((e, gtid));
            }
            Change::XaEnd {
                xid,
                commit,
                end: e,
                gtid,
            } => {
                in_txn = false;
                if commit {
                    let Some(stored) = store.xa(&job.name, &xid)? else {
                        return Err(CdcError::XaUnknown {
                            xid,
                            at: e.to_string(),
                        });
                    };
                    let ctx = RecordContext {
                        job,
                        json: &json,
                        excluded: &excluded,
                        gtid: gtid.as_deref(),
                    };
                    for r in stored.into_rows() {
                        rows += r.images.len() as u64;
                        ctx.records(&mut metas, r, Some(&e), &mut txn);
                    }
                }
                out.xa_done.push((xid, e.clone()));
                end = Some((e, gtid));
            }
            Change::Query(q) => {
                let before = follow.ghosts().clone();
                let steps = follow.plan(&q);
                if *follow.ghosts() != before {
                    store.put_ghosts(&job.name, follow.ghosts())?;
                }
                if let Some(Step::Fail(why)) = steps.iter().find(|s| matches!(s, Step::Fail(_))) {
                    return Err(CdcError::Unsupported {
                        at: q.end.to_string(),
                        message: why.clone(),
                    });
                }
                let changed = steps.iter().any(Step::changes_target);
                for step in steps {
                    let (db, table, statement) = match step {
                        Step::Run {
                            source_db,
                            table,
                            source_sql,
                            ..
                        } => (source_db, table, source_sql),
                        Step::Copy { db, table } => (db, Some(table), q.statement.text.clone()),
                        Step::Skip(_) | Step::Fail(_) => continue,
                    };
                    if !spec.ddl {
                        continue;
                    }
                    let src = Source {
                        job: &job.name,
                        db: &db,
                        table: table.as_deref().unwrap_or(""),
                        file: &q.end.file,
                        pos: q.end.pos,
                        row: txn.len() as u32,
                        gtid: q.gtid.as_deref(),
                        server_id: q.server_id,
                        ts_ms: u64::from(q.context.timestamp) * 1000,
                        snapshot: false,
                    };
                    let payload =
                        event::encode("ddl", None, None, &src, now_ms(), Some(&statement));
                    txn.push(Record {
                        db: Arc::from(db.as_str()),
                        table: Arc::from("_ddl"),
                        key: None,
                        id: src.id(),
                        payload,
                    });
                }
                if changed {
                    // Column types may have changed.
                    json = json_columns(job, source).await?;
                    metas.clear();
                }
                if !q.in_txn {
                    end = Some((q.end.clone(), q.gtid.clone()));
                }
            }
        }
        if let Some(e) = end {
            out.bytes += txn.iter().map(|r| r.payload.len()).sum::<usize>();
            out.records.append(&mut txn);
            out.end = Some(e);
            if out.records.len() >= BATCH_EVENTS || out.bytes >= BATCH_BYTES {
                out.flush(store, job, &mut cp).await?;
            }
        }
        if stats.due() {
            stats.sample(&cp, &reader, rows).await;
        }
    }
}

/// What turning a rows event into records needs.
struct RecordContext<'a> {
    job: &'a JobSpec,
    json: &'a JsonColumns,
    excluded: &'a globset::GlobSet,
    /// The transaction's GTID.
    gtid: Option<&'a str>,
}

impl RecordContext<'_> {
    /// The records of one rows event; `at` overrides its position (an XA
    /// transaction's rows are sent at its commit).
    fn records(
        &self,
        metas: &mut MetaCache,
        r: Rows,
        at: Option<&BinlogPos>,
        out: &mut Vec<Record>,
    ) {
        let Some(first) = r.images.first() else {
            return;
        };
        let (db, table) = (r.table.db.clone(), r.table.name.clone());
        let meta = metas.get(&r.table, || {
            let cols = first.1.as_ref().or(first.0.as_ref());
            let names: Vec<String> = cols
                .map(|i| i.columns.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            let json_cols = self
                .json
                .get(&(db.to_string(), table.to_string()))
                .cloned()
                .unwrap_or_default();
            let prefix = format!("{db}.{table}.");
            TableMeta::new(&r.table, &names, &json_cols, &|c: &str| {
                self.excluded.is_match(format!("{prefix}{c}"))
            })
        });
        let op = match r.op {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
        };
        let pos = at.unwrap_or(&r.end);
        let now = now_ms();
        for (i, (before, after)) in r.images.into_iter().enumerate() {
            let src = Source {
                job: &self.job.name,
                db: &db,
                table: &table,
                file: &pos.file,
                pos: pos.pos,
                row: i as u32,
                gtid: self.gtid,
                server_id: r.server_id,
                ts_ms: u64::from(r.timestamp) * 1000,
                snapshot: false,
            };
            fn image<'a>(im: &'a Option<Image>, meta: &'a TableMeta) -> Option<event::RowRef<'a>> {
                im.as_ref().map(|im| event::RowRef {
                    columns: &im.columns,
                    values: &im.values,
                    meta,
                })
            }
            let key_of = image(&after, &meta)
                .or(image(&before, &meta))
                .and_then(event::key);
            let payload = event::encode(
                op,
                image(&before, &meta),
                image(&after, &meta),
                &src,
                now,
                None,
            );
            out.push(Record {
                db: db.clone(),
                table: table.clone(),
                key: key_of,
                id: src.id(),
                payload,
            });
        }
    }
}

/// Whole source transactions waiting for the sink, and what the sink has
/// acknowledged so far.
struct Outbox<'a> {
    sink: Sink,
    /// The sink, for status.
    what: String,
    state: &'a SinkState,
    records: Vec<Record>,
    bytes: usize,
    /// Where the last transaction in `records` ends.
    end: Option<(BinlogPos, Option<String>)>,
    delivered: u64,
    /// XA transactions resolved, kept in the state until checkpointed.
    xa_done: Vec<(String, BinlogPos)>,
}

impl Outbox<'_> {
    /// Sends the records; once the sink acknowledged them, checkpoints
    /// their end.
    async fn flush(
        &mut self,
        store: &Store,
        job: &JobSpec,
        cp: &mut Checkpoint,
    ) -> Result<(), CdcError> {
        self.sink.send(&self.records).await?;
        self.delivered += self.records.len() as u64;
        self.records.clear();
        self.bytes = 0;
        if let Some((pos, gtid)) = self.end.take() {
            cp.position = pos;
            cp.gtid = gtid;
            cp.unix_ms = now_ms();
            store.put_checkpoint(&job.name, cp)?;
            for (xid, _) in self.xa_done.iter().filter(|(_, end)| *end <= cp.position) {
                store.remove_xa(&job.name, xid)?;
            }
            self.xa_done.retain(|(_, end)| *end > cp.position);
        }
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
            "{}: ok, {} events delivered",
            self.what, self.delivered
        ));
        Ok(())
    }
}

/// Sends every selected row as an `r` event from one consistent snapshot;
/// returns the binlog position the snapshot corresponds to.
async fn snapshot(
    job: &JobSpec,
    source: &Connector,
    sink: &mut Sink,
    json: &JsonColumns,
    excluded: &globset::GlobSet,
    cancel: &CancellationToken,
    limit: &crate::full::RateLimit,
) -> Result<(BinlogPos, Option<String>), CdcError> {
    let catalog = Catalog::read(job, source).await?;
    let mut conn = source.connect().await?;
    let err = || source.query_err("opening a consistent snapshot");
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(err())?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(err())?;
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(err())?;
    let get = |n: &str| {
        status
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let at = match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
        (Some(file), Some(pos)) if !file.is_empty() => BinlogPos {
            file,
            pos: pos.parse().unwrap_or(4),
        },
        // MySQL has no snapshot position: the head now, after the snapshot
        // opened. Changes in between may be sent twice (at least once).
        _ => position::head(&mut conn, source).await?.0,
    };
    info!(at = %at, tables = catalog.tables.len(), "snapshot for the subscription");
    let mut row_no: u32 = 0;
    let mut batch = Vec::new();
    for t in &catalog.tables {
        let cols: Vec<String> = t.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "SELECT {} FROM {}",
            cols.join(", "),
            qualified(&t.db, &t.name)
        );
        let mut result = conn
            .exec_iter(sql, ())
            .await
            .map_err(source.query_err(format!("reading {} for the snapshot", t.id())))?;
        let columns: Vec<decode::ColumnInfo> = result
            .columns()
            .map(|cs| cs.iter().map(decode::ColumnInfo::from_column).collect())
            .unwrap_or_default();
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let json_cols = json
            .get(&(t.db.clone(), t.name.clone()))
            .cloned()
            .unwrap_or_default();
        let meta = TableMeta {
            json: names.iter().map(|c| json_cols.contains(c)).collect(),
            enums: vec![None; names.len()],
            sets: vec![None; names.len()],
            excluded: names
                .iter()
                .map(|c| excluded.is_match(format!("{}.{}.{c}", t.db, t.name)))
                .collect(),
        };
        // The catalog knows the primary key; a SELECT's metadata may not.
        let mut columns = columns;
        if let Some(k) = &t.key {
            for c in columns.iter_mut() {
                c.primary = k.index == "PRIMARY" && k.columns.contains(&c.name);
            }
        }
        let (snap_db, snap_table): (Arc<str>, Arc<str>) = (Arc::from(&*t.db), Arc::from(&*t.name));
        while let Some(row) = result
            .next()
            .await
            .map_err(source.query_err(format!("reading {} for the snapshot", t.id())))?
        {
            let values = row.unwrap();
            let src = Source {
                job: &job.name,
                db: &t.db,
                table: &t.name,
                file: &at.file,
                pos: at.pos,
                row: row_no,
                gtid: None,
                server_id: 0,
                ts_ms: now_ms(),
                snapshot: true,
            };
            row_no = row_no.wrapping_add(1);
            let after = event::RowRef {
                columns: &columns,
                values: &values,
                meta: &meta,
            };
            let key = event::key(after);
            let payload = event::encode("r", None, Some(after), &src, now_ms(), None);
            batch.push(Record {
                db: snap_db.clone(),
                table: snap_table.clone(),
                key,
                id: src.id(),
                payload,
            });
            if batch.len() >= BATCH_EVENTS {
                if cancel.is_cancelled() {
                    return Err(CdcError::Cancelled);
                }
                limit.acquire(batch.len() as u64).await;
                sink.send(&batch).await?;
                batch.clear();
            }
        }
    }
    limit.acquire(batch.len() as u64).await;
    sink.send(&batch).await?;
    let _ = conn.query_drop("COMMIT").await;
    let _ = conn.disconnect().await;
    Ok((at, None))
}
