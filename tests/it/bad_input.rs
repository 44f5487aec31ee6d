//! Bad input gets a clear error and the right exit code, never a panic,
//! and never shows a password.

use crate::*;

fn prepare() {
    let (source, _) = shared();
    source.sql(
        "CREATE DATABASE IF NOT EXISTS bad_src; \
         CREATE TABLE IF NOT EXISTS bad_src.t (id INT PRIMARY KEY); \
         INSERT IGNORE INTO bad_src.t VALUES (1);",
    );
}

fn job_with(source: &Server, target_port: u16, mode: &str, table: &str) -> String {
    let tables = format!("tables = [\"{table}\"]");
    job_toml(
        "bad-input",
        mode,
        None,
        "bad_src",
        "bad_src",
        &tables,
        source,
        target_port,
    )
}

fn no_panic(o: &std::process::Output) {
    let t = text(o);
    assert!(!t.contains("panicked"), "{t}");
    assert_ne!(o.status.code(), Some(101), "{t}");
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let tmp = temp_dir("syntax");
    let job = write_job(tmp.path(), "name = \"x\"\nmode = \"full\n");
    for cmd in ["check", "run"] {
        let out = run(ferry(&tmp.path().join("state")).arg(cmd).arg(&job));
        no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("job.toml:2:"), "{}", text(&out));
    }
}

#[test]
fn unknown_key_names_the_field() {
    let (source, target) = shared();
    let tmp = temp_dir("unknown");
    let text_job =
        job_with(source, target.port, "full", "t").replace("[target]", "[target]\nhots = \"x\"");
    let job = write_job(tmp.path(), &text_job);
    let out = run(ferry(&tmp.path().join("state")).arg("check").arg(&job));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("unknown field `hots`") && t.contains("job.toml:9:1"),
        "{t}"
    );
}

#[test]
fn wrong_password_fails_and_is_never_shown() {
    prepare();
    let (source, target) = shared();
    let tmp = temp_dir("password");
    let state = tmp.path().join("state");
    let job = write_job(tmp.path(), &job_with(source, target.port, "full", "t"));
    let wrong = "Wr0ng-pa55-Zebra";
    for cmd in ["check", "run"] {
        let out = run(ferry(&state)
            .arg(cmd)
            .arg(&job)
            .env("FERRY_SRC_PASSWORD", wrong));
        no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let t = text(&out);
        assert!(t.contains("Access denied"), "{t}");
        assert!(
            !t.contains(wrong) && !t.contains(PASSWORD),
            "a password leaked: {t}"
        );
    }
    for entry in std::fs::read_dir(state.join("logs")).expect("logs") {
        let log = std::fs::read_to_string(entry.expect("entry").path()).expect("log");
        assert!(log.contains("Access denied"), "the log says why: {log}");
        assert!(
            !log.contains(wrong) && !log.contains(PASSWORD),
            "a password leaked to the log"
        );
    }
    let db = std::fs::read(state.join("ferry.redb")).expect("state file");
    let hay = String::from_utf8_lossy(&db);
    assert!(
        !hay.contains(wrong) && !hay.contains(PASSWORD),
        "a password leaked to the state"
    );
}

#[test]
fn missing_password_variable_says_which() {
    let (source, target) = shared();
    let tmp = temp_dir("noenv");
    let job = write_job(tmp.path(), &job_with(source, target.port, "full", "t"));
    let out = run(ferry(&tmp.path().join("state"))
        .arg("check")
        .arg(&job)
        .env_remove("FERRY_DST_PASSWORD"));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("FERRY_DST_PASSWORD is not set"),
        "{}",
        text(&out)
    );
}

#[test]
fn missing_table_fails_the_precheck_and_the_run() {
    prepare();
    let (source, target) = shared();
    let tmp = temp_dir("missing");
    let job = write_job(
        tmp.path(),
        &job_with(source, target.port, "full", "no_such_table"),
    );
    let out = run(ferry(&tmp.path().join("state")).arg("check").arg(&job));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("FAIL  source.select"), "{}", text(&out));
    assert!(text(&out).contains("no_such_table"), "{}", text(&out));
    let out = run(ferry(&tmp.path().join("state")).arg("run").arg(&job));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("precheck failed"), "{}", text(&out));
}

#[test]
fn target_refusing_connections_fails_with_a_hint() {
    prepare();
    let (source, _) = shared();
    let tmp = temp_dir("refused");
    let closed = server::free_port();
    let job = write_job(tmp.path(), &job_with(source, closed, "full", "t"));
    let out = run(ferry(&tmp.path().join("state")).arg("check").arg(&job));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("FAIL  target.connect"), "{t}");
    assert!(t.contains("is the server running"), "{t}");
}

#[test]
fn source_without_binlog_warns_for_full_and_fails_for_cdc() {
    let source = Server::start(server::Options {
        binlog: false,
        server_id: 7,
        ..Default::default()
    });
    source.sql("CREATE DATABASE bad_src; CREATE TABLE bad_src.t (id INT PRIMARY KEY);");
    let (_, target) = shared();
    let tmp = temp_dir("nobinlog");
    let job = write_job(tmp.path(), &job_with(&source, target.port, "full", "t"));
    let out = run(ferry(&tmp.path().join("state")).arg("check").arg(&job));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("WARN  source.binlog"), "{}", text(&out));
    assert!(text(&out).contains("log_bin=OFF"), "{}", text(&out));

    let job = write_job(tmp.path(), &job_with(&source, target.port, "sync", "t"));
    let out = run(ferry(&tmp.path().join("state")).arg("check").arg(&job));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAIL  source.binlog"), "{}", text(&out));
    assert!(
        text(&out).contains("--log-bin"),
        "the fix is named: {}",
        text(&out)
    );
}

#[test]
fn statement_binlogs_and_compressed_events_fail_the_precheck_with_the_fix() {
    let source = Server::with_id(8);
    source.sql(
        "CREATE DATABASE bad_src; CREATE TABLE bad_src.t (id INT PRIMARY KEY);
         SET GLOBAL binlog_format = 'MIXED'; SET GLOBAL binlog_row_image = 'MINIMAL';
         SET GLOBAL log_bin_compress = ON;",
    );
    let (_, target) = shared();
    let tmp = temp_dir("stmt-binlog");
    let job = write_job(tmp.path(), &job_with(&source, target.port, "sync", "t"));
    let out = run(ferry(&tmp.path().join("state")).arg("check").arg(&job));
    no_panic(&out);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for want in [
        "binlog_format=MIXED (need ROW)",
        "binlog_row_image=MINIMAL (need FULL)",
        "SET GLOBAL binlog_format = 'ROW'",
        "sessions opened before the SET GLOBAL keep their old setting",
        "log_bin_compress=ON",
        "SET GLOBAL log_bin_compress = OFF",
    ] {
        assert!(t.contains(want), "{want:?} in:\n{t}");
    }
}

#[test]
fn missing_privileges_print_the_grant() {
    prepare();
    let (source, target) = shared();
    source.sql(
        "CREATE USER IF NOT EXISTS 'weak'@'%' IDENTIFIED BY 'weak-pw'; \
         CREATE USER IF NOT EXISTS 'weak'@'localhost' IDENTIFIED BY 'weak-pw'; \
         GRANT SELECT ON bad_src.* TO 'weak'@'localhost';",
    );
    let tmp = temp_dir("grants");
    let job_text = job_with(source, target.port, "sync", "t").replacen(
        "user = \"ferry\"",
        "user = \"weak\"",
        1,
    );
    let job = write_job(tmp.path(), &job_text);
    let out = run(ferry(&tmp.path().join("state"))
        .arg("check")
        .arg(&job)
        .env("FERRY_SRC_PASSWORD", "weak-pw"));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("GRANT SHOW VIEW, TRIGGER ON `bad_src`.* TO 'weak'@'localhost';"),
        "{t}"
    );
    assert!(
        t.contains("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'weak'@'localhost';"),
        "{t}"
    );
}

#[test]
fn non_empty_target_table_fails_unless_existing_rows_allows() {
    // Its own database: other tests expect an empty target for bad_src.
    let (source, target) = shared();
    source.sql(
        "CREATE DATABASE IF NOT EXISTS bad_nonempty; \
         CREATE TABLE IF NOT EXISTS bad_nonempty.t (id INT PRIMARY KEY); \
         INSERT IGNORE INTO bad_nonempty.t VALUES (1);",
    );
    target.sql(
        "DROP DATABASE IF EXISTS bad_nonempty; CREATE DATABASE bad_nonempty; \
         CREATE TABLE bad_nonempty.t (id INT PRIMARY KEY); INSERT INTO bad_nonempty.t VALUES (1), (2);",
    );
    let tmp = temp_dir("nonempty");
    let base = job_with(source, target.port, "full", "t").replace("bad_src", "bad_nonempty");
    let out = run(ferry(&tmp.path().join("s1"))
        .arg("check")
        .arg(write_job(tmp.path(), &base)));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("FAIL  target.rows"), "{}", text(&out));
    // skip: the target's rows win, the run succeeds and leaves row 2 alone.
    let skip = format!("{base}\n[full]\nexisting_rows = \"skip\"\n");
    let out = run(ferry(&tmp.path().join("s2"))
        .arg("run")
        .arg(write_job(tmp.path(), &skip)));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        target.sql("SELECT GROUP_CONCAT(id ORDER BY id) FROM bad_nonempty.t"),
        "1,2"
    );
}
