//! Integration tests against real MariaDB servers (see server.rs).
//! One binary so the servers are shared; tests keep apart by database names.

mod bad_input;
mod cases;
mod cdc;
mod ddl;
mod faults;
mod handover;
mod legacy;
pub mod pgserver;
mod postgres;
mod resume;
mod rowevents;
pub mod server;
mod service;
mod subscribe;
mod upgrade;
mod verify;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;

pub use server::{shared, Server, PASSWORD};

/// Polls `cond` until it holds, failing the test after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh temp dir for one test (state dirs, job files).
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ferry-{name}-"))
        .tempdir()
        .expect("temp dir")
}

/// A job file text with the servers' ports filled in.
pub fn job_text(template: &str, source: &Server, target_port: u16) -> String {
    template
        .replace("{source_port}", &source.port.to_string())
        .replace("{target_port}", &target_port.to_string())
}

/// A job file for test servers: one `[[select]]` of `db` renamed to
/// `rename`, then `extra` (more keys of that select, or more sections).
#[allow(clippy::too_many_arguments)]
pub fn job_toml(
    name: &str,
    mode: &str,
    server_id: Option<u32>,
    db: &str,
    rename: &str,
    extra: &str,
    source: &Server,
    target_port: u16,
) -> String {
    let ports = (source.port.to_string(), target_port.to_string());
    job_template(name, mode, server_id, db, rename, extra, &ports.0, &ports.1)
}

/// [`job_toml`] with the ports as given (a number, or a `{source_port}`
/// placeholder for [`job_text`]).
#[allow(clippy::too_many_arguments)]
pub fn job_template(
    name: &str,
    mode: &str,
    server_id: Option<u32>,
    db: &str,
    rename: &str,
    extra: &str,
    source_port: &str,
    target_port: &str,
) -> String {
    let server_id = server_id
        .map(|id| format!("server_id = {id}\n"))
        .unwrap_or_default();
    format!(
        r#"name = "{name}"
mode = "{mode}"
[source]
host = "127.0.0.1"
port = {source_port}
user = "ferry"
password_env = "FERRY_SRC_PASSWORD"
{server_id}[target]
host = "127.0.0.1"
port = {target_port}
user = "ferry"
password_env = "FERRY_DST_PASSWORD"
[[select]]
database = "{db}"
rename = "{rename}"
{extra}
"#
    )
}

pub fn write_job(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("job.toml");
    std::fs::write(&path, text).expect("write job");
    path
}

/// The ferry binary with the test password in its environment
/// (`FERRY_BIN` runs another build, e.g. an older one, against the tests).
pub fn ferry(state: &Path) -> Command {
    let bin = std::env::var("FERRY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry").into());
    let mut c = Command::new(bin);
    c.arg("--state")
        .arg(state)
        .env("FERRY_SRC_PASSWORD", PASSWORD)
        .env("FERRY_DST_PASSWORD", PASSWORD)
        .env_remove("FERRY_STATE");
    c
}

/// A job's status from `ferry status JOB --json`, `None` before the state
/// knows the job.
pub fn job_status(state: &Path, job: &str) -> Option<ferry_proto::Job> {
    let out = run(ferry(state).args(["status", job, "--json"]));
    if out.stdout.is_empty() {
        return None;
    }
    let s: ferry_proto::Status = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status JSON: {e}\n{}", text(&out)));
    s.jobs.into_iter().next()
}

/// `ferry run JOB` in the background, its output piped.
pub fn spawn_run(state: &Path, job: &Path) -> std::process::Child {
    ferry(state)
        .arg("run")
        .arg(job)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ferry")
}

/// The rows a full load's summary says this run copied.
pub fn copied_by_this_run(log: &str) -> u64 {
    log.split("rows (")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in:\n{log}"))
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("ferry runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn conn(server: &Server) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::from_opts(
        mysql_async::Opts::from_url(&server.url()).expect("url"),
    )
    .prefer_socket(false)
    .init(vec!["SET time_zone = '+00:00'", "SET NAMES utf8mb4"]);
    mysql_async::Conn::new(opts).await.expect("connect")
}

/// Every row of `db.table`, each as debug text of its values, sorted.
async fn rows(c: &mut mysql_async::Conn, db: &str, table: &str) -> Vec<String> {
    let q = format!(
        "SELECT * FROM `{}`.`{}`",
        db.replace('`', "``"),
        table.replace('`', "``")
    );
    let rows: Vec<mysql_async::Row> = c.exec(q, ()).await.expect("select");
    let mut out: Vec<String> = rows
        .into_iter()
        .map(|r| format!("{:?}", r.unwrap()))
        .collect();
    out.sort();
    out
}

/// Base tables of a database, sorted.
async fn tables(c: &mut mysql_async::Conn, db: &str) -> Vec<String> {
    c.exec(
        "SELECT TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        (db,),
    )
    .await
    .expect("tables")
}

/// Whether `dst_db` on the target holds exactly the rows of `src_db` on
/// the source, table by table (only `only` tables when given); the first
/// difference otherwise.
pub fn compare(
    source: &Server,
    src_db: &str,
    target: &Server,
    dst_db: &str,
    only: Option<&[&str]>,
) -> Result<(), String> {
    rt().block_on(async {
        let mut s = conn(source).await;
        let mut t = conn(target).await;
        let names = match only {
            Some(list) => list.iter().map(|s| s.to_string()).collect(),
            None => tables(&mut s, src_db).await,
        };
        if names.is_empty() {
            return Err(format!("no tables in {src_db}"));
        }
        let on_target = tables(&mut t, dst_db).await;
        for name in &names {
            if !on_target.contains(name) {
                return Err(format!("{dst_db}.{name} missing on the target"));
            }
            let a = rows(&mut s, src_db, name).await;
            let b = rows(&mut t, dst_db, name).await;
            if a != b {
                let missing: Vec<&String> = a.iter().filter(|r| !b.contains(r)).take(3).collect();
                let extra: Vec<&String> = b.iter().filter(|r| !a.contains(r)).take(3).collect();
                return Err(format!(
                    "{src_db}.{name} differs: {} rows on the source, {} on the target\n\
                     missing on target: {missing:#?}\nextra on target: {extra:#?}",
                    a.len(),
                    b.len()
                ));
            }
        }
        Ok(())
    })
}

/// CHECKSUM TABLE of every table of `src_db` on both sides.
fn checksums_match(
    source: &Server,
    src_db: &str,
    target: &Server,
    dst_db: &str,
) -> Result<(), String> {
    let tables = source.sql(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{src_db}' \
         AND TABLE_TYPE = 'BASE TABLE'"
    ));
    for t in tables.lines() {
        let sum = |s: &Server, db: &str| {
            let have = s.sql(&format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = '{t}'"
            ));
            if have == "1" {
                s.sql(&format!("CHECKSUM TABLE `{db}`.`{t}`"))
                    .split('\t')
                    .nth(1)
                    .unwrap_or_default()
                    .to_string()
            } else {
                "absent".to_string()
            }
        };
        let (a, b) = (sum(source, src_db), sum(target, dst_db));
        if a != b {
            return Err(format!(
                "CHECKSUM TABLE {t}: {a} on the source, {b} on the target"
            ));
        }
    }
    Ok(())
}

/// Asserts that `dst_db` on the target holds exactly the rows of `src_db`.
pub fn assert_same(
    source: &Server,
    src_db: &str,
    target: &Server,
    dst_db: &str,
    only: Option<&[&str]>,
) {
    if let Err(e) = compare(source, src_db, target, dst_db, only) {
        panic!("{e}");
    }
}

/// Waits until the target converges to the source, failing with the last
/// difference after `timeout`.
pub fn wait_same(source: &Server, src_db: &str, target: &Server, dst_db: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        // CHECKSUM TABLE first: cheap, so polling does not starve the job.
        if let Err(e) = checksums_match(source, src_db, target, dst_db) {
            if Instant::now() > deadline {
                let rows = compare(source, src_db, target, dst_db, None)
                    .err()
                    .unwrap_or_else(|| "(yet every row is equal)".into());
                panic!("no convergence after {timeout:?}: {e}\n{rows}");
            }
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        match compare(source, src_db, target, dst_db, None) {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("no convergence after {timeout:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The tables of `sel`'s database on the source that it selects, sorted.
pub fn selected_tables(source: &Server, sel: &ferry::job::Selection) -> Vec<String> {
    source
        .sql(&format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' \
             AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            sel.database
        ))
        .lines()
        .filter(|t| sel.matches(t))
        .map(str::to_string)
        .collect()
}

/// Waits until the target holds exactly the rows of every table `sel`
/// selects on the source (as the source has them now), failing with the
/// last difference after `timeout`.
pub fn wait_same_selected(
    source: &Server,
    target: &Server,
    sel: &ferry::job::Selection,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let tables = selected_tables(source, sel);
        let only: Vec<&str> = tables.iter().map(String::as_str).collect();
        match compare(
            source,
            &sel.database,
            target,
            &sel.target_database,
            Some(&only),
        ) {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("no convergence after {timeout:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}
