//! The one binlog reader: the source's replication stream turned into
//! normalized change events (begin, rows, commit with its position and
//! GTID, statements with their session context, XA, heartbeats).
//!
//! Everything that knows the wire format lives here: format description
//! and ROTATE (the file name), MariaDB's and MySQL's GTID events,
//! heartbeats, TABLE_MAP and rows decoding, Query events and their status
//! variables, the server errors for a purged binlog or a duplicate
//! server_id, and a read deadline that notices a connection that died
//! without a word. The CDC apply, the subscription and the decode
//! benchmark consume [`Change`]s; tests can feed them their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::binlog::events::{EventData, OptionalMetadataField, RowsEventData, TableMapEvent};
use mysql_async::consts::ColumnType;
use mysql_async::prelude::*;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use tracing::info;

use super::ddl::{Kind, Statement, XaVerb};
use super::decode::{self, Images};
use super::position;
use super::session::Charsets;
use crate::db::{Connector, DbError};
use crate::model::BinlogPos;
use crate::model::SessionContext;

/// How often an idle source sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// With no event (not even a heartbeat) for this long, the connection is
/// taken for dead: a partition or a NAT timeout sends no FIN or RST.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the source closed the binlog stream at {at} (shut down or restarted?)")]
    Ended { at: String },
    #[error(
        "no event and no heartbeat from the source for {secs} s at {at}: the connection \
         is taken for dead (a network partition or a firewall timeout); reconnecting"
    )]
    Stalled { at: String, secs: u64 },
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
    #[error("binlog event at {at}: {message}")]
    Decode { at: String, message: String },
    #[error("binlog event at {at}: {what}")]
    Unsupported { at: String, what: String },
}

impl StreamError {
    pub fn is_retryable(&self) -> bool {
        match self {
            StreamError::Db(e) => e.is_retryable(),
            StreamError::Ended { .. } | StreamError::Stalled { .. } => true,
            StreamError::Stream { source, .. } => matches!(
                source,
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)
            ),
            _ => false,
        }
    }
}

/// A table as its TABLE_MAP describes it.
#[derive(Debug, Clone, Default)]
pub struct TableInfo {
    pub db: Arc<str>,
    pub name: Arc<str>,
    /// ENUM and SET member names per column (FULL row metadata).
    pub enums: Vec<Option<Vec<String>>>,
    pub sets: Vec<Option<Vec<String>>>,
}

/// The kind of a rows event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

/// The flags a rows event carries: the session's checks when it was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowFlags {
    pub no_foreign_key_checks: bool,
    pub relaxed_unique_checks: bool,
}

/// The rows of one rows event.
#[derive(Debug, Clone)]
pub struct Rows {
    pub table: Arc<TableInfo>,
    pub op: Op,
    pub images: Images,
    pub flags: RowFlags,
    /// The end of the event.
    pub end: BinlogPos,
    pub timestamp: u32,
    /// The server that wrote the event.
    pub server_id: u32,
}

/// A statement from a Query event, with what is needed to run it as the
/// source did.
#[derive(Debug, Clone)]
pub struct Query {
    pub statement: Statement,
    /// The session's default database (`USE`), empty for none.
    pub default_db: String,
    pub context: SessionContext,
    pub end: BinlogPos,
    pub gtid: Option<String>,
    /// Inside a transaction (CREATE TABLE ... SELECT in ROW format logs its
    /// CREATE there; statement-format DML is always there).
    pub in_txn: bool,
    /// The server that wrote the event.
    pub server_id: u32,
}

/// One normalized change.
#[derive(Debug, Clone)]
pub enum Change {
    /// A transaction starts (`xa`: an XA transaction, which ends at its
    /// prepare).
    Begin {
        gtid: Option<String>,
        xa: bool,
    },
    Rows(Rows),
    /// The transaction ends; `end` is where the next one starts.
    Commit {
        end: BinlogPos,
        gtid: Option<String>,
    },
    /// The open transaction is rolled back (a ROLLBACK logged for changes
    /// to non-transactional tables).
    Rollback {
        end: BinlogPos,
    },
    /// An XA transaction was prepared; its outcome comes later.
    XaPrepare {
        xid: String,
        end: BinlogPos,
        gtid: Option<String>,
    },
    /// The outcome of a prepared XA transaction.
    XaEnd {
        xid: String,
        commit: bool,
        end: BinlogPos,
        gtid: Option<String>,
    },
    /// Any other statement: DDL, statement-format DML, and the rest.
    Query(Box<Query>),
    /// The source is idle; `at` is its binlog position.
    Heartbeat {
        at: BinlogPos,
    },
}

/// What a consumer of changes needs: the next one. `wants` says which
/// tables' rows to decode (the others are skipped unread).
pub trait ChangeSource {
    fn next_change(
        &mut self,
        wants: &(dyn Fn(&str, &str) -> bool + Sync),
    ) -> impl std::future::Future<Output = Result<Change, StreamError>> + Send;

    /// Events read (not heartbeats) and the time of the newest one; and
    /// whether a heartbeat came after it (the source is idle).
    fn progress(&self) -> Progress;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub events: u64,
    pub event_time: u32,
    pub idle: bool,
}

/// Where and how a stream starts.
pub struct Start<'a> {
    pub position: &'a BinlogPos,
    /// When `position` has no file: start at this GTID set.
    pub gtid: Option<&'a str>,
    pub server_id: u32,
}

/// The source's binlog as [`Change`]s.
pub struct BinlogReader {
    stream: BinlogStream,
    source: Connector,
    server_id: u32,
    checksum: bool,
    mariadb: bool,
    charsets: Arc<Charsets>,
    file: String,
    seen_fde: bool,
    gtid: Option<String>,
    in_txn: bool,
    /// A MariaDB GTID of a completed XA transaction: its XID.
    xa_completing: Option<String>,
    /// MySQL's compressed transaction: the end of its payload event (the
    /// events inside carry no position).
    payload_end: Option<u64>,
    tables: HashMap<u64, Arc<TableInfo>>,
    /// Where the last event ended (the position to report on errors).
    at: BinlogPos,
    progress: Progress,
}

impl BinlogReader {
    /// Connects to the source and asks for its binlog from `start`.
    pub async fn open(source: &Connector, start: Start<'_>) -> Result<BinlogReader, StreamError> {
        let mut conn = source.connect().await?;
        let checksum: Option<String> = conn
            .query_first("SELECT @@GLOBAL.binlog_checksum")
            .await
            .map_err(source.query_err("reading binlog_checksum"))?;
        let checksum = checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(source.query_err("reading the version"))?;
        let mariadb = version.is_some_and(|v| v.contains("MariaDB"));
        // Some collations (MariaDB's uca1400 family) have no id or charset.
        let rows: Vec<(Option<u64>, Option<String>)> = conn
            .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
            .await
            .map_err(source.query_err("reading collations"))?;
        let charsets = Charsets(
            rows.into_iter()
                .filter_map(|(id, cs)| Some((id? as u16, cs?)))
                .collect(),
        );
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(source.query_err("announcing binlog capabilities"))?;
        conn.query_drop(format!(
            "SET @master_heartbeat_period = {}",
            HEARTBEAT.as_nanos()
        ))
        .await
        .map_err(source.query_err("asking for heartbeats"))?;
        if start.position.file.is_empty() {
            // MariaDB starts a stream at a GTID through these variables.
            let set = start.gtid.unwrap_or_default();
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
        info!(at = %start.position, gtid = ?start.gtid, server_id = start.server_id, "streaming the binlog");
        let request = BinlogStreamRequest::new(start.server_id)
            .with_filename(start.position.file.as_bytes())
            .with_pos(start.position.pos);
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| stream_error(start.position, start.server_id, e))?;
        Ok(BinlogReader {
            stream,
            source: source.clone(),
            server_id: start.server_id,
            checksum,
            mariadb,
            charsets: Arc::new(charsets),
            file: start.position.file.clone(),
            seen_fde: false,
            gtid: start.gtid.map(str::to_string),
            in_txn: false,
            xa_completing: None,
            payload_end: None,
            tables: HashMap::new(),
            at: start.position.clone(),
            progress: Progress::default(),
        })
    }

    fn at(&self, pos: u64) -> BinlogPos {
        BinlogPos {
            file: self.file.clone(),
            pos,
        }
    }

    /// The next event from the server, within the read deadline.
    async fn next_event(&mut self) -> Result<mysql_async::binlog::events::Event, StreamError> {
        let next = tokio::time::timeout(READ_DEADLINE, self.stream.next()).await;
        match next {
            Err(_) => Err(StreamError::Stalled {
                at: self.at.to_string(),
                secs: READ_DEADLINE.as_secs(),
            }),
            Ok(None) => Err(StreamError::Ended {
                at: self.at.to_string(),
            }),
            Ok(Some(Ok(ev))) => Ok(ev),
            Ok(Some(Err(mysql_async::Error::Server(s)))) if s.code == 1236 => {
                let mut c = self.source.connect().await?;
                let oldest = position::oldest(&mut c, &self.source)
                    .await?
                    .unwrap_or_default();
                let _ = c.disconnect().await;
                Err(StreamError::Purged {
                    needed: self.at.to_string(),
                    oldest,
                })
            }
            Ok(Some(Err(e))) => Err(stream_error(&self.at, self.server_id, e)),
        }
    }

    async fn read(
        &mut self,
        wants: &(dyn Fn(&str, &str) -> bool + Sync),
    ) -> Result<Change, StreamError> {
        loop {
            let ev = self.next_event().await?;
            let header = ev.header();
            let kind = header.event_type_raw();
            let log_pos = u64::from(header.log_pos());
            if kind == 27 {
                self.progress.idle = true;
                return Ok(Change::Heartbeat {
                    at: self.at(log_pos),
                });
            }
            self.progress.events += 1;
            if header.timestamp() > 0 {
                self.progress.event_time = header.timestamp();
                self.progress.idle = false;
            }
            // Events inside MySQL's compressed transaction carry no position.
            let end = match (log_pos, self.payload_end) {
                (0, Some(p)) => p,
                _ => log_pos,
            };
            let here = self.at(end);
            if end > 0 {
                self.at = here.clone();
            }
            match kind {
                // MariaDB GTID: seq u64, domain u32, flags u8.
                162 => {
                    let d = ev.data();
                    let Some((gtid, flags)) = mariadb_gtid(header.server_id(), d) else {
                        continue;
                    };
                    self.gtid = Some(gtid);
                    if flags & GTID_COMPLETED_XA != 0 {
                        self.xa_completing = gtid_xid(flags, d);
                        self.in_txn = false;
                        continue;
                    }
                    self.xa_completing = None;
                    self.in_txn = flags & GTID_STANDALONE == 0;
                    if self.in_txn {
                        return Ok(Change::Begin {
                            gtid: self.gtid.clone(),
                            xa: flags & GTID_PREPARED_XA != 0,
                        });
                    }
                    continue;
                }
                // MariaDB's compressed Query and rows events
                // (log_bin_compress): their rows would be lost unread.
                165..=171 => {
                    return Err(StreamError::Unsupported {
                        at: here.to_string(),
                        what:
                            "the source writes compressed binlog events (log_bin_compress = ON), \
                               which Ferry cannot read; SET GLOBAL log_bin_compress = OFF on the \
                               source (events already written compressed stop the job)"
                                .into(),
                    })
                }
                // ANNOTATE_ROWS, BINLOG_CHECKPOINT, GTID_LIST, START_ENCRYPTION.
                160..=164 => continue,
                // XA_PREPARE (both servers): the XA transaction's end.
                38 => {
                    self.in_txn = false;
                    return Ok(Change::XaPrepare {
                        xid: prepare_xid(ev.data()).unwrap_or_default(),
                        end: here,
                        gtid: self.gtid.clone(),
                    });
                }
                _ => {}
            }
            let data = match ev.read_data() {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e) => {
                    return Err(StreamError::Decode {
                        at: here.to_string(),
                        message: format!("undecodable event (type {kind}): {e}"),
                    })
                }
            };
            match data {
                EventData::RotateEvent(r) => {
                    self.file = rotated_file(&r, header.log_pos(), self.seen_fde, self.checksum);
                    self.at = BinlogPos {
                        file: self.file.clone(),
                        pos: r.position(),
                    };
                }
                EventData::FormatDescriptionEvent(_) => self.seen_fde = true,
                // MySQL: a GTID event opens each transaction (BEGIN follows for DML).
                EventData::GtidEvent(g) => {
                    self.gtid = Some(format!("{}:{}", uuid_text(&g.sid()), g.gno()));
                    self.in_txn = false;
                    self.payload_end = None;
                }
                EventData::TransactionPayloadEvent(_) => self.payload_end = Some(log_pos),
                EventData::TableMapEvent(t) => {
                    let id = t.table_id();
                    let stale = self.tables.get(&id).is_none_or(|i| {
                        *i.db != *t.database_name()
                            || *i.name != *t.table_name()
                            || i.enums.len() as u64 != t.columns_count()
                    });
                    if stale {
                        self.tables.insert(id, Arc::new(table_info(&t)));
                    }
                }
                EventData::XidEvent(_) => {
                    self.in_txn = false;
                    return Ok(Change::Commit {
                        end: here,
                        gtid: self.gtid.clone(),
                    });
                }
                EventData::QueryEvent(q) => {
                    if let Some(change) =
                        self.query(&q, header.timestamp(), header.server_id(), here)?
                    {
                        return Ok(change);
                    }
                }
                EventData::RowsEvent(rows) => {
                    let id = rows.table_id();
                    let (Some(tme), Some(info)) = (self.stream.get_tme(id), self.tables.get(&id))
                    else {
                        return Err(StreamError::Decode {
                            at: here.to_string(),
                            message: format!("rows event for table id {id} without its TABLE_MAP"),
                        });
                    };
                    if !wants(&info.db, &info.name) {
                        continue;
                    }
                    let info = info.clone();
                    let images = decode::rows(&rows, tme).map_err(|e| StreamError::Decode {
                        at: here.to_string(),
                        message: e.to_string(),
                    })?;
                    let flags = rows.flags();
                    use mysql_async::binlog::RowsEventFlags as F;
                    return Ok(Change::Rows(Rows {
                        table: info,
                        op: op_of(&rows),
                        images,
                        flags: RowFlags {
                            no_foreign_key_checks: flags.contains(F::NO_FOREIGN_KEY_CHECKS),
                            relaxed_unique_checks: flags.contains(F::RELAXED_UNIQUE_CHECKS),
                        },
                        end: here,
                        timestamp: header.timestamp(),
                        server_id: header.server_id(),
                    }));
                }
                _ => {}
            }
        }
    }

    /// A Query event as a change (`None`: nothing to report, e.g. XA END).
    fn query(
        &mut self,
        q: &mysql_async::binlog::events::QueryEvent<'_>,
        timestamp: u32,
        server_id: u32,
        end: BinlogPos,
    ) -> Result<Option<Change>, StreamError> {
        let context = SessionContext::parse(q.status_vars_raw(), timestamp, self.mariadb);
        let client = context.charset.map(|c| c.0);
        let text = self
            .charsets
            .decode(client, q.query_raw())
            .map_err(|message| StreamError::Decode {
                at: end.to_string(),
                message,
            })?;
        let statement = Statement::parse(&text, context.ansi_quotes())
            .unwrap_or_else(|_| Statement::unparsed(&text));
        let change = match &statement.kind {
            Kind::Begin => {
                self.in_txn = true;
                Change::Begin {
                    gtid: self.gtid.clone(),
                    xa: false,
                }
            }
            Kind::Commit => {
                self.in_txn = false;
                Change::Commit {
                    end,
                    gtid: self.gtid.clone(),
                }
            }
            Kind::Rollback if self.in_txn => {
                self.in_txn = false;
                Change::Rollback { end }
            }
            Kind::Xa(XaVerb::Start) => {
                // MySQL: XA START opens the transaction (MariaDB's GTID did).
                let already = self.in_txn;
                self.in_txn = true;
                if already {
                    return Ok(None);
                }
                Change::Begin {
                    gtid: self.gtid.clone(),
                    xa: true,
                }
            }
            Kind::Xa(XaVerb::End) => return Ok(None),
            Kind::Xa(XaVerb::Commit { one_phase: false }) | Kind::Xa(XaVerb::Rollback) => {
                let commit = !matches!(statement.kind, Kind::Xa(XaVerb::Rollback));
                let xid = self
                    .xa_completing
                    .take()
                    .unwrap_or_else(|| xid_of_statement(&text));
                self.in_txn = false;
                Change::XaEnd {
                    xid,
                    commit,
                    end,
                    gtid: self.gtid.clone(),
                }
            }
            _ => Change::Query(Box::new(Query {
                statement,
                default_db: q.schema().into_owned(),
                context,
                end,
                gtid: self.gtid.clone(),
                in_txn: self.in_txn,
                server_id,
            })),
        };
        Ok(Some(change))
    }
}

impl ChangeSource for BinlogReader {
    async fn next_change(
        &mut self,
        wants: &(dyn Fn(&str, &str) -> bool + Sync),
    ) -> Result<Change, StreamError> {
        self.read(wants).await
    }

    fn progress(&self) -> Progress {
        self.progress
    }
}

const GTID_STANDALONE: u8 = 0x01;
const GTID_GROUP_COMMIT_ID: u8 = 0x02;
const GTID_PREPARED_XA: u8 = 0x40;
const GTID_COMPLETED_XA: u8 = 0x80;

/// A MariaDB GTID event (type 162: seq u64, domain u32, flags u8): its
/// GTID as text and its flags.
pub fn mariadb_gtid(server_id: u32, d: &[u8]) -> Option<(String, u8)> {
    let seq = u64::from_le_bytes(d.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(d.get(8..12)?.try_into().ok()?);
    Some((format!("{domain}-{server_id}-{seq}"), *d.get(12)?))
}

/// The XID of a MariaDB GTID event of an XA transaction (after the flags
/// and the optional commit id: format u32, gtrid length u8, bqual length
/// u8, the data).
fn gtid_xid(flags: u8, d: &[u8]) -> Option<String> {
    let mut at = 13;
    if flags & GTID_GROUP_COMMIT_ID != 0 {
        at += 8;
    }
    let format = u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?);
    let g = usize::from(*d.get(at + 4)?);
    let b = usize::from(*d.get(at + 5)?);
    let (gtrid, bqual) = d.get(at + 6..at + 6 + g + b)?.split_at(g);
    Some(xid_text(format, gtrid, bqual))
}

/// The XID of an XA_PREPARE event (one_phase u8, format u32, gtrid length
/// u32, bqual length u32, the data).
fn prepare_xid(d: &[u8]) -> Option<String> {
    let u =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(d.get(i..i + 4)?.try_into().ok()?)) };
    let format = u(1)?;
    let g = u(5)? as usize;
    let b = u(9)? as usize;
    let (gtrid, bqual) = d.get(13..13 + g + b)?.split_at(g);
    Some(xid_text(format, gtrid, bqual))
}

/// An XID as the server writes it in `XA COMMIT X'..',X'..',N`.
fn xid_text(format: u32, gtrid: &[u8], bqual: &[u8]) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    format!("X'{}',X'{}',{format}", hex(gtrid), hex(bqual))
}

/// The XID of an `XA COMMIT ...` / `XA ROLLBACK ...` statement, spaces
/// removed and hex upper-cased (as [`xid_text`] writes it).
fn xid_of_statement(text: &str) -> String {
    let mut words = text.split_whitespace();
    words.next();
    words.next();
    let rest: String = words
        .take_while(|w| !w.eq_ignore_ascii_case("ONE"))
        .collect::<Vec<_>>()
        .concat();
    rest.replace("x'", "X'")
        .split('\'')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                part.to_ascii_uppercase()
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("'")
}

fn op_of(rows: &RowsEventData<'_>) -> Op {
    match rows {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
        RowsEventData::UpdateRowsEvent(_)
        | RowsEventData::UpdateRowsEventV1(_)
        | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
    }
}

/// Names and ENUM/SET members of a table from its TABLE_MAP.
fn table_info(tme: &TableMapEvent<'_>) -> TableInfo {
    let n = tme.columns_count() as usize;
    let mut info = TableInfo {
        db: Arc::from(&*tme.database_name()),
        name: Arc::from(&*tme.table_name()),
        enums: vec![None; n],
        sets: vec![None; n],
    };
    let of_type = |ty: ColumnType| -> Vec<usize> {
        (0..n)
            .filter(|&i| matches!(tme.get_column_type(i), Ok(Some(t)) if t == ty))
            .collect()
    };
    let (enum_cols, set_cols) = (
        of_type(ColumnType::MYSQL_TYPE_ENUM),
        of_type(ColumnType::MYSQL_TYPE_SET),
    );
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let names = |values: Vec<&[u8]>| -> Vec<String> { values.into_iter().map(text).collect() };
    for field in tme.iter_optional_meta().flatten() {
        match field {
            OptionalMetadataField::EnumStrValue(v) => {
                for (col, values) in enum_cols.iter().zip(v.iter_values().flatten()) {
                    if let Some(slot) = info.enums.get_mut(*col) {
                        *slot = Some(names(
                            values.values().iter().map(|x| x.value_raw()).collect(),
                        ));
                    }
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for (col, values) in set_cols.iter().zip(v.iter_values().flatten()) {
                    if let Some(slot) = info.sets.get_mut(*col) {
                        *slot = Some(names(
                            values.values().iter().map(|x| x.value_raw()).collect(),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    info
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
    if !seen_fde && checksum && log_pos == 0 {
        name = name.get(..name.len().saturating_sub(4)).unwrap_or(name);
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

fn stream_error(at: &BinlogPos, server_id: u32, e: mysql_async::Error) -> StreamError {
    match e {
        mysql_async::Error::Server(ref s) if s.code == 4052 || s.message.contains("server_id") => {
            StreamError::ServerIdInUse(server_id)
        }
        source => StreamError::Stream {
            at: at.to_string(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xids_from_events_and_statements_agree() {
        // GTID 0-1-19, flags 0x8d (completed XA, standalone), XID 1 "x2".
        let mut g = 19u64.to_le_bytes().to_vec();
        g.extend_from_slice(&0u32.to_le_bytes());
        g.push(0x8d);
        g.extend_from_slice(&[1, 0, 0, 0, 2, 0, b'x', b'2']);
        let (gtid, flags) = mariadb_gtid(1, &g).expect("gtid");
        assert_eq!((gtid.as_str(), flags), ("0-1-19", 0x8d));
        assert_eq!(gtid_xid(flags, &g).as_deref(), Some("X'7832',X'',1"));
        let prepare = [0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'x', b'2'];
        assert_eq!(prepare_xid(&prepare).as_deref(), Some("X'7832',X'',1"));
        assert_eq!(
            xid_of_statement("XA COMMIT x'7832', X'', 1"),
            "X'7832',X'',1"
        );
        assert_eq!(
            xid_of_statement("XA COMMIT X'7832',X'',1 ONE PHASE"),
            "X'7832',X'',1"
        );
        assert_eq!(gtid_xid(0x80, &g[..14]), None);
    }
}
