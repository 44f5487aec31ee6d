//! Applying decoded row changes to the target, inside one target
//! transaction per source transaction.

use std::collections::{HashMap, HashSet};

use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};

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
    pub columns: Vec<ColumnInfo>,
    pub values: Vec<Value>,
}

impl Image {
    pub fn from_row(row: BinlogRow) -> Result<Image, DecodeError> {
        let columns: Vec<ColumnInfo> = row
            .columns_ref()
            .iter()
            .map(ColumnInfo::from_column)
            .collect();
        let mut values = Vec::with_capacity(columns.len());
        for (col, v) in columns.iter().zip(row.unwrap()) {
            values.push(decode::value(col, v)?);
        }
        Ok(Image { columns, values })
    }
}

/// The job's row in `ferry_meta.checkpoints` on the target.
pub struct Marker {
    pub position: BinlogPos,
    pub gtid: Option<String>,
}

/// Applies changes to the target over one connection.
pub struct Applier {
    target: Connector,
    conn: Conn,
    job: String,
    in_txn: bool,
    /// A statement outside a transaction (DDL) ran since the last commit.
    dirty: bool,
    /// Statements of the open transaction not sent yet (`;`-separated).
    pending: String,
    /// Generated columns of target tables (never written).
    generated: HashMap<(String, String), HashSet<String>>,
    /// Collation id → (charset, collation) on the target.
    collations: HashMap<u16, (String, String)>,
}

const MARKER_DDL: &str = "CREATE TABLE IF NOT EXISTS ferry_meta.checkpoints (\
    job VARCHAR(64) NOT NULL PRIMARY KEY, \
    binlog_file VARCHAR(512) NOT NULL, \
    binlog_pos BIGINT UNSIGNED NOT NULL, \
    gtid VARCHAR(4096) NULL, \
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))";

impl Applier {
    pub async fn new(job: &JobSpec, target: &Connector) -> Result<Applier, CdcError> {
        let mut conn = target.connect().await?;
        // The binlog does not hold rows changed by ON UPDATE/DELETE CASCADE:
        // the target's own foreign keys must cascade them.
        for sql in [
            "SET SESSION foreign_key_checks = 1",
            "CREATE DATABASE IF NOT EXISTS ferry_meta",
            MARKER_DDL,
        ] {
            conn.query_drop(sql)
                .await
                .map_err(target.query_err("creating ferry_meta.checkpoints"))?;
        }
        // One applier per job and target: a session of a killed Ferry may
        // still be executing its last batch (the server only notices the
        // client is gone afterwards), and reading the checkpoint row before
        // that batch ends would apply it twice. The named lock is released
        // when that old session ends.
        let name: String = format!("ferry:{}", job.name).chars().take(64).collect();
        let got: Option<i64> = conn
            .exec_first("SELECT GET_LOCK(?, 120)", (&name,))
            .await
            .map_err(target.query_err("taking the job's apply lock"))?;
        if got != Some(1) {
            return Err(CdcError::TargetBusy(job.name.clone()));
        }
        // Some collations (MariaDB's uca1400 family) have no id or charset.
        let rows: Vec<(Option<u64>, Option<String>, String)> = conn
            .query(
                "SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS",
            )
            .await
            .map_err(target.query_err("reading collations"))?;
        let collations = rows
            .into_iter()
            .filter_map(|(id, cs, co)| Some((id? as u16, (cs?, co))))
            .collect();
        Ok(Applier {
            target: target.clone(),
            conn,
            job: job.name.clone(),
            in_txn: false,
            dirty: false,
            pending: String::new(),
            generated: HashMap::new(),
            collations,
        })
    }

    pub async fn marker(&mut self) -> Result<Option<Marker>, CdcError> {
        let row: Option<(String, u64, Option<String>)> = self
            .conn
            .exec_first(
                "SELECT binlog_file, binlog_pos, gtid FROM ferry_meta.checkpoints WHERE job = ?",
                (&self.job,),
            )
            .await
            .map_err(self.target.query_err("reading ferry_meta.checkpoints"))?;
        Ok(row.map(|(file, pos, gtid)| Marker {
            position: BinlogPos { file, pos },
            gtid,
        }))
    }

    async fn begin(&mut self) -> Result<(), DbError> {
        if !self.in_txn {
            self.exec("START TRANSACTION".into()).await?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Ends the source transaction at `pos`: records it in the marker row
    /// and commits, if anything was written.
    pub async fn commit(&mut self, pos: &BinlogPos, gtid: Option<&str>) -> Result<(), CdcError> {
        if !self.in_txn && !self.dirty {
            return Ok(());
        }
        let at = pos.to_string();
        let apply_err = |source: DbError| CdcError::Apply {
            at: at.clone(),
            source: Box::new(source),
        };
        let mut marker =
            b"INSERT INTO ferry_meta.checkpoints (job, binlog_file, binlog_pos, gtid) VALUES ("
                .to_vec();
        sql::push_quoted(&mut marker, self.job.as_bytes());
        marker.push(b',');
        sql::push_quoted(&mut marker, pos.file.as_bytes());
        marker.extend_from_slice(format!(",{},", pos.pos).as_bytes());
        match gtid {
            Some(g) => sql::push_quoted(&mut marker, g.as_bytes()),
            None => marker.extend_from_slice(b"NULL"),
        }
        marker.extend_from_slice(
            b") ON DUPLICATE KEY UPDATE binlog_file = VALUES(binlog_file), \
              binlog_pos = VALUES(binlog_pos), gtid = VALUES(gtid)",
        );
        self.exec(String::from_utf8_lossy(&marker).into_owned())
            .await
            .map_err(apply_err)?;
        if self.in_txn {
            self.exec("COMMIT".into()).await.map_err(apply_err)?;
        }
        // The whole transaction goes to the target in one round trip.
        self.flush().await.map_err(apply_err)?;
        self.in_txn = false;
        self.dirty = false;
        Ok(())
    }

    pub async fn rollback(&mut self) {
        self.pending.clear();
        if self.in_txn {
            let _ = self.conn.query_drop("ROLLBACK").await;
            self.in_txn = false;
        }
    }

    /// Runs a DDL statement in database `db` on the target.
    pub async fn ddl(&mut self, db: &str, sql: &str) -> Result<(), DbError> {
        self.rollback().await;
        self.conn
            .query_drop(format!("USE {}", quote_ident(db)))
            .await
            .map_err(self.target.query_err(format!("USE {db}")))?;
        self.conn
            .query_drop(sql)
            .await
            .map_err(self.target.query_err("DDL"))?;
        self.generated.clear();
        self.dirty = true;
        Ok(())
    }

    async fn generated(&mut self, db: &str, table: &str) -> Result<HashSet<String>, DbError> {
        let key = (db.to_string(), table.to_string());
        if let Some(g) = self.generated.get(&key) {
            return Ok(g.clone());
        }
        let extra: Vec<(String, String)> = self
            .conn
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
        self.generated.insert(key, g.clone());
        Ok(g)
    }

    /// `v` as an exact SQL literal for `col`. Text travels as hex with its
    /// column's charset introducer (the binlog holds it in that charset);
    /// the rest as in the full load.
    fn literal(&self, col: &ColumnInfo, v: &Value) -> String {
        let mut buf = Vec::new();
        match v {
            Value::Bytes(b) if col.is_text() => match self.collations.get(&col.collation) {
                Some((cs, co)) => {
                    buf.extend_from_slice(b"_");
                    buf.extend_from_slice(cs.as_bytes());
                    buf.push(b' ');
                    if b.is_empty() {
                        buf.extend_from_slice(b"''");
                    } else {
                        sql::push_hex(&mut buf, b);
                    }
                    buf.extend_from_slice(b" COLLATE ");
                    buf.extend_from_slice(co.as_bytes());
                }
                None => sql::push_hex(&mut buf, b),
            },
            Value::Bytes(b) if col.is_bytes() => sql::push_hex(&mut buf, b),
            other => sql::push_literal(&mut buf, other, ColumnKind::Plain),
        }
        // Literals are ASCII: hex, digits, dates, identifiers of charsets.
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Applies the rows of one rows event.
    pub async fn rows(
        &mut self,
        db: &str,
        table: &str,
        op: Op,
        images: Vec<(Option<Image>, Option<Image>)>,
        safe: bool,
    ) -> Result<(), DbError> {
        if images.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        let generated = self.generated(db, table).await?;
        let t = qualified(db, table);
        match op {
            Op::Insert => {
                let rows: Vec<Image> = images.into_iter().filter_map(|(_, a)| a).collect();
                self.insert(&t, &generated, &rows, safe).await
            }
            Op::Delete => {
                for (before, _) in images {
                    if let Some(b) = before {
                        let (cond, limit) = self.locate(&b, &generated);
                        self.exec(format!("DELETE FROM {t} WHERE {cond}{limit}"))
                            .await?;
                    }
                }
                Ok(())
            }
            Op::Update => {
                for (before, after) in images {
                    let (Some(b), Some(a)) = (before, after) else {
                        continue;
                    };
                    let keyed = b.columns.iter().any(|c| c.primary);
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
                    let (cond, limit) = self.locate(&b, &generated);
                    let update = (!sets.is_empty())
                        .then(|| format!("UPDATE {t} SET {} WHERE {cond}{limit}", sets.join(", ")));
                    if !(safe && keyed) {
                        if let Some(update) = update {
                            self.exec(update).await?;
                        }
                        continue;
                    }
                    // Safe mode: the row may be missing (or already changed);
                    // then the after image is upserted. Never DELETE + REPLACE:
                    // on the target that would cascade to child rows. The
                    // UPDATE goes alone, so its affected-rows count is its own.
                    self.flush().await?;
                    let found = match update {
                        Some(update) => {
                            self.exec(update).await?;
                            self.flush().await?;
                            self.conn.affected_rows() > 0
                        }
                        None => false,
                    };
                    if !found {
                        self.insert(&t, &generated, std::slice::from_ref(&a), true)
                            .await?;
                    }
                }
                Ok(())
            }
        }
    }

    /// A WHERE condition that finds the row of `image`: its primary key, or
    /// every column (NULL-safe) and `LIMIT 1` on a table without one.
    fn locate(&self, image: &Image, generated: &HashSet<String>) -> (String, &'static str) {
        let keyed = image.columns.iter().any(|c| c.primary);
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

    /// Inserts `rows`; `upsert` (safe mode) turns a duplicate key into an
    /// update of that row, so replaying is harmless.
    async fn insert(
        &mut self,
        t: &str,
        generated: &HashSet<String>,
        rows: &[Image],
        upsert: bool,
    ) -> Result<(), DbError> {
        let Some(first) = rows.first() else {
            return Ok(());
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
        let mut sql = head.clone();
        let mut in_statement = 0;
        for row in rows {
            let tuple: Vec<String> = keep
                .iter()
                .map(|&i| self.literal(&row.columns[i], &row.values[i]))
                .collect();
            if in_statement > 0 {
                sql.push(',');
            }
            sql.push('(');
            sql.push_str(&tuple.join(","));
            sql.push(')');
            in_statement += 1;
            if sql.len() > 1 << 20 {
                sql.push_str(&on_dup);
                self.exec(std::mem::replace(&mut sql, head.clone())).await?;
                in_statement = 0;
            }
        }
        if in_statement > 0 {
            sql.push_str(&on_dup);
            self.exec(sql).await?;
        }
        Ok(())
    }

    /// Bytes of statements queued and not sent yet.
    pub fn queued_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Queues a statement of the current transaction; it reaches the
    /// target at the commit (one round trip), or once 1 MiB has queued.
    async fn exec(&mut self, sql: String) -> Result<(), DbError> {
        if !self.pending.is_empty() {
            self.pending.push_str(";\n");
        }
        self.pending.push_str(&sql);
        if self.pending.len() > 1 << 20 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), DbError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let sql = std::mem::take(&mut self.pending);
        self.conn
            .query_drop(sql.as_str())
            .await
            .map_err(self.target.query_err(truncate(&sql, 300)))
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
