//! The rows of prepared XA transactions, as the state keeps them.

use serde::{Deserialize, Serialize};

use super::position::BinlogPos;
use super::state::KeyValue;

/// The rows of a prepared XA transaction, as the state keeps them until
/// its outcome arrives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct XaRows {
    pub events: Vec<StoredRows>,
}

/// One rows event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRows {
    pub db: String,
    pub table: String,
    /// 0 insert, 1 update, 2 delete.
    pub op: u8,
    pub no_foreign_key_checks: bool,
    pub relaxed_unique_checks: bool,
    pub end: BinlogPos,
    pub columns: [Vec<StoredColumn>; 2],
    /// (before, after) values per row.
    pub rows: Vec<StoredRow>,
}

/// A row's (before, after) values.
pub type StoredRow = (Option<Vec<KeyValue>>, Option<Vec<KeyValue>>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredColumn {
    pub name: String,
    pub ty: u8,
    pub unsigned: bool,
    pub primary: bool,
    pub collation: u16,
}
