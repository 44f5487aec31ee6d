//! Where the full load meets the binlog, on a source that keeps writing:
//! keys moved between copied and uncopied ranges, unique values swapped,
//! parents deleted with ON DELETE CASCADE, a kill -9 and a pause in the
//! middle; the target must end equal and the job keep running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cdc::{sync_job, SyncRun};
use crate::*;

fn prepare(db: &str) {
    let (source, target) = shared();
    source.sql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; USE {db};
         CREATE TABLE m (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO m SELECT seq, CONCAT('m', seq) FROM seq_1_to_12000;
         CREATE TABLE u (id INT PRIMARY KEY, code INT NOT NULL, UNIQUE KEY (code));
         INSERT INTO u SELECT seq, seq FROM seq_1_to_6000;
         CREATE TABLE parent (id INT PRIMARY KEY, pad VARCHAR(50));
         INSERT INTO parent SELECT seq, REPEAT('p', 50) FROM seq_1_to_8000;
         CREATE TABLE child (id INT PRIMARY KEY, parent_id INT NOT NULL,
           FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE);
         INSERT INTO child SELECT seq, 8000 - (seq % 500) FROM seq_1_to_2000;"
    ));
    target.sql(&format!("DROP DATABASE IF EXISTS {db}_dst"));
}

/// The source's changes during the load: keys of early rows moved past
/// the end (into the last, open chunk), codes swapped between an early and
/// a late row of a unique key, parents late in their table deleted (their
/// children, copied early, cascade away on the source).
fn workload(db: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    let db = db.to_string();
    std::thread::spawn(move || {
        let (source, _) = shared();
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) && i < 300 {
            let sql = format!(
                "USE {db}; START TRANSACTION;
                 UPDATE m SET id = id + 100000 WHERE id = {m};
                 UPDATE u SET code = -code WHERE id = {a};
                 UPDATE u SET code = {a} WHERE id = {b};
                 UPDATE u SET code = {b} WHERE id = {a};
                 DELETE FROM parent WHERE id = {p};
                 COMMIT;",
                m = 1 + i * 3,
                a = 1 + i,
                b = 6000 - i,
                p = 8000 - i,
            );
            let mut tries = 0;
            while let Err(e) = source.try_sql(&sql) {
                tries += 1;
                assert!(tries < 20, "{e}");
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        i
    })
}

fn job(db: &str, name: &str, server_id: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let (source, target) = shared();
    let tmp = temp_dir(name);
    let job = write_job(
        tmp.path(),
        &sync_job(
            name,
            server_id,
            db,
            &format!("{db}_dst"),
            "[full]\nthreads = 2\nchunk_rows = 500\nrows_per_sec = 6000",
            source,
            target,
        ),
    );
    (tmp, job)
}

#[test]
fn keys_moved_unique_swaps_and_cascades_during_the_load() {
    let db = "ho_src";
    prepare(db);
    let (tmp, job) = job(db, "handover", 5501);
    let state = tmp.path().join("state");
    let stop = Arc::new(AtomicBool::new(false));
    let mut run = SyncRun::start(&state, &job);
    let writer = workload(db, stop.clone());
    run.wait_streaming();
    stop.store(true, Ordering::Relaxed);
    let n = writer.join().expect("workload");
    assert!(n > 20, "the workload ran only {n} rounds during the load");
    run.converge(&state, db);
    run.stop();
}

/// The same with the load interrupted twice (kill -9, then a pause and a
/// resume): the half-copied tables start over in a new snapshot.
#[test]
fn kill_9_and_pause_during_the_load_under_writes() {
    let db = "hok_src";
    prepare(db);
    let (tmp, job) = job(db, "handover-kill", 5502);
    let state = tmp.path().join("state");
    let (_, target) = shared();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = workload(db, stop.clone());
    let rows = |t: &str| -> u64 {
        target
            .try_sql(&format!("SELECT COUNT(*) FROM {db}_dst.{t}"))
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let run = SyncRun::start(&state, &job);
    wait_until(Duration::from_secs(60), "rows on the target", || {
        rows("m") + rows("parent") > 3000
    });
    run.kill();
    let mut run = SyncRun::start(&state, &job);
    let up = std::panic::catch_unwind(|| {
        wait_until(Duration::from_secs(60), "the load to go on", || {
            let out = crate::run(ferry(&state).args(["status", "handover-kill"]));
            let t = text(&out);
            t.contains("runner: up") && t.contains("full_load")
        })
    });
    if up.is_err() {
        let status = text(&crate::run(ferry(&state).args(["status", "handover-kill"])));
        panic!("{status}\nferry:\n{}", run.output());
    }
    let paused = crate::run(ferry(&state).args(["pause", "handover-kill"]));
    assert!(paused.status.success(), "{}", text(&paused));
    wait_until(Duration::from_secs(30), "the job to pause", || {
        text(&crate::run(ferry(&state).args(["status", "handover-kill"]))).contains("paused")
    });
    let resumed = crate::run(ferry(&state).args(["resume", "handover-kill"]));
    assert!(resumed.status.success(), "{}", text(&resumed));
    run.wait_streaming();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("workload");
    run.converge(&state, db);
    // Pause and resume kept their attempt: one precheck per run (two runs).
    let out = crate::run(ferry(&state).args(["status", "handover-kill", "--json"]));
    let status: ferry_proto::Status = serde_json::from_slice(&out.stdout).expect("status JSON");
    let prechecks = status.jobs[0]
        .events
        .iter()
        .filter(|e| e.message == "prechecking")
        .count();
    assert_eq!(prechecks, 2, "{:#?}", status.jobs[0].events);
    run.stop();
}
