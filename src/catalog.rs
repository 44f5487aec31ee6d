//! What the job selects on the source: tables with their columns and the
//! key Ferry chunks along, views, routines and triggers.

use std::collections::HashMap;

use mysql_async::prelude::*;
use mysql_async::Conn;
use serde::{Deserialize, Serialize};

use crate::db::{Connector, DbError};
use crate::job::JobSpec;

/// How a column's values are written back as SQL literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnKind {
    /// Integers, floats, dates, times: typed values from the binary protocol.
    Plain,
    /// DECIMAL: exact text, written unquoted.
    Decimal,
    /// YEAR: a number, but as text `0` would mean 2000, so 0 is `0000`.
    Year,
    /// Character data in the connection charset (utf8mb4), written quoted.
    Text,
    /// Binary strings and BLOBs: `_binary'...'` in INSERTs (about as long
    /// as the value), hex in LOAD DATA input.
    Binary,
    /// BIT and spatial values: always hex.
    Bits,
    /// ENUM: its member's name as text; `''` is the error value a
    /// non-strict server stores for an unknown member (index 0), which a
    /// strict session refuses.
    Enum,
    /// MySQL's JSON type (MariaDB's JSON is LONGTEXT and is `Text`).
    Json,
}

impl ColumnKind {
    fn from_data_type(data_type: &str) -> Self {
        match data_type {
            "decimal" | "numeric" => ColumnKind::Decimal,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                ColumnKind::Binary
            }
            "bit" | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" | "geomcollection" => {
                ColumnKind::Bits
            }
            "enum" => ColumnKind::Enum,
            "json" => ColumnKind::Json,
            "year" => ColumnKind::Year,
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "float"
            | "double" | "real" | "date" | "datetime" | "timestamp" | "time" => ColumnKind::Plain,
            _ => ColumnKind::Text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub data_type: String,
    pub column_type: String,
    pub nullable: bool,
    /// Generated (virtual or stored): never written, the target computes it.
    pub generated: bool,
    pub charset: Option<String>,
    pub collation: Option<String>,
    pub kind: ColumnKind,
}

/// The index a table is chunked along: its primary key, or else a unique
/// key whose columns are all NOT NULL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkKey {
    pub index: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub db: String,
    pub name: String,
    pub target_db: String,
    pub columns: Vec<Column>,
    pub key: Option<ChunkKey>,
    pub rows_estimate: u64,
    pub data_bytes: u64,
    pub engine: String,
}

impl Table {
    /// `db.table` on the source, for messages and state keys.
    pub fn id(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }

    /// The columns that are copied (every column but generated ones).
    pub fn copied_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub db: String,
    pub name: String,
    pub target_db: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routine {
    pub db: String,
    pub name: String,
    pub target_db: String,
    /// "PROCEDURE" or "FUNCTION"
    pub kind: String,
}

/// A scheduled event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub db: String,
    pub name: String,
    pub target_db: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub db: String,
    pub name: String,
    pub table: String,
    pub target_db: String,
}

/// Everything a job selects, read from the source's information_schema.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub tables: Vec<Table>,
    pub views: Vec<View>,
    pub routines: Vec<Routine>,
    pub triggers: Vec<Trigger>,
    pub events: Vec<Event>,
    /// Selected databases that do not exist on the source.
    pub missing_databases: Vec<String>,
    /// Table patterns of a `select` that matched nothing: (database, pattern).
    pub unmatched_patterns: Vec<(String, String)>,
}

impl Catalog {
    pub async fn read(job: &JobSpec, source: &Connector) -> Result<Catalog, DbError> {
        let mut conn = source.connect().await?;
        let cat = Self::read_with(job, source, &mut conn).await;
        let _ = conn.disconnect().await;
        cat
    }

    async fn read_with(
        job: &JobSpec,
        source: &Connector,
        conn: &mut Conn,
    ) -> Result<Catalog, DbError> {
        let mut cat = Catalog::default();
        for sel in &job.select {
            let db = sel.database.as_str();
            let exists: Option<String> = conn
                .exec_first(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                    (db,),
                )
                .await
                .map_err(source.query_err("reading databases"))?;
            if exists.is_none() {
                cat.missing_databases.push(db.to_string());
                continue;
            }
            // (name, type, rows, data bytes, engine)
            type Object = (String, String, Option<u64>, Option<u64>, Option<String>);
            let objects: Vec<Object> = conn
                .exec(
                    "SELECT TABLE_NAME, TABLE_TYPE, TABLE_ROWS, DATA_LENGTH, ENGINE \
                     FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
                    (db,),
                )
                .await
                .map_err(source.query_err(format!("listing tables of {db}")))?;
            if let Some(globs) = &sel.tables {
                for g in globs {
                    let hit = objects.iter().any(|(name, ..)| {
                        globset::Glob::new(g)
                            .map(|g| g.compile_matcher().is_match(name))
                            .unwrap_or(false)
                    });
                    if !hit {
                        cat.unmatched_patterns.push((db.to_string(), g.clone()));
                    }
                }
            }
            let columns = read_columns(conn, source, db).await?;
            let keys = read_keys(conn, source, db).await?;
            for (name, kind, rows, bytes, engine) in objects {
                if !sel.matches(&name) {
                    continue;
                }
                match kind.as_str() {
                    "VIEW" => cat.views.push(View {
                        db: db.into(),
                        name,
                        target_db: sel.target_database.clone(),
                    }),
                    "BASE TABLE" | "SYSTEM VERSIONED" => {
                        let cols: Vec<Column> = columns
                            .iter()
                            .filter(|(t, _)| *t == name)
                            .map(|(_, c)| c.clone())
                            .collect();
                        let key = choose_key(&name, &cols, &keys);
                        cat.tables.push(Table {
                            db: db.into(),
                            target_db: sel.target_database.clone(),
                            name,
                            columns: cols,
                            key,
                            rows_estimate: rows.unwrap_or(0),
                            data_bytes: bytes.unwrap_or(0),
                            engine: engine.unwrap_or_default(),
                        })
                    }
                    _ => {} // sequences and other kinds are not copied
                }
            }
            let triggers: Vec<(String, String)> = conn
                .exec(
                    "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS \
                     WHERE TRIGGER_SCHEMA = ? ORDER BY TRIGGER_NAME",
                    (db,),
                )
                .await
                .map_err(source.query_err(format!("listing triggers of {db}")))?;
            for (name, table) in triggers {
                if sel.matches(&table) {
                    cat.triggers.push(Trigger {
                        db: db.into(),
                        name,
                        table,
                        target_db: sel.target_database.clone(),
                    });
                }
            }
            // Routines belong to the database, not to a table: copied when the
            // whole database is selected.
            if sel.tables.is_none() {
                let routines: Vec<(String, String)> = conn
                    .exec(
                        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES \
                         WHERE ROUTINE_SCHEMA = ? ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
                        (db,),
                    )
                    .await
                    .map_err(source.query_err(format!("listing routines of {db}")))?;
                for (name, kind) in routines {
                    cat.routines.push(Routine {
                        db: db.into(),
                        name,
                        kind,
                        target_db: sel.target_database.clone(),
                    });
                }
                let events: Vec<String> = conn
                    .exec(
                        "SELECT EVENT_NAME FROM information_schema.EVENTS \
                         WHERE EVENT_SCHEMA = ? ORDER BY EVENT_NAME",
                        (db,),
                    )
                    .await
                    .map_err(source.query_err(format!("listing events of {db}")))?;
                for name in events {
                    cat.events.push(Event {
                        db: db.into(),
                        name,
                        target_db: sel.target_database.clone(),
                    });
                }
            }
        }
        Ok(cat)
    }
}

impl Catalog {
    /// One table as it is now (for a table that enters a job's selection
    /// while it streams): `None` if the source has no such table.
    pub async fn read_table(
        conn: &mut Conn,
        source: &Connector,
        db: &str,
        name: &str,
        target_db: &str,
    ) -> Result<Option<Table>, DbError> {
        type Object = (Option<u64>, Option<u64>, Option<String>);
        let found: Option<Object> = conn
            .exec_first(
                "SELECT TABLE_ROWS, DATA_LENGTH, ENGINE FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db, name),
            )
            .await
            .map_err(source.query_err(format!("reading {db}.{name}")))?;
        let Some((rows, bytes, engine)) = found else {
            return Ok(None);
        };
        let columns: Vec<Column> = read_columns(conn, source, db)
            .await?
            .into_iter()
            .filter(|(t, _)| t == name)
            .map(|(_, c)| c)
            .collect();
        let keys = read_keys(conn, source, db).await?;
        let key = choose_key(name, &columns, &keys);
        Ok(Some(Table {
            db: db.into(),
            name: name.into(),
            target_db: target_db.into(),
            columns,
            key,
            rows_estimate: rows.unwrap_or(0),
            data_bytes: bytes.unwrap_or(0),
            engine: engine.unwrap_or_default(),
        }))
    }
}

async fn read_columns(
    conn: &mut Conn,
    source: &Connector,
    db: &str,
) -> Result<Vec<(String, Column)>, DbError> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, EXTRA, \
             CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        )
        .await
        .map_err(source.query_err(format!("reading columns of {db}")))?;
    Ok(rows
        .into_iter()
        .map(
            |(table, name, data_type, column_type, nullable, extra, charset, collation)| {
                let data_type = data_type.to_ascii_lowercase();
                let extra = extra.to_ascii_uppercase();
                let generated = [
                    "VIRTUAL GENERATED",
                    "STORED GENERATED",
                    "PERSISTENT GENERATED",
                ]
                .iter()
                .any(|g| extra.contains(g));
                let kind = ColumnKind::from_data_type(&data_type);
                (
                    table,
                    Column {
                        name,
                        data_type,
                        column_type,
                        nullable: nullable == "YES",
                        generated,
                        charset,
                        collation,
                        kind,
                    },
                )
            },
        )
        .collect())
}

/// (table, index, non_unique, column, has prefix)
type KeyPart = (String, String, bool, String, bool);

async fn read_keys(conn: &mut Conn, source: &Connector, db: &str) -> Result<Vec<KeyPart>, DbError> {
    let rows: Vec<(String, String, i64, String, Option<i64>)> = conn
        .exec(
            "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? \
             ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
            (db,),
        )
        .await
        .map_err(source.query_err(format!("reading indexes of {db}")))?;
    Ok(rows
        .into_iter()
        .map(|(t, i, nu, c, sub)| (t, i, nu != 0, c, sub.is_some()))
        .collect())
}

/// The primary key, else the unique key with all columns NOT NULL, no
/// prefix parts and the fewest columns.
fn choose_key(table: &str, columns: &[Column], keys: &[KeyPart]) -> Option<ChunkKey> {
    let mut candidates: Vec<ChunkKey> = Vec::new();
    for part in keys.iter().filter(|k| k.0 == table) {
        let (_, index, non_unique, column, prefix) = part;
        if *non_unique {
            continue;
        }
        let usable = !prefix && columns.iter().any(|c| &c.name == column && !c.nullable);
        match candidates.iter_mut().find(|c| &c.index == index) {
            Some(c) if usable => c.columns.push(column.clone()),
            Some(c) => c.columns.clear(), // marks the index unusable
            None if usable => candidates.push(ChunkKey {
                index: index.clone(),
                columns: vec![column.clone()],
            }),
            None => candidates.push(ChunkKey {
                index: index.clone(),
                columns: Vec::new(),
            }),
        }
    }
    // An index marked unusable above may have gained columns afterwards;
    // recheck every column of the surviving candidates.
    candidates.retain(|c| {
        !c.columns.is_empty()
            && keys
                .iter()
                .filter(|k| k.0 == table && k.1 == c.index)
                .count()
                == c.columns.len()
    });
    if let Some(pk) = candidates.iter().find(|c| c.index == "PRIMARY") {
        return Some(pk.clone());
    }
    candidates.sort_by_key(|c| c.columns.len());
    candidates.into_iter().next()
}

/// Tables linked by foreign keys, each mapped to the name of its group
/// (the smallest table name in it).
pub fn fk_groups(edges: &[(String, String, String, String)]) -> HashMap<(String, String), String> {
    let mut parent: HashMap<(String, String), (String, String)> = HashMap::new();
    fn find(
        parent: &mut HashMap<(String, String), (String, String)>,
        x: &(String, String),
    ) -> (String, String) {
        let p = parent.entry(x.clone()).or_insert_with(|| x.clone()).clone();
        if &p == x {
            return p;
        }
        let root = find(parent, &p);
        parent.insert(x.clone(), root.clone());
        root
    }
    for (cdb, ct, pdb, pt) in edges {
        let a = find(&mut parent, &(cdb.clone(), ct.clone()));
        let b = find(&mut parent, &(pdb.clone(), pt.clone()));
        if a != b {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            parent.insert(hi, lo);
        }
    }
    let keys: Vec<(String, String)> = parent.keys().cloned().collect();
    keys.into_iter()
        .map(|k| {
            let (db, t) = find(&mut parent, &k);
            (k, format!("{db}.{t}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            data_type: "int".into(),
            column_type: "int(11)".into(),
            nullable,
            generated: false,
            charset: None,
            collation: None,
            kind: ColumnKind::Plain,
        }
    }

    fn part(t: &str, i: &str, nu: bool, c: &str) -> KeyPart {
        (t.into(), i.into(), nu, c.into(), false)
    }

    #[test]
    fn primary_key_wins() {
        let cols = [col("a", false), col("b", false)];
        let keys = [part("t", "u", false, "b"), part("t", "PRIMARY", false, "a")];
        assert_eq!(choose_key("t", &cols, &keys).unwrap().index, "PRIMARY");
    }

    #[test]
    fn unique_key_with_a_nullable_column_is_not_used() {
        let cols = [col("a", false), col("b", true), col("c", false)];
        let keys = [
            part("t", "ab", false, "a"),
            part("t", "ab", false, "b"),
            part("t", "c", true, "c"),
        ];
        assert_eq!(choose_key("t", &cols, &keys), None);
        let keys2 = [
            part("t", "ab", false, "a"),
            part("t", "ab", false, "b"),
            part("t", "ac", false, "a"),
            part("t", "ac", false, "c"),
        ];
        let k = choose_key("t", &cols, &keys2).unwrap();
        assert_eq!(k.index, "ac");
        assert_eq!(k.columns, vec!["a", "c"]);
    }
}
