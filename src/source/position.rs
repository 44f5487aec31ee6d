//! The source's binlog head and oldest file, read from the server.

use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::Duration;
use tokio::sync::watch;

use crate::db::{Connector, DbError};
use crate::model::BinlogPos;

/// Waits until `applied` (a CDC's applied position) reaches the source's
/// head as of now, at most `within`. Returns the head when it did not.
pub async fn wait_applied(
    conn: &mut Conn,
    source: &Connector,
    applied: &watch::Receiver<Option<BinlogPos>>,
    within: Duration,
) -> Result<Option<BinlogPos>, DbError> {
    let (head, _) = head(conn, source).await?;
    let mut rx = applied.clone();
    let reached = tokio::time::timeout(
        within,
        rx.wait_for(|c| c.as_ref().is_some_and(|c| *c >= head)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    Ok((!reached).then_some(head))
}

/// What a verification notes when [`wait_applied`] gave up.
pub fn not_applied_note(head: &BinlogPos, within: Duration) -> String {
    format!(
        "the CDC did not apply up to {head} within {}s; differences may be changes not yet \
         applied",
        within.as_secs()
    )
}

/// The source's current binlog end and its GTID position.
pub async fn head(conn: &mut Conn, source: &Connector) -> Result<(BinlogPos, String), DbError> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(source.query_err("SHOW MASTER STATUS"))?;
    let unexpected = |what: &str| DbError::Unexpected {
        role: "source",
        what: what.into(),
    };
    let Some(row) = row else {
        return Err(unexpected(
            "SHOW MASTER STATUS returned nothing: the binlog is off (start the server with --log-bin)",
        ));
    };
    let (Some(file), Some(pos)) = (row.get::<String, _>(0), row.get::<u64, _>(1)) else {
        return Err(unexpected(
            "SHOW MASTER STATUS has no File and Position columns (is this a MySQL-family server?)",
        ));
    };
    // MariaDB's GTID position; a server without the variable (MySQL) has
    // none to report here.
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

/// Opens a consistent snapshot on `conn` and returns the binlog position
/// it corresponds to (MariaDB's `binlog_snapshot_file/position`); `None`
/// on a server that does not report one (MySQL): the hand-over's safe mode
/// then covers the difference.
/// A REPEATABLE READ snapshot on `conn` and its binlog position, which
/// `what` (for the message) cannot do without.
pub async fn required_snapshot(
    source: &Connector,
    conn: &mut Conn,
    what: &str,
) -> Result<BinlogPos, DbError> {
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(source.query_err("opening a consistent snapshot"))?;
    snapshot(source, conn)
        .await?
        .ok_or_else(|| DbError::Unexpected {
            role: "source",
            what: format!(
                "the source reports no binlog_snapshot_file/position (MariaDB has them); {what} \
             needs them"
            ),
        })
}

pub async fn snapshot(source: &Connector, conn: &mut Conn) -> Result<Option<BinlogPos>, DbError> {
    let err = || source.query_err("opening a consistent snapshot");
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(err())?;
    let rows: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(err())?;
    let get = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
        (Some(file), Some(pos)) if !file.is_empty() => match pos.parse() {
            Ok(pos) => Ok(Some(BinlogPos {
                file: file.to_string(),
                pos,
            })),
            Err(_) => Err(DbError::Unexpected {
                role: "source",
                what: format!("binlog_snapshot_position is {pos:?}, not a number"),
            }),
        },
        _ => Ok(None),
    }
}
