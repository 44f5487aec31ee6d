//! MySQL/MariaDB to PostgreSQL (`[target] kind = "postgresql"`) against a
//! real PostgreSQL started by the tests: every column type through the
//! documented mapping, Sakila with its keys and sequences, kill -9 during
//! the load, the precheck's refusals.

use std::time::Duration;

use crate::cdc::{log_tail, signal, SyncRun};
use crate::pgserver::{shared_pg, PgServer};
use crate::*;

/// A job from `db` on the shared source into PostgreSQL database
/// `pg_db`, schema `schema`, with `extra` [target] keys and sections.
pub(crate) fn pg_job(
    name: &str,
    db: &str,
    schema: &str,
    pg_db: &str,
    target_keys: &str,
    extra: &str,
) -> String {
    let (source, _) = shared();
    let pg = shared_pg();
    job_toml(name, "full", None, db, schema, extra, source, pg.port).replace(
        "password_env = \"FERRY_DST_PASSWORD\"",
        &format!(
            "password_env = \"FERRY_DST_PASSWORD\"\nkind = \"postgresql\"\ndatabase = \"{pg_db}\"\n{target_keys}"
        ),
    )
}

/// Column → its PostgreSQL type, as `format_type` shows it.
fn pg_types(pg: &PgServer, db: &str, schema: &str, table: &str) -> Vec<(String, String)> {
    pg.sql(
        db,
        &format!(
            "SELECT attname || '=' || format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = '\"{schema}\".\"{table}\"'::regclass AND attnum > 0 \
             AND NOT attisdropped ORDER BY attnum"
        ),
    )
    .lines()
    .map(|l| {
        let (a, b) = l.split_once('=').expect("name=type");
        (a.to_string(), b.to_string())
    })
    .collect()
}

#[test]
fn every_type_arrives_as_the_mapping_says() {
    let (source, _) = shared();
    let pg = shared_pg();
    source.sql(
        "DROP DATABASE IF EXISTS pgt_src; CREATE DATABASE pgt_src; USE pgt_src;
         SET SESSION sql_mode = '';
         CREATE TABLE types (
           id INT AUTO_INCREMENT PRIMARY KEY,
           ti TINYINT, tiu TINYINT UNSIGNED, b TINYINT(1), si SMALLINT, siu SMALLINT UNSIGNED,
           mi MEDIUMINT, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
           d DECIMAL(30,10), f FLOAT, db DOUBLE,
           c CHAR(5), vc VARCHAR(20), tx TEXT, l1 VARCHAR(20) CHARACTER SET latin1,
           bin BINARY(4), vb VARBINARY(10), bl BLOB,
           dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME(6), y YEAR,
           e ENUM('small','large'), st SET('a','b','c'), j JSON, bt BIT(10), g POINT,
           dflt VARCHAR(10) DEFAULT 'x''y',
           upd TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
           gen INT AS (si + 1) VIRTUAL,
           UNIQUE KEY u_vc (vc), KEY k_tx (tx(10)), KEY k_multi (si, mi)
         ) AUTO_INCREMENT = 1000;
         INSERT INTO types (id, ti, tiu, b, si, siu, mi, i, iu, bi, biu, d, f, db, c, vc, tx, l1,
           bin, vb, bl, dt, dtm, ts, tm, y, e, st, j, bt, g, upd) VALUES
          (1, 127, 255, 1, 32767, 65535, 8388607, 2147483647, 4294967295,
           9223372036854775807, 18446744073709551615, 12345678901234567890.0123456789,
           3.40282e38, 1.7976931348623157e308, 'abc', 'max', 'tab\there\nnl \\\\ back ''q'' 😀',
           'café', 'ab', x'00ff', x'deadbeef', '9999-12-31', '9999-12-31 23:59:59.999999',
           '2038-01-19 03:14:07.999', '838:59:59.000000', 2155, 'large', 'a,c',
           '{\"k\": [1, 2.5, \"x\"], \"a\": null}', b'1010101010', ST_GeomFromText('POINT(1 2)'),
           '2020-01-01 00:00:00'),
          (2, -128, 0, 0, -32768, 0, -8388608, -2147483648, 0,
           -9223372036854775808, 0, -0.0000000001, -1.17549e-38, -2.2250738585072014e-308,
           '', '', '', '', '', '', '', '1000-01-01', '1000-01-01 00:00:00.000001',
           '1970-01-01 00:00:01.000', '-838:59:59.000000', 1901, 'small', '', '[]', b'0',
           NULL, '2020-01-01 00:00:00'),
          (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, '2020-01-01 00:00:00');",
    );
    pg.database("pgt");
    let tmp = temp_dir("pg-types");
    let job = write_job(
        tmp.path(),
        &pg_job("pg-types", "pgt_src", "pgt", "pgt", "", ""),
    );
    let out = run(ferry(&tmp.path().join("state")).arg("run").arg(&job));
    assert!(out.status.success(), "{}", text(&out));

    let types = pg_types(pg, "pgt", "pgt", "types");
    let want = [
        ("id", "integer"),
        ("ti", "smallint"),
        ("tiu", "smallint"),
        ("b", "smallint"),
        ("si", "smallint"),
        ("siu", "integer"),
        ("mi", "integer"),
        ("i", "integer"),
        ("iu", "bigint"),
        ("bi", "bigint"),
        ("biu", "numeric(20,0)"),
        ("d", "numeric(30,10)"),
        ("f", "real"),
        ("db", "double precision"),
        ("c", "character(5)"),
        ("vc", "character varying(20)"),
        ("tx", "text"),
        ("l1", "character varying(20)"),
        ("bin", "bytea"),
        ("vb", "bytea"),
        ("bl", "bytea"),
        ("dt", "date"),
        ("dtm", "timestamp(6) without time zone"),
        ("ts", "timestamp(3) with time zone"),
        ("tm", "interval"),
        ("y", "smallint"),
        ("e", "text"),
        ("st", "text"),
        ("j", "jsonb"),
        ("bt", "bit(10)"),
        ("g", "bytea"),
        ("dflt", "character varying(10)"),
        ("upd", "timestamp(0) with time zone"),
        ("gen", "integer"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(types, want);

    let value = |col: &str, id: i32| {
        pg.sql(
            "pgt",
            &format!("SELECT COALESCE({col}::text, 'NULL') FROM pgt.types WHERE id = {id}"),
        )
    };
    let expect = [
        ("ti", "127", "-128"),
        ("tiu", "255", "0"),
        ("b", "1", "0"),
        ("siu", "65535", "0"),
        ("mi", "8388607", "-8388608"),
        ("iu", "4294967295", "0"),
        ("bi", "9223372036854775807", "-9223372036854775808"),
        ("biu", "18446744073709551615", "0"),
        ("d", "12345678901234567890.0123456789", "-0.0000000001"),
        ("f", "3.40282e+38", "-1.17549e-38"),
        ("db", "1.7976931348623157e+308", "-2.2250738585072014e-308"),
        ("c", "abc", ""),
        ("vc", "max", ""),
        ("tx", "tab\there\nnl \\ back 'q' 😀", ""),
        ("l1", "café", ""),
        ("bin", "\\x61620000", "\\x00000000"),
        ("vb", "\\x00ff", "\\x"),
        ("bl", "\\xdeadbeef", "\\x"),
        ("dt", "9999-12-31", "1000-01-01"),
        (
            "dtm",
            "9999-12-31 23:59:59.999999",
            "1000-01-01 00:00:00.000001",
        ),
        ("ts", "2038-01-19 03:14:07.999+00", "1970-01-01 00:00:01+00"),
        ("tm", "838:59:59", "-838:59:59"),
        ("y", "2155", "1901"),
        ("e", "large", "small"),
        ("st", "a,c", ""),
        ("j", "{\"a\": null, \"k\": [1, 2.5, \"x\"]}", "[]"),
        ("bt", "1010101010", "0000000000"),
        (
            "g",
            "\\x000000000101000000000000000000f03f0000000000000040",
            "NULL",
        ),
        ("dflt", "x'y", "x'y"),
        ("gen", "32768", "-32767"),
    ];
    for (col, one, two) in expect {
        assert_eq!(value(col, 1), one, "{col} of row 1");
        assert_eq!(value(col, 2), two, "{col} of row 2");
        if col != "dflt" {
            assert_eq!(value(col, 3), "NULL", "{col} of row 3");
        }
    }
    // Keys and indexes after the data; the identity goes on after the
    // source's AUTO_INCREMENT; ON UPDATE is a trigger.
    let indexes = pg.sql(
        "pgt",
        "SELECT string_agg(indexdef, ' | ' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'pgt'",
    );
    assert!(
        indexes.contains("UNIQUE INDEX types_pkey ON pgt.types USING btree (id)"),
        "{indexes}"
    );
    assert!(
        indexes.contains("UNIQUE INDEX types_u_vc ON pgt.types USING btree (vc)"),
        "{indexes}"
    );
    assert!(
        indexes.contains("types_k_tx ON pgt.types USING btree (\"left\"(tx, 10))"),
        "{indexes}"
    );
    assert!(
        indexes.contains("types_k_multi ON pgt.types USING btree (si, mi)"),
        "{indexes}"
    );
    assert_eq!(
        pg.sql(
            "pgt",
            "INSERT INTO pgt.types (vc, upd) VALUES ('new', now()) RETURNING id"
        ),
        "1000"
    );
    pg.sql("pgt", "UPDATE pgt.types SET vc = 'changed' WHERE id = 2");
    assert_ne!(
        value("upd", 2),
        "2020-01-01 00:00:00+00",
        "the trigger stamps updates"
    );
    assert_eq!(value("upd", 1), "2020-01-01 00:00:00+00");
    // The enum's members are checked.
    assert!(pg
        .try_sql(
            "pgt",
            "INSERT INTO pgt.types (e, upd) VALUES ('medium', now())"
        )
        .is_err());
}

/// Sakila: every table with its rows, keys, foreign keys and sequences;
/// the counts verified after the load.
#[test]
fn sakila_into_postgresql_with_keys_and_sequences() {
    let (source, _) = shared();
    let pg = shared_pg();
    let sakila = repo().join("testdata/sakila");
    source.sql_file(&sakila.join("sakila-mv-schema.sql"));
    source.sql_file(&sakila.join("sakila-mv-data.sql"));
    pg.database("pgsakila");
    let tmp = temp_dir("pg-sakila");
    let job = write_job(
        tmp.path(),
        &pg_job(
            "pg-sakila",
            "sakila",
            "sakila",
            "pgsakila",
            "",
            "[full]\nthreads = 4\nchunk_rows = 2000\n[verify]\nafter_full = \"count\"",
        ),
    );
    let state = tmp.path().join("state");
    let out = run(ferry(&state).arg("check").arg(&job));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("PASS  target.connect"), "{log}");
    assert!(
        log.contains("WARN  target.mapping"),
        "the FULLTEXT and spatial notes: {log}"
    );
    let out = run(ferry(&state).arg("run").arg(&job));
    assert!(out.status.success(), "{}", text(&out));
    let tables = source.sql(
        "SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = 'sakila' AND TABLE_TYPE = 'BASE TABLE'",
    );
    for t in tables.split(',') {
        assert_eq!(
            pg.sql("pgsakila", &format!("SELECT COUNT(*) FROM sakila.\"{t}\"")),
            source.sql(&format!("SELECT COUNT(*) FROM sakila.`{t}`")),
            "{t}"
        );
    }
    let fks = pg.sql(
        "pgsakila",
        "SELECT COUNT(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE n.nspname = 'sakila' AND c.contype = 'f'",
    );
    assert_eq!(
        fks,
        source.sql(
            "SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = 'sakila'"
        )
    );
    // The identity goes on where the source's AUTO_INCREMENT would.
    let next = source.sql(
        "SELECT AUTO_INCREMENT FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = 'sakila' AND TABLE_NAME = 'actor'",
    );
    assert_eq!(
        pg.sql(
            "pgsakila",
            "INSERT INTO sakila.actor (first_name, last_name) VALUES ('A', 'B') RETURNING actor_id"
        ),
        next
    );
    // A foreign key holds.
    assert!(pg
        .try_sql(
            "pgsakila",
            "INSERT INTO sakila.film_actor (actor_id, film_id) VALUES (99999, 1)"
        )
        .is_err());
    let st = job_status(&state, "pg-sakila").expect("status");
    assert_eq!(st.state, "done");
    let v = st.verification.expect("verified after the load");
    assert!(v.ok && v.level == "count" && v.tables.len() > 10, "{v:?}");
}

/// kill -9 twice during the load, then a resume: every row once (the
/// primary key, created after the data, would refuse a duplicate), and
/// the chunks finished before the kills are not copied again.
#[test]
fn kill_9_during_the_load_into_postgresql_then_resume() {
    let (source, _) = shared();
    let pg = shared_pg();
    source.sql(
        "DROP DATABASE IF EXISTS pgk_src; CREATE DATABASE pgk_src; USE pgk_src;
         CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(100), n DOUBLE);
         INSERT INTO big SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 100), seq / 7 FROM seq_1_to_30000;
         CREATE TABLE pairs (a INT NOT NULL, b INT NOT NULL, v BLOB, PRIMARY KEY (a, b));
         INSERT INTO pairs SELECT seq % 100, seq, UNHEX(MD5(seq)) FROM seq_1_to_15000;
         CREATE TABLE heap (x INT, y VARCHAR(10));
         INSERT INTO heap SELECT seq % 10, 'dup' FROM seq_1_to_7000;",
    );
    pg.database("pgk");
    let tmp = temp_dir("pg-kill");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &pg_job(
            "pg-kill",
            "pgk_src",
            "pgk",
            "pgk",
            "",
            "[full]\nthreads = 2\nchunk_rows = 1000\nrows_per_sec = 15000",
        ),
    );
    let rows = || -> u64 {
        pg.try_sql("pgk", "SELECT COUNT(*) FROM pgk.big")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for threshold in [4000, 12000] {
        let mut child = spawn_run(&state, &job);
        wait_until(Duration::from_secs(60), "rows on the target", || {
            rows() >= threshold
        });
        signal(&child, "KILL");
        let _ = child.wait();
    }
    assert!(
        rows() < 30000,
        "the load finished before the kill; slow it down"
    );
    let out = run(ferry(&state).arg("run").arg(&job));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let copied = copied_by_this_run(&log);
    assert!(copied < 52000, "copied {copied} rows again:\n{log}");
    for (t, digest) in [
        (
            "big",
            "COUNT(*), SUM(id), SUM(LENGTH(payload)), SUM(FLOOR(n))",
        ),
        ("pairs", "COUNT(*), SUM(a), SUM(b), SUM(LENGTH(v))"),
        ("heap", "COUNT(*), SUM(x), SUM(LENGTH(y))"),
    ] {
        let mysql = source.sql(&format!("SELECT CONCAT_WS('|', {digest}) FROM pgk_src.{t}"));
        let postgres = pg.sql(
            "pgk",
            &format!("SELECT concat_ws('|', {digest}) FROM pgk.{t}"),
        );
        assert_eq!(postgres, mysql, "{t}");
    }
    assert_eq!(
        pg.sql("pgk", "SELECT COUNT(*) FROM pg_constraint WHERE contype = 'p' AND conrelid = 'pgk.big'::regclass"),
        "1"
    );
}

/// What the precheck and the load refuse, each with what to do: a zero
/// date under the default mapping (the load names table, column and key;
/// `zero_dates = "null"` carries it), a missing database, a wrong
/// password (never shown), a target table that holds rows.
#[test]
fn postgresql_refusals_say_what_to_do() {
    let (source, _) = shared();
    let pg = shared_pg();
    source.sql(
        "DROP DATABASE IF EXISTS pgr_src; CREATE DATABASE pgr_src; USE pgr_src;
         SET SESSION sql_mode = '';
         CREATE TABLE t (id INT PRIMARY KEY, d DATE NOT NULL, s VARCHAR(10));
         INSERT INTO t VALUES (1, '2024-01-01', 'ok'), (2, '0000-00-00', CONCAT('a', CHAR(0), 'b'));",
    );
    pg.database("pgr");
    let tmp = temp_dir("pg-refuse");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &pg_job("pg-refuse", "pgr_src", "pgr", "pgr", "", ""),
    );
    let out = run(ferry(&state).arg("run").arg(&job));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("pgr_src.t.d") && log.contains("zero date") && log.contains("zero_dates"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // Mapped as chosen: zero dates to NULL, NUL characters stripped.
    let tmp = temp_dir("pg-map");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &pg_job(
            "pg-map",
            "pgr_src",
            "pgr",
            "pgr",
            "zero_dates = \"null\"\nnul_in_text = \"strip\"",
            "",
        ),
    );
    // The load above left the table bare and empty: not in the way.
    let out = run(ferry(&state).arg("run").arg(&job));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        pg.sql(
            "pgr",
            "SELECT COALESCE(d::text, 'NULL') || ' ' || s FROM pgr.t ORDER BY id"
        ),
        "2024-01-01 ok\nNULL ab"
    );

    // Rows in the way, then a missing database and a wrong password.
    let tmp = temp_dir("pg-full");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &pg_job("pg-full", "pgr_src", "pgr", "pgr", "", ""),
    );
    let out = run(ferry(&state).arg("check").arg(&job));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("FAIL  target.empty") && log.contains("already holds rows"),
        "{log}"
    );

    let job = write_job(
        tmp.path(),
        &pg_job("pg-nodb", "pgr_src", "pgr", "nosuchdb", "", ""),
    );
    let out = run(ferry(&state).arg("check").arg(&job));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("CREATE DATABASE \"nosuchdb\""),
        "the fix: {log}"
    );

    let wrong = "Wr0ng-pa55-Zebra";
    let out = run(ferry(&state)
        .arg("check")
        .arg(&job)
        .env("FERRY_DST_PASSWORD", wrong));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(!log.contains(wrong) && !log.contains(PASSWORD), "{log}");
}

/// Job-file keys of a PostgreSQL target: contradictions are errors with
/// file, line and field.
#[test]
fn postgresql_job_keys_are_checked() {
    let tmp = temp_dir("pg-keys");
    let state = tmp.path().join("state");
    let base = pg_job("pg-keys", "pgr_src", "pgr", "pgr", "", "");
    for (text_job, what) in [
        (base.replace("database = \"pgr\"\n", ""), "target.database"),
        (
            base.replace("database = \"pgr\"", "database = \"pgr\"\nserver_id = 7"),
            "target.server_id",
        ),
        (
            base.replace("kind = \"postgresql\"", "kind = \"oracle\""),
            "target.kind",
        ),
        (
            base.replace("kind = \"postgresql\"\n", ""),
            "target.database",
        ),
        (
            base.replace(
                "database = \"pgr\"",
                "database = \"pgr\"\ntinyint1 = \"bit\"",
            ),
            "target.tinyint1",
        ),
        (
            format!("{base}\n[full]\nexisting_rows = \"overwrite\"\n"),
            "full.existing_rows",
        ),
    ] {
        let job = write_job(tmp.path(), &text_job);
        let out = run(ferry(&state).arg("check").arg(&job));
        let log = text(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {log}");
        assert!(
            log.contains(what) && log.contains("job.toml:"),
            "{what}: {log}"
        );
    }
}

/// `ferry verify --checksum` across engines: equal after the load (every
/// type, through the mapping), then differences injected on the target
/// are found and named: a missing row, an extra row, a changed value.
#[test]
fn verify_across_engines_names_the_rows_that_differ() {
    let (source, _) = shared();
    let pg = shared_pg();
    source.sql(
        "DROP DATABASE IF EXISTS pgv_src; CREATE DATABASE pgv_src; USE pgv_src;
         CREATE TABLE t (id INT PRIMARY KEY, f FLOAT, d DOUBLE, dt DATETIME(6), tm TIME(3),
           j JSON, c CHAR(4), b TINYINT(1), v VARCHAR(20), bl BLOB);
         INSERT INTO t SELECT seq, seq / 3, seq / 7, '2024-01-01 00:00:00.5' + INTERVAL seq SECOND,
           SEC_TO_TIME(seq * 100) , JSON_OBJECT('n', seq, 'a', 'x'), 'ab', seq % 2,
           CONCAT('v', seq), UNHEX(MD5(seq)) FROM seq_1_to_3000;
         CREATE TABLE heap (x INT, y VARCHAR(5));
         INSERT INTO heap SELECT seq % 5, 'dup' FROM seq_1_to_100;",
    );
    pg.database("pgv");
    let tmp = temp_dir("pg-verify");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &pg_job(
            "pg-verify",
            "pgv_src",
            "pgv",
            "pgv",
            "tinyint1 = \"boolean\"",
            "[verify]\nafter_full = \"checksum\"",
        ),
    );
    let out = run(ferry(&state).arg("run").arg(&job));
    assert!(out.status.success(), "{}", text(&out));
    let st = job_status(&state, "pg-verify").expect("status");
    let v = st.verification.expect("verified after the load");
    assert!(v.ok && v.level == "checksum", "{v:?}");

    pg.sql(
        "pgv",
        "DELETE FROM pgv.t WHERE id = 10; UPDATE pgv.t SET v = 'changed' WHERE id = 20; \
         INSERT INTO pgv.t (id, v) VALUES (5000, 'extra'); DELETE FROM pgv.heap WHERE ctid IN \
         (SELECT ctid FROM pgv.heap WHERE x = 1 LIMIT 2)",
    );
    let out = run(ferry(&state).args(["verify", "pg-verify", "--checksum", "--json"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let t = found["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "pgv_src.t")
        .expect("t")
        .clone();
    let diffs = t["diffs"].to_string();
    assert!(
        diffs.contains("missing") && diffs.contains("extra") && diffs.contains("different"),
        "{t}"
    );
    assert!(diffs.contains("\"v\""), "the changed column is named: {t}");
    let heap = found["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "pgv_src.heap")
        .expect("heap")
        .clone();
    assert_eq!(heap["source_rows"], 100, "{heap}");
    assert_eq!(heap["target_rows"], 98, "{heap}");

    // Repaired in PostgreSQL's dialect, applied, and verified equal.
    let file = tmp.path().join("repair.sql");
    let out = run(ferry(&state).args([
        "verify",
        "pg-verify",
        "--checksum",
        "--repair",
        "--apply",
        "--repair-file",
        file.to_str().expect("utf-8 path"),
    ]));
    let log = text(&out);
    let sql = std::fs::read_to_string(&file).expect("repair file");
    assert!(
        sql.contains("DELETE FROM \"pgv\".\"t\" WHERE \"id\"::text = '5000'"),
        "{sql}"
    );
    assert!(sql.contains("UPDATE \"pgv\".\"t\" SET"), "{sql}");
    assert!(sql.contains("INSERT INTO \"pgv\".\"heap\""), "{sql}");
    let out = run(ferry(&state).args(["verify", "pg-verify", "--checksum", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{log}\n{}", text(&out));
    assert_eq!(
        pg.sql("pgv", "SELECT v FROM pgv.t WHERE id = 20"),
        source.sql("SELECT v FROM pgv_src.t WHERE id = 20")
    );
}

/// TLS to PostgreSQL: a server that takes TCP logins only over TLS is
/// loaded with `tls = "required"`; `tls = "disabled"` is refused there with
/// the server's reason.
#[test]
fn tls_to_postgresql_when_the_server_requires_it() {
    let (source, _) = shared();
    let pg = PgServer::start_with(true);
    source.sql(
        "DROP DATABASE IF EXISTS pgtls_src; CREATE DATABASE pgtls_src;
         CREATE TABLE pgtls_src.t (id INT PRIMARY KEY, v VARCHAR(10));
         INSERT INTO pgtls_src.t VALUES (1, 'a'), (2, 'b');",
    );
    pg.database("pgtls");
    let tmp = temp_dir("pg-tls");
    let job_with = |tls: &str| {
        job_toml("pg-tls", "full", None, "pgtls_src", "pgtls", "", source, pg.port).replace(
            "password_env = \"FERRY_DST_PASSWORD\"",
            &format!(
                "password_env = \"FERRY_DST_PASSWORD\"\nkind = \"postgresql\"\ndatabase = \"pgtls\"\ntls = \"{tls}\""
            ),
        )
    };
    let plain = write_job(tmp.path(), &job_with("disabled"));
    let out = run(ferry(&tmp.path().join("state-plain"))
        .arg("check")
        .arg(&plain));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("no pg_hba.conf entry") && log.contains("no encryption"),
        "{log}"
    );
    let job = write_job(tmp.path(), &job_with("required"));
    let out = run(ferry(&tmp.path().join("state")).arg("run").arg(&job));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        pg.sql(
            "pgtls",
            "SELECT string_agg(v, ',' ORDER BY id) FROM pgtls.t"
        ),
        "a,b"
    );
}

/// A migrate job into PostgreSQL under a workload that starts during the
/// full load (the hand-over) and goes on through DDL, a kill -9 during the
/// CDC and the restart, then a cutover: every table equal through the
/// mapping (`ferry verify --checksum`), values read back as the mapping
/// says, identities past the highest id, triggers only after the cutover.
#[test]
fn migrate_into_postgresql_with_ddl_kill_9_and_cutover() {
    let (source, _) = shared();
    let pg = shared_pg();
    source.sql(
        "DROP DATABASE IF EXISTS pgs_src; CREATE DATABASE pgs_src; USE pgs_src;
         CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY,
           name VARCHAR(40) CHARACTER SET latin1, price DECIMAL(10,2), flag TINYINT(1),
           e ENUM('a','b','c'), s SET('x','y','z'), dt DATETIME(3), ts TIMESTAMP(6) NULL,
           tm TIME, j JSON, b BLOB, f FLOAT, d DOUBLE, bits BIT(5),
           upd TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
           UNIQUE KEY u_name (name));
         INSERT INTO items (name, price, flag, e, s, dt, ts, tm, j, b, f, d, bits)
           SELECT CONCAT('café ', seq), seq / 4, seq % 2, ELT(1 + seq % 3, 'a', 'b', 'c'),
             IF(seq % 2, 'x,z', ''), '2024-02-29 12:00:00.5' + INTERVAL seq MINUTE,
             FROM_UNIXTIME(1700000000 + seq), SEC_TO_TIME(CAST(seq AS SIGNED) * 37 - 90000),
             JSON_OBJECT('n', seq, 'k', 'v'), UNHEX(MD5(seq)), seq / 3, seq / 7, seq % 32
           FROM seq_1_to_6000;
         CREATE TABLE heap (x INT, y VARCHAR(10));
         INSERT INTO heap SELECT seq % 50, 'dup' FROM seq_1_to_3000;
         CREATE TABLE parent (id INT PRIMARY KEY, v INT);
         CREATE TABLE child (id INT PRIMARY KEY, parent_id INT,
           FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE);
         INSERT INTO parent SELECT seq, seq FROM seq_1_to_500;
         INSERT INTO child SELECT seq, 1 + seq % 500 FROM seq_1_to_2000;",
    );
    pg.database("pgs");
    let tmp = temp_dir("pg-sync");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &pg_job(
            "pg-sync",
            "pgs_src",
            "pgs",
            "pgs",
            "tinyint1 = \"boolean\"",
            "[full]\nthreads = 2\nchunk_rows = 500\nrows_per_sec = 4000\n[cdc]\nthreads = 2",
        )
        .replace("mode = \"full\"", "mode = \"migrate\"")
        .replace(
            "password_env = \"FERRY_SRC_PASSWORD\"",
            "password_env = \"FERRY_SRC_PASSWORD\"\nserver_id = 5301",
        ),
    );
    // A workload of inserts, updates (keys moved too), deletes and a
    // cascade, on every table, from the first second of the load.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workload = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (source, _) = shared();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let n = 6000 + i;
                // A deadlock with the DDL below rolls the transaction back.
                let _ = source.try_sql(&format!(
                    "USE pgs_src; BEGIN;
                     INSERT INTO items (name, price, flag, e, s, dt, tm, j, f, d, bits)
                       VALUES ('new {n} ñ', {n}.25, {b}, 'b', 'y', NOW(3), '-12:00:01', '[1, 2]',
                               {n} / 9, {n} / 11, 31);
                     UPDATE items SET price = price + 1, e = 'c', s = 'x,y,z', flag = 1 - flag
                       WHERE id = {u};
                     UPDATE items SET id = id + 100000 WHERE id = {m};
                     DELETE FROM items WHERE id = {d};
                     INSERT INTO heap VALUES ({x}, 'w{i}');
                     DELETE FROM heap WHERE x = {x} AND y = 'dup' LIMIT 1;
                     UPDATE heap SET y = 'upd' WHERE x = {x} AND y = 'dup' LIMIT 1;
                     DELETE FROM parent WHERE id = {p};
                     COMMIT;",
                    b = i % 2,
                    u = 1 + (i * 7) % 6000,
                    m = 1 + (i * 13) % 6000,
                    d = 1 + (i * 29) % 6000,
                    x = i % 50,
                    p = 1 + (i * 3) % 500,
                ));
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let mut sync = SyncRun::start(&state, &job);
    std::thread::sleep(Duration::from_millis(300));
    sync.assert_running();
    assert!(
        !sync.output().contains("streaming changes"),
        "the workload should overlap the full load; slow the load down"
    );
    sync.wait_streaming();
    // DDL as people write it, with rows around it.
    source.sql(
        "USE pgs_src;
         ALTER TABLE items ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT 'n/a' AFTER name,
           MODIFY price DECIMAL(12,3), ALGORITHM=COPY, LOCK=SHARED;
         UPDATE items SET note = 'noted' WHERE id % 10 = 0;
         ALTER TABLE items CHANGE name title VARCHAR(60) CHARACTER SET latin1;
         CREATE TABLE extra (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
           v TEXT, k INT, KEY k_k (k)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
         INSERT INTO extra (v, k) SELECT CONCAT('v', seq), seq FROM seq_1_to_300;
         CREATE INDEX ix_price ON items (price);
         RENAME TABLE extra TO extra2;
         ALTER TABLE extra2 ADD COLUMN w DATETIME NULL, DROP COLUMN k;
         UPDATE extra2 SET w = '2025-01-01 10:00:00' WHERE id < 50;
         CREATE TABLE gone (id INT PRIMARY KEY); INSERT INTO gone VALUES (1);
         DROP TABLE gone;
         CREATE TABLE emptied (id INT PRIMARY KEY); INSERT INTO emptied SELECT seq FROM seq_1_to_9;
         TRUNCATE TABLE emptied; INSERT INTO emptied VALUES (42);
         ALTER TABLE heap ENGINE=InnoDB;",
    );
    // kill -9 while the workload runs, then the restart.
    let count = |sql: &str| -> u64 {
        pg.try_sql("pgs", sql)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    sync.explain(&state, || {
        wait_until(Duration::from_secs(60), "the DDL on the target", || {
            count("SELECT COUNT(*) FROM pgs.extra2") == 300
        })
    });
    sync.kill();
    let mut sync = SyncRun::start(&state, &job);
    sync.wait_streaming();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    workload.join().expect("workload");
    let out = run(ferry(&state).args(["cutover", "pg-sync"]));
    assert!(
        out.status.success() && text(&out).contains("cut over"),
        "{}\nferry:\n{}\nlog tail:\n{}",
        text(&out),
        sync.output(),
        log_tail(&state)
    );
    let (code, log) = sync.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");

    // Equal through the mapping, table by table, row by row.
    let out = run(ferry(&state).args(["verify", "pg-sync", "--checksum"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let verified = text(&out);
    for t in ["items", "heap", "parent", "child", "extra2", "emptied"] {
        assert!(
            verified.contains(&format!("pgs_src.{t}")),
            "{t}: {verified}"
        );
    }
    assert_eq!(
        pg.try_sql("pgs", "SELECT to_regclass('pgs.gone') IS NULL")
            .as_deref(),
        Ok("t")
    );
    // Values as the mapping says.
    assert_eq!(
        pg.sql(
            "pgs",
            "SELECT count(*) FROM pgs.items WHERE title LIKE 'café 1%'"
        ),
        source.sql("SELECT COUNT(*) FROM pgs_src.items WHERE title LIKE 'café 1%'"),
    );
    assert_eq!(
        pg.sql(
            "pgs",
            "SELECT title, note, e, s, flag FROM pgs.items WHERE id = 10"
        ),
        source
            .sql("SELECT title, note, e, s, IF(flag, 't', 'f') FROM pgs_src.items WHERE id = 10")
            .replace('\t', "|")
    );
    assert_eq!(
        pg.sql("pgs", "SELECT count(*) FROM pgs.child"),
        source.sql("SELECT COUNT(*) FROM pgs_src.child"),
        "the cascade of parent deletes"
    );
    let types = pg_types(pg, "pgs", "pgs", "items");
    assert!(
        types.contains(&("price".into(), "numeric(12,3)".into()))
            && types.contains(&("flag".into(), "boolean".into()))
            && types.contains(&("title".into(), "character varying(60)".into())),
        "{types:?}"
    );
    // Identities past what was copied; the ON UPDATE trigger only now.
    let max: u64 = pg
        .sql("pgs", "SELECT max(id) FROM pgs.items")
        .parse()
        .expect("max");
    let next: u64 = pg
        .sql(
            "pgs",
            "INSERT INTO pgs.items (title, price, flag, e, s, dt, tm, j, f, d, bits) VALUES \
             ('after', 1, true, 'a', '', now(), '1 hour', '{}', 1, 1, B'00001') RETURNING id",
        )
        .parse()
        .expect("id");
    assert!(next > max, "{next} after {max}");
    assert_eq!(
        pg.sql(
            "pgs",
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pgs.items'::regclass AND NOT tgisinternal"
        ),
        "1"
    );
}

/// sysbench oltp_write_only during the load and after, a DDL on its table
/// while it writes, kill -9 in the middle of the CDC, the restart: the
/// PostgreSQL target converges to the source row for row. Writes to a
/// database the job does not select run throughout: their commits, with
/// no rows for the target, must not move the checkpoint past a batch still
/// in flight (the kill -9 then lost that batch: found by this test in the
/// parallel suite).
#[test]
fn sysbench_sync_into_postgresql_with_ddl_and_kill_9() {
    let (source, _) = shared();
    let pg = shared_pg();
    source.sql(
        "DROP DATABASE IF EXISTS pgb_src; CREATE DATABASE pgb_src; \
         DROP DATABASE IF EXISTS pgb_other; CREATE DATABASE pgb_other; \
         CREATE TABLE pgb_other.noise (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    );
    let stop_noise = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let stop = stop_noise.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = source.try_sql(
                    "INSERT INTO pgb_other.noise (v) VALUES (1); \
                     INSERT INTO pgb_other.noise (v) VALUES (2); \
                     INSERT INTO pgb_other.noise (v) VALUES (3)",
                );
            }
        })
    };
    pg.database("pgb");
    let sysbench = |cmd: &str, secs: u32| {
        std::process::Command::new("sysbench")
            .arg("oltp_write_only")
            .args([
                "--db-driver=mysql",
                "--mysql-host=127.0.0.1",
                "--mysql-user=ferry",
                "--mysql-ignore-errors=1213,1205",
            ])
            .arg(format!("--mysql-port={}", source.port))
            .arg(format!("--mysql-password={PASSWORD}"))
            .args([
                "--mysql-db=pgb_src",
                "--tables=2",
                "--table-size=20000",
                "--threads=2",
            ])
            .arg(format!("--time={secs}"))
            .arg(cmd)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("sysbench")
    };
    let done = |mut c: std::process::Child, what: &str| {
        let status = c.wait().expect("sysbench");
        assert!(status.success(), "sysbench {what}: {status}");
    };
    done(sysbench("prepare", 0), "prepare");
    let tmp = temp_dir("pg-sysbench");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &pg_job(
            "pg-sysbench",
            "pgb_src",
            "pgb",
            "pgb",
            "",
            "[full]\nthreads = 2\nchunk_rows = 1000\nrows_per_sec = 8000\n[cdc]\nthreads = 4",
        )
        .replace("mode = \"full\"", "mode = \"sync\"")
        .replace(
            "password_env = \"FERRY_SRC_PASSWORD\"",
            "password_env = \"FERRY_SRC_PASSWORD\"\nserver_id = 5302",
        ),
    );
    let mut sync = SyncRun::start(&state, &job);
    done(sysbench("run", 4), "run during the load");
    sync.assert_running();
    assert!(
        !sync.output().contains("streaming changes"),
        "the workload should overlap the full load; slow the load down"
    );
    sync.wait_streaming();
    let bench = sysbench("run", 6);
    std::thread::sleep(Duration::from_secs(1));
    source.sql(
        "ALTER TABLE pgb_src.sbtest1 ADD COLUMN note VARCHAR(10) NOT NULL DEFAULT 'x', \
         ADD INDEX k_note (note)",
    );
    std::thread::sleep(Duration::from_secs(2));
    sync.kill();
    let mut sync = SyncRun::start(&state, &job);
    done(bench, "run across the kill");
    stop_noise.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.join().expect("noise writer");
    sync.wait_streaming();
    let digest = |t: &str| {
        let mysql = source.sql(&format!(
            "SET SESSION group_concat_max_len = 1 << 30; SELECT CONCAT_WS('|', COUNT(*), \
             MD5(GROUP_CONCAT(id, k, c, pad ORDER BY id))) FROM pgb_src.{t}"
        ));
        let postgres = pg.try_sql(
            "pgb",
            &format!(
                "SELECT concat_ws('|', count(*), md5(string_agg(id::text || k::text || c || pad, \
                 ',' ORDER BY id))) FROM pgb.{t}"
            ),
        );
        (mysql, postgres)
    };
    // On a timeout, the rows that differ, by key, on both sides.
    let differing = |t: &str| {
        let rows = |text: String| -> std::collections::BTreeMap<String, String> {
            text.lines()
                .filter_map(|l| {
                    let (id, rest) = l.split_once(['\t', '|'])?;
                    Some((id.to_string(), rest.to_string()))
                })
                .collect()
        };
        let m = rows(source.sql(&format!(
            "SELECT id, CONCAT_WS('|', k, c, pad) FROM pgb_src.{t} ORDER BY id"
        )));
        let p = rows(pg.sql(
            "pgb",
            &format!("SELECT id, concat_ws('|', k, c, pad) FROM pgb.{t} ORDER BY id"),
        ));
        let keys: std::collections::BTreeSet<_> = m.keys().chain(p.keys()).collect();
        let diff: Vec<String> = keys
            .into_iter()
            .filter(|k| m.get(*k) != p.get(*k))
            .take(10)
            .map(|k| format!("{t} id {k}: source {:?}, target {:?}", m.get(k), p.get(k)))
            .collect();
        diff.join("\n")
    };
    sync.explain(&state, || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !["sbtest1", "sbtest2"].iter().all(|t| {
            let (m, p) = digest(t);
            p.is_ok_and(|p| p == m)
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "the target did not converge in 120 s:\n{}\n{}",
                differing("sbtest1"),
                differing("sbtest2")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert_eq!(
        pg.sql("pgb", "SELECT count(*) FROM pgb.sbtest1 WHERE note = 'x'"),
        source.sql("SELECT COUNT(*) FROM pgb_src.sbtest1")
    );
    let out = sync.stop();
    assert!(out.contains("pg-sysbench"), "{out}");
}

/// Spatial columns into a database with PostGIS: `geometry` of the kind,
/// each value's SRID kept, SPATIAL indexes as GiST, through the load, the
/// CDC (keyed and keyless rows, a table created with a SPATIAL index) and
/// the verification, which finds a changed geometry.
#[test]
fn spatial_into_postgis_through_load_cdc_and_verify() {
    let (source, _) = shared();
    let pg = shared_pg();
    source.sql(
        "DROP DATABASE IF EXISTS pgg_src; CREATE DATABASE pgg_src; USE pgg_src;
         CREATE TABLE geo (id INT PRIMARY KEY, v INT, pt POINT NOT NULL, g GEOMETRY NULL,
           poly POLYGON NULL, mp MULTIPOLYGON NULL, gc GEOMETRYCOLLECTION NULL,
           SPATIAL INDEX sp_pt (pt));
         INSERT INTO geo SELECT seq, seq,
           ST_GeomFromText(CONCAT('POINT(', seq * 0.1, ' ', -seq / 7, ')'), IF(seq % 2, 4326, 0)),
           IF(seq % 5 = 0, NULL, ST_GeomFromText(CONCAT('LINESTRING(0 0,', seq, ' 1.5)'), 3857)),
           ST_GeomFromText(CONCAT('POLYGON((0 0,', seq, ' 0,', seq, ' ', seq, ',0 0))')),
           ST_GeomFromText('MULTIPOLYGON(((0 0,1 0,1 1,0 0)),((5 5,6 5,6 6,5 5)))', 4326),
           ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,1 1))')
         FROM seq_1_to_300;
         CREATE TABLE trail (g GEOMETRY, note VARCHAR(10));
         INSERT INTO trail SELECT ST_GeomFromText('POINT(3 4)', 4326), 'dup' FROM seq_1_to_3;",
    );
    pg.database("pgg");
    pg.sql("pgg", "CREATE EXTENSION postgis");
    let tmp = temp_dir("pg-geo");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &pg_job("pg-geo", "pgg_src", "pgg", "pgg", "", "[cdc]\nthreads = 2")
            .replace("mode = \"full\"", "mode = \"sync\"")
            .replace(
                "password_env = \"FERRY_SRC_PASSWORD\"",
                "password_env = \"FERRY_SRC_PASSWORD\"\nserver_id = 5303",
            ),
    );
    let check = run(ferry(&state).arg("check").arg(&job));
    assert!(
        !text(&check).contains("becomes bytea"),
        "PostGIS is there: {}",
        text(&check)
    );
    let mut sync = SyncRun::start(&state, &job);
    sync.wait_streaming();
    source.sql(
        "USE pgg_src;
         INSERT INTO geo VALUES (1000, 1, ST_GeomFromText('POINT(1.25 -2.5)', 4326),
           ST_GeomFromText('POLYGON((0 0,2 0,2 2,0 0))', 2154), NULL, NULL,
           ST_GeomFromText('GEOMETRYCOLLECTION(POINT(7 7))'));
         UPDATE geo SET pt = ST_GeomFromText('POINT(9 9)', 4326), v = v + 1 WHERE id <= 20;
         UPDATE geo SET g = NULL WHERE id BETWEEN 21 AND 30;
         UPDATE geo SET v = -v WHERE id BETWEEN 31 AND 40;
         DELETE FROM geo WHERE id BETWEEN 41 AND 45;
         INSERT INTO trail VALUES (ST_GeomFromText('LINESTRING(1 1,2 2)'), 'new');
         DELETE FROM trail WHERE note = 'dup' LIMIT 1;
         UPDATE trail SET g = ST_GeomFromText('POINT(5 5)', 4326) WHERE note = 'new';
         CREATE TABLE zones (id INT PRIMARY KEY, area POLYGON NOT NULL, SPATIAL INDEX sa (area));
         INSERT INTO zones VALUES (1, ST_GeomFromText('POLYGON((0 0,3 0,3 3,0 0))', 4326));",
    );
    // Each geometry as WKB in little-endian order, with its SRID.
    let digest = |table: &str, cols: &[&str], order: &str| {
        let m: Vec<String> = cols
            .iter()
            .map(|c| format!("IFNULL(CONCAT(HEX(ST_AsBinary({c})), '@', ST_SRID({c})), '-')"))
            .collect();
        let p: Vec<String> = cols
            .iter()
            .map(|c| {
                format!(
                    "coalesce(upper(encode(ST_AsBinary({c}, 'NDR'), 'hex')) || '@' || \
                     ST_SRID({c}), '-')"
                )
            })
            .collect();
        let mysql = source.sql(&format!(
            "SELECT CONCAT_WS('|', {}) FROM pgg_src.{table} ORDER BY {order}",
            m.join(", ")
        ));
        let postgres = pg.try_sql(
            "pgg",
            &format!(
                "SELECT concat_ws('|', {}) FROM pgg.{table} ORDER BY {order}",
                p.join(", ")
            ),
        );
        (mysql, postgres)
    };
    let same = |table: &str, cols: &[&str], order: &str| {
        let (m, p) = digest(table, cols, order);
        p.is_ok_and(|p| p == m)
    };
    sync.explain(&state, || {
        wait_until(Duration::from_secs(60), "the geometries arrive", || {
            same("geo", &["pt", "g", "poly", "mp", "gc"], "id")
                && same("trail", &["g"], "note, 1")
                && same("zones", &["area"], "id")
        })
    });
    assert_eq!(
        pg.sql(
            "pgg",
            "SELECT string_agg(v::text, ',' ORDER BY id) FROM pgg.geo"
        ),
        source.sql("SELECT GROUP_CONCAT(v ORDER BY id) FROM pgg_src.geo")
    );
    let types = pg_types(pg, "pgg", "pgg", "geo");
    for (c, want) in [
        ("pt", "geometry(Point)"),
        ("g", "geometry"),
        ("poly", "geometry(Polygon)"),
        ("mp", "geometry(MultiPolygon)"),
        ("gc", "geometry(GeometryCollection)"),
    ] {
        assert!(
            types.contains(&(c.to_string(), want.to_string())),
            "{c}: {types:?}"
        );
    }
    assert_eq!(
        pg_types(pg, "pgg", "pgg", "zones"),
        [
            ("id".to_string(), "integer".to_string()),
            ("area".to_string(), "geometry(Polygon)".to_string())
        ]
    );
    let gist = pg.sql(
        "pgg",
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_indexes \
         WHERE schemaname = 'pgg' AND indexdef LIKE '%USING gist%'",
    );
    assert_eq!(gist, "geo,zones");
    sync.stop();

    let out = run(ferry(&state).args(["verify", "pg-geo", "--checksum", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    pg.sql(
        "pgg",
        "UPDATE pgg.geo SET pt = ST_SetSRID(ST_MakePoint(9, 9), 0) WHERE id = 3",
    );
    let out = run(ferry(&state).args(["verify", "pg-geo", "--checksum", "--json"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let geo = found["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "pgg_src.geo")
        .expect("geo")
        .to_string();
    assert!(geo.contains("different") && geo.contains("\"pt\""), "{geo}");
}
