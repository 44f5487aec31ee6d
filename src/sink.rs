//! Where a `subscribe` job delivers its change events: a JSON-lines file
//! (or stdout), NATS JetStream, or Kafka. `send` returns only once the
//! sink has acknowledged every record (the file synced, every JetStream
//! publish and Kafka produce answered); the job checkpoints after it, so
//! delivery is at least once.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

use crate::job::SinkKind;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {message}")]
    Down { sink: String, message: String },
    #[error("sink {sink}: {message}")]
    Config { sink: String, message: String },
}

impl SinkError {
    /// A sink that is down is retried (nothing is lost: the position does
    /// not advance); a bad configuration is not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Down { .. })
    }
}

/// One event for the sink.
#[derive(Debug, Clone)]
pub struct Record {
    pub db: std::sync::Arc<str>,
    pub table: std::sync::Arc<str>,
    /// The row's primary key as JSON (the Kafka message key).
    pub key: Option<Vec<u8>>,
    /// `file:pos:row`, for deduplication (the NATS message id).
    pub id: String,
    /// The JSON envelope.
    pub payload: Vec<u8>,
}

pub enum Sink {
    Jsonl(Jsonl),
    Nats(Nats),
    Kafka(Kafka),
}

impl Sink {
    pub async fn open(kind: &SinkKind) -> Result<Sink, SinkError> {
        Ok(match kind {
            SinkKind::Jsonl { path, rotate_bytes } => {
                Sink::Jsonl(Jsonl::open(path, *rotate_bytes)?)
            }
            SinkKind::Nats {
                url,
                subject,
                stream,
            } => Sink::Nats(Nats::open(url, subject, stream).await?),
            SinkKind::Kafka {
                url,
                topic,
                partitions,
            } => Sink::Kafka(Kafka::open(url, topic, *partitions).await?),
        })
    }

    /// Delivers `records` in order; returns once the sink acknowledged all.
    pub async fn send(&mut self, records: &[Record]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        match self {
            Sink::Jsonl(s) => s.send(records),
            Sink::Nats(s) => s.send(records).await,
            Sink::Kafka(s) => s.send(records).await,
        }
    }

    /// For status: what the sink is.
    pub fn describe(&self) -> String {
        match self {
            Sink::Jsonl(s) => format!(
                "jsonl {}",
                s.path
                    .as_ref()
                    .map_or("stdout".into(), |p| p.display().to_string())
            ),
            Sink::Nats(s) => format!("nats {} (stream {})", s.url, s.stream),
            Sink::Kafka(s) => format!("kafka {}", s.url),
        }
    }
}

/// `{db}` and `{table}` of a subject or topic template filled in.
fn fill(template: &str, db: &str, table: &str) -> String {
    template.replace("{db}", db).replace("{table}", table)
}

/// JSON lines appended to a file, synced at each batch; past
/// `rotate_bytes` the file is renamed to `PATH.N` (N counting up) and a new
/// one started. `-` writes to stdout.
pub struct Jsonl {
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
    written: u64,
    rotate_bytes: u64,
}

impl Jsonl {
    fn open(path: &str, rotate_bytes: u64) -> Result<Jsonl, SinkError> {
        let mut s = Jsonl {
            path: (path != "-").then(|| PathBuf::from(path)),
            file: None,
            written: 0,
            rotate_bytes,
        };
        s.reopen()?;
        Ok(s)
    }

    fn err(&self, e: std::io::Error) -> SinkError {
        SinkError::Down {
            sink: format!(
                "jsonl {}",
                self.path
                    .as_ref()
                    .map_or("stdout".into(), |p| p.display().to_string())
            ),
            message: e.to_string(),
        }
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| self.err(e))?;
        self.written = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(file);
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let mut n = 1;
        while PathBuf::from(format!("{}.{n}", path.display())).exists() {
            n += 1;
        }
        self.file = None;
        std::fs::rename(&path, format!("{}.{n}", path.display())).map_err(|e| self.err(e))?;
        self.reopen()
    }

    fn send(&mut self, records: &[Record]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.payload.len() + 1).sum());
        for r in records {
            buf.extend_from_slice(&r.payload);
            buf.push(b'\n');
        }
        match &mut self.file {
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(&buf)
                    .and_then(|_| out.flush())
                    .map_err(|e| self.err(e))?;
            }
            Some(f) => {
                let r = f.write_all(&buf).and_then(|_| f.sync_data());
                r.map_err(|e| self.err(e))?;
                self.written += buf.len() as u64;
                if self.written >= self.rotate_bytes {
                    self.rotate()?;
                }
            }
        }
        Ok(())
    }
}

/// JetStream: each record published to its table's subject with a
/// `Nats-Msg-Id` of its position (JetStream drops a replayed duplicate
/// within its duplicate window); every publish acknowledgement awaited.
pub struct Nats {
    url: String,
    subject: String,
    stream: String,
    js: async_nats::jetstream::Context,
}

impl Nats {
    async fn open(url: &str, subject: &str, stream: &str) -> Result<Nats, SinkError> {
        let down = |m: String| SinkError::Down {
            sink: format!("nats {url}"),
            message: m,
        };
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| down(format!("cannot connect: {e}")))?;
        let js = async_nats::jetstream::new(client);
        let subjects = fill(subject, "*", "*");
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: stream.to_string(),
            subjects: vec![subjects.clone()],
            ..Default::default()
        })
        .await
        .map_err(|e| down(format!("stream {stream} over {subjects}: {e}")))?;
        Ok(Nats {
            url: url.to_string(),
            subject: subject.to_string(),
            stream: stream.to_string(),
            js,
        })
    }

    async fn send(&mut self, records: &[Record]) -> Result<(), SinkError> {
        let down = |m: String| SinkError::Down {
            sink: format!("nats {}", self.url),
            message: m,
        };
        let mut acks = Vec::with_capacity(records.len());
        for r in records {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", r.id.as_str());
            let ack = self
                .js
                .publish_with_headers(
                    fill(&self.subject, &r.db, &r.table),
                    headers,
                    r.payload.clone().into(),
                )
                .await
                .map_err(|e| down(format!("publish: {e}")))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await
                .map_err(|e| down(format!("publish not acknowledged: {e}")))?;
        }
        Ok(())
    }
}

/// Kafka: a topic per table (or one), created when missing; the message
/// key is the primary key, and a key always goes to the same partition, so
/// one row's changes stay in order.
pub struct Kafka {
    url: String,
    topic: String,
    partitions: i32,
    client: Client,
    /// (topic, partition) → its client.
    producers: HashMap<(String, i32), PartitionClient>,
    known_topics: Vec<String>,
}

impl Kafka {
    async fn open(url: &str, topic: &str, partitions: i32) -> Result<Kafka, SinkError> {
        let client = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            ClientBuilder::new(vec![url.to_string()]).build(),
        )
        .await
        .map_err(|_| SinkError::Down {
            sink: format!("kafka {url}"),
            message: "no answer within 10 s".into(),
        })?
        .map_err(|e| SinkError::Down {
            sink: format!("kafka {url}"),
            message: format!("cannot connect: {e}"),
        })?;
        Ok(Kafka {
            url: url.to_string(),
            topic: topic.to_string(),
            partitions,
            client,
            producers: HashMap::new(),
            known_topics: Vec::new(),
        })
    }

    fn down(&self, m: String) -> SinkError {
        SinkError::Down {
            sink: format!("kafka {}", self.url),
            message: m,
        }
    }

    async fn ensure_topic(&mut self, topic: &str) -> Result<(), SinkError> {
        if self.known_topics.iter().any(|t| t == topic) {
            return Ok(());
        }
        let topics = self
            .client
            .list_topics()
            .await
            .map_err(|e| self.down(format!("listing topics: {e}")))?;
        if !topics.iter().any(|t| t.name == topic) {
            let controller = self
                .client
                .controller_client()
                .map_err(|e| self.down(format!("controller: {e}")))?;
            if let Err(e) = controller
                .create_topic(topic, self.partitions, 1, 5_000)
                .await
            {
                // Created meanwhile by someone else is fine.
                let listed = self.client.list_topics().await.unwrap_or_default();
                if !listed.iter().any(|t| t.name == topic) {
                    return Err(self.down(format!("creating topic {topic}: {e}")));
                }
            }
        }
        self.known_topics.push(topic.to_string());
        Ok(())
    }

    async fn send(&mut self, records: &[Record]) -> Result<(), SinkError> {
        // Per (topic, partition), in order.
        let mut batches: BTreeMap<(String, i32), Vec<rskafka::record::Record>> = BTreeMap::new();
        let now = rskafka::chrono::DateTime::from_timestamp_millis(crate::model::now_ms() as i64)
            .unwrap_or_default();
        for r in records {
            let topic = fill(&self.topic, &r.db, &r.table);
            let partition = match &r.key {
                Some(k) => (crate::sql::fnv1a(k) % self.partitions as u32) as i32,
                None => 0,
            };
            let mut headers = BTreeMap::new();
            headers.insert("ferry-id".to_string(), r.id.clone().into_bytes());
            batches
                .entry((topic, partition))
                .or_default()
                .push(rskafka::record::Record {
                    key: r.key.clone(),
                    value: Some(r.payload.clone()),
                    headers,
                    timestamp: now,
                });
        }
        for ((topic, partition), batch) in batches {
            self.ensure_topic(&topic).await?;
            let key = (topic.clone(), partition);
            if !self.producers.contains_key(&key) {
                let pc = self
                    .client
                    .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
                    .await
                    .map_err(|e| self.down(format!("topic {topic}: {e}")))?;
                self.producers.insert(key.clone(), pc);
            }
            let pc = self
                .producers
                .get(&key)
                .ok_or_else(|| self.down(format!("topic {topic}: no partition client")))?;
            // Bounded requests: a broker refuses very large ones.
            let mut rest = batch;
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(500));
                pc.produce(rest, Compression::NoCompression)
                    .await
                    .map_err(|e| SinkError::Down {
                        sink: format!("kafka {}", self.url),
                        message: format!("produce to {topic}/{partition}: {e}"),
                    })?;
                rest = tail;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u32) -> Record {
        Record {
            db: "d".into(),
            table: "t".into(),
            key: None,
            id: n.to_string(),
            payload: format!("{{\"n\":{n},\"pad\":\"xxxxxxxxxx\"}}").into_bytes(),
        }
    }

    #[test]
    fn jsonl_appends_and_rotates_by_size() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("events.jsonl");
        let mut s = Jsonl::open(path.to_str().expect("utf-8"), 4096).expect("open");
        for batch in 0..300 {
            s.send(&[rec(batch * 2), rec(batch * 2 + 1)]).expect("send");
        }
        let mut all = String::new();
        let mut n = 1;
        while let Ok(t) = std::fs::read_to_string(format!("{}.{n}", path.display())) {
            assert!(t.len() >= 4096, "rotated past the size");
            all.push_str(&t);
            n += 1;
        }
        assert!(n > 2, "rotated more than once");
        all.push_str(&std::fs::read_to_string(&path).expect("current"));
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines.len(), 600);
        assert_eq!(lines[599], "{\"n\":599,\"pad\":\"xxxxxxxxxx\"}");
    }

    #[test]
    fn templates_name_the_table() {
        assert_eq!(
            fill("ferry.{db}.{table}", "shop", "orders"),
            "ferry.shop.orders"
        );
        assert_eq!(fill("cdc", "shop", "orders"), "cdc");
    }
}
