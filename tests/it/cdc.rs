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
        Self::start_jobs(state, &[job])
    }

    /// One runner for several job files.
    pub fn start_jobs(state: &Path, jobs: &[&Path]) -> SyncRun {
        Self::start_with(state, jobs, &[])
    }

    /// With more arguments to `ferry run`.
    pub fn start_with(state: &Path, jobs: &[&Path], extra: &[&str]) -> SyncRun {
        let log = state.with_extension(format!("stderr.{}", Instant::now().elapsed().as_nanos()));
        let log = PathBuf::from(format!("{}-{}", log.display(), std::process::id()));
        let file = std::fs::File::create(&log).expect("stderr file");
        let child = ferry(state)
            .arg("run")
            .args(extra)
            .args(jobs)
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
        self.wait_streaming_jobs(1)
    }

    /// Waits until `n` jobs stream.
    pub fn wait_streaming_jobs(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.output().matches("streaming changes").count() < n {
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

    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    /// Waits for the exit (after a cutover or `ferry stop`); its code.
    pub fn wait_exit(mut self, within: Duration) -> (Option<i32>, String) {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return (s.code(), self.output());
            }
            assert!(start.elapsed() < within, "no exit:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(mut self) {
        signal(&self.child, "KILL");
        let _ = self.child.wait();
    }

    /// Runs `check` (a wait for the target to converge, say); when it
    /// fails, fails the test with ferry's output and the tail of its log.
    pub fn explain(&self, state: &Path, check: impl FnOnce()) {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
            panic!(
                "{e:?}\nferry:\n{}\nlog tail:\n{}",
                self.output(),
                log_tail(state)
            );
        }
    }

    /// Waits (2 min) until `db` on the shared source equals `{db}_dst` on
    /// the shared target, the log shown on failure; the runner still runs.
    pub fn converge(&mut self, state: &Path, db: &str) {
        let (source, target) = shared();
        self.explain(state, || {
            wait_same(
                source,
                db,
                target,
                &format!("{db}_dst"),
                Duration::from_secs(120),
            )
        });
        self.assert_running();
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

/// The runner's log files in `state`.
fn logs(state: &Path) -> String {
    std::fs::read_dir(state.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// Their last lines, newest first.
pub fn log_tail(state: &Path) -> String {
    logs(state)
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .join("\n")
}

fn spec_name(job: &Path) -> String {
    ferry::job::load_job(job).expect("job").name
}

/// The case flow for a sync job: load, stream, live workload, converge;
/// stop; late workload; restart, converge; stop.
pub fn run_sync_case(
    dir: &Path,
    source: &Server,
    target: &Server,
    job: &Path,
    state: &Path,
    sel: &ferry::job::Selection,
) {
    let mut run = SyncRun::start(state, job);
    run.wait_streaming();
    source.sql_file(&dir.join("workload.sql"));
    run.explain(state, || {
        wait_same_selected(source, target, sel, Duration::from_secs(90));
        // The rows compared may converge before the workload's last DDL
        // (a rename out of the selection) is applied.
        if !dir.join("workload_late.sql").exists() {
            wait_until(Duration::from_secs(30), "the target's tables", || {
                let (want, have) = target_tables(dir, source, target, sel);
                want == have
            });
        }
    });
    run.assert_running();
    run.stop();
    let late = dir.join("workload_late.sql");
    if late.exists() {
        source.sql_file(&late);
        let mut run = SyncRun::start(state, job);
        run.wait_streaming();
        run.explain(state, || {
            wait_same_selected(source, target, sel, Duration::from_secs(90))
        });
        run.stop();
    }
    // The state kept a lag/throughput history, ending where the job stopped.
    let store = ferry::state::Store::open(state).expect("state");
    let samples = store.cdc_samples(&spec_name(job)).expect("samples");
    let cp = store
        .checkpoint(&spec_name(job))
        .expect("checkpoint")
        .expect("a checkpoint");
    let last = samples.last().expect("at least one CDC sample");
    assert_eq!(last.1.position, cp.position);
    drop(store);
    // The target has the selected tables and views, those a case expects
    // besides (renamed out of the selection), and nothing else: renames
    // and drops applied, helper tables of online schema changes absent.
    let (want, have) = target_tables(dir, source, target, sel);
    assert_eq!(want, have, "tables on the target");
}

/// The tables a sync case's target should have, and those it has.
fn target_tables(
    dir: &Path,
    source: &Server,
    target: &Server,
    sel: &ferry::job::Selection,
) -> (Vec<String>, Vec<String>) {
    let (src_db, dst_db) = (sel.database.as_str(), sel.target_database.as_str());
    let list = |s: &Server, db: &str| -> Vec<String> {
        s.sql(&format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' ORDER BY 1"
        ))
        .lines()
        .map(str::to_string)
        .collect()
    };
    let mut want: Vec<String> = list(source, src_db)
        .into_iter()
        .filter(|t| sel.matches(t))
        .collect();
    if let Ok(extra) = std::fs::read_to_string(dir.join("target_extra.txt")) {
        want.extend(extra.lines().filter(|l| !l.is_empty()).map(str::to_string));
    }
    want.sort();
    let mut have = list(target, dst_db);
    have.sort();
    (want, have)
}

/// kill -9 while transactions stream in, three times; restart; no keyless
/// duplicates, no lost rows.
#[test]
fn kill_9_during_cdc_loses_and_duplicates_nothing() {
    kill_9_during_cdc(1, 1);
}

/// The same with parallel apply over four lanes, restarted with two: the
/// lanes of the crashed run finish the replay, nothing is applied twice.
#[test]
fn kill_9_during_parallel_cdc_loses_and_duplicates_nothing() {
    kill_9_during_cdc(4, 2);
}

fn kill_9_during_cdc(threads: usize, then: usize) {
    let (source, target) = shared();
    let (src, dst) = (format!("cdcx{threads}_src"), format!("cdcx{threads}_dst"));
    keyed_and_keyless(&src, &dst, 100, 0);
    let tmp = temp_dir("cdc-crash");
    let state = tmp.path().join("state");
    let name = format!("cdc-crash-{threads}");
    let job_with = |threads: usize| {
        write_job(
            tmp.path(),
            &sync_job(
                &name,
                5110 + threads as u32,
                &src,
                &dst,
                &format!("[cdc]\nthreads = {threads}"),
                source,
                target,
            ),
        )
    };
    let job = job_with(threads);
    let writer = {
        let src = src.clone();
        std::thread::spawn(move || {
            // 3000 small transactions, each touching the keyed and the keyless table.
            let mut sql = format!("USE {src};\n");
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
    let job = job_with(then);
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    run.explain(&state, || {
        wait_same(source, &src, target, &dst, Duration::from_secs(180))
    });
    run.stop();
}

/// On the shared servers: `src` with a keyed table `k` (`k_rows` rows) and
/// a keyless `heap` (`heap_rows` rows); `dst` dropped.
fn keyed_and_keyless(src: &str, dst: &str, k_rows: u32, heap_rows: u32) {
    let (source, target) = shared();
    let mut sql = format!(
        "DROP DATABASE IF EXISTS {src}; CREATE DATABASE {src}; USE {src}; \
         CREATE TABLE k (id INT PRIMARY KEY, n INT); \
         CREATE TABLE heap (n INT, tag VARCHAR(10)); \
         INSERT INTO k SELECT seq, 0 FROM seq_1_to_{k_rows};"
    );
    if heap_rows > 0 {
        sql.push_str(&format!(
            " INSERT INTO heap SELECT seq, 'old' FROM seq_1_to_{heap_rows};"
        ));
    }
    source.sql(&sql);
    target.sql(&format!("DROP DATABASE IF EXISTS {dst}"));
}

pub fn sync_job(
    name: &str,
    server_id: u32,
    db: &str,
    rename: &str,
    extra: &str,
    source: &Server,
    target: &Server,
) -> String {
    job_toml(
        name,
        "sync",
        Some(server_id),
        db,
        rename,
        extra,
        source,
        target.port,
    )
}

/// Sakila under a workload of rentals, payments, film updates that fire its
/// triggers and a city_id update that cascades through its foreign keys:
/// nothing applied twice by a trigger or lost to a cascade on the target,
/// with parallel apply.
#[test]
fn sakila_workload_with_triggers_and_cascades() {
    let source = Server::with_id(21);
    let target = Server::with_id(22);
    let sakila = repo().join("testdata/sakila");
    source.sql_file(&sakila.join("sakila-mv-schema.sql"));
    source.sql_file(&sakila.join("sakila-mv-data.sql"));
    let tmp = temp_dir("cdc-sakila");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &sync_job(
            "sakila-sync",
            5103,
            "sakila",
            "sakila",
            // Parallel apply: the tables linked by foreign keys share a lane.
            "[cdc]\nthreads = 3",
            &source,
            &target,
        ),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    source.sql(
        "USE sakila;
         INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id)
           VALUES (NOW(), 10, 5, 1), (NOW(), 11, 6, 2);
         INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date)
           SELECT customer_id, staff_id, rental_id, 4.99, NOW() FROM rental WHERE rental_id > 16049;
         UPDATE film SET title = 'ACADEMY DINOSAUR II', description = 'changed' WHERE film_id = 1;
         INSERT INTO film (title, language_id) VALUES ('NEW FILM', 1);
         DELETE FROM film_actor WHERE film_id = 2 AND actor_id = 19;
         UPDATE city SET city_id = 9001 WHERE city_id = 1;
         UPDATE country SET country_id = 901 WHERE country_id = 2;
         DELETE FROM payment WHERE payment_id = 5;
         UPDATE customer SET active = 0, email = NULL WHERE customer_id = 9;",
    );
    wait_same(
        &source,
        "sakila",
        &target,
        "sakila",
        Duration::from_secs(90),
    );
    // The cascades reached the children on the target.
    assert_eq!(
        target.sql("SELECT COUNT(*) FROM sakila.address WHERE city_id = 9001"),
        "1"
    );
    assert_eq!(
        target.sql("SELECT COUNT(*) FROM sakila.film_text WHERE title = 'NEW FILM'"),
        "1"
    );
    // No trigger was created on the target while it replicates.
    assert_eq!(
        target.sql(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'sakila'"
        ),
        "0"
    );
    run.stop();
}

/// sysbench oltp_write_only on the source during the full load and after:
/// the target converges.
#[test]
fn sysbench_during_the_full_load_and_after() {
    if std::process::Command::new("sysbench")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("sysbench is missing: scripts/test.sh installs it");
    }
    let (source, target) = shared();
    source.sql("DROP DATABASE IF EXISTS sb_src; CREATE DATABASE sb_src;");
    target.sql("DROP DATABASE IF EXISTS sb_dst");
    let sysbench = |cmd: &str, secs: u32| {
        let out = std::process::Command::new("sysbench")
            .arg("oltp_write_only")
            .args([
                "--db-driver=mysql",
                "--mysql-host=127.0.0.1",
                "--mysql-user=ferry",
            ])
            .arg(format!("--mysql-port={}", source.port))
            .arg(format!("--mysql-password={PASSWORD}"))
            .args([
                "--mysql-db=sb_src",
                "--tables=2",
                "--table-size=20000",
                "--threads=2",
            ])
            .arg(format!("--time={secs}"))
            .arg(cmd)
            .output()
            .expect("sysbench");
        assert!(out.status.success(), "sysbench {cmd}: {}", text(&out));
    };
    sysbench("prepare", 0);
    let tmp = temp_dir("cdc-sysbench");
    let state = tmp.path().join("state");
    // A throttled full load, so the workload overlaps it.
    let job = write_job(
        tmp.path(),
        &sync_job(
            "sysbench-sync",
            5104,
            "sb_src",
            "sb_dst",
            "[full]\nthreads = 2\nchunk_rows = 1000\nrows_per_sec = 8000\n[cdc]\nthreads = 2",
            source,
            target,
        ),
    );
    let mut run = SyncRun::start(&state, &job);
    sysbench("run", 4);
    run.assert_running();
    assert!(
        !run.output().contains("streaming changes"),
        "the workload should overlap the full load; slow the load down"
    );
    run.wait_streaming();
    sysbench("run", 3);
    run.explain(&state, || {
        wait_same(source, "sb_src", target, "sb_dst", Duration::from_secs(120))
    });
    run.stop();
}

/// `[cdc] start` = "now", "FILE:POS" and "gtid:SET": CDC only (no full
/// load), from that point on.
#[test]
fn explicit_start_positions_stream_from_there() {
    let (source, target) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS st_src; CREATE DATABASE st_src; \
         CREATE TABLE st_src.t (id INT PRIMARY KEY); INSERT INTO st_src.t VALUES (1);",
    );
    let gtid = source.sql("SELECT @@gtid_binlog_pos");
    source.sql("INSERT INTO st_src.t VALUES (2)");
    let status = source.sql("SHOW MASTER STATUS");
    let mut cols = status.split('\t');
    let (file, pos) = (
        cols.next().unwrap_or_default().to_string(),
        cols.next().unwrap_or_default().to_string(),
    );
    source.sql("INSERT INTO st_src.t VALUES (3)");
    for (i, (start, expect_before)) in [
        // Each run also sees the rows the runs before it inserted (10, 11).
        (format!("gtid:{gtid}"), "2,3"),
        (format!("{file}:{pos}"), "3,10"),
        ("now".to_string(), ""),
    ]
    .into_iter()
    .enumerate()
    {
        let dst = format!("st_dst{i}");
        target.sql(&format!("DROP DATABASE IF EXISTS {dst}"));
        let tmp = temp_dir("cdc-start");
        let job = write_job(
            tmp.path(),
            &sync_job(
                &format!("start-{i}"),
                5110 + i as u32,
                "st_src",
                &dst,
                &format!("[cdc]\nstart = \"{start}\""),
                source,
                target,
            ),
        );
        let mut run = SyncRun::start(&tmp.path().join("state"), &job);
        run.wait_streaming();
        let rows = || {
            target.sql(&format!(
                "SELECT COALESCE(GROUP_CONCAT(id ORDER BY id), '') FROM {dst}.t"
            ))
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while rows() != expect_before {
            assert!(
                Instant::now() < deadline,
                "start {start}: target has {:?}, want {expect_before:?}\n{}",
                rows(),
                run.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        source.sql(&format!("INSERT INTO st_src.t VALUES ({})", 10 + i));
        let new = (10 + i).to_string();
        let want = if expect_before.is_empty() {
            new
        } else {
            format!("{expect_before},{new}")
        };
        wait_until(Duration::from_secs(30), "new rows", || rows() == want);
        run.stop();
        // No full load, so no hand-over window to replay in safe mode.
        let log = logs(&tmp.path().join("state"));
        assert!(log.contains("streaming the binlog"), "{log}");
        assert!(
            !log.contains("safe mode over the hand-over window"),
            "{log}"
        );
    }
}

/// A start position the source has purged is a clear error naming the
/// position needed and the oldest one available.
#[test]
fn purged_binlog_is_a_clear_error() {
    let source = Server::with_id(31);
    let (_, target) = shared();
    source.sql(
        "CREATE DATABASE pg_src; CREATE TABLE pg_src.t (id INT PRIMARY KEY); \
         FLUSH BINARY LOGS; FLUSH BINARY LOGS; PURGE BINARY LOGS TO 'binlog.000003';",
    );
    let tmp = temp_dir("cdc-purged");
    let job = write_job(
        tmp.path(),
        &sync_job(
            "purged",
            5120,
            "pg_src",
            "pg_dst",
            "[cdc]\nstart = \"binlog.000001:4\"",
            &source,
            target,
        ),
    );
    let out = run(ferry(&tmp.path().join("state")).arg("run").arg(&job));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("must resume at binlog.000001:4"), "{t}");
    // The server may keep a binlog a little longer than asked (binlog
    // checkpoints), so the oldest named is binlog.000002 or .000003.
    assert!(
        t.contains("the oldest binlog on the source is binlog.000002")
            || t.contains("the oldest binlog on the source is binlog.000003"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
}

/// Two streams with one server_id: the server cuts the first, and Ferry
/// says why instead of fighting over it.
#[test]
fn a_second_stream_with_the_same_server_id_is_reported() {
    let (source, target) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS sid_src; CREATE DATABASE sid_src; \
         CREATE TABLE sid_src.t (id INT PRIMARY KEY);",
    );
    let tmp = temp_dir("cdc-sid");
    let job_a = tmp.path().join("a.toml");
    let job_b = tmp.path().join("b.toml");
    std::fs::write(
        &job_a,
        sync_job("sid-a", 5130, "sid_src", "sid_a", "", source, target),
    )
    .expect("job a");
    std::fs::write(
        &job_b,
        sync_job("sid-b", 5130, "sid_src", "sid_b", "", source, target),
    )
    .expect("job b");
    let mut a = SyncRun::start(&tmp.path().join("state-a"), &job_a);
    a.wait_streaming();
    let mut b = SyncRun::start(&tmp.path().join("state-b"), &job_b);
    b.wait_streaming();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !a.output().contains("another replica with server_id 5130") {
        assert!(Instant::now() < deadline, "not reported:\n{}", a.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    b.stop();
}

/// kill -9 while one large source transaction is being applied: the target
/// never shows part of it, and after the restart it holds it exactly once.
#[test]
fn kill_9_during_a_large_transaction() {
    let (source, target) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS big_src; CREATE DATABASE big_src; USE big_src; \
         CREATE TABLE k (id INT PRIMARY KEY, v VARCHAR(20)); CREATE TABLE heap (n INT, v VARCHAR(20));",
    );
    target.sql("DROP DATABASE IF EXISTS big_dst");
    let tmp = temp_dir("cdc-bigtxn");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &sync_job("cdc-bigtxn", 5140, "big_src", "big_dst", "", source, target),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    source.sql(
        "USE big_src; START TRANSACTION; \
         INSERT INTO k SELECT seq, CONCAT('row ', seq) FROM seq_1_to_150000; \
         INSERT INTO heap SELECT seq % 100, 'same' FROM seq_1_to_150000; COMMIT;",
    );
    // Kill while the target has not committed it yet.
    let count = |t: &str| target.sql(&format!("SELECT COUNT(*) FROM big_dst.{t}"));
    std::thread::sleep(Duration::from_millis(300));
    let seen = count("k");
    run.kill();
    assert!(
        seen == "0" || seen == "150000",
        "a partial transaction was visible: {seen} rows"
    );
    let after_kill = (count("k"), count("heap"));
    assert!(
        after_kill == ("0".into(), "0".into()) || after_kill == ("150000".into(), "150000".into()),
        "partial after kill: {after_kill:?}"
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    wait_same(
        source,
        "big_src",
        target,
        "big_dst",
        Duration::from_secs(120),
    );
    run.stop();
}

/// The source, then the target, restart mid-stream: Ferry retries and
/// converges.
#[test]
fn source_and_target_restarts_mid_stream() {
    let mut source = Server::with_id(51);
    let mut target = Server::with_id(52);
    source.sql("CREATE DATABASE rs_src; CREATE TABLE rs_src.t (id INT PRIMARY KEY, v INT);");
    let tmp = temp_dir("cdc-restart");
    let job = write_job(
        tmp.path(),
        &sync_job("restarts", 5150, "rs_src", "rs_dst", "", &source, &target),
    );
    let mut run = SyncRun::start(&tmp.path().join("state"), &job);
    run.wait_streaming();
    source.sql("USE rs_src; INSERT INTO t SELECT seq, seq FROM seq_1_to_100;");
    source.restart();
    source.sql("USE rs_src; INSERT INTO t SELECT seq, seq FROM seq_101_to_200; UPDATE t SET v = -v WHERE id <= 50;");
    target.restart();
    source.sql("USE rs_src; DELETE FROM t WHERE id > 180;");
    let converged = std::panic::catch_unwind(|| {
        wait_same(
            &source,
            "rs_src",
            &target,
            "rs_dst",
            Duration::from_secs(120),
        )
    });
    assert!(converged.is_ok(), "ferry said:\n{}", run.output());
    run.assert_running();
    assert!(run.output().contains("retrying"), "{}", run.output());
    run.stop();
}

/// Parallel apply, stopped while one lane is behind the others: a row lock
/// held on the target holds one lane back while the lane of a keyless
/// table commits; kill -9; release. The restart (with another thread
/// count) replays the group, and the lane that had committed skips it: no
/// duplicate in the keyless table.
#[test]
fn parallel_lanes_stopped_unevenly_apply_nothing_twice() {
    use std::io::{BufRead, Write};
    let (source, target) = shared();
    let (src, dst, name) = ("lanes_src", "lanes_dst", "lanes");
    keyed_and_keyless(src, dst, 100, 0);
    let tmp = temp_dir("cdc-lanes");
    let state = tmp.path().join("state");
    let job = |threads: usize| {
        write_job(
            tmp.path(),
            &sync_job(
                name,
                5120,
                src,
                dst,
                &format!("[cdc]\nthreads = {threads}"),
                source,
                target,
            ),
        )
    };
    let mut run = SyncRun::start(&state, &job(4));
    run.wait_streaming();
    // Ferry spreads rows by FNV-1a: of the primary key's literal for keyed
    // tables, of the qualified name for keyless ones.
    let lane = |bytes: &[u8]| ferry::sql::fnv1a(bytes) as usize % 4;
    let heap_lane = lane(format!("`{dst}`.`heap`").as_bytes());
    let x = (1..=100)
        .find(|x| lane(format!("{x}\0").as_bytes()) != heap_lane)
        .expect("a key on another lane");
    let key = |l: usize| match l {
        0 => name.to_string(),
        l => format!("{name}#{l}"),
    };
    let x_key = key(lane(format!("{x}\0").as_bytes()));
    let mut lock = target
        .client()
        .args(["-N", "--unbuffered"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client");
    let mut stdin = lock.stdin.take().expect("stdin");
    writeln!(
        stdin,
        "START TRANSACTION; SELECT n FROM {dst}.k WHERE id = {x} FOR UPDATE;"
    )
    .expect("lock");
    let mut line = String::new();
    std::io::BufReader::new(lock.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("locked");
    // One source transaction: the locked row and the keyless table.
    source.sql(&format!(
        "USE {src}; START TRANSACTION; UPDATE k SET n = n + 1 WHERE id = {x}; \
         INSERT INTO heap VALUES (1, 'a'), (2, 'b'); COMMIT;"
    ));
    let pos = |k: &str| {
        target
            .sql(&format!(
                "SELECT COALESCE(MAX(binlog_pos), 0) FROM ferry_meta.checkpoints WHERE job = '{k}'"
            ))
            .parse::<u64>()
            .expect("position")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while pos(&key(heap_lane)) <= pos(&x_key) {
        assert!(
            Instant::now() < deadline,
            "the keyless lane did not commit:\n{}",
            run.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run.kill();
    writeln!(stdin, "ROLLBACK;").expect("unlock");
    drop(stdin);
    let _ = lock.wait();
    let mut run = SyncRun::start(&state, &job(2));
    run.wait_streaming();
    wait_same(source, src, target, dst, Duration::from_secs(60));
    assert_eq!(target.sql(&format!("SELECT COUNT(*) FROM {dst}.heap")), "2");
    assert!(
        logs(&state).contains("keeping them"),
        "the restart should keep the crashed run's lanes:\n{}",
        log_tail(&state)
    );
    run.stop();
}

/// kill -9 during the hand-over: once mid full load while a workload runs
/// (the load resumes, CDC later replays from before it), once just after
/// streaming starts (inside the safe-mode window); the target converges,
/// the keyless table without duplicates.
#[test]
fn kill_9_during_the_hand_over() {
    let (source, target) = shared();
    keyed_and_keyless("ho_src", "ho_dst", 20000, 2000);
    let tmp = temp_dir("cdc-handover");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &sync_job(
            "handover",
            5130,
            "ho_src",
            "ho_dst",
            "[full]\nthreads = 2\nchunk_rows = 1000\nrows_per_sec = 6000",
            source,
            target,
        ),
    );
    let writer = std::thread::spawn(|| {
        for i in 0..150 {
            shared().0.sql(&format!(
                "USE ho_src; START TRANSACTION; UPDATE k SET n = n + 1 WHERE id = {}; \
                 INSERT INTO heap VALUES ({i}, 'new'); DELETE FROM heap WHERE n = {i} LIMIT 1; COMMIT;",
                1 + (i * 131) % 20000
            ));
            std::thread::sleep(Duration::from_millis(40));
        }
    });
    let run = SyncRun::start(&state, &job);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.output().contains("done:") {
        assert!(
            Instant::now() < deadline,
            "no table finished:\n{}",
            run.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !run.output().contains("streaming changes"),
        "the load ended too soon"
    );
    run.kill();
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    std::thread::sleep(Duration::from_millis(150));
    run.kill();
    writer.join().expect("writer");
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    run.explain(&state, || {
        wait_same(source, "ho_src", target, "ho_dst", Duration::from_secs(90))
    });
    run.stop();
}
