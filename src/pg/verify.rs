//! Verification across engines: row counts, then digests computed by
//! Ferry over one canonical text of each value after the type mapping.
//!
//! Both sides are streamed once; each row's key picks one of
//! [`BUCKETS`] buckets, and each bucket keeps a count and the wrapping sum
//! of its rows' hashes (a digest independent of row order, so the two
//! engines' collations and orders do not matter). Buckets that differ are
//! streamed again, their rows compared by key, and the differing rows
//! named: missing, extra, or different with the columns.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::{pin_mut, TryStreamExt};
use mysql_async::prelude::*;
use mysql_async::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::db::{qualified, quote_ident, Connector};
use crate::job::{JobSpec, Mapping};
use crate::model::{BinlogPos, DiffClass, KeyValue, VerifyDiff, VerifyTable};
use crate::source::position;

use super::conn::{query_err, PgConnector};
use super::load::LoadError;
use super::schema::PgTable;
use super::types::{push_copy, Enc, PgColumn};

/// Buckets a table's rows are digested in.
const BUCKETS: usize = 256;

/// Counts, or counts and digests (`checksum`), of each table; online
/// (`Some`) while the job's CDC runs.
pub async fn tables(
    job: &JobSpec,
    source: &Connector,
    target: &PgConnector,
    tables: &[PgTable],
    (checksum, online): (bool, Option<&Online<'_>>),
    cancel: &CancellationToken,
    say: &(dyn Fn(String) + Sync),
) -> Result<Vec<VerifyTable>, LoadError> {
    let mut src = source.connect().await?;
    let dst = target.connect().await?;
    let mut out = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(LoadError::Cancelled);
        }
        say(format!(
            "verifying {}/{}: {}",
            i + 1,
            tables.len(),
            t.source.id()
        ));
        let started = Instant::now();
        let mut v = VerifyTable {
            table: t.source.id(),
            target: format!("{}.{}", t.schema, t.source.name),
            source_rows: 0,
            target_rows: 0,
            chunks: 0,
            chunks_differing: 0,
            key_columns: key_columns(t),
            keyless: t.source.key.is_none(),
            diffs: Vec::new(),
            truncated: false,
            duration_ms: 0,
        };
        if checksum {
            let sides = Sides {
                job,
                source,
                dst: &dst,
                t,
                key_at: key_positions(t),
                online,
                cancel,
            };
            compare(&sides, &mut src, &mut v).await?;
        }
        if !checksum || online.is_some() {
            // Online, rows come and go during the scans: the counts are
            // those of a count of their own (rechecked as in count mode).
            (v.source_rows, v.target_rows) =
                counts(&mut src, source, &dst, t, online, cancel).await?;
        }
        v.duration_ms = started.elapsed().as_millis() as u64;
        out.push(v);
    }
    let _ = src.disconnect().await;
    Ok(out)
}

fn key_columns(t: &PgTable) -> Vec<String> {
    match &t.source.key {
        Some(k) => k.columns.clone(),
        None => t.columns.iter().map(|c| c.name.clone()).collect(),
    }
}

/// A row in canonical form: its key and its columns' canonical texts.
struct Row {
    key: String,
    columns: Vec<String>,
}

impl Row {
    fn hash(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.columns.hash(&mut h);
        h.finish()
    }

    fn bucket(&self) -> usize {
        bucket_of(&self.key)
    }
}

fn bucket_of(key: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % BUCKETS
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Digest {
    rows: u64,
    sum: u64,
}

/// Both sides' row counts; online, a difference is counted again after the
/// CDC caught up.
async fn counts(
    src: &mut mysql_async::Conn,
    source: &Connector,
    dst: &tokio_postgres::Client,
    t: &PgTable,
    online: Option<&Online<'_>>,
    cancel: &CancellationToken,
) -> Result<(u64, u64), LoadError> {
    let mut counted = (0, 0);
    for _ in 0..=online.map_or(0, |o| o.rounds) {
        let n: Option<u64> = src
            .query_first(format!(
                "SELECT COUNT(*) FROM {}",
                qualified(&t.source.db, &t.source.name)
            ))
            .await
            .map_err(source.query_err("counting rows"))?;
        if let Some(o) = online {
            o.catch_up(src, source, cancel).await?;
        }
        let row = dst
            .query_one(&format!("SELECT COUNT(*) FROM {}", t.qualified()), &[])
            .await
            .map_err(query_err(format!("counting {}", t.qualified())))?;
        counted = (
            n.unwrap_or(0),
            u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        );
        if counted.0 == counted.1 {
            break;
        }
    }
    Ok(counted)
}

/// A verification while the job's CDC runs: a difference is read again
/// (the source first, then the target once the CDC has applied past the
/// source's head) before it counts.
pub struct Online<'a> {
    pub applied: &'a watch::Receiver<Option<BinlogPos>>,
    /// Set when a recheck gave up waiting for the CDC.
    pub lag_note: &'a Mutex<Option<String>>,
    /// Rechecks of differing buckets, then of differing rows.
    pub rounds: usize,
    /// How long a recheck waits for the CDC.
    pub wait: Duration,
}

impl Online<'_> {
    async fn catch_up(
        &self,
        src: &mut mysql_async::Conn,
        source: &Connector,
        cancel: &CancellationToken,
    ) -> Result<(), LoadError> {
        tokio::select! {
            r = position::wait_applied(src, source, self.applied, self.wait) => {
                if let Some(head) = r? {
                    let note = position::not_applied_note(&head, self.wait);
                    warn!("{note}");
                    *self.lag_note.lock().unwrap_or_else(|p| p.into_inner()) = Some(note);
                }
                Ok(())
            }
            _ = cancel.cancelled() => Err(LoadError::Cancelled),
        }
    }
}

/// What one table is compared with.
struct Sides<'a> {
    job: &'a JobSpec,
    source: &'a Connector,
    dst: &'a tokio_postgres::Client,
    t: &'a PgTable,
    key_at: Vec<usize>,
    online: Option<&'a Online<'a>>,
    cancel: &'a CancellationToken,
}

/// Rows by key: canonical columns and copies.
type Rows = HashMap<String, (Vec<String>, u64)>;

impl Sides<'_> {
    /// Both sides' digests of the buckets `wanted` marks.
    async fn digests(
        &self,
        src: &mut mysql_async::Conn,
        wanted: &[bool],
    ) -> Result<([Digest; BUCKETS], [Digest; BUCKETS]), LoadError> {
        let mut a = [Digest::default(); BUCKETS];
        let mut b = [Digest::default(); BUCKETS];
        let (t, mapping, key_at) = (self.t, &self.job.mapping, &self.key_at);
        scan_source(src, self.source, t, &mut |values| {
            let r = source_row(&values, t, mapping, key_at);
            if wanted.get(r.bucket()).copied().unwrap_or(false) {
                add(&mut a, &r);
            }
            true
        })
        .await?;
        if let Some(o) = self.online {
            o.catch_up(src, self.source, self.cancel).await?;
        }
        scan_target(self.dst, t, key_at, &mut |r| {
            if wanted.get(r.bucket()).copied().unwrap_or(false) {
                add(&mut b, &r);
            }
            true
        })
        .await?;
        Ok((a, b))
    }

    /// The source's rows of the buckets `wanted` marks, by key (a keyless
    /// table's key is the whole row: copies are counted).
    async fn source_rows(
        &self,
        src: &mut mysql_async::Conn,
        wanted: &[bool],
    ) -> Result<Rows, LoadError> {
        let (t, mapping, key_at) = (self.t, &self.job.mapping, &self.key_at);
        let mut rows = Rows::new();
        scan_source(src, self.source, t, &mut |values| {
            let r = source_row(&values, t, mapping, key_at);
            if wanted.get(r.bucket()).copied().unwrap_or(false) {
                rows.entry(r.key).or_insert((r.columns, 0)).1 += 1;
            }
            true
        })
        .await?;
        Ok(rows)
    }

    async fn target_rows(&self, wanted: &[bool]) -> Result<Rows, LoadError> {
        let mut rows = Rows::new();
        scan_target(self.dst, self.t, &self.key_at, &mut |r| {
            if wanted.get(r.bucket()).copied().unwrap_or(false) {
                rows.entry(r.key).or_insert((r.columns, 0)).1 += 1;
            }
            true
        })
        .await?;
        Ok(rows)
    }

    /// The rows of the buckets `wanted` marks that differ. Online, the
    /// target is read once the CDC caught up with the source's first read,
    /// and a row counts only if the target holds neither the source's row
    /// as first read nor as read again after: a row that changed between
    /// the reads is not a difference.
    async fn differing_rows(
        &self,
        src: &mut mysql_async::Conn,
        wanted: &[bool],
    ) -> Result<HashMap<String, VerifyDiff>, LoadError> {
        let ours = self.source_rows(src, wanted).await?;
        if let Some(o) = self.online {
            o.catch_up(src, self.source, self.cancel).await?;
        }
        let theirs = self.target_rows(wanted).await?;
        let mut found = self.differences(&ours, &theirs);
        if self.online.is_some() && !found.is_empty() {
            let after = self.source_rows(src, wanted).await?;
            let still = self.differences(&after, &theirs);
            found.retain(|k, _| still.contains_key(k));
        }
        Ok(found)
    }

    /// The rows that differ, by key.
    fn differences(&self, ours: &Rows, theirs: &Rows) -> HashMap<String, VerifyDiff> {
        let key_at = &self.key_at;
        let mut out = HashMap::new();
        for (key, (cols, n)) in ours {
            let d = match theirs.get(key) {
                None => Some(diff(
                    self.t,
                    key_at,
                    cols,
                    DiffClass::Missing,
                    *n,
                    Vec::new(),
                )),
                Some((tcols, tn)) => {
                    let changed: Vec<String> = cols
                        .iter()
                        .zip(tcols)
                        .zip(&self.t.columns)
                        .filter(|((x, y), _)| x != y)
                        .map(|(_, c)| c.name.clone())
                        .collect();
                    if !changed.is_empty() {
                        Some(diff(self.t, key_at, cols, DiffClass::Different, 1, changed))
                    } else if n > tn {
                        Some(diff(
                            self.t,
                            key_at,
                            cols,
                            DiffClass::Missing,
                            n - tn,
                            Vec::new(),
                        ))
                    } else if tn > n {
                        Some(diff(
                            self.t,
                            key_at,
                            cols,
                            DiffClass::Extra,
                            tn - n,
                            Vec::new(),
                        ))
                    } else {
                        None
                    }
                }
            };
            if let Some(d) = d {
                out.insert(key.clone(), d);
            }
        }
        for (key, (cols, n)) in theirs {
            if !ours.contains_key(key) {
                out.insert(
                    key.clone(),
                    diff(self.t, key_at, cols, DiffClass::Extra, *n, Vec::new()),
                );
            }
        }
        out
    }
}

/// Digests of every bucket; online, differing buckets are read again (each
/// bucket's counts are those of its last read); the rows of those still
/// differing are compared, and online only rows differing every time are
/// reported.
async fn compare(
    sides: &Sides<'_>,
    src: &mut mysql_async::Conn,
    v: &mut VerifyTable,
) -> Result<(), LoadError> {
    let rounds = sides.online.map_or(0, |o| o.rounds);
    let (mut a, mut b) = sides.digests(src, &[true; BUCKETS]).await?;
    let mut differing: Vec<bool> = a.iter().zip(&b).map(|(x, y)| x != y).collect();
    for _ in 0..rounds {
        if !differing.contains(&true) {
            break;
        }
        let (a2, b2) = sides.digests(src, &differing).await?;
        let again = a.iter_mut().zip(b.iter_mut()).zip(a2.iter().zip(&b2));
        for (d, ((x, y), (x2, y2))) in differing.iter_mut().zip(again) {
            if *d {
                (*x, *y) = (*x2, *y2);
                *d = x != y;
            }
        }
    }
    v.source_rows = a.iter().map(|d| d.rows).sum();
    v.target_rows = b.iter().map(|d| d.rows).sum();
    v.chunks = BUCKETS as u64;
    v.chunks_differing = differing.iter().filter(|d| **d).count() as u64;
    if v.chunks_differing == 0 {
        return Ok(());
    }
    let mut found = sides.differing_rows(src, &differing).await?;
    for _ in 0..rounds {
        if found.is_empty() {
            break;
        }
        let again = sides.differing_rows(src, &differing).await?;
        found = again
            .into_iter()
            .filter(|(k, _)| found.contains_key(k))
            .collect();
    }
    if sides.online.is_some() {
        // Buckets whose rows all moved while read are not differing.
        let buckets: std::collections::HashSet<usize> =
            found.keys().map(|k| bucket_of(k)).collect();
        v.chunks_differing = buckets.len() as u64;
    }
    let mut found: Vec<(String, VerifyDiff)> = found.into_iter().collect();
    found.sort_by(|x, y| x.0.cmp(&y.0));
    let max = sides.job.verify.max_diffs;
    v.truncated = found.len() > max;
    v.diffs = found.into_iter().take(max).map(|(_, d)| d).collect();
    Ok(())
}

fn add(d: &mut [Digest; BUCKETS], r: &Row) {
    if let Some(x) = d.get_mut(r.bucket()) {
        x.rows += 1;
        x.sum = x.sum.wrapping_add(r.hash());
    }
}

fn diff(
    t: &PgTable,
    key_at: &[usize],
    cols: &[String],
    class: DiffClass,
    copies: u64,
    columns: Vec<String>,
) -> VerifyDiff {
    let number = |i: usize| t.columns.get(i).is_some_and(|c| c.enc == Enc::Number);
    VerifyDiff {
        class,
        key: key_at
            .iter()
            .map(|&i| match cols.get(i).map(String::as_str) {
                None | Some("\\N") => KeyValue::Null,
                // Integers shown as integers, as for a MySQL target.
                Some(s) if number(i) && s.parse::<i64>().is_ok() => {
                    KeyValue::Int(s.parse().unwrap_or_default())
                }
                Some(s) if number(i) && s.parse::<u64>().is_ok() => {
                    KeyValue::UInt(s.parse().unwrap_or_default())
                }
                Some(s) => KeyValue::Bytes(s.as_bytes().to_vec()),
            })
            .collect(),
        columns,
        copies,
    }
}

/// Streams the source's rows of `t`, each as its values.
async fn scan_source(
    src: &mut mysql_async::Conn,
    source: &Connector,
    t: &PgTable,
    each: &mut (dyn FnMut(Vec<Value>) -> bool + Send),
) -> Result<(), LoadError> {
    let names: Vec<String> = t.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let sql = format!(
        "SELECT {} FROM {}",
        names.join(", "),
        qualified(&t.source.db, &t.source.name)
    );
    let mut result = src
        .exec_iter(sql, ())
        .await
        .map_err(source.query_err(format!("reading {}", t.source.id())))?;
    while let Some(row) = result
        .next()
        .await
        .map_err(source.query_err(format!("reading {}", t.source.id())))?
    {
        if !each(row.unwrap()) {
            break;
        }
    }
    Ok(())
}

/// A source row in canonical form.
fn source_row(values: &[Value], t: &PgTable, mapping: &Mapping, key_at: &[usize]) -> Row {
    let columns: Vec<String> = values
        .iter()
        .zip(&t.columns)
        .map(|(v, c)| source_text(v, c, mapping))
        .collect();
    Row {
        key: key_of(&columns, key_at),
        columns,
    }
}

/// Where the key's columns are among the table's (every column of a
/// keyless table: the row is its key).
fn key_positions(t: &PgTable) -> Vec<usize> {
    match &t.source.key {
        Some(k) => k
            .columns
            .iter()
            .filter_map(|c| t.columns.iter().position(|x| x.name == *c))
            .collect(),
        None => (0..t.columns.len()).collect(),
    }
}

async fn scan_target(
    dst: &tokio_postgres::Client,
    t: &PgTable,
    key_at: &[usize],
    each: &mut (dyn FnMut(Row) -> bool + Send),
) -> Result<(), LoadError> {
    let names: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("{}::text", super::types::ident(&c.name)))
        .collect();
    let sql = format!("SELECT {} FROM {}", names.join(", "), t.qualified());
    let rows = dst
        .query_raw(&sql, std::iter::empty::<i32>())
        .await
        .map_err(query_err(format!("reading {}", t.qualified())))?;
    pin_mut!(rows);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(query_err(format!("reading {}", t.qualified())))?
    {
        let columns: Vec<String> = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| target_text(row.get::<_, Option<&str>>(i), c))
            .collect();
        let key = key_of(&columns, key_at);
        if !each(Row { key, columns }) {
            break;
        }
    }
    Ok(())
}

fn key_of(columns: &[String], key_at: &[usize]) -> String {
    let parts: Vec<&str> = key_at
        .iter()
        .filter_map(|i| columns.get(*i).map(String::as_str))
        .collect();
    parts.join("\u{1f}")
}

/// The canonical text of a source value: as written into PostgreSQL, then
/// read back as PostgreSQL shows it.
fn source_text(v: &Value, c: &PgColumn, mapping: &Mapping) -> String {
    match copy_text(v, c, mapping) {
        Some(text) => canonical(&text, c),
        // What the load would have refused: it cannot match.
        None => format!("unfit:{v:?}"),
    }
}

/// `v` as the load writes it (`\N` for NULL), unescaped; `None` for a
/// value the mapping refuses.
fn copy_text(v: &Value, c: &PgColumn, mapping: &Mapping) -> Option<String> {
    let mut buf = Vec::new();
    push_copy(&mut buf, v, c.enc, mapping).ok()?;
    Some(unescape_copy(&buf))
}

/// The canonical text of what PostgreSQL holds.
fn target_text(v: Option<&str>, c: &PgColumn) -> String {
    match v {
        None => "\\N".into(),
        Some(s) => canonical(s, c),
    }
}

/// One spelling of a value of `c` however it came: floats and intervals
/// by value, fractions of seconds without trailing zeros, JSON with its
/// keys sorted, CHAR without its padding.
fn canonical(s: &str, c: &PgColumn) -> String {
    if s == "\\N" {
        return s.to_string();
    }
    match c.enc {
        Enc::Float if c.sql_type == "real" => s
            .parse::<f32>()
            .map(|f| f.to_string())
            .unwrap_or_else(|_| s.to_string()),
        Enc::Float => s
            .parse::<f64>()
            .map(|f| f.to_string())
            .unwrap_or_else(|_| s.to_string()),
        Enc::Timestamp | Enc::TimestampTz => trim_fraction(s),
        Enc::Interval => interval(s).unwrap_or_else(|| s.to_string()),
        Enc::Text if c.sql_type == "jsonb" => serde_json::from_str::<serde_json::Value>(s)
            .map(|j| sorted(&j).to_string())
            .unwrap_or_else(|_| s.to_string()),
        Enc::Text if c.sql_type.starts_with("character(") => s.trim_end_matches(' ').to_string(),
        Enc::Bytea => s.trim_start_matches("\\x").to_string(),
        // PostGIS shows hex EWKB; a column left bytea (PostGIS installed
        // after the load) holds MySQL's bytes.
        Enc::Geometry => match s.strip_prefix("\\x") {
            Some(h) => unhex(h)
                .and_then(|b| super::types::ewkb_hex(&b))
                .unwrap_or_else(|| s.to_string()),
            None => s.to_ascii_uppercase(),
        },
        Enc::Bool => match s {
            "true" => "t".into(),
            "false" => "f".into(),
            other => other.to_string(),
        },
        _ => s.to_string(),
    }
}

fn unhex(h: &str) -> Option<Vec<u8>> {
    (0..h.len())
        .step_by(2)
        .map(|i| h.get(i..i + 2).and_then(|x| u8::from_str_radix(x, 16).ok()))
        .collect()
}

fn sorted(j: &serde_json::Value) -> serde_json::Value {
    match j {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                if let Some(v) = m.get(k) {
                    out.insert(k.clone(), sorted(v));
                }
            }
            serde_json::Value::Object(out)
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// `12:00:01.500000+00` → `12:00:01.5+00`.
fn trim_fraction(s: &str) -> String {
    let Some(dot) = s.rfind('.') else {
        return s.to_string();
    };
    let (head, rest) = s.split_at(dot);
    let digits: String = rest
        .chars()
        .skip(1)
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let tail = rest.get(1 + digits.len()..).unwrap_or_default();
    let digits = digits.trim_end_matches('0');
    if digits.is_empty() {
        format!("{head}{tail}")
    } else {
        format!("{head}.{digits}{tail}")
    }
}

/// `[-]H:MM:SS[.f]` as signed microseconds.
fn interval(s: &str) -> Option<String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let mut parts = body.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec = parts.next()?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let sec: i64 = whole.parse().ok()?;
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    let total = ((h * 60 + m) * 60 + sec) * 1_000_000 + micros;
    Some(if neg { -total } else { total }.to_string())
}

/// COPY text back to the value: `\\` `\t` `\n` `\r` unescaped.
fn unescape_copy(b: &[u8]) -> String {
    if b == b"\\N" {
        return "\\N".into();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = b.iter();
    while let Some(&c) = i.next() {
        if c == b'\\' {
            match i.next() {
                Some(b't') => out.push(b'\t'),
                Some(b'n') => out.push(b'\n'),
                Some(b'r') => out.push(b'\r'),
                Some(&o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `--repair` made of a run: the statements per table.
pub struct RepairPlan {
    /// (`db.table` on the source, statements).
    pub tables: Vec<(String, Vec<String>)>,
}

/// The statements that make PostgreSQL equal to the source for the rows
/// `results` name: a row missing there is inserted, a changed one updated
/// (its columns but the key), an extra one deleted (keyless tables: one
/// INSERT per missing copy, extra copies deleted by `ctid`). The source is
/// streamed once per table for the rows' current values.
pub async fn repair_plan(
    job: &JobSpec,
    source: &Connector,
    tables: &[PgTable],
    results: &[VerifyTable],
) -> Result<RepairPlan, LoadError> {
    let mut src = source.connect().await?;
    let mut out = Vec::new();
    for r in results.iter().filter(|r| !r.diffs.is_empty()) {
        let Some(t) = tables.iter().find(|t| t.source.id() == r.table) else {
            continue;
        };
        let key_at = key_positions(t);
        let wanted: HashMap<String, &VerifyDiff> =
            r.diffs.iter().map(|d| (diff_key(d), d)).collect();
        // The source's current values of those rows, as SQL literals.
        let mut rows: HashMap<String, Vec<String>> = HashMap::new();
        scan_source(&mut src, source, t, &mut |values| {
            let key = source_row(&values, t, &job.mapping, &key_at).key;
            if wanted.contains_key(&key) {
                rows.insert(key, literals(&values, t, &job.mapping));
            }
            true
        })
        .await?;
        let mut statements = Vec::new();
        for (key, d) in &wanted {
            let cond = key_condition(t, &key_at, d);
            match (d.class, rows.get(key)) {
                (DiffClass::Extra, _) | (_, None) if t.source.key.is_some() => {
                    statements.push(format!("DELETE FROM {} WHERE {cond}", t.qualified()));
                }
                (DiffClass::Extra, _) | (_, None) => statements.push(format!(
                    "DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM {t} WHERE {cond} LIMIT {})",
                    d.copies,
                    t = t.qualified()
                )),
                (DiffClass::Different, Some(lits)) if t.source.key.is_some() => {
                    let sets: Vec<String> = t
                        .columns
                        .iter()
                        .zip(lits)
                        .enumerate()
                        .filter(|(i, _)| !key_at.contains(i))
                        .map(|(_, (c, v))| format!("{} = {v}", super::types::ident(&c.name)))
                        .collect();
                    statements.push(format!(
                        "UPDATE {} SET {} WHERE {cond}",
                        t.qualified(),
                        sets.join(", ")
                    ));
                }
                (_, Some(lits)) => {
                    let cols: Vec<String> = t
                        .columns
                        .iter()
                        .map(|c| super::types::ident(&c.name))
                        .collect();
                    let insert = format!(
                        "INSERT INTO {} ({}) VALUES ({})",
                        t.qualified(),
                        cols.join(", "),
                        lits.join(", ")
                    );
                    let copies = if t.source.key.is_some() { 1 } else { d.copies };
                    for _ in 0..copies {
                        statements.push(insert.clone());
                    }
                }
            }
        }
        statements.sort();
        out.push((r.table.clone(), statements));
    }
    let _ = src.disconnect().await;
    Ok(RepairPlan { tables: out })
}

/// A differing row's key as [`compare`] built it.
fn diff_key(d: &VerifyDiff) -> String {
    let parts: Vec<String> = d.key.iter().map(key_text).collect();
    parts.join("\u{1f}")
}

/// A key value as the canonical text it was made from.
fn key_text(k: &KeyValue) -> String {
    match k {
        KeyValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        KeyValue::Int(i) => i.to_string(),
        KeyValue::UInt(u) => u.to_string(),
        _ => "\\N".into(),
    }
}

/// `key = value AND ...` on PostgreSQL, each column compared through the
/// same canonical text the verification used.
fn key_condition(t: &PgTable, key_at: &[usize], d: &VerifyDiff) -> String {
    let parts: Vec<String> = key_at
        .iter()
        .zip(&d.key)
        .filter_map(|(i, k)| t.columns.get(*i).map(|c| (c, k)))
        .map(|(c, k)| {
            let col = super::types::ident(&c.name);
            let text = key_text(k);
            if text == "\\N" {
                return format!("{col} IS NULL");
            }
            let expr = match c.enc {
                Enc::Bytea => format!("encode({col}, 'hex')"),
                Enc::Interval => format!("(EXTRACT(EPOCH FROM {col}) * 1000000)::bigint::text"),
                Enc::Bool => format!("(CASE WHEN {col} THEN 't' ELSE 'f' END)"),
                _ => format!("{col}::text"),
            };
            format!("{expr} = {}", super::types::literal(&text))
        })
        .collect();
    parts.join(" AND ")
}

/// A source row's values as PostgreSQL literals (`'…'::type`, or NULL).
fn literals(values: &[Value], t: &PgTable, mapping: &Mapping) -> Vec<String> {
    values
        .iter()
        .zip(&t.columns)
        .map(|(v, c)| match copy_text(v, c, mapping) {
            Some(text) if text != "\\N" => {
                format!("{}::{}", super::types::literal(&text), c.sql_type)
            }
            _ => "NULL".into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_meet() {
        assert_eq!(
            trim_fraction("2024-01-01 00:00:01.500000+00"),
            "2024-01-01 00:00:01.5+00"
        );
        assert_eq!(
            trim_fraction("2024-01-01 00:00:01.000000"),
            "2024-01-01 00:00:01"
        );
        assert_eq!(interval("838:59:59"), interval("838:59:59.000000"));
        assert_eq!(interval("01:02:03.0005"), interval("1:02:03.000500"));
        assert_eq!(interval("-838:59:59").as_deref(), Some("-3020399000000"));
        assert_eq!(unescape_copy(b"a\\tb\\\\c"), "a\tb\\c");
        assert_eq!(
            sorted(&serde_json::json!({"k": 1, "a": {"z": 1, "b": 2}})).to_string(),
            r#"{"a":{"b":2,"z":1},"k":1}"#
        );
    }
}
