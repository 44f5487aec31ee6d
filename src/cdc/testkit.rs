//! Changes, jobs and stores for the tests that drive the CDC's loops
//! (the apply engine, the subscription's batches) without a server.

use std::sync::Arc;

use mysql_async::consts::ColumnType;
use mysql_async::Value;

use crate::job::JobSpec;
use crate::model::BinlogPos;
use crate::model::Checkpoint;
use crate::model::SessionContext;
use crate::source::binlog::{Change, Op, Query, RowFlags, Rows, TableInfo};
use crate::source::ddl::Statement;
use crate::source::decode::{ColumnInfo, Image};
use crate::state::Store;

pub fn pos(p: u64) -> BinlogPos {
    BinlogPos {
        file: "binlog.000001".into(),
        pos: p,
    }
}

/// A job named `j` of `mode` reading database `shop` (with a target
/// unless it subscribes); `rest` is the remaining TOML (`[[select]]`,
/// `[sink]`, ...).
pub fn job(mode: &str, rest: &str) -> JobSpec {
    let target = match mode {
        "subscribe" => "",
        _ => "[target]\nhost = \"h\"\nport = 2\nuser = \"u\"\npassword_env = \"P\"\n",
    };
    crate::job::parse_job(
        "t.toml",
        &format!(
            "name = \"j\"\nmode = \"{mode}\"\n[source]\nhost = \"h\"\nport = 1\nuser = \"u\"\n\
             password_env = \"P\"\n{target}{rest}"
        ),
    )
    .expect("job")
}

pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("store");
    (dir, store)
}

pub fn table(name: &str) -> Arc<TableInfo> {
    Arc::new(TableInfo {
        db: Arc::from("shop"),
        name: Arc::from(name),
        ..Default::default()
    })
}

/// An insert of `id` into `shop.<t>` (one INT primary key column).
pub fn insert(t: &str, id: i64, end: u64) -> Change {
    let columns: Arc<[ColumnInfo]> = Arc::from(vec![ColumnInfo {
        name: "id".into(),
        ty: ColumnType::MYSQL_TYPE_LONG,
        unsigned: false,
        primary: true,
        collation: 63,
        set_flag: false,
    }]);
    Change::Rows(Rows {
        table: table(t),
        op: Op::Insert,
        images: vec![(
            None,
            Some(Image {
                columns,
                values: vec![Value::Int(id)],
            }),
        )],
        flags: RowFlags::default(),
        end: pos(end),
        timestamp: 0,
        server_id: 1,
    })
}

/// A statement outside a transaction, from a session in `shop` whose
/// timestamp is 77.
pub fn ddl(sql: &str, end: u64) -> Change {
    Change::Query(Box::new(Query {
        statement: Statement::parse(sql, false).expect("parses"),
        default_db: "shop".into(),
        context: SessionContext {
            timestamp: 77,
            ..Default::default()
        },
        end: pos(end),
        gtid: None,
        in_txn: false,
        server_id: 1,
    }))
}

pub fn begin() -> Change {
    Change::Begin {
        gtid: None,
        xa: false,
    }
}

pub fn commit(end: u64) -> Change {
    Change::Commit {
        end: pos(end),
        gtid: None,
    }
}

/// An XA transaction inserting `id` at `at`, prepared at `at + 5`.
pub fn xa_prepared(xid: &str, id: i64, at: u64) -> Vec<Change> {
    vec![
        Change::Begin {
            gtid: None,
            xa: true,
        },
        insert("t", id, at),
        Change::XaPrepare {
            xid: xid.into(),
            end: pos(at + 5),
            gtid: None,
        },
    ]
}

pub fn xa_end(xid: &str, commit: bool, end: u64) -> Change {
    Change::XaEnd {
        xid: xid.into(),
        commit,
        end: pos(end),
        gtid: None,
    }
}

pub fn cp() -> Checkpoint {
    Checkpoint {
        position: pos(4),
        gtid: None,
        unix_ms: 0,
        safe_until: None,
    }
}
