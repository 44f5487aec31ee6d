//! Applying decoded row changes to the target.
//!
//! Changes go to the target over one or more *lanes*, each a connection
//! with its own row in `ferry_meta.checkpoints` (its *marker*), written in
//! the same target transaction as the changes it covers. With one lane,
//! source transactions are applied atomically and in commit order. With
//! `[cdc] threads = N`, rows are spread over N lanes by a pure function of
//! the row (the hash of its primary key; one lane per table for tables
//! without a key or with a unique secondary key; one lane per group of
//! tables linked by foreign keys), so the changes of one row stay in order.
//!
//! Batches are pipelined: a lane sends its batch and the stream goes on
//! decoding the next one while the target executes it. A group of source
//! transactions counts as committed (and may be checkpointed in redb) only
//! once every lane has committed its part.
//!
//! Restart: the stream resumes at a transaction boundary every lane has
//! passed, and each lane skips the events at or before its own marker, so
//! nothing is applied twice, in keyless tables neither.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::decode::{self, ColumnInfo, DecodeError};
use super::{BinlogPos, CdcError};
use crate::catalog::ColumnKind;
use crate::db::{qualified, quote_ident, Connector, DbError};
use crate::job::JobSpec;
use crate::sql;

/// The kind of a rows event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

/// One row image: the columns the TABLE_MAP described, and their values.
#[derive(Debug, Clone)]
pub struct Image {
    pub columns: Arc<[ColumnInfo]>,
    pub values: Vec<Value>,
}

impl Image {
    pub fn from_row(columns: &Arc<[ColumnInfo]>, row: BinlogRow) -> Result<Image, DecodeError> {
        let mut values = Vec::with_capacity(columns.len());
        for (col, v) in columns.iter().zip(row.unwrap()) {
            values.push(decode::value(col, v)?);
        }
        Ok(Image {
            columns: columns.clone(),
            values,
        })
    }

    fn keyed(&self) -> bool {
        self.columns.iter().any(|c| c.primary)
    }
}

/// The end of a source transaction: its position and GTID.
pub type TxnEnd = (BinlogPos, Option<String>);

const MARKER_DDL: &str = "CREATE TABLE IF NOT EXISTS ferry_meta.checkpoints (\
    job VARCHAR(64) NOT NULL PRIMARY KEY, \
    binlog_file VARCHAR(512) NOT NULL, \
    binlog_pos BIGINT UNSIGNED NOT NULL, \
    gtid VARCHAR(4096) NULL, \
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))";

/// The most lanes a job may have (`[cdc] threads` is validated to it).
const MAX_LANES: usize = 64;

/// How the rows of a table are spread over the lanes.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// By the hash of the primary key.
    ByKey,
    /// All on one lane.
    Lane(usize),
}

/// A batch sent to the target and not yet known to have succeeded.
struct Inflight {
    task: JoinHandle<(Conn, Result<(), DbError>)>,
    /// Position of the changes it carries, for errors.
    at: String,
}

/// One connection to the target and the statements queued for it.
struct Lane {
    /// Its row in `ferry_meta.checkpoints`.
    key: String,
    conn: Option<Conn>,
    inflight: Option<Inflight>,
    /// Statements of the open transaction not sent yet.
    pending: String,
    in_txn: bool,
    /// A marker is due although no transaction is open (after DDL).
    dirty: bool,
    /// Events at or before this position were applied by this lane before
    /// a restart.
    skip_until: Option<BinlogPos>,
    /// Position of the newest change queued (for errors).
    at: String,
}

/// Applies changes to the target.
pub struct Applier {
    target: Connector,
    /// Compound statements (MariaDB's `BEGIN NOT ATOMIC`): a batch costs
    /// the server one parse and one reply instead of one per statement.
    compound: bool,
    lanes: Vec<Lane>,
    /// For reading the target's catalog while lanes are busy.
    meta: Conn,
    generated: HashMap<(String, String), Arc<HashSet<String>>>,
    routes: HashMap<(String, String), Route>,
    /// Target table → the group of tables linked to it by foreign keys.
    fk_groups: Option<HashMap<(String, String), String>>,
    /// Collation id → charset name on the target.
    charsets: HashMap<u16, String>,
    /// A group end dispatched to the lanes, committed once they settle.
    dispatched: Option<TxnEnd>,
    /// The newest group end every lane has committed, not yet taken.
    committed: Option<TxnEnd>,
}

fn lane_key(job: &str, i: usize) -> String {
    if i == 0 {
        job.to_string()
    } else {
        format!("{job}#{i}")
    }
}

fn lock_name(job: &str, i: usize) -> String {
    format!("ferry:{}", lane_key(job, i))
        .chars()
        .take(64)
        .collect()
}

/// Takes lane `i`'s named lock on `conn`, waiting up to `secs`.
async fn take_lock(
    conn: &mut Conn,
    target: &Connector,
    job: &str,
    i: usize,
    secs: u32,
) -> Result<(), CdcError> {
    let got: Option<i64> = conn
        .exec_first("SELECT GET_LOCK(?, ?)", (lock_name(job, i), secs))
        .await
        .map_err(target.query_err("taking the job's apply lock"))?;
    if got != Some(1) {
        return Err(CdcError::TargetBusy(job.to_string()));
    }
    Ok(())
}

impl Applier {
    /// Connects the lanes. `start` is the redb checkpoint; it moves forward
    /// when the target's markers show that every lane is past it.
    pub async fn open(
        job: &JobSpec,
        target: &Connector,
        start: &mut TxnEnd,
    ) -> Result<Applier, CdcError> {
        let mut meta = target.connect().await?;
        for sql in ["CREATE DATABASE IF NOT EXISTS ferry_meta", MARKER_DDL] {
            meta.query_drop(sql)
                .await
                .map_err(target.query_err("creating ferry_meta.checkpoints"))?;
        }
        // A session of a killed Ferry may still be executing its last
        // batch (the server notices that the client is gone only after
        // it); reading the markers before it ends would apply that batch
        // twice. Each lane's session holds a named lock, released when it
        // ends: wait for all of them.
        for i in 0..MAX_LANES {
            take_lock(&mut meta, target, &job.name, i, 120).await?;
        }
        meta.query_drop("DO RELEASE_ALL_LOCKS()")
            .await
            .map_err(target.query_err("releasing apply locks"))?;

        let markers = read_markers(&mut meta, target, &job.name).await?;
        let old_lanes = markers.keys().max().map_or(0, |m| m + 1);
        // Every lane of the last run is past the lowest marker.
        if old_lanes > 0 && markers.len() == old_lanes {
            if let Some(low) = markers.values().min_by(|a, b| a.0.cmp(&b.0)) {
                if low.0 > start.0 {
                    info!(checkpoint = %start.0, target = %low.0, "the target is ahead of the checkpoint");
                    *start = low.clone();
                }
            }
        }
        let mut lanes = job.cdc.threads.clamp(1, MAX_LANES);
        let ahead = markers.values().any(|m| m.0 > start.0);
        if old_lanes > 0 && old_lanes != lanes {
            if ahead {
                warn!(
                    threads = lanes,
                    old = old_lanes,
                    "the last run stopped abruptly with {old_lanes} apply threads; keeping them \
                     for this run, the new count applies from the next start"
                );
                lanes = old_lanes;
            } else {
                meta.exec_drop(
                    "DELETE FROM ferry_meta.checkpoints WHERE job LIKE ?",
                    (format!("{}#%", job.name),),
                )
                .await
                .map_err(target.query_err("clearing old lane markers"))?;
            }
        }

        let version: Option<String> = meta
            .query_first("SELECT VERSION()")
            .await
            .map_err(target.query_err("reading the target version"))?;
        let compound = version.is_some_and(|v| v.contains("MariaDB"));
        // Some collations (MariaDB's uca1400 family) have no id or charset.
        let rows: Vec<(Option<u64>, Option<String>)> = meta
            .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
            .await
            .map_err(target.query_err("reading collations"))?;
        let charsets = rows
            .into_iter()
            .filter_map(|(id, cs)| Some((id? as u16, cs?)))
            .collect();

        let mut out = Vec::with_capacity(lanes);
        for i in 0..lanes {
            let mut conn = target.connect().await?;
            // The binlog does not hold rows changed by ON UPDATE/DELETE
            // CASCADE: the target's own foreign keys must cascade them.
            // Rows are found by key: no gap locks needed between lanes.
            for sql in [
                "SET SESSION foreign_key_checks = 1",
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            ] {
                conn.query_drop(sql)
                    .await
                    .map_err(target.query_err("preparing an apply session"))?;
            }
            take_lock(&mut conn, target, &job.name, i, 10).await?;
            out.push(Lane {
                key: lane_key(&job.name, i),
                conn: Some(conn),
                inflight: None,
                pending: String::new(),
                in_txn: false,
                dirty: false,
                skip_until: markers.get(&i).map(|m| m.0.clone()),
                at: String::new(),
            });
        }
        if lanes > 1 {
            info!(lanes, "parallel apply by key hash");
        }
        Ok(Applier {
            target: target.clone(),
            compound,
            lanes: out,
            meta,
            generated: HashMap::new(),
            routes: HashMap::new(),
            fk_groups: None,
            charsets,
            dispatched: None,
            committed: None,
        })
    }

    /// The newest transaction end every lane has committed since the last
    /// call: what may be checkpointed in redb.
    pub fn take_committed(&mut self) -> Option<TxnEnd> {
        self.committed.take()
    }

    /// Bytes of statements queued and not sent yet.
    pub fn queued_bytes(&self) -> usize {
        self.lanes.iter().map(|l| l.pending.len()).sum()
    }

    /// Whether batches are in flight.
    pub fn busy(&self) -> bool {
        self.lanes.iter().any(|l| l.inflight.is_some())
    }

    /// Waits for every batch in flight. Cancel-safe: a batch stays in
    /// flight until it has finished.
    pub async fn settle(&mut self) -> Result<(), CdcError> {
        for lane in &mut self.lanes {
            lane.settle().await?;
        }
        if let Some(end) = self.dispatched.take() {
            self.committed = Some(end);
        }
        Ok(())
    }

    /// Ends a group of source transactions at `end`: each lane with changes
    /// records its marker and commits. The batches are only sent; the group
    /// is committed once [`Applier::settle`] has seen them succeed (the
    /// next commit waits for the previous group first).
    pub async fn commit(&mut self, end: TxnEnd) -> Result<(), CdcError> {
        self.settle().await?;
        let mut sent = false;
        for lane in &mut self.lanes {
            if !lane.in_txn && !lane.dirty {
                continue;
            }
            let mut marker =
                b"INSERT INTO ferry_meta.checkpoints (job, binlog_file, binlog_pos, gtid) VALUES ("
                    .to_vec();
            sql::push_quoted(&mut marker, lane.key.as_bytes());
            marker.push(b',');
            sql::push_quoted(&mut marker, end.0.file.as_bytes());
            marker.extend_from_slice(format!(",{},", end.0.pos).as_bytes());
            match &end.1 {
                Some(g) => sql::push_quoted(&mut marker, g.as_bytes()),
                None => marker.extend_from_slice(b"NULL"),
            }
            marker.extend_from_slice(
                b") ON DUPLICATE KEY UPDATE binlog_file = VALUES(binlog_file), \
                  binlog_pos = VALUES(binlog_pos), gtid = VALUES(gtid)",
            );
            lane.queue(String::from_utf8_lossy(&marker).into_owned());
            if lane.in_txn {
                lane.queue("COMMIT".into());
            }
            lane.at = end.0.to_string();
            lane.dispatch(&self.target, self.compound).await?;
            lane.in_txn = false;
            lane.dirty = false;
            sent = true;
        }
        if sent {
            self.dispatched = Some(end);
        } else {
            self.committed = Some(end);
        }
        Ok(())
    }

    /// Abandons the open transactions (statements not sent, and those sent
    /// but not committed).
    pub async fn rollback(&mut self) {
        for lane in &mut self.lanes {
            lane.pending.clear();
            let _ = lane.settle().await;
            if lane.in_txn {
                if let Some(conn) = lane.conn.as_mut() {
                    let _ = conn.query_drop("ROLLBACK").await;
                }
                lane.in_txn = false;
            }
        }
    }

    /// Runs a DDL statement in database `db` on the target, after every
    /// change before it has committed; each lane then records the DDL's
    /// position with the next [`Applier::commit`].
    pub async fn ddl(&mut self, db: &str, statement: &str) -> Result<(), DbError> {
        let conn = &mut self.meta;
        conn.query_drop(format!("USE {}", quote_ident(db)))
            .await
            .map_err(self.target.query_err(format!("USE {db}")))?;
        conn.query_drop(statement)
            .await
            .map_err(self.target.query_err("DDL"))?;
        self.generated.clear();
        self.routes.clear();
        self.fk_groups = None;
        for lane in &mut self.lanes {
            lane.dirty = true;
        }
        Ok(())
    }

    async fn generated(&mut self, db: &str, table: &str) -> Result<Arc<HashSet<String>>, DbError> {
        let key = (db.to_string(), table.to_string());
        if let Some(g) = self.generated.get(&key) {
            return Ok(g.clone());
        }
        let extra: Vec<(String, String)> = self
            .meta
            .exec(
                "SELECT COLUMN_NAME, EXTRA FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db, table),
            )
            .await
            .map_err(self.target.query_err("reading target columns"))?;
        let g: HashSet<String> = extra
            .into_iter()
            .filter(|(_, e)| {
                let e = e.to_ascii_uppercase();
                e.contains("VIRTUAL GENERATED")
                    || e.contains("STORED GENERATED")
                    || e.contains("PERSISTENT GENERATED")
            })
            .map(|(c, _)| c.to_ascii_lowercase())
            .collect();
        let g = Arc::new(g);
        self.generated.insert(key, g.clone());
        Ok(g)
    }

    /// How the rows of a target table are spread over the lanes.
    async fn route(&mut self, db: &str, table: &str) -> Result<Route, DbError> {
        let n = self.lanes.len();
        if n == 1 {
            return Ok(Route::Lane(0));
        }
        let key = (db.to_string(), table.to_string());
        if let Some(r) = self.routes.get(&key) {
            return Ok(*r);
        }
        if self.fk_groups.is_none() {
            let edges: Vec<(String, String, String, String)> = self
                .meta
                .query(
                    "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, UNIQUE_CONSTRAINT_SCHEMA, \
                     REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS",
                )
                .await
                .map_err(self.target.query_err("reading foreign keys"))?;
            self.fk_groups = Some(fk_groups(&edges));
        }
        let uniques: Option<String> = self
            .meta
            .exec_first(
                "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? \
                 AND TABLE_NAME = ? AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY' LIMIT 1",
                (db, table),
            )
            .await
            .map_err(self.target.query_err("reading unique keys"))?;
        let group = self.fk_groups.as_ref().and_then(|g| g.get(&key));
        let route = match group {
            Some(g) => Route::Lane(sql::fnv1a(g.as_bytes()) as usize % n),
            None if uniques.is_some() => {
                Route::Lane(sql::fnv1a(format!("{db}.{table}").as_bytes()) as usize % n)
            }
            None => Route::ByKey,
        };
        self.routes.insert(key, route);
        Ok(route)
    }

    /// The lane of one row image of a table routed `route`.
    fn lane_of(&self, route: Route, table: &str, image: &Image) -> usize {
        match route {
            Route::Lane(i) => i,
            Route::ByKey if !image.keyed() => {
                sql::fnv1a(table.as_bytes()) as usize % self.lanes.len()
            }
            Route::ByKey => {
                let mut key = Vec::new();
                for (c, v) in image.columns.iter().zip(&image.values) {
                    if c.primary {
                        key.extend_from_slice(self.literal(c, v).as_bytes());
                        key.push(0);
                    }
                }
                sql::fnv1a(&key) as usize % self.lanes.len()
            }
        }
    }

    fn literal(&self, col: &ColumnInfo, v: &Value) -> String {
        literal(&self.charsets, col, v)
    }

    /// Applies the rows of one rows event ending at `at`.
    pub async fn rows(
        &mut self,
        db: &str,
        table: &str,
        op: Op,
        images: Vec<(Option<Image>, Option<Image>)>,
        safe: bool,
        at: &BinlogPos,
    ) -> Result<(), CdcError> {
        if images.is_empty() {
            return Ok(());
        }
        let apply_err = |source: DbError| CdcError::Apply {
            at: at.to_string(),
            source: Box::new(source),
        };
        let generated = self.generated(db, table).await.map_err(apply_err)?;
        let route = self.route(db, table).await.map_err(apply_err)?;
        let t = qualified(db, table);
        let n = self.lanes.len();
        // Each lane's rows, in event order.
        let mut per_lane: Vec<Vec<(Option<Image>, Option<Image>)>> = vec![Vec::new(); n];
        for (before, after) in images {
            let Some(first) = before.as_ref().or(after.as_ref()) else {
                continue;
            };
            let lane = self.lane_of(route, &t, first);
            // An update that moves a row to another lane's key: delete it
            // there and insert it here (only tables without foreign keys
            // are spread by key, so this is the same change).
            if let (Some(b), Some(a)) = (&before, &after) {
                let to = self.lane_of(route, &t, a);
                if op == Op::Update && to != lane {
                    per_lane[lane].push((Some(b.clone()), None));
                    per_lane[to].push((None, Some(a.clone())));
                    continue;
                }
            }
            per_lane[lane].push((before, after));
        }
        for (i, rows) in per_lane.into_iter().enumerate() {
            if rows.is_empty() || self.lanes[i].skip_until.as_ref().is_some_and(|s| at <= s) {
                continue;
            }
            self.lane_rows(i, &t, &generated, rows, safe, at).await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn lane_rows(
        &mut self,
        i: usize,
        t: &str,
        generated: &HashSet<String>,
        rows: Vec<(Option<Image>, Option<Image>)>,
        safe: bool,
        at: &BinlogPos,
    ) -> Result<(), CdcError> {
        let mut statements = Vec::new();
        let mut inserts = Vec::new();
        for (before, after) in rows {
            match (before, after) {
                (None, Some(a)) => inserts.push(a),
                (Some(b), None) => {
                    let (cond, limit) = self.locate(&b, generated);
                    statements.push(Stmt::Plain(format!("DELETE FROM {t} WHERE {cond}{limit}")));
                }
                (Some(b), Some(a)) => {
                    // Only the columns that changed (both images are full).
                    let same_shape = a.columns == b.columns;
                    let sets: Vec<String> = a
                        .columns
                        .iter()
                        .zip(&a.values)
                        .enumerate()
                        .filter(|(i, (c, v))| {
                            let unchanged = same_shape && b.values.get(*i) == Some(*v);
                            !(unchanged || generated.contains(&c.name.to_ascii_lowercase()))
                        })
                        .map(|(_, (c, v))| {
                            format!("{} = {}", quote_ident(&c.name), self.literal(c, v))
                        })
                        .collect();
                    let (cond, limit) = self.locate(&b, generated);
                    let update = (!sets.is_empty())
                        .then(|| format!("UPDATE {t} SET {} WHERE {cond}{limit}", sets.join(", ")));
                    if safe && b.keyed() {
                        statements.push(Stmt::SafeUpdate(update, a));
                    } else if let Some(update) = update {
                        statements.push(Stmt::Plain(update));
                    }
                }
                (None, None) => {}
            }
        }
        if !inserts.is_empty() {
            let sql = insert_sql(&self.charsets, t, generated, &inserts, safe);
            statements.extend(sql.into_iter().map(Stmt::Plain));
        }
        let lane = &mut self.lanes[i];
        lane.at = at.to_string();
        let apply_err = |source: DbError| CdcError::Apply {
            at: at.to_string(),
            source: Box::new(source),
        };
        if !lane.in_txn {
            lane.queue("START TRANSACTION".into());
            lane.in_txn = true;
        }
        for s in statements {
            match s {
                Stmt::Plain(sql) => {
                    lane.queue(sql);
                    if lane.pending.len() > 1 << 20 {
                        lane.dispatch(&self.target, self.compound).await?;
                    }
                }
                Stmt::SafeUpdate(update, after) => {
                    // Safe mode: the row may be missing (or already
                    // changed); then the after image is upserted. Never
                    // DELETE + REPLACE: on the target that would cascade
                    // to child rows. The UPDATE goes alone, so its
                    // affected-rows count is its own.
                    let found = match update {
                        Some(update) => {
                            lane.dispatch(&self.target, self.compound).await?;
                            lane.settle().await?;
                            let conn = lane
                                .conn
                                .as_mut()
                                .expect("a settled lane has its connection");
                            conn.query_drop(update.as_str())
                                .await
                                .map_err(self.target.query_err(truncate(&update, 300)))
                                .map_err(apply_err)?;
                            conn.affected_rows() > 0
                        }
                        None => false,
                    };
                    if !found {
                        let upsert = std::slice::from_ref(&after);
                        for s in insert_sql(&self.charsets, t, generated, upsert, true) {
                            lane.queue(s);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A WHERE condition that finds the row of `image`: its primary key, or
    /// every column (NULL-safe) and `LIMIT 1` on a table without one.
    fn locate(&self, image: &Image, generated: &HashSet<String>) -> (String, &'static str) {
        let keyed = image.keyed();
        let op = if keyed { "=" } else { "<=>" };
        let conds: Vec<String> = image
            .columns
            .iter()
            .zip(&image.values)
            .filter(|(c, _)| {
                (!keyed || c.primary) && !generated.contains(&c.name.to_ascii_lowercase())
            })
            .map(|(c, v)| format!("{} {op} {}", quote_ident(&c.name), self.literal(c, v)))
            .collect();
        (conds.join(" AND "), if keyed { "" } else { " LIMIT 1" })
    }
}

enum Stmt {
    Plain(String),
    /// Safe mode: the UPDATE (None when nothing changed), else the after
    /// image upserted.
    SafeUpdate(Option<String>, Image),
}

/// `v` as an exact SQL literal for `col`. Text travels as hex with its
/// column's charset introducer (the binlog holds it in that charset; the
/// column's collation applies where it is compared); the rest as in the
/// full load.
fn literal(charsets: &HashMap<u16, String>, col: &ColumnInfo, v: &Value) -> String {
    let mut buf = Vec::new();
    match v {
        Value::Bytes(b) if col.is_text() => {
            if let Some(cs) = charsets.get(&col.collation) {
                buf.push(b'_');
                buf.extend_from_slice(cs.as_bytes());
                buf.push(b' ');
            }
            sql::push_hex(&mut buf, b);
        }
        Value::Bytes(b) if col.is_bytes() => sql::push_hex(&mut buf, b),
        other => sql::push_literal(&mut buf, other, ColumnKind::Plain),
    }
    // Literals are ASCII: hex, digits, dates, names of charsets.
    String::from_utf8_lossy(&buf).into_owned()
}

/// INSERTs of `rows` (split near 1 MiB); `upsert` (safe mode) turns a
/// duplicate key into an update of that row, so replaying is harmless.
fn insert_sql(
    charsets: &HashMap<u16, String>,
    t: &str,
    generated: &HashSet<String>,
    rows: &[Image],
    upsert: bool,
) -> Vec<String> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let keep: Vec<usize> = first
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !generated.contains(&c.name.to_ascii_lowercase()))
        .map(|(i, _)| i)
        .collect();
    let names: Vec<String> = keep
        .iter()
        .map(|&i| quote_ident(&first.columns[i].name))
        .collect();
    let on_dup = if upsert {
        format!(
            " ON DUPLICATE KEY UPDATE {}",
            names
                .iter()
                .map(|n| format!("{n} = VALUES({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    let head = format!("INSERT INTO {t} ({}) VALUES ", names.join(", "));
    let mut out = Vec::new();
    let mut sql = head.clone();
    let mut in_statement = 0;
    for row in rows {
        if in_statement > 0 {
            sql.push(',');
        }
        sql.push('(');
        for (n, &i) in keep.iter().enumerate() {
            if n > 0 {
                sql.push(',');
            }
            sql.push_str(&literal(charsets, &row.columns[i], &row.values[i]));
        }
        sql.push(')');
        in_statement += 1;
        if sql.len() > 1 << 20 {
            sql.push_str(&on_dup);
            out.push(std::mem::replace(&mut sql, head.clone()));
            in_statement = 0;
        }
    }
    if in_statement > 0 {
        sql.push_str(&on_dup);
        out.push(sql);
    }
    out
}

impl Lane {
    fn queue(&mut self, sql: String) {
        if !self.pending.is_empty() {
            self.pending.push_str(";\n");
        }
        self.pending.push_str(&sql);
    }

    /// Sends the queued statements (after the previous batch succeeded)
    /// and returns without waiting for them.
    async fn dispatch(&mut self, target: &Connector, compound: bool) -> Result<(), CdcError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        let mut sql = std::mem::take(&mut self.pending);
        if compound && sql.contains(";\n") {
            sql = format!("BEGIN NOT ATOMIC {sql}; END");
        }
        let mut conn = self.conn.take().expect("a settled lane has its connection");
        let target = target.clone();
        let task = tokio::spawn(async move {
            let result = conn
                .query_drop(sql.as_str())
                .await
                .map_err(target.query_err(truncate(&sql, 300)));
            (conn, result)
        });
        self.inflight = Some(Inflight {
            task,
            at: self.at.clone(),
        });
        Ok(())
    }

    /// Waits for the batch in flight, if any. Cancel-safe.
    async fn settle(&mut self) -> Result<(), CdcError> {
        let Some(inflight) = self.inflight.as_mut() else {
            return Ok(());
        };
        let joined = (&mut inflight.task).await;
        let at = std::mem::take(&mut inflight.at);
        self.inflight = None;
        let (conn, result) = joined.map_err(|e| CdcError::Apply {
            at: at.clone(),
            source: Box::new(DbError::Query {
                role: "target",
                context: "applying a batch".into(),
                source: mysql_async::Error::Other(format!("apply task failed: {e}").into()),
            }),
        })?;
        self.conn = Some(conn);
        result.map_err(|source| CdcError::Apply {
            at,
            source: Box::new(source),
        })
    }
}

/// The job's lane markers on the target: lane index → position.
async fn read_markers(
    conn: &mut Conn,
    target: &Connector,
    job: &str,
) -> Result<HashMap<usize, TxnEnd>, CdcError> {
    let rows: Vec<(String, String, u64, Option<String>)> = conn
        .exec(
            "SELECT job, binlog_file, binlog_pos, gtid FROM ferry_meta.checkpoints \
             WHERE job = ? OR job LIKE ?",
            (job, format!("{job}#%")),
        )
        .await
        .map_err(target.query_err("reading ferry_meta.checkpoints"))?;
    let mut out = HashMap::new();
    for (key, file, pos, gtid) in rows {
        let lane = if key == job {
            0
        } else {
            match key.rsplit_once('#').and_then(|(_, n)| n.parse().ok()) {
                Some(n) if n < MAX_LANES => n,
                _ => continue,
            }
        };
        out.insert(lane, (BinlogPos { file, pos }, gtid));
    }
    Ok(out)
}

/// Tables linked by foreign keys, each mapped to the name of its group
/// (the smallest table name in it).
fn fk_groups(edges: &[(String, String, String, String)]) -> HashMap<(String, String), String> {
    let mut parent: HashMap<(String, String), (String, String)> = HashMap::new();
    fn find(
        parent: &mut HashMap<(String, String), (String, String)>,
        x: &(String, String),
    ) -> (String, String) {
        let p = parent.entry(x.clone()).or_insert_with(|| x.clone()).clone();
        if &p == x {
            return p;
        }
        let root = find(parent, &p);
        parent.insert(x.clone(), root.clone());
        root
    }
    for (cdb, ct, pdb, pt) in edges {
        let a = find(&mut parent, &(cdb.clone(), ct.clone()));
        let b = find(&mut parent, &(pdb.clone(), pt.clone()));
        if a != b {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            parent.insert(hi, lo);
        }
    }
    let keys: Vec<(String, String)> = parent.keys().cloned().collect();
    keys.into_iter()
        .map(|k| {
            let (db, t) = find(&mut parent, &k);
            (k, format!("{db}.{t}"))
        })
        .collect()
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, t: &str) -> (String, String) {
        (db.into(), t.into())
    }

    #[test]
    fn tables_linked_by_foreign_keys_share_a_group() {
        let e = |a: &str, b: &str| {
            (
                "d".to_string(),
                a.to_string(),
                "d".to_string(),
                b.to_string(),
            )
        };
        let g = fk_groups(&[
            e("payment", "rental"),
            e("rental", "customer"),
            e("film_actor", "actor"),
        ]);
        assert_eq!(g[&t("d", "payment")], "d.customer");
        assert_eq!(g[&t("d", "rental")], "d.customer");
        assert_eq!(g[&t("d", "customer")], "d.customer");
        assert_eq!(g[&t("d", "film_actor")], "d.actor");
        assert!(!g.contains_key(&t("d", "film")));
    }
}
