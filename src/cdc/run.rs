//! The CDC stage: stream from the checkpoint, apply, sample; and the
//! decode-only loop the benchmark measures.

use std::time::Duration;

use mysql_async::prelude::*;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::db::Connector;
use crate::job::JobSpec;
use crate::source::binlog::{BinlogReader, ChangeSource, Start, StreamError};
use crate::state::Store;

use super::apply::Applier;
use super::engine;
use super::error::CdcError;
use super::health::*;
use super::start::*;
use crate::model::BinlogPos;

/// Streams from the checkpoint and applies until `cancel` fires, a cutover
/// position is reached (then `Ok`), or an error.
pub async fn run(
    job: &JobSpec,
    source: &Connector,
    target: &Connector,
    store: &Store,
    cancel: CancellationToken,
    live: Live<'_>,
) -> Result<(), CdcError> {
    let (cp, mut start) = recorded_start(job, store)?;
    let time_zone = source_time_zone(source).await?;
    let applier = Applier::open(job, target, source, time_zone, &mut start).await?;
    apply_loop(job, source, store, cancel, live, applier, cp, start).await
}

/// [`run`] into a PostgreSQL target.
pub async fn run_postgresql(
    job: &JobSpec,
    source: &Connector,
    target: &crate::pg::PgConnector,
    store: &Store,
    cancel: CancellationToken,
    live: Live<'_>,
) -> Result<(), CdcError> {
    let (cp, mut start) = recorded_start(job, store)?;
    let applier = super::pgapply::PgApplier::open(job, target, source, &mut start).await?;
    apply_loop(job, source, store, cancel, live, applier, cp, start).await
}

/// The checkpoint, and where the stream starts (moved forward by the
/// target's markers: transactions it committed after the checkpoint).
fn recorded_start(
    job: &JobSpec,
    store: &Store,
) -> Result<(crate::model::Checkpoint, engine::TxnEnd), CdcError> {
    let cp = store
        .checkpoint(&job.name)?
        .ok_or_else(|| CdcError::Setup("no CDC start position recorded".into()))?;
    let start = (cp.position.clone(), cp.gtid.clone());
    Ok((cp, start))
}

/// Streams from `cp` (or `start`, where the target's markers are ahead of
/// it) and applies through `applier`.
#[allow(clippy::too_many_arguments)]
async fn apply_loop<T: engine::Target>(
    job: &JobSpec,
    source: &Connector,
    store: &Store,
    cancel: CancellationToken,
    mut live: Live<'_>,
    applier: T,
    mut cp: crate::model::Checkpoint,
    start: engine::TxnEnd,
) -> Result<(), CdcError> {
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
        if matches!(next, Next::Stop) {
            return stop(&mut engine, &mut stats, &reader).await;
        }
        // A change being applied may wait on the target (a lock, a long
        // DDL): a stop gives it STOP_GRACE, no more.
        let step = async {
            match next {
                Next::Change(c) => engine.handle(c?).await,
                Next::Idle => engine.flush().await,
                Next::Settled(r) => {
                    r?;
                    engine.record()?;
                    Ok(())
                }
                Next::Wake | Next::Stop => Ok(()),
            }
        };
        let (failed, stopping) = {
            tokio::pin!(step);
            tokio::select! {
                r = &mut step => (r.err(), false),
                // The change at hand (a DDL, a batch) may still finish
                // within the grace; then the stop.
                _ = cancel.cancelled() => {
                    if let Ok(Err(e)) = tokio::time::timeout(STOP_GRACE, &mut step).await {
                        warn!(error = %e, "the last change failed while stopping");
                    }
                    (None, true)
                }
            }
        };
        if stopping {
            return stop(&mut engine, &mut stats, &reader).await;
        }
        if let Some(e) = failed {
            // Nothing of this attempt may commit behind the next one's
            // back: what still runs on the target is killed.
            engine::Target::abandon(&mut engine.target).await;
            return Err(e);
        }
        if stats.due() {
            stats.sample(&engine.cp, &reader, engine.rows).await;
        }
    }
}

/// How long a stop lets the change at hand, then the batch in flight,
/// finish before killing what still runs (twice this stays within the
/// runner's stop deadline).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A stop: the batch in flight may finish (then its position is
/// checkpointed); after [`STOP_GRACE`] it is killed on the target, and
/// rolls back with its checkpoint marker. What was not sent is dropped.
async fn stop<T: engine::Target>(
    engine: &mut engine::Engine<'_, T>,
    stats: &mut Stats<'_>,
    reader: &BinlogReader,
) -> Result<(), CdcError> {
    match tokio::time::timeout(STOP_GRACE, engine::Target::settle(&mut engine.target)).await {
        Ok(Ok(())) => engine.record()?,
        Ok(Err(e)) => warn!(error = %e, "the last batch failed while stopping"),
        Err(_) => warn!("a statement still runs on the target after {STOP_GRACE:?}; killing it"),
    }
    engine::Target::abandon(&mut engine.target).await;
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stats.sample(&engine.cp, reader, engine.rows),
    )
    .await;
    Err(CdcError::Cancelled)
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
