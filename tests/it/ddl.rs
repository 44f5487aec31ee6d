//! DDL during CDC that the data-driven cases cannot express: the real
//! pt-online-schema-change while a sync job streams, objects (views,
//! routines, triggers, events) created during CDC, and statements Ferry
//! must refuse.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cdc::{log_tail, sync_job, SyncRun};
use crate::*;

/// The tables of `db` on `s`, sorted.
fn table_names(s: &Server, db: &str) -> Vec<String> {
    s.sql(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' ORDER BY 1"
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

/// pt-online-schema-change alters `orders` while the job streams and an
/// application writes to it; the target's `orders` ends equal to the
/// source's (new column included), is never missing or empty meanwhile,
/// and never sees the helper table or the triggers.
fn pt_osc_during_sync(tables: Option<&str>, db: &str, server_id: u32) {
    if std::process::Command::new("pt-online-schema-change")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("pt-online-schema-change is missing: scripts/test.sh installs percona-toolkit");
    }
    let (source, target) = shared();
    let dst = format!("{db}_dst");
    source.sql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; USE {db};
         CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(40), n INT);
         INSERT INTO orders (v, n) SELECT CONCAT('o', seq), seq FROM seq_1_to_5000;
         CREATE TABLE items (id INT PRIMARY KEY, order_id INT);
         INSERT INTO items SELECT seq, seq FROM seq_1_to_100;
         CREATE TABLE unlisted (id INT PRIMARY KEY);"
    ));
    target.sql(&format!("DROP DATABASE IF EXISTS {dst}"));
    let tmp = temp_dir("ptosc");
    let state = tmp.path().join("state");
    let extra = tables
        .map(|t| format!("tables = [{t}]"))
        .unwrap_or_default();
    let job = write_job(
        tmp.path(),
        &sync_job(
            &format!("ptosc-{server_id}"),
            server_id,
            db,
            &dst,
            &extra,
            source,
            target,
        ),
    );
    let sel = ferry::job::load_job(&job).expect("job").select.remove(0);
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    wait_same_selected(source, target, &sel, Duration::from_secs(60));

    // The target's orders, watched while the change runs.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, dst) = (stop.clone(), dst.clone());
        std::thread::spawn(move || {
            let (_, target) = shared();
            let mut seen = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let n = target.sql(&format!(
                    "SELECT IF(COUNT(*) = 0, 'empty', 'ok') FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = '{dst}' AND TABLE_NAME = 'orders'"
                ));
                if n != "ok" {
                    return Err(format!(
                        "the target's orders went missing ({seen} looks in)"
                    ));
                }
                let rows = target.sql(&format!("SELECT COUNT(*) FROM {dst}.orders"));
                if rows == "0" {
                    return Err(format!("the target's orders was empty ({seen} looks in)"));
                }
                seen += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(seen)
        })
    };
    let writer = {
        let (stop, db) = (stop.clone(), db.to_string());
        std::thread::spawn(move || {
            let (source, _) = shared();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 400 {
                // One transaction; retried like an application would when
                // the tool's triggers make it deadlock.
                let txn = format!(
                    "USE {db}; START TRANSACTION; INSERT INTO orders (v, n) VALUES ('w{i}', {i}); \
                     UPDATE orders SET n = n + 1 WHERE id = {}; DELETE FROM orders WHERE id = {}; \
                     COMMIT;",
                    1 + i * 7 % 5000,
                    5000 - i
                );
                let mut tries = 0;
                while let Err(e) = source.try_sql(&txn) {
                    tries += 1;
                    assert!(tries < 20, "{e}");
                }
                i += 1;
            }
        })
    };
    let out = std::process::Command::new("pt-online-schema-change")
        .args([
            "--alter",
            "ADD COLUMN c INT NOT NULL DEFAULT 5, MODIFY v VARCHAR(60)",
            &format!("D={db},t=orders,h=127.0.0.1,P={},u=root", source.port),
            "--execute",
            "--recursion-method=none",
            "--chunk-size=500",
            "--no-check-alter",
        ])
        .output()
        .expect("pt-online-schema-change runs");
    assert!(
        out.status.success(),
        "pt-online-schema-change failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    source.sql(&format!(
        "USE {db}; INSERT INTO orders (v, n, c) VALUES ('after the change', 1, 6)"
    ));
    let converged = std::panic::catch_unwind(|| {
        wait_same_selected(source, target, &sel, Duration::from_secs(90))
    });
    let looks = watcher.join().expect("watcher");
    if let Err(e) = converged {
        panic!(
            "{e:?}\nferry:\n{}\nlog tail:\n{}",
            run.output(),
            log_tail(&state)
        );
    }
    let looks = looks.unwrap_or_else(|e| panic!("{e}"));
    assert!(looks > 3, "the watcher looked only {looks} times");
    run.assert_running();
    // The new column is there; no helper table, no trigger.
    assert!(target
        .sql(&format!("SHOW CREATE TABLE {dst}.orders"))
        .contains("`c` int(11) NOT NULL DEFAULT 5"));
    let names = table_names(target, &dst);
    assert!(
        !names.iter().any(|t| t.starts_with('_')),
        "helper tables on the target: {names:?}"
    );
    assert_eq!(
        target.sql(&format!(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{dst}'"
        )),
        "0"
    );
    if tables.is_some() {
        assert!(!names.contains(&"unlisted".to_string()), "{names:?}");
    }
    run.stop();
}

#[test]
fn pt_online_schema_change_on_a_listed_table() {
    pt_osc_during_sync(Some("\"orders\", \"items\""), "ptl_src", 5301);
}

#[test]
fn pt_online_schema_change_on_a_whole_database() {
    pt_osc_during_sync(None, "ptw_src", 5302);
}

/// Views, routines, triggers and events made during CDC: views and
/// routines reach the target (without DEFINER, renamed); triggers and
/// events only when the job finishes, so the rows a trigger writes on the
/// source are applied once.
#[test]
fn objects_created_during_cdc() {
    let (source, target) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS obj_src; CREATE DATABASE obj_src; USE obj_src;
         CREATE TABLE t (id INT PRIMARY KEY, v INT);
         CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, t_id INT);",
    );
    target.sql("DROP DATABASE IF EXISTS obj_dst");
    let tmp = temp_dir("objects");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &job_toml(
            "objects",
            "migrate",
            Some(5303),
            "obj_src",
            "obj_dst",
            "",
            source,
            target.port,
        ),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    source.sql(
        "USE obj_src;
         CREATE DEFINER = CURRENT_USER VIEW v1 AS SELECT id, v FROM obj_src.t;
         CREATE OR REPLACE VIEW v2 AS SELECT COUNT(*) AS n FROM t;
         CREATE PROCEDURE bump(IN x INT) UPDATE obj_src.t SET v = v + x;
         CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN 2 * x;
         CREATE TRIGGER t_ai AFTER INSERT ON t FOR EACH ROW INSERT INTO audit (t_id) VALUES (NEW.id);
         CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit;
         INSERT INTO t VALUES (1, 1), (2, 2);
         DROP VIEW v2;",
    );
    wait_same(
        source,
        "obj_src",
        target,
        "obj_dst",
        Duration::from_secs(60),
    );
    let count = |s: &Server, what: &str, col: &str, db: &str| {
        s.sql(&format!(
            "SELECT COUNT(*) FROM information_schema.{what} WHERE {col} = '{db}'"
        ))
    };
    // The trigger fired on the source only: one audit row per insert.
    assert_eq!(target.sql("SELECT COUNT(*) FROM obj_dst.audit"), "2");
    assert_eq!(count(target, "TRIGGERS", "TRIGGER_SCHEMA", "obj_dst"), "0");
    assert_eq!(count(target, "EVENTS", "EVENT_SCHEMA", "obj_dst"), "0");
    assert_eq!(count(target, "VIEWS", "TABLE_SCHEMA", "obj_dst"), "1");
    let def = target
        .sql("SELECT VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'obj_dst'");
    assert!(
        def.contains("`obj_dst`.`t`") && !def.contains("obj_src"),
        "{def}"
    );
    assert_eq!(count(target, "ROUTINES", "ROUTINE_SCHEMA", "obj_dst"), "2");
    assert_eq!(target.sql("SELECT obj_dst.twice(21)"), "42");
    // The cutover creates the trigger and the event.
    let out = crate::run(ferry(&state).args(["cutover", "objects"]));
    assert!(
        out.status.success() && text(&out).contains("cut over"),
        "{}\nferry:\n{}\nlog tail:\n{}",
        text(&out),
        run.output(),
        log_tail(&state)
    );
    let (code, log) = run.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(count(target, "TRIGGERS", "TRIGGER_SCHEMA", "obj_dst"), "1");
    assert_eq!(count(target, "EVENTS", "EVENT_SCHEMA", "obj_dst"), "1");
    target.sql("INSERT INTO obj_dst.t VALUES (3, 3)");
    assert_eq!(target.sql("SELECT COUNT(*) FROM obj_dst.audit"), "3");
}

/// A row change written in statement format stops the job with an error
/// that names the position and the fix; one outside the selection does not.
#[test]
fn statement_format_dml_stops_the_job() {
    let (source, target) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS sf_src; CREATE DATABASE sf_src; USE sf_src;
         CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'a');
         DROP DATABASE IF EXISTS sf_other; CREATE DATABASE sf_other;
         CREATE TABLE sf_other.x (id INT PRIMARY KEY);",
    );
    target.sql("DROP DATABASE IF EXISTS sf_dst");
    let tmp = temp_dir("stmt-format");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &sync_job("stmt-format", 5304, "sf_src", "sf_dst", "", source, target),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    source.sql(
        "SET SESSION binlog_format = 'STATEMENT'; INSERT INTO sf_other.x VALUES (1);
         SET SESSION binlog_format = 'ROW'; INSERT INTO sf_src.t VALUES (2, 'row');",
    );
    wait_same(source, "sf_src", target, "sf_dst", Duration::from_secs(60));
    run.assert_running();
    source.sql(
        "SET SESSION binlog_format = 'STATEMENT'; USE sf_src; INSERT INTO t VALUES (3, 'stmt');",
    );
    let (code, out) = run.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("logged as a statement") && out.contains("binlog_format = 'ROW'"),
        "{out}"
    );
    assert!(
        out.contains("binlog."),
        "the error names the position: {out}"
    );
    let status = text(&run_cmd(ferry(&state).args(["status", "stmt-format"])));
    assert!(status.contains("failed"), "{status}");
}

fn run_cmd(cmd: &mut std::process::Command) -> std::process::Output {
    run(cmd)
}
