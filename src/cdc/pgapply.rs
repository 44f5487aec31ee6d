//! Applying decoded row changes to a PostgreSQL target: the same contract
//! as [`super::apply`] for MySQL, in PostgreSQL's dialect.
//!
//! Changes go over one or more lanes, each a session with its own row in
//! `ferry.checkpoints` (its marker), upserted in the same transaction as
//! the changes it covers. Rows are spread over lanes by a pure function of
//! the row (the hash of its primary key; one lane per table for tables
//! with a unique secondary key or without a key, one per group of tables
//! linked by foreign keys), so the changes of one row stay in order.
//! Batches are sent as one simple-query message and pipelined: the stream
//! decodes the next batch while the target runs this one.
//!
//! Values are written as literals cast to the target column's type (read
//! from the target's catalog, so a column changed by DDL is written as it
//! is now), through the job's mapping: text converted from its charset,
//! ENUM and SET by their member names, zero dates and NUL characters as
//! `[target] mapping` says.
//!
//! Safe mode (the hand-over window) makes every change idempotent: an
//! insert is `INSERT ... ON CONFLICT (key) DO UPDATE`, an update that finds
//! no row inserts its after image, in one statement.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use mysql_async::prelude::*;
use mysql_async::Value;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::engine::{RowChange, Target, TxnEnd};
use super::error::{CdcError, TargetError};
use crate::db::Connector;
use crate::job::{JobSpec, Mapping, NulInText, ZeroDates};
use crate::model::{BinlogPos, SessionContext};
use crate::pg::types::{ident, literal, Enc};
use crate::pg::{query_err, PgConnector, PgError};
use crate::source::binlog::{Op, TableInfo};
use crate::source::decode::{ColumnInfo, Image};
use crate::source::session::Charsets;
use crate::sql;

/// Ferry's markers in the target database.
pub const MARKERS: &str = "CREATE SCHEMA IF NOT EXISTS ferry; \
     CREATE TABLE IF NOT EXISTS ferry.checkpoints (job text PRIMARY KEY, \
     binlog_file text NOT NULL, binlog_pos bigint NOT NULL, gtid text, \
     updated_at timestamptz NOT NULL DEFAULT now())";

const MAX_LANES: usize = 64;

/// Statement bytes per batch sent.
const BATCH_BYTES: usize = 1 << 20;

/// A target table as the catalog has it now.
struct TableShape {
    /// `"schema"."table"`.
    name: String,
    /// Lower-cased name → column.
    columns: HashMap<String, Col>,
    /// The primary key's columns (target spelling); empty without one.
    key: Vec<String>,
}

struct Col {
    name: String,
    /// `format_type`: a valid cast target.
    ty: String,
    enc: Enc,
}

#[derive(Debug, Clone, Copy)]
enum Route {
    ByKey,
    Lane(usize),
}

/// One session on the target and what is queued for it.
struct Lane {
    key: String,
    client: Arc<Client>,
    inflight: Option<(JoinHandle<Result<(), tokio_postgres::Error>>, String)>,
    pending: String,
    in_txn: bool,
    dirty: bool,
    skip_until: Option<BinlogPos>,
    at: String,
    fk_deferred: bool,
    txn_mark: Option<usize>,
    txn_sent: bool,
    txn_opened: bool,
    txn_savepoint: bool,
}

pub struct PgApplier {
    job: JobSpec,
    target: PgConnector,
    source: Connector,
    charsets: Charsets,
    lanes: Vec<Lane>,
    /// Catalog reads and DDL.
    meta: Client,
    shapes: HashMap<(String, String), Arc<TableShape>>,
    routes: HashMap<(String, String), Route>,
    fk_groups: Option<HashMap<(String, String), String>>,
    dispatched: Option<TxnEnd>,
    committed: Option<TxnEnd>,
}

fn lane_key(job: &str, i: usize) -> String {
    if i == 0 {
        job.to_string()
    } else {
        format!("{job}#{i}")
    }
}

/// The advisory lock a lane's session holds while it lives.
fn lock_id(job: &str, i: usize) -> i64 {
    let h = u64::from(sql::fnv1a(format!("ferry:{}", lane_key(job, i)).as_bytes()));
    // A fixed high half keeps Ferry's locks apart from an application's.
    (0x4665_7272_i64 << 32) | h as i64
}

impl PgApplier {
    /// Connects the lanes. `start` is the redb checkpoint; it moves forward
    /// when the target's markers show that every lane is past it.
    pub async fn open(
        job: &JobSpec,
        target: &PgConnector,
        source: &Connector,
        start: &mut TxnEnd,
    ) -> Result<PgApplier, CdcError> {
        let meta = target.connect().await?;
        meta.batch_execute(MARKERS)
            .await
            .map_err(query_err("creating ferry.checkpoints"))?;
        // A session of a killed Ferry may still run its last batch: each
        // lane's session holds an advisory lock until it ends; wait for all.
        meta.batch_execute("SET lock_timeout = '120s'")
            .await
            .map_err(query_err("setting lock_timeout"))?;
        for i in 0..MAX_LANES {
            meta.execute("SELECT pg_advisory_lock($1)", &[&lock_id(&job.name, i)])
                .await
                .map_err(|e| match e.as_db_error().map(|d| d.code().code()) {
                    Some("55P03") => CdcError::TargetBusy(job.name.clone()),
                    _ => query_err("waiting for the job's apply locks")(e).into(),
                })?;
        }
        meta.batch_execute("SELECT pg_advisory_unlock_all(); RESET lock_timeout")
            .await
            .map_err(query_err("releasing apply locks"))?;

        let rows = meta
            .query(
                "SELECT job, binlog_file, binlog_pos, gtid FROM ferry.checkpoints \
                 WHERE job = $1 OR job LIKE $2",
                &[&job.name, &format!("{}#%", job.name)],
            )
            .await
            .map_err(query_err("reading ferry.checkpoints"))?;
        let mut markers: HashMap<usize, TxnEnd> = HashMap::new();
        for r in rows {
            let key: String = r.get(0);
            let lane = match key.strip_prefix(&format!("{}#", job.name)) {
                Some(n) => n.parse().unwrap_or(usize::MAX),
                None if key == job.name => 0,
                None => continue,
            };
            let pos = BinlogPos {
                file: r.get(1),
                pos: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            };
            markers.insert(lane, (pos, r.get(3)));
        }
        let old_lanes = markers.keys().max().map_or(0, |m| m + 1);
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
                     for this run"
                );
                lanes = old_lanes;
            } else {
                meta.execute(
                    "DELETE FROM ferry.checkpoints WHERE job LIKE $1",
                    &[&format!("{}#%", job.name)],
                )
                .await
                .map_err(query_err("clearing old lane markers"))?;
            }
        }

        let mut src = source.connect().await?;
        let collations: Vec<(Option<u64>, Option<String>)> = src
            .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
            .await
            .map_err(source.query_err("reading collations"))?;
        let _ = src.disconnect().await;
        let charsets = Charsets(
            collations
                .into_iter()
                .filter_map(|(id, cs)| Some((u16::try_from(id?).ok()?, cs?)))
                .collect(),
        );

        let mut out = Vec::with_capacity(lanes);
        for i in 0..lanes {
            let client = target.connect().await?;
            client
                .batch_execute(
                    "SET standard_conforming_strings = on; \
                     SET default_transaction_isolation = 'read committed'",
                )
                .await
                .map_err(query_err("preparing an apply session"))?;
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_id(&job.name, i)])
                .await
                .map_err(query_err("taking the job's apply lock"))?
                .get(0);
            if !got {
                return Err(CdcError::TargetBusy(job.name.clone()));
            }
            out.push(Lane {
                key: lane_key(&job.name, i),
                client: Arc::new(client),
                inflight: None,
                pending: String::new(),
                in_txn: false,
                dirty: false,
                skip_until: markers.get(&i).map(|m| m.0.clone()),
                at: String::new(),
                fk_deferred: false,
                txn_mark: None,
                txn_sent: false,
                txn_opened: false,
                txn_savepoint: false,
            });
        }
        if lanes > 1 {
            info!(lanes, "parallel apply by key hash");
        }
        Ok(PgApplier {
            job: job.clone(),
            target: target.clone(),
            source: source.clone(),
            charsets,
            lanes: out,
            meta,
            shapes: HashMap::new(),
            routes: HashMap::new(),
            fk_groups: None,
            dispatched: None,
            committed: None,
        })
    }

    /// After DDL or a copy: what was read of the catalog is stale.
    fn forget_catalog(&mut self) {
        self.shapes.clear();
        self.routes.clear();
        self.fk_groups = None;
        for lane in &mut self.lanes {
            lane.dirty = true;
        }
    }

    async fn shape(&mut self, schema: &str, table: &str) -> Result<Arc<TableShape>, PgError> {
        let key = (schema.to_string(), table.to_string());
        if let Some(s) = self.shapes.get(&key) {
            return Ok(s.clone());
        }
        let name = format!("{}.{}", ident(schema), ident(table));
        let rows = self
            .meta
            .query(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, \
                 COALESCE(i.indisprimary, false) \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_type t ON t.oid = a.atttypid \
                 LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
                   AND a.attnum = ANY(i.indkey) \
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 \
                   AND NOT a.attisdropped ORDER BY a.attnum",
                &[&schema, &table],
            )
            .await
            .map_err(query_err(format!("reading the columns of {name}")))?;
        if rows.is_empty() {
            return Err(PgError::Unexpected(format!(
                "{name} does not exist on the target (was it dropped there?)"
            )));
        }
        let mut columns = HashMap::new();
        let mut pk = Vec::new();
        for r in rows {
            let (col, ty, typname, primary): (String, String, String, bool) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            if primary {
                pk.push(col.clone());
            }
            let enc = match typname.as_str() {
                "bool" => Enc::Bool,
                "bytea" => Enc::Bytea,
                "geometry" => Enc::Geometry,
                "bit" | "varbit" => Enc::Bit(
                    ty.trim_start_matches("bit(")
                        .trim_end_matches(')')
                        .parse()
                        .unwrap_or(1),
                ),
                "date" => Enc::Date,
                "timestamp" => Enc::Timestamp,
                "timestamptz" => Enc::TimestampTz,
                "interval" => Enc::Interval,
                "float4" | "float8" => Enc::Float,
                "int2" | "int4" | "int8" | "numeric" => Enc::Number,
                _ => Enc::Text,
            };
            columns.insert(col.to_lowercase(), Col { name: col, ty, enc });
        }
        let shape = Arc::new(TableShape {
            name,
            columns,
            key: pk,
        });
        self.shapes.insert(key, shape.clone());
        Ok(shape)
    }

    async fn route(&mut self, schema: &str, table: &str) -> Result<Route, PgError> {
        let n = self.lanes.len();
        if n == 1 {
            return Ok(Route::Lane(0));
        }
        let key = (schema.to_string(), table.to_string());
        if let Some(r) = self.routes.get(&key) {
            return Ok(*r);
        }
        if self.fk_groups.is_none() {
            let rows = self
                .meta
                .query(
                    "SELECT cn.nspname::text, cl.relname::text, fn.nspname::text, fl.relname::text \
                     FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid \
                     JOIN pg_namespace cn ON cn.oid = cl.relnamespace \
                     JOIN pg_class fl ON fl.oid = c.confrelid \
                     JOIN pg_namespace fn ON fn.oid = fl.relnamespace WHERE c.contype = 'f'",
                    &[],
                )
                .await
                .map_err(query_err("reading foreign keys"))?;
            let edges: Vec<(String, String, String, String)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            self.fk_groups = Some(crate::catalog::fk_groups(&edges));
        }
        let unique = self
            .meta
            .query_opt(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique \
                 AND NOT i.indisprimary LIMIT 1",
                &[&schema, &table],
            )
            .await
            .map_err(query_err("reading unique keys"))?
            .is_some();
        let group = self.fk_groups.as_ref().and_then(|g| g.get(&key));
        let route = match group {
            Some(g) => Route::Lane(sql::fnv1a(g.as_bytes()) as usize % n),
            None if unique => {
                Route::Lane(sql::fnv1a(format!("{schema}.{table}").as_bytes()) as usize % n)
            }
            None => Route::ByKey,
        };
        self.routes.insert(key, route);
        Ok(route)
    }

    fn lane_of(&self, route: Route, shape: &TableShape, image: &Image) -> usize {
        let n = self.lanes.len();
        match route {
            Route::Lane(i) => i,
            Route::ByKey if shape.key.is_empty() => sql::fnv1a(shape.name.as_bytes()) as usize % n,
            Route::ByKey => {
                let mut key = Vec::new();
                for k in &shape.key {
                    if let Some(v) = find(image, k) {
                        key.extend_from_slice(format!("{v:?}").as_bytes());
                        key.push(0);
                    }
                }
                sql::fnv1a(&key) as usize % n
            }
        }
    }

    async fn rows_inner(&mut self, change: RowChange<'_>) -> Result<(), CdcError> {
        let RowChange {
            db,
            table,
            op,
            images,
            flags,
            safe,
            at,
            info,
        } = change;
        if images.is_empty() {
            return Ok(());
        }
        let apply_err = |source: PgError| CdcError::PgApply {
            at: at.to_string(),
            source: Box::new(source),
        };
        let shape = self.shape(db, table).await.map_err(apply_err)?;
        let route = self.route(db, table).await.map_err(apply_err)?;
        let n = self.lanes.len();
        let mut per_lane: Vec<Vec<(Option<Image>, Option<Image>)>> = vec![Vec::new(); n];
        for (before, after) in images {
            let Some(first) = before.as_ref().or(after.as_ref()) else {
                continue;
            };
            let lane = self.lane_of(route, &shape, first);
            if let (Some(b), Some(a)) = (&before, &after) {
                let to = self.lane_of(route, &shape, a);
                if op == Op::Update && to != lane {
                    push(&mut per_lane, lane, (Some(b.clone()), None));
                    push(&mut per_lane, to, (None, Some(a.clone())));
                    continue;
                }
            }
            push(&mut per_lane, lane, (before, after));
        }
        let w = Writer {
            shape: &shape,
            info,
            charsets: &self.charsets,
            mapping: &self.job.mapping,
            table,
        };
        for (i, rows) in per_lane.into_iter().enumerate() {
            let skip = |l: &Lane| l.skip_until.as_ref().is_some_and(|s| at <= s);
            if rows.is_empty() || self.lanes.get(i).is_none_or(skip) {
                continue;
            }
            let statements = w
                .statements(&rows, safe)
                .map_err(|why| CdcError::Unsupported {
                    at: at.to_string(),
                    message: why,
                })?;
            let Some(lane) = self.lanes.get_mut(i) else {
                continue;
            };
            lane.at = at.to_string();
            if lane.txn_mark.is_none() {
                lane.txn_mark = Some(lane.pending.len());
                lane.txn_opened = !lane.in_txn;
            }
            if !lane.in_txn {
                lane.queue("BEGIN");
                lane.in_txn = true;
                lane.fk_deferred = false;
            }
            // Rows the source wrote with foreign_key_checks = 0 (or in the
            // hand-over window, where the target holds a mix of old and new
            // rows) are checked at commit, not per statement.
            if (safe || flags.no_foreign_key_checks) && !lane.fk_deferred {
                lane.queue("SET CONSTRAINTS ALL DEFERRED");
                lane.fk_deferred = true;
            }
            for s in statements {
                lane.queue(&s);
                if lane.pending.len() > BATCH_BYTES {
                    lane.dispatch().await?;
                }
            }
        }
        Ok(())
    }

    /// Copies a table whole at a consistent snapshot of the source.
    async fn copy_inner(
        &mut self,
        db: &str,
        table: &str,
        target_db: &str,
    ) -> Result<BinlogPos, CdcError> {
        self.settle().await?;
        let pos = crate::pg::load::copy_table_now(
            &self.job,
            &self.source,
            &self.target,
            db,
            table,
            target_db,
        )
        .await
        .map_err(|e| match e {
            crate::pg::load::LoadError::Pg(p) => CdcError::Pg(p),
            crate::pg::load::LoadError::Source(d) => CdcError::Db(d),
            other => CdcError::Setup(format!("copying {db}.{table}: {other}")),
        })?;
        self.forget_catalog();
        Ok(pos)
    }

    async fn execute_inner(&mut self, db: &str, statement: &str) -> Result<(), TargetError> {
        let rows = self
            .meta
            .query(
                "SELECT table_schema::text, table_name::text, column_name::text, \
                 CASE WHEN data_type = 'timestamp with time zone' THEN data_type \
                      WHEN data_type LIKE 'timestamp%' THEN 'timestamp' \
                      ELSE data_type END::text, is_identity = 'YES' \
                 FROM information_schema.columns \
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'ferry') \
                 ORDER BY ordinal_position",
                &[],
            )
            .await
            .map_err(query_err("reading the target's columns"))?;
        let mut existing = crate::pg::ddl::Existing::new();
        for r in rows {
            existing.entry((r.get(0), r.get(1))).or_default().push(
                crate::pg::ddl::ExistingColumn {
                    name: r.get(2),
                    data_type: r.get(3),
                    identity: r.get(4),
                },
            );
        }
        let translated = crate::pg::ddl::translate(statement, db, &self.job.mapping, &existing)
            .map_err(|why| {
                TargetError::Untranslatable(format!(
                    "{why}. Apply its effect on the PostgreSQL target by hand, then restart \
                         the job with [cdc] ddl = \"skip\" until it is past this statement"
                ))
            })?;
        for note in &translated.notes {
            warn!(statement = %crate::model::truncate(statement, 200), "{note}");
        }
        if translated.statements.is_empty() {
            return Ok(());
        }
        // One transaction: PostgreSQL's DDL is transactional, so a
        // statement is applied whole or not at all.
        let mut sql = String::from("BEGIN;\n");
        for s in &translated.statements {
            info!(statement = %s, "applying translated DDL");
            sql.push_str(s);
            sql.push_str(";\n");
        }
        sql.push_str("COMMIT");
        let result = self.meta.batch_execute(&sql).await;
        self.forget_catalog();
        if result.is_err() {
            let _ = self.meta.batch_execute("ROLLBACK").await;
        }
        result
            .map_err(query_err(crate::model::truncate(&sql, 300)))
            .map_err(TargetError::Pg)
    }
}

/// A row's value of column `name` (case-insensitive).
fn find<'a>(image: &'a Image, name: &str) -> Option<&'a Value> {
    image
        .columns
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case(name))
        .and_then(|i| image.values.get(i))
}

fn push<T>(per_lane: &mut [Vec<T>], lane: usize, row: T) {
    if let Some(v) = per_lane.get_mut(lane) {
        v.push(row);
    }
}

/// Writes the statements of one table's rows.
struct Writer<'a> {
    shape: &'a TableShape,
    info: &'a TableInfo,
    charsets: &'a Charsets,
    mapping: &'a Mapping,
    table: &'a str,
}

type Pair = (Option<Image>, Option<Image>);

impl Writer<'_> {
    fn statements(&self, rows: &[Pair], safe: bool) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut inserts: Vec<&Image> = Vec::new();
        let mut deletes: Vec<&Image> = Vec::new();
        let keyed = !self.shape.key.is_empty();
        let flush_inserts = |out: &mut Vec<String>, inserts: &mut Vec<&Image>| {
            if inserts.is_empty() {
                return Ok::<(), String>(());
            }
            out.extend(self.insert(inserts, safe && keyed)?);
            inserts.clear();
            Ok(())
        };
        for pair in rows {
            match pair {
                (None, Some(a)) => {
                    if !deletes.is_empty() {
                        out.extend(self.delete(&deletes)?);
                        deletes.clear();
                    }
                    inserts.push(a);
                }
                (Some(b), None) => {
                    flush_inserts(&mut out, &mut inserts)?;
                    if keyed {
                        deletes.push(b);
                    } else {
                        out.push(self.delete_keyless(b)?);
                    }
                }
                (Some(b), Some(a)) => {
                    flush_inserts(&mut out, &mut inserts)?;
                    if !deletes.is_empty() {
                        out.extend(self.delete(&deletes)?);
                        deletes.clear();
                    }
                    if let Some(s) = self.update(b, a, safe && keyed)? {
                        out.push(s);
                    }
                }
                (None, None) => {}
            }
        }
        flush_inserts(&mut out, &mut inserts)?;
        if !deletes.is_empty() {
            out.extend(self.delete(&deletes)?);
        }
        Ok(out)
    }

    /// The columns of an image that the target has: (index, column).
    fn kept<'i>(&'i self, image: &'i Image) -> impl Iterator<Item = (usize, &'i Col)> + 'i {
        image.columns.iter().enumerate().filter_map(|(i, c)| {
            self.shape
                .columns
                .get(&c.name.to_lowercase())
                .map(|col| (i, col))
        })
    }

    fn value(&self, out: &mut String, image: &Image, i: usize, col: &Col) -> Result<(), String> {
        let (Some(src), Some(v)) = (image.columns.get(i), image.values.get(i)) else {
            out.push_str("NULL");
            return Ok(());
        };
        let members = |names: &Vec<Option<Vec<String>>>| names.get(i).and_then(|n| n.clone());
        pg_literal(
            out,
            v,
            src,
            col,
            (members(&self.info.enums), members(&self.info.sets)),
            self.charsets,
            self.mapping,
        )
        .map_err(|why| format!("{}.{}: {why}", self.table, src.name))
    }

    fn insert(&self, rows: &[&Image], upsert: bool) -> Result<Vec<String>, String> {
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let cols: Vec<(usize, &Col)> = self.kept(first).collect();
        let names: Vec<String> = cols.iter().map(|(_, c)| ident(&c.name)).collect();
        let head = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.shape.name,
            names.join(", ")
        );
        let tail = if upsert {
            self.on_conflict(&cols)
        } else {
            String::new()
        };
        let mut out = Vec::new();
        let mut sql = head.clone();
        let mut n = 0;
        for row in rows {
            if n > 0 {
                sql.push(',');
            }
            sql.push('(');
            for (k, (i, col)) in cols.iter().enumerate() {
                if k > 0 {
                    sql.push(',');
                }
                self.value(&mut sql, row, *i, col)?;
            }
            sql.push(')');
            n += 1;
            if sql.len() > BATCH_BYTES {
                sql.push_str(&tail);
                out.push(std::mem::replace(&mut sql, head.clone()));
                n = 0;
            }
        }
        if n > 0 {
            sql.push_str(&tail);
            out.push(sql);
        }
        Ok(out)
    }

    fn on_conflict(&self, cols: &[(usize, &Col)]) -> String {
        let key: Vec<String> = self.shape.key.iter().map(|k| ident(k)).collect();
        let sets: Vec<String> = cols
            .iter()
            .filter(|(_, c)| !self.shape.key.contains(&c.name))
            .map(|(_, c)| format!("{n} = EXCLUDED.{n}", n = ident(&c.name)))
            .collect();
        if sets.is_empty() {
            format!(" ON CONFLICT ({}) DO NOTHING", key.join(", "))
        } else {
            format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                key.join(", "),
                sets.join(", ")
            )
        }
    }

    /// `key = value AND ...` of a row by the target's primary key.
    fn by_key(&self, image: &Image) -> Result<String, String> {
        let mut out = String::new();
        for (n, k) in self.shape.key.iter().enumerate() {
            let i = image
                .columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(k))
                .ok_or_else(|| format!("the row has no value of key column {k}"))?;
            let col = self
                .shape
                .columns
                .get(&k.to_lowercase())
                .ok_or_else(|| format!("no column {k}"))?;
            if n > 0 {
                out.push_str(" AND ");
            }
            let _ = write!(out, "{} = ", ident(k));
            self.value(&mut out, image, i, col)?;
        }
        Ok(out)
    }

    fn delete(&self, rows: &[&Image]) -> Result<Vec<String>, String> {
        let mut conds = Vec::with_capacity(rows.len());
        for r in rows {
            conds.push(format!("({})", self.by_key(r)?));
        }
        Ok(conds
            .chunks(1000)
            .map(|c| format!("DELETE FROM {} WHERE {}", self.shape.name, c.join(" OR ")))
            .collect())
    }

    /// A keyless table's row: the first one equal in every column.
    fn where_all(&self, image: &Image) -> Result<String, String> {
        let mut out = String::new();
        for (n, (i, col)) in self.kept(image).enumerate() {
            if n > 0 {
                out.push_str(" AND ");
            }
            let _ = write!(out, "{} IS NOT DISTINCT FROM ", ident(&col.name));
            self.value(&mut out, image, i, col)?;
        }
        Ok(out)
    }

    fn delete_keyless(&self, image: &Image) -> Result<String, String> {
        Ok(format!(
            "DELETE FROM {t} WHERE ctid = (SELECT ctid FROM {t} WHERE {} LIMIT 1)",
            self.where_all(image)?,
            t = self.shape.name
        ))
    }

    fn update(&self, b: &Image, a: &Image, safe: bool) -> Result<Option<String>, String> {
        let same_shape = a.columns == b.columns;
        let mut sets = String::new();
        for (i, col) in self.kept(a) {
            let unchanged = same_shape && b.values.get(i) == a.values.get(i);
            if unchanged && !safe {
                continue;
            }
            if !sets.is_empty() {
                sets.push_str(", ");
            }
            let _ = write!(sets, "{} = ", ident(&col.name));
            self.value(&mut sets, a, i, col)?;
        }
        let t = &self.shape.name;
        if self.shape.key.is_empty() {
            if sets.is_empty() {
                return Ok(None);
            }
            return Ok(Some(format!(
                "UPDATE {t} SET {sets} WHERE ctid = (SELECT ctid FROM {t} WHERE {} LIMIT 1)",
                self.where_all(b)?
            )));
        }
        let locate = self.by_key(b)?;
        if !safe {
            if sets.is_empty() {
                return Ok(None);
            }
            return Ok(Some(format!("UPDATE {t} SET {sets} WHERE {locate}")));
        }
        // Safe mode: the row may be missing (or changed already): then the
        // after image is upserted, in the same statement.
        let cols: Vec<(usize, &Col)> = self.kept(a).collect();
        let names: Vec<String> = cols.iter().map(|(_, c)| ident(&c.name)).collect();
        let mut values = String::new();
        for (k, (i, col)) in cols.iter().enumerate() {
            if k > 0 {
                values.push(',');
            }
            self.value(&mut values, a, *i, col)?;
        }
        Ok(Some(format!(
            "WITH u AS (UPDATE {t} SET {sets} WHERE {locate} RETURNING 1) \
             INSERT INTO {t} ({}) SELECT {values} WHERE NOT EXISTS (SELECT 1 FROM u){}",
            names.join(", "),
            self.on_conflict(&cols)
        )))
    }
}

/// Appends `v` (a binlog value of source column `src`) as a literal of
/// target column `col`.
fn pg_literal(
    out: &mut String,
    v: &Value,
    src: &ColumnInfo,
    col: &Col,
    (enums, sets): (Option<Vec<String>>, Option<Vec<String>>),
    charsets: &Charsets,
    mapping: &Mapping,
) -> Result<(), String> {
    use mysql_async::consts::ColumnType as T;
    let cast = |out: &mut String, text: &str| {
        out.push_str(&literal(text));
        out.push_str("::");
        out.push_str(&col.ty);
    };
    let number = |v: &Value| -> Option<u64> {
        match v {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::UInt(u) => Some(*u),
            Value::Bytes(b) => Some(
                b.iter()
                    .rev()
                    .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
            ),
            _ => None,
        }
    };
    if matches!(v, Value::NULL) {
        out.push_str("NULL");
        return Ok(());
    }
    if src.ty == T::MYSQL_TYPE_ENUM {
        let n = number(v).ok_or("an ENUM value that is not an index")?;
        let names = enums.ok_or(
            "ENUM member names missing from the binlog (set binlog_row_metadata = FULL on the \
             source)",
        )?;
        let name = match n {
            0 => String::new(),
            n => names
                .get(usize::try_from(n - 1).unwrap_or(usize::MAX))
                .cloned()
                .ok_or_else(|| format!("ENUM index {n} beyond its {} members", names.len()))?,
        };
        cast(out, &name);
        return Ok(());
    }
    if src.ty == T::MYSQL_TYPE_SET {
        let mask = number(v).ok_or("a SET value that is not a bitmask")?;
        let names = sets.ok_or(
            "SET member names missing from the binlog (set binlog_row_metadata = FULL on the \
             source)",
        )?;
        let chosen: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 64 && mask & (1u64 << i) != 0)
            .map(|(_, n)| n.as_str())
            .collect();
        cast(out, &chosen.join(","));
        return Ok(());
    }
    match (v, col.enc) {
        (Value::Int(i), Enc::Bool) => match i {
            0 => out.push_str("false"),
            1 => out.push_str("true"),
            other => {
                return Err(format!(
                    "{other} in a TINYINT(1) carried as boolean (tinyint1 = \"smallint\" \
                     keeps it)"
                ))
            }
        },
        (Value::UInt(u), Enc::Bool) => match u {
            0 => out.push_str("false"),
            1 => out.push_str("true"),
            other => return Err(format!("{other} in a TINYINT(1) carried as boolean")),
        },
        (Value::Int(i), _) => cast(out, itoa::Buffer::new().format(*i)),
        (Value::UInt(u), _) => cast(out, itoa::Buffer::new().format(*u)),
        (Value::Float(f), _) => cast(out, &f.to_string()),
        (Value::Double(f), _) => cast(out, &f.to_string()),
        (Value::Bytes(b), Enc::Bytea) => {
            let mut hex = String::with_capacity(b.len() * 2 + 2);
            hex.push_str("\\x");
            for x in b {
                let _ = write!(hex, "{x:02x}");
            }
            cast(out, &hex);
        }
        (Value::Bytes(b), Enc::Bit(n)) => cast(out, &crate::pg::types::bit_text(b, n)),
        (Value::Bytes(b), Enc::Geometry) => match crate::pg::types::ewkb_hex(b) {
            Some(hex) => cast(out, &hex),
            None => return Err(format!("{} bytes that are not a geometry", b.len())),
        },
        (Value::Bytes(b), Enc::Bool) => match b.as_slice() {
            b"0" => out.push_str("false"),
            b"1" => out.push_str("true"),
            other => {
                return Err(format!(
                    "{} in a TINYINT(1) carried as boolean",
                    String::from_utf8_lossy(other)
                ))
            }
        },
        (Value::Bytes(b), _) => {
            let text = if src.is_text() {
                charsets.decode(Some(src.collation), b)?
            } else {
                String::from_utf8(b.clone())
                    .map_err(|_| "bytes that are not UTF-8 text in a text column".to_string())?
            };
            let text = if text.contains('\0') {
                match mapping.nul_in_text {
                    NulInText::Strip => text.replace('\0', ""),
                    NulInText::Refuse => {
                        return Err(
                            "a NUL character in text (nul_in_text = \"strip\" removes it)".into(),
                        )
                    }
                }
            } else {
                text
            };
            cast(out, &text);
        }
        (Value::Date(y, mo, d, h, mi, s, us), Enc::Date | Enc::Timestamp | Enc::TimestampTz) => {
            if *y == 0 || *mo == 0 || *d == 0 {
                match mapping.zero_dates {
                    ZeroDates::Null => out.push_str("NULL"),
                    ZeroDates::Infinity => cast(out, "-infinity"),
                    ZeroDates::Refuse => {
                        return Err(format!(
                            "zero date {y:04}-{mo:02}-{d:02} (zero_dates = \"null\" or \
                             \"infinity\" maps it)"
                        ))
                    }
                }
                return Ok(());
            }
            let mut text = format!("{y:04}-{mo:02}-{d:02}");
            if col.enc != Enc::Date {
                let _ = write!(text, " {h:02}:{mi:02}:{s:02}");
                if *us > 0 {
                    let _ = write!(text, ".{us:06}");
                }
                if col.enc == Enc::TimestampTz {
                    text.push_str("+00");
                }
            }
            cast(out, &text);
        }
        (Value::Date(y, mo, d, h, mi, s, us), _) => {
            // A date into a column DDL retyped: its text.
            cast(
                out,
                &format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"),
            );
        }
        (Value::Time(neg, days, h, m, s, us), _) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            let text = if *us > 0 {
                format!("{sign}{hours}:{m:02}:{s:02}.{us:06}")
            } else {
                format!("{sign}{hours}:{m:02}:{s:02}")
            };
            cast(out, &text);
        }
        (Value::NULL, _) => out.push_str("NULL"),
    }
    Ok(())
}

impl Lane {
    fn queue(&mut self, sql: &str) {
        self.pending.push_str(sql);
        self.pending.push_str(";\n");
    }

    /// Sends what is queued (after the batch before it) without waiting.
    async fn dispatch(&mut self) -> Result<(), CdcError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        if let Some(mark) = self.txn_mark {
            if !self.txn_sent {
                self.txn_sent = true;
                if !self.txn_opened && mark <= self.pending.len() {
                    self.pending.insert_str(mark, "SAVEPOINT ferry_txn;\n");
                    self.txn_savepoint = true;
                }
            }
        }
        let sql = std::mem::take(&mut self.pending);
        let client = self.client.clone();
        let task = tokio::spawn(async move { client.batch_execute(&sql).await });
        self.inflight = Some((task, self.at.clone()));
        Ok(())
    }

    async fn settle(&mut self) -> Result<(), CdcError> {
        let Some((task, _)) = self.inflight.as_mut() else {
            return Ok(());
        };
        let joined = task.await;
        let at = self.inflight.take().map(|(_, at)| at).unwrap_or_default();
        let result = joined.map_err(|e| CdcError::PgApply {
            at: at.clone(),
            source: Box::new(PgError::Unexpected(format!(
                "applying a batch (its task ended: {e})"
            ))),
        })?;
        result.map_err(|e| CdcError::PgApply {
            at,
            source: Box::new(query_err("applying a batch")(e)),
        })
    }
}

impl Target for PgApplier {
    async fn rows(&mut self, change: RowChange<'_>) -> Result<(), CdcError> {
        self.rows_inner(change).await
    }

    fn begin_txn(&mut self) {
        for lane in &mut self.lanes {
            lane.txn_mark = None;
            lane.txn_sent = false;
            lane.txn_opened = false;
            lane.txn_savepoint = false;
        }
    }

    async fn rollback_txn(&mut self) -> Result<(), CdcError> {
        for lane in &mut self.lanes {
            let Some(mark) = lane.txn_mark.take() else {
                continue;
            };
            if !lane.txn_sent {
                lane.pending.truncate(mark);
                if lane.txn_opened {
                    lane.in_txn = false;
                }
            } else if lane.txn_savepoint {
                lane.queue("ROLLBACK TO SAVEPOINT ferry_txn");
            } else {
                lane.pending.clear();
                lane.queue("ROLLBACK");
                lane.in_txn = false;
            }
            lane.txn_sent = false;
            lane.txn_opened = false;
            lane.txn_savepoint = false;
        }
        Ok(())
    }

    async fn commit(&mut self, end: TxnEnd) -> Result<(), CdcError> {
        self.settle().await?;
        let mut sent = false;
        for lane in &mut self.lanes {
            if !lane.in_txn && !lane.dirty {
                continue;
            }
            let marker = format!(
                "INSERT INTO ferry.checkpoints (job, binlog_file, binlog_pos, gtid) VALUES \
                 ({}, {}, {}, {}) ON CONFLICT (job) DO UPDATE SET binlog_file = \
                 EXCLUDED.binlog_file, binlog_pos = EXCLUDED.binlog_pos, gtid = EXCLUDED.gtid, \
                 updated_at = now()",
                literal(&lane.key),
                literal(&end.0.file),
                end.0.pos,
                end.1.as_deref().map_or_else(|| "NULL".into(), literal)
            );
            lane.queue(&marker);
            if lane.in_txn {
                lane.queue("COMMIT");
            }
            lane.at = end.0.to_string();
            lane.txn_mark = None;
            lane.dispatch().await?;
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

    async fn settle(&mut self) -> Result<(), CdcError> {
        for lane in &mut self.lanes {
            lane.settle().await?;
        }
        if let Some(end) = self.dispatched.take() {
            self.committed = Some(end);
        }
        Ok(())
    }

    async fn abandon(&mut self) {
        let _ = self
            .meta
            .cancel_token()
            .cancel_query(tokio_postgres::NoTls)
            .await;
        for lane in &mut self.lanes {
            lane.pending.clear();
            if let Some((task, _)) = lane.inflight.take() {
                task.abort();
                // The statement is cancelled; the session then ends with
                // this applier, and its transaction with it.
                let _ = lane
                    .client
                    .cancel_token()
                    .cancel_query(tokio_postgres::NoTls)
                    .await;
            }
            if lane.in_txn {
                let _ = lane.client.batch_execute("ROLLBACK").await;
                lane.in_txn = false;
            }
        }
    }

    fn busy(&self) -> bool {
        self.lanes.iter().any(|l| l.inflight.is_some())
    }

    fn queued_bytes(&self) -> usize {
        self.lanes.iter().map(|l| l.pending.len()).sum()
    }

    fn take_committed(&mut self) -> Option<TxnEnd> {
        self.committed.take()
    }

    async fn execute(
        &mut self,
        db: &str,
        sql: &str,
        _ctx: &SessionContext,
    ) -> Result<(), TargetError> {
        self.execute_inner(db, sql).await
    }

    async fn copy_table(
        &mut self,
        db: &str,
        table: &str,
        target_db: &str,
    ) -> Result<BinlogPos, CdcError> {
        self.copy_inner(db, table, target_db).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::consts::ColumnType as T;

    fn src(name: &str, ty: T, collation: u16, primary: bool) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            ty,
            unsigned: false,
            primary,
            collation,
            set_flag: false,
        }
    }

    fn col(name: &str, ty: &str, enc: Enc) -> (String, Col) {
        (
            name.to_lowercase(),
            Col {
                name: name.into(),
                ty: ty.into(),
                enc,
            },
        )
    }

    fn shape(key: &[&str]) -> TableShape {
        TableShape {
            name: "\"s\".\"t\"".into(),
            columns: [
                col("id", "integer", Enc::Number),
                col("Name", "text", Enc::Text),
                col("e", "text", Enc::Text),
                col("flag", "boolean", Enc::Bool),
            ]
            .into_iter()
            .collect(),
            key: key.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn image(id: i64, name: &[u8], e: u8, flag: i64) -> Image {
        let columns: Arc<[ColumnInfo]> = vec![
            src("id", T::MYSQL_TYPE_LONG, 63, true),
            src("name", T::MYSQL_TYPE_VARCHAR, 8, false),
            src("e", T::MYSQL_TYPE_ENUM, 45, false),
            src("flag", T::MYSQL_TYPE_TINY, 63, false),
            src("dropped_on_target", T::MYSQL_TYPE_LONG, 63, false),
        ]
        .into();
        Image {
            columns,
            values: vec![
                Value::Int(id),
                Value::Bytes(name.to_vec()),
                Value::Bytes(vec![e]),
                Value::Int(flag),
                Value::Int(7),
            ],
        }
    }

    fn info() -> TableInfo {
        TableInfo {
            db: "d".into(),
            name: "t".into(),
            enums: vec![None, None, Some(vec!["a".into(), "b".into()]), None, None],
            sets: vec![None; 5],
        }
    }

    fn statements(shape: &TableShape, rows: &[Pair], safe: bool) -> Vec<String> {
        let charsets = Charsets(HashMap::from([(8, "latin1".to_string())]));
        let info = info();
        let w = Writer {
            shape,
            info: &info,
            charsets: &charsets,
            mapping: &Mapping::default(),
            table: "t",
        };
        w.statements(rows, safe).expect("statements")
    }

    #[test]
    fn rows_become_statements_by_key_with_values_as_the_mapping_says() {
        let s = shape(&["id"]);
        let a = image(1, b"caf\xe9 'q'", 2, 1);
        let b = image(1, b"x", 0, 0);
        let out = statements(
            &s,
            &[
                (None, Some(a.clone())),
                (None, Some(image(2, b"y", 1, 0))),
                (Some(b.clone()), Some(a.clone())),
                (Some(image(3, b"z", 1, 0)), None),
                (Some(image(4, b"z", 1, 0)), None),
            ],
            false,
        );
        assert_eq!(
            out,
            vec![
                "INSERT INTO \"s\".\"t\" (\"id\", \"Name\", \"e\", \"flag\") VALUES \
                 ('1'::integer,'café ''q'''::text,'b'::text,true),\
                 ('2'::integer,'y'::text,'a'::text,false)",
                "UPDATE \"s\".\"t\" SET \"Name\" = 'café ''q'''::text, \"e\" = 'b'::text, \
                 \"flag\" = true WHERE \"id\" = '1'::integer",
                "DELETE FROM \"s\".\"t\" WHERE (\"id\" = '3'::integer) OR (\"id\" = '4'::integer)",
            ]
        );
        // Safe mode: upserts, and an update that finds no row inserts.
        let out = statements(&s, &[(None, Some(a.clone())), (Some(b), Some(a))], true);
        assert!(
            out[0].ends_with(
                "ON CONFLICT (\"id\") DO UPDATE SET \"Name\" = EXCLUDED.\"Name\", \
                 \"e\" = EXCLUDED.\"e\", \"flag\" = EXCLUDED.\"flag\""
            ),
            "{}",
            out[0]
        );
        assert!(
            out[1].starts_with("WITH u AS (UPDATE \"s\".\"t\" SET")
                && out[1].contains("WHERE NOT EXISTS (SELECT 1 FROM u) ON CONFLICT (\"id\")"),
            "{}",
            out[1]
        );
    }

    #[test]
    fn a_keyless_table_changes_one_row_at_a_time() {
        let s = shape(&[]);
        let out = statements(&s, &[(Some(image(1, b"x", 1, 0)), None)], true);
        assert_eq!(
            out,
            vec![
                "DELETE FROM \"s\".\"t\" WHERE ctid = (SELECT ctid FROM \"s\".\"t\" WHERE \
                 \"id\" IS NOT DISTINCT FROM '1'::integer AND \"Name\" IS NOT DISTINCT FROM \
                 'x'::text AND \"e\" IS NOT DISTINCT FROM 'a'::text AND \"flag\" IS NOT \
                 DISTINCT FROM false LIMIT 1)"
            ]
        );
    }

    #[test]
    fn values_that_do_not_fit_are_refused_by_name() {
        let s = shape(&["id"]);
        let charsets = Charsets::default();
        let info = info();
        let w = Writer {
            shape: &s,
            info: &info,
            charsets: &charsets,
            mapping: &Mapping::default(),
            table: "t",
        };
        let err = w
            .statements(&[(None, Some(image(1, b"x", 1, 5)))], false)
            .expect_err("5 is no boolean");
        assert!(err.contains("t.flag") && err.contains("tinyint1"), "{err}");
        let date = Col {
            name: "d".into(),
            ty: "date".into(),
            enc: Enc::Date,
        };
        let mut out = String::new();
        let zero = Value::Date(0, 0, 0, 0, 0, 0, 0);
        let d = src("d", T::MYSQL_TYPE_DATE, 63, false);
        let err = pg_literal(
            &mut out,
            &zero,
            &d,
            &date,
            (None, None),
            &charsets,
            &Mapping::default(),
        );
        assert!(err.is_err_and(|e| e.contains("zero_dates")));
        let null = Mapping {
            zero_dates: ZeroDates::Null,
            ..Mapping::default()
        };
        pg_literal(&mut out, &zero, &d, &date, (None, None), &charsets, &null).expect("null");
        assert_eq!(out, "NULL");
        let mut out = String::new();
        let bits = Col {
            name: "b".into(),
            ty: "bit(10)".into(),
            enc: Enc::Bit(10),
        };
        let b = src("b", T::MYSQL_TYPE_BIT, 63, false);
        pg_literal(
            &mut out,
            &Value::Bytes(vec![2, 0xaa]),
            &b,
            &bits,
            (None, None),
            &charsets,
            &null,
        )
        .expect("bits");
        assert_eq!(out, "'1010101010'::bit(10)");
        let mut out = String::new();
        let set = src("s", T::MYSQL_TYPE_SET, 45, false);
        let text = Col {
            name: "s".into(),
            ty: "text".into(),
            enc: Enc::Text,
        };
        let names = Some(vec!["x".into(), "y".into(), "z".into()]);
        pg_literal(
            &mut out,
            &Value::UInt(5),
            &set,
            &text,
            (None, names),
            &charsets,
            &null,
        )
        .expect("set");
        assert_eq!(out, "'x,z'::text");
        let mut out = String::new();
        let tm = src("tm", T::MYSQL_TYPE_TIME, 63, false);
        let iv = Col {
            name: "tm".into(),
            ty: "interval".into(),
            enc: Enc::Interval,
        };
        pg_literal(
            &mut out,
            &Value::Time(true, 34, 22, 59, 59, 0),
            &tm,
            &iv,
            (None, None),
            &charsets,
            &null,
        )
        .expect("time");
        assert_eq!(out, "'-838:59:59'::interval");
    }
}
