//! CDC (`mode = "sync"`): a runner in the background, workloads on the
//! source, the target converging; stops, crashes and late replays.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::*;

/// A `ferry run` in the background, its stderr in a file.
pub struct SyncRun {
    child: Child,
    log: PathBuf,
}

impl SyncRun {
    pub fn start(state: &Path, job: &Path) -> SyncRun {
        let log = state.with_extension(format!("stderr.{}", Instant::now().elapsed().as_nanos()));
        let log = PathBuf::from(format!("{}-{}", log.display(), std::process::id()));
        let file = std::fs::File::create(&log).expect("stderr file");
        let child = ferry(state)
            .arg("run")
            .arg(job)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn ferry");
        SyncRun { child, log }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the full load is done and the binlog streams.
    pub fn wait_streaming(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.output().contains("streaming changes") {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "ferry exited ({status}) before streaming:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not streaming:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then exit 0 within 10 s.
    pub fn stop(mut self) -> String {
        signal(&self.child, "TERM");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no exit within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self.output();
        assert_eq!(status.code(), Some(0), "{out}");
        out
    }

    pub fn kill(mut self) {
        signal(&self.child, "KILL");
        let _ = self.child.wait();
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("ferry exited ({status}):\n{}", self.output());
        }
    }
}

impl Drop for SyncRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(child: &Child, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

/// The case flow for a sync job: load, stream, live workload, converge;
/// stop; late workload; restart, converge; stop.
pub fn run_sync_case(
    dir: &Path,
    source: &Server,
    target: &Server,
    job: &Path,
    state: &Path,
    src_db: &str,
    dst_db: &str,
) {
    let mut run = SyncRun::start(state, job);
    run.wait_streaming();
    source.sql_file(&dir.join("workload.sql"));
    wait_same(source, src_db, target, dst_db, Duration::from_secs(90));
    run.assert_running();
    run.stop();
    let late = dir.join("workload_late.sql");
    if late.exists() {
        source.sql_file(&late);
        let mut run = SyncRun::start(state, job);
        run.wait_streaming();
        wait_same(source, src_db, target, dst_db, Duration::from_secs(90));
        run.stop();
    }
    // The target has no table the source lacks (renames, drops applied).
    let list = |s: &Server, db: &str| {
        s.sql(&format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' ORDER BY 1"
        ))
    };
    assert_eq!(list(source, src_db), list(target, dst_db));
}

const CRASH_JOB: &str = r#"
name = "cdc-crash"
mode = "sync"
[source]
host = "127.0.0.1"
port = {source_port}
user = "ferry"
password_env = "FERRY_SRC_PASSWORD"
server_id = 5102
[target]
host = "127.0.0.1"
port = {target_port}
user = "ferry"
password_env = "FERRY_DST_PASSWORD"
[[select]]
database = "cdcx_src"
rename = "cdcx_dst"
"#;

/// kill -9 while transactions stream in, three times; restart; no keyless
/// duplicates, no lost rows.
#[test]
fn kill_9_during_cdc_loses_and_duplicates_nothing() {
    let (source, target) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS cdcx_src; CREATE DATABASE cdcx_src; USE cdcx_src; \
         CREATE TABLE k (id INT PRIMARY KEY, n INT); \
         CREATE TABLE heap (n INT, tag VARCHAR(10)); \
         INSERT INTO k SELECT seq, 0 FROM seq_1_to_100;",
    );
    target.sql("DROP DATABASE IF EXISTS cdcx_dst");
    let tmp = temp_dir("cdc-crash");
    let state = tmp.path().join("state");
    let job = write_job(tmp.path(), &job_text(CRASH_JOB, source, target.port));
    let writer = {
        std::thread::spawn(move || {
            // 3000 small transactions, each touching the keyed and the keyless table.
            let mut sql = String::from("USE cdcx_src;\n");
            for i in 0..3000 {
                sql.push_str(&format!(
                    "START TRANSACTION; UPDATE k SET n = n + 1 WHERE id = {}; \
                     INSERT INTO heap VALUES ({i}, 'row'), ({i}, 'row'); \
                     DELETE FROM heap WHERE n = {} LIMIT 1; COMMIT;\n",
                    1 + i % 100,
                    i.max(1) - 1
                ));
            }
            shared().0.sql(&sql);
        })
    };
    for round in 0..3 {
        let mut run = SyncRun::start(&state, &job);
        if round == 0 {
            run.wait_streaming();
        }
        std::thread::sleep(Duration::from_millis(300 + 200 * round));
        run.assert_running();
        if round == 0 {
            assert!(
                !writer.is_finished(),
                "the workload ended before the first kill"
            );
        }
        run.kill();
    }
    writer.join().expect("writer");
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    wait_same(
        source,
        "cdcx_src",
        target,
        "cdcx_dst",
        Duration::from_secs(90),
    );
    run.stop();
}
