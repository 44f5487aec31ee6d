//! Change data capture: the source's binlog applied to the target, one
//! source transaction per target transaction, in commit order.
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
pub mod decode;
pub mod event;
pub mod position;
pub mod subscribe;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::*;
use mysql_async::BinlogStreamRequest;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::db::{quote_ident, Connector, DbError};
use crate::full::RateLimit;
use crate::job::{CdcStart, DdlPolicy, JobSpec};
use crate::state::{now_ms, Checkpoint, StateError, Store};

pub use apply::Applier;
pub use position::BinlogPos;

#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "another session still applies job {0:?} to the target (a Ferry that was \
         killed, finishing its last batch, or a second runner); waiting for it"
    )]
    TargetBusy(String),
    #[error("the source closed the binlog stream at {at} (shut down or restarted?)")]
    StreamEnded { at: String },
    #[error("source binlog stream at {at}: {source}")]
    Stream {
        at: String,
        source: mysql_async::Error,
    },
    #[error(
        "the source no longer has the binlog Ferry needs: it must resume at {needed}, \
         the oldest binlog on the source is {oldest}. Raise the source's binlog retention \
         (binlog_expire_logs_seconds), then start the job again with a new --state \
         (a new full load)"
    )]
    Purged { needed: String, oldest: String },
    #[error(
        "another replica with server_id {0} is streaming from the source and the \
         server cut this stream; give the job a unique [source] server_id"
    )]
    ServerIdInUse(u32),
    #[error("{0}")]
    Decode(#[from] decode::DecodeError),
    #[error("applying the transaction ending at {at}: {source}")]
    Apply { at: String, source: Box<DbError> },
    #[error(
        "DDL at {at} on a selected database stops the job ([cdc] ddl = \"stop\"): {statement}"
    )]
    DdlStop { at: String, statement: String },
    #[error("DDL at {at} could not be applied on the target: {statement}\n  {source}")]
    DdlFailed {
        at: String,
        statement: String,
        source: Box<DbError>,
    },
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
            CdcError::StreamEnded { .. } | CdcError::TargetBusy(_) => true,
            CdcError::Apply { source, .. } => source.is_retryable(),
            CdcError::Stream { source, .. } => matches!(
                source,
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)
            ),
            _ => false,
        }
    }
}

/// The server id Ferry's binlog stream registers with: the job's, or one
/// derived from its name so that two jobs never share one.
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
        .ok_or_else(|| CdcError::Stream {
            at: "start".into(),
            source: mysql_async::Error::Other("no CDC start position recorded".into()),
        })?;
    // Transactions the target committed after the last redb checkpoint.
    let mut start = (cp.position.clone(), cp.gtid.clone());
    let mut applier = Applier::open(job, target, &mut start).await?;
    if start.0 != cp.position {
        checkpoint(store, job, &mut cp, start)?;
    }

    let start = cp.position.clone();
    let (mut stream, checksum) = open_stream(job, source, &start, cp.gtid.as_deref()).await?;

    // Keyless tables copied in a snapshot: their changes up to it are in
    // the copy already.
    let snapshots: std::collections::HashMap<String, BinlogPos> =
        store.snapshots(&job.name)?.into_iter().collect();
    let mut file = start.file.clone();
    let mut seen_fde = false;
    let mut gtid: Option<String> = cp.gtid.clone();
    let mut in_txn = false;
    let mut standalone = false;
    let mut stats = Stats::new();
    // Group commit: whole source transactions are applied in one target
    // transaction until the stream pauses (or the group is big), so a busy
    // source does not cost a target commit per transaction. Each source
    // transaction stays atomic and in order.
    let mut group = Group::default();
    // The end of the last event read (a heartbeat's is the source's head).
    let mut seen = start.clone();
    // The last position reported as applied (`live.caught_up`).
    let mut told = start.clone();
    live.caught_up.send_replace(Some(start.clone()));
    loop {
        // Everything read is applied when nothing is in flight; else what
        // the target has committed is.
        let applied = match !in_txn && group.txns == 0 && !applier.busy() {
            true => &seen,
            false => &cp.position,
        };
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
            if !in_txn && group.txns == 0 && !applier.busy() && seen >= stop {
                info!(at = %cp.position, "cutover: everything up to {stop} is applied");
                stats.sample(store, job, &cp, source, live.source).await;
                return Ok(());
            }
        }
        // Only between source transactions: a partly received transaction
        // must never be committed.
        let pause = if group.txns > 0 && !in_txn {
            Duration::from_millis(2)
        } else {
            Duration::from_secs(3600)
        };
        let busy = applier.busy();
        let next = tokio::select! {
            ev = stream.next() => ev,
            _ = tokio::time::sleep(pause) => {
                group.commit(&mut applier, store, job, &mut cp).await?;
                continue;
            }
            settled = applier.settle(), if busy => {
                settled?;
                record(&mut applier, store, job, &mut cp)?;
                continue;
            }
            _ = live.stop_at.changed() => continue,
            _ = cancel.cancelled() => {
                // The batch in flight finishes; what was not sent is dropped.
                match applier.settle().await {
                    Ok(()) => record(&mut applier, store, job, &mut cp)?,
                    Err(e) => warn!(error = %e, "the last batch failed while stopping"),
                }
                applier.rollback().await;
                stats.sample(store, job, &cp, source, live.source).await;
                return Err(CdcError::Cancelled);
            }
        };
        let at = |pos: u64| BinlogPos {
            file: file.clone(),
            pos,
        };
        let Some(ev) = next else {
            applier.rollback().await;
            return Err(CdcError::StreamEnded {
                at: cp.position.to_string(),
            });
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                applier.rollback().await;
                let here = at(0);
                return Err(match e {
                    mysql_async::Error::Server(s) if s.code == 1236 => {
                        let mut c = source.connect().await?;
                        let oldest = position::oldest(&mut c, source).await?.unwrap_or_default();
                        CdcError::Purged {
                            needed: cp.position.to_string(),
                            oldest,
                        }
                    }
                    other => stream_error(&here, server_id(job), other),
                });
            }
        };
        let header = ev.header();
        stats.event(header.timestamp(), header.event_type_raw() == 27);
        let end = u64::from(header.log_pos());
        let kind = header.event_type_raw();
        if end > 0 {
            seen = at(end);
        }
        match kind {
            // MariaDB GTID: seq u64, domain u32, flags u8 (1 = standalone).
            162 => {
                if let Some((g, alone)) = mariadb_gtid(header.server_id(), ev.data()) {
                    gtid = Some(g);
                    standalone = alone;
                    in_txn = !standalone;
                }
                continue;
            }
            // GTID_LIST, BINLOG_CHECKPOINT, START_ENCRYPTION and friends.
            160..=171 => continue,
            // A heartbeat: the source is idle.
            27 => {
                if !in_txn {
                    group.commit(&mut applier, store, job, &mut cp).await?;
                }
                continue;
            }
            _ => {}
        }
        let data = match ev.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                return Err(CdcError::Stream {
                    at: at(end).to_string(),
                    source: mysql_async::Error::Other(format!("undecodable event: {e}").into()),
                })
            }
        };
        match data {
            EventData::RotateEvent(r) => {
                file = rotated_file(&r, header.log_pos(), seen_fde, checksum)
            }
            EventData::FormatDescriptionEvent(_) => seen_fde = true,
            // MySQL: a GTID event opens each transaction (BEGIN follows for DML).
            EventData::GtidEvent(g) => {
                gtid = Some(format!("{}:{}", uuid_text(&g.sid()), g.gno()));
                standalone = false;
                in_txn = false;
            }
            EventData::QueryEvent(q) => {
                let text = q.query();
                let schema = q.schema().into_owned();
                match text.trim() {
                    "BEGIN" => in_txn = true,
                    "COMMIT" => {
                        group.add(at(end), gtid.clone());
                        in_txn = false;
                        if group.full(&applier) {
                            group.commit(&mut applier, store, job, &mut cp).await?;
                        }
                    }
                    statement => {
                        let pos = at(end);
                        if !in_txn || standalone {
                            // Everything before the statement is committed
                            // first; the lanes then record its position.
                            group.commit(&mut applier, store, job, &mut cp).await?;
                            applier.settle().await?;
                            record(&mut applier, store, job, &mut cp)?;
                            ddl(job, store, &mut applier, &schema, statement, &pos).await?;
                            applier.commit((pos.clone(), gtid.clone())).await?;
                            applier.settle().await?;
                            record(&mut applier, store, job, &mut cp)?;
                            checkpoint(store, job, &mut cp, (pos, gtid.clone()))?;
                        }
                    }
                }
            }
            EventData::RowsEvent(rows) => {
                let table_id = rows.table_id();
                let Some(tme) = stream.get_tme(table_id) else {
                    return Err(CdcError::Stream {
                        at: at(end).to_string(),
                        source: mysql_async::Error::Other(
                            format!("rows event for table id {table_id} without its TABLE_MAP")
                                .into(),
                        ),
                    });
                };
                let db = tme.database_name().into_owned();
                let table = tme.table_name().into_owned();
                let Some(target_db) = selected(job, &db, &table) else {
                    continue;
                };
                if snapshots
                    .get(&format!("{db}.{table}"))
                    .is_some_and(|s| at(end) <= *s)
                {
                    continue;
                }
                let safe = cp.safe_until.as_ref().is_some_and(|s| at(end) <= *s);
                let op = match &rows {
                    RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                        apply::Op::Insert
                    }
                    RowsEventData::UpdateRowsEvent(_)
                    | RowsEventData::UpdateRowsEventV1(_)
                    | RowsEventData::PartialUpdateRowsEvent(_) => apply::Op::Update,
                    RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
                        apply::Op::Delete
                    }
                };
                let images = decode_rows(&rows, tme, &at(end))?;
                stats.rows += images.len() as u64;
                live.limit.acquire(images.len() as u64).await;
                applier
                    .rows(&target_db, &table, op, images, safe, &at(end))
                    .await?;
            }
            EventData::XidEvent(_) => {
                group.add(at(end), gtid.clone());
                in_txn = false;
                if group.full(&applier) {
                    group.commit(&mut applier, store, job, &mut cp).await?;
                }
            }
            _ => {}
        }
        if stats.due() {
            stats.sample(store, job, &cp, source, live.source).await;
        }
    }
}

/// Connects to the source and asks for its binlog from `start` (or, when
/// `start` has no file, from the GTID set `gtid`). Also says whether events
/// carry checksums.
async fn open_stream(
    job: &JobSpec,
    source: &Connector,
    start: &BinlogPos,
    gtid: Option<&str>,
) -> Result<(mysql_async::BinlogStream, bool), CdcError> {
    let mut conn = source.connect().await?;
    let checksum: Option<String> = conn
        .query_first("SELECT @@GLOBAL.binlog_checksum")
        .await
        .map_err(source.query_err("reading binlog_checksum"))?;
    let checksum = checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
    conn.query_drop("SET @mariadb_slave_capability = 4")
        .await
        .map_err(source.query_err("announcing binlog capabilities"))?;
    conn.query_drop("SET @master_heartbeat_period = 1000000000")
        .await
        .map_err(source.query_err("asking for heartbeats"))?;
    let sid = server_id(job);
    if start.file.is_empty() {
        // MariaDB starts a stream at a GTID through these variables.
        let set = gtid.unwrap_or_default();
        for sql in [
            "SET @slave_gtid_strict_mode = 0",
            "SET @slave_gtid_ignore_duplicates = 0",
        ] {
            conn.query_drop(sql)
                .await
                .map_err(source.query_err("preparing a GTID start"))?;
        }
        conn.exec_drop("SET @slave_connect_state = ?", (set,))
            .await
            .map_err(source.query_err(format!("starting at GTID {set}")))?;
    }
    info!(at = %start, gtid = ?gtid, server_id = sid, "streaming the binlog");
    let request = BinlogStreamRequest::new(sid)
        .with_filename(start.file.as_bytes())
        .with_pos(start.pos);
    let stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| stream_error(start, sid, e))?;
    Ok((stream, checksum))
}

/// The row images of a rows event, decoded.
type Images = Vec<(Option<apply::Image>, Option<apply::Image>)>;

fn decode_rows(
    rows: &RowsEventData<'_>,
    tme: &mysql_async::binlog::events::TableMapEvent<'_>,
    at: &BinlogPos,
) -> Result<Images, CdcError> {
    // Every before image of an event has the same columns, and every after
    // image.
    let mut columns: [Option<Arc<[decode::ColumnInfo]>>; 2] = [None, None];
    let mut image = |side: usize, row: BinlogRow| {
        let cols = columns[side].get_or_insert_with(|| {
            row.columns_ref()
                .iter()
                .map(decode::ColumnInfo::from_column)
                .collect()
        });
        apply::Image::from_row(cols, row)
    };
    let mut images = Vec::new();
    for row in rows.rows(tme) {
        let (before, after) = row.map_err(|e| CdcError::Stream {
            at: at.to_string(),
            source: mysql_async::Error::Other(format!("undecodable row: {e}").into()),
        })?;
        images.push((
            before.map(|r| image(0, r)).transpose()?,
            after.map(|r| image(1, r)).transpose()?,
        ));
    }
    Ok(images)
}

/// Reads and decodes the binlog from `from` to `to` without applying it
/// (a null sink): (rows, events). For measuring the decode rate.
pub async fn decode_only(
    job: &JobSpec,
    source: &Connector,
    from: &BinlogPos,
    to: &BinlogPos,
) -> Result<(u64, u64), CdcError> {
    let (mut stream, checksum) = open_stream(job, source, from, None).await?;
    let (mut file, mut seen_fde) = (from.file.clone(), false);
    let (mut rows, mut events) = (0u64, 0u64);
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| stream_error(from, server_id(job), e))?;
        let header = ev.header();
        let at = BinlogPos {
            file: file.clone(),
            pos: u64::from(header.log_pos()),
        };
        if header.event_type_raw() != 27 {
            events += 1;
        }
        match ev.read_data() {
            Ok(Some(EventData::RotateEvent(r))) => {
                file = rotated_file(&r, header.log_pos(), seen_fde, checksum)
            }
            Ok(Some(EventData::FormatDescriptionEvent(_))) => seen_fde = true,
            Ok(Some(EventData::RowsEvent(r))) => {
                if let Some(tme) = stream.get_tme(r.table_id()) {
                    rows += decode_rows(&r, tme, &at)?.len() as u64;
                }
            }
            _ => {}
        }
        if at.pos > 0 && at >= *to {
            break;
        }
    }
    Ok((rows, events))
}

/// Lag and throughput, sampled into the state every few seconds (a bounded
/// history for status and the console) and logged.
struct Stats {
    rows: u64,
    events: u64,
    since: std::time::Instant,
    rows_then: u64,
    events_then: u64,
    /// Time of the last event from the source's log (not a heartbeat).
    event_time: u32,
    /// A heartbeat came after the last event: the source is idle.
    idle: bool,
    head: Option<mysql_async::Conn>,
}

impl Stats {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Stats {
            rows: 0,
            events: 0,
            since: std::time::Instant::now(),
            rows_then: 0,
            events_then: 0,
            event_time: 0,
            idle: false,
            head: None,
        }
    }

    fn event(&mut self, timestamp: u32, heartbeat: bool) {
        if heartbeat {
            self.idle = true;
        } else {
            self.events += 1;
            if timestamp > 0 {
                self.event_time = timestamp;
                self.idle = false;
            }
        }
    }

    fn due(&self) -> bool {
        self.since.elapsed() >= Self::EVERY
    }

    /// Records a sample; a failure here is logged, never fatal.
    async fn sample(
        &mut self,
        store: &Store,
        job: &JobSpec,
        cp: &Checkpoint,
        source: &Connector,
        info: &Mutex<SourceInfo>,
    ) {
        let secs = self.since.elapsed().as_secs_f64().max(0.001);
        let lag_s = if self.idle || self.event_time == 0 {
            0
        } else {
            (now_ms() / 1000).saturating_sub(u64::from(self.event_time))
        };
        if self.head.is_none() {
            self.head = source.connect().await.ok();
        }
        let mut lag_bytes = 0;
        if let Some(conn) = self.head.as_mut() {
            match position::head(conn, source).await {
                Ok((head, _)) => {
                    lag_bytes = if head.file == cp.position.file {
                        head.pos.saturating_sub(cp.position.pos)
                    } else {
                        head.pos
                    };
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
            rows_per_s: ((self.rows - self.rows_then) as f64 / secs) as u64,
            events_per_s: ((self.events - self.events_then) as f64 / secs) as u64,
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
        self.rows_then = self.rows;
        self.events_then = self.events;
    }
}

/// Source transactions applied but not yet committed on the target.
#[derive(Default)]
struct Group {
    txns: u32,
    /// The end of the last whole source transaction in the group.
    end: Option<(BinlogPos, Option<String>)>,
}

impl Group {
    const MAX_TXNS: u32 = 500;

    fn add(&mut self, end: BinlogPos, gtid: Option<String>) {
        self.txns += 1;
        self.end = Some((end, gtid));
    }

    fn full(&self, applier: &Applier) -> bool {
        self.txns >= Self::MAX_TXNS || applier.queued_bytes() > 512 << 10
    }

    /// Sends the group's commit to the target (with the marker rows); the
    /// previous group, now committed, is checkpointed in redb.
    async fn commit(
        &mut self,
        applier: &mut Applier,
        store: &Store,
        job: &JobSpec,
        cp: &mut Checkpoint,
    ) -> Result<(), CdcError> {
        if let Some(end) = self.end.take() {
            applier.commit(end).await?;
            record(applier, store, job, cp)?;
        }
        self.txns = 0;
        Ok(())
    }
}

/// A MariaDB GTID event (type 162: seq u64, domain u32, flags u8 with 1 =
/// standalone): its GTID as text and whether it is standalone (a DDL, no
/// BEGIN/COMMIT around it).
fn mariadb_gtid(server_id: u32, d: &[u8]) -> Option<(String, bool)> {
    if d.len() < 13 {
        return None;
    }
    let seq = u64::from_le_bytes(d[0..8].try_into().ok()?);
    let domain = u32::from_le_bytes(d[8..12].try_into().ok()?);
    Some((format!("{domain}-{server_id}-{seq}"), d[12] & 1 != 0))
}

/// The binlog file a ROTATE event names. The first, artificial ROTATE
/// comes before the format description and keeps the checksum bytes in
/// its name.
fn rotated_file(
    r: &mysql_async::binlog::events::RotateEvent<'_>,
    log_pos: u32,
    seen_fde: bool,
    checksum: bool,
) -> String {
    let mut name = r.name_raw();
    if !seen_fde && checksum && log_pos == 0 && name.len() > 4 {
        name = &name[..name.len() - 4];
    }
    String::from_utf8_lossy(name).into_owned()
}

/// A MySQL server UUID as text.
fn uuid_text(sid: &[u8; 16]) -> String {
    let h: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Checkpoints in redb what every lane has committed since the last call.
fn record(
    applier: &mut Applier,
    store: &Store,
    job: &JobSpec,
    cp: &mut Checkpoint,
) -> Result<(), CdcError> {
    match applier.take_committed() {
        Some(end) => checkpoint(store, job, cp, end),
        None => Ok(()),
    }
}

fn checkpoint(
    store: &Store,
    job: &JobSpec,
    cp: &mut Checkpoint,
    (pos, gtid): apply::TxnEnd,
) -> Result<(), CdcError> {
    cp.position = pos;
    cp.gtid = gtid;
    cp.unix_ms = now_ms();
    store.put_checkpoint(&job.name, cp)?;
    Ok(())
}

fn stream_error(at: &BinlogPos, server_id: u32, e: mysql_async::Error) -> CdcError {
    match e {
        mysql_async::Error::Server(ref s) if s.code == 4052 || s.message.contains("server_id") => {
            CdcError::ServerIdInUse(server_id)
        }
        source => CdcError::Stream {
            at: at.to_string(),
            source,
        },
    }
}

/// The target database of `db.table` if the job selects it.
pub(crate) fn selected(job: &JobSpec, db: &str, table: &str) -> Option<String> {
    job.select
        .iter()
        .find(|s| s.database == db && s.matches(table))
        .map(|s| s.target_database.clone())
}

/// A statement outside a transaction (DDL, mostly). Applied to the target
/// when it ran in a selected database or names one, per `[cdc] ddl`.
async fn ddl(
    job: &JobSpec,
    store: &Store,
    applier: &mut Applier,
    schema: &str,
    statement: &str,
    at: &BinlogPos,
) -> Result<(), CdcError> {
    let mentions = |db: &str| statement.contains(&format!("{}.", quote_ident(db)));
    let Some(sel) = job
        .select
        .iter()
        .find(|s| s.database == schema || mentions(&s.database))
    else {
        return Ok(());
    };
    match job.cdc.ddl {
        DdlPolicy::Skip => {
            warn!(at = %at, statement, "DDL skipped ([cdc] ddl = \"skip\")");
            let _ = store.add_event(&job.name, "ddl", &format!("skipped at {at}: {statement}"));
            Ok(())
        }
        DdlPolicy::Stop => Err(CdcError::DdlStop {
            at: at.to_string(),
            statement: statement.to_string(),
        }),
        DdlPolicy::Apply => {
            let sql = crate::schema::rename_refs(job, statement);
            let use_db = if schema == sel.database || schema.is_empty() {
                sel.target_database.clone()
            } else {
                job.select
                    .iter()
                    .find(|s| s.database == schema)
                    .map(|s| s.target_database.clone())
                    .unwrap_or_else(|| schema.to_string())
            };
            info!(at = %at, statement = %sql, "applying DDL");
            let _ = store.add_event(&job.name, "ddl", &format!("applied at {at}: {sql}"));
            applier
                .ddl(&use_db, &sql)
                .await
                .map_err(|source| CdcError::DdlFailed {
                    at: at.to_string(),
                    statement: statement.to_string(),
                    source: Box::new(source),
                })
        }
    }
}
