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

use super::engine::TxnEnd;
use super::error::CdcError;
use super::event::{self, MetaCache, Source, TableMeta};
use super::follow::{Follow, Step};
use super::health::{Live, Stats};
use super::start::{server_id, start_position};
use crate::catalog::Catalog;
use crate::db::{qualified, quote_ident, Connector};
use crate::job::JobSpec;
use crate::model::BinlogPos;
use crate::model::{now_ms, Checkpoint};
use crate::sink::{Record, Sink};
use crate::source::binlog::{BinlogReader, Change, ChangeSource, Op, Query, Rows, Start};
use crate::source::decode::{self as decode, Image};
use crate::source::position;
use crate::state::Store;

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
    let sink = Sink::open(&spec.kind).await?;
    let what = sink.describe();
    *sink_state.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{what}: connected"));
    let json = json_columns(job, source).await?;
    let mut out = Outbox {
        sink,
        what,
        state: sink_state,
        delivered: 0,
    };
    let mut cp = match store.checkpoint(&job.name)? {
        Some(cp) => cp,
        None => {
            let (position, gtid) = match spec.snapshot {
                true => {
                    let excluded = exclusions(job);
                    snapshot(
                        job,
                        source,
                        &mut out.sink,
                        &json,
                        &excluded,
                        &cancel,
                        live.limit,
                    )
                    .await?
                }
                false => start_position(job, source).await?,
            };
            let cp = Checkpoint::start(position, gtid);
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
    live.observer.say(
        &job.name,
        &format!(
            "streaming changes to {} from {start} (SIGINT/SIGTERM stops)",
            out.what
        ),
    );
    let mut batch = Batch::new(job, store, json, cp.gtid.clone())?;
    let mut stats = Stats::new(store, job, source, live.source);
    loop {
        let pause = match batch.sendable() {
            true => Duration::from_millis(20),
            false => Duration::from_secs(3600),
        };
        let wants = |db: &str, t: &str| batch.follow.follows(db, t);
        let next = tokio::select! {
            c = reader.next_change(&wants) => Some(c),
            _ = tokio::time::sleep(pause) => None,
            _ = cancel.cancelled() => {
                // Whole transactions read so far go out; anything the sink
                // has not acknowledged is sent again next time.
                if batch.sendable() {
                    let _ = out.flush(&mut batch, &mut cp).await;
                }
                stats.sample(&cp, &reader, batch.rows).await;
                return Err(CdcError::Cancelled);
            }
        };
        match next {
            // The stream paused with whole transactions waiting: send them.
            None => out.flush(&mut batch, &mut cp).await?,
            Some(change) => {
                let change = change?;
                let heartbeat = matches!(change, Change::Heartbeat { .. });
                if let Change::Rows(r) = &change {
                    live.limit.acquire(r.images.len() as u64).await;
                }
                batch.handle(change)?;
                if batch.reload {
                    // Column types may have changed.
                    batch.json = json_columns(job, source).await?;
                    batch.reload = false;
                }
                if batch.full() || (heartbeat && batch.sendable()) {
                    out.flush(&mut batch, &mut cp).await?;
                }
            }
        }
        if stats.due() {
            stats.sample(&cp, &reader, batch.rows).await;
        }
    }
}

/// The subscription's change events, batched for the sink in whole source
/// transactions: it turns the reader's changes into records and knows
/// nothing of the network, so a list of changes can drive it in a test.
struct Batch<'a> {
    job: &'a JobSpec,
    store: &'a Store,
    json: JsonColumns,
    excluded: globset::GlobSet,
    follow: Follow,
    metas: MetaCache,
    /// The JSON columns must be read again (a statement changed a table).
    reload: bool,
    /// Row changes read.
    rows: u64,
    in_txn: bool,
    /// The GTID of the open transaction.
    txn_gtid: Option<String>,
    /// Events of the open transaction.
    txn: Vec<Record>,
    /// Rows of an open XA transaction: sent only if it commits.
    xa_rows: Option<Vec<Rows>>,
    /// Whole transactions waiting for the sink.
    records: Vec<Record>,
    bytes: usize,
    /// Where the last transaction in `records` ends.
    end: Option<TxnEnd>,
    /// XA transactions resolved, kept in the state until checkpointed.
    xa_done: Vec<(String, BinlogPos)>,
}

impl<'a> Batch<'a> {
    fn new(
        job: &'a JobSpec,
        store: &'a Store,
        json: JsonColumns,
        gtid: Option<String>,
    ) -> Result<Batch<'a>, CdcError> {
        Ok(Batch {
            job,
            store,
            json,
            excluded: exclusions(job),
            follow: Follow::new(job, store.ghosts(&job.name)?),
            metas: MetaCache::default(),
            reload: false,
            rows: 0,
            in_txn: false,
            txn_gtid: gtid,
            txn: Vec::new(),
            xa_rows: None,
            records: Vec::new(),
            bytes: 0,
            end: None,
            xa_done: Vec::new(),
        })
    }

    /// Whole transactions are waiting and none is open: worth sending.
    fn sendable(&self) -> bool {
        self.end.is_some() && !self.in_txn
    }

    /// Enough is waiting to send at once.
    fn full(&self) -> bool {
        self.end.is_some() && (self.records.len() >= BATCH_EVENTS || self.bytes >= BATCH_BYTES)
    }

    fn handle(&mut self, change: Change) -> Result<(), CdcError> {
        let job = &self.job.name;
        let end = match change {
            Change::Heartbeat { .. } => None,
            Change::Begin { xa, gtid } => {
                self.in_txn = true;
                self.txn_gtid = gtid;
                if xa {
                    self.xa_rows = Some(Vec::new());
                }
                None
            }
            Change::Rows(r) => {
                match self.xa_rows.as_mut() {
                    Some(buf) => buf.push(r),
                    None => {
                        self.rows += r.images.len() as u64;
                        let gtid = self.txn_gtid.clone();
                        self.records_of(r, None, gtid.as_deref());
                    }
                }
                None
            }
            Change::Commit { end, gtid } => {
                for r in self.xa_rows.take().unwrap_or_default() {
                    self.rows += r.images.len() as u64;
                    self.records_of(r, None, gtid.as_deref());
                }
                Some((end, gtid))
            }
            Change::Rollback { .. } => {
                self.in_txn = false;
                self.xa_rows = None;
                self.txn.clear();
                None
            }
            Change::XaPrepare { xid, end, gtid } => {
                let buf = self.xa_rows.take().unwrap_or_default();
                self.store.put_xa(job, &xid, &super::xa::stash(&buf))?;
                Some((end, gtid))
            }
            Change::XaEnd {
                xid,
                commit,
                end,
                gtid,
            } => {
                if commit {
                    let stored = super::xa::prepared_xa(self.store, job, &xid, &end)?;
                    for r in super::xa::unstash(stored) {
                        self.rows += r.images.len() as u64;
                        self.records_of(r, Some(&end), gtid.as_deref());
                    }
                }
                self.xa_done.push((xid, end.clone()));
                Some((end, gtid))
            }
            Change::Query(q) => {
                self.query(&q)?;
                (!q.in_txn).then(|| (q.end.clone(), q.gtid.clone()))
            }
        };
        if let Some(e) = end {
            // A transaction (or a statement outside one) ended.
            self.in_txn = false;
            self.bytes += self.txn.iter().map(|r| r.payload.len()).sum::<usize>();
            self.records.append(&mut self.txn);
            self.end = Some(e);
        }
        Ok(())
    }

    /// A statement: followed tables and ghosts updated, a `ddl` event for
    /// each selected table it changes when `[sink] ddl` asks for them.
    fn query(&mut self, q: &Query) -> Result<(), CdcError> {
        let before = self.follow.ghosts().clone();
        let steps = self.follow.plan(q);
        if *self.follow.ghosts() != before {
            self.store
                .put_ghosts(&self.job.name, self.follow.ghosts())?;
        }
        if let Some(Step::Fail(why)) = steps.iter().find(|s| matches!(s, Step::Fail(_))) {
            return Err(CdcError::Unsupported {
                at: q.end.to_string(),
                message: why.clone(),
            });
        }
        self.reload |= steps.iter().any(Step::changes_target);
        if !self.job.sink.as_ref().is_some_and(|s| s.ddl) {
            return Ok(());
        }
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
            let src = Source {
                job: &self.job.name,
                db: &db,
                table: table.as_deref().unwrap_or(""),
                file: &q.end.file,
                pos: q.end.pos,
                row: self.txn.len() as u64,
                gtid: q.gtid.as_deref(),
                server_id: q.server_id,
                ts_ms: u64::from(q.context.timestamp) * 1000,
                snapshot: false,
            };
            let payload = event::encode("ddl", None, None, &src, now_ms(), Some(&statement));
            self.txn.push(Record {
                db: Arc::from(db.as_str()),
                table: Arc::from("_ddl"),
                key: None,
                id: src.id(),
                payload,
            });
        }
        Ok(())
    }

    /// The records of one rows event, added to the open transaction; `at`
    /// overrides its position (an XA transaction's rows are sent at its
    /// commit), `gtid` is its transaction's.
    fn records_of(&mut self, r: Rows, at: Option<&BinlogPos>, gtid: Option<&str>) {
        let Some(first) = r.images.first() else {
            return;
        };
        let (db, table) = (r.table.db.clone(), r.table.name.clone());
        let (json, excluded) = (&self.json, &self.excluded);
        let meta = self.metas.get(&r.table, || {
            let cols = first.1.as_ref().or(first.0.as_ref());
            let names: Vec<String> = cols
                .map(|i| i.columns.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            let json_cols = json
                .get(&(db.to_string(), table.to_string()))
                .cloned()
                .unwrap_or_default();
            let prefix = format!("{db}.{table}.");
            TableMeta::new(&r.table, &names, &json_cols, &|c: &str| {
                excluded.is_match(format!("{prefix}{c}"))
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
                row: i as u64,
                gtid,
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
            self.txn.push(Record {
                db: db.clone(),
                table: table.clone(),
                key: key_of,
                id: src.id(),
                payload,
            });
        }
    }
}

/// The sink and what it has acknowledged so far.
struct Outbox<'a> {
    sink: Sink,
    /// The sink, for status.
    what: String,
    state: &'a SinkState,
    delivered: u64,
}

impl Outbox<'_> {
    /// Sends the batch's whole transactions; once the sink acknowledged
    /// them, checkpoints their end.
    async fn flush(&mut self, batch: &mut Batch<'_>, cp: &mut Checkpoint) -> Result<(), CdcError> {
        self.sink.send(&batch.records).await?;
        self.delivered += batch.records.len() as u64;
        batch.records.clear();
        batch.bytes = 0;
        if let Some((pos, gtid)) = batch.end.take() {
            cp.position = pos;
            cp.gtid = gtid;
            cp.unix_ms = now_ms();
            let (store, job) = (batch.store, &batch.job.name);
            store.put_checkpoint(job, cp)?;
            for (xid, _) in batch.xa_done.iter().filter(|(_, end)| *end <= cp.position) {
                store.remove_xa(job, xid)?;
            }
            batch.xa_done.retain(|(_, end)| *end > cp.position);
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
    limit: &crate::model::RateLimit,
) -> Result<(BinlogPos, Option<String>), CdcError> {
    let catalog = Catalog::read(job, source).await?;
    let mut conn = source.connect().await?;
    let err = || source.query_err("opening a consistent snapshot");
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(err())?;
    let at = match position::snapshot(source, &mut conn).await? {
        Some(at) => at,
        // MySQL has no snapshot position: the head now, after the snapshot
        // opened. Changes in between may be sent twice (at least once).
        None => position::head(&mut conn, source).await?.0,
    };
    info!(at = %at, tables = catalog.tables.len(), "snapshot for the subscription");
    let mut row_no: u64 = 0;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::testkit::{self, *};

    fn job(dir: &std::path::Path) -> JobSpec {
        testkit::job(
            "subscribe",
            &format!(
                "[[select]]\ndatabase = \"shop\"\ntables = [\"t\"]\n\
                 [sink]\nkind = \"jsonl\"\npath = \"{}\"\nddl = true\n",
                dir.join("events.jsonl").display()
            ),
        )
    }

    /// The events in the sink's file: `op`, the row's `id` (or the
    /// statement) and the position the event names.
    fn delivered(dir: &std::path::Path) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                let what = match v["op"].as_str() {
                    Some("ddl") => v["ddl"].to_string(),
                    _ => v["after"]["id"].to_string(),
                };
                format!(
                    "{} {what} @{}",
                    v["op"].as_str().unwrap_or("?"),
                    v["source"]["pos"]
                )
            })
            .collect()
    }

    struct Fixture<'a> {
        batch: Batch<'a>,
        out: Outbox<'a>,
        cp: Checkpoint,
    }

    impl<'a> Fixture<'a> {
        async fn new(job: &'a JobSpec, store: &'a Store, state: &'a SinkState) -> Fixture<'a> {
            let sink = Sink::open(&job.sink.as_ref().expect("sink").kind)
                .await
                .expect("sink");
            Fixture {
                batch: Batch::new(job, store, JsonColumns::new(), None).expect("batch"),
                out: Outbox {
                    sink,
                    what: "jsonl".into(),
                    state,
                    delivered: 0,
                },
                cp: cp(),
            }
        }

        fn feed(&mut self, changes: Vec<Change>) {
            for c in changes {
                self.batch.handle(c).expect("handled");
            }
        }

        async fn flush(&mut self) {
            self.out
                .flush(&mut self.batch, &mut self.cp)
                .await
                .expect("flushed");
        }
    }

    #[tokio::test]
    async fn only_whole_transactions_are_sent_and_the_checkpoint_follows_the_sink() {
        let (dir, store) = store();
        let job = job(dir.path());
        let state = SinkState::default();
        let mut f = Fixture::new(&job, &store, &state).await;
        f.feed(vec![begin(), insert("t", 1, 100), commit(120), begin()]);
        assert!(!f.batch.sendable(), "a transaction is open");
        f.feed(vec![insert("t", 2, 130)]);
        // Sent now (the stream stopped), only the committed transaction goes.
        f.flush().await;
        assert_eq!(delivered(dir.path()), vec!["c 1 @100"]);
        assert_eq!(f.cp.position, pos(120));
        assert_eq!(store.checkpoint("j").unwrap().unwrap().position, pos(120));
        f.feed(vec![Change::Rollback { end: pos(140) }]);
        assert!(!f.batch.sendable());
        f.flush().await;
        assert_eq!(delivered(dir.path()).len(), 1, "rolled back: nothing");
        assert_eq!(f.cp.position, pos(120));
        // Statements: an event for the selected table, none for another
        // one, and the checkpoint moves past both.
        f.feed(vec![
            ddl("ALTER TABLE t ADD c INT", 150),
            ddl("DROP TABLE other", 160),
        ]);
        assert!(f.batch.sendable());
        assert!(f.batch.reload, "column types are read again after an ALTER");
        f.flush().await;
        assert_eq!(
            delivered(dir.path()),
            vec!["c 1 @100", "ddl \"ALTER TABLE t ADD c INT\" @150"]
        );
        assert_eq!(f.cp.position, pos(160));
        assert_eq!(f.out.delivered, 2);
        assert!(
            state.lock().unwrap().as_deref() == Some("jsonl: ok, 2 events delivered"),
            "{state:?}"
        );
    }

    #[tokio::test]
    async fn xa_transactions_are_sent_at_their_commit_and_only_if_they_commit() {
        let (dir, store) = store();
        let job = job(dir.path());
        let state = SinkState::default();
        let mut f = Fixture::new(&job, &store, &state).await;
        let mut changes = xa_prepared("X'01',X'',1", 1, 100);
        changes.extend(xa_prepared("X'02',X'',1", 2, 200));
        changes.extend([begin(), insert("t", 3, 300), commit(310)]);
        f.feed(changes);
        f.flush().await;
        assert_eq!(delivered(dir.path()), vec!["c 3 @300"]);
        // The prepared transactions survive a restart in the state.
        assert!(store.xa("j", "X'01',X'',1").unwrap().is_some());
        f.feed(vec![
            xa_end("X'01',X'',1", false, 400),
            xa_end("X'02',X'',1", true, 500),
        ]);
        assert!(
            store.xa("j", "X'02',X'',1").unwrap().is_some(),
            "kept until the sink has it"
        );
        f.flush().await;
        assert_eq!(delivered(dir.path()), vec!["c 3 @300", "c 2 @500"]);
        assert_eq!(f.cp.position, pos(500));
        assert!(store.xa("j", "X'01',X'',1").unwrap().is_none());
        assert!(store.xa("j", "X'02',X'',1").unwrap().is_none());
        // The commit of a transaction prepared before the job started.
        let err = f
            .batch
            .handle(xa_end("X'03',X'',1", true, 600))
            .expect_err("unknown XA");
        assert!(err.to_string().contains("X'03'"), "{err}");
    }

    #[tokio::test]
    async fn a_batch_is_full_only_at_a_transaction_end() {
        let (dir, store) = store();
        let job = job(dir.path());
        let state = SinkState::default();
        let mut f = Fixture::new(&job, &store, &state).await;
        f.feed(vec![begin()]);
        for i in 0..BATCH_EVENTS as i64 {
            f.feed(vec![insert("t", i, 100 + i as u64)]);
        }
        assert!(!f.batch.full(), "an open transaction is never split");
        f.feed(vec![commit(100 + BATCH_EVENTS as u64)]);
        assert!(f.batch.full());
        f.flush().await;
        assert!(!f.batch.full() && !f.batch.sendable());
        assert_eq!(delivered(dir.path()).len(), BATCH_EVENTS);
        assert_eq!(f.batch.rows, BATCH_EVENTS as u64);
    }
}
