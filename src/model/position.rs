//! Binlog positions: where the source is, and how two positions compare.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

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
