//! The job file as written: TOML shapes with spans, no meaning yet.
//!
//! Unknown keys are rejected here (`deny_unknown_fields`); everything that
//! needs judgement happens in [`super::validate`].

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub name: Spanned<String>,
    pub mode: Spanned<String>,
    pub source: Spanned<RawEndpoint>,
    pub target: Option<Spanned<RawEndpoint>>,
    #[serde(default)]
    pub select: Vec<Spanned<RawSelect>>,
    pub full: Option<RawFull>,
    pub cdc: Option<RawCdc>,
    pub verify: Option<RawVerify>,
    pub sink: Option<Spanned<RawSink>>,
    pub alerts: Option<RawAlerts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub host: Spanned<String>,
    pub port: Option<Spanned<i64>>,
    pub user: Spanned<String>,
    /// Accepted by the parser only to refuse it with a helpful message.
    pub password: Option<Spanned<toml::Value>>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub server_id: Option<Spanned<i64>>,
    pub tls: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub database: Option<Spanned<String>>,
    pub tinyint1: Option<Spanned<String>>,
    pub zero_dates: Option<Spanned<String>>,
    pub nul_in_text: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelect {
    pub database: Spanned<String>,
    pub tables: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    pub rename: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFull {
    pub threads: Option<Spanned<i64>>,
    pub chunk_rows: Option<Spanned<i64>>,
    pub rows_per_sec: Option<Spanned<i64>>,
    pub existing_rows: Option<Spanned<String>>,
    pub target_binlog: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCdc {
    pub start: Option<Spanned<String>>,
    pub ddl: Option<Spanned<String>>,
    pub threads: Option<Spanned<i64>>,
    pub retry_for: Option<Spanned<String>>,
    pub shadow_tables: Option<Vec<Spanned<String>>>,
    pub trash_tables: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub after_full: Option<Spanned<String>>,
    pub every: Option<Spanned<String>>,
    pub chunk_rows: Option<Spanned<i64>>,
    pub threads: Option<Spanned<i64>>,
    pub rows_per_sec: Option<Spanned<i64>>,
    pub max_diffs: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    pub kind: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub subject: Option<Spanned<String>>,
    pub stream: Option<Spanned<String>>,
    pub topic: Option<Spanned<String>>,
    pub partitions: Option<Spanned<i64>>,
    pub rotate_bytes: Option<Spanned<i64>>,
    pub snapshot: Option<bool>,
    pub ddl: Option<bool>,
    pub exclude_columns: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub lag: Option<Spanned<String>>,
}
