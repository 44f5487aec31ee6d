//! Row events as MariaDB writes them: XA transactions with the source's
//! outcome (also across a kill -9 between prepare and commit), and the
//! checks a rows event was written under (an orphan row written with
//! foreign_key_checks = 0).

use std::time::Duration;

use crate::cdc::{sync_job, SyncRun};
use crate::*;

#[test]
fn xa_transactions_and_unchecked_foreign_keys() {
    let (source, target) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS xa_src; CREATE DATABASE xa_src; USE xa_src;
         CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));
         CREATE TABLE parent (id INT PRIMARY KEY);
         CREATE TABLE child (id INT PRIMARY KEY, p INT, FOREIGN KEY (p) REFERENCES parent (id) ON DELETE CASCADE);
         INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1, 1);",
    );
    target.sql("DROP DATABASE IF EXISTS xa_dst");
    let tmp = temp_dir("xa");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &sync_job("xa", 5701, "xa_src", "xa_dst", "", source, target),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    // Each prepared transaction outlives its session (MariaDB 10.5+); the
    // outcome comes from another one, with other transactions in between.
    source.sql(
        "USE xa_src;
         XA START 'rolled'; INSERT INTO t VALUES (1, 'rolled back'); XA END 'rolled'; XA PREPARE 'rolled';",
    );
    source.sql("XA ROLLBACK 'rolled'");
    source.sql(
        "USE xa_src; XA START 'kept'; INSERT INTO t VALUES (2, 'committed'); UPDATE t SET v = 'x' WHERE id = 0;
         XA END 'kept'; XA PREPARE 'kept';",
    );
    source.sql("INSERT INTO xa_src.t VALUES (3, 'meanwhile')");
    source.sql("XA COMMIT 'kept'");
    source.sql(
        "USE xa_src;
         XA START 'one'; INSERT INTO t VALUES (4, 'one phase'); XA END 'one'; XA COMMIT 'one' ONE PHASE;
         SET foreign_key_checks = 0;
         INSERT INTO child VALUES (2, 999);
         DELETE FROM parent WHERE id = 1;
         SET foreign_key_checks = 1;",
    );
    run.explain(&state, || {
        wait_same(source, "xa_src", target, "xa_dst", Duration::from_secs(60))
    });
    // The orphan is there, and the child of the deleted parent too: with
    // foreign_key_checks = 0 the source cascaded nothing.
    assert_eq!(target.sql("SELECT COUNT(*) FROM xa_dst.child"), "2");
    // Prepared, then Ferry killed, then committed: the prepared rows were
    // kept in the state and arrive with the commit.
    source.sql(
        "USE xa_src; XA START 'across'; INSERT INTO t VALUES (5, 'across a kill'); XA END 'across'; XA PREPARE 'across';",
    );
    source.sql("INSERT INTO xa_src.t VALUES (6, 'after the prepare')");
    wait_until(Duration::from_secs(30), "the row after the prepare", || {
        target.sql("SELECT COUNT(*) FROM xa_dst.t WHERE id = 6") == "1"
    });
    assert_eq!(
        target.sql("SELECT COUNT(*) FROM xa_dst.t WHERE id = 5"),
        "0"
    );
    run.kill();
    source.sql("XA COMMIT 'across'");
    source.sql(
        "XA START 'gone'; INSERT INTO xa_src.t VALUES (7, 'no'); XA END 'gone'; XA PREPARE 'gone'",
    );
    source.sql("XA ROLLBACK 'gone'");
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    run.explain(&state, || {
        wait_same(source, "xa_src", target, "xa_dst", Duration::from_secs(60))
    });
    run.stop();
}
