//! Repair: the statements that make the target equal to the source for the
//! rows a verification found differing, written to a file and, with
//! `apply`, run on the target and the rows verified again.
//!
//! Each row is read from the source again when the statements are made:
//! a row on the source becomes a `REPLACE` of the whole row, a row only on
//! the target a `DELETE` by key. Keyless tables get one `INSERT` per
//! missing copy and a `DELETE ... LIMIT n` for extra copies. The sessions
//! run with `foreign_key_checks = 0`, so a `REPLACE` cascades nothing.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use mysql_async::prelude::*;
use mysql_async::Value;

use super::{fetch, Side, TableSql, Verifier, VerifyError, Worker};
use crate::catalog::{Catalog, Column};
use crate::db::{quote_ident, SESSION_SQL_MODE};
use crate::model::{DiffClass, KeyValue, RepairSummary, VerifyDiff, VerifyRun};
use crate::sql::push_literal;

impl Verifier {
    /// Writes the repair statements of `run` to `file`; with `apply`, runs
    /// them on the target and re-verifies the rows. The run is stored
    /// again with what the repair did.
    pub async fn repair(
        &self,
        run: &mut VerifyRun,
        file: &Path,
        apply: bool,
    ) -> Result<RepairSummary, VerifyError> {
        if let Some(t) = self.postgresql() {
            let summary = self.repair_postgresql(t, run, file, apply).await?;
            run.repair = Some(summary.clone());
            self.store.put_verify_run(&self.job.name, run)?;
            return Ok(summary);
        }
        let catalog = Catalog::read(&self.job, &self.source).await?;
        let mut w = Worker {
            src: self.source.connect().await?,
            tgt: self.target.connect().await?,
        };
        // (table index in the run, statements)
        let mut plans: Vec<(usize, String, Vec<Vec<u8>>)> = Vec::new();
        for (i, result) in run.tables.iter().enumerate() {
            if result.diffs.is_empty() {
                continue;
            }
            let Some(table) = catalog.tables.iter().find(|t| t.id() == result.table) else {
                continue;
            };
            let ts = TableSql::new(table);
            let statements = match ts.keyless() {
                true => keyless_statements(&ts, &result.diffs),
                false => self.keyed_statements(&mut w, &ts, &result.diffs).await?,
            };
            plans.push((i, result.table.clone(), statements));
        }
        let count: usize = plans.iter().map(|(_, _, s)| s.len()).sum();
        let sql_mode = format!("SET SESSION sql_mode = '{SESSION_SQL_MODE}';");
        let preamble = [
            "SET NAMES utf8mb4;",
            "SET SESSION time_zone = '+00:00';",
            sql_mode.as_str(),
            "SET SESSION foreign_key_checks = 0;",
        ];
        let session: (&[&str], &str) = (&preamble, "START TRANSACTION");
        write_file(file, &self.job.name, session, &plans)?;
        let mut still = 0;
        if apply {
            for (_, table, statements) in &plans {
                let context = format!("repairing {table}");
                w.tgt
                    .query_drop("START TRANSACTION")
                    .await
                    .map_err(self.target.query_err(context.clone()))?;
                for s in statements {
                    w.tgt
                        .query_drop(s.as_slice())
                        .await
                        .map_err(self.target.query_err(context.clone()))?;
                }
                w.tgt
                    .query_drop("COMMIT")
                    .await
                    .map_err(self.target.query_err(context.clone()))?;
            }
            for (i, _, _) in &plans {
                let Some(result) = run.tables.get_mut(*i) else {
                    continue;
                };
                let Some(table) = catalog.tables.iter().find(|t| t.id() == result.table) else {
                    continue;
                };
                let ts = TableSql::new(table);
                let left = match ts.keyless() {
                    true => self.narrow_keyless(&mut w, &ts, usize::MAX).await?.0,
                    false => {
                        let keys: Vec<Vec<KeyValue>> =
                            result.diffs.iter().map(|d| d.key.clone()).collect();
                        let left = self.compare_keys(&mut w, &ts, &keys).await?;
                        self.confirm(&mut w, &ts, left).await?
                    }
                };
                still += left.iter().map(|d| d.copies).sum::<u64>();
            }
        }
        let _ = w.src.disconnect().await;
        let _ = w.tgt.disconnect().await;
        let summary = RepairSummary {
            file: file.display().to_string(),
            statements: count as u64,
            applied: apply,
            still_differing: still,
        };
        run.repair = Some(summary.clone());
        self.store.put_verify_run(&self.job.name, run)?;
        Ok(summary)
    }

    /// A PostgreSQL target: statements in its dialect (see
    /// `pg::verify::repair_plan`), each table's in one transaction; the
    /// repaired tables verified again.
    async fn repair_postgresql(
        &self,
        target: &crate::job::Endpoint,
        run: &VerifyRun,
        file: &Path,
        apply: bool,
    ) -> Result<RepairSummary, VerifyError> {
        let pg_err = |e: crate::pg::load::LoadError| VerifyError::Postgresql(e.to_string());
        let mut catalog = Catalog::read(&self.job, &self.source).await?;
        catalog.tables.retain(|t| {
            run.tables
                .iter()
                .any(|r| r.table == t.id() && !r.diffs.is_empty())
        });
        let pg = crate::pg::PgConnector::new(target);
        let job = crate::pg::conn::with_postgis(&self.job, &pg)
            .await
            .map_err(|e| VerifyError::Postgresql(e.to_string()))?;
        let tables = crate::pg::schema::read(&job, &self.source, &catalog).await?;
        let plan = crate::pg::verify::repair_plan(&job, &self.source, &tables, &run.tables)
            .await
            .map_err(pg_err)?;
        let plans: Vec<(usize, String, Vec<Vec<u8>>)> = plan
            .tables
            .iter()
            .map(|(t, st)| {
                (
                    0,
                    t.clone(),
                    st.iter().map(|s| s.clone().into_bytes()).collect(),
                )
            })
            .collect();
        let count: usize = plans.iter().map(|(_, _, s)| s.len()).sum();
        let session: (&[&str], &str) = (&["SET TimeZone = 'UTC';"], "BEGIN");
        write_file(file, &self.job.name, session, &plans)?;
        let mut still = 0;
        if apply {
            let client = pg
                .connect()
                .await
                .map_err(|e| VerifyError::Postgresql(e.to_string()))?;
            for (table, statements) in &plan.tables {
                let batch = format!("BEGIN; {}; COMMIT", statements.join("; "));
                client.batch_execute(&batch).await.map_err(|e| {
                    VerifyError::Postgresql(format!(
                        "repairing {table}: {}",
                        crate::pg::conn::pg_message(&e)
                    ))
                })?;
            }
            let results = crate::pg::verify::tables(
                &job,
                &self.source,
                &pg,
                &tables,
                (true, None),
                &self.cancel,
                &|_| {},
            )
            .await
            .map_err(pg_err)?;
            still = results
                .iter()
                .flat_map(|r| r.diffs.iter())
                .map(|d| d.copies)
                .sum();
        }
        Ok(RepairSummary {
            file: file.display().to_string(),
            statements: count as u64,
            applied: apply,
            still_differing: still,
        })
    }

    /// Deletes first (rows the source no longer has), then the source's
    /// rows in full.
    async fn keyed_statements(
        &self,
        w: &mut Worker,
        ts: &TableSql<'_>,
        diffs: &[VerifyDiff],
    ) -> Result<Vec<Vec<u8>>, VerifyError> {
        let keys: Vec<Vec<KeyValue>> = diffs.iter().map(|d| d.key.clone()).collect();
        let mut on_source: HashMap<Vec<u8>, Vec<Value>> = HashMap::new();
        for batch in keys.chunks(500) {
            let (cond, params) = ts.keys_condition(batch);
            let rows = fetch(
                &mut w.src,
                &self.source,
                ts.rows_sql(Side::Source, &cond),
                params,
            )
            .await?;
            for r in rows {
                on_source.insert(ts.key_bytes(&r), r);
            }
        }
        let mut deletes = Vec::new();
        let mut replaces = Vec::new();
        for key in &keys {
            let as_row = key_row(ts, key);
            match on_source.get(&ts.key_bytes(&as_row)) {
                Some(row) => replaces.push(replace(ts, row)),
                None => deletes.push(delete_keyed(ts, key)),
            }
        }
        deletes.extend(replaces);
        Ok(deletes)
    }
}

/// A row shaped like a fetched one with only the key filled, to compute
/// its key bytes.
fn key_row(ts: &TableSql<'_>, key: &[KeyValue]) -> Vec<Value> {
    let mut row = vec![Value::NULL; ts.cols.len()];
    for (&i, k) in ts.key_idx.iter().zip(key) {
        if let Some(slot) = row.get_mut(i) {
            *slot = Value::from(k);
        }
    }
    row
}

fn keyless_statements(ts: &TableSql<'_>, diffs: &[VerifyDiff]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for d in diffs {
        let row: Vec<Value> = d.key.iter().map(Value::from).collect();
        match d.class {
            DiffClass::Extra => {
                let mut s = format!("DELETE FROM {} WHERE ", ts.tgt_name).into_bytes();
                for (n, (c, v)) in ts.cols.iter().zip(&row).enumerate() {
                    if n > 0 {
                        s.extend_from_slice(b" AND ");
                    }
                    s.extend_from_slice(format!("{} <=> ", quote_ident(&c.name)).as_bytes());
                    push_literal(&mut s, v, c.kind);
                }
                s.extend_from_slice(format!(" LIMIT {}", d.copies).as_bytes());
                out.push(s);
            }
            _ => {
                for _ in 0..d.copies {
                    out.push(insert(ts, &row, "INSERT"));
                }
            }
        }
    }
    out
}

fn replace(ts: &TableSql<'_>, row: &[Value]) -> Vec<u8> {
    insert(ts, row, "REPLACE")
}

/// `INSERT`/`REPLACE` of a whole row (generated columns left out).
fn insert(ts: &TableSql<'_>, row: &[Value], verb: &str) -> Vec<u8> {
    let written: Vec<(&Column, &Value)> = ts
        .cols
        .iter()
        .copied()
        .zip(row)
        .filter(|(c, _)| !c.generated)
        .collect();
    let names: Vec<String> = written.iter().map(|(c, _)| quote_ident(&c.name)).collect();
    let mut s = format!(
        "{verb} INTO {} ({}) VALUES (",
        ts.tgt_name,
        names.join(", ")
    )
    .into_bytes();
    for (n, (c, v)) in written.iter().enumerate() {
        if n > 0 {
            s.extend_from_slice(b", ");
        }
        push_literal(&mut s, v, c.kind);
    }
    s.push(b')');
    s
}

fn delete_keyed(ts: &TableSql<'_>, key: &[KeyValue]) -> Vec<u8> {
    let mut s = format!("DELETE FROM {} WHERE ", ts.tgt_name).into_bytes();
    let key_cols = ts.key_idx.iter().filter_map(|&i| ts.cols.get(i));
    for (n, (c, k)) in key_cols.zip(key).enumerate() {
        if n > 0 {
            s.extend_from_slice(b" AND ");
        }
        s.extend_from_slice(format!("{} = ", quote_ident(&c.name)).as_bytes());
        push_literal(&mut s, &Value::from(k), c.kind);
    }
    s.extend_from_slice(b" LIMIT 1");
    s
}

fn write_file(
    file: &Path,
    job: &str,
    session: (&[&str], &str),
    plans: &[(usize, String, Vec<Vec<u8>>)],
) -> Result<(), VerifyError> {
    write_plans(file, job, session, plans).map_err(|source| VerifyError::RepairFile {
        file: file.display().to_string(),
        source,
    })
}

fn write_plans(
    file: &Path,
    job: &str,
    (preamble, begin): (&[&str], &str),
    plans: &[(usize, String, Vec<Vec<u8>>)],
) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(file)?);
    writeln!(f, "-- ferry verify --repair: job {job}")?;
    writeln!(
        f,
        "-- Makes the target's differing rows equal to the source's, as read at {}.",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    )?;
    for line in preamble {
        writeln!(f, "{line}")?;
    }
    for (_, _, statements) in plans {
        writeln!(f, "{begin};")?;
        for s in statements {
            f.write_all(s)?;
            f.write_all(b";\n")?;
        }
        writeln!(f, "COMMIT;")?;
    }
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ChunkKey, Column, ColumnKind, Table};

    fn col(name: &str, kind: ColumnKind) -> Column {
        Column {
            name: name.into(),
            data_type: "varchar".into(),
            column_type: "varchar(10)".into(),
            nullable: true,
            generated: false,
            charset: Some("utf8mb4".into()),
            collation: None,
            kind,
        }
    }

    #[test]
    fn statements_name_the_target_and_quote_values() {
        let t = Table {
            db: "shop".into(),
            name: "t".into(),
            target_db: "copy".into(),
            columns: vec![col("id", ColumnKind::Plain), col("b", ColumnKind::Binary)],
            key: Some(ChunkKey {
                index: "PRIMARY".into(),
                columns: vec!["id".into()],
            }),
            rows_estimate: 0,
            data_bytes: 0,
            engine: "InnoDB".into(),
        };
        let ts = TableSql::new(&t);
        let row = vec![Value::Int(7), Value::Bytes(vec![0, 0x27])];
        assert_eq!(
            String::from_utf8(replace(&ts, &row)).unwrap(),
            "REPLACE INTO `copy`.`t` (`id`, `b`) VALUES (7, X'0027')"
        );
        assert_eq!(
            String::from_utf8(delete_keyed(&ts, &[KeyValue::Int(7)])).unwrap(),
            "DELETE FROM `copy`.`t` WHERE `id` = 7 LIMIT 1"
        );
        let extra = VerifyDiff {
            class: DiffClass::Extra,
            key: vec![KeyValue::Null, KeyValue::Bytes(b"x".to_vec())],
            columns: vec![],
            copies: 2,
        };
        let t2 = Table { key: None, ..t };
        let ts = TableSql::new(&t2);
        assert_eq!(
            String::from_utf8(keyless_statements(&ts, &[extra]).remove(0)).unwrap(),
            "DELETE FROM `copy`.`t` WHERE `id` <=> NULL AND `b` <=> X'78' LIMIT 2"
        );
    }
}
