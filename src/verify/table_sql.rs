//! The SQL one table is verified with, the same for both sides: the
//! canonical row hash, range and key conditions, the row reads.

use mysql_async::Value;

use crate::catalog::{Column, ColumnKind, Table};
use crate::db::{qualified, quote_ident};
use crate::full::range_condition;
use crate::model::KeyValue;

/// A key range: lower bound exclusive, upper inclusive, `None` open.
#[derive(Debug, Clone, Default)]
pub(super) struct Range {
    pub(super) lo: Option<Vec<KeyValue>>,
    pub(super) hi: Option<Vec<KeyValue>>,
}

/// The SQL of one table, for both sides.
pub(crate) struct TableSql<'t> {
    pub table: &'t Table,
    /// The columns read and compared (copied columns, plus any generated
    /// key column).
    pub cols: Vec<&'t Column>,
    /// Positions of the key columns in `cols` (every column when keyless).
    pub key_idx: Vec<usize>,
    pub key_cols: Vec<String>,
    /// The per-row hash expression.
    pub(super) hash: String,
    /// `db`.`table` on the source and on the target.
    pub src_name: String,
    pub tgt_name: String,
    /// `FORCE INDEX (...)`, or nothing for a keyless table.
    pub(super) force: String,
    pub(super) select_list: String,
    pub(super) order: String,
}

impl<'t> TableSql<'t> {
    pub(crate) fn new(table: &'t Table) -> TableSql<'t> {
        let mut cols: Vec<&Column> = table.copied_columns().collect();
        if let Some(key) = &table.key {
            for k in &key.columns {
                if !cols.iter().any(|c| &c.name == k) {
                    if let Some(c) = table.columns.iter().find(|c| &c.name == k) {
                        cols.push(c);
                    }
                }
            }
        }
        let key_cols: Vec<String> = match &table.key {
            Some(k) => k.columns.clone(),
            None => cols.iter().map(|c| c.name.clone()).collect(),
        };
        let key_idx = key_cols
            .iter()
            .filter_map(|k| cols.iter().position(|c| &c.name == k))
            .collect();
        let mut parts: Vec<String> = cols.iter().map(|c| canonical(c)).collect();
        let nullable: Vec<String> = cols
            .iter()
            .filter(|c| c.nullable)
            .map(|c| format!("ISNULL({})", quote_ident(&c.name)))
            .collect();
        if !nullable.is_empty() {
            parts.push(format!("CONCAT({})", nullable.join(", ")));
        }
        let hash = format!("CRC32(CONCAT_WS('#', {}))", parts.join(", "));
        let force = match &table.key {
            Some(k) => format!(" FORCE INDEX ({})", quote_ident(&k.index)),
            None => String::new(),
        };
        let quoted: Vec<String> = cols.iter().map(|c| quote_ident(&c.name)).collect();
        let order = match &table.key {
            Some(k) => {
                let k: Vec<String> = k.columns.iter().map(|c| quote_ident(c)).collect();
                format!(" ORDER BY {}", k.join(", "))
            }
            None => String::new(),
        };
        TableSql {
            table,
            cols,
            key_idx,
            key_cols,
            hash,
            src_name: qualified(&table.db, &table.name),
            tgt_name: qualified(&table.target_db, &table.name),
            force,
            select_list: quoted.join(", "),
            order,
        }
    }

    pub(super) fn keyless(&self) -> bool {
        self.table.key.is_none()
    }

    pub(super) fn name(&self, side: Side) -> &str {
        match side {
            Side::Source => &self.src_name,
            Side::Target => &self.tgt_name,
        }
    }

    pub(super) fn checksum_sql(&self, side: Side, cond: &str) -> String {
        let sum = match self.keyless() {
            true => format!(", COALESCE(SUM({}), 0)", self.hash),
            false => String::new(),
        };
        format!(
            "SELECT COUNT(*), BIT_XOR({}){sum} FROM {}{} WHERE {cond}",
            self.hash,
            self.name(side),
            self.force
        )
    }

    pub(crate) fn rows_sql(&self, side: Side, cond: &str) -> String {
        format!(
            "SELECT {} FROM {}{} WHERE {cond}{}",
            self.select_list,
            self.name(side),
            self.force,
            self.order
        )
    }

    pub(super) fn range(&self, r: &Range) -> (String, Vec<Value>) {
        match &self.table.key {
            Some(k) => range_condition(&k.columns, r.lo.as_ref(), r.hi.as_ref()),
            None => ("1".into(), Vec::new()),
        }
    }

    /// The key of a fetched row, as bytes to match rows of both sides.
    pub(super) fn key_bytes(&self, row: &[Value]) -> Vec<u8> {
        postcard::to_stdvec(&self.key_of(row)).unwrap_or_default()
    }

    pub(crate) fn key_of(&self, row: &[Value]) -> Vec<KeyValue> {
        self.key_idx
            .iter()
            .filter_map(|&i| row.get(i))
            .map(|v| v.clone().into())
            .collect()
    }

    /// `key IN (...)` for a batch of keys.
    pub(crate) fn keys_condition(&self, keys: &[Vec<KeyValue>]) -> (String, Vec<Value>) {
        let mut params = Vec::new();
        let cond = if let [col] = self.key_cols.as_slice() {
            params.extend(keys.iter().filter_map(|k| k.first()).map(Value::from));
            format!(
                "{} IN ({})",
                quote_ident(col),
                vec!["?"; keys.len()].join(", ")
            )
        } else {
            let one: Vec<String> = self
                .key_cols
                .iter()
                .map(|c| format!("{} = ?", quote_ident(c)))
                .collect();
            let one = format!("({})", one.join(" AND "));
            for k in keys {
                params.extend(k.iter().map(Value::from));
            }
            vec![one; keys.len()].join(" OR ")
        };
        (cond, params)
    }
}

/// A column's value in the canonical row encoding. Text is compared as
/// its utf8mb4 bytes, so a case or trailing-space difference counts.
pub(super) fn canonical(c: &Column) -> String {
    let q = quote_ident(&c.name);
    let texty = matches!(
        c.data_type.as_str(),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext"
    );
    match (c.kind, c.charset.as_deref()) {
        (ColumnKind::Text, Some("utf8mb4")) if texty => format!("{q} COLLATE utf8mb4_bin"),
        (ColumnKind::Text, Some(cs)) if texty && cs != "binary" => {
            format!("CONVERT({q} USING utf8mb4) COLLATE utf8mb4_bin")
        }
        _ => q,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Target,
}
