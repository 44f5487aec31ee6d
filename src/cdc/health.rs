//! What a running CDC stage shares with the runner, and the source's
//! health as it is watched: lag and throughput samples, binlog retention.

use std::sync::Mutex;
use std::time::Duration;

use mysql_async::prelude::*;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::db::{Connector, DbError};
use crate::job::JobSpec;
use crate::model::RateLimit;
use crate::model::{now_ms, Checkpoint};
use crate::source::binlog::ChangeSource;
use crate::source::position;
use crate::state::Store;

use crate::model::BinlogPos;

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
    /// Told what the stage does.
    pub observer: &'a dyn crate::observe::Observer,
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
pub(super) fn retention_risk(
    cp: &Checkpoint,
    oldest: &str,
    expire_s: u64,
    stalled_ms: u64,
) -> Option<String> {
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
pub(super) async fn check_retention(
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
        let sample = crate::model::CdcSample {
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

/// Lag and throughput, sampled into the state every few seconds (a bounded
/// history for status and the console) and logged.
pub(super) struct Stats<'a> {
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
    pub(super) const EVERY: Duration = Duration::from_secs(5);

    pub(super) fn new(
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

    pub(super) fn due(&self) -> bool {
        self.since.elapsed() >= Self::EVERY
    }

    /// Records a sample; a failure here is logged, never fatal.
    pub(super) async fn sample(&mut self, cp: &Checkpoint, reader: &impl ChangeSource, rows: u64) {
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
        let sample = crate::model::CdcSample {
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
