//! `mode = "subscribe"` against real servers and real brokers: every op
//! and column type through the JSON-lines sink, checked against the source
//! rows; NATS JetStream and Kafka with a kill -9 mid-stream.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::cdc::{log_tail, SyncRun};
use crate::*;

/// A subscribe job over `db` with the given `[sink]` lines.
fn subscribe_job(name: &str, server_id: u32, db: &str, sink: &str, source: &Server) -> String {
    format!(
        r#"name = "{name}"
mode = "subscribe"
[source]
host = "127.0.0.1"
port = {}
user = "ferry"
password_env = "FERRY_SRC_PASSWORD"
server_id = {server_id}
[[select]]
database = "{db}"
[sink]
{sink}
"#,
        source.port
    )
}

/// Every event line of a JSON-lines sink (rotated files first).
fn read_events(path: &Path) -> Vec<Json> {
    let mut files = Vec::new();
    let mut n = 1;
    loop {
        let p = format!("{}.{n}", path.display());
        if !Path::new(&p).exists() {
            break;
        }
        files.push(p);
        n += 1;
    }
    files.push(path.display().to_string());
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// The table's rows after replaying `events` (keyed by `id`).
fn replay(events: &[Json], table: &str) -> BTreeMap<i64, Json> {
    let mut rows = BTreeMap::new();
    for e in events.iter().filter(|e| e["source"]["table"] == table) {
        match e["op"].as_str().expect("op") {
            "r" | "c" | "u" => {
                let id = e["after"]["id"].as_i64().expect("id");
                rows.insert(id, e["after"].clone());
            }
            "d" => {
                rows.remove(&e["before"]["id"].as_i64().expect("id"));
            }
            "ddl" => {}
            other => panic!("unknown op {other}"),
        }
    }
    rows
}

const TYPES: &str = "
USE sj_src;
CREATE TABLE sj_src.t (
  id INT PRIMARY KEY,
  i BIGINT UNSIGNED,
  neg SMALLINT,
  d DECIMAL(10,3),
  f DOUBLE,
  s VARCHAR(30) CHARACTER SET utf8mb4,
  lat VARCHAR(10) CHARACTER SET latin1,
  b VARBINARY(8),
  dt DATETIME(6),
  ts TIMESTAMP(6) NULL,
  dte DATE,
  tm TIME,
  e ENUM('red','green','blue'),
  st SET('a','b','c'),
  j JSON,
  bits BIT(10),
  y YEAR,
  n INT NULL,
  secret VARCHAR(10)
);
INSERT INTO sj_src.t VALUES
  (1, 18446744073709551615, -32768, -12.345, 0.25, 'snow ☃ 🦀', 'café', 0x00FF10, '2024-02-29 23:59:59.000001',
   '2024-03-01 00:00:00.500000', '1999-12-31', '838:59:59', 'green', 'a,c', '{\"k\": [1, \"x\"]}', b'1000000001',
   2024, NULL, 'pw'),
  (2, 0, 7, 0.001, -1.5, '', 'x', '', '1000-01-01 00:00:00.100000', NULL, '2000-01-01', '-01:02:03', 'red', '',
   '[]', b'0', 1901, 5, 'pw');
";

/// The rows of the source table as the events must carry them.
fn expected(source: &Server) -> BTreeMap<i64, Json> {
    let out = source.sql(
        "SET time_zone = '+00:00'; SELECT JSON_OBJECT(
           'id', id, 'i', i, 'neg', neg, 'd', CAST(d AS CHAR), 'f', f, 's', s, 'lat', lat,
           'b', TO_BASE64(b), 'dt', DATE_FORMAT(dt, '%Y-%m-%dT%H:%i:%s.%f'),
           'ts', IF(ts IS NULL, NULL, DATE_FORMAT(ts, '%Y-%m-%dT%H:%i:%s.%fZ')),
           'dte', DATE_FORMAT(dte, '%Y-%m-%d'), 'tm', CAST(tm AS CHAR), 'e', e, 'st', st,
           'j', JSON_EXTRACT(j, '$'), 'bits', CAST(bits AS UNSIGNED), 'y', y, 'n', n)
         FROM sj_src.t ORDER BY id",
    );
    out.lines()
        .map(|l| {
            let mut v: Json = serde_json::from_str(l).expect("JSON_OBJECT");
            // A SET is a list of its members.
            if let Some(st) = v["st"].as_str().map(str::to_string) {
                v["st"] = Json::Array(
                    st.split(',')
                        .filter(|x| !x.is_empty())
                        .map(|x| json!(x))
                        .collect(),
                );
            }
            (v["id"].as_i64().expect("id"), v)
        })
        .collect()
}

/// Every op and every column type through the jsonl sink: the snapshot
/// (`r`), inserts, updates, deletes, a DDL event; replayed, the events give
/// the source's rows exactly, values typed; an excluded column never
/// appears; a restart resumes without losing anything.
#[test]
fn jsonl_carries_every_op_and_type() {
    let (source, _) = shared();
    source.sql("DROP DATABASE IF EXISTS sj_src; CREATE DATABASE sj_src;");
    source.sql(TYPES);
    let tmp = temp_dir("subscribe-jsonl");
    let state = tmp.path().join("state");
    let events_path = tmp.path().join("events.jsonl");
    let job = write_job(
        tmp.path(),
        &subscribe_job(
            "sj",
            5401,
            "sj_src",
            &format!(
                "kind = \"jsonl\"\npath = \"{}\"\nsnapshot = true\nddl = true\nexclude_columns = [\"*.*.secret\"]\nrotate_bytes = 4096",
                events_path.display()
            ),
            source,
        ),
    );
    let mut run = SyncRun::start(&state, &job);
    wait_until(Duration::from_secs(30), "the snapshot", || {
        read_events(&events_path).len() >= 2
    });
    run.assert_running();
    source.sql(
        "INSERT INTO sj_src.t (id, i, neg, d, f, s, lat, b, dt, ts, dte, tm, e, st, j, bits, y, n, secret)
           SELECT seq + 10, seq, -seq, seq / 7, seq + 0.5, CONCAT('row ', seq), 'é', UNHEX(HEX(seq)),
                  '2020-01-01 00:00:00.000001' + INTERVAL seq DAY, '2021-01-01 00:00:00.5' + INTERVAL seq HOUR,
                  '2022-01-01' + INTERVAL seq DAY, SEC_TO_TIME(seq), 'blue', 'b', JSON_OBJECT('n', seq),
                  seq, 2000 + seq, seq, 'pw'
           FROM sj_src.seq_1_to_60;
         UPDATE sj_src.t SET s = 'changed ✓', n = NULL, st = 'a,b', e = 'red' WHERE id = 1;
         UPDATE sj_src.t SET d = d * 2, j = JSON_ARRAY(1, 2) WHERE id BETWEEN 11 AND 20;
         DELETE FROM sj_src.t WHERE id = 2 OR id > 65;
         ALTER TABLE sj_src.t ADD COLUMN late INT NULL;",
    );
    // Paused: nothing more is sent; resumed: what happened meanwhile is.
    wait_until(Duration::from_secs(30), "the first changes", || {
        read_events(&events_path).iter().any(|e| e["op"] == "ddl")
    });
    let pause = ferry(&state).args(["pause", "sj"]).output().expect("pause");
    assert!(pause.status.success(), "{}", text(&pause));
    wait_until(Duration::from_secs(30), "the job to pause", || {
        let out = ferry(&state)
            .args(["status", "--json"])
            .output()
            .expect("status");
        let s: ferry_proto::Status = serde_json::from_slice(&out.stdout).expect("status JSON");
        s.jobs[0].state == "paused" && s.jobs[0].sink.is_some()
    });
    let before = read_events(&events_path).len();
    source.sql("UPDATE sj_src.t SET n = 1000 WHERE id = 11;");
    // The source's head moves past the change; a paused job holds still.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read_events(&events_path).len(),
        before,
        "a paused job sent events"
    );
    let resume = ferry(&state)
        .args(["resume", "sj"])
        .output()
        .expect("resume");
    assert!(resume.status.success(), "{}", text(&resume));
    wait_until(
        Duration::from_secs(30),
        "the change made while paused",
        || {
            replay(&read_events(&events_path), "t")
                .get(&11)
                .is_some_and(|r| r["n"] == json!(1000))
        },
    );
    // Stopped and started again halfway: it resumes from its checkpoint.
    run.stop();
    source.sql("UPDATE sj_src.t SET late = id WHERE id < 13; INSERT INTO sj_src.t (id, late) VALUES (99, 1);");
    let run = SyncRun::start(&state, &job);
    let want_rows = source
        .sql("SELECT COUNT(*) FROM sj_src.t")
        .parse::<usize>()
        .expect("count");
    run.explain(&state, || {
        wait_until(
            Duration::from_secs(30),
            "the events to reach the source's state",
            || {
                let rows = replay(&read_events(&events_path), "t");
                rows.len() == want_rows && rows.contains_key(&99) && rows[&12]["late"] == json!(12)
            },
        )
    });
    run.stop();

    let events = read_events(&events_path);
    assert!(
        Path::new(&format!("{}.1", events_path.display())).exists(),
        "the file rotated past rotate_bytes"
    );
    for op in ["r", "c", "u", "d", "ddl"] {
        assert!(events.iter().any(|e| e["op"] == op), "no {op} event");
    }
    assert!(
        events.iter().all(|e| !e.to_string().contains("secret")),
        "an excluded column appeared"
    );
    let ddl = events.iter().find(|e| e["op"] == "ddl").expect("ddl");
    assert!(ddl["ddl"]
        .as_str()
        .unwrap_or_default()
        .contains("ADD COLUMN late"));
    // A DDL event names the table it is about.
    assert_eq!(ddl["source"]["table"], json!("t"), "{ddl}");
    let u = events
        .iter()
        .find(|e| e["op"] == "u" && e["after"]["id"] == 1)
        .expect("update of 1");
    assert_eq!(u["before"]["s"], json!("snow ☃ 🦀"));
    assert_eq!(u["after"]["s"], json!("changed ✓"));
    for key in [
        "job",
        "db",
        "table",
        "file",
        "pos",
        "row",
        "gtid",
        "server_id",
        "ts_ms",
    ] {
        assert!(!u["source"][key].is_null(), "source.{key} missing in {u}");
    }

    // Every column of every row, as the source has it now (columns added
    // after the last change of a row are absent from its events).
    let mut got = replay(&events, "t");
    let want = expected(source);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (id, w) in &want {
        let g = got.get_mut(id).expect("row");
        if let Some(o) = g.as_object_mut() {
            o.remove("late");
        }
        assert_eq!(g, w, "row {id}");
    }
}

/// A `nats-server -js` on a free port with its own store, killed on drop.
struct NatsServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let dir = temp_dir("nats");
        let port = server::free_port();
        let child = Self::spawn(dir.path(), port);
        NatsServer {
            child,
            port,
            _dir: dir,
        }
    }

    /// Killed and started again on the same port and store.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self._dir.path(), self.port);
    }

    fn down(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(dir: &Path, port: u16) -> std::process::Child {
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (scripts/test.sh installs it)");
        wait_until(Duration::from_secs(20), "nats-server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        child
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every message of a JetStream stream, in stream order, as JSON.
fn nats_messages(port: u16, stream: &str) -> Vec<Json> {
    rt().block_on(async {
        let client = async_nats::connect(format!("nats://127.0.0.1:{port}"))
            .await
            .expect("nats connect");
        let js = async_nats::jetstream::new(client);
        let Ok(mut s) = js.get_stream(stream).await else {
            return Vec::new();
        };
        let total = s.info().await.map(|i| i.state.messages).unwrap_or(0);
        let mut out = Vec::new();
        for seq in 1..=total {
            if let Ok(m) = s.get_raw_message(seq).await {
                out.push(serde_json::from_slice(&m.payload).expect("JSON payload"));
            }
        }
        out
    })
}

/// Per key, the `v` values of its changes in arrival order, duplicates
/// (the same `file:pos:row`) dropped.
fn versions_per_key(events: &[Json]) -> BTreeMap<i64, Vec<i64>> {
    let mut seen = std::collections::HashSet::new();
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for e in events {
        let s = &e["source"];
        if !seen.insert(format!("{}:{}:{}", s["file"], s["pos"], s["row"])) {
            continue;
        }
        let row = if e["after"].is_null() {
            &e["before"]
        } else {
            &e["after"]
        };
        out.entry(row["id"].as_i64().expect("id"))
            .or_default()
            .push(row["v"].as_i64().expect("v"));
    }
    out
}

/// In `db`.t (id, v): `keys` rows inserted at version 0, then every row
/// raised to `versions - 1`, one paced UPDATE at a time (so a kill lands
/// mid-stream), then the last 10 rows deleted.
fn versions_workload(db: &'static str, keys: u32, versions: i64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (source, _) = shared();
        source.sql(&format!(
            "INSERT INTO {db}.t SELECT seq, 0 FROM {db}.seq_1_to_{keys}"
        ));
        for _ in 1..versions {
            std::thread::sleep(Duration::from_millis(150));
            source.sql(&format!("UPDATE {db}.t SET v = v + 1"));
        }
        source.sql(&format!("DELETE FROM {db}.t WHERE id > {}", keys - 10));
    })
}

/// Every key's last version and the deletes of the last 10 keys arrived.
fn all_arrived(per_key: &BTreeMap<i64, Vec<i64>>, keys: i64, versions: i64) -> bool {
    per_key.len() == keys as usize
        && per_key.values().all(|v| v.contains(&(versions - 1)))
        && per_key
            .range(keys - 9..)
            .all(|(_, v)| v.len() > versions as usize)
}

/// At least once: every version of every key; in order: never backwards.
fn assert_every_version_in_order(per_key: &BTreeMap<i64, Vec<i64>>, versions: i64) {
    for (id, vs) in per_key {
        for want in 0..versions {
            assert!(
                vs.contains(&want),
                "key {id}: version {want} missing in {vs:?}"
            );
        }
        assert!(
            vs.windows(2).all(|w| w[0] <= w[1]),
            "key {id}: out of order {vs:?}"
        );
    }
}

/// Streams [`versions_workload`] through the job, killed -9 once the sink
/// has its first change and started again; returns the running job and what
/// the sink holds (`read`) once every change arrived (`events` lists its
/// change events), each version of every key at least once and in order.
fn deliver_across_a_kill<T>(
    state: &Path,
    job: &Path,
    (db, keys, versions): (&'static str, u32, i64),
    read: impl Fn() -> T,
    events: impl Fn(&T) -> Vec<Json>,
) -> (SyncRun, T) {
    let mut run = SyncRun::start(state, job);
    run.wait_streaming();
    let workload = versions_workload(db, keys, versions);
    wait_until(Duration::from_secs(30), "changes at the sink", || {
        !events(&read()).is_empty()
    });
    run.kill();
    let mut run = SyncRun::start(state, job);
    workload.join().expect("workload");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = read();
        let per_key = versions_per_key(&events(&got));
        if all_arrived(&per_key, i64::from(keys), versions) {
            assert_every_version_in_order(&per_key, versions);
            run.assert_running();
            return (run, got);
        }
        if Instant::now() > deadline {
            panic!(
                "not every change arrived: {} keys, e.g. {:?}\nlog:\n{}",
                per_key.len(),
                per_key.iter().next(),
                log_tail(state)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// NATS JetStream: changes streamed while Ferry is killed -9 mid-stream and
/// restarted: every change arrives at least once, in order per key, each
/// publish acknowledged before the position moves.
#[test]
fn nats_delivers_every_change_in_order_across_a_kill() {
    let (source, _) = shared();
    let mut nats = NatsServer::start();
    source.sql(
        "DROP DATABASE IF EXISTS sn_src; CREATE DATABASE sn_src;
         CREATE TABLE sn_src.t (id INT PRIMARY KEY, v INT NOT NULL);",
    );
    let tmp = temp_dir("subscribe-nats");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &subscribe_job(
            "sn",
            5402,
            "sn_src",
            &format!(
                "kind = \"nats\"\nurl = \"nats://127.0.0.1:{}\"\nsubject = \"cdc.{{db}}.{{table}}\"\nstream = \"SN\"",
                nats.port
            ),
            source,
        ),
    );
    const VERSIONS: i64 = 12;
    let (run, _) = deliver_across_a_kill(
        &state,
        &job,
        ("sn_src", 300, VERSIONS),
        || nats_messages(nats.port, "SN"),
        Vec::clone,
    );

    // The sink goes down: the job retries, its position stays; the sink
    // comes back: the changes made meanwhile arrive.
    nats.down();
    source.sql("UPDATE sn_src.t SET v = v + 100 WHERE id <= 10");
    wait_until(Duration::from_secs(30), "the job to retry", || {
        let out = ferry(&state)
            .args(["status", "--json"])
            .output()
            .expect("status");
        let s: ferry_proto::Status = serde_json::from_slice(&out.stdout).expect("status JSON");
        s.jobs[0].state == "retrying"
    });
    nats.restart();
    wait_until(
        Duration::from_secs(60),
        "the changes made while NATS was down",
        || {
            let per_key = versions_per_key(&nats_messages(nats.port, "SN"));
            (1..=10).all(|id| {
                per_key
                    .get(&id)
                    .is_some_and(|v| v.last() == Some(&(VERSIONS - 1 + 100)))
            })
        },
    );
    run.stop();
}

/// The tansu broker (a Kafka-protocol broker with memory storage, see
/// ../shared/BROKERS.md): `$FERRY_TANSU`, else `tansu` on the PATH
/// (scripts/test.sh installs it).
struct Tansu {
    child: std::process::Child,
    port: u16,
}

impl Tansu {
    fn start() -> Tansu {
        let bin = std::env::var("FERRY_TANSU").unwrap_or_else(|_| "tansu".into());
        let port = server::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e} (scripts/test.sh installs tansu)"));
        wait_until(Duration::from_secs(20), "tansu to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Tansu { child, port }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record of every partition of `topic`, as (partition, key, JSON).
fn kafka_records(port: u16, topic: &str, partitions: i32) -> Vec<(i32, Json, Json)> {
    rt().block_on(async {
        use rskafka::client::partition::UnknownTopicHandling;
        let Ok(client) = rskafka::client::ClientBuilder::new(vec![format!("127.0.0.1:{port}")])
            .build()
            .await
        else {
            return Vec::new();
        };
        let topics = client.list_topics().await.unwrap_or_default();
        if !topics.iter().any(|t| t.name == topic) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for p in 0..partitions {
            let Ok(pc) = client
                .partition_client(topic.to_string(), p, UnknownTopicHandling::Error)
                .await
            else {
                continue;
            };
            let mut offset = 0;
            loop {
                let Ok((records, _)) = pc.fetch_records(offset, 1..10_000_000, 100).await else {
                    break;
                };
                if records.is_empty() {
                    break;
                }
                for r in records {
                    offset = r.offset + 1;
                    let key = r.record.key.map_or(Json::Null, |k| {
                        serde_json::from_slice(&k).expect("JSON key")
                    });
                    let value = serde_json::from_slice(&r.record.value.unwrap_or_default())
                        .expect("JSON value");
                    out.push((p, key, value));
                }
            }
        }
        out
    })
}

/// Kafka (a real Kafka-protocol broker): the same changes, killed -9
/// mid-stream and restarted; every change arrives at least once, in order
/// per key; a key always lands in the same partition and is the primary key.
#[test]
fn kafka_delivers_every_change_in_order_across_a_kill() {
    let (source, _) = shared();
    let broker = Tansu::start();
    source.sql(
        "DROP DATABASE IF EXISTS sk_src; CREATE DATABASE sk_src;
         CREATE TABLE sk_src.t (id INT PRIMARY KEY, v INT NOT NULL);",
    );
    let tmp = temp_dir("subscribe-kafka");
    let state = tmp.path().join("state");
    let job = write_job(
        tmp.path(),
        &subscribe_job(
            "sk",
            5403,
            "sk_src",
            &format!(
                "kind = \"kafka\"\nurl = \"127.0.0.1:{}\"\ntopic = \"cdc.{{db}}.{{table}}\"\npartitions = 2",
                broker.port
            ),
            source,
        ),
    );
    const VERSIONS: i64 = 8;
    let topic = "cdc.sk_src.t";
    let (run, records) = deliver_across_a_kill(
        &state,
        &job,
        ("sk_src", 200, VERSIONS),
        || kafka_records(broker.port, topic, 2),
        |records| records.iter().map(|(_, _, v)| v.clone()).collect(),
    );
    let mut partition_of = BTreeMap::new();
    for (p, key, value) in &records {
        let row = if value["after"].is_null() {
            &value["before"]
        } else {
            &value["after"]
        };
        assert_eq!(key, &json!({"id": row["id"]}), "the key is the primary key");
        let first = partition_of
            .entry(row["id"].as_i64().expect("id"))
            .or_insert(*p);
        assert_eq!(first, p, "a key stays in one partition");
    }
    assert!(
        partition_of.values().any(|p| *p == 1),
        "keys spread over both partitions"
    );
    run.stop();
}

/// An online schema change under a subscription: the shadow table's rows
/// are not the table's, so none is sent; the cut-over arrives as a DDL
/// event for the table with the ALTER it applied; the table's own changes
/// before and after it all arrive.
#[test]
fn jsonl_online_schema_change_sends_the_table_not_its_shadow() {
    let (source, _) = shared();
    source.sql(
        "DROP DATABASE IF EXISTS sg_src; CREATE DATABASE sg_src; USE sg_src;
         CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO t VALUES (1, 'one');",
    );
    let tmp = temp_dir("subscribe-ghost");
    let state = tmp.path().join("state");
    let events_path = tmp.path().join("events.jsonl");
    let job = write_job(
        tmp.path(),
        &subscribe_job(
            "sg",
            5402,
            "sg_src",
            &format!(
                "kind = \"jsonl\"\npath = \"{}\"\nddl = true",
                events_path.display()
            ),
            source,
        ),
    );
    let mut run = SyncRun::start(&state, &job);
    run.wait_streaming();
    source.sql(
        "USE sg_src;
         INSERT INTO t VALUES (2, 'before');
         create /* gh-ost */ table `sg_src`.`_t_gho` like `sg_src`.`t`;
         alter /* gh-ost */ table `sg_src`.`_t_gho` add column c int not null default 3;
         insert /* gh-ost */ ignore into `sg_src`.`_t_gho` (`id`, `v`) (select `id`, `v` from `sg_src`.`t`);
         INSERT INTO t VALUES (3, 'during');
         replace /* gh-ost */ into `sg_src`.`_t_gho` (`id`, `v`) values (3, 'during');
         rename /* gh-ost */ table `sg_src`.`t` to `sg_src`.`_t_del`, `sg_src`.`_t_gho` to `sg_src`.`t`;
         drop /* gh-ost */ table if exists `sg_src`.`_t_del`;
         INSERT INTO t VALUES (4, 'after', 5);",
    );
    wait_until(
        Duration::from_secs(30),
        "the change after the cut-over",
        || {
            read_events(&events_path)
                .iter()
                .any(|e| e["op"] == "c" && e["after"]["id"] == 4)
        },
    );
    run.assert_running();
    run.stop();
    let events = read_events(&events_path);
    let tables: Vec<&str> = events
        .iter()
        .filter(|e| e["op"] != "ddl")
        .map(|e| e["source"]["table"].as_str().unwrap_or(""))
        .collect();
    assert!(tables.iter().all(|t| *t == "t"), "{tables:?}");
    let rows = replay(&events, "t");
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!(rows[&4]["c"], json!(5));
    let ddl: Vec<&Json> = events.iter().filter(|e| e["op"] == "ddl").collect();
    assert_eq!(
        ddl.len(),
        1,
        "only the cut-over is the table's DDL: {ddl:?}"
    );
    assert_eq!(ddl[0]["source"]["table"], json!("t"));
    let text = ddl[0]["ddl"].as_str().unwrap_or_default();
    assert!(text.contains("`t` add column c"), "{text}");
}
