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
    format!(
        r#"name = "{name}"
mode = "sync"
[source]
host = "127.0.0.1"
port = {source_port}
user = "ferry"
password_env = "FERRY_SRC_PASSWORD"
server_id = {server_id}
[target]
host = "127.0.0.1"
port = {target_port}
user = "ferry"
password_env = "FERRY_DST_PASSWORD"
[[select]]
database = "{db}"
rename = "{db}_dst"
"#
    )
}

fn status(state: &std::path::Path, job: &str) -> ferry_proto::Job {
    let out = crate::run(ferry(state).args(["status", job, "--json"]));
    let s: ferry_proto::Status = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status JSON: {e}\n{}", text(&out)));
    s.jobs.into_iter().next().expect("the job")
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
    wait_same(
        source,
        db,
        target,
        &format!("{db}_dst"),
        Duration::from_secs(90),
    );
    run.assert_running();
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
    run.explain(&state, || {
        wait_same(
            source,
            db,
            target,
            &format!("{db}_dst"),
            Duration::from_secs(120),
        )
    });
    run.assert_running();
    run.stop();
}
