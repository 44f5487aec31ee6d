//! Values a non-strict source stored with a warning, which a strict server
//! refuses from a plain INSERT: copied by the full load and by the CDC
//! byte for byte, as native replication does, whatever the target's mode.

use std::time::Duration;

use crate::cdc::{log_tail, sync_job, SyncRun};
use crate::*;

/// Rows only a non-strict session writes (an ENUM's error value, invalid
/// dates under ALLOW_INVALID_DATES, zero dates, zero parts).
fn legacy_rows(table: &str, from: u32) -> String {
    format!(
        "SET SESSION sql_mode = 'ALLOW_INVALID_DATES';
         INSERT INTO {table} VALUES
           ({a}, 'not a member', 'x,nope', '2024-02-30', '2024-02-31 10:00:00', '0000-00-00', '2024-00-15', 'ok'),
           ({b}, '', '', '0000-00-00', '0000-00-00 00:00:00', '2024-06-00', '0000-01-01', 'ok2'),
           ({c}, 'red', 'x', '2024-04-31', NULL, NULL, NULL, 'fine');",
        a = from,
        b = from + 1,
        c = from + 2
    )
}

#[test]
fn legacy_values_through_the_load_and_the_binlog() {
    let (source, target) = shared();
    source.sql(&format!(
        "DROP DATABASE IF EXISTS lv_src; CREATE DATABASE lv_src; USE lv_src;
         CREATE TABLE t (id INT PRIMARY KEY, e ENUM('red','blue'), s SET('x','y'),
           d DATE, dt DATETIME, z DATE, zp DATE, note VARCHAR(10));
         {}",
        legacy_rows("t", 1)
    ));
    // The index of an ENUM's error value is 0, a member's is 1 or more.
    assert_eq!(source.sql("SELECT e + 0 FROM lv_src.t WHERE id = 1"), "0");
    target.sql("DROP DATABASE IF EXISTS lv_dst");
    let tmp = temp_dir("legacy");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &sync_job("legacy", 5601, "lv_src", "lv_dst", "", source, target),
    );
    let mut run = SyncRun::start(&state, &job);
    let streaming = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.wait_streaming()));
    if let Err(e) = streaming {
        panic!("{e:?}\nlog tail:\n{}", log_tail(&state));
    }
    source.sql(&format!(
        "USE lv_src; {} UPDATE t SET note = 'updated' WHERE id = 10;
         UPDATE t SET e = 'blue' WHERE id = 1; UPDATE t SET e = '' WHERE id = 3;
         DELETE FROM t WHERE id = 11;",
        legacy_rows("t", 10)
    ));
    run.explain(&state, || {
        wait_same(source, "lv_src", target, "lv_dst", Duration::from_secs(60))
    });
    // Byte for byte: the error value's index too.
    let idx = |s: &Server, db: &str| {
        s.sql(&format!(
            "SELECT GROUP_CONCAT(e + 0 ORDER BY id) FROM {db}.t"
        ))
    };
    assert_eq!(idx(source, "lv_src"), idx(target, "lv_dst"));
    run.assert_running();
    run.stop();
}

/// Rows up to what the target's max_allowed_packet admits, through the
/// load (LOAD DATA and INSERT) and the binlog; a bigger one stops the job
/// with an error naming the setting.
#[test]
fn large_rows_within_and_beyond_max_allowed_packet() {
    let source = Server::with_id(31);
    for (local_infile, id) in [(true, 32), (false, 33)] {
        let target = Server::start(server::Options {
            server_id: id,
            local_infile,
            packet: "16M",
            ..Default::default()
        });
        source.sql(
            "DROP DATABASE IF EXISTS lr_src; CREATE DATABASE lr_src; USE lr_src;
             CREATE TABLE t (id INT PRIMARY KEY, b LONGBLOB, s LONGTEXT);
             INSERT INTO t VALUES (1, REPEAT(UNHEX('00FF275C'), 9 * 262144), 'small'),
                                  (2, NULL, REPEAT('é', 4 * 1048576));",
        );
        let tmp = temp_dir("large-rows");
        let state = tmp.path().join("state");
        let job = write_job(
            tmp.path(),
            &job_toml(
                "large-rows",
                "sync",
                Some(5602),
                "lr_src",
                "lr_dst",
                "",
                &source,
                target.port,
            ),
        );
        let mut run = SyncRun::start(&state, &job);
        run.wait_streaming();
        // Through the binlog: a 9 MiB value inserted and updated.
        source.sql(
            "USE lr_src; INSERT INTO t VALUES (3, REPEAT(UNHEX('5C27'), 9 * 524288), NULL);
             UPDATE t SET b = REPEAT(UNHEX('FF'), 9 * 1048576), s = 'x' WHERE id = 1;",
        );
        run.explain(&state, || {
            wait_same(
                &source,
                "lr_src",
                &target,
                "lr_dst",
                Duration::from_secs(90),
            )
        });
        // 20 MiB: more than the target admits.
        source
            .sql("USE lr_src; INSERT INTO t VALUES (4, REPEAT(UNHEX('AB'), 20 * 1048576), NULL);");
        let (code, out) = run.wait_exit(Duration::from_secs(60));
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("max_allowed_packet"), "{out}");
        assert!(
            out.contains("SET GLOBAL max_allowed_packet = 33554432"),
            "{out}"
        );
    }
}
