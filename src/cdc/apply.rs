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

use mysql_async::prelude::*;
use mysql_async::{Conn, Value};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::engine::{RowChange, Target, TxnEnd};
use super::error::CdcError;
use crate::catalog::ColumnKind;
use crate::db::{qualified, quote_ident, Connector, DbError};
use crate::job::JobSpec;
use crate::model::BinlogPos;
use crate::model::SessionContext;
use crate::source::binlog::Op;
use crate::source::decode::{ColumnInfo, Image};
use crate::sql;

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
    /// Its session's id on the target (for the liveness probe).
    conn_id: u32,
    target: Connector,
    conn: Option<Conn>,
    inflight: Option<Inflight>,
    /// Statements of the open transaction not sent yet, `;\n`-separated.
    pending: Vec<u8>,
    /// How many statements `pending` holds.
    statements: usize,
    in_txn: bool,
    /// A marker is due although no transaction is open (after DDL).
    dirty: bool,
    /// Events at or before this position were applied by this lane before
    /// a restart.
    skip_until: Option<BinlogPos>,
    /// Position of the newest change queued (for errors).
    at: String,
    /// The session's foreign_key_checks and unique_checks (`None`: not known).
    fk_checks: Option<bool>,
    unique_checks: Option<bool>,
    /// The open source transaction on this lane: where its statements
    /// start in `pending` (`None`: it has none here yet), whether some
    /// were sent already, whether it opened the target transaction, and
    /// whether a savepoint marks its start.
    txn_mark: Option<usize>,
    txn_sent: bool,
    txn_opened: bool,
    txn_savepoint: bool,
}

/// Applies changes to the target.
pub struct Applier {
    job: JobSpec,
    target: Connector,
    source: Connector,
    /// The target's max_allowed_packet (a statement must fit).
    packet: usize,
    /// The session that runs statements (DDL) in the source's context.
    ddl: Option<Conn>,
    /// Its id on the target while a statement runs on it (a stop kills it).
    ddl_running: Option<u32>,
    /// The source's time zone, for statements that logged none.
    time_zone: String,
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
        source: &Connector,
        time_zone: String,
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
        let packet = crate::db::variable(&mut meta, "max_allowed_packet")
            .await
            .map_err(target.query_err("reading max_allowed_packet"))?
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(4 << 20);

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
                conn_id: conn.id(),
                target: target.clone(),
                conn: Some(conn),
                inflight: None,
                pending: Vec::new(),
                statements: 0,
                in_txn: false,
                dirty: false,
                skip_until: markers.get(&i).map(|m| m.0.clone()),
                at: String::new(),
                fk_checks: Some(true),
                unique_checks: Some(true),
                txn_mark: None,
                txn_sent: false,
                txn_opened: false,
                txn_savepoint: false,
            });
        }
        if lanes > 1 {
            info!(lanes, "parallel apply by key hash");
        }
        Ok(Applier {
            job: job.clone(),
            target: target.clone(),
            source: source.clone(),
            packet,
            ddl: None,
            ddl_running: None,
            time_zone,
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
            lane.queue(&marker);
            if lane.in_txn {
                lane.queue(b"COMMIT");
            }
            lane.at = end.0.to_string();
            lane.txn_mark = None;
            lane.dispatch(&self.target, self.compound).await?;
            lane.in_txn = false;
            lane.dirty = false;
            lane.txn_savepoint = false;
            sent = true;
        }
        if sent || self.busy() {
            // Committed once every batch in flight has (a group with no
            // rows for the target must not checkpoint past one that is
            // still running: a crash would lose it).
            self.dispatched = Some(end);
        } else {
            self.dispatched = None;
            self.committed = Some(end);
        }
        Ok(())
    }

    /// Abandons the open transactions (statements not sent, and those sent
    /// but not committed). A batch or statement still running on the target
    /// is killed: its transaction rolls back, its checkpoint marker with it.
    pub async fn abandon(&mut self) {
        if let Some(id) = self.ddl_running.take() {
            self.ddl = None;
            self.target.kill_session(id).await;
        }
        for lane in &mut self.lanes {
            lane.pending.clear();
            lane.statements = 0;
            if let Some(inflight) = lane.inflight.take() {
                inflight.task.abort();
                lane.target.kill_session(lane.conn_id).await;
                lane.conn = None;
                lane.in_txn = false;
            }
            if lane.in_txn {
                if let Some(conn) = lane.conn.as_mut() {
                    let _ = conn.query_drop("ROLLBACK").await;
                }
                lane.in_txn = false;
            }
        }
    }

    /// A source transaction begins.
    pub fn begin_txn(&mut self) {
        for lane in &mut self.lanes {
            lane.txn_mark = None;
            lane.txn_sent = false;
            lane.txn_opened = false;
            lane.txn_savepoint = false;
        }
    }

    /// Undoes the open source transaction's rows on every lane it reached:
    /// statements not sent are dropped; what was sent is rolled back to the
    /// savepoint that marks the transaction's start, or whole when the
    /// transaction opened the target's.
    pub async fn rollback_txn(&mut self) -> Result<(), CdcError> {
        for lane in &mut self.lanes {
            let Some(mark) = lane.txn_mark.take() else {
                continue;
            };
            if !lane.txn_sent {
                lane.pending.truncate(mark);
                lane.statements = count_statements(&lane.pending);
                if lane.txn_opened {
                    lane.in_txn = false;
                }
            } else if lane.txn_savepoint {
                lane.queue(b"ROLLBACK TO SAVEPOINT ferry_txn");
            } else {
                lane.pending.clear();
                lane.statements = 0;
                lane.queue(b"ROLLBACK");
                lane.in_txn = false;
            }
            // Session settings queued with the dropped statements may not
            // have been sent.
            lane.fk_checks = None;
            lane.unique_checks = None;
            lane.txn_sent = false;
            lane.txn_opened = false;
            lane.txn_savepoint = false;
        }
        Ok(())
    }

    /// Runs a statement in database `db` on the target with the source's
    /// session context, after every change before it has committed; each
    /// lane then records the statement's position with the next
    /// [`Applier::commit`].
    pub async fn execute(
        &mut self,
        db: &str,
        statement: &str,
        ctx: &SessionContext,
    ) -> Result<(), DbError> {
        let mut conn = match self.ddl.take() {
            Some(conn) => conn,
            None => self.target.connect().await?,
        };
        self.ddl_running = Some(conn.id());
        let result = async {
            if !db.is_empty() {
                conn.query_drop(format!("USE {}", quote_ident(db)))
                    .await
                    .map_err(self.target.query_err(format!("USE {db}")))?;
            }
            for set in ctx.set_statements(&self.time_zone) {
                conn.query_drop(&set).await.map_err(
                    self.target
                        .query_err("setting the source's session context"),
                )?;
            }
            conn.query_drop(statement)
                .await
                .map_err(self.target.query_err("DDL"))
        }
        .await;
        self.ddl_running = None;
        // After an error its session state is unknown: the next statement
        // opens a new one.
        if result.is_ok() {
            self.ddl = Some(conn);
        }
        self.generated.clear();
        self.routes.clear();
        self.fk_groups = None;
        for lane in &mut self.lanes {
            lane.dirty = true;
        }
        result
    }

    /// Copies `db.table` from the source whole, in one consistent
    /// snapshot, to `target_db` (dropping what the target had under that
    /// name); the snapshot's binlog position.
    pub async fn copy_table(
        &mut self,
        db: &str,
        table: &str,
        target_db: &str,
    ) -> Result<BinlogPos, CdcError> {
        self.settle().await?;
        let mut tries = 0;
        loop {
            match crate::full::copy_table_now(
                &self.job,
                &self.source,
                &self.target,
                db,
                table,
                target_db,
            )
            .await
            {
                // The table's definition changed between the snapshot and
                // the first read: take a new snapshot.
                Err(crate::full::FullError::Db(DbError::Query {
                    source: mysql_async::Error::Server(s),
                    ..
                })) if s.code == 1412 && tries < 5 => tries += 1,
                Err(e) => {
                    return Err(match e {
                        crate::full::FullError::Db(d) => CdcError::Db(d),
                        other => CdcError::Setup(format!("copying {db}.{table}: {other}")),
                    })
                }
                Ok(pos) => {
                    self.generated.clear();
                    self.routes.clear();
                    self.fk_groups = None;
                    for lane in &mut self.lanes {
                        lane.dirty = true;
                    }
                    return Ok(pos);
                }
            }
        }
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
            self.fk_groups = Some(crate::catalog::fk_groups(&edges));
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
                        literal(&mut key, &self.charsets, c, v);
                        key.push(0);
                    }
                }
                sql::fnv1a(&key) as usize % self.lanes.len()
            }
        }
    }

    /// Applies the rows of one rows event.
    pub(crate) async fn rows(&mut self, change: RowChange<'_>) -> Result<(), CdcError> {
        let RowChange {
            db,
            table,
            op,
            images,
            flags,
            safe,
            at,
            ..
        } = change;
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
                    push(&mut per_lane, lane, (Some(b.clone()), None));
                    push(&mut per_lane, to, (None, Some(a.clone())));
                    continue;
                }
            }
            push(&mut per_lane, lane, (before, after));
        }
        let checks = (!flags.no_foreign_key_checks, !flags.relaxed_unique_checks);
        for (i, rows) in per_lane.into_iter().enumerate() {
            let skip = |l: &Lane| l.skip_until.as_ref().is_some_and(|s| at <= s);
            if rows.is_empty() || self.lanes.get(i).is_none_or(skip) {
                continue;
            }
            self.lane_rows(i, &t, &generated, rows, safe, checks, at)
                .await?;
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
        (fk_checks, unique_checks): (bool, bool),
        at: &BinlogPos,
    ) -> Result<(), CdcError> {
        let relaxed = rows.iter().any(|(b, a)| {
            b.as_ref().is_some_and(has_enum_error_value)
                || a.as_ref().is_some_and(has_enum_error_value)
        });
        // Rows with big values go alone, as prepared statements whose
        // values travel as parameters (exactly their size); the rest in
        // multi-row statements with literals.
        let budget = self.packet.saturating_sub(4 << 10);
        let big = |image: &Image| image_bytes(image) > PARAM_ROW_BYTES;
        if let Some(size) = rows
            .iter()
            .flat_map(|(b, a)| [b, a])
            .flatten()
            .map(image_bytes)
            .find(|n| *n + (64 << 10) > self.packet)
        {
            return Err(CdcError::RowTooLarge {
                at: at.to_string(),
                table: t.to_string(),
                size,
                limit: self.packet,
                suggest: (size + (128 << 10)).next_power_of_two(),
            });
        }
        let mut statements = Vec::new();
        let mut inserts = Vec::new();
        for (before, after) in rows {
            match (before, after) {
                (None, Some(a)) if big(&a) => {
                    let mut sql = Sql::params();
                    insert_into(
                        &mut sql,
                        &self.charsets,
                        t,
                        generated,
                        std::slice::from_ref(&a),
                        safe,
                    );
                    statements.push(Stmt::Plain(sql));
                }
                (None, Some(a)) => inserts.push(a),
                (Some(b), None) => {
                    let mut sql = Sql::new(big(&b));
                    sql.push(format!("DELETE FROM {t} WHERE ").as_bytes());
                    self.locate(&mut sql, &b, generated);
                    statements.push(Stmt::Plain(sql));
                }
                (Some(b), Some(a)) => {
                    // Only the columns that changed (both images are full).
                    let same_shape = a.columns == b.columns;
                    let mut sql = Sql::new(big(&a) || big(&b));
                    sql.push(format!("UPDATE {t} SET ").as_bytes());
                    let mut sets = 0;
                    for (n, (c, v)) in a.columns.iter().zip(&a.values).enumerate() {
                        let unchanged = same_shape && b.values.get(n) == Some(v);
                        if unchanged || generated.contains(&c.name.to_ascii_lowercase()) {
                            continue;
                        }
                        if sets > 0 {
                            sql.push(b", ");
                        }
                        sql.push(quote_ident(&c.name).as_bytes());
                        sql.push(b" = ");
                        sql.value(&self.charsets, c, v);
                        sets += 1;
                    }
                    sql.push(b" WHERE ");
                    self.locate(&mut sql, &b, generated);
                    let update = (sets > 0).then_some(sql);
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
            for sql in insert_sql(&self.charsets, t, generated, &inserts, safe) {
                statements.push(Stmt::Plain(sql));
            }
        }
        let Some(lane) = self.lanes.get_mut(i) else {
            return Ok(()); // lanes are never removed: `i` came from them
        };
        lane.at = at.to_string();
        let apply_err = |source: DbError| CdcError::Apply {
            at: at.to_string(),
            source: Box::new(source),
        };
        if lane.txn_mark.is_none() {
            lane.txn_mark = Some(lane.pending.len());
            lane.txn_opened = !lane.in_txn;
        }
        if !lane.in_txn {
            lane.queue(b"START TRANSACTION");
            lane.in_txn = true;
        }
        // The session checks the source had when it wrote these rows.
        if lane.fk_checks != Some(fk_checks) {
            lane.queue(
                format!("SET SESSION foreign_key_checks = {}", u8::from(fk_checks)).as_bytes(),
            );
            lane.fk_checks = Some(fk_checks);
        }
        if lane.unique_checks != Some(unique_checks) {
            lane.queue(
                format!("SET SESSION unique_checks = {}", u8::from(unique_checks)).as_bytes(),
            );
            lane.unique_checks = Some(unique_checks);
        }
        let batch = budget.min(1 << 20);
        if relaxed {
            lane.queue(RELAX);
        }
        for s in statements {
            match s {
                Stmt::Plain(Sql {
                    buf,
                    params: Some(params),
                }) => {
                    // After everything queued before it, alone.
                    lane.dispatch(&self.target, self.compound).await?;
                    lane.settle().await?;
                    let conn = lane.conn()?;
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    conn.exec_drop(text.as_str(), params)
                        .await
                        .map_err(self.target.query_err(truncate(&buf, 300)))
                        .map_err(apply_err)?;
                }
                Stmt::Plain(Sql { buf, params: None }) => {
                    if !lane.pending.is_empty() && lane.pending.len() + buf.len() > batch {
                        lane.dispatch(&self.target, self.compound).await?;
                    }
                    lane.queue(&buf);
                    if lane.pending.len() > batch {
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
                            let conn = lane.conn()?;
                            let context = self.target.query_err(truncate(&update.buf, 300));
                            match update.params {
                                Some(params) => conn
                                    .exec_drop(
                                        String::from_utf8_lossy(&update.buf).as_ref(),
                                        params,
                                    )
                                    .await
                                    .map_err(context)
                                    .map_err(apply_err)?,
                                None => conn
                                    .query_drop(&update.buf)
                                    .await
                                    .map_err(context)
                                    .map_err(apply_err)?,
                            }
                            conn.affected_rows() > 0
                        }
                        None => false,
                    };
                    if !found {
                        let mut sql = Sql::new(big(&after));
                        insert_into(
                            &mut sql,
                            &self.charsets,
                            t,
                            generated,
                            std::slice::from_ref(&after),
                            true,
                        );
                        if sql.params.is_some() {
                            let conn = lane.conn()?;
                            let context = self.target.query_err(truncate(&sql.buf, 300));
                            conn.exec_drop(
                                String::from_utf8_lossy(&sql.buf).as_ref(),
                                sql.params.unwrap_or_default(),
                            )
                            .await
                            .map_err(context)
                            .map_err(apply_err)?;
                        } else {
                            lane.queue(&sql.buf);
                        }
                    }
                }
            }
        }
        if relaxed {
            lane.queue(STRICT);
        }
        Ok(())
    }

    /// Appends a WHERE condition that finds the row of `image`: its primary
    /// key, or every column (NULL-safe) and `LIMIT 1` on a table without one.
    fn locate(&self, sql: &mut Sql, image: &Image, generated: &HashSet<String>) {
        let keyed = image.keyed();
        let op: &[u8] = if keyed { b" = " } else { b" <=> " };
        let mut n = 0;
        for (c, v) in image.columns.iter().zip(&image.values) {
            if (keyed && !c.primary) || generated.contains(&c.name.to_ascii_lowercase()) {
                continue;
            }
            if n > 0 {
                sql.push(b" AND ");
            }
            sql.push(quote_ident(&c.name).as_bytes());
            sql.push(op);
            sql.value(&self.charsets, c, v);
            n += 1;
        }
        if !keyed {
            sql.push(b" LIMIT 1");
        }
    }
}

/// A row holding more value bytes than this goes alone, its values as
/// parameters of a prepared statement.
const PARAM_ROW_BYTES: usize = 256 << 10;

/// The bytes of a row image's values.
fn image_bytes(image: &Image) -> usize {
    image
        .values
        .iter()
        .map(|v| match v {
            Value::Bytes(b) => b.len(),
            _ => 8,
        })
        .sum()
}

/// A statement being built: its text, and its parameters when values go as
/// parameters of a prepared statement instead of literals.
struct Sql {
    buf: Vec<u8>,
    params: Option<Vec<Value>>,
}

impl Sql {
    fn new(params: bool) -> Sql {
        Sql {
            buf: Vec::new(),
            params: params.then(Vec::new),
        }
    }

    fn params() -> Sql {
        Sql::new(true)
    }

    fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// `(v1,v2,...)`: the values of `row`'s columns at `keep`.
    fn tuple(&mut self, charsets: &HashMap<u16, String>, keep: &[usize], row: &Image) {
        self.push(b"(");
        for (n, &i) in keep.iter().enumerate() {
            if n > 0 {
                self.push(b",");
            }
            if let (Some(c), Some(v)) = (row.columns.get(i), row.values.get(i)) {
                self.value(charsets, c, v);
            }
        }
        self.push(b")");
    }

    /// A value of `col`: a literal, or a placeholder and its parameter.
    /// A parameter arrives in the session's utf8mb4; a string of another
    /// charset (or of none) is relabelled from binary so its bytes stay
    /// as they are.
    fn value(&mut self, charsets: &HashMap<u16, String>, col: &ColumnInfo, v: &Value) {
        let Some(params) = self.params.as_mut() else {
            literal(&mut self.buf, charsets, col, v);
            return;
        };
        match v {
            Value::Bytes(_) if col.is_text() => match charsets.get(&col.collation) {
                Some(cs) => self
                    .buf
                    .extend_from_slice(format!("CONVERT(CAST(? AS BINARY) USING {cs})").as_bytes()),
                None => self.buf.push(b'?'),
            },
            Value::Bytes(_) if col.is_bytes() => self.buf.extend_from_slice(b"CAST(? AS BINARY)"),
            _ => self.buf.push(b'?'),
        }
        params.push(v.clone());
    }
}

impl Target for Applier {
    async fn rows(&mut self, change: RowChange<'_>) -> Result<(), CdcError> {
        Applier::rows(self, change).await
    }
    fn begin_txn(&mut self) {
        Applier::begin_txn(self)
    }
    async fn rollback_txn(&mut self) -> Result<(), CdcError> {
        Applier::rollback_txn(self).await
    }
    async fn commit(&mut self, end: TxnEnd) -> Result<(), CdcError> {
        Applier::commit(self, end).await
    }
    async fn settle(&mut self) -> Result<(), CdcError> {
        Applier::settle(self).await
    }
    async fn abandon(&mut self) {
        Applier::abandon(self).await
    }
    fn busy(&self) -> bool {
        Applier::busy(self)
    }
    fn queued_bytes(&self) -> usize {
        Applier::queued_bytes(self)
    }
    fn take_committed(&mut self) -> Option<TxnEnd> {
        Applier::take_committed(self)
    }
    async fn execute(
        &mut self,
        db: &str,
        sql: &str,
        ctx: &SessionContext,
    ) -> Result<(), super::error::TargetError> {
        Ok(Applier::execute(self, db, sql, ctx).await?)
    }
    async fn copy_table(
        &mut self,
        db: &str,
        table: &str,
        target_db: &str,
    ) -> Result<BinlogPos, CdcError> {
        Applier::copy_table(self, db, table, target_db).await
    }
}

enum Stmt {
    Plain(Sql),
    /// Safe mode: the UPDATE (None when nothing changed), else the after
    /// image upserted.
    SafeUpdate(Option<Sql>, Image),
}

/// Whether an image holds an ENUM's error value (index 0), which only a
/// non-strict session writes: its statements run with
/// [`crate::db::RELAXED_SQL_MODE`], as native replication would apply them.
fn has_enum_error_value(image: &Image) -> bool {
    image.columns.iter().zip(&image.values).any(|(c, v)| {
        c.ty == mysql_async::consts::ColumnType::MYSQL_TYPE_ENUM
            && matches!(v, Value::Int(0) | Value::UInt(0))
    })
}

const RELAX: &[u8] =
    b"SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,ALLOW_INVALID_DATES'";
const STRICT: &[u8] = b"SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,ALLOW_INVALID_DATES'";

/// Appends `v` as an exact SQL literal for `col`. Strings travel as
/// escaped literals with their column's charset introducer
/// (`_latin1'...'`, `_binary'...'`): the binlog holds them in that
/// charset and the introducer keeps the bytes as they are, so the literal
/// is about as long as the value (a hex literal would double it against
/// max_allowed_packet). The statement is sent as bytes over a utf8mb4
/// session, which never mistakes a quote or a backslash for part of a
/// multi-byte character. BIT and spatial values stay hex; the rest is as
/// in the full load.
fn literal(buf: &mut Vec<u8>, charsets: &HashMap<u16, String>, col: &ColumnInfo, v: &Value) {
    match v {
        Value::Bytes(b) if col.is_text() => {
            if let Some(cs) = charsets.get(&col.collation) {
                buf.push(b'_');
                buf.extend_from_slice(cs.as_bytes());
            }
            sql::push_quoted(buf, b);
        }
        Value::Bytes(b) if col.is_bytes() && col.ty.is_character_type() => {
            buf.extend_from_slice(b"_binary");
            sql::push_quoted(buf, b);
        }
        Value::Bytes(b) if col.is_bytes() => sql::push_hex(buf, b),
        other => sql::push_literal(buf, other, ColumnKind::Plain),
    }
}

/// The column list and ON DUPLICATE KEY clause of an INSERT of `first`'s
/// table (generated columns left out).
fn insert_parts(
    t: &str,
    generated: &HashSet<String>,
    first: &Image,
    upsert: bool,
) -> (Vec<usize>, Vec<u8>, Vec<u8>) {
    let keep: Vec<usize> = first
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !generated.contains(&c.name.to_ascii_lowercase()))
        .map(|(i, _)| i)
        .collect();
    let names: Vec<String> = keep
        .iter()
        .filter_map(|&i| first.columns.get(i))
        .map(|c| quote_ident(&c.name))
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
    let head = format!("INSERT INTO {t} ({}) VALUES ", names.join(", ")).into_bytes();
    (keep, head, on_dup.into_bytes())
}

/// One INSERT of `rows` into `sql`; `upsert` (safe mode) turns a duplicate
/// key into an update of that row, so replaying is harmless.
fn insert_into(
    sql: &mut Sql,
    charsets: &HashMap<u16, String>,
    t: &str,
    generated: &HashSet<String>,
    rows: &[Image],
    upsert: bool,
) {
    let Some(first) = rows.first() else {
        return;
    };
    let (keep, head, on_dup) = insert_parts(t, generated, first, upsert);
    sql.push(&head);
    for (r, row) in rows.iter().enumerate() {
        if r > 0 {
            sql.push(b",");
        }
        sql.tuple(charsets, &keep, row);
    }
    sql.push(&on_dup);
}

/// INSERTs of `rows` with literals, split near 1 MiB; `upsert` as in
/// [`insert_into`].
fn insert_sql(
    charsets: &HashMap<u16, String>,
    t: &str,
    generated: &HashSet<String>,
    rows: &[Image],
    upsert: bool,
) -> Vec<Sql> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let (keep, head, on_dup) = insert_parts(t, generated, first, upsert);
    let start = || Sql {
        buf: head.clone(),
        params: None,
    };
    let mut out = Vec::new();
    let mut sql = start();
    let mut in_statement = 0;
    for row in rows {
        if in_statement > 0 {
            sql.push(b",");
        }
        sql.tuple(charsets, &keep, row);
        in_statement += 1;
        if sql.buf.len() > 1 << 20 {
            sql.push(&on_dup);
            out.push(std::mem::replace(&mut sql, start()));
            in_statement = 0;
        }
    }
    if in_statement > 0 {
        sql.push(&on_dup);
        out.push(sql);
    }
    out
}

impl Lane {
    fn queue(&mut self, sql: &[u8]) {
        if !self.pending.is_empty() {
            self.pending.extend_from_slice(b";\n");
        }
        self.pending.extend_from_slice(sql);
        self.statements += 1;
    }

    /// Sends the queued statements (after the previous batch succeeded)
    /// and returns without waiting for them.
    async fn dispatch(&mut self, target: &Connector, compound: bool) -> Result<(), CdcError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        // The open source transaction's first statements go out now: when
        // the target transaction holds earlier ones, a savepoint marks its
        // start so a rollback on the source can be followed.
        if let Some(mark) = self.txn_mark {
            if !self.txn_sent {
                self.txn_sent = true;
                if !self.txn_opened && mark <= self.pending.len() {
                    let at = mark;
                    let sp: &[u8] = if at == 0 {
                        b"SAVEPOINT ferry_txn;\n"
                    } else {
                        b";\nSAVEPOINT ferry_txn"
                    };
                    self.pending.splice(at..at, sp.iter().copied());
                    self.statements += 1;
                    self.txn_savepoint = true;
                }
            }
        }
        let mut sql = std::mem::take(&mut self.pending);
        if compound && self.statements > 1 {
            let mut wrapped = Vec::with_capacity(sql.len() + 24);
            wrapped.extend_from_slice(b"BEGIN NOT ATOMIC ");
            wrapped.extend_from_slice(&sql);
            wrapped.extend_from_slice(b"; END");
            sql = wrapped;
        }
        self.statements = 0;
        let lost = self.lost();
        let mut conn = self.conn.take().ok_or(lost)?;
        let target = target.clone();
        let task = tokio::spawn(async move {
            let result = conn
                .query_drop(&sql)
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

    /// The lane's session, once no batch is in flight (a batch that failed
    /// takes it along: the job then retries on a new one).
    fn conn(&mut self) -> Result<&mut Conn, CdcError> {
        let lost = self.lost();
        self.conn.as_mut().ok_or(lost)
    }

    fn lost(&self) -> CdcError {
        CdcError::Apply {
            at: self.at.clone(),
            source: Box::new(DbError::Lost {
                role: "target",
                context: "a lane's session".into(),
            }),
        }
    }

    /// Waits for the batch in flight, if any. Cancel-safe.
    ///
    /// A batch that takes long is checked on: a session of its own asks the
    /// target whether this lane's session is still executing. One the
    /// target sees idle (or not at all) while Ferry still waits is a
    /// connection that died without a word (a partition, a NAT or firewall
    /// timeout): it is killed, and the error makes the job retry.
    async fn settle(&mut self) -> Result<(), CdcError> {
        let Some(inflight) = self.inflight.as_mut() else {
            return Ok(());
        };
        let joined = loop {
            tokio::select! {
                joined = &mut inflight.task => break joined,
                _ = tokio::time::sleep(LANE_PROBE_AFTER) => {
                    if let Some(lost) = probe(&self.target, self.conn_id).await {
                        // One more look: the answer may be on its way.
                        if let Ok(joined) = tokio::time::timeout(
                            std::time::Duration::from_secs(2),
                            &mut inflight.task,
                        )
                        .await
                        {
                            break joined;
                        }
                        inflight.task.abort();
                        self.target.kill_session(self.conn_id).await;
                        let at = std::mem::take(&mut inflight.at);
                        self.inflight = None;
                        return Err(CdcError::Apply {
                            at,
                            source: Box::new(lost),
                        });
                    }
                }
            }
        };
        let at = std::mem::take(&mut inflight.at);
        self.inflight = None;
        let (conn, result) = joined.map_err(|e| CdcError::Apply {
            at: at.clone(),
            source: Box::new(DbError::Lost {
                role: "target",
                context: format!("applying a batch (its task ended: {e})"),
            }),
        })?;
        self.conn = Some(conn);
        result.map_err(|source| CdcError::Apply {
            at,
            source: Box::new(source),
        })
    }
}

/// How long a batch may run before its lane's session is checked on.
const LANE_PROBE_AFTER: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether the target still runs session `id`'s statement: `None` if it
/// does (a slow batch, a lock wait), else why the lane is taken for lost.
async fn probe(target: &Connector, id: u32) -> Option<DbError> {
    let lost = |why: String| DbError::Query {
        role: "target",
        context: why,
        source: mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the connection stopped answering",
        ))),
    };
    let mut c = match target.connect().await {
        Ok(c) => c,
        Err(e) => {
            return Some(lost(format!(
                "a batch got no answer and the target cannot be reached ({e})"
            )))
        }
    };
    let command: Option<String> = c
        .exec_first(
            "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = ?",
            (id,),
        )
        .await
        .unwrap_or(None);
    let _ = c.disconnect().await;
    match command.as_deref() {
        Some("Query") | Some("Execute") => None,
        other => Some(lost(format!(
            "a batch got no answer while the target shows its session {} (the \
             connection died without closing); reconnecting",
            other.unwrap_or("gone")
        ))),
    }
}

/// Statements in a `;\n`-separated batch (a literal never holds a raw
/// newline: it is escaped).
fn count_statements(batch: &[u8]) -> usize {
    if batch.is_empty() {
        return 0;
    }
    1 + batch.windows(2).filter(|w| w == b";\n").count()
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

/// Adds a row change to lane `lane`'s list.
fn push<T>(per_lane: &mut [Vec<T>], lane: usize, row: T) {
    if let Some(rows) = per_lane.get_mut(lane) {
        rows.push(row);
    }
}

/// The start of a statement, for messages.
fn truncate(s: &[u8], n: usize) -> String {
    let head = s.get(..n * 4).unwrap_or(s);
    crate::model::truncate(&String::from_utf8_lossy(head), n)
}

#[cfg(test)]
mod tests {
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
        let g = crate::catalog::fk_groups(&[
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
