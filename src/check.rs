//! `ferry check`: everything that would make a job fail, found before it
//! starts, each with the fix.

use std::fmt;

use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::catalog::Catalog;
use crate::db::{self, Connector, DbError};
use crate::job::{ExistingRows, JobSpec, Mode, ServerKind};
use crate::pg;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub status: Status,
    /// What was checked, e.g. `source.binlog`.
    pub what: String,
    pub message: String,
    /// What to run or change, for WARN and FAIL.
    pub fix: Option<String>,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "{s}  {:<18} {}", self.what, self.message)?;
        if let Some(fix) = &self.fix {
            for line in fix.lines() {
                write!(f, "\n      fix: {line}")?;
            }
        }
        Ok(())
    }
}

/// The outcome of a precheck, with the catalog it read (for the run).
pub struct Report {
    pub items: Vec<Item>,
    pub catalog: Option<Catalog>,
    /// A server could not be reached for a reason that may pass (refused,
    /// reset, restarting), as opposed to bad credentials or settings.
    pub unreachable: bool,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.items.iter().any(|i| i.status == Status::Fail)
    }

    fn push(
        &mut self,
        status: Status,
        what: &str,
        message: impl Into<String>,
        fix: Option<String>,
    ) {
        self.items.push(Item {
            status,
            what: what.to_string(),
            message: message.into(),
            fix,
        });
    }

    fn pass(&mut self, what: &str, message: impl Into<String>) {
        self.push(Status::Pass, what, message, None);
    }

    /// Passes, or fails with the grants `user` lacks as the fix.
    fn privileges(&mut self, what: &str, user: &str, missing: &[String]) {
        if missing.is_empty() {
            self.pass(what, format!("{user} has what the job needs"));
        } else {
            let fix = Some(missing.join("\n"));
            self.push(Status::Fail, what, format!("{user} lacks privileges"), fix);
        }
    }
}

/// Runs every check of `job`. Errors that stop a check are items, not
/// `Err`: only the report comes back.
///
/// A job that ran before (`resume`) is checked for what can have broken
/// since (connectivity, privileges, binlog settings, that the binlog it
/// resumes from is still there), never against today's source schema:
/// schema drift since it started is the CDC's to apply.
pub async fn precheck(job: &JobSpec, resume: Option<Resume<'_>>) -> Report {
    let mut r = Report {
        items: Vec::new(),
        catalog: None,
        unreachable: false,
    };
    let source = Connector::new(&job.source, db::Role::Source);
    let Some(mut src) = connect(&mut r, &source).await else {
        if let Some(t) = job.target.as_ref().filter(|t| t.kind == ServerKind::Mysql) {
            let target = Connector::new(t, db::Role::Target);
            if let Some(c) = connect(&mut r, &target).await {
                let _ = c.disconnect().await;
            }
        }
        return r;
    };
    if let Err(e) = source_checks(&mut r, job, resume.is_some(), &source, &mut src).await {
        r.push(Status::Fail, "source", e.to_string(), None);
    }
    if let Some(at) = resume.and_then(|r| r.position) {
        if let Err(e) = position_check(&mut r, &source, &mut src, at).await {
            r.push(Status::Fail, "source.position", e.to_string(), None);
        }
    }
    let _ = src.disconnect().await;

    if let Some(t) = job
        .target
        .as_ref()
        .filter(|t| t.kind == ServerKind::Postgresql)
    {
        postgresql_checks(&mut r, job, &source, t, resume.is_some()).await;
        return r;
    }
    if let Some(t) = &job.target {
        let target = Connector::new(t, db::Role::Target);
        if let Some(mut dst) = connect(&mut r, &target).await {
            if let Err(e) = target_checks(&mut r, job, resume.is_some(), &target, &mut dst).await {
                r.push(Status::Fail, "target", e.to_string(), None);
            }
            let _ = dst.disconnect().await;
        }
    }
    r
}

/// A PostgreSQL target: the tables as translated, and the target's checks.
async fn postgresql_checks(
    r: &mut Report,
    job: &JobSpec,
    source: &Connector,
    target: &crate::job::Endpoint,
    resuming: bool,
) {
    let Some(cat) = r.catalog.clone() else {
        return;
    };
    let pg_target = pg::PgConnector::new(target);
    // Unreachable: check() below says so.
    let job = &pg::conn::with_postgis(job, &pg_target)
        .await
        .unwrap_or_else(|_| job.clone());
    let tables = match pg::schema::read(job, source, &cat).await {
        Ok(t) => t,
        Err(e) => {
            r.push(Status::Fail, "source", e.to_string(), None);
            return;
        }
    };
    let target = pg_target;
    // A CDC from an explicit position applies to data already there.
    let explicit_start = job.mode.needs_binlog() && job.cdc.start != crate::job::CdcStart::Auto;
    for f in pg::check::check(&target, &tables, resuming || explicit_start).await {
        let status = match f.level {
            pg::check::Level::Pass => Status::Pass,
            pg::check::Level::Warn => Status::Warn,
            pg::check::Level::Fail => Status::Fail,
        };
        r.push(status, f.what, f.message, f.fix);
    }
}

async fn connect(r: &mut Report, c: &Connector) -> Option<Conn> {
    let what = format!("{}.connect", c.role().as_str());
    match c.connect().await {
        Ok(mut conn) => {
            let version: Option<String> = conn.query_first("SELECT VERSION()").await.ok().flatten();
            r.pass(
                &what,
                format!(
                    "{} ({})",
                    c.endpoint().display(),
                    version.unwrap_or_else(|| "unknown version".into())
                ),
            );
            Some(conn)
        }
        Err(e) => {
            r.unreachable |= e.is_retryable();
            let fix = connect_fix(&e, c);
            r.push(Status::Fail, &what, e.to_string(), Some(fix));
            None
        }
    }
}

fn connect_fix(e: &DbError, c: &Connector) -> String {
    let ep = c.endpoint();
    match e {
        DbError::PasswordEnvMissing { var, .. } => format!("export {var}=... before running ferry"),
        DbError::PasswordFile { path, .. } => format!("make {path} readable by ferry"),
        DbError::Connect {
            source: mysql_async::Error::Server(s),
            ..
        } if s.code == 1045 => format!(
            "check the user and password; on the server: \
             ALTER USER '{}'@'%' IDENTIFIED BY '...';",
            ep.user
        ),
        DbError::Connect {
            source: mysql_async::Error::Io(_),
            ..
        } => format!(
            "is the server running and listening on {}:{}? (firewall, bind-address, port)",
            ep.host, ep.port
        ),
        _ => "check the [source]/[target] settings of the job file".into(),
    }
}

/// What a job that ran before resumes from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resume<'a> {
    /// Its binlog position, when it has one.
    pub position: Option<&'a crate::model::BinlogPos>,
}

/// Whether the source still has the binlog file a job resumes from.
async fn position_check(
    r: &mut Report,
    c: &Connector,
    conn: &mut Conn,
    at: &crate::model::BinlogPos,
) -> Result<(), DbError> {
    if at.file.is_empty() {
        return Ok(());
    }
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(c.query_err("SHOW BINARY LOGS"))?;
    let files: Vec<String> = logs.iter().filter_map(|row| row.get(0)).collect();
    if files.contains(&at.file) {
        r.pass("source.position", format!("the job resumes at {at}"));
    } else {
        r.push(
            Status::Fail,
            "source.position",
            format!(
                "the job resumes at {at}, but the source no longer has {} (oldest: {})",
                at.file,
                files.first().map(String::as_str).unwrap_or("none")
            ),
            Some(
                "raise binlog_expire_logs_seconds on the source, then start the job again \
                 with a new --state (a new full load)"
                    .into(),
            ),
        );
    }
    Ok(())
}

/// Privileges the current user holds, global and per database pattern.
struct Grants {
    user: String,
    global: Vec<String>,
    /// (database LIKE pattern, privilege)
    schema: Vec<(String, String)>,
}

impl Grants {
    async fn read(conn: &mut Conn, c: &Connector) -> Result<Grants, DbError> {
        let current: String = conn
            .query_first("SELECT CURRENT_USER()")
            .await
            .map_err(c.query_err("reading the current user"))?
            .unwrap_or_default();
        let (u, h) = current.rsplit_once('@').unwrap_or((&current, "%"));
        let grantee = format!("'{u}'@'{h}'");
        let global: Vec<String> = conn
            .exec(
                "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?",
                (&grantee,),
            )
            .await
            .map_err(c.query_err("reading privileges"))?;
        let schema: Vec<(String, String)> = conn
            .exec(
                "SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
                 WHERE GRANTEE = ?",
                (&grantee,),
            )
            .await
            .map_err(c.query_err("reading privileges"))?;
        Ok(Grants {
            user: grantee,
            global,
            schema,
        })
    }

    fn has_global(&self, p: &str) -> bool {
        self.global.iter().any(|g| g.eq_ignore_ascii_case(p))
    }

    fn has_on(&self, db: &str, p: &str) -> bool {
        self.has_global(p)
            || self
                .schema
                .iter()
                .any(|(pat, g)| g.eq_ignore_ascii_case(p) && like_match(pat, db))
    }

    /// The privileges of `wanted` missing on `db`.
    fn missing_on<'a>(&self, db: &str, wanted: &[&'a str]) -> Vec<&'a str> {
        wanted
            .iter()
            .copied()
            .filter(|p| !self.has_on(db, p))
            .collect()
    }
}

/// SQL LIKE with `%`, `_` and backslash escapes, as in grant tables.
fn like_match(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p {
            [] => s.is_empty(),
            ['%', rest @ ..] => (0..=s.len()).any(|i| s.get(i..).is_some_and(|t| go(rest, t))),
            ['_', rest @ ..] => matches!(s, [_, t @ ..] if go(rest, t)),
            ['\\', c, rest @ ..] | [c, rest @ ..] => {
                matches!(s, [h, t @ ..] if h == c && go(rest, t))
            }
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

async fn source_checks(
    r: &mut Report,
    job: &JobSpec,
    resuming: bool,
    c: &Connector,
    conn: &mut Conn,
) -> Result<(), DbError> {
    let grants = Grants::read(conn, c).await?;
    let version: String = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(c.query_err("reading the version"))?
        .unwrap_or_default();
    let mariadb = version.to_ascii_lowercase().contains("mariadb");

    // Privileges.
    let mut missing = Vec::new();
    for sel in &job.select {
        let m = grants.missing_on(&sel.database, &["SELECT", "SHOW VIEW", "TRIGGER"]);
        if !m.is_empty() {
            missing.push(format!(
                "GRANT {} ON {}.* TO {};",
                m.join(", "),
                db::quote_ident(&sel.database),
                grants.user
            ));
        }
    }
    if job.mode.needs_binlog() {
        let monitor = if mariadb {
            "BINLOG MONITOR"
        } else {
            "REPLICATION CLIENT"
        };
        let m: Vec<&str> = ["REPLICATION SLAVE", monitor]
            .into_iter()
            .filter(|p| !grants.has_global(p))
            .collect();
        if !m.is_empty() {
            missing.push(format!("GRANT {} ON *.* TO {};", m.join(", "), grants.user));
        }
    }
    r.privileges("source.privileges", &grants.user, &missing);

    // Binlog settings.
    let required = [
        ("log_bin", "ON"),
        ("binlog_format", "ROW"),
        ("binlog_row_image", "FULL"),
        ("binlog_row_metadata", "FULL"),
    ];
    let mut wrong = Vec::new();
    for (name, want) in required {
        let have = db::variable(conn, name)
            .await
            .map_err(c.query_err(format!("reading @@{name}")))?;
        let have = have.unwrap_or_else(|| "(absent)".into());
        if !have.eq_ignore_ascii_case(want) {
            wrong.push((name, want, have));
        }
    }
    if wrong.is_empty() {
        r.pass(
            "source.binlog",
            "log_bin=ON, binlog_format=ROW, row_image=FULL, row_metadata=FULL",
        );
    } else {
        let status = if job.mode.needs_binlog() {
            Status::Fail
        } else {
            Status::Warn
        };
        let what: Vec<String> = wrong
            .iter()
            .map(|(n, w, h)| format!("{n}={h} (need {w})"))
            .collect();
        let mut fix: Vec<String> = Vec::new();
        for (n, w, _) in &wrong {
            if *n == "log_bin" {
                fix.push("start the server with --log-bin (needs a restart)".into());
            } else {
                fix.push(format!("SET GLOBAL {n} = '{w}'; and {n} = {w} in my.cnf"));
            }
        }
        if wrong
            .iter()
            .any(|(n, _, _)| *n == "binlog_format" || *n == "binlog_row_image")
        {
            fix.push(
                "sessions opened before the SET GLOBAL keep their old setting: reconnect \
                 the applications (or restart them) before the job starts, or their \
                 changes stop the job"
                    .into(),
            );
        }
        let message = if job.mode.needs_binlog() {
            format!("{}: CDC needs them", what.join(", "))
        } else {
            format!("{}: fine for a full copy, needed for CDC", what.join(", "))
        };
        r.push(status, "source.binlog", message, Some(fix.join("\n")));
    }

    // MariaDB's compressed binlog events cannot be read (their rows would
    // be lost).
    if mariadb && job.mode.needs_binlog() {
        let compress = db::variable(conn, "log_bin_compress")
            .await
            .map_err(c.query_err("reading @@log_bin_compress"))?;
        if compress.is_some_and(|v| v.eq_ignore_ascii_case("ON")) {
            r.push(
                Status::Fail,
                "source.binlog",
                "log_bin_compress=ON: Ferry cannot read compressed binlog events",
                Some(
                    "SET GLOBAL log_bin_compress = OFF; and log_bin_compress = OFF in my.cnf"
                        .into(),
                ),
            );
        }
    }

    // What the job selects.
    let cat = Catalog::read(job, c).await?;
    // A resumed job may have seen its databases and tables dropped or
    // renamed by the source since: the CDC follows that.
    let gone = if resuming { Status::Warn } else { Status::Fail };
    for db in &cat.missing_databases {
        r.push(
            gone,
            "source.select",
            format!("database {db} does not exist on the source"),
            Some("fix [[select]] database, or create it".into()),
        );
    }
    // A name that matches nothing is a typo; a pattern may match tables
    // created later (they are followed once they exist).
    let (globs, names): (Vec<_>, Vec<_>) = cat
        .unmatched_patterns
        .iter()
        .partition(|(_, p)| p.contains(['*', '?', '[']));
    for (db, pat) in &names {
        r.push(
            gone,
            "source.select",
            format!("no table in {db} matches {pat:?}"),
            Some(format!("fix [[select]] tables for {db}")),
        );
    }
    for (db, pat) in &globs {
        r.push(
            Status::Warn,
            "source.select",
            format!(
                "no table in {db} matches {pat:?} yet (tables created later that match it \
                 are followed{})",
                if job.mode.needs_binlog() {
                    ""
                } else {
                    "; this full copy has none"
                }
            ),
            None,
        );
    }
    if cat.missing_databases.is_empty() && names.is_empty() {
        r.pass(
            "source.select",
            format!(
                "{} tables, {} views, {} routines, {} triggers",
                cat.tables.len(),
                cat.views.len(),
                cat.routines.len(),
                cat.triggers.len()
            ),
        );
    }
    let keyless: Vec<String> = cat
        .tables
        .iter()
        .filter(|t| t.key.is_none())
        .map(|t| t.id())
        .collect();
    if !keyless.is_empty() {
        r.push(
            Status::Warn,
            "source.keys",
            format!(
                "no primary or NOT NULL unique key: {} (copied as one stream, restarted whole; \
                 CDC matches every column)",
                keyless.join(", ")
            ),
            Some("add a primary key where you can".into()),
        );
    } else if !cat.tables.is_empty() {
        r.pass(
            "source.keys",
            "every table has a primary or NOT NULL unique key",
        );
    }
    r.catalog = Some(cat);
    Ok(())
}

async fn target_checks(
    r: &mut Report,
    job: &JobSpec,
    resuming: bool,
    c: &Connector,
    conn: &mut Conn,
) -> Result<(), DbError> {
    let grants = Grants::read(conn, c).await?;
    let Some(cat) = r.catalog.clone() else {
        return Ok(());
    };
    let mut wanted = vec![
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "CREATE",
        "DROP",
        "ALTER",
        "INDEX",
        "REFERENCES",
    ];
    if !cat.views.is_empty() {
        wanted.extend(["CREATE VIEW", "SHOW VIEW"]);
    }
    if !cat.triggers.is_empty() {
        wanted.push("TRIGGER");
    }
    if !cat.routines.is_empty() {
        wanted.extend(["CREATE ROUTINE", "ALTER ROUTINE"]);
    }
    let mut missing = Vec::new();
    let mut target_dbs: Vec<&str> = job
        .select
        .iter()
        .map(|s| s.target_database.as_str())
        .collect();
    target_dbs.dedup();
    for db in &target_dbs {
        let m = grants.missing_on(db, &wanted);
        if !m.is_empty() {
            missing.push(format!(
                "GRANT {} ON {}.* TO {};",
                m.join(", "),
                db::quote_ident(db),
                grants.user
            ));
        }
    }
    r.privileges("target.privileges", &grants.user, &missing);

    // Target databases: present, or creatable (covered by CREATE above).
    let mut present = Vec::new();
    for db in &target_dbs {
        let exists: Option<String> = conn
            .exec_first(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (db,),
            )
            .await
            .map_err(c.query_err("reading databases"))?;
        if exists.is_some() {
            present.push(*db);
        }
    }
    r.pass(
        "target.databases",
        if present.is_empty() {
            "will be created".to_string()
        } else {
            format!("present: {}", present.join(", "))
        },
    );

    // Existing tables: same columns, and empty unless existing_rows says otherwise.
    let mut nonempty = Vec::new();
    let mut mismatched = Vec::new();
    for t in &cat.tables {
        if !present.contains(&t.target_db.as_str()) {
            continue;
        }
        let cols: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&t.target_db, &t.name),
            )
            .await
            .map_err(c.query_err("reading target columns"))?;
        if cols.is_empty() {
            continue;
        }
        let lacking: Vec<&str> = t
            .copied_columns()
            .filter(|sc| !cols.iter().any(|c| c.eq_ignore_ascii_case(&sc.name)))
            .map(|c| c.name.as_str())
            .collect();
        if !lacking.is_empty() {
            mismatched.push(format!(
                "{}.{} lacks {}",
                t.target_db,
                t.name,
                lacking.join(", ")
            ));
        }
        let any: Option<i64> = conn
            .query_first(format!(
                "SELECT 1 FROM {} LIMIT 1",
                db::qualified(&t.target_db, &t.name)
            ))
            .await
            .map_err(c.query_err(format!("reading {}.{}", t.target_db, t.name)))?;
        if any.is_some() {
            nonempty.push(format!("{}.{}", t.target_db, t.name));
        }
    }
    // A resumed job's target follows the source through the binlog; today's
    // source schema is ahead of it until the CDC catches up.
    if !mismatched.is_empty() && !resuming {
        r.push(
            Status::Fail,
            "target.tables",
            format!(
                "existing target tables differ from the source: {}",
                mismatched.join("; ")
            ),
            Some("drop them on the target (ferry creates them), or align their columns".into()),
        );
    }
    if nonempty.is_empty() {
        r.pass("target.rows", "target tables are absent or empty");
    } else if resuming {
        r.pass(
            "target.rows",
            "resuming: the rows on the target are this job's own",
        );
    } else if job.mode.needs_binlog() && job.cdc.start != crate::job::CdcStart::Auto {
        r.pass(
            "target.rows",
            "CDC only ([cdc] start): the target's rows are the starting point",
        );
    } else {
        let list = nonempty.join(", ");
        match job.full.existing_rows {
            ExistingRows::Error if job.mode != Mode::Subscribe => r.push(
                Status::Fail,
                "target.rows",
                format!("target tables hold rows: {list}"),
                Some(
                    "empty them, or set [full] existing_rows = \"overwrite\" (source wins) \
                     or \"skip\" (target wins)"
                        .into(),
                ),
            ),
            other => r.push(
                Status::Warn,
                "target.rows",
                format!("target tables hold rows: {list} (existing_rows = {other:?})"),
                None,
            ),
        }
    }

    // Charsets and collations the tables use must exist on the target.
    let collations: Vec<String> = conn
        .query("SELECT COLLATION_NAME FROM information_schema.COLLATIONS")
        .await
        .map_err(c.query_err("reading collations"))?;
    let mut unknown: Vec<String> = cat
        .tables
        .iter()
        .flat_map(|t| t.columns.iter())
        .filter_map(|c| c.collation.clone())
        .filter(|c| !collations.iter().any(|k| k.eq_ignore_ascii_case(c)))
        .collect();
    unknown.sort();
    unknown.dedup();
    if unknown.is_empty() {
        r.pass(
            "target.charsets",
            "every collation the tables use exists on the target",
        );
    } else {
        r.push(
            Status::Fail,
            "target.charsets",
            format!("collations unknown on the target: {}", unknown.join(", ")),
            Some("upgrade the target, or convert those columns on the source".into()),
        );
    }

    // max_allowed_packet: a row that fits the source must fit the target.
    let t_packet: u64 = db::variable(conn, "max_allowed_packet")
        .await
        .map_err(c.query_err("reading max_allowed_packet"))?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let biggest = cat
        .tables
        .iter()
        .map(|t| t.data_bytes / t.rows_estimate.max(1))
        .max()
        .unwrap_or(0);
    if t_packet < 1 << 20 || biggest * 2 > t_packet {
        r.push(
            Status::Warn,
            "target.packet",
            format!("max_allowed_packet is {t_packet} bytes; large rows may not fit"),
            Some("SET GLOBAL max_allowed_packet = 67108864; (and in my.cnf)".into()),
        );
    } else {
        r.pass("target.packet", format!("max_allowed_packet = {t_packet}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::like_match;

    #[test]
    fn grant_patterns() {
        assert!(like_match("shop", "shop"));
        assert!(like_match("shop%", "shop_copy"));
        assert!(like_match("sh_p", "shop"));
        assert!(!like_match("shop\\_copy", "shopXcopy"));
        assert!(like_match("shop\\_copy", "shop_copy"));
        assert!(!like_match("shop", "shop2"));
    }
}
