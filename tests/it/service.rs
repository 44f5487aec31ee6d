//! The runner as a service: several jobs, pause/resume through the socket
//! and by signals, the socket protocol, status JSON, and the cutover.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cdc::SyncRun;
use crate::*;

/// `ferry ARGS...` against `state`: (exit code, stdout, stderr).
fn cli(state: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = ferry(state).args(args).output().expect("ferry");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ferry status --json`, parsed into the documented model.
fn status(state: &Path) -> ferry_proto::Status {
    let (_, out, err) = cli(state, &["status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON: {e}\n{out}\n{err}"))
}

fn job_state(state: &Path, job: &str) -> String {
    status(state)
        .jobs
        .into_iter()
        .find(|j| j.name == job)
        .map(|j| j.state)
        .unwrap_or_default()
}

fn wait_state(state: &Path, job: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = job_state(state, job);
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{job} is {now}, not {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn job_file(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("job file");
    path
}

/// Databases `{name}_src` (a table `t` holding `values`) and, emptied,
/// `{name}_dst` on the shared servers, and a sync job `name` between them.
fn one_table_sync(name: &str, server_id: u32, values: &str) -> (tempfile::TempDir, PathBuf) {
    let (source, target) = shared();
    source.sql(&format!(
        "DROP DATABASE IF EXISTS {name}_src; CREATE DATABASE {name}_src; \
         CREATE TABLE {name}_src.t (id INT PRIMARY KEY); INSERT INTO {name}_src.t VALUES {values};"
    ));
    target.sql(&format!("DROP DATABASE IF EXISTS {name}_dst"));
    let tmp = temp_dir(&format!("svc-{name}"));
    let text = job_toml(
        name,
        "sync",
        Some(server_id),
        &format!("{name}_src"),
        &format!("{name}_dst"),
        "",
        source,
        target.port,
    );
    let job = job_file(tmp.path(), "job.toml", &text);
    (tmp, job)
}

fn count(s: &Server, table: &str) -> u64 {
    s.sql(&format!("SELECT COUNT(*) FROM {table}"))
        .parse()
        .expect("count")
}

/// Two jobs in one runner: one paused (through the socket, then all by
/// SIGUSR1) stops changing its target while the other keeps moving;
/// resumed (socket, SIGUSR2), both converge.
#[test]
fn two_jobs_pause_and_resume_independently() {
    let (source, target) = shared();
    for db in ["svc_a", "svc_b"] {
        source.sql(&format!(
            "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; USE {db}; \
             CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT); \
             INSERT INTO {db}.t (v) SELECT seq FROM seq_1_to_100;"
        ));
        target.sql(&format!("DROP DATABASE IF EXISTS {db}_dst"));
    }
    let tmp = temp_dir("svc-two");
    let state = tmp.path().join("state");
    let a = job_file(
        tmp.path(),
        "a.toml",
        &job_toml(
            "svc-a",
            "sync",
            Some(5201),
            "svc_a",
            "svc_a_dst",
            "",
            source,
            target.port,
        ),
    );
    let b = job_file(
        tmp.path(),
        "b.toml",
        &job_toml(
            "svc-b",
            "sync",
            Some(5202),
            "svc_b",
            "svc_b_dst",
            "",
            source,
            target.port,
        ),
    );
    let mut run = SyncRun::start_jobs(&state, &[&a, &b]);
    run.wait_streaming_jobs(2);

    // Through the socket: pause a; b keeps moving.
    let (code, out, err) = cli(&state, &["pause", "svc-a"]);
    assert_eq!(code, Some(0), "{out}{err}");
    wait_state(&state, "svc-a", "paused");
    assert_eq!(job_state(&state, "svc-b"), "syncing");
    let before = count(target, "svc_a_dst.t");
    source.sql("INSERT INTO svc_a.t (v) VALUES (1), (2); INSERT INTO svc_b.t (v) VALUES (3);");
    wait_same(
        source,
        "svc_b",
        target,
        "svc_b_dst",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        count(target, "svc_a_dst.t"),
        before,
        "a paused job applied changes"
    );
    let (code, _, _) = cli(&state, &["resume", "svc-a"]);
    assert_eq!(code, Some(0));
    wait_same(
        source,
        "svc_a",
        target,
        "svc_a_dst",
        Duration::from_secs(30),
    );

    // By signal, while a workload runs: every job pauses.
    let writer = std::thread::spawn(|| {
        for i in 0..60 {
            shared().0.sql(&format!(
                "INSERT INTO svc_b.t (v) VALUES ({i}); INSERT INTO svc_a.t (v) VALUES ({i});"
            ));
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    run.signal("USR1");
    wait_state(&state, "svc-a", "paused");
    wait_state(&state, "svc-b", "paused");
    let first = (count(target, "svc_a_dst.t"), count(target, "svc_b_dst.t"));
    std::thread::sleep(Duration::from_millis(1500));
    let second = (count(target, "svc_a_dst.t"), count(target, "svc_b_dst.t"));
    assert_eq!(
        first, second,
        "the targets changed while every job was paused"
    );
    writer.join().expect("writer");
    run.signal("USR2");
    wait_same(
        source,
        "svc_a",
        target,
        "svc_a_dst",
        Duration::from_secs(30),
    );
    wait_same(
        source,
        "svc_b",
        target,
        "svc_b_dst",
        Duration::from_secs(30),
    );

    // The event log tells the story.
    let st = status(&state);
    let events = &st
        .jobs
        .iter()
        .find(|j| j.name == "svc-a")
        .expect("svc-a")
        .events;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&"pause") && kinds.contains(&"resume"),
        "{kinds:?}"
    );
    assert!(st.runner.up);

    // Throttle shows in status; `ferry stop` ends the runner gracefully.
    let (code, _, _) = cli(&state, &["throttle", "svc-b", "--rows-per-sec", "250"]);
    assert_eq!(code, Some(0));
    let b_status = status(&state)
        .jobs
        .into_iter()
        .find(|j| j.name == "svc-b")
        .expect("b");
    assert_eq!(b_status.throttle_rows_per_sec, 250);
    let (code, _, err) = cli(&state, &["stop"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out) = run.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{out}");
    // With no runner, status reads the state file and says so.
    let (code, out, _) = cli(&state, &["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("runner: DOWN"), "{out}");
    assert!(!status(&state).runner.up);
}

/// The socket: mode 0600; bad lines get error replies; a client that never
/// reads its replies does not stall the runner or other clients.
#[test]
fn control_socket_protocol() {
    let (source, target) = shared();
    let (tmp, job) = one_table_sync("sock", 5203, "(1)");
    let state = tmp.path().join("state");
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    let sock = state.join("ferry.sock");
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let ask = |line: &str| -> serde_json::Value {
        let mut s = UnixStream::connect(&sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        writeln!(s, "{line}").expect("write");
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).expect("reply");
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply}"))
    };
    for bad in [
        "not json",
        r#"{"v":1,"cmd":"explode"}"#,
        r#"{"v":99,"cmd":"status"}"#,
        r#"{"v":1,"cmd":"pause","job":"nope"}"#,
        r#"{"v":1,"cmd":"throttle","job":"sock"}"#,
    ] {
        let r = ask(bad);
        assert_eq!(r["ok"], false, "{bad}: {r}");
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    }

    // A client that asks for a lot and never reads.
    let mut hog = UnixStream::connect(&sock).expect("connect");
    hog.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    for _ in 0..5000 {
        if hog.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n").is_err() {
            break;
        }
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let r = ask(r#"{"v":1,"cmd":"status","job":"sock"}"#);
        assert_eq!(r["ok"], true, "{r}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "status took {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The runner still applies changes.
    source.sql("INSERT INTO sock_src.t VALUES (2)");
    wait_same(
        source,
        "sock_src",
        target,
        "sock_dst",
        Duration::from_secs(30),
    );
    drop(hog);
    run.stop();
}

/// A migrate job: workload, then `ferry cutover --read-only-source`: the
/// source turns read-only, the target ends equal with counts verified,
/// triggers are created, the final position is printed, the job is done.
#[test]
fn migrate_cuts_over() {
    let source = Server::with_id(31);
    let target = Server::with_id(32);
    source.sql(
        "CREATE DATABASE mig; USE mig; \
         CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT); \
         CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, t_id INT); \
         CREATE TRIGGER t_ins AFTER INSERT ON t FOR EACH ROW INSERT INTO audit (t_id) VALUES (NEW.id); \
         INSERT INTO t (v) SELECT seq FROM seq_1_to_500;",
    );
    let tmp = temp_dir("svc-migrate");
    let state = tmp.path().join("state");
    let job = job_file(
        tmp.path(),
        "job.toml",
        &job_toml(
            "mig",
            "migrate",
            Some(5204),
            "mig",
            "mig",
            "[cdc]\nthreads = 2",
            &source,
            target.port,
        ),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    source.sql("USE mig; INSERT INTO mig.t (v) SELECT seq FROM seq_1_to_300; UPDATE mig.t SET v = v + 1 WHERE id % 3 = 0; DELETE FROM mig.t WHERE id % 7 = 0;");
    let (code, out, err) = cli(&state, &["cutover", "mig", "--read-only-source"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("final position: "), "{out}");
    let n = count(&source, "mig.t");
    assert!(n > 500, "the workload ran");
    assert!(
        out.contains(&format!("mig.t: {n} rows on the source, {n} on the target")),
        "{out}"
    );
    assert_eq!(source.sql("SELECT @@GLOBAL.read_only"), "1");
    let (code, out) = run.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("mig: done"), "{out}");
    assert_same(&source, "mig", &target, "mig", None);
    assert_eq!(
        target.sql("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'mig'"),
        "1"
    );
    let st = status(&state);
    assert_eq!(st.jobs[0].state, "done");
    assert!(st.jobs[0].events.iter().any(|e| e.kind == "cutover"));
    source.sql("SET GLOBAL read_only = 0");
}

/// SIGHUP rescans the job directory: a new file starts its job, a changed
/// file of a running job is refused, a removed file stops its job. A paused
/// job whose binlog the source purges shows the risk in status.
#[test]
fn sighup_rescans_and_paused_jobs_show_binlog_risk() {
    let source = Server::with_id(33);
    let target = Server::with_id(34);
    source.sql(
        "CREATE DATABASE ha; CREATE TABLE ha.t (id INT PRIMARY KEY); \
         CREATE DATABASE hb; CREATE TABLE hb.t (id INT PRIMARY KEY); \
         INSERT INTO ha.t VALUES (1); INSERT INTO hb.t VALUES (1);",
    );
    let tmp = temp_dir("svc-hup");
    let dir = tmp.path().join("jobs");
    std::fs::create_dir_all(&dir).expect("dir");
    let state = tmp.path().join("state");
    let a_text = job_toml(
        "hup-a",
        "sync",
        Some(5205),
        "ha",
        "ha",
        "",
        &source,
        target.port,
    );
    job_file(&dir, "a.toml", &a_text);
    let mut run = SyncRun::start(&state, &dir);
    run.wait_streaming();

    job_file(
        &dir,
        "b.toml",
        &job_toml(
            "hup-b",
            "sync",
            Some(5206),
            "hb",
            "hb",
            "",
            &source,
            target.port,
        ),
    );
    job_file(
        &dir,
        "a.toml",
        &a_text.replace("rename = \"ha\"", "rename = \"ha2\""),
    );
    run.signal("HUP");
    run.wait_streaming_jobs(2);
    assert!(
        run.output()
            .contains("hup-a: its job file changed while it runs; refused"),
        "{}",
        run.output()
    );
    source.sql("INSERT INTO hb.t VALUES (2)");
    wait_same(&source, "hb", &target, "hb", Duration::from_secs(30));

    std::fs::remove_file(dir.join("b.toml")).expect("remove");
    run.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !run
        .output()
        .contains("hup-b: job file removed; stopping it")
    {
        assert!(
            Instant::now() < deadline,
            "hup-b did not stop:\n{}",
            run.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    source.sql("INSERT INTO hb.t VALUES (3)");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count(&target, "hb.t"), 2, "a removed job still applies");
    assert_eq!(job_state(&state, "hup-a"), "syncing");

    // Paused while the source purges the binlog the job resumes from.
    let (code, _, _) = cli(&state, &["pause", "hup-a"]);
    assert_eq!(code, Some(0));
    wait_state(&state, "hup-a", "paused");
    source.sql("INSERT INTO ha.t VALUES (2); FLUSH BINARY LOGS; FLUSH BINARY LOGS;");
    let last = source
        .sql("SHOW MASTER STATUS")
        .split_whitespace()
        .next()
        .expect("file")
        .to_string();
    // The server keeps a binlog that a dump thread (of the stream the
    // pause closed) still reads, until that thread notices: retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    while source.sql("SHOW BINARY LOGS").starts_with("binlog.000001") {
        source.sql(&format!("PURGE BINARY LOGS TO '{last}'"));
        assert!(Instant::now() < deadline, "binlog.000001 not purged");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = status(&state);
        let risk = st
            .jobs
            .iter()
            .find(|j| j.name == "hup-a")
            .and_then(|j| j.cdc.as_ref()?.retention_risk.clone());
        if let Some(risk) = risk {
            assert!(risk.contains("purged"), "{risk}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retention risk in status; binlogs: {}; status: {:?}",
            source.sql("SHOW BINARY LOGS"),
            st.jobs
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, text, _) = cli(&state, &["status", "hup-a"]);
    assert!(text.contains("RISK:"), "{text}");
    run.stop();
}

/// `ferry run --metrics ADDR` serves the status as Prometheus text.
#[test]
fn metrics_endpoint_serves_prometheus_text() {
    use std::io::Read;

    let (tmp, job) = one_table_sync("met", 5207, "(1), (2)");
    let state = tmp.path().join("state");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut run = SyncRun::start_with(&state, &[&job], &["--metrics", &addr]);
    run.wait_streaming();
    let scrape = || -> String {
        let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = scrape();
        let has = |needle: &str| body.lines().any(|l| l.starts_with(needle));
        if has("ferry_job_state{job=\"met\",state=\"syncing\"} 1")
            && has("ferry_cdc_lag_seconds{job=\"met\"}")
            && has("ferry_full_rows_copied{job=\"met\"} 2")
        {
            break;
        }
        assert!(Instant::now() < deadline, "metrics missing:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    run.stop();
}

/// The console end to end: `ferry console` in tmux against a real runner;
/// `p` pauses the selected job (the runner sees it), `r` resumes it, `q`
/// detaches and the job goes on.
#[test]
fn console_in_tmux_pauses_resumes_and_verifies() {
    let (source, target) = shared();
    let (tmp, job) = one_table_sync("con", 5208, "(1)");
    let state = tmp.path().join("state");
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    let sock = format!("ferry-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-L")
            .arg(&sock)
            .args(args)
            .output()
            .expect("tmux (scripts/test.sh installs it)")
    };
    let cmd = format!(
        "{} --state {} console",
        env!("CARGO_BIN_EXE_ferry"),
        state.display()
    );
    let out = tmux(&[
        "new-session",
        "-d",
        "-s",
        "con",
        "-x",
        "100",
        "-y",
        "30",
        &cmd,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let screen =
        || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "con"]).stdout).into_owned();
    let wait_screen = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = screen();
            if s.contains(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{want:?} not on the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_screen("syncing");
    tmux(&["send-keys", "-t", "con", "p"]);
    wait_state(&state, "con", "paused");
    wait_screen("paused");
    tmux(&["send-keys", "-t", "con", "r"]);
    wait_state(&state, "con", "syncing");
    // `v` verifies through the runner; the overview shows the result.
    tmux(&["send-keys", "-t", "con", "v"]);
    wait_until(
        Duration::from_secs(30),
        "a verification from the console",
        || {
            status(&state).jobs[0]
                .verification
                .as_ref()
                .is_some_and(|v| v.ok && v.trigger == "command" && v.online)
        },
    );
    wait_screen(" ok ");
    tmux(&["send-keys", "-t", "con", "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux(&["has-session", "-t", "con"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the console did not quit:\n{}",
            screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = tmux(&["kill-server"]);
    // Detached: the job goes on.
    source.sql("INSERT INTO con_src.t VALUES (2)");
    wait_same(
        source,
        "con_src",
        target,
        "con_dst",
        Duration::from_secs(30),
    );
    run.stop();
}
