//! The MySQL-family source: binlog positions, the binlog reader and its
//! normalized change events, row decoding, the session context of a
//! statement, and statements understood on tokens.

pub mod binlog;
pub mod ddl;
pub mod decode;
pub mod position;
pub mod session;
