//! Connections that die without a word: a TCP proxy that stops forwarding
//! on the connections it has open, without closing them (a partition, a
//! NAT or firewall timeout), while new connections get through. Ferry must
//! notice (heartbeats missing on the binlog stream, a batch the target no
//! longer runs), show the job retrying with its lag growing, reconnect and
//! lose nothing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cdc::SyncRun;
use crate::*;

/// A TCP proxy to `127.0.0.1:to`; [`Proxy::stall`] freezes the connections
/// open at that moment (their bytes are read and dropped, the sockets stay
/// open), later ones are forwarded.
struct Proxy {
    port: u16,
    frozen_below: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
}

impl Proxy {
    fn start(to: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(1));
        let f = frozen_below.clone();
        let n = next.clone();
        std::thread::spawn(move || {
            let next = n;
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let id = next.fetch_add(1, Ordering::Relaxed);
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let f = f.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if id < f.load(Ordering::Relaxed) {
                                continue; // frozen: swallowed, never closed
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Proxy {
            port,
            frozen_below,
            next,
        }
    }

    /// Freezes every connection open now; later ones get through.
    fn stall_open(&self) {
        self.frozen_below
            .store(self.next.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Freezes every connection, open now or later (a partition).
    fn partition(&self) {
        self.frozen_below.store(u64::MAX, Ordering::Relaxed);
    }

    /// Forwards again (what was frozen stays silent: its bytes are gone).
    fn heal(&self) {
        self.frozen_below
            .store(self.next.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// A job file whose source or target is reached through `proxy`.
fn job_via(name: &str, server_id: u32, db: &str, source_port: u16, target_port: u16) -> String {
    let (s, t) = (source_port.to_string(), target_port.to_string());
    job_template(
        name,
        "sync",
        Some(server_id),
        db,
        &format!("{db}_dst"),
        "",
        &s,
        &t,
    )
}

fn status(state: &std::path::Path, job: &str) -> ferry_proto::Job {
    job_status(state, job).expect("the job")
}

#[test]
fn a_silently_dead_source_connection_is_noticed() {
    let (source, target) = shared();
    let db = "fs_src";
    source.sql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};
         CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT); INSERT INTO {db}.t VALUES (1, 1);"
    ));
    target.sql(&format!("DROP DATABASE IF EXISTS {db}_dst"));
    let proxy = Proxy::start(source.port);
    let tmp = temp_dir("dead-source");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &job_via("dead-source", 5801, db, proxy.port, target.port),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    wait_same(
        source,
        db,
        target,
        &format!("{db}_dst"),
        Duration::from_secs(30),
    );
    // A partition: nothing gets through, the open connections stay open.
    proxy.partition();
    source.sql(&format!("INSERT INTO {db}.t VALUES (2, 2)"));
    run.explain(&state, || {
        wait_until(Duration::from_secs(40), "the job to notice", || {
            status(&state, "dead-source").state != "syncing"
        })
    });
    wait_until(
        Duration::from_secs(30),
        "the lag to grow while it is down",
        || {
            status(&state, "dead-source")
                .cdc
                .is_some_and(|c| c.lag_s >= 5)
        },
    );
    proxy.heal();
    run.converge(&state, db);
    run.stop();
}

#[test]
fn a_target_that_stops_answering_mid_batch_is_noticed() {
    let (source, target) = shared();
    let db = "ft_src";
    source.sql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};
         CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(100));"
    ));
    target.sql(&format!("DROP DATABASE IF EXISTS {db}_dst"));
    let proxy = Proxy::start(target.port);
    let tmp = temp_dir("dead-target");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &job_via("dead-target", 5802, db, source.port, proxy.port),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    source.sql(&format!(
        "USE {db}; INSERT INTO t SELECT seq, REPEAT('x', 100) FROM seq_1_to_200000"
    ));
    // The connections open while the big transaction is applied go
    // silent (a NAT dropped their flows); new ones get through.
    std::thread::sleep(Duration::from_millis(300));
    proxy.stall_open();
    run.explain(&state, || {
        wait_until(Duration::from_secs(60), "the job to notice", || {
            status(&state, "dead-target").state == "retrying"
        })
    });
    run.converge(&state, db);
    run.stop();
}

/// A session on `server` that has run `sql` and keeps its transaction
/// (and its locks) open until dropped.
struct Holder {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Holder {
    fn start(server: &Server, sql: &str) -> Holder {
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (url, sql) = (server.url(), sql.to_string());
        let thread = std::thread::spawn(move || {
            rt().block_on(async move {
                use mysql_async::prelude::Queryable;
                let mut c = mysql_async::Conn::from_url(url).await.expect("connect");
                c.query_drop(sql).await.expect("holder SQL");
                ready_tx.send(()).expect("ready");
                // Blocks this thread's runtime on purpose: the session
                // stays open, idle, until the test releases it.
                let _ = released.recv();
                drop(c); // the server rolls the transaction back
            })
        });
        ready.recv().expect("the holder ran its SQL");
        Holder {
            release: Some(release),
            thread: Some(thread),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How many of Ferry's sessions on `target` in database `db` (or naming
/// it) are in `state` (tests run side by side on the shared target).
fn waiting(target: &Server, db: &str, state: &str) -> u64 {
    ferry_sessions(
        target,
        &format!("STATE = '{state}' AND (DB = '{db}' OR INFO LIKE '%{db}%')"),
    )
}

/// How many of Ferry's sessions on `target` run a statement like `like`.
fn running(target: &Server, like: &str) -> u64 {
    ferry_sessions(target, &format!("INFO LIKE '{like}'"))
}

fn ferry_sessions(target: &Server, cond: &str) -> u64 {
    target
        .sql(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'ferry' AND {cond}"
        ))
        .parse()
        .unwrap_or(0)
}

#[test]
fn a_stop_ends_within_10_s_while_the_target_holds_a_batch_or_a_ddl() {
    let (source, target) = shared();
    let db = "fstop_src";
    let dst = format!("{db}_dst");
    source.sql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; USE {db};
         CREATE TABLE t (id INT PRIMARY KEY, v INT);
         INSERT INTO t SELECT seq, seq FROM seq_1_to_500;"
    ));
    target.sql(&format!("DROP DATABASE IF EXISTS {dst}"));
    let tmp = temp_dir("stop-stuck");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &job_via("stop-stuck", 5803, db, source.port, target.port),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    wait_same(source, db, target, &dst, Duration::from_secs(30));

    // A batch waits on row locks another session holds on the target
    // (longer than the stop may take): SIGTERM still ends the runner.
    let holder = Holder::start(
        target,
        &format!("START TRANSACTION; SELECT * FROM {dst}.t FOR UPDATE;"),
    );
    source.sql(&format!("UPDATE {db}.t SET v = v + 1"));
    wait_until(
        Duration::from_secs(20),
        "the batch to wait on a lock",
        || running(target, &format!("UPDATE%{dst}%")) >= 1,
    );
    run.stop(); // asserts exit 0 within 10 s
    drop(holder);
    let run = SyncRun::start(&state, &job);
    wait_same(source, db, target, &dst, Duration::from_secs(60));

    // A DDL waits on a metadata lock (which never times out by itself):
    // `ferry stop` still ends the runner within 10 s.
    let holder = Holder::start(
        target,
        &format!("START TRANSACTION; SELECT COUNT(*) FROM {dst}.t;"),
    );
    source.sql(&format!(
        "ALTER TABLE {db}.t ADD COLUMN w INT NOT NULL DEFAULT 7; UPDATE {db}.t SET w = id WHERE id < 10"
    ));
    wait_until(
        Duration::from_secs(20),
        "the DDL to wait on its lock",
        || waiting(target, &dst, "Waiting for table metadata lock") >= 1,
    );
    let started = std::time::Instant::now();
    let out = crate::run(ferry(&state).arg("stop"));
    assert!(out.status.success(), "{}", text(&out));
    let (code, log) = run.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        waiting(target, &dst, "Waiting for table metadata lock"),
        0,
        "the DDL was left running on the target"
    );
    drop(holder);
    // The checkpoint is where the target is: the DDL and the rows after it
    // arrive once, the job resumes.
    let run = SyncRun::start(&state, &job);
    wait_same(source, db, target, &dst, Duration::from_secs(60));
    run.stop();
}

/// A full load whose chunk waits on a table lock held on the target: a
/// SIGTERM ends the runner within 10 s and leaves none of its statements
/// waiting there; the next run finishes the load.
#[test]
fn a_stop_ends_the_full_load_chunk_the_target_holds() {
    let (source, target) = shared();
    let db = "fhold_src";
    let dst = format!("{db}_dst");
    source.sql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};
         CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT);
         USE {db}; INSERT INTO t SELECT seq, seq FROM seq_1_to_20000;"
    ));
    target.sql(&format!("DROP DATABASE IF EXISTS {dst}"));
    let tmp = temp_dir("stop-full");
    let state = tmp.path().join("state");
    let full = "[full]\nthreads = 1\nchunk_rows = 1000\nrows_per_sec = 2000";
    let job = write_job(
        tmp.path(),
        &job_toml(
            "stop-full",
            "full",
            None,
            db,
            &dst,
            full,
            source,
            target.port,
        ),
    );
    let rows = || {
        target
            .try_sql(&format!("SELECT COUNT(*) FROM {dst}.t"))
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let run = SyncRun::start(&state, &job);
    wait_until(Duration::from_secs(30), "rows on the target", || {
        rows() >= 1000
    });
    let holder = Holder::start(target, &format!("LOCK TABLES {dst}.t READ"));
    wait_until(
        Duration::from_secs(20),
        "a chunk to wait on the lock",
        || waiting(target, &dst, "Waiting for table metadata lock") >= 1,
    );
    run.stop(); // asserts exit 0 within 10 s
    assert_eq!(
        waiting(target, &dst, "Waiting for table metadata lock"),
        0,
        "the chunk was left waiting on the target: {}",
        target.sql("SELECT GROUP_CONCAT(CONCAT(ID, ' ', COMMAND, ' ', TIME, ' ', LEFT(INFO, 80)) SEPARATOR ' | ') FROM information_schema.PROCESSLIST WHERE USER = 'ferry'")
    );
    drop(holder);
    let out = crate::run(ferry(&state).arg("run").arg(&job));
    assert!(out.status.success(), "{}", text(&out));
    assert_same(source, db, target, &dst, None);
}
