//! The job records of state format 2, frozen as they were written, and
//! their migration to the current format.
//!
//! postcard is not self-describing: a record decodes only with the exact
//! types that wrote it, so these copies must never change. Format 3 stores
//! the job definition as JSON inside the record, so new job-file options
//! (with their defaults) no longer need a migration of their own.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::job;

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct JobRecord {
    spec: JobSpec,
    state: JobState,
    since_ms: u64,
    reason: Option<String>,
    schema_done: bool,
}

impl From<JobRecord> for super::record::JobRecord {
    fn from(r: JobRecord) -> Self {
        super::record::JobRecord {
            spec: r.spec.into(),
            state: r.state.into(),
            since_ms: r.since_ms,
            reason: r.reason,
            schema_done: r.schema_done,
            // Format 2 planned a job's tables in its first attempt.
            load_planned: r.schema_done,
        }
    }
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum JobState {
    Pending,
    Prechecking,
    PrecheckFailed,
    Schema,
    FullLoad,
    CatchingUp,
    Syncing,
    Paused,
    Verifying,
    Retrying,
    Failed,
    Done,
}

impl From<JobState> for crate::model::JobState {
    fn from(s: JobState) -> Self {
        use crate::model::JobState as J;
        match s {
            JobState::Pending => J::Pending,
            JobState::Prechecking => J::Prechecking,
            JobState::PrecheckFailed => J::PrecheckFailed,
            JobState::Schema => J::Schema,
            JobState::FullLoad => J::FullLoad,
            JobState::CatchingUp => J::CatchingUp,
            JobState::Syncing => J::Syncing,
            JobState::Paused => J::Paused,
            JobState::Verifying => J::Verifying,
            JobState::Retrying => J::Retrying,
            JobState::Failed => J::Failed,
            JobState::Done => J::Done,
        }
    }
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct JobSpec {
    name: String,
    mode: Mode,
    source: Endpoint,
    target: Option<Endpoint>,
    select: Vec<Selection>,
    full: FullOptions,
    cdc: CdcOptions,
    verify: VerifyOptions,
    sink: Option<SinkSpec>,
    alerts: Alerts,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum Mode {
    Full,
    Sync,
    Migrate,
    Subscribe,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct Endpoint {
    host: String,
    port: u16,
    user: String,
    password: PasswordSource,
    server_id: Option<u32>,
    tls: Tls,
    ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum PasswordSource {
    None,
    Env(String),
    File(PathBuf),
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum Tls {
    Disabled,
    Prefer,
    Required,
    Verify,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct Selection {
    database: String,
    tables: Option<Vec<String>>,
    exclude: Vec<String>,
    target_database: String,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct FullOptions {
    threads: usize,
    chunk_rows: u64,
    rows_per_sec: u64,
    existing_rows: ExistingRows,
    target_binlog: bool,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum ExistingRows {
    Error,
    Overwrite,
    Skip,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct CdcOptions {
    start: CdcStart,
    ddl: DdlPolicy,
    threads: usize,
    retry_for: Duration,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum CdcStart {
    Auto,
    Now,
    FilePos { file: String, pos: u64 },
    Gtid(String),
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum DdlPolicy {
    Apply,
    Skip,
    Stop,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct VerifyOptions {
    after_full: VerifyLevel,
    every: Option<Duration>,
    chunk_rows: u64,
    threads: usize,
    rows_per_sec: u64,
    max_diffs: usize,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum VerifyLevel {
    None,
    Count,
    Checksum,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct SinkSpec {
    kind: SinkKind,
    snapshot: bool,
    ddl: bool,
    exclude_columns: Vec<String>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum SinkKind {
    Jsonl {
        path: String,
        rotate_bytes: u64,
    },
    Nats {
        url: String,
        subject: String,
        stream: String,
    },
    Kafka {
        url: String,
        topic: String,
        partitions: i32,
    },
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct Alerts {
    lag: Option<Duration>,
}

impl From<JobSpec> for job::JobSpec {
    fn from(s: JobSpec) -> Self {
        let endpoint = |e: Endpoint| job::Endpoint {
            host: e.host,
            port: e.port,
            user: e.user,
            password: match e.password {
                PasswordSource::None => job::PasswordSource::None,
                PasswordSource::Env(v) => job::PasswordSource::Env(v),
                PasswordSource::File(f) => job::PasswordSource::File(f),
            },
            server_id: e.server_id,
            tls: match e.tls {
                Tls::Disabled => job::Tls::Disabled,
                Tls::Prefer => job::Tls::Prefer,
                Tls::Required => job::Tls::Required,
                Tls::Verify => job::Tls::Verify,
            },
            ca: e.ca,
            kind: job::ServerKind::Mysql,
            database: None,
        };
        job::JobSpec {
            name: s.name,
            mode: match s.mode {
                Mode::Full => job::Mode::Full,
                Mode::Sync => job::Mode::Sync,
                Mode::Migrate => job::Mode::Migrate,
                Mode::Subscribe => job::Mode::Subscribe,
            },
            source: endpoint(s.source),
            target: s.target.map(endpoint),
            select: s
                .select
                .into_iter()
                .map(|x| job::Selection {
                    database: x.database,
                    tables: x.tables,
                    exclude: x.exclude,
                    target_database: x.target_database,
                })
                .collect(),
            full: job::FullOptions {
                threads: s.full.threads,
                chunk_rows: s.full.chunk_rows,
                rows_per_sec: s.full.rows_per_sec,
                existing_rows: match s.full.existing_rows {
                    ExistingRows::Error => job::ExistingRows::Error,
                    ExistingRows::Overwrite => job::ExistingRows::Overwrite,
                    ExistingRows::Skip => job::ExistingRows::Skip,
                },
                target_binlog: s.full.target_binlog,
            },
            cdc: job::CdcOptions {
                start: match s.cdc.start {
                    CdcStart::Auto => job::CdcStart::Auto,
                    CdcStart::Now => job::CdcStart::Now,
                    CdcStart::FilePos { file, pos } => job::CdcStart::FilePos { file, pos },
                    CdcStart::Gtid(g) => job::CdcStart::Gtid(g),
                },
                ddl: match s.cdc.ddl {
                    DdlPolicy::Apply => job::DdlPolicy::Apply,
                    DdlPolicy::Skip => job::DdlPolicy::Skip,
                    DdlPolicy::Stop => job::DdlPolicy::Stop,
                },
                threads: s.cdc.threads,
                retry_for: s.cdc.retry_for,
                ..job::CdcOptions::default()
            },
            verify: job::VerifyOptions {
                after_full: match s.verify.after_full {
                    VerifyLevel::None => job::VerifyLevel::None,
                    VerifyLevel::Count => job::VerifyLevel::Count,
                    VerifyLevel::Checksum => job::VerifyLevel::Checksum,
                },
                every: s.verify.every,
                chunk_rows: s.verify.chunk_rows,
                threads: s.verify.threads,
                rows_per_sec: s.verify.rows_per_sec,
                max_diffs: s.verify.max_diffs,
            },
            sink: s.sink.map(|k| job::SinkSpec {
                kind: match k.kind {
                    SinkKind::Jsonl { path, rotate_bytes } => {
                        job::SinkKind::Jsonl { path, rotate_bytes }
                    }
                    SinkKind::Nats {
                        url,
                        subject,
                        stream,
                    } => job::SinkKind::Nats {
                        url,
                        subject,
                        stream,
                    },
                    SinkKind::Kafka {
                        url,
                        topic,
                        partitions,
                    } => job::SinkKind::Kafka {
                        url,
                        topic,
                        partitions,
                    },
                },
                snapshot: k.snapshot,
                ddl: k.ddl,
                exclude_columns: k.exclude_columns,
            }),
            alerts: job::Alerts { lag: s.alerts.lag },
            mapping: job::Mapping::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Store, JOBS, META};

    #[test]
    fn a_format_2_state_is_migrated_with_new_options_at_their_defaults() {
        let dir = tempfile::tempdir().expect("tmp");
        let old = JobRecord {
            spec: JobSpec {
                name: "shop".into(),
                mode: Mode::Sync,
                source: Endpoint {
                    host: "10.0.0.5".into(),
                    port: 3306,
                    user: "ferry".into(),
                    password: PasswordSource::Env("PW".into()),
                    server_id: Some(42),
                    tls: Tls::Prefer,
                    ca: None,
                },
                target: None,
                select: vec![Selection {
                    database: "shop".into(),
                    tables: Some(vec!["orders".into()]),
                    exclude: vec![],
                    target_database: "copy".into(),
                }],
                full: FullOptions {
                    threads: 3,
                    chunk_rows: 500,
                    rows_per_sec: 0,
                    existing_rows: ExistingRows::Skip,
                    target_binlog: true,
                },
                cdc: CdcOptions {
                    start: CdcStart::FilePos {
                        file: "binlog.000002".into(),
                        pos: 4,
                    },
                    ddl: DdlPolicy::Stop,
                    threads: 2,
                    retry_for: Duration::from_secs(60),
                },
                verify: VerifyOptions {
                    after_full: VerifyLevel::Count,
                    every: None,
                    chunk_rows: 100,
                    threads: 1,
                    rows_per_sec: 0,
                    max_diffs: 5,
                },
                sink: None,
                alerts: Alerts { lag: None },
            },
            state: JobState::Syncing,
            since_ms: 7,
            reason: None,
            schema_done: true,
        };
        {
            let s = Store::open(dir.path()).expect("open");
            let tx = s.db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("format_version", 2u32.to_le_bytes().as_slice())
                .unwrap();
            tx.open_table(JOBS)
                .unwrap()
                .insert("shop", postcard::to_stdvec(&old).unwrap().as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let s = Store::open(dir.path()).expect("migrated");
        let rec = s.job("shop").unwrap().expect("the job survives");
        assert_eq!(rec.state, crate::model::JobState::Syncing);
        assert!(rec.schema_done);
        assert_eq!(rec.spec.full.threads, 3);
        assert_eq!(rec.spec.cdc.ddl, job::DdlPolicy::Stop);
        assert_eq!(rec.spec.select[0].target_database, "copy");
        assert_eq!(
            rec.spec.cdc.shadow_tables,
            job::CdcOptions::default().shadow_tables
        );
        drop(s);
        // Opened again, it is format 3 and reads the same.
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            s.job("shop").unwrap().expect("job").spec.full.chunk_rows,
            500
        );
    }
}
