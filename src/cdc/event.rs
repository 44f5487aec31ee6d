//! Change events for `subscribe` jobs: a Debezium-style JSON envelope per
//! row change (`before`, `after`, `op`, `source`, `ts_ms`), values typed
//! faithfully (DECIMAL as a string, binary as base64, dates ISO-8601, JSON
//! as JSON, ENUM as its name, SET as a list of names).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use mysql_async::consts::ColumnType;
use mysql_async::Value;
use serde_json::{json, Value as Json};

use crate::source::binlog::TableInfo;
use crate::source::decode::ColumnInfo;

/// What a table's columns need beyond their binlog type.
#[derive(Debug, Default, Clone)]
pub struct TableMeta {
    /// MariaDB's JSON is LONGTEXT with a `json_valid` check: these columns
    /// are emitted as JSON, not as strings.
    pub json: Vec<bool>,
    pub enums: Vec<Option<Vec<String>>>,
    pub sets: Vec<Option<Vec<String>>>,
    /// Columns left out (`[sink] exclude_columns`).
    pub excluded: Vec<bool>,
}

impl TableMeta {
    /// From a table's TABLE_MAP (ENUM and SET names from its FULL
    /// metadata) and its JSON and excluded column names.
    pub fn new(
        table: &TableInfo,
        names: &[String],
        json_columns: &[String],
        excluded: &dyn Fn(&str) -> bool,
    ) -> TableMeta {
        TableMeta {
            json: names.iter().map(|c| json_columns.contains(c)).collect(),
            enums: table.enums.clone(),
            sets: table.sets.clone(),
            excluded: names.iter().map(|c| excluded(c)).collect(),
        }
    }
}

/// Where an event comes from, for its `source` block; `(file, pos, row)`
/// is unique per row change and the same when replayed after a crash.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub job: &'a str,
    pub db: &'a str,
    pub table: &'a str,
    pub file: &'a str,
    pub pos: u64,
    pub row: u64,
    pub gtid: Option<&'a str>,
    pub server_id: u32,
    /// Event time, unix ms (the binlog has seconds).
    pub ts_ms: u64,
    pub snapshot: bool,
}

impl Source<'_> {
    /// `file:pos:row`: a consumer's deduplication key (also the NATS
    /// message id).
    pub fn id(&self) -> String {
        format!("{}:{}:{}", self.file, self.pos, self.row)
    }
}

/// A row image with what it takes to write it as JSON.
#[derive(Clone, Copy)]
pub struct RowRef<'a> {
    pub columns: &'a [ColumnInfo],
    pub values: &'a [Value],
    pub meta: &'a TableMeta,
}

/// One row change as a JSON envelope (written straight into bytes). `op`:
/// c (insert), u (update), d (delete), r (snapshot read), ddl (with the
/// statement in `ddl`).
pub fn encode(
    op: &str,
    before: Option<RowRef<'_>>,
    after: Option<RowRef<'_>>,
    src: &Source<'_>,
    now_ms: u64,
    ddl: Option<&str>,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(512);
    b.extend_from_slice(b"{\"before\":");
    write_row(&mut b, before);
    b.extend_from_slice(b",\"after\":");
    write_row(&mut b, after);
    b.extend_from_slice(b",\"op\":");
    write_str(&mut b, op);
    b.extend_from_slice(b",\"source\":{\"connector\":\"ferry\",\"job\":");
    write_str(&mut b, src.job);
    b.extend_from_slice(b",\"db\":");
    write_str(&mut b, src.db);
    b.extend_from_slice(b",\"table\":");
    write_str(&mut b, src.table);
    b.extend_from_slice(b",\"file\":");
    write_str(&mut b, src.file);
    b.extend_from_slice(b",\"pos\":");
    b.extend_from_slice(itoa::Buffer::new().format(src.pos).as_bytes());
    b.extend_from_slice(b",\"row\":");
    b.extend_from_slice(itoa::Buffer::new().format(src.row).as_bytes());
    b.extend_from_slice(b",\"gtid\":");
    match src.gtid {
        Some(g) => write_str(&mut b, g),
        None => b.extend_from_slice(b"null"),
    }
    b.extend_from_slice(b",\"server_id\":");
    b.extend_from_slice(itoa::Buffer::new().format(src.server_id).as_bytes());
    b.extend_from_slice(b",\"ts_ms\":");
    b.extend_from_slice(itoa::Buffer::new().format(src.ts_ms).as_bytes());
    b.extend_from_slice(if src.snapshot {
        b",\"snapshot\":true},\"ts_ms\":"
    } else {
        b",\"snapshot\":false},\"ts_ms\":"
    });
    b.extend_from_slice(itoa::Buffer::new().format(now_ms).as_bytes());
    if let Some(statement) = ddl {
        b.extend_from_slice(b",\"ddl\":");
        write_str(&mut b, statement);
    }
    b.push(b'}');
    b
}

fn write_str(b: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *b, s);
}

/// A row image as a JSON object of its (not excluded) columns, or null.
fn write_row(b: &mut Vec<u8>, row: Option<RowRef<'_>>) {
    let Some(r) = row else {
        b.extend_from_slice(b"null");
        return;
    };
    write_columns(b, r, |i| !r.meta.excluded.get(i).copied().unwrap_or(false));
}

fn write_columns(b: &mut Vec<u8>, r: RowRef<'_>, keep: impl Fn(usize) -> bool) {
    b.push(b'{');
    let mut first = true;
    for (i, (c, v)) in r.columns.iter().zip(r.values).enumerate() {
        if !keep(i) {
            continue;
        }
        if !first {
            b.push(b',');
        }
        first = false;
        write_str(b, &c.name);
        b.push(b':');
        let _ = serde_json::to_writer(&mut *b, &value(c, v, r.meta, i));
    }
    b.push(b'}');
}

/// The primary key of a row image as JSON (the Kafka message key), or
/// `None` for a table without one.
pub fn key(r: RowRef<'_>) -> Option<Vec<u8>> {
    if !r.columns.iter().any(|c| c.primary) {
        return None;
    }
    let mut b = Vec::with_capacity(32);
    write_columns(&mut b, r, |i| r.columns.get(i).is_some_and(|c| c.primary));
    Some(b)
}

/// One value, typed for JSON consumers.
pub fn value(c: &ColumnInfo, v: &Value, meta: &TableMeta, i: usize) -> Json {
    use ColumnType as T;
    match v {
        Value::NULL => Json::Null,
        Value::Int(n) => match (&meta.enums.get(i), c.ty) {
            (Some(Some(names)), _) => enum_name(names, *n as u64),
            _ => json!(n),
        },
        Value::UInt(n) => {
            if let Some(Some(names)) = meta.enums.get(i) {
                return enum_name(names, *n);
            }
            if let Some(Some(names)) = meta.sets.get(i) {
                return set_names(names, *n);
            }
            json!(n)
        }
        Value::Float(f) => json!(f),
        Value::Double(d) => json!(d),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let date = format!("{y:04}-{mo:02}-{d:02}");
            if c.ty == T::MYSQL_TYPE_DATE || c.ty == T::MYSQL_TYPE_NEWDATE {
                return Json::String(date);
            }
            let frac = if *us > 0 {
                format!(".{us:06}")
            } else {
                String::new()
            };
            let zone = match c.ty {
                T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2 => "Z",
                _ => "",
            };
            Json::String(format!("{date}T{h:02}:{mi:02}:{s:02}{frac}{zone}"))
        }
        Value::Time(neg, days, h, mi, s, us) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let frac = if *us > 0 {
                format!(".{us:06}")
            } else {
                String::new()
            };
            Json::String(format!(
                "{}{hours:02}:{mi:02}:{s:02}{frac}",
                if *neg { "-" } else { "" }
            ))
        }
        Value::Bytes(b) => bytes(c, b, meta, i),
    }
}

fn bytes(c: &ColumnInfo, b: &[u8], meta: &TableMeta, i: usize) -> Json {
    use ColumnType as T;
    match c.ty {
        T::MYSQL_TYPE_NEWDECIMAL | T::MYSQL_TYPE_DECIMAL => {
            return Json::String(String::from_utf8_lossy(b).into_owned())
        }
        T::MYSQL_TYPE_JSON => return parse_json(b),
        T::MYSQL_TYPE_YEAR => {
            if let Some(n) = std::str::from_utf8(b)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
            {
                return json!(n);
            }
        }
        T::MYSQL_TYPE_BIT => {
            return json!(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
        }
        T::MYSQL_TYPE_ENUM => {
            if let Some(Some(names)) = meta.enums.get(i) {
                let n = b
                    .iter()
                    .rev()
                    .fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
                return enum_name(names, n);
            }
        }
        _ => {}
    }
    if meta.json.get(i).copied().unwrap_or(false) {
        return parse_json(b);
    }
    // A SET read by a SELECT (a snapshot) is "a,b".
    if c.ty == T::MYSQL_TYPE_SET || c.set_flag {
        let s = text(c, b);
        return Json::Array(
            s.split(',')
                .filter(|x| !x.is_empty())
                .map(|x| Json::String(x.to_string()))
                .collect(),
        );
    }
    if c.is_bytes() {
        return Json::String(base64::engine::general_purpose::STANDARD.encode(b));
    }
    Json::String(text(c, b))
}

/// Character data as UTF-8: utf8/utf8mb4 as is, latin1 mapped per byte.
fn text(c: &ColumnInfo, b: &[u8]) -> String {
    if is_latin1(c.collation) {
        return b.iter().map(|&x| char::from(x)).collect();
    }
    String::from_utf8_lossy(b).into_owned()
}

/// latin1 collations (the binlog carries a column's bytes in its charset;
/// a SELECT converts them to the session's utf8mb4).
fn is_latin1(collation: u16) -> bool {
    matches!(collation, 5 | 8 | 15 | 31 | 47 | 48 | 49 | 94)
}

fn parse_json(b: &[u8]) -> Json {
    serde_json::from_slice(b)
        .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(b).into_owned()))
}

/// ENUM index `n` (1-based; 0 is the empty error value) as its name.
fn enum_name(names: &[String], n: u64) -> Json {
    match n {
        0 => Json::String(String::new()),
        n => names
            .get(n as usize - 1)
            .map_or_else(|| json!(n), |s| Json::String(s.clone())),
    }
}

fn set_names(names: &[String], bits: u64) -> Json {
    Json::Array(
        names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 64 && bits & (1 << i) != 0)
            .map(|(_, s)| Json::String(s.clone()))
            .collect(),
    )
}

/// TableMeta per table, built once per TABLE_MAP (the reader shares one
/// [`TableInfo`] per TABLE_MAP, so its address names it).
#[derive(Default)]
pub struct MetaCache {
    by_table: HashMap<usize, (Arc<TableInfo>, Arc<TableMeta>)>,
}

impl MetaCache {
    /// The table's meta; `make` builds it the first time.
    pub fn get(
        &mut self,
        table: &Arc<TableInfo>,
        make: impl FnOnce() -> TableMeta,
    ) -> Arc<TableMeta> {
        let key = Arc::as_ptr(table) as usize;
        self.by_table
            .entry(key)
            // The cache holds the table too, so its address is not reused.
            .or_insert_with(|| (table.clone(), Arc::new(make())))
            .1
            .clone()
    }

    /// Forgets everything (the schema changed).
    pub fn clear(&mut self) {
        self.by_table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType, collation: u16) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            ty,
            unsigned: false,
            primary: false,
            collation,
            set_flag: false,
        }
    }

    #[test]
    fn envelopes_are_json_with_the_key_apart() {
        let mut id = col("id", ColumnType::MYSQL_TYPE_LONG, 63);
        id.primary = true;
        let cols = vec![
            id,
            col("name \"q\"", ColumnType::MYSQL_TYPE_VARCHAR, 45),
            col("pw", ColumnType::MYSQL_TYPE_VARCHAR, 45),
        ];
        let meta = TableMeta {
            excluded: vec![false, false, true],
            ..TableMeta::default()
        };
        let values = vec![
            Value::Int(7),
            Value::Bytes("a\nb".into()),
            Value::Bytes(b"secret".to_vec()),
        ];
        let row = RowRef {
            columns: &cols,
            values: &values,
            meta: &meta,
        };
        let src = Source {
            job: "j",
            db: "d",
            table: "t",
            file: "binlog.000001",
            pos: 99,
            row: 2,
            gtid: Some("0-1-5"),
            server_id: 1,
            ts_ms: 1000,
            snapshot: false,
        };
        let e: Json = serde_json::from_slice(&encode("u", Some(row), Some(row), &src, 5, None))
            .expect("JSON");
        assert_eq!(e["after"], json!({"id": 7, "name \"q\"": "a\nb"}));
        assert_eq!(e["op"], "u");
        assert_eq!(e["source"]["pos"], 99);
        assert_eq!(e["source"]["gtid"], "0-1-5");
        assert_eq!(e["ts_ms"], 5);
        assert_eq!(src.id(), "binlog.000001:99:2");
        assert_eq!(key(row).expect("key"), br#"{"id":7}"#.to_vec());
        let d: Json =
            serde_json::from_slice(&encode("ddl", None, None, &src, 5, Some("DROP TABLE t")))
                .expect("JSON");
        assert_eq!(
            (d["before"].clone(), d["ddl"].clone()),
            (Json::Null, json!("DROP TABLE t"))
        );
    }

    #[test]
    fn values_are_typed_for_consumers() {
        let m = TableMeta {
            json: vec![false, false, false, false, false, true],
            enums: vec![
                None,
                None,
                None,
                Some(vec!["red".into(), "blue".into()]),
                None,
                None,
            ],
            sets: vec![
                None,
                None,
                None,
                None,
                Some(vec!["a".into(), "b".into(), "c".into()]),
                None,
            ],
            excluded: vec![false; 6],
        };
        let dec = col("d", ColumnType::MYSQL_TYPE_NEWDECIMAL, 63);
        assert_eq!(
            value(&dec, &Value::Bytes(b"1.50".to_vec()), &m, 0),
            json!("1.50")
        );
        let blob = col("b", ColumnType::MYSQL_TYPE_BLOB, 63);
        assert_eq!(
            value(&blob, &Value::Bytes(vec![0, 255]), &m, 1),
            json!("AP8=")
        );
        let ts = col("t", ColumnType::MYSQL_TYPE_TIMESTAMP2, 63);
        assert_eq!(
            value(&ts, &Value::Date(2024, 2, 29, 1, 2, 3, 5), &m, 2),
            json!("2024-02-29T01:02:03.000005Z")
        );
        let e = col("e", ColumnType::MYSQL_TYPE_ENUM, 45);
        assert_eq!(value(&e, &Value::Int(2), &m, 3), json!("blue"));
        let s = col("s", ColumnType::MYSQL_TYPE_SET, 45);
        assert_eq!(value(&s, &Value::UInt(0b101), &m, 4), json!(["a", "c"]));
        let j = col("j", ColumnType::MYSQL_TYPE_BLOB, 45);
        assert_eq!(
            value(&j, &Value::Bytes(br#"{"k": [1]}"#.to_vec()), &m, 5),
            json!({"k": [1]})
        );
        let lat = col("l", ColumnType::MYSQL_TYPE_VARCHAR, 8);
        assert_eq!(value(&lat, &Value::Bytes(vec![0xe9]), &m, 0), json!("é"));
        let tm = col("tm", ColumnType::MYSQL_TYPE_TIME2, 63);
        assert_eq!(
            value(&tm, &Value::Time(true, 1, 2, 3, 4, 0), &m, 0),
            json!("-26:03:04")
        );
    }
}
