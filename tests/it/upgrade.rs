//! A state file written by an earlier Ferry release is opened by this one
//! and its jobs resume: a full load killed halfway, and a sync job stopped
//! while following the binlog.
//!
//! The fixture in `testdata/upgrade/<release>/` was written by that release
//! (`make_upgrade_fixture`, run with `FERRY_BIN` set to its binary) against
//! fresh servers fed the statements below. The test feeds the same
//! statements to fresh servers (so the source's binlog has the same events
//! at the same offsets), loads the target as the old release left it
//! (`target.sql`) and runs the jobs with the state copied from the fixture.
//! Never regenerate a fixture of a released format: add one for the new
//! release beside it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::cdc::signal;
use crate::server::Options;
use crate::*;

const SETUP: &str = "
CREATE DATABASE upf_src;
USE upf_src;
CREATE TABLE upf_src.big (id INT PRIMARY KEY, payload VARCHAR(100), n DOUBLE);
INSERT INTO upf_src.big SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 100), seq / 7 FROM seq_1_to_30000;
CREATE TABLE upf_src.pairs (a INT NOT NULL, b INT NOT NULL, v BLOB, PRIMARY KEY (a, b));
INSERT INTO upf_src.pairs SELECT seq % 100, seq, UNHEX(MD5(seq)) FROM seq_1_to_8000;
CREATE TABLE upf_src.heap (x INT, y VARCHAR(10));
INSERT INTO upf_src.heap SELECT seq % 10, 'dup' FROM seq_1_to_3000;
CREATE DATABASE up_src;
USE up_src;
CREATE TABLE up_src.orders (id INT PRIMARY KEY, customer VARCHAR(40), total DECIMAL(10,2), at DATETIME(6));
INSERT INTO up_src.orders SELECT seq, CONCAT('c', seq % 37), seq * 1.25, '2026-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_2000;
CREATE TABLE up_src.notes (k VARCHAR(20), body TEXT);
INSERT INTO up_src.notes SELECT CONCAT('n', seq % 50), REPEAT('x', seq % 300) FROM seq_1_to_500;
";

/// Applied while the old release's sync job follows the binlog.
const CHANGES: &str = "
UPDATE up_src.orders SET total = total + 1 WHERE id % 10 = 0;
DELETE FROM up_src.orders WHERE id BETWEEN 100 AND 150;
INSERT INTO up_src.orders VALUES (5001, 'late', 9.99, '2026-06-01 12:00:00.123456');
ALTER TABLE up_src.orders ADD COLUMN note VARCHAR(20) NULL;
UPDATE up_src.orders SET note = 'moved', id = id + 10000 WHERE id BETWEEN 200 AND 210;
DELETE FROM up_src.notes WHERE k = 'n7' LIMIT 3;
";

/// Applied after the upgrade, while this release follows the binlog.
const LATER: &str = "
UPDATE up_src.orders SET note = 'after upgrade' WHERE id % 7 = 0;
INSERT INTO up_src.orders VALUES (6001, 'new', 1.00, NOW(6), 'x');
ALTER TABLE up_src.orders DROP COLUMN customer;
DELETE FROM up_src.notes WHERE k = 'n8';
INSERT INTO up_src.notes VALUES ('n999', 'fresh');
";

/// The release whose state file the test opens (see its README).
const RELEASE: &str = "format-3";

fn fixture() -> PathBuf {
    repo().join("testdata/upgrade").join(RELEASE)
}

/// The servers on the ports the fixture's job definitions name (a stored
/// job only resumes under the same definition), below the ephemeral range
/// other tests' servers take theirs from.
fn servers() -> (Server, Server) {
    let source = Server::start(Options {
        port: Some(13306),
        ..Options::default()
    });
    let target = Server::start(Options {
        server_id: 2,
        port: Some(13307),
        ..Options::default()
    });
    (source, target)
}

fn job_file(dir: &Path, name: &str, source: &Server, target: &Server) -> PathBuf {
    let template = std::fs::read_to_string(fixture().join(format!("{name}.toml")))
        .unwrap_or_else(|e| panic!("fixture job {name}: {e}"));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, job_text(&template, source, target.port)).expect("write job");
    path
}

fn head(source: &Server) -> String {
    source
        .sql("SHOW MASTER STATUS")
        .split('\t')
        .take(2)
        .collect::<Vec<_>>()
        .join(":")
}

fn gzip(data: &[u8], to: &Path) {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-9")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(to).expect("create"))
        .spawn()
        .expect("gzip");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("gzip input");
    assert!(child.wait().expect("gzip").success());
}

fn gunzip(from: &Path, to: &Path) {
    let ok = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(from)
        .stdout(std::fs::File::create(to).expect("create"))
        .status()
        .expect("gzip -dc")
        .success();
    assert!(ok, "gzip -dc {}", from.display());
}

fn job_state(state: &Path, job: &str) -> String {
    job_status(state, job).map(|j| j.state).unwrap_or_default()
}

fn count(server: &Server, table: &str) -> u64 {
    server
        .try_sql(&format!("SELECT COUNT(*) FROM {table}"))
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Writes `testdata/upgrade/<RELEASE>/` with the build in `FERRY_BIN`:
/// `FERRY_BIN=/path/to/old/ferry cargo nextest run --run-ignored only make_upgrade_fixture`.
#[test]
#[ignore = "writes the fixture; run with FERRY_BIN set to the release it records"]
fn make_upgrade_fixture() {
    assert!(
        std::env::var("FERRY_BIN").is_ok(),
        "set FERRY_BIN to the binary of the release the fixture records"
    );
    let out_dir = fixture();
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).expect("fixture dir");
    let (source, target) = servers();
    source.sql(SETUP);
    let tmp = temp_dir("upgrade-make");
    let state = tmp.path().join("state");
    let ports = ("{source_port}", "{target_port}");
    let full = "[full]\nthreads = 2\nchunk_rows = 1000\nrows_per_sec = 8000";
    let templates = [
        (
            "full",
            job_template(
                "upgrade-full",
                "full",
                None,
                "upf_src",
                "upf_dst",
                full,
                ports.0,
                ports.1,
            ),
        ),
        (
            "sync",
            job_template(
                "upgrade-sync",
                "sync",
                Some(4242),
                "up_src",
                "up_dst",
                "",
                ports.0,
                ports.1,
            ),
        ),
    ];
    for (name, template) in templates {
        std::fs::write(out_dir.join(format!("{name}.toml")), template).expect("job template");
    }

    // A full load killed halfway.
    let full = job_file(tmp.path(), "full", &source, &target);
    let mut child = spawn_run(&state, &full);
    wait_until(Duration::from_secs(120), "half of upf_dst.big", || {
        count(&target, "upf_dst.big") >= 12000
    });
    signal(&child, "KILL");
    let _ = child.wait();
    assert!(
        count(&target, "upf_dst.big") < 30000,
        "the load finished; slow it down"
    );

    // A sync job stopped while following the binlog.
    let sync = job_file(tmp.path(), "sync", &source, &target);
    let mut child = spawn_run(&state, &sync);
    wait_until(Duration::from_secs(120), "the sync job to follow", || {
        job_state(&state, "upgrade-sync") == "syncing"
    });
    source.sql(CHANGES);
    wait_until(Duration::from_secs(60), "the changes on the target", || {
        compare(&source, "up_src", &target, "up_dst", None).is_ok()
    });
    signal(&child, "TERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "ferry after SIGTERM: {status:?}");

    gzip(
        &std::fs::read(state.join("ferry.redb")).expect("state"),
        &out_dir.join("ferry.redb.gz"),
    );
    std::fs::write(out_dir.join("source-head.txt"), head(&source)).expect("head");
    let dump = std::process::Command::new("mariadb-dump")
        .args([
            "--no-defaults",
            "-h127.0.0.1",
            "-uroot",
            "--hex-blob",
            "--skip-dump-date",
        ])
        .arg(format!("-P{}", target.port))
        .args(["--databases", "upf_dst", "up_dst", "ferry_meta"])
        .output()
        .expect("mariadb-dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    gzip(&dump.stdout, &out_dir.join("target.sql.gz"));
}

#[test]
fn a_state_file_of_the_previous_release_resumes_its_jobs() {
    let (source, target) = servers();
    source.sql(SETUP);
    source.sql(CHANGES);
    let expected = std::fs::read_to_string(fixture().join("source-head.txt")).expect("head");
    assert_eq!(
        head(&source),
        expected.trim(),
        "the source's binlog differs from the fixture's (a MariaDB with other event sizes?)"
    );
    let tmp = temp_dir("upgrade");
    let dump = tmp.path().join("target.sql");
    gunzip(&fixture().join("target.sql.gz"), &dump);
    target.sql_file(&dump);
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    gunzip(&fixture().join("ferry.redb.gz"), &state.join("ferry.redb"));

    // The old file is read: both jobs are listed with their states.
    let out = run(ferry(&state).arg("status"));
    let listing = text(&out);
    assert!(
        listing.contains("upgrade-full") && listing.contains("upgrade-sync"),
        "{listing}"
    );

    // The killed full load copies what was left, not everything again.
    let before = count(&target, "upf_dst.big");
    assert!(
        before > 0 && before < 30000,
        "fixture target has {before} rows"
    );
    let full = job_file(tmp.path(), "full", &source, &target);
    let out = run(ferry(&state).arg("run").arg(&full));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_same(&source, "upf_src", &target, "upf_dst", None);
    let copied = copied_by_this_run(&log);
    assert!(copied < 41000, "copied {copied} rows again:\n{log}");

    // The sync job resumes from its checkpoint: later changes arrive, and
    // the ones before the upgrade are not lost or applied twice.
    let sync = job_file(tmp.path(), "sync", &source, &target);
    let mut child = spawn_run(&state, &sync);
    source.sql(LATER);
    wait_until(
        Duration::from_secs(90),
        "the later changes on the target",
        || compare(&source, "up_src", &target, "up_dst", None).is_ok(),
    );
    assert_eq!(job_state(&state, "upgrade-sync"), "syncing");
    signal(&child, "TERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "ferry after SIGTERM: {status:?}");
    assert_same(&source, "up_src", &target, "up_dst", None);
}
