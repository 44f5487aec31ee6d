//! Online schema changes in progress on the source (gh-ost, pt-osc).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::position::BinlogPos;
use super::session::SessionContext;

/// An online schema change in progress: the table it rebuilds and the
/// statements run on its shadow table, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ghost {
    pub table: String,
    pub statements: Vec<GhostStatement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GhostStatement {
    /// Where it was in the binlog (a replay records it once).
    pub at: BinlogPos,
    /// The statement with the shadow table's name replaced by the table's.
    pub sql: String,
    pub default_db: String,
    pub context: SessionContext,
}

/// The online schema changes in progress, by (database, shadow table).
pub type Ghosts = BTreeMap<(String, String), Ghost>;
