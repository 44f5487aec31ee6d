//! Schema copy: databases and tables first (foreign keys are kept but not
//! checked while loading, so load order does not matter), then views and
//! routines; triggers last, after the data, so they never fire on copied rows.

use mysql_async::prelude::*;
use mysql_async::{Conn, Row};

use crate::catalog::Catalog;
use crate::db::{qualified, quote_ident, Connector, DbError};
use crate::job::JobSpec;
use crate::model::truncate;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot create {what} on the target: {source}\n  statement: {statement}")]
    Create {
        what: String,
        statement: String,
        source: mysql_async::Error,
    },
    #[error("source: SHOW CREATE for {what} returned no definition; grant the user access to it")]
    NoDefinition { what: String },
}

impl SchemaError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SchemaError::Db(e) if e.is_retryable())
    }
}

/// Rewrites references to renamed databases (`src`. → `dst`.) in a
/// definition, on tokens: a qualifier is rewritten, a string or comment
/// that happens to hold the same text is not.
pub(crate) fn rename_refs(job: &JobSpec, sql: &str) -> String {
    let rename = |db: &str| {
        job.select
            .iter()
            .find(|s| s.database == db && s.database != s.target_database)
            .map(|s| s.target_database.clone())
    };
    if job.select.iter().all(|s| s.database == s.target_database) {
        return sql.to_string();
    }
    match crate::source::ddl::Statement::parse(sql, false) {
        Ok(s) => s.edited(s.qualifier_edits(&rename)),
        // Not tokenizable: the server's own backquoted form.
        Err(_) => {
            let mut out = sql.to_string();
            for s in job
                .select
                .iter()
                .filter(|s| s.database != s.target_database)
            {
                out = out.replace(
                    &format!("{}.", quote_ident(&s.database)),
                    &format!("{}.", quote_ident(&s.target_database)),
                );
            }
            out
        }
    }
}

/// `SHOW CREATE TABLE` output of `t` made into the statement that creates
/// it on the target (in its target database, renames applied).
pub(crate) fn create_table_sql(job: &JobSpec, t: &crate::catalog::Table, ddl: &str) -> String {
    let prefix = format!("CREATE TABLE {}", quote_ident(&t.name));
    let body = ddl.strip_prefix(&prefix).unwrap_or(ddl);
    format!(
        "CREATE TABLE IF NOT EXISTS {}{}",
        qualified(&t.target_db, &t.name),
        rename_refs(job, body)
    )
}

/// Removes `DEFINER=user@host` so the object belongs to Ferry's target user,
/// who may be the only one that exists there.
fn strip_definer(sql: &str) -> String {
    let Some(start) = sql.find("DEFINER=") else {
        return sql.to_string();
    };
    let rest = &sql[start + "DEFINER=".len()..];
    let mut chars = rest.char_indices().peekable();
    let mut in_quote = false;
    let mut end = rest.len();
    while let Some((i, c)) = chars.next() {
        match c {
            '`' if in_quote && chars.peek().map(|p| p.1) == Some('`') => {
                chars.next();
            }
            '`' | '\'' => in_quote = !in_quote,
            c if c.is_whitespace() && !in_quote => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let tail = rest[end..].trim_start();
    format!("{}{}", &sql[..start], tail)
}

fn text(row: &Row, i: usize) -> Option<String> {
    row.get_opt::<Option<Vec<u8>>, _>(i)
        .and_then(|r| r.ok())
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

async fn exec(conn: &mut Conn, what: &str, statement: String) -> Result<(), SchemaError> {
    conn.query_drop(&statement)
        .await
        .map_err(|source| SchemaError::Create {
            what: what.to_string(),
            statement: truncate(&statement, 400),
            source,
        })
}

/// Creates the target databases and tables (if absent), then views and
/// routines. Idempotent: a restarted job runs it again safely.
pub async fn copy_schema(
    job: &JobSpec,
    cat: &Catalog,
    source: &Connector,
    target: &Connector,
) -> Result<(), SchemaError> {
    let mut src = source.connect().await?;
    let mut dst = target.connect().await?;

    for sel in &job.select {
        if cat.missing_databases.contains(&sel.database) {
            continue;
        }
        let cs: Option<(String, String)> = src
            .exec_first(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
                 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (&sel.database,),
            )
            .await
            .map_err(source.query_err("reading database charset"))?;
        let (charset, collation) =
            cs.unwrap_or_else(|| ("utf8mb4".into(), "utf8mb4_general_ci".into()));
        exec(
            &mut dst,
            &format!("database {}", sel.target_database),
            format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET {charset} COLLATE {collation}",
                quote_ident(&sel.target_database)
            ),
        )
        .await?;
    }

    for t in &cat.tables {
        let (_, ddl) = show_create(&mut src, source, "TABLE", &t.db, &t.name, 1).await?;
        let statement = create_table_sql(job, t, &ddl);
        exec(
            &mut dst,
            &format!("table {}.{}", t.target_db, t.name),
            statement,
        )
        .await?;
    }

    // Views may use other views: create in rounds until none is left or a
    // round makes no progress (then the first error is the real one).
    let mut pending: Vec<(String, String, String)> = Vec::new();
    for v in &cat.views {
        let (_, ddl) = show_create(&mut src, source, "VIEW", &v.db, &v.name, 1).await?;
        let ddl = rename_refs(job, &strip_definer(&ddl));
        let ddl = match ddl.strip_prefix("CREATE ") {
            Some(rest) => format!("CREATE OR REPLACE {rest}"),
            None => ddl,
        };
        pending.push((
            v.target_db.clone(),
            format!("view {}.{}", v.target_db, v.name),
            ddl,
        ));
    }
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut first_err = None;
        let before = pending.len();
        for (db, what, ddl) in pending {
            dst.query_drop(format!("USE {}", quote_ident(&db)))
                .await
                .map_err(target.query_err(format!("USE {db}")))?;
            if let Err(e) = exec(&mut dst, &what, ddl.clone()).await {
                first_err.get_or_insert(e);
                failed.push((db, what, ddl));
            }
        }
        if failed.len() == before {
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        pending = failed;
    }

    for r in &cat.routines {
        let (row, ddl) = show_create(&mut src, source, &r.kind, &r.db, &r.name, 2).await?;
        let object = Replacement::new(job, &r.kind, &r.target_db, &r.name, &row, &ddl);
        object.run(&mut dst, target).await?;
    }
    let _ = src.disconnect().await;
    let _ = dst.disconnect().await;
    Ok(())
}

/// Creates the selected triggers and scheduled events on the target, from
/// the source's definitions as they are now: after the data (so they never
/// fire on copied rows), and for CDC jobs only when the job finishes (the
/// binlog holds the rows they write on the source). The triggers of an
/// online schema change in progress (`pt_osc_*`) are never copied.
pub async fn copy_triggers(
    job: &JobSpec,
    source: &Connector,
    target: &Connector,
) -> Result<(), SchemaError> {
    let cat = Catalog::read(job, source).await?;
    let triggers: Vec<_> = cat
        .triggers
        .iter()
        .filter(|t| !t.name.starts_with("pt_osc_"))
        .collect();
    if triggers.is_empty() && cat.events.is_empty() {
        return Ok(());
    }
    let mut src = source.connect().await?;
    let mut dst = target.connect().await?;
    for t in triggers {
        let (row, ddl) = show_create(&mut src, source, "TRIGGER", &t.db, &t.name, 2).await?;
        let object = Replacement::new(job, "TRIGGER", &t.target_db, &t.name, &row, &ddl);
        object.run(&mut dst, target).await?;
    }
    for e in &cat.events {
        let (row, ddl) = show_create(&mut src, source, "EVENT", &e.db, &e.name, 3).await?;
        let time_zone = text(&row, 2).unwrap_or_default();
        if !time_zone.is_empty() && !time_zone.eq_ignore_ascii_case("SYSTEM") {
            dst.exec_drop("SET SESSION time_zone = ?", (&time_zone,))
                .await
                .map_err(target.query_err("setting the event's time zone"))?;
        }
        let object = Replacement::new(job, "EVENT", &e.target_db, &e.name, &row, &ddl);
        object.run(&mut dst, target).await?;
    }
    let _ = src.disconnect().await;
    let _ = dst.disconnect().await;
    Ok(())
}

/// `SHOW CREATE {kind} db.name` on the source: its row, and the definition
/// in column `ddl_column`.
async fn show_create(
    src: &mut Conn,
    source: &Connector,
    kind: &str,
    db: &str,
    name: &str,
    ddl_column: usize,
) -> Result<(Row, String), SchemaError> {
    let what = format!("{} {db}.{name}", kind.to_lowercase());
    let row: Option<Row> = src
        .query_first(format!("SHOW CREATE {kind} {}", qualified(db, name)))
        .await
        .map_err(source.query_err(format!("SHOW CREATE {kind} {db}.{name}")))?;
    let ddl = row.as_ref().and_then(|r| text(r, ddl_column));
    match (row, ddl) {
        (Some(row), Some(ddl)) => Ok((row, ddl)),
        _ => Err(SchemaError::NoDefinition { what }),
    }
}

/// A routine, trigger or event to drop and create again on the target,
/// under the sql_mode the source stored with it.
struct Replacement {
    db: String,
    what: String,
    sql_mode: String,
    drop: String,
    create: String,
}

impl Replacement {
    /// From the source's `SHOW CREATE` row (sql_mode in column 1) and its
    /// definition, for `name` in the target database `db`.
    fn new(job: &JobSpec, kind: &str, db: &str, name: &str, row: &Row, ddl: &str) -> Self {
        Replacement {
            db: db.to_string(),
            what: format!("{} {db}.{name}", kind.to_lowercase()),
            sql_mode: text(row, 1).unwrap_or_default(),
            drop: format!("DROP {kind} IF EXISTS {}", qualified(db, name)),
            create: rename_refs(job, &strip_definer(ddl)),
        }
    }

    /// Runs on `dst`, in the object's database and under its sql_mode
    /// (each object sets its own).
    async fn run(self, dst: &mut Conn, target: &Connector) -> Result<(), SchemaError> {
        dst.query_drop(format!("USE {}", quote_ident(&self.db)))
            .await
            .map_err(target.query_err(format!("USE {}", self.db)))?;
        dst.exec_drop("SET SESSION sql_mode = ?", (&self.sql_mode,))
            .await
            .map_err(target.query_err("setting sql_mode"))?;
        exec(dst, &self.what, self.drop).await?;
        exec(dst, &self.what, self.create).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definer_is_stripped() {
        assert_eq!(
            strip_definer("CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select 1"),
            "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS select 1"
        );
        assert_eq!(
            strip_definer("CREATE DEFINER=`a b`@`%` TRIGGER t"),
            "CREATE TRIGGER t"
        );
        assert_eq!(
            strip_definer("CREATE VIEW v AS select 1"),
            "CREATE VIEW v AS select 1"
        );
    }
}
