//! What can end a CDC attempt, and which of it is worth a retry.

use crate::db::DbError;
use crate::pg::PgError;
use crate::source::binlog::StreamError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Pg(#[from] PgError),
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
    #[error("applying the transaction ending at {at}: {source}")]
    PgApply { at: String, source: Box<PgError> },
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
        source: Box<TargetError>,
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
            CdcError::Pg(e) => e.is_retryable(),
            CdcError::PgApply { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

/// An error of a statement run on the target, of either engine.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Pg(#[from] PgError),
    /// A statement with no translation for the target.
    #[error("{0}")]
    Untranslatable(String),
}

/// MySQL errors that mean a replayed statement was applied before a crash.
const MYSQL_ALREADY_DONE: &[u16] = &[
    1007, // database exists
    1008, // database does not exist
    1050, // table exists
    1051, // unknown table
    1054, // unknown column
    1060, // duplicate column
    1061, // duplicate key name
    1068, // multiple primary key
    1091, // cannot drop: does not exist
    1146, // table does not exist
    1304, // routine exists
    1305, // routine does not exist
    1359, // trigger exists
    1360, // trigger does not exist
    1826, // duplicate foreign key
];

/// PostgreSQL SQLSTATEs of the same meaning.
const PG_ALREADY_DONE: &[&str] = &[
    "42P06", // duplicate schema
    "3F000", // invalid schema
    "42P07", // duplicate table (and index)
    "42P01", // undefined table
    "42701", // duplicate column
    "42703", // undefined column
    "42710", // duplicate object (constraint)
    "42704", // undefined object
    "42P16", // multiple primary keys
];

impl TargetError {
    pub fn is_retryable(&self) -> bool {
        match self {
            TargetError::Db(e) => e.is_retryable(),
            TargetError::Pg(e) => e.is_retryable(),
            TargetError::Untranslatable(_) => false,
        }
    }

    /// The error says the statement's effect is already there.
    pub fn already_done(&self) -> bool {
        match self {
            TargetError::Db(DbError::Query {
                source: mysql_async::Error::Server(s),
                ..
            }) => MYSQL_ALREADY_DONE.contains(&s.code),
            TargetError::Pg(e) => e.code().is_some_and(|c| PG_ALREADY_DONE.contains(&c)),
            _ => false,
        }
    }
}

impl From<TargetError> for CdcError {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Db(e) => CdcError::Db(e),
            TargetError::Pg(e) => CdcError::Pg(e),
            TargetError::Untranslatable(m) => CdcError::Setup(m),
        }
    }
}
