//! Verification: does the target hold what the source holds?
//!
//! Per table, the same key ranges are reduced on both servers to a row
//! count and an XOR of per-row CRC32s of a canonical row encoding (keyless
//! tables add a SUM, so they compare as multisets): the servers do the
//! work, no rows travel. A range that differs is split on the key
//! (bisection) down to a few hundred rows, which are fetched from both
//! sides and compared column by column: each differing row is classified
//! missing, extra or different, with the differing columns named.
//!
//! Online (the job's CDC running), a difference is only reported once it
//! survives rechecks: the source is read first, then the check waits until
//! the CDC has applied past the source's binlog head at that moment, then
//! the target is read. Lag alone therefore never raises an alarm.
//!
//! Every run is stored in the state ([`VerifyRun`]).

mod compare;
mod counts;
pub mod repair;
mod report;
mod table_sql;

pub(crate) use compare::diff_rows;
use compare::{diff_multiset, first_u64, sum_of, text, Sum};
pub use counts::counts;
pub use report::{render_key, summary, to_proto};
use table_sql::Range;
pub(crate) use table_sql::{Side, TableSql};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Params, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::{Catalog, Table};
use crate::db::{quote_ident, Connector, DbError};
use crate::full::key_bounds;
use crate::job::{JobSpec, VerifyLevel};
use crate::model::BinlogPos;
use crate::model::RateLimit;
use crate::model::{now_ms, KeyValue, VerifyDiff, VerifyRun, VerifyTable};
use crate::source::position;
use crate::state::{StateError, Store};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the job has no target (mode = \"subscribe\"); nothing to verify")]
    NoTarget,
    #[error("no selected table matches {0}")]
    NoTables(String),
    #[error("writing the repair file {file}: {source}")]
    RepairFile {
        file: String,
        source: std::io::Error,
    },
    #[error("a verification of {0} is already running")]
    AlreadyRunning(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Postgresql(String),
}

/// Rechecks of differing rows while the CDC runs, before they are reported.
const ROUNDS: usize = 3;
/// Rechecks of a differing range before it is narrowed (each waits for the
/// CDC; a range still differing is narrowed, and its rows rechecked).
const RANGE_ROUNDS: usize = 1;
/// How long a recheck waits for the CDC to apply past the source's head.
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);
/// Ranges with at most this many rows (on either side) are compared row by row.
const LEAF_ROWS: u64 = 256;
/// Buckets a keyless table is split into when its checksums differ.
const BUCKETS: u32 = 64;

/// What one verification run compares.
#[derive(Debug, Clone)]
pub struct Options {
    pub level: VerifyLevel,
    /// `db.table` or `table` names (globs); empty = every selected table.
    pub tables: Vec<String>,
    /// What started it: "after_full", "every", "command".
    pub trigger: String,
}

/// Compares a job's source and target.
pub struct Verifier {
    job: JobSpec,
    source: Connector,
    target: Connector,
    store: Arc<Store>,
    /// The job's CDC, when it runs: the source position up to which
    /// everything read has been applied. `None` = offline.
    caught_up: Option<watch::Receiver<Option<BinlogPos>>>,
    cancel: CancellationToken,
    /// What it is doing now, for status.
    progress: Arc<Mutex<Option<String>>>,
    /// Set when a recheck gave up waiting for the CDC.
    lag_note: Mutex<Option<String>>,
}

impl Verifier {
    pub fn new(job: JobSpec, store: Arc<Store>) -> Result<Verifier, VerifyError> {
        let target = job.target.as_ref().ok_or(VerifyError::NoTarget)?;
        Ok(Verifier {
            source: Connector::new(&job.source, crate::db::Role::Source),
            target: Connector::new(target, crate::db::Role::Target),
            job,
            store,
            caught_up: None,
            cancel: CancellationToken::new(),
            progress: Arc::default(),
            lag_note: Mutex::new(None),
        })
    }

    /// Online: differences are rechecked after the CDC behind `caught_up`
    /// has applied past the source's head.
    pub fn online(mut self, caught_up: watch::Receiver<Option<BinlogPos>>) -> Self {
        self.caught_up = Some(caught_up);
        self
    }

    pub fn cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    pub fn progress(mut self, progress: Arc<Mutex<Option<String>>>) -> Self {
        self.progress = progress;
        self
    }
}

/// One source and one target session.
struct Worker {
    src: Conn,
    tgt: Conn,
}

impl Verifier {
    /// The target, when it is PostgreSQL.
    fn postgresql(&self) -> Option<&crate::job::Endpoint> {
        self.job
            .target
            .as_ref()
            .filter(|t| t.kind == crate::job::ServerKind::Postgresql)
    }

    fn is_online(&self) -> bool {
        self.caught_up.is_some()
    }

    fn say(&self, what: String) {
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
    }

    /// Verifies the job's selected tables (or those `opts.tables` names),
    /// stores the run and returns it. A server error ends the run early;
    /// the run is stored with the error and what it had compared.
    pub async fn run(&self, opts: &Options) -> Result<VerifyRun, VerifyError> {
        let mut run = VerifyRun {
            started_ms: now_ms(),
            finished_ms: 0,
            level: match opts.level {
                VerifyLevel::Count => "count",
                _ => "checksum",
            }
            .into(),
            trigger: opts.trigger.clone(),
            online: self.is_online(),
            tables: Vec::new(),
            error: None,
            note: None,
            repair: None,
        };
        let result = self.tables(opts, &mut run).await;
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = None;
        match result {
            Ok(()) => {}
            Err(VerifyError::NoTables(t)) => return Err(VerifyError::NoTables(t)),
            Err(e) => run.error = Some(e.to_string()),
        }
        run.finished_ms = now_ms();
        self.store.put_verify_run(&self.job.name, &run)?;
        info!(
            job = %self.job.name,
            ok = run.ok(),
            tables = run.tables.len(),
            "verification finished"
        );
        Ok(run)
    }

    async fn tables(&self, opts: &Options, run: &mut VerifyRun) -> Result<(), VerifyError> {
        let mut catalog = Catalog::read(&self.job, &self.source).await?;
        let tables = select(&catalog.tables, &opts.tables)?;
        if let Some(t) = self.postgresql() {
            catalog.tables = tables.into_iter().cloned().collect();
            let target = crate::pg::PgConnector::new(t);
            let job = crate::pg::conn::with_postgis(&self.job, &target)
                .await
                .map_err(|e| VerifyError::Postgresql(e.to_string()))?;
            let pg_tables = crate::pg::schema::read(&job, &self.source, &catalog).await?;
            let checksum = opts.level != VerifyLevel::Count;
            let say = |s: String| self.say(s);
            let online = self
                .caught_up
                .as_ref()
                .map(|applied| crate::pg::verify::Online {
                    applied,
                    lag_note: &self.lag_note,
                    rounds: ROUNDS,
                    wait: CATCH_UP_WAIT,
                });
            let results = crate::pg::verify::tables(
                &job,
                &self.source,
                &target,
                &pg_tables,
                (checksum, online.as_ref()),
                &self.cancel,
                &say,
            )
            .await
            .map_err(|e| match e {
                crate::pg::load::LoadError::Cancelled => VerifyError::Cancelled,
                e => VerifyError::Postgresql(e.to_string()),
            })?;
            run.tables.extend(results);
            run.note = lock(&self.lag_note).clone();
            return Ok(());
        }
        let mut w = Worker {
            src: self.source.connect().await?,
            tgt: self.target.connect().await?,
        };
        let limit = Arc::new(RateLimit::new(self.job.verify.rows_per_sec));
        let total = tables.len();
        for (i, t) in tables.into_iter().enumerate() {
            if self.cancel.is_cancelled() {
                return Err(VerifyError::Cancelled);
            }
            self.say(format!("verifying {}/{total}: {}", i + 1, t.id()));
            let result = match opts.level {
                VerifyLevel::Count => self.count_table(&mut w, t).await,
                _ => self.checksum_table(t, &limit).await,
            };
            match result {
                Ok(r) => run.tables.push(r),
                Err(e) => return Err(e),
            }
            if let Some(n) = self.lag_note.lock().ok().and_then(|n| n.clone()) {
                run.note = Some(n);
            }
        }
        let _ = w.src.disconnect().await;
        let _ = w.tgt.disconnect().await;
        Ok(())
    }
}

/// What one chunk came to.
#[derive(Default)]
struct Acc {
    source_rows: u64,
    target_rows: u64,
    chunks: u64,
    differing: u64,
    diffs: Vec<VerifyDiff>,
    truncated: bool,
}

impl Verifier {
    /// Count mode: rows on each side; online, a difference is rechecked.
    async fn count_table(&self, w: &mut Worker, t: &Table) -> Result<VerifyTable, VerifyError> {
        let started = Instant::now();
        let ts = TableSql::new(t);
        let count = |side| format!("SELECT COUNT(*) FROM {}", ts.name(side));
        let mut round = 0;
        let (s, tg) = loop {
            let ordered = round > 0;
            let (a, b) = self
                .both(
                    w,
                    count(Side::Source),
                    count(Side::Target),
                    Vec::new(),
                    ordered,
                )
                .await?;
            let (s, tg) = (first_u64(&a), first_u64(&b));
            if s == tg || !self.is_online() || round == ROUNDS {
                break (s, tg);
            }
            round += 1;
        };
        Ok(self.table_result(
            &ts,
            started,
            Acc {
                source_rows: s,
                target_rows: tg,
                ..Acc::default()
            },
        ))
    }

    fn table_result(&self, ts: &TableSql<'_>, started: Instant, acc: Acc) -> VerifyTable {
        VerifyTable {
            table: ts.table.id(),
            target: format!("{}.{}", ts.table.target_db, ts.table.name),
            source_rows: acc.source_rows,
            target_rows: acc.target_rows,
            chunks: acc.chunks,
            chunks_differing: acc.differing,
            key_columns: ts.key_cols.clone(),
            keyless: ts.keyless(),
            diffs: acc.diffs,
            truncated: acc.truncated,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// Checksum mode: every chunk on both sides by `[verify] threads`
    /// workers; differing chunks narrowed to rows.
    async fn checksum_table(
        &self,
        t: &Table,
        limit: &RateLimit,
    ) -> Result<VerifyTable, VerifyError> {
        let started = Instant::now();
        let ts = TableSql::new(t);
        let ranges = self.plan(&ts).await?;
        let chunks = ranges.len();
        let queue = Mutex::new(VecDeque::from(ranges));
        let acc = Mutex::new(Acc::default());
        let threads = self.job.verify.threads.clamp(1, chunks.max(1));
        let workers = (0..threads).map(|_| self.chunk_worker(&ts, &queue, &acc, limit, chunks));
        futures_util::future::try_join_all(workers).await?;
        let mut acc = acc.into_inner().unwrap_or_else(|p| p.into_inner());
        acc.diffs.sort_by(|a, b| {
            let k = |d: &VerifyDiff| postcard::to_stdvec(&d.key).unwrap_or_default();
            k(a).cmp(&k(b))
        });
        Ok(self.table_result(&ts, started, acc))
    }

    async fn chunk_worker(
        &self,
        ts: &TableSql<'_>,
        queue: &Mutex<VecDeque<Range>>,
        acc: &Mutex<Acc>,
        limit: &RateLimit,
        chunks: usize,
    ) -> Result<(), VerifyError> {
        let mut w = Worker {
            src: self.source.connect().await?,
            tgt: self.target.connect().await?,
        };
        loop {
            let Some(r) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                break;
            };
            if self.cancel.is_cancelled() {
                return Err(VerifyError::Cancelled);
            }
            limit.acquire(self.job.verify.chunk_rows).await;
            self.chunk(&mut w, ts, &r, acc).await?;
            let done = lock(acc).chunks;
            self.say(format!(
                "verifying {}: chunk {done}/{chunks}",
                ts.table.id()
            ));
        }
        let _ = w.src.disconnect().await;
        let _ = w.tgt.disconnect().await;
        Ok(())
    }

    /// Checks one chunk; a difference that survives the rechecks is
    /// narrowed to rows (while the table's budget of named rows lasts).
    async fn chunk(
        &self,
        w: &mut Worker,
        ts: &TableSql<'_>,
        r: &Range,
        acc: &Mutex<Acc>,
    ) -> Result<(), VerifyError> {
        let (mut s, mut t) = self.checksum_both(w, ts, r, false).await?;
        let mut round = 0;
        while s != t && self.is_online() && round < RANGE_ROUNDS {
            (s, t) = self.checksum_both(w, ts, r, true).await?;
            round += 1;
        }
        let mut diffs = Vec::new();
        let mut truncated = false;
        if s != t {
            let budget = self
                .job
                .verify
                .max_diffs
                .saturating_sub(lock(acc).diffs.len());
            if budget == 0 {
                truncated = true;
            } else {
                (diffs, truncated) = match ts.keyless() {
                    true => self.narrow_keyless(w, ts, budget).await?,
                    false => {
                        self.narrow(w, ts, r.clone(), s.rows, t.rows, budget)
                            .await?
                    }
                };
                diffs = self.confirm(w, ts, diffs).await?;
            }
        }
        let mut a = lock(acc);
        a.chunks += 1;
        if diffs.is_empty() && !truncated {
            // Equal, or equal row by row once the CDC caught up.
            a.source_rows += s.rows;
            a.target_rows += if s == t { t.rows } else { s.rows };
        } else {
            a.source_rows += s.rows;
            a.target_rows += t.rows;
            a.differing += 1;
            a.truncated |= truncated;
            let room = self.job.verify.max_diffs.saturating_sub(a.diffs.len());
            if diffs.len() > room {
                a.truncated = true;
            }
            a.diffs.extend(diffs.into_iter().take(room));
        }
        Ok(())
    }

    async fn checksum_both(
        &self,
        w: &mut Worker,
        ts: &TableSql<'_>,
        r: &Range,
        ordered: bool,
    ) -> Result<(Sum, Sum), VerifyError> {
        let (cond, params) = ts.range(r);
        let (s, t) = self
            .both(
                w,
                ts.checksum_sql(Side::Source, &cond),
                ts.checksum_sql(Side::Target, &cond),
                params,
                ordered,
            )
            .await?;
        Ok((sum_of(&s), sum_of(&t)))
    }

    /// Runs a query on both sides: at once, or (`ordered`, online) on the
    /// source first and on the target once the CDC has applied past the
    /// source's head, so replication lag cannot make them differ.
    async fn both(
        &self,
        w: &mut Worker,
        src_sql: String,
        tgt_sql: String,
        params: Vec<Value>,
        ordered: bool,
    ) -> Result<(Vec<Vec<Value>>, Vec<Vec<Value>>), VerifyError> {
        if ordered && self.is_online() {
            let s = fetch(&mut w.src, &self.source, src_sql, params.clone()).await?;
            self.catch_up(&mut w.src).await?;
            let t = fetch(&mut w.tgt, &self.target, tgt_sql, params).await?;
            Ok((s, t))
        } else {
            let (s, t) = tokio::join!(
                fetch(&mut w.src, &self.source, src_sql, params.clone()),
                fetch(&mut w.tgt, &self.target, tgt_sql, params)
            );
            Ok((s?, t?))
        }
    }

    /// The rows matching `cond` on both sides (the source first, online).
    async fn rows_both(
        &self,
        w: &mut Worker,
        ts: &TableSql<'_>,
        cond: &str,
        params: Vec<Value>,
    ) -> Result<(Vec<Vec<Value>>, Vec<Vec<Value>>), VerifyError> {
        let (src, tgt) = (
            ts.rows_sql(Side::Source, cond),
            ts.rows_sql(Side::Target, cond),
        );
        self.both(w, src, tgt, params, true).await
    }

    /// Waits until the CDC has applied everything up to the source's head
    /// (as of now), at most [`CATCH_UP_WAIT`].
    async fn catch_up(&self, src: &mut Conn) -> Result<(), VerifyError> {
        let Some(rx) = &self.caught_up else {
            return Ok(());
        };
        tokio::select! {
            r = position::wait_applied(src, &self.source, rx, CATCH_UP_WAIT) => {
                if let Some(head) = r? {
                    let note = position::not_applied_note(&head, CATCH_UP_WAIT);
                    warn!("{note}");
                    *lock(&self.lag_note) = Some(note);
                }
            }
            _ = self.cancel.cancelled() => return Err(VerifyError::Cancelled),
        }
        Ok(())
    }

    /// Bisects a differing range on the key down to ranges of at most
    /// [`LEAF_ROWS`] rows, compared row by row. Returns the differences
    /// (at most `budget`) and whether there were more.
    async fn narrow(
        &self,
        w: &mut Worker,
        ts: &TableSql<'_>,
        r: Range,
        sr: u64,
        tr: u64,
        budget: usize,
    ) -> Result<(Vec<VerifyDiff>, bool), VerifyError> {
        let mut out = Vec::new();
        let mut stack = vec![(r, sr, tr)];
        while let Some((r, sr, tr)) = stack.pop() {
            if self.cancel.is_cancelled() {
                return Err(VerifyError::Cancelled);
            }
            if out.len() >= budget {
                out.truncate(budget);
                return Ok((out, true));
            }
            let n = sr.max(tr);
            let side = if sr >= tr { Side::Source } else { Side::Target };
            let mid = match n > LEAF_ROWS {
                true => self.key_at(w, ts, &r, side, n / 2).await?,
                false => None,
            };
            let Some(mid) = mid else {
                let (cond, params) = ts.range(&r);
                let (s, t) = self.rows_both(w, ts, &cond, params).await?;
                out.extend(diff_rows(ts, s, t));
                continue;
            };
            let halves = [
                Range {
                    lo: r.lo.clone(),
                    hi: Some(mid.clone()),
                },
                Range {
                    lo: Some(mid),
                    hi: r.hi,
                },
            ];
            for h in halves {
                let (a, b) = self.checksum_both(w, ts, &h, true).await?;
                if a != b {
                    stack.push((h, a.rows, b.rows));
                }
            }
        }
        let more = out.len() > budget;
        out.truncate(budget);
        Ok((out, more))
    }

    /// The key `offset` rows into range `r` on one side.
    async fn key_at(
        &self,
        w: &mut Worker,
        ts: &TableSql<'_>,
        r: &Range,
        side: Side,
        offset: u64,
    ) -> Result<Option<Vec<KeyValue>>, VerifyError> {
        let (cond, mut params) = ts.range(r);
        let cols: Vec<String> = ts.key_cols.iter().map(|c| quote_ident(c)).collect();
        let sql = format!(
            "SELECT {} FROM {}{} WHERE {cond}{} LIMIT 1 OFFSET ?",
            cols.join(", "),
            ts.name(side),
            ts.force,
            ts.order
        );
        params.push(Value::UInt(offset));
        let (conn, connector) = match side {
            Side::Source => (&mut w.src, &self.source),
            Side::Target => (&mut w.tgt, &self.target),
        };
        let rows = fetch(conn, connector, sql, params).await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|r| r.into_iter().map(KeyValue::from).collect()))
    }

    /// A keyless table: rows bucketed by their hash, and the rows of the
    /// buckets that differ compared as multisets.
    async fn narrow_keyless(
        &self,
        w: &mut Worker,
        ts: &TableSql<'_>,
        budget: usize,
    ) -> Result<(Vec<VerifyDiff>, bool), VerifyError> {
        let buckets = |side| {
            format!(
                "SELECT {h} % {BUCKETS}, COUNT(*), BIT_XOR({h}), SUM({h}) FROM {} GROUP BY 1",
                ts.name(side),
                h = ts.hash
            )
        };
        let (s, t) = self
            .both(
                w,
                buckets(Side::Source),
                buckets(Side::Target),
                Vec::new(),
                true,
            )
            .await?;
        let key = |rows: Vec<Vec<Value>>| -> HashMap<u64, Vec<String>> {
            rows.into_iter()
                .map(|r| {
                    let b = first_u64(std::slice::from_ref(&r));
                    (b, r.iter().skip(1).map(text).collect())
                })
                .collect()
        };
        let (s, t) = (key(s), key(t));
        let mut differ: Vec<u64> = (0..u64::from(BUCKETS))
            .filter(|b| s.get(b) != t.get(b))
            .collect();
        differ.sort_unstable();
        if differ.is_empty() {
            return Ok((Vec::new(), false));
        }
        let list: Vec<String> = differ.iter().map(|b| b.to_string()).collect();
        let cond = format!("{} % {BUCKETS} IN ({})", ts.hash, list.join(", "));
        let (s, t) = self.rows_both(w, ts, &cond, Vec::new()).await?;
        let mut out = diff_multiset(ts, s, t);
        let more = out.len() > budget;
        out.truncate(budget);
        Ok((out, more))
    }

    /// Online: differing rows are looked at again (source, then the target
    /// once the CDC caught up, then the source again) and only those that
    /// differ every time are kept.
    async fn confirm(
        &self,
        w: &mut Worker,
        ts: &TableSql<'_>,
        mut diffs: Vec<VerifyDiff>,
    ) -> Result<Vec<VerifyDiff>, VerifyError> {
        if !self.is_online() || ts.keyless() {
            return Ok(diffs);
        }
        for _ in 0..ROUNDS {
            if diffs.is_empty() {
                break;
            }
            let keys: Vec<Vec<KeyValue>> = diffs.iter().map(|d| d.key.clone()).collect();
            diffs = self.compare_keys(w, ts, &keys).await?;
        }
        Ok(diffs)
    }

    /// The rows of `keys` on both sides, compared.
    async fn compare_keys(
        &self,
        w: &mut Worker,
        ts: &TableSql<'_>,
        keys: &[Vec<KeyValue>],
    ) -> Result<Vec<VerifyDiff>, VerifyError> {
        let mut out = Vec::new();
        for batch in keys.chunks(500) {
            let (cond, params) = ts.keys_condition(batch);
            let (s, t) = self.rows_both(w, ts, &cond, params.clone()).await?;
            let found = diff_rows(ts, s, t.clone());
            if found.is_empty() {
                continue;
            }
            // A row that changed between the reads is no difference: the
            // target holds neither the source's row as first read nor as
            // read again after it.
            let sql = ts.rows_sql(Side::Source, &cond);
            let again = fetch(&mut w.src, &self.source, sql, params).await?;
            let still: Vec<Vec<KeyValue>> =
                diff_rows(ts, again, t).into_iter().map(|d| d.key).collect();
            out.extend(found.into_iter().filter(|d| still.contains(&d.key)));
        }
        Ok(out)
    }

    /// Key ranges of about `[verify] chunk_rows` rows: arithmetic on a
    /// single integer key, else every n-th key read from the source. The
    /// first and last ranges are open, so rows only the target has beyond
    /// the source's keys are compared too.
    async fn plan(&self, ts: &TableSql<'_>) -> Result<Vec<Range>, VerifyError> {
        let Some(key) = &ts.table.key else {
            return Ok(vec![Range::default()]);
        };
        let n = self.job.verify.chunk_rows;
        let mut conn = self.source.connect().await?;
        let int_col = match key.columns.as_slice() {
            [k] => ts.table.columns.iter().find(|c| &c.name == k).filter(|c| {
                matches!(
                    c.data_type.as_str(),
                    "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
                )
            }),
            _ => None,
        };
        let bounds: Vec<Vec<KeyValue>> = match int_col {
            Some(c) => {
                let q = quote_ident(&c.name);
                let sql = format!("SELECT MIN({q}), MAX({q}) FROM {}", ts.src_name);
                let rows = fetch(&mut conn, &self.source, sql, Vec::new()).await?;
                let row = rows.into_iter().next().unwrap_or_default();
                let num = |v: Option<&Value>| match v {
                    Some(Value::Int(i)) => Some(i128::from(*i)),
                    Some(Value::UInt(u)) => Some(i128::from(*u)),
                    _ => None,
                };
                let unsigned = c.column_type.contains("unsigned");
                match (num(row.first()), num(row.get(1))) {
                    (Some(min), Some(max)) => {
                        int_bounds(min, max, ts.table.rows_estimate, n, unsigned)
                    }
                    _ => Vec::new(),
                }
            }
            None => key_bounds(&mut conn, &self.source, ts.table, key, n, &self.cancel)
                .await?
                .ok_or(VerifyError::Cancelled)?,
        };
        let _ = conn.disconnect().await;
        let mut out = Vec::with_capacity(bounds.len() + 1);
        let mut lo = None;
        for b in bounds {
            out.push(Range {
                lo: lo.take(),
                hi: Some(b.clone()),
            });
            lo = Some(b);
        }
        out.push(Range { lo, hi: None });
        Ok(out)
    }
}

/// Upper bounds of ranges of about `n` rows over the keys `min..=max`,
/// spaced by the table's density.
fn int_bounds(min: i128, max: i128, rows: u64, n: u64, unsigned: bool) -> Vec<Vec<KeyValue>> {
    let span = max - min + 1;
    let rows = i128::from(rows.max(1));
    // At least `n` keys wide, at most the whole span (a small table is one
    // range).
    let width = (span * i128::from(n) / rows)
        .max(i128::from(n))
        .min(span)
        .max(1);
    let mut out = Vec::new();
    let mut upper = min + width - 1;
    while upper < max {
        out.push(vec![match unsigned {
            true => KeyValue::UInt(upper as u64),
            false => KeyValue::Int(upper as i64),
        }]);
        upper += width;
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The selected tables `patterns` name (all when empty).
fn select<'c>(tables: &'c [Table], patterns: &[String]) -> Result<Vec<&'c Table>, VerifyError> {
    if patterns.is_empty() {
        return Ok(tables.iter().collect());
    }
    let mut globs = Vec::new();
    for p in patterns {
        let g = globset::Glob::new(p)
            .map_err(|e| VerifyError::NoTables(format!("{p:?} ({e})")))?
            .compile_matcher();
        if !tables
            .iter()
            .any(|t| g.is_match(t.id()) || g.is_match(&t.name))
        {
            return Err(VerifyError::NoTables(format!("{p:?}")));
        }
        globs.push(g);
    }
    Ok(tables
        .iter()
        .filter(|t| {
            globs
                .iter()
                .any(|g| g.is_match(t.id()) || g.is_match(&t.name))
        })
        .collect())
}

pub(crate) async fn fetch(
    conn: &mut Conn,
    connector: &Connector,
    sql: String,
    params: Vec<Value>,
) -> Result<Vec<Vec<Value>>, DbError> {
    let params = match params.is_empty() {
        true => Params::Empty,
        false => Params::Positional(params),
    };
    let rows: Vec<mysql_async::Row> = conn.exec(sql.as_str(), params).await.map_err(
        connector.query_err(format!("verifying: {}", crate::model::truncate(&sql, 200))),
    )?;
    Ok(rows.into_iter().map(|r| r.unwrap()).collect())
}

#[cfg(test)]
mod tests {
    use super::report::render_value;
    use super::*;

    #[test]
    fn integer_ranges_follow_the_density() {
        // Dense keys: one range per 10 rows, the last one open above.
        let b = int_bounds(1, 100, 100, 10, false);
        assert_eq!(b.len(), 9);
        assert_eq!(b[0], vec![KeyValue::Int(10)]);
        assert_eq!(b[8], vec![KeyValue::Int(90)]);
        // Sparse keys (every 10th): wider ranges of about 10 rows.
        let b = int_bounds(1, 1000, 100, 10, true);
        assert_eq!(b[0], vec![KeyValue::UInt(100)]);
        // One key, and no estimate: one range. Fewer keys than a chunk: one.
        assert!(int_bounds(5, 5, 0, 10, false).is_empty());
        assert!(int_bounds(1, 5, 5, 20_000, false).is_empty());
    }

    #[test]
    fn keys_render_for_people() {
        let cols = vec!["id".to_string(), "name".to_string()];
        let key = vec![KeyValue::Int(7), KeyValue::Bytes(b"a b".to_vec())];
        assert_eq!(render_key(&cols, &key), "id=7,name=\"a b\"");
        assert_eq!(render_value(&KeyValue::Bytes(vec![0, 255])), "0x00ff");
    }
}
