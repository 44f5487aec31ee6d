//! From [`raw`](super::raw) shapes to a [`JobSpec`], with errors that point
//! at the file, line, column and field.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawEndpoint, RawJob, RawSelect};
use super::spec::*;

/// Parses and validates the text of a job file named `file`.
pub fn parse_job(file: &str, text: &str) -> Result<JobSpec, JobError> {
    let v = Validator { file, text };
    let raw: RawJob = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        JobError {
            file: file.to_string(),
            line,
            column,
            field: String::new(),
            message: e.message().to_string(),
        }
    })?;
    v.job(raw)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Validator<'_> {
    fn err(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> JobError {
        let (line, column) = line_col(self.text, span.start);
        JobError {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn job(&self, raw: RawJob) -> Result<JobSpec, JobError> {
        let name = raw.name.get_ref();
        if name.is_empty()
            || name.len() > 48
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(self.err(
                raw.name.span(),
                "name",
                format!("{name:?} is not a valid job name: use [a-z0-9-]+, at most 48 characters"),
            ));
        }
        let mode = match raw.mode.get_ref().as_str() {
            "full" => Mode::Full,
            "sync" => Mode::Sync,
            "migrate" => Mode::Migrate,
            "subscribe" => Mode::Subscribe,
            other => {
                return Err(self.err(
                    raw.mode.span(),
                    "mode",
                    format!("unknown mode {other:?}; expected full | sync | migrate | subscribe"),
                ))
            }
        };
        let (source, _) = self.endpoint(raw.source, "source")?;
        let mut mapping = Mapping::default();
        let target = match (mode, raw.target) {
            (Mode::Subscribe, Some(t)) => {
                return Err(self.err(
                    t.span(),
                    "target",
                    "a subscribe job has a [sink], not a [target]",
                ))
            }
            (Mode::Subscribe, None) => None,
            (_, Some(t)) => {
                let (endpoint, m) = self.endpoint(t, "target")?;
                mapping = m;
                Some(endpoint)
            }
            (_, None) => {
                return Err(self.err(
                    0..0,
                    "target",
                    format!("mode {:?} needs a [target] section", mode.as_str()),
                ))
            }
        };
        let postgresql = target
            .as_ref()
            .is_some_and(|t| t.kind == ServerKind::Postgresql);
        if raw.select.is_empty() {
            return Err(self.err(
                0..0,
                "select",
                "at least one [[select]] section is required",
            ));
        }
        let select = raw
            .select
            .into_iter()
            .map(|s| self.selection(s))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in select.iter().enumerate() {
            if select
                .iter()
                .take(i)
                .any(|b| b.target_database == a.target_database && b.database != a.database)
            {
                return Err(self.err(
                    0..0,
                    "select.rename",
                    format!(
                        "two source databases map to the target database {:?}",
                        a.target_database
                    ),
                ));
            }
        }

        let mut full = FullOptions::default();
        if let Some(f) = raw.full {
            if let Some(t) = f.threads {
                full.threads = self.int_in(&t, "full.threads", 1, 64)? as usize;
            }
            if let Some(c) = f.chunk_rows {
                full.chunk_rows = self.int_in(&c, "full.chunk_rows", 1, 10_000_000)? as u64;
            }
            if let Some(r) = f.rows_per_sec {
                full.rows_per_sec = self.int_in(&r, "full.rows_per_sec", 0, i64::MAX)? as u64;
            }
            if let Some(b) = f.target_binlog {
                if postgresql {
                    return Err(self.err(
                        0..0,
                        "full.target_binlog",
                        "target_binlog is about a MySQL target's binlog; a PostgreSQL \
                         target has none",
                    ));
                }
                full.target_binlog = b;
            }
            if let Some(e) = f.existing_rows {
                full.existing_rows = match e.get_ref().as_str() {
                    "error" => ExistingRows::Error,
                    "overwrite" => ExistingRows::Overwrite,
                    "skip" => ExistingRows::Skip,
                    other => {
                        return Err(self.err(
                            e.span(),
                            "full.existing_rows",
                            format!("unknown value {other:?}; expected error | overwrite | skip"),
                        ))
                    }
                };
                if postgresql && full.existing_rows != ExistingRows::Error {
                    return Err(self.err(
                        e.span(),
                        "full.existing_rows",
                        "a PostgreSQL target's tables are created by the load: existing_rows \
                         = \"error\" only (the precheck fails on a table that holds rows)",
                    ));
                }
            }
        }

        let mut cdc = CdcOptions::default();
        if let Some(c) = raw.cdc {
            if let Some(s) = c.start {
                cdc.start = self.cdc_start(&s)?;
            }
            if let Some(d) = c.ddl {
                cdc.ddl = match d.get_ref().as_str() {
                    "apply" => DdlPolicy::Apply,
                    "skip" => DdlPolicy::Skip,
                    "stop" => DdlPolicy::Stop,
                    other => {
                        return Err(self.err(
                            d.span(),
                            "cdc.ddl",
                            format!("unknown value {other:?}; expected apply | skip | stop"),
                        ))
                    }
                };
            }
            if let Some(t) = c.threads {
                cdc.threads = self.int_in(&t, "cdc.threads", 1, 64)? as usize;
            }
            if let Some(r) = c.retry_for {
                cdc.retry_for = self.duration(&r, "cdc.retry_for")?;
            }
            if let Some(list) = c.shadow_tables {
                cdc.shadow_tables = self.table_templates(list, "cdc.shadow_tables")?;
            }
            if let Some(list) = c.trash_tables {
                cdc.trash_tables = self.table_templates(list, "cdc.trash_tables")?;
            }
        }

        let mut verify = VerifyOptions::default();
        if let Some(vf) = raw.verify {
            if let Some(a) = vf.after_full {
                verify.after_full = match a.get_ref().as_str() {
                    "none" => VerifyLevel::None,
                    "count" => VerifyLevel::Count,
                    "checksum" => VerifyLevel::Checksum,
                    other => {
                        return Err(self.err(
                            a.span(),
                            "verify.after_full",
                            format!("unknown value {other:?}; expected none | count | checksum"),
                        ))
                    }
                };
            }
            if let Some(e) = vf.every {
                verify.every = Some(self.duration(&e, "verify.every")?);
            }
            if let Some(n) = vf.chunk_rows {
                verify.chunk_rows = self.int_in(&n, "verify.chunk_rows", 100, 10_000_000)? as u64;
            }
            if let Some(n) = vf.threads {
                verify.threads = self.int_in(&n, "verify.threads", 1, 64)? as usize;
            }
            if let Some(n) = vf.rows_per_sec {
                verify.rows_per_sec = self.int_in(&n, "verify.rows_per_sec", 0, i64::MAX)? as u64;
            }
            if let Some(n) = vf.max_diffs {
                verify.max_diffs = self.int_in(&n, "verify.max_diffs", 1, 100_000)? as usize;
            }
        }

        let sink = match (mode, raw.sink) {
            (Mode::Subscribe, Some(s)) => Some(self.sink(s)?),
            (Mode::Subscribe, None) => {
                return Err(self.err(0..0, "sink", "a subscribe job needs a [sink] section"))
            }
            (_, Some(s)) => {
                return Err(self.err(s.span(), "sink", "[sink] is only for mode = \"subscribe\""))
            }
            (_, None) => None,
        };

        let mut alerts = Alerts::default();
        if let Some(a) = raw.alerts {
            if let Some(l) = a.lag {
                alerts.lag = Some(self.duration(&l, "alerts.lag")?);
            }
        }

        Ok(JobSpec {
            name: name.clone(),
            mode,
            source,
            target,
            select,
            full,
            cdc,
            verify,
            sink,
            alerts,
            mapping,
        })
    }

    /// `value`, one of `options` (by name); `None` when not given.
    fn choice<T: Copy>(
        &self,
        value: &Option<Spanned<String>>,
        field: &str,
        options: &[(&str, T)],
    ) -> Result<Option<T>, JobError> {
        let Some(v) = value else { return Ok(None) };
        match options.iter().find(|(name, _)| name == v.get_ref()) {
            Some((_, t)) => Ok(Some(*t)),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                Err(self.err(
                    v.span(),
                    field,
                    format!(
                        "unknown value {:?}; expected {}",
                        v.get_ref(),
                        names.join(" | ")
                    ),
                ))
            }
        }
    }

    /// The `[target]` keys of a PostgreSQL target's value mapping.
    fn mapping(
        &self,
        raw: &RawEndpoint,
        kind: ServerKind,
        section: &str,
    ) -> Result<Mapping, JobError> {
        let keys = [
            ("tinyint1", &raw.tinyint1),
            ("zero_dates", &raw.zero_dates),
            ("nul_in_text", &raw.nul_in_text),
        ];
        if kind != ServerKind::Postgresql {
            if let Some((key, Some(v))) = keys.iter().find(|(_, v)| v.is_some()) {
                return Err(self.err(
                    v.span(),
                    &format!("{section}.{key}"),
                    "this key maps values into a PostgreSQL target (kind = \"postgresql\")",
                ));
            }
        }
        let field = |f: &str| format!("{section}.{f}");
        let d = Mapping::default();
        Ok(Mapping {
            tinyint1: self
                .choice(
                    &raw.tinyint1,
                    &field("tinyint1"),
                    &[
                        ("smallint", Tinyint1::Smallint),
                        ("boolean", Tinyint1::Boolean),
                    ],
                )?
                .unwrap_or(d.tinyint1),
            zero_dates: self
                .choice(
                    &raw.zero_dates,
                    &field("zero_dates"),
                    &[
                        ("refuse", ZeroDates::Refuse),
                        ("null", ZeroDates::Null),
                        ("infinity", ZeroDates::Infinity),
                    ],
                )?
                .unwrap_or(d.zero_dates),
            nul_in_text: self
                .choice(
                    &raw.nul_in_text,
                    &field("nul_in_text"),
                    &[("refuse", NulInText::Refuse), ("strip", NulInText::Strip)],
                )?
                .unwrap_or(d.nul_in_text),
            postgis: false,
        })
    }

    fn server_kind(&self, raw: &RawEndpoint, section: &str) -> Result<ServerKind, JobError> {
        let field = |f: &str| format!("{section}.{f}");
        let kind = match raw.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
            None | Some(("mysql", _)) => ServerKind::Mysql,
            Some(("postgresql", span)) if section == "source" => {
                return Err(self.err(
                    span,
                    &field("kind"),
                    "the source is MySQL or MariaDB; kind = \"postgresql\" is for a [target]",
                ))
            }
            Some(("postgresql", _)) => ServerKind::Postgresql,
            Some((other, span)) => {
                return Err(self.err(
                    span,
                    &field("kind"),
                    format!("unknown kind {other:?}; expected mysql | postgresql"),
                ))
            }
        };
        Ok(kind)
    }

    fn endpoint(
        &self,
        raw: Spanned<RawEndpoint>,
        section: &str,
    ) -> Result<(Endpoint, Mapping), JobError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let field = |f: &str| format!("{section}.{f}");
        if let Some(p) = &raw.password {
            return Err(self.err(
                p.span(),
                &field("password"),
                "a literal password is not allowed in a job file; \
                 use password_env = \"VAR\" or password_file = \"path\"",
            ));
        }
        let kind = self.server_kind(&raw, section)?;
        let mapping = self.mapping(&raw, kind, section)?;
        let password = match (raw.password_env, raw.password_file) {
            (Some(_), Some(f)) => {
                return Err(self.err(
                    f.span(),
                    &field("password_file"),
                    "give password_env or password_file, not both",
                ))
            }
            (Some(e), None) => {
                if e.get_ref().is_empty() {
                    return Err(self.err(e.span(), &field("password_env"), "empty variable name"));
                }
                PasswordSource::Env(e.into_inner())
            }
            (None, Some(f)) => PasswordSource::File(PathBuf::from(f.into_inner())),
            (None, None) => PasswordSource::None,
        };
        if raw.host.get_ref().is_empty() {
            return Err(self.err(raw.host.span(), &field("host"), "empty host"));
        }
        if raw.user.get_ref().is_empty() {
            return Err(self.err(raw.user.span(), &field("user"), "empty user"));
        }
        let database = match (kind, raw.database) {
            (ServerKind::Postgresql, Some(d)) if d.get_ref().is_empty() => {
                return Err(self.err(d.span(), &field("database"), "empty database name"));
            }
            (ServerKind::Postgresql, Some(d)) => Some(d.into_inner()),
            (ServerKind::Postgresql, None) => {
                return Err(self.err(
                    span.clone(),
                    &field("database"),
                    "a PostgreSQL target needs database = \"name\" (the database its \
                     schemas are created in)",
                ))
            }
            (ServerKind::Mysql, Some(d)) => {
                return Err(self.err(
                    d.span(),
                    &field("database"),
                    "database is for a PostgreSQL target (kind = \"postgresql\"); a MySQL \
                     server's databases are named by [[select]] rename",
                ))
            }
            (ServerKind::Mysql, None) => None,
        };
        if let (ServerKind::Postgresql, Some(s)) = (kind, &raw.server_id) {
            return Err(self.err(
                s.span(),
                &field("server_id"),
                "server_id is the source's replica id; a PostgreSQL target has none",
            ));
        }
        let port = match &raw.port {
            Some(p) => self.int_in(p, &field("port"), 1, 65535)? as u16,
            None if kind == ServerKind::Postgresql => 5432,
            None => 3306,
        };
        let server_id = match &raw.server_id {
            Some(s) => Some(self.int_in(s, &field("server_id"), 1, u32::MAX as i64)? as u32),
            None => None,
        };
        let tls = match raw.tls.as_ref().map(|t| (t.get_ref().as_str(), t.span())) {
            None => Tls::Prefer,
            Some(("disabled", _)) => Tls::Disabled,
            Some(("prefer", _)) => Tls::Prefer,
            Some(("required", _)) => Tls::Required,
            Some(("verify", _)) => Tls::Verify,
            Some((other, span)) => {
                return Err(self.err(
                    span,
                    &field("tls"),
                    format!(
                        "unknown value {other:?}; expected disabled | prefer | required | verify"
                    ),
                ))
            }
        };
        let ca = raw.ca.map(|c| PathBuf::from(c.into_inner()));
        if tls == Tls::Verify && ca.is_none() {
            return Err(self.err(
                span,
                &field("ca"),
                "tls = \"verify\" needs ca = \"path/to/ca.pem\"",
            ));
        }
        let endpoint = Endpoint {
            host: raw.host.into_inner(),
            port,
            user: raw.user.into_inner(),
            password,
            server_id,
            tls,
            ca,
            kind,
            database,
        };
        Ok((endpoint, mapping))
    }

    fn selection(&self, raw: Spanned<RawSelect>) -> Result<Selection, JobError> {
        let raw = raw.into_inner();
        let db = raw.database.get_ref();
        if db.is_empty() {
            return Err(self.err(raw.database.span(), "select.database", "empty name"));
        }
        if is_system_database(db) {
            return Err(self.err(
                raw.database.span(),
                "select.database",
                format!("{db:?} is a system database and cannot be copied"),
            ));
        }
        let globs = |list: &[Spanned<String>], field: &str| -> Result<Vec<String>, JobError> {
            list.iter()
                .map(|g| {
                    globset::Glob::new(g.get_ref())
                        .map(|_| g.get_ref().clone())
                        .map_err(|e| self.err(g.span(), field, format!("bad pattern: {e}")))
                })
                .collect()
        };
        let tables = match &raw.tables {
            Some(t) if t.is_empty() => {
                return Err(self.err(
                    raw.database.span(),
                    "select.tables",
                    "an empty list selects nothing; omit `tables` to select every table",
                ))
            }
            Some(t) => Some(globs(t, "select.tables")?),
            None => None,
        };
        let exclude = globs(&raw.exclude, "select.exclude")?;
        let target_database = match raw.rename {
            Some(r) if r.get_ref().is_empty() => {
                return Err(self.err(r.span(), "select.rename", "empty name"))
            }
            Some(r) => r.into_inner(),
            None => db.clone(),
        };
        Ok(Selection {
            database: raw.database.into_inner(),
            tables,
            exclude,
            target_database,
        })
    }

    fn sink(&self, raw: Spanned<super::raw::RawSink>) -> Result<SinkSpec, JobError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let need = |v: Option<Spanned<String>>, f: &str| {
            v.map(Spanned::into_inner).ok_or_else(|| {
                self.err(
                    span.clone(),
                    f,
                    format!("missing for sink kind {:?}", raw.kind.get_ref()),
                )
            })
        };
        let template = |v: Option<Spanned<String>>, field: &str| -> Result<String, JobError> {
            let t = v
                .map(Spanned::into_inner)
                .unwrap_or_else(|| "ferry.{db}.{table}".into());
            if t.is_empty() || t.contains(char::is_whitespace) {
                return Err(self.err(span.clone(), field, format!("{t:?} is not a usable name")));
            }
            Ok(t)
        };
        let kind = match raw.kind.get_ref().as_str() {
            "jsonl" => SinkKind::Jsonl {
                path: need(raw.path, "sink.path")?,
                rotate_bytes: match raw.rotate_bytes {
                    Some(n) => self.int_in(&n, "sink.rotate_bytes", 4096, i64::MAX)? as u64,
                    None => 100 << 20,
                },
            },
            "nats" => SinkKind::Nats {
                url: need(raw.url, "sink.url")?,
                subject: template(raw.subject, "sink.subject")?,
                stream: raw
                    .stream
                    .map(Spanned::into_inner)
                    .unwrap_or_else(|| "FERRY".into()),
            },
            "kafka" => SinkKind::Kafka {
                url: need(raw.url, "sink.url")?,
                topic: template(raw.topic, "sink.topic")?,
                partitions: match raw.partitions {
                    Some(n) => self.int_in(&n, "sink.partitions", 1, 10_000)? as i32,
                    None => 1,
                },
            },
            other => {
                return Err(self.err(
                    raw.kind.span(),
                    "sink.kind",
                    format!("unknown sink {other:?}; expected jsonl | nats | kafka"),
                ))
            }
        };
        let exclude_columns = raw.exclude_columns.unwrap_or_default();
        for g in &exclude_columns {
            if let Err(e) = globset::Glob::new(g) {
                return Err(self.err(span.clone(), "sink.exclude_columns", format!("{g:?}: {e}")));
            }
        }
        Ok(SinkSpec {
            kind,
            snapshot: raw.snapshot.unwrap_or(false),
            ddl: raw.ddl.unwrap_or(false),
            exclude_columns,
        })
    }

    fn cdc_start(&self, s: &Spanned<String>) -> Result<CdcStart, JobError> {
        let v = s.get_ref().trim();
        if v == "auto" {
            return Ok(CdcStart::Auto);
        }
        if v == "now" {
            return Ok(CdcStart::Now);
        }
        if let Some(set) = v.strip_prefix("gtid:") {
            if set.trim().is_empty() {
                return Err(self.err(s.span(), "cdc.start", "empty GTID set"));
            }
            return Ok(CdcStart::Gtid(set.trim().to_string()));
        }
        if let Some((file, pos)) = v.rsplit_once(':') {
            if let Ok(pos) = pos.parse::<u64>() {
                if !file.is_empty() {
                    return Ok(CdcStart::FilePos {
                        file: file.to_string(),
                        pos,
                    });
                }
            }
        }
        Err(self.err(
            s.span(),
            "cdc.start",
            format!("{v:?} is not auto | now | \"FILE:POS\" | \"gtid:SET\""),
        ))
    }

    /// Table-name templates: each holds `{table}` once.
    fn table_templates(
        &self,
        list: Vec<Spanned<String>>,
        field: &str,
    ) -> Result<Vec<String>, JobError> {
        list.into_iter()
            .map(|t| {
                if t.get_ref().matches("{table}").count() != 1 || t.get_ref() == "{table}" {
                    return Err(self.err(
                        t.span(),
                        field,
                        format!(
                            "{:?} must contain {{table}} once, with something around it                              (e.g. \"_{{table}}_gho\")",
                            t.get_ref()
                        ),
                    ));
                }
                Ok(t.into_inner())
            })
            .collect()
    }

    fn int_in(&self, v: &Spanned<i64>, field: &str, min: i64, max: i64) -> Result<i64, JobError> {
        let n = *v.get_ref();
        if n < min || n > max {
            return Err(self.err(
                v.span(),
                field,
                format!("{n} is out of range {min}..={max}"),
            ));
        }
        Ok(n)
    }

    fn duration(&self, v: &Spanned<String>, field: &str) -> Result<Duration, JobError> {
        humantime::parse_duration(v.get_ref()).map_err(|e| {
            self.err(
                v.span(),
                field,
                format!(
                    "{:?} is not a duration like \"30s\" or \"1h\": {e}",
                    v.get_ref()
                ),
            )
        })
    }
}

pub(crate) fn is_system_database(db: &str) -> bool {
    matches!(
        db.to_ascii_lowercase().as_str(),
        "mysql" | "information_schema" | "performance_schema" | "sys"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "shop-copy"
mode = "full"

[source]
host = "127.0.0.1"
port = 3306
user = "ferry"
password_env = "SRC_PW"

[target]
host = "127.0.0.1"
port = 3307
user = "ferry"
password_file = "/run/secrets/dst"

[[select]]
database = "shop"
tables = ["customers", "order*"]
exclude = ["*_tmp"]
rename = "shop_copy"

[full]
threads = 2
chunk_rows = 500
"#;

    #[test]
    fn sinks_and_verify_options_are_validated() {
        let sub = |sink: &str| {
            format!(
                "name = \"s\"\nmode = \"subscribe\"\n[source]\nhost = \"h\"\nport = 1\nuser = \"u\"\n\
                 password_env = \"P\"\n[[select]]\ndatabase = \"shop\"\n[sink]\n{sink}\n"
            )
        };
        let job = parse_job(
            "s.toml",
            &sub("kind = \"kafka\"\nurl = \"k:9092\"\npartitions = 3\nsnapshot = true\nexclude_columns = [\"*.*.pw\"]"),
        )
        .expect("valid");
        let sink = job.sink.expect("sink");
        assert!(sink.snapshot && !sink.ddl);
        assert_eq!(
            sink.kind,
            SinkKind::Kafka {
                url: "k:9092".into(),
                topic: "ferry.{db}.{table}".into(),
                partitions: 3
            }
        );
        let e = parse_job(
            "s.toml",
            &sub("kind = \"kafka\"\nurl = \"k\"\npartitions = 0"),
        )
        .unwrap_err();
        assert_eq!(e.field, "sink.partitions");
        let e = parse_job("s.toml", &sub("kind = \"nats\"")).unwrap_err();
        assert_eq!(e.field, "sink.url");
        let e = parse_job(
            "s.toml",
            &sub("kind = \"jsonl\"\npath = \"-\"\nexclude_columns = [\"[\"]"),
        )
        .unwrap_err();
        assert_eq!(e.field, "sink.exclude_columns");
        let e = parse_job("g.toml", &format!("{GOOD}\n[verify]\nchunk_rows = 5\n")).unwrap_err();
        assert_eq!(e.field, "verify.chunk_rows");
        let job = parse_job(
            "g.toml",
            &format!("{GOOD}\n[verify]\nafter_full = \"count\"\nmax_diffs = 7\n"),
        )
        .expect("valid");
        assert_eq!(
            (job.verify.after_full, job.verify.max_diffs),
            (VerifyLevel::Count, 7)
        );
    }

    #[test]
    fn parses_a_good_job() {
        let job = parse_job("good.toml", GOOD).expect("valid");
        assert_eq!(job.name, "shop-copy");
        assert_eq!(job.mode, Mode::Full);
        assert_eq!(job.source.password, PasswordSource::Env("SRC_PW".into()));
        assert_eq!(job.full.threads, 2);
        assert_eq!(job.full.chunk_rows, 500);
        assert_eq!(job.select[0].target_database, "shop_copy");
        assert!(job.select[0].matches("orders"));
        assert!(job.select[0].matches("customers"));
        assert!(!job.select[0].matches("orders_tmp"));
        assert!(!job.select[0].matches("products"));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let text = GOOD.replace("threads = 2", "threds = 2");
        let e = parse_job("j.toml", &text).unwrap_err();
        assert_eq!(e.line, 24, "{e}");
        assert!(e.message.contains("unknown field `threds`"), "{e}");
        assert!(e.to_string().starts_with("j.toml:24:1"), "{e}");
    }

    #[test]
    fn literal_password_is_refused_without_echoing_it() {
        let text = GOOD.replace("password_env = \"SRC_PW\"", "password = \"hunter2\"");
        let e = parse_job("j.toml", &text).unwrap_err();
        assert_eq!(e.field, "source.password");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = parse_job("j.toml", "name = \"x\"\nmode = \n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (from, to, field) in [
            ("mode = \"full\"", "mode = \"fulll\"", "mode"),
            ("threads = 2", "threads = 0", "full.threads"),
            ("port = 3307", "port = 70000", "target.port"),
            ("name = \"shop-copy\"", "name = \"Shop Copy\"", "name"),
        ] {
            let e = parse_job("j.toml", &GOOD.replace(from, to)).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.line > 0, "{e}");
        }
    }

    #[test]
    fn cdc_start_forms() {
        let with = |s: &str| {
            parse_job("j.toml", &format!("{GOOD}\n[cdc]\nstart = \"{s}\"\n")).map(|j| j.cdc.start)
        };
        assert_eq!(with("auto").unwrap(), CdcStart::Auto);
        assert_eq!(with("now").unwrap(), CdcStart::Now);
        assert_eq!(
            with("binlog.000002:1234").unwrap(),
            CdcStart::FilePos {
                file: "binlog.000002".into(),
                pos: 1234
            }
        );
        assert_eq!(with("gtid:0-1-5").unwrap(), CdcStart::Gtid("0-1-5".into()));
        assert_eq!(with("yesterday").unwrap_err().field, "cdc.start");
    }

    #[test]
    fn online_schema_change_templates() {
        let with = |k: &str, v: &str| parse_job("j.toml", &format!("{GOOD}\n[cdc]\n{k} = [{v}]\n"));
        let j = with("shadow_tables", "\"_{table}_tmp\"").expect("valid");
        assert_eq!(j.cdc.shadow_tables, vec!["_{table}_tmp".to_string()]);
        assert_eq!(j.cdc.trash_tables, CdcOptions::default().trash_tables);
        for bad in ["\"_tmp\"", "\"{table}\"", "\"{table}_{table}\""] {
            let e = with("trash_tables", bad).unwrap_err();
            assert_eq!(e.field, "cdc.trash_tables", "{e}");
            assert!(e.message.contains("{table}"), "{e}");
        }
    }
}
