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

use futures_util::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::*;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::event::{self, MetaCache, Source, TableMeta};
use super::{
    decode, decode_rows, mariadb_gtid, open_stream, position, rotated_file, selected, server_id,
    start_position, stream_error, uuid_text, BinlogPos, CdcError, Live, Stats,
};
use crate::catalog::Catalog;
use crate::db::{qualified, quote_ident, Connector};
use crate::job::JobSpec;
use crate::sink::{Record, Sink};
use crate::state::{now_ms, Checkpoint, Store};

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
        if selected(job, &db, &table).is_none() {
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
        return Err(CdcError::Stream {
            at: "start".into(),
            source: mysql_async::Error::Other("a subscribe job needs a [sink]".into()),
        });
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
    let (mut stream, checksum) = open_stream(job, source, &start, cp.gtid.as_deref()).await?;
    crate::progress::say(format!(
        "{}: streaming changes to {what} from {start} (SIGINT/SIGTERM stops)",
        job.name
    ));
    let mut file = start.file.clone();
    let mut seen_fde = false;
    let mut gtid: Option<String> = cp.gtid.clone();
    let mut in_txn = false;
    let mut stats = Stats::new();
    let mut metas = MetaCache::default();
    let mut tables: HashMap<u64, (Arc<str>, Arc<str>, bool)> = HashMap::new();
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
    };
    loop {
        let pause = match out.end.is_some() && !in_txn {
            true => Duration::from_millis(20),
            false => Duration::from_secs(3600),
        };
        let next = tokio::select! {
            ev = stream.next() => match ev {
                Some(ev) => Some(ev),
                None => return Err(CdcError::StreamEnded { at: cp.position.to_string() }),
            },
            _ = tokio::time::sleep(pause) => None,
            _ = cancel.cancelled() => {
                // Whole transactions read so far go out; anything the sink
                // has not acknowledged is sent again next time.
                if out.end.is_some() {
                    let _ = out.flush(store, job, &mut cp).await;
                }
                stats.sample(store, job, &cp, source, live.source).await;
                return Err(CdcError::Cancelled);
            }
        };
        // The stream paused with whole transactions waiting: send them.
        let Some(ev) = next else {
            out.flush(store, job, &mut cp).await?;
            continue;
        };
        let ev = ev.map_err(|e| stream_error(&cp.position, server_id(job), e))?;
        let header = ev.header();
        stats.event(header.timestamp(), header.event_type_raw() == 27);
        let end = u64::from(header.log_pos());
        match header.event_type_raw() {
            162 => {
                if let Some((g, standalone)) = mariadb_gtid(header.server_id(), ev.data()) {
                    gtid = Some(g);
                    in_txn = !standalone;
                }
                continue;
            }
            160..=171 => continue,
            27 => {
                if !in_txn && out.end.is_some() {
                    out.flush(store, job, &mut cp).await?;
                }
                if stats.due() {
                    stats.sample(store, job, &cp, source, live.source).await;
                }
                continue;
            }
            _ => {}
        }
        let data = match ev.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                return Err(CdcError::Stream {
                    at: pos_at(&file, end).to_string(),
                    source: mysql_async::Error::Other(format!("undecodable event: {e}").into()),
                })
            }
        };
        let mut commit = false;
        match data {
            EventData::RotateEvent(r) => {
                file = rotated_file(&r, header.log_pos(), seen_fde, checksum)
            }
            EventData::FormatDescriptionEvent(_) => seen_fde = true,
            EventData::GtidEvent(g) => {
                gtid = Some(format!("{}:{}", uuid_text(&g.sid()), g.gno()));
                in_txn = false;
            }
            EventData::QueryEvent(q) => match q.query().trim() {
                "BEGIN" => in_txn = true,
                "COMMIT" => commit = true,
                statement => {
                    let schema = q.schema().into_owned();
                    let ddl_db = ddl_database(job, &schema, statement);
                    if let (true, Some(schema)) = (spec.ddl, ddl_db) {
                        let src = Source {
                            job: &job.name,
                            db: schema,
                            table: "",
                            file: &file,
                            pos: end,
                            row: 0,
                            gtid: gtid.as_deref(),
                            server_id: header.server_id(),
                            ts_ms: u64::from(header.timestamp()) * 1000,
                            snapshot: false,
                        };
                        let payload =
                            event::encode("ddl", None, None, &src, now_ms(), Some(statement));
                        txn.push(Record {
                            db: Arc::from(schema),
                            table: Arc::from("_ddl"),
                            key: None,
                            id: src.id(),
                            payload,
                        });
                    }
                    // Column types may have changed.
                    json = json_columns(job, source).await?;
                    commit = !in_txn;
                }
            },
            EventData::XidEvent(_) => commit = true,
            EventData::RowsEvent(rows) => {
                let Some(tme) = stream.get_tme(rows.table_id()) else {
                    return Err(CdcError::Stream {
                        at: pos_at(&file, end).to_string(),
                        source: mysql_async::Error::Other(
                            format!(
                                "rows event for table id {} without its TABLE_MAP",
                                rows.table_id()
                            )
                            .into(),
                        ),
                    });
                };
                // Per TABLE_MAP id: the names (shared by every record)
                // and whether the job selects the table.
                let (db, table) = {
                    let (d, t) = (tme.database_name(), tme.table_name());
                    match tables.get(&tme.table_id()) {
                        Some((db, table, _)) if **db == *d && **table == *t => {}
                        _ => {
                            let wanted = selected(job, &d, &t).is_some();
                            tables.insert(tme.table_id(), (Arc::from(&*d), Arc::from(&*t), wanted));
                        }
                    }
                    match &tables[&tme.table_id()] {
                        (db, table, true) => (db.clone(), table.clone()),
                        _ => continue,
                    }
                };
                let op = match rows {
                    RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => "c",
                    RowsEventData::UpdateRowsEvent(_)
                    | RowsEventData::UpdateRowsEventV1(_)
                    | RowsEventData::PartialUpdateRowsEvent(_) => "u",
                    RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => "d",
                };
                let images = decode_rows(&rows, tme, &pos_at(&file, end))?;
                let Some(first) = images.first() else {
                    continue;
                };
                let meta = metas.get(tme, || {
                    let cols = first.1.as_ref().or(first.0.as_ref());
                    let names: Vec<String> = cols
                        .map(|i| i.columns.iter().map(|c| c.name.clone()).collect())
                        .unwrap_or_default();
                    let json_cols = json
                        .get(&(db.to_string(), table.to_string()))
                        .cloned()
                        .unwrap_or_default();
                    let prefix = format!("{db}.{table}.");
                    TableMeta::from_table_map(tme, &names, &json_cols, &|c: &str| {
                        excluded.is_match(format!("{prefix}{c}"))
                    })
                });
                stats.rows += images.len() as u64;
                live.limit.acquire(images.len() as u64).await;
                let now = now_ms();
                for (i, (before, after)) in images.into_iter().enumerate() {
                    let src = Source {
                        job: &job.name,
                        db: &db,
                        table: &table,
                        file: &file,
                        pos: end,
                        row: i as u32,
                        gtid: gtid.as_deref(),
                        server_id: header.server_id(),
                        ts_ms: u64::from(header.timestamp()) * 1000,
                        snapshot: false,
                    };
                    fn image<'a>(
                        im: &'a Option<super::apply::Image>,
                        meta: &'a TableMeta,
                    ) -> Option<event::RowRef<'a>> {
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
                    txn.push(Record {
                        db: db.clone(),
                        table: table.clone(),
                        key: key_of,
                        id: src.id(),
                        payload,
                    });
                }
            }
            _ => {}
        }
        if commit {
            in_txn = false;
            out.bytes += txn.iter().map(|r| r.payload.len()).sum::<usize>();
            out.records.append(&mut txn);
            out.end = Some((pos_at(&file, end), gtid.clone()));
            if out.records.len() >= BATCH_EVENTS || out.bytes >= BATCH_BYTES {
                out.flush(store, job, &mut cp).await?;
            }
        }
        if stats.due() {
            stats.sample(store, job, &cp, source, live.source).await;
        }
    }
}

/// The selected database a statement ran in or names (`db.` or
/// `` `db`. ``), if any.
fn ddl_database<'j>(job: &'j JobSpec, schema: &str, statement: &str) -> Option<&'j str> {
    let names = |db: &str| {
        statement.contains(&format!("`{db}`.")) || {
            let needle = format!("{db}.");
            statement.match_indices(&needle).any(|(i, _)| {
                statement[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '$'))
            })
        }
    };
    job.select
        .iter()
        .find(|s| s.database == schema || names(&s.database))
        .map(|s| s.database.as_str())
}

fn pos_at(file: &str, pos: u64) -> BinlogPos {
    BinlogPos {
        file: file.to_string(),
        pos,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_is_matched_to_a_selected_database() {
        let job = crate::job::parse_job(
            "t.toml",
            "name = \"s\"\nmode = \"subscribe\"\n[source]\nhost = \"h\"\nport = 1\nuser = \"u\"\n\
             password_env = \"P\"\n[[select]]\ndatabase = \"shop\"\n[sink]\nkind = \"jsonl\"\npath = \"-\"\n",
        )
        .expect("job");
        assert_eq!(
            ddl_database(&job, "shop", "ALTER TABLE t ADD c INT"),
            Some("shop")
        );
        assert_eq!(
            ddl_database(&job, "", "ALTER TABLE shop.t ADD c INT"),
            Some("shop")
        );
        assert_eq!(
            ddl_database(&job, "", "ALTER TABLE `shop`.t ADD c INT"),
            Some("shop")
        );
        assert_eq!(
            ddl_database(&job, "", "ALTER TABLE myshop.t ADD c INT"),
            None
        );
        assert_eq!(ddl_database(&job, "other", "CREATE TABLE x (a INT)"), None);
    }
}
