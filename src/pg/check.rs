//! The precheck of a PostgreSQL target: reachable, new enough, the
//! privileges to create schemas, tables and Ferry's bookkeeping, no rows
//! in the way, and what the translation of each table does that the user
//! must know.

use super::conn::{pg_message, PgConnector, PgError};
use super::schema::PgTable;
use super::types::{ident, Note};

/// PostgreSQL 10 has identity columns.
const MIN_VERSION: i32 = 100_000;

/// One finding, as the precheck reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub what: &'static str,
    pub message: String,
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

fn finding(level: Level, what: &'static str, message: String, fix: Option<String>) -> Finding {
    Finding {
        level,
        what,
        message,
        fix,
    }
}

/// Checks the target for `tables`; a job that ran before (`resuming`) may
/// find its own rows there.
pub async fn check(target: &PgConnector, tables: &[PgTable], resuming: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let client = match target.connect().await {
        Ok(c) => c,
        Err(e) => {
            let fix = connect_fix(&e, target);
            out.push(finding(Level::Fail, "target.connect", e.to_string(), fix));
            return out;
        }
    };
    let version = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, version(), current_user, \
             current_database(), has_database_privilege(current_database(), 'CREATE')",
            &[],
        )
        .await;
    let row = match version {
        Ok(r) => r,
        Err(e) => {
            out.push(finding(Level::Fail, "target.connect", pg_message(&e), None));
            return out;
        }
    };
    let (num, text, user, database, create): (i32, String, String, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let short = text.split(" on ").next().unwrap_or(&text).to_string();
    if num < MIN_VERSION {
        out.push(finding(
            Level::Fail,
            "target.version",
            format!("{short}: Ferry needs PostgreSQL 10 or newer (identity columns)"),
            Some("upgrade the target".into()),
        ));
    } else {
        out.push(finding(Level::Pass, "target.connect", short, None));
    }
    if create {
        out.push(finding(
            Level::Pass,
            "target.privileges",
            format!("{user} may create schemas in {database}"),
            None,
        ));
    } else {
        out.push(finding(
            Level::Fail,
            "target.privileges",
            format!("{user} may not create schemas in {database}"),
            Some(format!(
                "GRANT CREATE ON DATABASE {} TO {};",
                ident(&database),
                ident(&user)
            )),
        ));
    }
    let mut schemas: Vec<&str> = tables
        .iter()
        .map(|t| t.schema.as_str())
        .chain(["ferry"])
        .collect();
    schemas.sort_unstable();
    schemas.dedup();
    for s in schemas {
        let ok = client
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) \
                 OR has_schema_privilege($1, 'CREATE')",
                &[&s],
            )
            .await
            .map(|r| r.get::<_, bool>(0));
        if let Ok(false) = ok {
            out.push(finding(
                Level::Fail,
                "target.privileges",
                format!("{user} may not create tables in the existing schema {s}"),
                Some(format!(
                    "GRANT CREATE, USAGE ON SCHEMA {} TO {};",
                    ident(s),
                    ident(&user)
                )),
            ));
        }
    }
    if !resuming {
        for t in tables {
            let exists = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t.qualified()])
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false);
            if !exists {
                continue;
            }
            let has_rows = client
                .query_one(
                    &format!("SELECT EXISTS (SELECT 1 FROM {})", t.qualified()),
                    &[],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(true);
            if has_rows {
                out.push(finding(
                    Level::Fail,
                    "target.empty",
                    format!("{} already holds rows", t.qualified()),
                    Some(format!(
                        "DROP TABLE {} (or load into another schema with [[select]] rename)",
                        t.qualified()
                    )),
                ));
            }
        }
    }
    let mut clean = true;
    for t in tables {
        for n in t.all_notes() {
            clean = false;
            let (level, text) = match n {
                Note::Warn(m) => (Level::Warn, m),
                Note::Refuse(m) => (Level::Fail, m),
            };
            out.push(finding(
                level,
                "target.mapping",
                format!("{}: {text}", t.qualified()),
                None,
            ));
        }
    }
    if clean {
        out.push(finding(
            Level::Pass,
            "target.mapping",
            format!("{} tables map to PostgreSQL without loss", tables.len()),
            None,
        ));
    }
    out
}

fn connect_fix(e: &PgError, target: &PgConnector) -> Option<String> {
    let db = target.endpoint().database.clone().unwrap_or_default();
    match e.code() {
        Some("3D000") => Some(format!("CREATE DATABASE {};", ident(&db))),
        Some("28P01") | Some("28000") => {
            Some("check the user, its password and the target's pg_hba.conf".into())
        }
        _ => None,
    }
}
