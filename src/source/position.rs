//! Binlog positions: where the source is, and how two positions compare.

use std::cmp::Ordering;

use mysql_async::prelude::*;
use mysql_async::Conn;
use serde::{Deserialize, Serialize};

use crate::db::{Connector, DbError};

/// A place in the source's binlog: the file and the offset of the next
/// event to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
}

impl BinlogPos {
    /// The file's sequence number (`binlog.000042` → 42).
    fn seq(&self) -> u64 {
        self.file
            .rsplit('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl PartialOrd for BinlogPos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BinlogPos {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.seq(), self.pos).cmp(&(other.seq(), other.pos))
    }
}

impl std::fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// The source's current binlog end and its GTID position.
pub async fn head(conn: &mut Conn, source: &Connector) -> Result<(BinlogPos, String), DbError> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(source.query_err("SHOW MASTER STATUS"))?;
    let Some(row) = row else {
        return Err(DbError::Query {
            role: "source",
            context: "SHOW MASTER STATUS returned nothing: the binlog is off (start the server with --log-bin)"
                .into(),
            source: mysql_async::Error::Other("binlog disabled".into()),
        });
    };
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or_default();
    let gtid: Option<String> = conn
        .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .unwrap_or(None);
    Ok((BinlogPos { file, pos }, gtid.unwrap_or_default()))
}

/// The oldest binlog file the source still has.
pub async fn oldest(conn: &mut Conn, source: &Connector) -> Result<Option<String>, DbError> {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(source.query_err("SHOW BINARY LOGS"))?;
    Ok(rows.first().and_then(|r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_file_number_then_offset() {
        let p = |f: &str, pos| BinlogPos {
            file: f.into(),
            pos,
        };
        assert!(p("binlog.000002", 4) > p("binlog.000001", 9999));
        assert!(p("binlog.000010", 4) > p("binlog.000009", 4));
        assert!(p("binlog.000002", 500) > p("binlog.000002", 400));
        assert_eq!(p("binlog.000002", 4).to_string(), "binlog.000002:4");
    }
}
