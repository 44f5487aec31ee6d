//! The selected tables as PostgreSQL tables: what the catalog lacks is read
//! from the source's `information_schema` (defaults, AUTO_INCREMENT,
//! indexes, foreign keys, MariaDB's JSON checks), translated column by
//! column (`types`), and written as DDL in two parts: the tables before
//! the data, their keys, indexes, foreign keys, sequences and triggers
//! after it.

use std::collections::{BTreeMap, HashMap};

use mysql_async::prelude::*;

use crate::catalog::{Catalog, Table};
use crate::db::{Connector, DbError};
use crate::job::JobSpec;

use super::types::{self, ident, literal, Note, PgColumn, SourceColumn};

/// An index of the source table, as PostgreSQL will have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgIndex {
    pub name: String,
    pub unique: bool,
    /// Columns with their prefix length (`SUB_PART`), if any.
    pub columns: Vec<(String, Option<u32>)>,
    /// A SPATIAL index on PostGIS: GiST.
    pub gist: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    /// Target schema and table.
    pub references: (String, String),
    pub referenced_columns: Vec<String>,
    pub on_update: String,
    pub on_delete: String,
}

/// A selected table as PostgreSQL will have it.
#[derive(Debug, Clone)]
pub struct PgTable {
    pub source: Table,
    /// The target schema (the selection's database, renamed).
    pub schema: String,
    pub columns: Vec<PgColumn>,
    pub primary: Option<Vec<String>>,
    pub indexes: Vec<PgIndex>,
    pub foreign_keys: Vec<PgForeignKey>,
    /// What the translation does that the user must know, per table.
    pub notes: Vec<Note>,
}

impl PgTable {
    /// `"schema"."table"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.source.name))
    }

    /// Every note of the table and its columns.
    pub fn all_notes(&self) -> impl Iterator<Item = &Note> {
        self.notes
            .iter()
            .chain(self.columns.iter().flat_map(|c| c.notes.iter()))
    }

    /// `CREATE TABLE`, without keys or indexes (they follow the data).
    pub fn create_sql(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(column_sql).collect();
        format!("CREATE TABLE {} ({})", self.qualified(), cols.join(", "))
    }

    /// The statements after the data, each safe to run again: the primary
    /// key and the indexes (foreign keys and sequences come after every
    /// table: see [`PgTable::foreign_key_sql`]; triggers in
    /// [`PgTable::trigger_sql`]).
    pub fn after_data_sql(&self) -> Vec<String> {
        let t = self.qualified();
        let mut out = Vec::new();
        if let Some(pk) = &self.primary {
            let cols: Vec<String> = pk.iter().map(|c| ident(c)).collect();
            let name = pg_name(&format!("{}_pkey", self.source.name));
            out.push(format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = \
                 {rel}::regclass AND contype = 'p') THEN ALTER TABLE {t} ADD CONSTRAINT {} \
                 PRIMARY KEY ({}); END IF; END $$",
                ident(&name),
                cols.join(", "),
                rel = literal(&t),
            ));
        }
        for i in &self.indexes {
            let cols: Vec<String> = i
                .columns
                .iter()
                .map(|(c, prefix)| match (prefix, self.column(c)) {
                    // MySQL shows a SUB_PART for SPATIAL indexes.
                    _ if i.gist => ident(c),
                    (Some(n), Some(col)) if col.sql_type == "bytea" => {
                        format!("(substring({} from 1 for {n}))", ident(c))
                    }
                    (Some(n), _) => format!("(left({}, {n}))", ident(c)),
                    (None, _) => ident(c),
                })
                .collect();
            out.push(format!(
                "CREATE {}INDEX IF NOT EXISTS {} ON {t} {}({})",
                if i.unique { "UNIQUE " } else { "" },
                ident(&pg_name(&format!("{}_{}", self.source.name, i.name))),
                if i.gist { "USING gist " } else { "" },
                cols.join(", ")
            ));
        }
        out
    }

    /// The ON UPDATE CURRENT_TIMESTAMP columns' trigger, safe to run again
    /// (only at the end of a job that replicates: while the binlog is
    /// applied, the source's values arrive with the rows).
    pub fn trigger_sql(&self) -> Vec<String> {
        let t = self.qualified();
        let mut out = Vec::new();
        let stamped: Vec<&PgColumn> = self.columns.iter().filter(|c| c.on_update_now).collect();
        if !stamped.is_empty() {
            let func = format!(
                "{}.{}",
                ident(&self.schema),
                ident(&pg_name(&format!("{}_on_update", self.source.name)))
            );
            let sets: Vec<String> = stamped
                .iter()
                .map(|c| {
                    let now = if c.sql_type.starts_with("timestamptz") {
                        "CURRENT_TIMESTAMP"
                    } else {
                        "LOCALTIMESTAMP"
                    };
                    format!(
                        "IF NEW IS DISTINCT FROM OLD AND NEW.{c} IS NOT DISTINCT FROM OLD.{c} \
                         THEN NEW.{c} := {now}; END IF;",
                        c = ident(&c.name)
                    )
                })
                .collect();
            out.push(format!(
                "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS \
                 $ferry$ BEGIN {} RETURN NEW; END $ferry$",
                sets.join(" ")
            ));
            let trigger = ident(&pg_name(&format!("{}_on_update", self.source.name)));
            out.push(format!(
                "DROP TRIGGER IF EXISTS {trigger} ON {t}; CREATE TRIGGER {trigger} BEFORE UPDATE \
                 ON {t} FOR EACH ROW EXECUTE PROCEDURE {func}()"
            ));
        }
        out
    }

    /// The table's foreign keys (after every table has its keys).
    pub fn foreign_key_sql(&self) -> Vec<String> {
        let t = self.qualified();
        self.foreign_keys
            .iter()
            .map(|fk| {
                let cols: Vec<String> = fk.columns.iter().map(|c| ident(c)).collect();
                let refs: Vec<String> = fk.referenced_columns.iter().map(|c| ident(c)).collect();
                let name = pg_name(&fk.name);
                format!(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = \
                     {rel}::regclass AND conname = {}) THEN ALTER TABLE {t} ADD CONSTRAINT {} \
                     FOREIGN KEY ({}) REFERENCES {}.{} ({}) ON UPDATE {} ON DELETE {} \
                     DEFERRABLE; END IF; END $$",
                    literal(&name),
                    ident(&name),
                    cols.join(", "),
                    ident(&fk.references.0),
                    ident(&fk.references.1),
                    refs.join(", "),
                    fk.on_update,
                    fk.on_delete,
                    rel = literal(&t),
                )
            })
            .collect()
    }

    pub fn column(&self, name: &str) -> Option<&PgColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The identity column, if the table has one.
    pub fn identity(&self) -> Option<&PgColumn> {
        self.columns.iter().find(|c| c.identity)
    }
}

/// A column's definition in `CREATE TABLE` or `ADD COLUMN`.
pub fn column_sql(c: &PgColumn) -> String {
    let mut s = format!("{} {}", ident(&c.name), c.sql_type);
    if c.identity {
        s.push_str(" GENERATED BY DEFAULT AS IDENTITY");
    }
    if !c.nullable {
        s.push_str(" NOT NULL");
    }
    if let Some(d) = &c.default {
        s.push_str(&format!(" DEFAULT {d}"));
    }
    if let Some(check) = members_check(c) {
        s.push_str(&format!(" {check}"));
    }
    s
}

/// The CHECK that keeps an ENUM column to its members ('' is the value a
/// non-strict MySQL stores for an unknown member).
pub fn members_check(c: &PgColumn) -> Option<String> {
    let m = c.members.as_ref()?;
    let list: Vec<String> = m.iter().map(|x| literal(x)).chain([literal("")]).collect();
    Some(format!(
        "CHECK ({} IN ({}))",
        ident(&c.name),
        list.join(", ")
    ))
}

/// A name within PostgreSQL's 63 bytes: a longer one keeps its start and
/// gets a short hash of the whole, so two long names stay apart.
pub fn pg_name(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut cut = 54;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}_{:08x}",
        name.get(..cut).unwrap_or_default(),
        hash as u32
    )
}

/// Column facts the catalog does not keep: (table, column) → (default,
/// extra).
type ColumnFacts = HashMap<(String, String), (Option<String>, String)>;

/// Reads and translates the selected tables.
pub async fn read(
    job: &JobSpec,
    source: &Connector,
    catalog: &Catalog,
) -> Result<Vec<PgTable>, DbError> {
    let mut conn = source.connect().await?;
    // A source that takes zero dates may hold some: said before the load
    // stops on one.
    let sql_mode: String = conn
        .query_first("SELECT @@GLOBAL.sql_mode")
        .await
        .map_err(source.query_err("reading sql_mode"))?
        .unwrap_or_default();
    let zero_dates_possible = !(sql_mode.contains("NO_ZERO_DATE")
        && sql_mode.contains("NO_ZERO_IN_DATE")
        && sql_mode.contains("STRICT"));
    let mut out = Vec::new();
    let target_schema: HashMap<&str, &str> = job
        .select
        .iter()
        .map(|s| (s.database.as_str(), s.target_database.as_str()))
        .collect();
    let selected: Vec<(String, String)> = catalog
        .tables
        .iter()
        .map(|t| (t.db.clone(), t.name.clone()))
        .collect();
    let mut databases: Vec<&str> = catalog.tables.iter().map(|t| t.db.as_str()).collect();
    databases.dedup();
    for db in databases {
        let facts: ColumnFacts = conn
            .exec::<(String, String, Option<String>, String), _, _>(
                "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ?",
                (db,),
            )
            .await
            .map_err(source.query_err("reading column defaults"))?
            .into_iter()
            .map(|(t, c, d, e)| ((t, c), (d, e)))
            .collect();
        // MariaDB's JSON is LONGTEXT with a json_valid check (MySQL's
        // CHECK_CONSTRAINTS has no TABLE_NAME: it has a real JSON type).
        let checks: Vec<(String, String)> = conn
            .exec(
                "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ?",
                (db,),
            )
            .await
            .unwrap_or_default();
        let stats: Vec<(String, String, i64, String, Option<u32>, String)> = conn
            .exec(
                "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, INDEX_TYPE \
                 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? \
                 ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
                (db,),
            )
            .await
            .map_err(source.query_err("reading indexes"))?;
        type FkRow = (
            String,
            String,
            String,
            String,
            String,
            String,
            String,
            String,
        );
        let fks: Vec<FkRow> = conn
            .exec(
                "SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_SCHEMA, \
                 k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, r.UPDATE_RULE, r.DELETE_RULE \
                 FROM information_schema.KEY_COLUMN_USAGE k \
                 JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
                   ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME \
                  AND r.TABLE_NAME = k.TABLE_NAME \
                 WHERE k.TABLE_SCHEMA = ? AND k.REFERENCED_TABLE_NAME IS NOT NULL \
                 ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
                (db,),
            )
            .await
            .map_err(source.query_err("reading foreign keys"))?;
        for t in catalog.tables.iter().filter(|t| t.db == db) {
            let schema = target_schema.get(db).copied().unwrap_or(db).to_string();
            let json_cols: Vec<String> = checks
                .iter()
                .filter(|(table, _)| *table == t.name)
                .filter_map(|(_, clause)| json_column(clause))
                .collect();
            let columns: Vec<PgColumn> = t
                .columns
                .iter()
                .map(|c| {
                    let (default, extra) = facts
                        .get(&(t.name.clone(), c.name.clone()))
                        .cloned()
                        .unwrap_or_default();
                    let sc = SourceColumn {
                        name: c.name.clone(),
                        data_type: c.data_type.to_ascii_lowercase(),
                        column_type: c.column_type.clone(),
                        nullable: c.nullable,
                        default,
                        extra,
                        collation: c.collation.clone(),
                        json: json_cols.contains(&c.name),
                    };
                    types::translate(&sc, &job.mapping)
                })
                .collect();
            let mut notes = Vec::new();
            let dated: Vec<&str> = columns
                .iter()
                .filter(|c| {
                    matches!(
                        c.enc,
                        types::Enc::Date | types::Enc::Timestamp | types::Enc::TimestampTz
                    )
                })
                .map(|c| c.name.as_str())
                .collect();
            if zero_dates_possible
                && !dated.is_empty()
                && job.mapping.zero_dates == crate::job::ZeroDates::Refuse
            {
                notes.push(Note::Warn(format!(
                    "{}: the source's sql_mode ({}) takes zero dates; the load stops at the \
                     first one (zero_dates = \"null\" or \"infinity\" carries them)",
                    dated.join(", "),
                    if sql_mode.is_empty() {
                        "empty"
                    } else {
                        &sql_mode
                    }
                )));
            }
            let mut primary = None;
            let mut indexes: BTreeMap<String, PgIndex> = BTreeMap::new();
            for (table, index, non_unique, column, sub_part, kind) in &stats {
                if *table != t.name {
                    continue;
                }
                let gist = kind == "SPATIAL" && job.mapping.postgis;
                if kind == "FULLTEXT" || (kind == "SPATIAL" && !gist) {
                    let note = format!(
                        "{kind} index {index} not created (PostgreSQL has other kinds: GIN on \
                         to_tsvector, PostGIS's GiST)"
                    );
                    if !notes.contains(&Note::Warn(note.clone())) {
                        notes.push(Note::Warn(note));
                    }
                    continue;
                }
                if index == "PRIMARY" {
                    primary.get_or_insert_with(Vec::new).push(column.clone());
                    continue;
                }
                indexes
                    .entry(index.clone())
                    .or_insert_with(|| PgIndex {
                        name: index.clone(),
                        unique: *non_unique == 0,
                        columns: Vec::new(),
                        gist,
                    })
                    .columns
                    .push((column.clone(), *sub_part));
            }
            let cis: Vec<&str> = t
                .columns
                .iter()
                .filter(|c| {
                    types::case_insensitive(c.collation.as_deref())
                        && (primary.as_ref().is_some_and(|p| p.contains(&c.name))
                            || indexes
                                .values()
                                .any(|i| i.unique && i.columns.iter().any(|(n, _)| *n == c.name)))
                })
                .map(|c| c.name.as_str())
                .collect();
            if !cis.is_empty() {
                notes.push(Note::Warn(format!(
                    "{}: case-insensitive in MySQL, case-sensitive in PostgreSQL: keys that \
                     MySQL holds equal ('a', 'A') are distinct there",
                    cis.join(", ")
                )));
            }
            let mut foreign_keys: BTreeMap<String, PgForeignKey> = BTreeMap::new();
            for (table, name, column, ref_db, ref_table, ref_column, on_update, on_delete) in &fks {
                if *table != t.name {
                    continue;
                }
                if !selected.contains(&(ref_db.clone(), ref_table.clone())) {
                    let note = format!(
                        "foreign key {name} not created: {ref_db}.{ref_table} is not selected"
                    );
                    if !notes.contains(&Note::Warn(note.clone())) {
                        notes.push(Note::Warn(note));
                    }
                    continue;
                }
                let ref_schema = target_schema
                    .get(ref_db.as_str())
                    .copied()
                    .unwrap_or(ref_db)
                    .to_string();
                let fk = foreign_keys
                    .entry(name.clone())
                    .or_insert_with(|| PgForeignKey {
                        name: name.clone(),
                        columns: Vec::new(),
                        references: (ref_schema, ref_table.clone()),
                        referenced_columns: Vec::new(),
                        on_update: on_update.clone(),
                        on_delete: on_delete.clone(),
                    });
                fk.columns.push(column.clone());
                fk.referenced_columns.push(ref_column.clone());
            }
            out.push(PgTable {
                source: t.clone(),
                schema,
                columns,
                primary,
                indexes: indexes.into_values().collect(),
                foreign_keys: foreign_keys.into_values().collect(),
                notes,
            });
        }
    }
    let _ = conn.disconnect().await;
    Ok(out)
}

/// The column of a `json_valid(`c`)` check.
fn json_column(clause: &str) -> Option<String> {
    let inner = clause
        .trim()
        .strip_prefix("json_valid(")?
        .strip_suffix(')')?;
    Some(inner.trim().trim_matches('`').replace("``", "`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_stay_apart_and_within_63_bytes() {
        let a = pg_name(&format!("{}_a", "x".repeat(70)));
        let b = pg_name(&format!("{}_b", "x".repeat(70)));
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
        assert_eq!(pg_name("short"), "short");
        assert_eq!(json_column("json_valid(`doc`)").as_deref(), Some("doc"));
        assert_eq!(json_column("`a` > 0"), None);
    }
}
