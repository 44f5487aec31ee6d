//! XA transactions: the rows of a prepared one are stashed in the state
//! until its outcome (XA COMMIT or XA ROLLBACK) arrives, maybe after a
//! restart.

use std::sync::Arc;

use crate::model::{BinlogPos, KeyValue, StoredColumn, StoredRows, XaRows};
use crate::source::binlog::{Op, RowFlags, Rows, TableInfo};
use crate::source::decode::{ColumnInfo, Image};
use crate::state::Store;

use super::error::CdcError;

/// The rows of XA transaction `xid`, stashed at its XA PREPARE, for its
/// XA COMMIT at `at`.
pub(crate) fn prepared_xa(
    store: &Store,
    job: &str,
    xid: &str,
    at: &BinlogPos,
) -> Result<XaRows, CdcError> {
    store.xa(job, xid)?.ok_or_else(|| CdcError::XaUnknown {
        xid: xid.to_string(),
        at: at.to_string(),
    })
}

/// A prepared transaction's rows as the state keeps them.
pub fn stash(rows: &[Rows]) -> XaRows {
    let events = rows
        .iter()
        .map(|r| {
            let (mut before_columns, mut after_columns) = (Vec::new(), Vec::new());
            let mut out = Vec::with_capacity(r.images.len());
            for (b, a) in &r.images {
                let side = |side: &mut Vec<StoredColumn>, im: &Option<Image>| {
                    im.as_ref().map(|im| {
                        if side.is_empty() {
                            *side = im
                                .columns
                                .iter()
                                .map(|c| StoredColumn {
                                    name: c.name.clone(),
                                    ty: c.ty as u8,
                                    unsigned: c.unsigned,
                                    primary: c.primary,
                                    collation: c.collation,
                                })
                                .collect();
                        }
                        im.values.iter().cloned().map(KeyValue::from).collect()
                    })
                };
                let before = side(&mut before_columns, b);
                let after = side(&mut after_columns, a);
                out.push((before, after));
            }
            StoredRows {
                db: r.table.db.to_string(),
                table: r.table.name.to_string(),
                op: match r.op {
                    Op::Insert => 0,
                    Op::Update => 1,
                    Op::Delete => 2,
                },
                no_foreign_key_checks: r.flags.no_foreign_key_checks,
                relaxed_unique_checks: r.flags.relaxed_unique_checks,
                end: r.end.clone(),
                columns: [before_columns, after_columns],
                rows: out,
            }
        })
        .collect();
    XaRows { events }
}

/// The rows again, for the transaction's XA COMMIT.
pub fn unstash(stored: XaRows) -> Vec<Rows> {
    stored
        .events
        .into_iter()
        .map(|e| {
            let cols = |c: &[StoredColumn]| -> Arc<[ColumnInfo]> {
                c.iter()
                    .map(|c| ColumnInfo {
                        name: c.name.clone(),
                        ty: mysql_async::consts::ColumnType::try_from(c.ty)
                            .unwrap_or(mysql_async::consts::ColumnType::MYSQL_TYPE_BLOB),
                        unsigned: c.unsigned,
                        primary: c.primary,
                        collation: c.collation,
                        set_flag: false,
                    })
                    .collect()
            };
            let (before, after) = (cols(&e.columns[0]), cols(&e.columns[1]));
            let image = |columns: &Arc<[ColumnInfo]>, v: Option<Vec<KeyValue>>| {
                v.map(|v| Image {
                    columns: columns.clone(),
                    values: v.iter().map(mysql_async::Value::from).collect(),
                })
            };
            Rows {
                table: Arc::new(TableInfo {
                    db: Arc::from(e.db.as_str()),
                    name: Arc::from(e.table.as_str()),
                    ..Default::default()
                }),
                op: match e.op {
                    0 => Op::Insert,
                    1 => Op::Update,
                    _ => Op::Delete,
                },
                images: e
                    .rows
                    .into_iter()
                    .map(|(b, a)| (image(&before, b), image(&after, a)))
                    .collect(),
                flags: RowFlags {
                    no_foreign_key_checks: e.no_foreign_key_checks,
                    relaxed_unique_checks: e.relaxed_unique_checks,
                },
                end: e.end,
                timestamp: 0,
                server_id: 0,
            }
        })
        .collect()
}
