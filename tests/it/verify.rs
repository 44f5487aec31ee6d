//! Verification against real servers: every kind of difference found,
//! classified and repaired; online verification under a workload.

use std::path::Path;
use std::time::Duration;

use crate::cdc::{log_tail, SyncRun};
use crate::*;

fn verify(state: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = ferry(state)
        .arg("verify")
        .args(args)
        .output()
        .expect("ferry");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn parse(out: &str, err: &str) -> ferry_proto::Verification {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("verify JSON: {e}\n{out}\n{err}"))
}

fn table<'v>(v: &'v ferry_proto::Verification, name: &str) -> &'v ferry_proto::VerifyTable {
    v.tables
        .iter()
        .find(|t| t.table == name)
        .unwrap_or_else(|| panic!("no {name} in {v:#?}"))
}

/// The class and differing columns of the difference at `key`.
fn diff_at(t: &ferry_proto::VerifyTable, key: &str) -> (String, Vec<String>, u64) {
    let d = t
        .diffs
        .iter()
        .find(|d| d.key == key)
        .unwrap_or_else(|| panic!("{key} not named in {:#?}", t.diffs));
    (d.class.clone(), d.columns.clone(), d.copies)
}

const SOURCE: &str = "
USE vf_src;
CREATE TABLE vf_src.t (
  id INT PRIMARY KEY,
  i INT NOT NULL,
  u BIGINT UNSIGNED NOT NULL,
  d DECIMAL(12,3) NOT NULL,
  f DOUBLE NOT NULL,
  s VARCHAR(20) COLLATE utf8mb4_unicode_ci NOT NULL,
  b VARBINARY(8) NOT NULL,
  dt DATETIME(6) NOT NULL,
  ts TIMESTAMP(6) NULL,
  e ENUM('red','green','blue') NOT NULL,
  j JSON,
  n INT NULL,
  bits BIT(8) NOT NULL,
  dte DATE NOT NULL,
  tm TIME(3) NOT NULL,
  lat CHAR(5) CHARACTER SET latin1 NOT NULL
);
INSERT INTO vf_src.t
SELECT seq, seq * 7, 18446744073709551615 - seq, seq / 8, seq / 3, CONCAT('name ', seq),
       UNHEX(LPAD(HEX(seq), 8, '0')), '2024-02-29 12:00:00.000001' + INTERVAL seq SECOND,
       IF(seq % 5 = 0, NULL, '2024-03-01 00:00:00.5' + INTERVAL seq MINUTE),
       ELT(1 + seq % 3, 'red', 'green', 'blue'), JSON_OBJECT('k', seq, 'a', JSON_ARRAY(seq, 'x')),
       IF(seq % 2 = 0, NULL, seq), seq % 256, '2000-01-01' + INTERVAL seq DAY,
       SEC_TO_TIME(seq) + INTERVAL 0.123 SECOND, 'abc'
FROM seq_1_to_1000;
CREATE TABLE vf_src.k (a INT, s VARCHAR(10));
INSERT INTO vf_src.k VALUES (1, 'one'), (2, 'two'), (2, 'two'), (3, NULL), (4, 'four');
CREATE TABLE vf_src.c (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b));
INSERT INTO vf_src.c SELECT seq % 10, CONCAT('k', seq), seq FROM seq_1_to_500;
";

/// Every kind of difference the issue lists, injected into the target:
/// each found, classified (with the differing column named), repaired by
/// `--repair --apply`, and the re-verification passes.
#[test]
fn every_kind_of_difference_is_found_classified_and_repaired() {
    let (source, target) = shared();
    source.sql("DROP DATABASE IF EXISTS vf_src; CREATE DATABASE vf_src;");
    source.sql(SOURCE);
    target.sql("DROP DATABASE IF EXISTS vf_dst");
    let tmp = temp_dir("verify-kinds");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &job_toml(
            "vf",
            "full",
            None,
            "vf_src",
            "vf_dst",
            "[verify]\nafter_full = \"checksum\"\nchunk_rows = 100\nthreads = 2",
            source,
            target.port,
        ),
    );
    let out = run(ferry(&state).arg("run").arg(&job));
    assert!(out.status.success(), "{}", text(&out));

    // The full load's own verification (after_full), stored and shown.
    let (code, out, err) = cli_status(&state);
    assert_eq!(code, Some(0), "{out}{err}");
    let status: ferry_proto::Status = serde_json::from_str(&out).expect("status");
    let v = status.jobs[0]
        .verification
        .as_ref()
        .expect("after_full ran");
    assert_eq!(v.trigger, "after_full");
    assert!(v.ok, "{v:#?}");
    assert_eq!(table(v, "vf_src.t").source_rows, 1000);
    assert!(table(v, "vf_src.t").chunks >= 10, "{v:#?}");

    target.sql(
        "DELETE FROM vf_dst.t WHERE id = 10;
         INSERT INTO vf_dst.t SELECT 5000, i, u, d, f, s, b, dt, ts, e, j, n, bits, dte, tm, lat
           FROM vf_dst.t WHERE id = 11;
         UPDATE vf_dst.t SET i = i + 1 WHERE id = 20;
         UPDATE vf_dst.t SET u = u - 1 WHERE id = 21;
         UPDATE vf_dst.t SET d = d + 0.001 WHERE id = 22;
         UPDATE vf_dst.t SET f = f * 1.0000001 WHERE id = 23;
         UPDATE vf_dst.t SET s = UPPER(s) WHERE id = 24;
         UPDATE vf_dst.t SET s = CONCAT(s, ' ') WHERE id = 25;
         UPDATE vf_dst.t SET b = UNHEX('FF') WHERE id = 26;
         UPDATE vf_dst.t SET dt = dt + INTERVAL 1 MICROSECOND WHERE id = 27;
         UPDATE vf_dst.t SET ts = ts - INTERVAL 1 SECOND WHERE id = 28;
         UPDATE vf_dst.t SET e = 'blue' WHERE id = 29 AND e <> 'blue';
         UPDATE vf_dst.t SET e = 'red' WHERE id = 29 AND e = 'blue';
         UPDATE vf_dst.t SET j = JSON_OBJECT('k', 0) WHERE id = 30;
         UPDATE vf_dst.t SET n = 0 WHERE id = 32;
         UPDATE vf_dst.t SET n = NULL WHERE id = 33;
         UPDATE vf_dst.t SET bits = bits ^ 1 WHERE id = 34;
         UPDATE vf_dst.t SET dte = dte + INTERVAL 1 DAY WHERE id = 35;
         UPDATE vf_dst.t SET tm = tm + INTERVAL 0.001 SECOND WHERE id = 36;
         UPDATE vf_dst.t SET lat = 'abd' WHERE id = 37;
         UPDATE vf_dst.t SET id = 999999 WHERE id = 900;
         INSERT INTO vf_dst.k VALUES (4, 'four');
         DELETE FROM vf_dst.k WHERE a = 2 LIMIT 1;
         UPDATE vf_dst.k SET s = 'x' WHERE a = 3;
         UPDATE vf_dst.c SET v = -1 WHERE a = 3 AND b = 'k13';",
    );

    let repair_file = tmp.path().join("repair.sql");
    let (code, out, err) = verify(
        &state,
        &[
            "vf",
            "--json",
            "--repair",
            "--apply",
            "--repair-file",
            repair_file.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(code, Some(1), "a difference exits 1\n{out}{err}");
    let v = parse(&out, &err);
    assert!(!v.ok);
    let t = table(&v, "vf_src.t");
    assert_eq!((t.source_rows, t.target_rows), (1000, 1000), "{t:#?}");
    assert_eq!(diff_at(t, "id=10").0, "missing");
    assert_eq!(diff_at(t, "id=5000").0, "extra");
    assert_eq!(diff_at(t, "id=900").0, "missing");
    assert_eq!(diff_at(t, "id=999999").0, "extra");
    for (id, col) in [
        (20, "i"),
        (21, "u"),
        (22, "d"),
        (23, "f"),
        (24, "s"),
        (25, "s"),
        (26, "b"),
        (27, "dt"),
        (28, "ts"),
        (29, "e"),
        (30, "j"),
        (32, "n"),
        (33, "n"),
        (34, "bits"),
        (35, "dte"),
        (36, "tm"),
        (37, "lat"),
    ] {
        let (class, cols, _) = diff_at(t, &format!("id={id}"));
        assert_eq!(
            (class.as_str(), cols),
            ("different", vec![col.to_string()]),
            "id={id}"
        );
    }
    assert_eq!(t.diffs.len(), 21, "nothing else named: {:#?}", t.diffs);

    let k = table(&v, "vf_src.k");
    assert_eq!(diff_at(k, "a=4,s=\"four\""), ("extra".into(), vec![], 1));
    assert_eq!(diff_at(k, "a=2,s=\"two\""), ("missing".into(), vec![], 1));
    assert_eq!(diff_at(k, "a=3,s=NULL").0, "missing");
    assert_eq!(diff_at(k, "a=3,s=\"x\"").0, "extra");
    let c = table(&v, "vf_src.c");
    assert_eq!(
        diff_at(c, "a=3,b=\"k13\""),
        ("different".into(), vec!["v".to_string()], 1)
    );
    assert!(
        table(&v, "vf_src.c").chunks > 1,
        "the composite key is chunked"
    );

    let r = v.repair.as_ref().expect("repair summary");
    assert!(r.applied);
    assert_eq!(r.still_differing, 0, "{r:#?}");
    let sql = std::fs::read_to_string(&repair_file).expect("repair file");
    assert!(
        sql.contains("DELETE FROM `vf_dst`.`t` WHERE `id` = 5000"),
        "{sql}"
    );

    // Repaired: verified equal, and equal row by row.
    let (code, out, err) = verify(&state, &["vf"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("EQUAL (checksum)"), "{out}");
    assert_same(source, "vf_src", target, "vf_dst", None);

    // Count mode sees a count difference, a table filter narrows the run,
    // a filter that matches nothing is a usage error.
    target.sql("DELETE FROM vf_dst.c WHERE a = 1");
    let (code, out, _) = verify(&state, &["vf", "--count", "--table", "c", "--json"]);
    assert_eq!(code, Some(1));
    let v = parse(&out, "");
    assert_eq!(v.tables.len(), 1);
    assert_eq!(v.level, "count");
    assert_eq!(table(&v, "vf_src.c").source_rows, 500);
    let (code, _, err) = verify(&state, &["vf", "--table", "nope"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no selected table matches"), "{err}");
}

fn cli_status(state: &Path) -> (Option<i32>, String, String) {
    let out = ferry(state)
        .args(["status", "--json"])
        .output()
        .expect("ferry");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sysbench(port: u16, db: &str, cmd: &str, secs: u32) -> std::process::Child {
    std::process::Command::new("sysbench")
        .arg("oltp_write_only")
        .args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            "--mysql-user=ferry",
        ])
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-password={PASSWORD}"))
        .arg(format!("--mysql-db={db}"))
        .args([
            "--tables=2",
            "--table-size=10000",
            "--threads=2",
            "--rate=200",
        ])
        .arg(format!("--time={secs}"))
        .arg(cmd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sysbench (scripts/test.sh installs it)")
}

/// `ferry verify ARGS` exits 1 naming `id=7` of `table` as different in `k`.
fn assert_k_of_id_7_named(state: &Path, args: &[&str], table_name: &str) {
    let (code, out, err) = verify(state, args);
    assert_eq!(code, Some(1), "{out}{err}");
    let v = parse(&out, &err);
    let t = table(&v, table_name);
    assert_eq!(
        diff_at(t, "id=7"),
        ("different".into(), vec!["k".into()], 1)
    );
}

/// Waits (2 min) until status shows a failed `[verify] every` run.
fn wait_scheduled_difference(state: &Path) {
    let scheduled = std::panic::catch_unwind(|| {
        wait_until(Duration::from_secs(120), "a scheduled verification", || {
            let (_, out, _) = cli_status(state);
            let s: ferry_proto::Status = serde_json::from_str(&out).expect("status");
            s.jobs[0]
                .verification
                .as_ref()
                .is_some_and(|v| v.trigger == "every" && !v.ok)
        })
    });
    if let Err(e) = scheduled {
        let (_, out, _) = cli_status(state);
        panic!("{e:?}\nstatus: {out}\nlog:\n{}", log_tail(state));
    }
}

/// Online: a sysbench workload runs while a syncing job is verified
/// through the runner; no difference is reported. A difference made on
/// the target alone is then reported. `[verify] every` runs by itself.
#[test]
fn online_verification_under_a_workload_has_no_false_alarms() {
    let (source, target) = shared();
    source.sql("DROP DATABASE IF EXISTS vo_src; CREATE DATABASE vo_src;");
    target.sql("DROP DATABASE IF EXISTS vo_dst");
    let prep = sysbench(source.port, "vo_src", "prepare", 0)
        .wait_with_output()
        .expect("sysbench prepare");
    assert!(
        prep.status.success(),
        "{}",
        String::from_utf8_lossy(&prep.stderr)
    );
    let tmp = temp_dir("verify-online");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &job_toml(
            "vo",
            "sync",
            Some(5301),
            "vo_src",
            "vo_dst",
            "[verify]\nevery = \"3s\"\nchunk_rows = 1000\n[cdc]\nthreads = 2",
            source,
            target.port,
        ),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();

    let mut load = sysbench(source.port, "vo_src", "run", 12);
    for round in 0..2 {
        let (code, out, err) = verify(&state, &["vo", "--json"]);
        let v = parse(&out, &err);
        assert!(v.online, "through the runner while syncing: online");
        assert_eq!(
            code,
            Some(0),
            "round {round}: false alarm under the workload\n{out}{err}\nlog:\n{}",
            log_tail(&state)
        );
        assert!(v.ok && v.tables.len() == 2, "{v:#?}");
    }
    let status = load.wait().expect("sysbench");
    assert!(status.success(), "the workload ran throughout");
    wait_same(source, "vo_src", target, "vo_dst", Duration::from_secs(60));

    // A difference on the target only is reported, with its column.
    target.sql("UPDATE vo_dst.sbtest1 SET k = k + 1 WHERE id = 7");
    assert_k_of_id_7_named(&state, &["vo", "--json"], "vo_src.sbtest1");

    // `every` verifies by itself while the job syncs; status shows it and
    // alerts on its difference.
    wait_scheduled_difference(&state);
    let (code, _, _) = cli_status(&state);
    assert_eq!(code, Some(1), "status exits 1 on a verification difference");
    run.stop();
}

/// Online into PostgreSQL: the same workload while a sync job into
/// PostgreSQL is verified through the runner (checksum and count), no
/// false alarm; then a change made on PostgreSQL alone is named, and
/// `[verify] every` runs by itself.
#[test]
fn online_verification_into_postgresql_under_a_workload() {
    let (source, _) = shared();
    let pg = crate::pgserver::shared_pg();
    source.sql("DROP DATABASE IF EXISTS vpo_src; CREATE DATABASE vpo_src;");
    pg.database("vpo");
    let prep = sysbench(source.port, "vpo_src", "prepare", 0)
        .wait_with_output()
        .expect("sysbench prepare");
    assert!(
        prep.status.success(),
        "{}",
        String::from_utf8_lossy(&prep.stderr)
    );
    let tmp = temp_dir("verify-online-pg");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &crate::postgres::pg_job(
            "vpo",
            "vpo_src",
            "vpo",
            "vpo",
            "",
            "[verify]\nevery = \"3s\"\n[cdc]\nthreads = 2",
        )
        .replace("mode = \"full\"", "mode = \"sync\"")
        .replace(
            "password_env = \"FERRY_SRC_PASSWORD\"",
            "password_env = \"FERRY_SRC_PASSWORD\"\nserver_id = 5304",
        ),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();

    let mut load = sysbench(source.port, "vpo_src", "run", 12);
    for (round, level) in ["--checksum", "--count", "--checksum"].iter().enumerate() {
        let (code, out, err) = verify(&state, &["vpo", level, "--json"]);
        let v = parse(&out, &err);
        assert!(v.online, "through the runner while syncing: online");
        assert_eq!(
            code,
            Some(0),
            "round {round} ({level}): false alarm under the workload\n{out}{err}\nlog:\n{}",
            log_tail(&state)
        );
        assert!(v.ok && v.tables.len() == 2, "{v:#?}");
    }
    let status = load.wait().expect("sysbench");
    assert!(status.success(), "the workload ran throughout");

    // A difference on PostgreSQL only is reported, with its column.
    pg.sql("vpo", "UPDATE vpo.sbtest1 SET k = k + 1 WHERE id = 7");
    assert_k_of_id_7_named(&state, &["vpo", "--checksum", "--json"], "vpo_src.sbtest1");
    wait_scheduled_difference(&state);
    run.stop();
}
