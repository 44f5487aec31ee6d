//! Change data capture: the source's binlog applied to the target, one
//! source transaction per target transaction, in commit order.
//!
//! The stream is read by [`crate::source::binlog::BinlogReader`]; the
//! apply loop is [`engine::Engine`] over the [`engine::Target`] seam, with
//! [`follow::Follow`] deciding what each statement means for the selection.
//!
//! Exactly once in effect: each applied transaction also upserts the job's
//! row in `ferry_meta.checkpoints` on the target, in the same transaction,
//! and the checkpoint in redb is written after the commit. On restart the
//! later of the two is where streaming resumes, so a transaction committed
//! just before a crash is never applied twice, keyless tables included.
//! Between the positions recorded before and after the full load (the
//! hand-over) changes are applied in *safe mode*: INSERT becomes an upsert,
//! and an UPDATE that finds no row upserts its after image. (Not REPLACE:
//! its DELETE would cascade to child rows on the target.)

mod apply;
pub mod engine;
pub mod event;
pub mod follow;
pub mod subscribe;
#[cfg(test)]
mod testkit;

use std::sync::Mutex;
use std::time::Duration;

use mysql_async::prelude::*;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::db::{Connector, DbError};
use crate::full::RateLimit;
use crate::job::{CdcStart, JobSpec};
use crate::source::binlog::{BinlogReader, ChangeSource, Start, StreamError};
use crate::state::{now_ms, Checkpoint, StateError, Store};

pub use crate::source::position;
pub use crate::source::position::BinlogPos;
use apply::Applier;
pub use engine::Ghosts;

#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(
        "another session still applies job {0:?} to the target (a Ferry that was \
         killed, finishing its last batch, or a second runner); waiting for it"
    )]
    TargetBusy(String),
    #[error("{0}")]
    Setup(String),
    #[error("applying the transaction ending at {at}: {source}")]
    Apply { at: String, source: Box<DbError> },
    #[error(
        "a row of {table} at {at} needs a {size}-byte statement, more than the target's \
         max_allowed_packet ({limit}); raise it on the target: SET GLOBAL max_allowed_packet = \
         {suggest}; (and in its my.cnf), then start the job again"
    )]
    RowTooLarge {
        at: String,
        table: String,
        size: usize,
        limit: usize,
        suggest: usize,
    },
    #[error("DDL at {at} on a selected table stops the job ([cdc] ddl = \"stop\"): {statement}")]
    DdlStop { at: String, statement: String },
    #[error("DDL at {at} could not be applied on the target: {statement}\n  {source}")]
    DdlFailed {
        at: String,
        statement: String,
        source: Box<DbError>,
    },
    #[error("binlog event at {at}: {message}")]
    Unsupported { at: String, message: String },
    #[error(
        "XA transaction {xid} committed at {at} was prepared before the position the job \
         started from, so its rows are unknown; the target misses them. Start the job again \
         with a new --state (a new full load) once no XA transaction is pending on the source"
    )]
    XaUnknown { xid: String, at: String },
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error("stopped")]
    Cancelled,
}

impl CdcError {
    pub fn is_retryable(&self) -> bool {
        match self {
            CdcError::Sink(e) => e.is_retryable(),
            CdcError::Db(e) => e.is_retryable(),
            CdcError::Stream(e) => e.is_retryable(),
            CdcError::TargetBusy(_) => true,
            CdcError::Apply { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

/// The rows of XA transaction `xid`, stashed at its XA PREPARE, for its
/// XA COMMIT at `at`.
pub(crate) fn prepared_xa(
    store: &Store,
    job: &str,
    xid: &str,
    at: &BinlogPos,
) -> Result<crate::state::XaRows, CdcError> {
    store.xa(job, xid)?.ok_or_else(|| CdcError::XaUnknown {
        xid: xid.to_string(),
        at: at.to_string(),
    })
}

pub fn server_id(job: &JobSpec) -> u32 {
    job.source
        .server_id
        .unwrap_or_else(|| 1_000_000 + crate::sql::fnv1a(job.name.as_bytes()) % 1_000_000_000)
}

/// Records where CDC starts, if it is not recorded yet: per `[cdc] start`,
/// the source's head now (`auto`, before the full load copies anything, and
/// `now`), a binlog file and position, or a GTID set.
pub async fn record_start(
    job: &JobSpec,
    source: &Connector,
    target: &Connector,
    store: &Store,
) -> Result<Checkpoint, CdcError> {
    if let Some(cp) = store.checkpoint(&job.name)? {
        return Ok(cp);
    }
    // A marker row left by an earlier job of the same name on this target
    // belongs to another history: forget it.
    let mut t = target.connect().await?;
    let exists: Option<String> = t
        .query_first(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'ferry_meta' AND TABLE_NAME = 'checkpoints'",
        )
        .await
        .map_err(target.query_err("looking for ferry_meta.checkpoints"))?;
    if exists.is_some() {
        t.exec_drop(
            "DELETE FROM ferry_meta.checkpoints WHERE job = ? OR job LIKE ?",
            (&job.name, format!("{}#%", job.name)),
        )
        .await
        .map_err(target.query_err("clearing an old checkpoint row"))?;
    }
    let _ = t.disconnect().await;
    let (position, gtid) = start_position(job, source).await?;
    let cp = Checkpoint {
        position,
        gtid,
        unix_ms: now_ms(),
        safe_until: None,
    };
    store.put_checkpoint(&job.name, &cp)?;
    info!(at = %cp.position, "CDC start position recorded");
    Ok(cp)
}

/// Where `[cdc] start` says the stream begins: the source's head (`auto`,
/// `now`), a file and position, or a GTID set.
async fn start_position(
    job: &JobSpec,
    source: &Connector,
) -> Result<(BinlogPos, Option<String>), CdcError> {
    Ok(match &job.cdc.start {
        CdcStart::Auto | CdcStart::Now => {
            let mut conn = source.connect().await?;
            let (pos, gtid) = position::head(&mut conn, source).await?;
            let _ = conn.disconnect().await;
            (pos, (!gtid.is_empty()).then_some(gtid))
        }
        CdcStart::FilePos { file, pos } => (
            BinlogPos {
                file: file.clone(),
                pos: *pos,
            },
            None,
        ),
        // No file yet: the stream starts by GTID and learns the file from
        // the server's first ROTATE.
        CdcStart::Gtid(set) => (
            BinlogPos {
                file: String::new(),
                pos: 4,
            },
            Some(set.clone()),
        ),
    })
}

/// Records the end of the hand-over window (the head after the full load).
pub async fn record_handover_end(
    job: &JobSpec,
    source: &Connector,
    store: &Store,
) -> Result<(), CdcError> {
    let Some(mut cp) = store.checkpoint(&job.name)? else {
        return Ok(());
    };
    if cp.safe_until.is_some() {
        return Ok(());
    }
    let mut conn = source.connect().await?;
    let (pos, _) = position::head(&mut conn, source).await?;
    let _ = conn.disconnect().await;
    info!(from = %cp.position, until = %pos, "safe mode over the hand-over window");
    cp.safe_until = Some(pos);
    store.put_checkpoint(&job.name, &cp)?;
    Ok(())
}

/// What the runner hands a running CDC stage and reads back from it.
pub struct Live<'a> {
    /// Rows per second applied; changeable live.
    pub limit: &'a RateLimit,
    /// A cutover: return once everything up to here is applied.
    pub stop_at: watch::Receiver<Option<BinlogPos>>,
    /// Updated at each sample.
    pub source: &'a Mutex<SourceInfo>,
    /// Set to the position up to which everything read has been applied,
    /// whenever nothing is in flight.
    pub caught_up: &'a watch::Sender<Option<BinlogPos>>,
}

/// The source's binlogs as last seen, for status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceInfo {
    pub head: Option<String>,
    pub oldest: Option<String>,
    /// Set when the source may purge the binlog the job resumes from.
    pub risk: Option<String>,
}

/// Whether the source may purge the binlog at `cp` before the job reads it.
fn retention_risk(cp: &Checkpoint, oldest: &str, expire_s: u64, stalled_ms: u64) -> Option<String> {
    let oldest_pos = BinlogPos {
        file: oldest.to_string(),
        pos: 0,
    };
    if !cp.position.file.is_empty() && cp.position < oldest_pos {
        return Some(format!(
            "the source purged {} (oldest is {oldest}): the job cannot resume",
            cp.position.file
        ));
    }
    if expire_s > 0 && stalled_ms / 1000 > expire_s / 2 {
        return Some(format!(
            "no progress for {}; the source purges binlogs after {}: resume before {} \
             have passed, or raise binlog_expire_logs_seconds",
            humantime::format_duration(Duration::from_secs(stalled_ms / 1000)),
            humantime::format_duration(Duration::from_secs(expire_s)),
            humantime::format_duration(Duration::from_secs(expire_s))
        ));
    }
    None
}

/// Reads the source's oldest binlog and retention and judges the risk for
/// the job's checkpoint.
async fn check_retention(
    conn: &mut mysql_async::Conn,
    source: &Connector,
    cp: &Checkpoint,
    info: &Mutex<SourceInfo>,
    paused: bool,
) -> Result<(), DbError> {
    let oldest = position::oldest(conn, source).await?.unwrap_or_default();
    let expire: Option<u64> = conn
        .query_first("SELECT @@GLOBAL.binlog_expire_logs_seconds")
        .await
        .unwrap_or(None);
    let risk = retention_risk(
        cp,
        &oldest,
        expire.unwrap_or(0),
        // A running job that sees no transactions does not stall.
        if paused {
            now_ms().saturating_sub(cp.unix_ms)
        } else {
            0
        },
    );
    let mut i = info.lock().unwrap_or_else(|p| p.into_inner());
    i.oldest = Some(oldest);
    i.risk = risk;
    Ok(())
}

/// While a streaming job is down (retrying after an error): every 5 s, a
/// sample whose lag keeps growing from the last moment known applied, and
/// the source's head read over a fresh connection when it can be reached,
/// so status and the console show the job falling behind, not green.
/// Never returns.
pub async fn sample_while_down(job: &JobSpec, store: &Store, info: &Mutex<SourceInfo>) {
    if !job.mode.needs_binlog() {
        return std::future::pending().await;
    }
    let source = Connector::new(&job.source, crate::db::Role::Source);
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let Ok(Some(cp)) = store.checkpoint(&job.name) else {
            continue;
        };
        let last = store
            .cdc_samples(&job.name)
            .ok()
            .and_then(|s| s.last().cloned());
        // The moment up to which everything was applied, as last known.
        let applied_ms = match &last {
            Some((at, sample)) => at.saturating_sub(sample.lag_s * 1000),
            None => cp.unix_ms,
        };
        let mut lag_bytes = last.as_ref().map_or(0, |(_, s)| s.lag_bytes);
        // The head is read after the sample is written: a source that does
        // not answer takes its connect timeout.
        let head = info.lock().unwrap_or_else(|p| p.into_inner()).head.clone();
        if let Some(head) = head.as_deref().and_then(parse_pos) {
            lag_bytes = bytes_behind(&head, &cp.position);
        }
        let sample = crate::state::CdcSample {
            position: cp.position.clone(),
            lag_s: now_ms().saturating_sub(applied_ms) / 1000,
            lag_bytes,
            rows_per_s: 0,
            events_per_s: 0,
        };
        if let Err(e) = store.put_cdc_sample(&job.name, now_ms(), &sample) {
            warn!(error = %e, "could not record a CDC sample");
        }
        if let Ok(mut conn) = source.connect().await {
            if let Ok((head, _)) = position::head(&mut conn, &source).await {
                info.lock().unwrap_or_else(|p| p.into_inner()).head = Some(head.to_string());
            }
            let _ = conn.disconnect().await;
        }
    }
}

/// `binlog.000042:1234` as a position.
fn parse_pos(s: &str) -> Option<BinlogPos> {
    let (file, pos) = s.rsplit_once(':')?;
    Some(BinlogPos {
        file: file.to_string(),
        pos: pos.parse().ok()?,
    })
}

/// Bytes of binlog from `at` to `head` (a lower bound across files).
fn bytes_behind(head: &BinlogPos, at: &BinlogPos) -> u64 {
    if head.file == at.file {
        head.pos.saturating_sub(at.pos)
    } else {
        head.pos
    }
}

/// While a CDC job is paused: checks the source's binlog retention against
/// its checkpoint every 5 s. Never returns.
pub async fn watch_retention(job: &JobSpec, store: &Store, info: &Mutex<SourceInfo>) {
    if !matches!(job.mode, crate::job::Mode::Sync | crate::job::Mode::Migrate) {
        return std::future::pending().await;
    }
    let source = Connector::new(&job.source, crate::db::Role::Source);
    loop {
        if let Ok(Some(cp)) = store.checkpoint(&job.name) {
            if let Ok(mut conn) = source.connect().await {
                if let Err(e) = check_retention(&mut conn, &source, &cp, info, true).await {
                    warn!(error = %e, "could not read the source's binlog retention");
                }
                let _ = conn.disconnect().await;
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Streams from the checkpoint and applies until `cancel` fires, a cutover
/// position is reached (then `Ok`), or an error.
/// Streams from the checkpoint and applies until `cancel` fires, a cutover
/// position is reached (then `Ok`), or an error.
pub async fn run(
    job: &JobSpec,
    source: &Connector,
    target: &Connector,
    store: &Store,
    cancel: CancellationToken,
    mut live: Live<'_>,
) -> Result<(), CdcError> {
    let mut cp = store
        .checkpoint(&job.name)?
        .ok_or_else(|| CdcError::Setup("no CDC start position recorded".into()))?;
    // Transactions the target committed after the last redb checkpoint.
    let mut start = (cp.position.clone(), cp.gtid.clone());
    let time_zone = source_time_zone(source).await?;
    let applier = Applier::open(job, target, source, time_zone, &mut start).await?;
    if start.0 != cp.position {
        cp.position = start.0;
        cp.gtid = start.1;
        store.put_checkpoint(&job.name, &cp)?;
    }
    let mut reader = BinlogReader::open(
        source,
        Start {
            position: &cp.position,
            gtid: cp.gtid.as_deref(),
            server_id: server_id(job),
        },
    )
    .await?;
    let mut engine = engine::Engine::new(job, store, live.limit, applier, cp)?;
    let mut stats = Stats::new(store, job, source, live.source);
    // The last position reported as applied (`live.caught_up`).
    let mut told = engine.cp.position.clone();
    live.caught_up.send_replace(Some(told.clone()));
    enum Next {
        Change(Result<crate::source::binlog::Change, StreamError>),
        Idle,
        Settled(Result<(), CdcError>),
        Wake,
        Stop,
    }
    loop {
        let applied = engine.applied();
        if *applied != told {
            told = applied.clone();
            live.caught_up.send_if_modified(|c| match c {
                Some(c) if *c >= told => false,
                _ => {
                    *c = Some(told.clone());
                    true
                }
            });
        }
        let stop_at = live.stop_at.borrow_and_update().clone();
        if let Some(stop) = stop_at {
            if engine.idle() && engine.seen >= stop {
                info!(at = %engine.cp.position, "cutover: everything up to {stop} is applied");
                stats.sample(&engine.cp, &reader, engine.rows).await;
                return Ok(());
            }
        }
        // Only between source transactions: a partly received transaction
        // must never be committed.
        let pause = if engine.group_waiting() {
            Duration::from_millis(2)
        } else {
            Duration::from_secs(3600)
        };
        let busy = engine.target.busy();
        let next = {
            let engine::Engine { follow, target, .. } = &mut engine;
            let wants = |db: &str, t: &str| follow.follows(db, t);
            tokio::select! {
                c = reader.next_change(&wants) => Next::Change(c),
                _ = tokio::time::sleep(pause) => Next::Idle,
                r = engine::Target::settle(target), if busy => Next::Settled(r),
                _ = live.stop_at.changed() => Next::Wake,
                _ = cancel.cancelled() => Next::Stop,
            }
        };
        match next {
            Next::Change(c) => engine.handle(c?).await?,
            Next::Idle => engine.flush().await?,
            Next::Settled(r) => {
                r?;
                engine.record()?;
            }
            Next::Wake => continue,
            Next::Stop => {
                // The batch in flight finishes; what was not sent is dropped.
                match engine::Target::settle(&mut engine.target).await {
                    Ok(()) => engine.record()?,
                    Err(e) => warn!(error = %e, "the last batch failed while stopping"),
                }
                engine::Target::abandon(&mut engine.target).await;
                stats.sample(&engine.cp, &reader, engine.rows).await;
                return Err(CdcError::Cancelled);
            }
        }
        if stats.due() {
            stats.sample(&engine.cp, &reader, engine.rows).await;
        }
    }
}

/// The source's time zone as an offset or name a target session takes
/// (`SYSTEM` resolved to the source's current offset), for statements
/// whose event logged none.
async fn source_time_zone(source: &Connector) -> Result<String, CdcError> {
    let mut conn = source.connect().await?;
    let err = || source.query_err("reading the time zone");
    conn.query_drop("SET SESSION time_zone = DEFAULT")
        .await
        .map_err(err())?;
    let tz: Option<(String, String)> = conn
        .query_first(
            "SELECT @@session.time_zone, \
             CONCAT(IF(NOW() < UTC_TIMESTAMP(), '-', '+'), \
                    TIME_FORMAT(ABS(TIMEDIFF(NOW(), UTC_TIMESTAMP())), '%H:%i'))",
        )
        .await
        .map_err(err())?;
    let _ = conn.disconnect().await;
    Ok(match tz {
        Some((zone, offset)) if zone.eq_ignore_ascii_case("SYSTEM") => offset,
        Some((zone, _)) => zone,
        None => "+00:00".into(),
    })
}

/// Reads and decodes the binlog from `from` to `to` without applying it
/// (a null sink): (rows, events). For measuring the decode rate.
pub async fn decode_only(
    job: &JobSpec,
    source: &Connector,
    from: &BinlogPos,
    to: &BinlogPos,
) -> Result<(u64, u64), CdcError> {
    let mut reader = BinlogReader::open(
        source,
        Start {
            position: from,
            gtid: None,
            server_id: server_id(job),
        },
    )
    .await?;
    let mut rows = 0u64;
    loop {
        let change = reader.next_change(&|_, _| true).await?;
        let at = match &change {
            crate::source::binlog::Change::Rows(r) => {
                rows += r.images.len() as u64;
                &r.end
            }
            crate::source::binlog::Change::Commit { end, .. }
            | crate::source::binlog::Change::XaPrepare { end, .. }
            | crate::source::binlog::Change::XaEnd { end, .. }
            | crate::source::binlog::Change::Rollback { end } => end,
            crate::source::binlog::Change::Query(q) => &q.end,
            crate::source::binlog::Change::Heartbeat { at } => at,
            crate::source::binlog::Change::Begin { .. } => continue,
        };
        if at.pos > 0 && at >= to {
            break;
        }
    }
    Ok((rows, reader.progress().events))
}

/// Lag and throughput, sampled into the state every few seconds (a bounded
/// history for status and the console) and logged.
struct Stats<'a> {
    store: &'a Store,
    job: &'a JobSpec,
    source: &'a Connector,
    info: &'a Mutex<SourceInfo>,
    since: std::time::Instant,
    rows_then: u64,
    events_then: u64,
    head: Option<mysql_async::Conn>,
}

impl<'a> Stats<'a> {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(
        store: &'a Store,
        job: &'a JobSpec,
        source: &'a Connector,
        info: &'a Mutex<SourceInfo>,
    ) -> Self {
        Stats {
            store,
            job,
            source,
            info,
            since: std::time::Instant::now(),
            rows_then: 0,
            events_then: 0,
            head: None,
        }
    }

    fn due(&self) -> bool {
        self.since.elapsed() >= Self::EVERY
    }

    /// Records a sample; a failure here is logged, never fatal.
    async fn sample(&mut self, cp: &Checkpoint, reader: &impl ChangeSource, rows: u64) {
        let (store, job, source, info) = (self.store, self.job, self.source, self.info);
        let progress = reader.progress();
        let secs = self.since.elapsed().as_secs_f64().max(0.001);
        let lag_s = if progress.idle || progress.event_time == 0 {
            0
        } else {
            (now_ms() / 1000).saturating_sub(u64::from(progress.event_time))
        };
        if self.head.is_none() {
            self.head = source.connect().await.ok();
        }
        let mut lag_bytes = 0;
        if let Some(conn) = self.head.as_mut() {
            match position::head(conn, source).await {
                Ok((head, _)) => {
                    lag_bytes = bytes_behind(&head, &cp.position);
                    info.lock().unwrap_or_else(|p| p.into_inner()).head = Some(head.to_string());
                    if check_retention(conn, source, cp, info, false)
                        .await
                        .is_err()
                    {
                        self.head = None;
                    }
                }
                Err(_) => self.head = None,
            }
        }
        let sample = crate::state::CdcSample {
            position: cp.position.clone(),
            lag_s,
            lag_bytes,
            rows_per_s: ((rows.saturating_sub(self.rows_then)) as f64 / secs) as u64,
            events_per_s: ((progress.events.saturating_sub(self.events_then)) as f64 / secs) as u64,
        };
        info!(
            at = %sample.position,
            lag_s = sample.lag_s,
            lag_bytes = sample.lag_bytes,
            rows_per_s = sample.rows_per_s,
            events_per_s = sample.events_per_s,
            "cdc progress"
        );
        if let Err(e) = store.put_cdc_sample(&job.name, now_ms(), &sample) {
            warn!(error = %e, "could not record a CDC sample");
        }
        self.since = std::time::Instant::now();
        self.rows_then = rows;
        self.events_then = progress.events;
    }
}

pub(crate) fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
