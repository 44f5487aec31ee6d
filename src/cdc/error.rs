//! What can end a CDC attempt, and which of it is worth a retry.

use crate::db::DbError;
use crate::source::binlog::StreamError;
use crate::state::StateError;

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
