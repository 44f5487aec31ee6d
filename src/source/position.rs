//! The source's binlog head and oldest file, read from the server.

use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::db::{Connector, DbError};
use crate::model::BinlogPos;

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
