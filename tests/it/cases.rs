//! The data-driven case runner over `testdata/cases/<name>/`: `job.toml`
//! (with `{source_port}` and `{target_port}`), `src_prepare.sql`, and an
//! optional `dst_prepare.sql`. Each case runs its job and compares every
//! selected table row for row with the source.

use std::path::PathBuf;

use crate::*;

fn case_dir(name: &str) -> PathBuf {
    repo().join("testdata/cases").join(name)
}

pub fn run_case(name: &str) {
    let (source, target) = shared();
    run_case_on(name, source, target);
}

fn run_case_on(name: &str, source: &Server, target: &Server) {
    let dir = case_dir(name);
    source.sql_file(&dir.join("src_prepare.sql"));
    let dst_prepare = dir.join("dst_prepare.sql");
    let template = std::fs::read_to_string(dir.join("job.toml")).expect("job.toml");
    let spec = ferry::job::parse_job(name, &job_text(&template, source, target.port))
        .expect("case job parses");
    for sel in &spec.select {
        target.sql(&format!(
            "DROP DATABASE IF EXISTS `{}`",
            sel.target_database
        ));
    }
    if dst_prepare.exists() {
        target.sql_file(&dst_prepare);
    }
    let tmp = temp_dir(name);
    let job = write_job(tmp.path(), &job_text(&template, source, target.port));
    if dir.join("workload.sql").exists() {
        crate::cdc::run_sync_case(
            &dir,
            source,
            target,
            &job,
            &tmp.path().join("state"),
            &spec.select[0],
        );
        return;
    }
    let out = run(ferry(&tmp.path().join("state")).arg("run").arg(&job));
    assert!(
        out.status.success(),
        "case {name}: ferry run failed:\n{}",
        text(&out)
    );
    for sel in &spec.select {
        let listed = source.sql(&format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' \
             AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            sel.database
        ));
        let mut selected: Vec<&str> = listed.lines().filter(|t| sel.matches(t)).collect();
        selected.sort();
        assert_same(
            source,
            &sel.database,
            target,
            &sel.target_database,
            Some(&selected),
        );
        if !dst_prepare.exists() {
            // A fresh target holds the selected tables and nothing else.
            let on_target = target.sql(&format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' \
                 AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                sel.target_database
            ));
            let mut on_target: Vec<&str> = on_target.lines().collect();
            on_target.sort();
            assert_eq!(on_target, selected, "case {name}");
        }
    }
}

/// One test per case; `also` names cases run by a test of their own below.
macro_rules! cases {
    ($($name:ident),* ; also $($other:ident),*) => {
        $(#[test] fn $name() { run_case(stringify!($name)); })*
        const CASES: &[&str] = &[$(stringify!($name)),* , $(stringify!($other)),*];
    };
}

cases!(all_types, keys, existing_overwrite, cdc_workload, ddl_forms, ddl_table_list, ddl_session, ghost_sequence, legacy_values; also rename_filter);

/// Where the target has `local_infile` off, Ferry writes multi-row INSERTs
/// instead of LOAD DATA: the same cases, the other path.
#[test]
fn insert_path_when_local_infile_is_off() {
    let source = Server::with_id(11);
    let target = Server::start(server::Options {
        server_id: 12,
        local_infile: false,
        ..Default::default()
    });
    assert_eq!(target.sql("SELECT @@local_infile"), "0");
    for case in ["all_types", "keys", "legacy_values"] {
        run_case_on(case, &source, &target);
    }
}

#[test]
fn every_case_directory_has_a_test() {
    let mut dirs: Vec<String> = std::fs::read_dir(repo().join("testdata/cases"))
        .expect("cases dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<&str> = CASES.to_vec();
    listed.sort();
    assert_eq!(
        dirs, listed,
        "add the new case to the cases! list in tests/it/cases.rs"
    );
}

#[test]
fn rename_filter_rewrites_cross_database_references() {
    run_case("rename_filter");
    let (_, target) = shared();
    let fk = target.sql(
        "SELECT DISTINCT REFERENCED_TABLE_SCHEMA FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = 'rf_other' AND REFERENCED_TABLE_SCHEMA IS NOT NULL",
    );
    assert_eq!(fk, "rf_shop_copy");
    assert_eq!(
        target.sql("SELECT COUNT(*) FROM rf_other.big_orders"),
        "100"
    );
}

#[test]
fn sakila_schema_data_views_routines_triggers() {
    let (source, target) = shared();
    let sakila = repo().join("testdata/sakila");
    source.sql_file(&sakila.join("sakila-mv-schema.sql"));
    source.sql_file(&sakila.join("sakila-mv-data.sql"));
    target.sql("DROP DATABASE IF EXISTS sakila_copy");
    let tmp = temp_dir("sakila");
    let job = write_job(
        tmp.path(),
        &job_toml(
            "sakila",
            "full",
            None,
            "sakila",
            "sakila_copy",
            "[full]\nthreads = 4\nchunk_rows = 1000",
            source,
            target.port,
        ),
    );
    let out = run(ferry(&tmp.path().join("state")).arg("run").arg(&job));
    assert!(out.status.success(), "{}", text(&out));
    assert_same(source, "sakila", target, "sakila_copy", None);
    for (what, table, column) in [
        ("views", "VIEWS", "TABLE_SCHEMA"),
        ("routines", "ROUTINES", "ROUTINE_SCHEMA"),
        ("triggers", "TRIGGERS", "TRIGGER_SCHEMA"),
    ] {
        let count = |server: &Server, db: &str| {
            server.sql(&format!(
                "SELECT COUNT(*) FROM information_schema.{table} WHERE {column} = '{db}'"
            ))
        };
        let (a, b) = (count(source, "sakila"), count(target, "sakila_copy"));
        assert_ne!(a, "0", "sakila has {what}");
        assert_eq!(a, b, "{what} on the source vs the target");
    }
    // The views work on the target (they point at sakila_copy, not sakila).
    assert_eq!(
        source.sql("SELECT COUNT(*) FROM sakila.film_list"),
        target.sql("SELECT COUNT(*) FROM sakila_copy.film_list")
    );
    let def = target.sql(
        "SELECT VIEW_DEFINITION FROM information_schema.VIEWS \
         WHERE TABLE_SCHEMA = 'sakila_copy' AND TABLE_NAME = 'film_list'",
    );
    assert!(!def.contains("`sakila`."), "{def}");
    // The triggers were created after the data: film_text was copied, not
    // filled twice, and the trigger fires on new rows.
    assert_eq!(
        target.sql("SELECT COUNT(*) FROM sakila_copy.film_text"),
        source.sql("SELECT COUNT(*) FROM sakila.film_text")
    );
    target.sql(
        "INSERT INTO sakila_copy.film (title, language_id) VALUES ('FERRY TEST', 1); \
         SELECT 1;",
    );
    assert_eq!(
        target.sql("SELECT COUNT(*) FROM sakila_copy.film_text WHERE title = 'FERRY TEST'"),
        "1"
    );
    // The routines run.
    assert!(!target
        .sql("SELECT sakila_copy.inventory_in_stock(1)")
        .is_empty());
}

#[test]
fn the_comparison_catches_a_changed_value() {
    let (source, target) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS cmp_src; CREATE DATABASE cmp_src; \
         CREATE TABLE cmp_src.t (id INT PRIMARY KEY, v DATETIME(6)); \
         INSERT INTO cmp_src.t VALUES (1, '2024-01-01 00:00:00.000001'), (2, NULL);",
    );
    target.sql(
        "DROP DATABASE IF EXISTS cmp_dst; CREATE DATABASE cmp_dst; \
         CREATE TABLE cmp_dst.t (id INT PRIMARY KEY, v DATETIME(6)); \
         INSERT INTO cmp_dst.t VALUES (1, '2024-01-01 00:00:00.000002'), (2, NULL);",
    );
    let caught =
        std::panic::catch_unwind(|| assert_same(source, "cmp_src", target, "cmp_dst", None));
    assert!(
        caught.is_err(),
        "a 1-microsecond difference must be reported"
    );
    target.sql("UPDATE cmp_dst.t SET v = '2024-01-01 00:00:00.000001' WHERE id = 1");
    assert_same(source, "cmp_src", target, "cmp_dst", None);
}

/// Every Table_map event's table in the target's binlog, as `db.table`.
fn binlogged_tables(target: &Server) -> String {
    let logs = target.sql("SHOW BINARY LOGS");
    let mut out = String::new();
    for line in logs.lines() {
        let file = line.split('\t').next().unwrap_or_default();
        out.push_str(&target.sql(&format!("SHOW BINLOG EVENTS IN '{file}'")));
    }
    out
}

#[test]
fn target_binlog_false_keeps_loaded_rows_out_of_the_target_binlog() {
    let (source, target) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS tb_src; CREATE DATABASE tb_src; \
         CREATE TABLE tb_src.t (id INT PRIMARY KEY, v INT); \
         USE tb_src; INSERT INTO t SELECT seq, seq FROM seq_1_to_1000;",
    );
    for (db, logged) in [("tb_off", false), ("tb_on", true)] {
        target.sql(&format!("DROP DATABASE IF EXISTS {db}"));
        let tmp = temp_dir(db);
        let job = job_toml(
            "tb",
            "full",
            None,
            "tb_src",
            db,
            &format!("[full]\ntarget_binlog = {logged}"),
            source,
            target.port,
        );
        let out = run(ferry(&tmp.path().join("state"))
            .arg("run")
            .arg(write_job(tmp.path(), &job)));
        assert!(out.status.success(), "{}", text(&out));
        assert_same(source, "tb_src", target, db, None);
        let events = binlogged_tables(target);
        assert_eq!(events.contains(&format!("({db}.t)")), logged, "{db}");
    }
}
