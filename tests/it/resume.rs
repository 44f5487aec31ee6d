//! Crash and stop in the middle of a full load: kill -9 (twice), SIGTERM,
//! a second runner on the same state; then resume and compare.

use std::time::{Duration, Instant};

use crate::cdc::signal;
use crate::*;

/// A source database of ~52k rows: keyed, composite-keyed and keyless.
fn prepare(db: &str) -> String {
    let (source, target) = shared();
    prepare_on(source, target, db)
}

fn prepare_on(source: &Server, target: &Server, db: &str) -> String {
    source.sql(&format!(
        "DROP DATABASE IF EXISTS {db}_src; CREATE DATABASE {db}_src; USE {db}_src;
         CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(100), n DOUBLE);
         INSERT INTO big SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 100), seq / 7 FROM seq_1_to_30000;
         CREATE TABLE pairs (a INT NOT NULL, b INT NOT NULL, v BLOB, PRIMARY KEY (a, b));
         INSERT INTO pairs SELECT seq % 100, seq, UNHEX(MD5(seq)) FROM seq_1_to_15000;
         CREATE TABLE heap (x INT, y VARCHAR(10));
         INSERT INTO heap SELECT seq % 10, 'dup' FROM seq_1_to_7000;"
    ));
    target.sql(&format!("DROP DATABASE IF EXISTS {db}_dst"));
    format!("{db}_dst")
}

fn job(dir: &std::path::Path, name: &str, db: &str, rate: u64) -> std::path::PathBuf {
    let (source, target) = shared();
    job_on(source, target, dir, name, db, rate)
}

fn job_on(
    source: &Server,
    target: &Server,
    dir: &std::path::Path,
    name: &str,
    db: &str,
    rate: u64,
) -> std::path::PathBuf {
    let full = format!("[full]\nthreads = 2\nchunk_rows = 1000\nrows_per_sec = {rate}");
    let text = job_toml(
        name,
        "full",
        None,
        &format!("{db}_src"),
        &format!("{db}_dst"),
        &full,
        source,
        target.port,
    );
    write_job(dir, &text)
}

fn target_rows(db: &str) -> u64 {
    rows_on(&shared().1, db)
}

fn rows_on(target: &Server, db: &str) -> u64 {
    // The table may not exist yet, or be dropped and created again as the
    // load starts (it is copied as of the snapshot): then 0.
    target
        .try_sql(&format!("SELECT COUNT(*) FROM {db}.big"))
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn kill_9_twice_then_resume_copies_each_chunk_once() {
    let dst = prepare("crash");
    let tmp = temp_dir("crash");
    let state = tmp.path().join("state");
    let job = job(tmp.path(), "crash", "crash", 15000);
    for threshold in [4000, 12000] {
        let mut child = spawn_run(&state, &job);
        wait_until(Duration::from_secs(60), "rows on the target", || {
            target_rows(&dst) >= threshold
        });
        signal(&child, "KILL");
        let _ = child.wait();
    }
    let before = target_rows(&dst);
    assert!(
        before < 30000,
        "the load finished before the crash; slow it down"
    );
    let out = run(ferry(&state).arg("run").arg(&job));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let (source, target) = shared();
    assert_same(source, "crash_src", target, &dst, None);
    // Finished chunks were not copied again: this run copied less than all.
    let copied = copied_by_this_run(&log);
    assert!(copied < 52000, "copied {copied} rows again:\n{log}");
    // Running the finished job again does nothing.
    let again = run(ferry(&state).arg("run").arg(&job));
    assert!(again.status.success());
    assert!(text(&again).contains("already done"), "{}", text(&again));
}

#[test]
fn sigterm_stops_gracefully_and_the_next_run_resumes() {
    let dst = prepare("term");
    let tmp = temp_dir("term");
    let state = tmp.path().join("state");
    let job = job(tmp.path(), "term", "term", 10000);
    let mut child = spawn_run(&state, &job);
    wait_until(Duration::from_secs(60), "rows on the target", || {
        target_rows(&dst) >= 2000
    });

    // A second runner on the same state dir is refused, naming the owner.
    let second = run(ferry(&state).arg("run").arg(&job));
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    assert!(
        text(&second).contains(&format!(
            "in use by another ferry runner (pid {})",
            child.id()
        )),
        "{}",
        text(&second)
    );

    signal(&child, "TERM");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("stopped"), "{}", text(&out));
    assert!(target_rows(&dst) < 30000);

    let out = run(ferry(&state).arg("run").arg(&job));
    assert!(out.status.success(), "{}", text(&out));
    let (source, target) = shared();
    assert_same(source, "term_src", target, &dst, None);
}

#[test]
fn dropped_connections_are_retried_and_nothing_is_lost() {
    // Servers of its own: it kills every connection of the ferry user.
    let source = &Server::with_id(41);
    let target = &Server::with_id(42);
    let dst = prepare_on(source, target, "drop");
    let tmp = temp_dir("drop");
    let state = tmp.path().join("state");
    let job = job_on(source, target, tmp.path(), "drop", "drop", 20000);
    let mut child = spawn_run(&state, &job);
    wait_until(Duration::from_secs(60), "rows on the target", || {
        rows_on(target, &dst) >= 3000
    });
    // Kill every connection Ferry has to both servers, mid-chunk.
    for server in [source, target] {
        let ids = server.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'ferry'");
        for id in ids.lines() {
            let _ = std::process::Command::new("mariadb")
                .args(["--no-defaults", "-h127.0.0.1", "-uroot"])
                .arg(format!("-P{}", server.port))
                .args(["-e", &format!("KILL CONNECTION {id}")])
                .status();
        }
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the job did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("output");
    assert!(status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("retrying"),
        "the retry is visible: {}",
        text(&out)
    );
    assert_same(source, "drop_src", target, &dst, None);
}

#[test]
fn a_load_resumed_after_its_key_changed_stops_with_what_to_do() {
    let dst = prepare("keychg");
    let tmp = temp_dir("keychg");
    let state = tmp.path().join("state");
    let job = job(tmp.path(), "keychg", "keychg", 10000);
    let mut child = spawn_run(&state, &job);
    wait_until(Duration::from_secs(60), "rows on the target", || {
        target_rows(&dst) >= 4000
    });
    signal(&child, "KILL");
    let _ = child.wait();
    assert!(target_rows(&dst) < 30000, "the load finished; slow it down");
    // The chunk bounds were planned on `id`; the key is now (id, n).
    let (source, _) = shared();
    source.sql("ALTER TABLE keychg_src.big DROP PRIMARY KEY, ADD PRIMARY KEY (id, n)");
    let out = run(ferry(&state).arg("run").arg(&job));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("chunk key of keychg_src.big has 2 column(s) now, its load was planned on 1")
            && log.contains("new name or --state dir"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// A table of more chunks than the planner writes to the state at once
/// (1000): planned in batches, killed -9 halfway through the copy and
/// resumed; finished chunks are not copied again.
#[test]
fn a_table_of_thousands_of_chunks_is_planned_in_batches_and_resumed() {
    let (source, target) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS many_src; CREATE DATABASE many_src; USE many_src;
         CREATE TABLE many_src.t (id INT PRIMARY KEY, v INT);
         INSERT INTO many_src.t SELECT seq, seq FROM seq_1_to_2500;",
    );
    target.sql("DROP DATABASE IF EXISTS many_dst");
    let tmp = temp_dir("many");
    let state = tmp.path().join("state");
    let full = "[full]\nthreads = 2\nchunk_rows = 1\nrows_per_sec = 400";
    let job = write_job(
        tmp.path(),
        &job_toml(
            "many",
            "full",
            None,
            "many_src",
            "many_dst",
            full,
            source,
            target.port,
        ),
    );
    let rows = || {
        target
            .try_sql("SELECT COUNT(*) FROM many_dst.t")
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut child = spawn_run(&state, &job);
    wait_until(Duration::from_secs(60), "rows on the target", || {
        rows() >= 600
    });
    signal(&child, "KILL");
    let _ = child.wait();
    let before = rows();
    assert!(before < 2500, "the load finished before the crash");
    let out = run(ferry(&state).arg("run").arg(&job));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_same(source, "many_src", target, "many_dst", None);
    let copied = copied_by_this_run(&log);
    assert!(
        copied < 2500 && copied + before >= 2500,
        "copied {copied} rows after {before} were on the target:\n{log}"
    );
}
