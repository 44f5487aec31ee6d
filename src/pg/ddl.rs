//! MySQL DDL from the binlog as PostgreSQL statements: tables created,
//! dropped, renamed and truncated, columns added, dropped, changed and
//! renamed, keys and indexes added and dropped, each column through the
//! same mapping as the full load ([`super::types::translate`]).
//!
//! A statement is parsed with `sqlparser`'s MySQL dialect. What has no
//! PostgreSQL meaning for the data (engine and charset options, column
//! order, comments) is dropped; views, routines, triggers and events are
//! not carried (their bodies are MySQL SQL); anything else is refused with
//! the statement named, so the job stops instead of guessing.

use std::collections::HashMap;

use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnDef, ColumnOption, CreateIndex, CreateTable,
    DataType, Expr, IndexColumn, ObjectName, ObjectNamePart, ObjectType, ReferentialAction,
    RenameTableNameKind, Statement, TableConstraint,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::schema::{column_sql, members_check, pg_name};
use super::types::{self, ident, literal, SourceColumn};
use crate::job::Mapping;

/// The target's tables as they are now: (schema, table) → columns, for
/// names written in another case and type changes.
pub type Existing = HashMap<(String, String), Vec<ExistingColumn>>;

/// A column on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingColumn {
    pub name: String,
    /// `information_schema.columns.data_type` (`timestamp` for either
    /// time-zone-less precision).
    pub data_type: String,
    pub identity: bool,
}

/// What a MySQL statement becomes on PostgreSQL.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Translated {
    pub statements: Vec<String>,
    /// What was dropped on the way, for the job's events.
    pub notes: Vec<String>,
}

/// Translates one MySQL statement run in database `schema` (already the
/// target's name).
pub fn translate(
    sql: &str,
    schema: &str,
    mapping: &Mapping,
    existing: &Existing,
) -> Result<Translated, String> {
    let parsed = match Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(p) => p,
        // Table options (ENGINE=, ROW_FORMAT=, ...) the parser does not
        // take in ALTER TABLE: without them, or nothing left to do.
        Err(e) => match without_table_options(sql) {
            Some(rest) if rest.is_empty() => {
                return Ok(Translated {
                    statements: Vec::new(),
                    notes: vec![format!("no PostgreSQL meaning: {sql}")],
                })
            }
            Some(rest) => Parser::parse_sql(&MySqlDialect {}, &rest)
                .map_err(|e| format!("cannot parse the statement for PostgreSQL ({e})"))?,
            None => return Err(format!("cannot parse the statement for PostgreSQL ({e})")),
        },
    };
    let mut t = Tr {
        schema,
        mapping,
        existing,
        out: Translated::default(),
    };
    for statement in parsed {
        t.statement(statement)?;
    }
    Ok(t.out)
}

struct Tr<'a> {
    schema: &'a str,
    mapping: &'a Mapping,
    existing: &'a Existing,
    out: Translated,
}

/// A table's schema and name.
type Name = (String, String);

impl Tr<'_> {
    fn push(&mut self, sql: String) {
        self.out.statements.push(sql);
    }

    fn note(&mut self, note: impl Into<String>) {
        self.out.notes.push(note.into());
    }

    fn name(&self, n: &ObjectName) -> Result<Name, String> {
        let parts: Vec<String> =
            n.0.iter()
                .map(|p| match p {
                    ObjectNamePart::Identifier(i) => Ok(i.value.clone()),
                    other => Err(format!("unexpected name {other}")),
                })
                .collect::<Result<_, _>>()?;
        match parts.as_slice() {
            [t] => Ok((self.schema.to_string(), t.clone())),
            [s, t] => Ok((s.clone(), t.clone())),
            _ => Err(format!("unexpected name {n}")),
        }
    }

    /// A column of `table` as the target spells it.
    fn existing(&self, table: &Name, name: &str) -> Option<&ExistingColumn> {
        self.existing
            .get(table)?
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    fn column(&self, table: &Name, name: &str) -> String {
        self.existing(table, name)
            .map_or_else(|| name.to_string(), |c| c.name.clone())
    }

    fn column_type(&self, table: &Name, name: &str) -> Option<&str> {
        self.existing(table, name).map(|c| c.data_type.as_str())
    }

    fn statement(&mut self, s: Statement) -> Result<(), String> {
        match s {
            Statement::CreateTable(c) => self.create_table(c),
            Statement::AlterTable(a) => {
                let table = self.name(&a.name)?;
                for op in a.operations {
                    self.alter(&table, op)?;
                }
                Ok(())
            }
            Statement::Drop {
                object_type,
                if_exists,
                names,
                table,
                temporary,
                ..
            } => match object_type {
                ObjectType::Table if temporary => Ok(()),
                ObjectType::Table => {
                    for n in &names {
                        let t = self.name(n)?;
                        self.push(format!(
                            "DROP TABLE {}{} CASCADE",
                            if if_exists { "IF EXISTS " } else { "" },
                            q(&t)
                        ));
                    }
                    Ok(())
                }
                ObjectType::Index => {
                    let on = table.ok_or("DROP INDEX without ON table")?;
                    let t = self.name(&on)?;
                    for n in &names {
                        let index = last(n);
                        self.drop_index(&t, &index);
                    }
                    Ok(())
                }
                ObjectType::Schema | ObjectType::Database => {
                    for n in &names {
                        self.push(format!(
                            "DROP SCHEMA {}{} CASCADE",
                            if if_exists { "IF EXISTS " } else { "" },
                            ident(&last(n))
                        ));
                    }
                    Ok(())
                }
                ObjectType::View => {
                    self.note("views are not carried to PostgreSQL");
                    Ok(())
                }
                other => Err(format!("DROP {other} has no PostgreSQL translation")),
            },
            Statement::RenameTable(renames) => {
                for r in renames {
                    let (from, to) = (self.name(&r.old_name)?, self.name(&r.new_name)?);
                    self.rename_table(&from, &to);
                }
                Ok(())
            }
            Statement::Truncate(t) => {
                for target in &t.table_names {
                    let name = self.name(&target.name)?;
                    self.push(format!("TRUNCATE {}", q(&name)));
                }
                Ok(())
            }
            Statement::CreateIndex(c) => self.create_index(c),
            Statement::CreateSchema {
                schema_name,
                if_not_exists,
                ..
            } => {
                self.push(format!(
                    "CREATE SCHEMA {}{}",
                    if if_not_exists { "IF NOT EXISTS " } else { "" },
                    ident(&schema_name.to_string().replace('`', ""))
                ));
                Ok(())
            }
            Statement::CreateDatabase {
                db_name,
                if_not_exists,
                ..
            } => {
                self.push(format!(
                    "CREATE SCHEMA {}{}",
                    if if_not_exists { "IF NOT EXISTS " } else { "" },
                    ident(&last(&db_name))
                ));
                Ok(())
            }
            Statement::CreateView(_)
            | Statement::CreateFunction(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateTrigger(_)
            | Statement::DropTrigger(_)
            | Statement::DropFunction(_)
            | Statement::DropProcedure { .. }
            | Statement::AlterView { .. } => {
                self.note(
                    "views, routines and triggers are not carried to PostgreSQL (their \
                     bodies are MySQL SQL)",
                );
                Ok(())
            }
            other => Err(format!(
                "{} has no PostgreSQL translation",
                first_words(&other.to_string())
            )),
        }
    }

    fn create_table(&mut self, c: CreateTable) -> Result<(), String> {
        let table = self.name(&c.name)?;
        if c.temporary {
            return Ok(());
        }
        let exists = if c.if_not_exists {
            "IF NOT EXISTS "
        } else {
            ""
        };
        if let Some(like) = &c.like {
            let from = match like {
                sqlparser::ast::CreateTableLikeKind::Parenthesized(l)
                | sqlparser::ast::CreateTableLikeKind::Plain(l) => self.name(&l.name)?,
            };
            self.push(format!(
                "CREATE TABLE {exists}{} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
                 INCLUDING INDEXES INCLUDING IDENTITY)",
                q(&table),
                q(&from)
            ));
            return Ok(());
        }
        if c.columns.is_empty() {
            return Err("CREATE TABLE without columns (... SELECT?)".into());
        }
        let mut defs = Vec::new();
        let mut after = Vec::new();
        let mut primary: Vec<String> = Vec::new();
        let mut stamped = Vec::new();
        for def in &c.columns {
            let col = self.column_def(def);
            if def.options.iter().any(|o| {
                matches!(&o.option, ColumnOption::PrimaryKey(_))
                    || matches!(&o.option, ColumnOption::DialectSpecific(t) if tokens(t).contains("PRIMARY"))
            }) {
                primary.push(col.name.clone());
            }
            if def
                .options
                .iter()
                .any(|o| matches!(o.option, ColumnOption::Unique(_)))
            {
                after.push(Index::unique_on(std::slice::from_ref(&col.name)));
            }
            if col.on_update_now {
                stamped.push(col.name.clone());
            }
            let mut col = col;
            if primary.contains(&col.name) {
                col.nullable = false;
            }
            defs.push(column_sql(&col));
        }
        for constraint in &c.constraints {
            match constraint {
                TableConstraint::PrimaryKey(pk) => {
                    primary = pk.columns.iter().map(index_column_name).collect();
                }
                other => {
                    if let Some(i) = self.constraint(other)? {
                        after.push(i);
                    }
                }
            }
        }
        if !primary.is_empty() {
            let cols: Vec<String> = primary.iter().map(|c| ident(c)).collect();
            defs.push(format!(
                "CONSTRAINT {} PRIMARY KEY ({})",
                ident(&pg_name(&format!("{}_pkey", table.1))),
                cols.join(", ")
            ));
        }
        self.push(format!(
            "CREATE TABLE {exists}{} ({})",
            q(&table),
            defs.join(", ")
        ));
        for i in after {
            self.add_index(&table, i);
        }
        if !stamped.is_empty() {
            self.note(format!(
                "{}: ON UPDATE CURRENT_TIMESTAMP is kept by a trigger created at the cutover",
                table.1
            ));
        }
        Ok(())
    }

    /// The PostgreSQL column for a MySQL column definition.
    fn column_def(&mut self, def: &ColumnDef) -> types::PgColumn {
        let source = source_column(def);
        let col = types::translate(&source, self.mapping);
        for n in &col.notes {
            let text = match n {
                types::Note::Warn(w) | types::Note::Refuse(w) => w.clone(),
            };
            self.note(text);
        }
        col
    }

    fn alter(&mut self, table: &Name, op: AlterTableOperation) -> Result<(), String> {
        let t = q(table);
        match op {
            AlterTableOperation::AddColumn {
                column_def,
                if_not_exists,
                ..
            } => {
                let col = self.column_def(&column_def);
                self.push(format!(
                    "ALTER TABLE {t} ADD COLUMN {}{}",
                    if if_not_exists { "IF NOT EXISTS " } else { "" },
                    column_sql(&col)
                ));
                if column_def
                    .options
                    .iter()
                    .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
                {
                    self.push(format!(
                        "ALTER TABLE {t} ADD PRIMARY KEY ({})",
                        ident(&col.name)
                    ));
                }
            }
            AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                ..
            } => {
                for c in column_names {
                    let c = self.column(table, &c.value);
                    self.push(format!(
                        "ALTER TABLE {t} DROP COLUMN {}{}",
                        if if_exists { "IF EXISTS " } else { "" },
                        ident(&c)
                    ));
                }
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let old = self.column(table, &old_column_name.value);
                self.push(format!(
                    "ALTER TABLE {t} RENAME COLUMN {} TO {}",
                    ident(&old),
                    ident(&new_column_name.value)
                ));
            }
            AlterTableOperation::ChangeColumn {
                old_name,
                new_name,
                data_type,
                options,
                ..
            } => {
                let old = self.column(table, &old_name.value);
                let def = ColumnDef {
                    name: new_name.clone(),
                    data_type,
                    options: options
                        .into_iter()
                        .map(|option| sqlparser::ast::ColumnOptionDef { name: None, option })
                        .collect(),
                };
                self.modify(table, &old, &def);
            }
            AlterTableOperation::ModifyColumn {
                col_name,
                data_type,
                options,
                ..
            } => {
                let old = self.column(table, &col_name.value);
                let def = ColumnDef {
                    name: sqlparser::ast::Ident::new(old.clone()),
                    data_type,
                    options: options
                        .into_iter()
                        .map(|option| sqlparser::ast::ColumnOptionDef { name: None, option })
                        .collect(),
                };
                self.modify(table, &old, &def);
            }
            AlterTableOperation::AlterColumn { column_name, op } => {
                let c = ident(&self.column(table, &column_name.value));
                match op {
                    AlterColumnOperation::SetNotNull => {
                        self.push(format!("ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL"))
                    }
                    AlterColumnOperation::DropNotNull => {
                        self.push(format!("ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL"))
                    }
                    AlterColumnOperation::DropDefault => {
                        self.push(format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"))
                    }
                    AlterColumnOperation::SetDefault { value } => {
                        let ty = self
                            .column_type(table, &column_name.value)
                            .unwrap_or("text")
                            .to_string();
                        match default_of(&value, &ty, self.mapping) {
                            Some(d) => self
                                .push(format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {d}")),
                            None => self.note(format!("default {value} not carried")),
                        }
                    }
                    other => return Err(format!("ALTER COLUMN {other} has no translation")),
                }
            }
            AlterTableOperation::AddConstraint { constraint, .. } => match &constraint {
                TableConstraint::PrimaryKey(pk) => {
                    let cols: Vec<String> = pk
                        .columns
                        .iter()
                        .map(|c| ident(&self.column(table, &index_column_name(c))))
                        .collect();
                    self.push(format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {} PRIMARY KEY ({})",
                        ident(&pg_name(&format!("{}_pkey", table.1))),
                        cols.join(", ")
                    ));
                }
                other => {
                    if let Some(i) = self.constraint(other)? {
                        self.add_index(table, i);
                    }
                }
            },
            AlterTableOperation::DropPrimaryKey { .. } => {
                self.push(format!(
                    "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
                    ident(&pg_name(&format!("{}_pkey", table.1)))
                ));
            }
            AlterTableOperation::DropIndex { name } => self.drop_index(table, &name.value),
            AlterTableOperation::DropForeignKey { name, .. } => {
                self.push(format!(
                    "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
                    ident(&pg_name(&name.value))
                ));
            }
            AlterTableOperation::DropConstraint { name, .. } => {
                // MySQL's DROP CONSTRAINT names a CHECK, a foreign key or a
                // unique key: whichever it is here.
                let n = name.value;
                self.push(format!(
                    "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
                    ident(&pg_name(&n))
                ));
                self.drop_index(table, &n);
            }
            AlterTableOperation::RenameTable { table_name } => {
                let to = match table_name {
                    RenameTableNameKind::As(n) | RenameTableNameKind::To(n) => self.name(&n)?,
                };
                self.rename_table(table, &to);
            }
            // MySQL's RENAME INDEX / KEY.
            AlterTableOperation::RenameConstraint { old_name, new_name } => {
                self.push(format!(
                    "ALTER INDEX IF EXISTS {}.{} RENAME TO {}",
                    ident(&table.0),
                    ident(&pg_name(&format!("{}_{}", table.1, old_name.value))),
                    ident(&pg_name(&format!("{}_{}", table.1, new_name.value)))
                ));
            }
            AlterTableOperation::Algorithm { .. }
            | AlterTableOperation::Lock { .. }
            | AlterTableOperation::AutoIncrement { .. }
            | AlterTableOperation::SetOptionsParens { .. } => {}
            other => {
                let text = other.to_string();
                let upper = text.to_ascii_uppercase();
                if [
                    "ENGINE",
                    "CHARSET",
                    "CHARACTER SET",
                    "COLLATE",
                    "COMMENT",
                    "ROW_FORMAT",
                ]
                .iter()
                .any(|w| upper.starts_with(w) || upper.contains(&format!("DEFAULT {w}")))
                    || upper.starts_with("FORCE")
                    || upper.starts_with("CONVERT TO")
                {
                    self.note(format!("{text}: no PostgreSQL meaning, dropped"));
                } else {
                    return Err(format!(
                        "ALTER TABLE ... {} has no PostgreSQL translation",
                        first_words(&text)
                    ));
                }
            }
        }
        Ok(())
    }

    /// MODIFY / CHANGE COLUMN: renamed, retyped, nullability and default
    /// as the new definition says.
    fn modify(&mut self, table: &Name, old: &str, def: &ColumnDef) {
        let t = q(table);
        let col = self.column_def(def);
        let c = ident(&col.name);
        if col.name != old {
            self.push(format!(
                "ALTER TABLE {t} RENAME COLUMN {} TO {c}",
                ident(old)
            ));
        }
        let was = self.column_type(table, old).unwrap_or("").to_string();
        let cast = if was == "boolean" && col.sql_type != "boolean" {
            format!("{c}::integer::{}", col.sql_type)
        } else if col.sql_type == "boolean" {
            format!("{c}::text::boolean")
        } else {
            format!("{c}::{}", col.sql_type)
        };
        let check = pg_name(&format!("{}_{}_check", table.1, col.name));
        self.push(format!(
            "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
            ident(&check)
        ));
        // An identity keeps its sequence (it has no plain default to drop).
        let identity = self.existing(table, old).is_some_and(|c| c.identity);
        if identity {
            self.push(format!(
                "ALTER TABLE {t} ALTER COLUMN {c} TYPE {} USING {cast}",
                col.sql_type
            ));
        } else {
            self.push(format!(
                "ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT, ALTER COLUMN {c} TYPE {} \
                 USING {cast}",
                col.sql_type
            ));
        }
        self.push(format!(
            "ALTER TABLE {t} ALTER COLUMN {c} {} NOT NULL",
            if col.nullable { "DROP" } else { "SET" }
        ));
        if let Some(d) = col.default.as_ref().filter(|_| !identity) {
            self.push(format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {d}"));
        }
        if col.identity && !identity {
            self.push(format!(
                "ALTER TABLE {t} ALTER COLUMN {c} ADD GENERATED BY DEFAULT AS IDENTITY"
            ));
        }
        if let Some(check_sql) = members_check(&col) {
            self.push(format!(
                "ALTER TABLE {t} ADD CONSTRAINT {} {check_sql}",
                ident(&check)
            ));
        }
    }

    /// An index or key from a table constraint; `None` for what is not
    /// carried (FULLTEXT, SPATIAL, CHECK).
    fn constraint(&mut self, c: &TableConstraint) -> Result<Option<Index>, String> {
        Ok(match c {
            TableConstraint::Unique(u) => Some(Index {
                name: u
                    .index_name
                    .as_ref()
                    .or(u.name.as_ref())
                    .map(|n| n.value.clone())
                    .unwrap_or_default(),
                unique: true,
                columns: u.columns.iter().map(index_part).collect(),
                foreign: None,
                gist: false,
            }),
            TableConstraint::Index(i) => Some(Index {
                name: i.name.as_ref().map(|n| n.value.clone()).unwrap_or_default(),
                unique: false,
                columns: i.columns.iter().map(index_part).collect(),
                foreign: None,
                gist: false,
            }),
            TableConstraint::ForeignKey(fk) => {
                let to = self.name(&fk.foreign_table)?;
                Some(Index {
                    name: fk
                        .name
                        .as_ref()
                        .map(|n| n.value.clone())
                        .unwrap_or_default(),
                    unique: false,
                    columns: fk.columns.iter().map(|c| (c.value.clone(), None)).collect(),
                    foreign: Some(Foreign {
                        table: to,
                        columns: fk
                            .referred_columns
                            .iter()
                            .map(|c| c.value.clone())
                            .collect(),
                        on_delete: action(fk.on_delete),
                        on_update: action(fk.on_update),
                    }),
                    gist: false,
                })
            }
            TableConstraint::FulltextOrSpatial(f) if !f.fulltext && self.mapping.postgis => {
                Some(Index {
                    name: f
                        .opt_index_name
                        .as_ref()
                        .map(|n| n.value.clone())
                        .unwrap_or_default(),
                    unique: false,
                    columns: f.columns.iter().map(index_part).collect(),
                    foreign: None,
                    gist: true,
                })
            }
            TableConstraint::FulltextOrSpatial(_) => {
                self.note("FULLTEXT and SPATIAL indexes are not carried to PostgreSQL");
                None
            }
            TableConstraint::Check(_) => {
                self.note("CHECK constraints are not carried (their expressions are MySQL SQL)");
                None
            }
            other => return Err(format!("constraint {other} has no PostgreSQL translation")),
        })
    }

    fn add_index(&mut self, table: &Name, mut i: Index) {
        let t = q(table);
        let cols: Vec<(String, Option<u64>)> = i
            .columns
            .iter()
            .map(|(c, p)| (self.column(table, c), *p))
            .collect();
        if i.name.is_empty() {
            i.name = cols.first().map(|(c, _)| c.clone()).unwrap_or_default();
        }
        if let Some(f) = i.foreign {
            let name = pg_name(&i.name);
            let own: Vec<String> = cols.iter().map(|(c, _)| ident(c)).collect();
            let refs: Vec<String> = f
                .columns
                .iter()
                .map(|c| ident(&self.column(&f.table, c)))
                .collect();
            self.push(format!(
                "ALTER TABLE {t} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) \
                 ON UPDATE {} ON DELETE {} DEFERRABLE",
                ident(&name),
                own.join(", "),
                q(&f.table),
                refs.join(", "),
                f.on_update,
                f.on_delete
            ));
            return;
        }
        let parts: Vec<String> = cols
            .iter()
            .map(|(c, prefix)| {
                let bytea = self.column_type(table, c) == Some("bytea");
                match prefix {
                    Some(n) if bytea => format!("(substring({} from 1 for {n}))", ident(c)),
                    Some(n) => format!("(left({}, {n}))", ident(c)),
                    None => ident(c),
                }
            })
            .collect();
        self.push(format!(
            "CREATE {}INDEX IF NOT EXISTS {} ON {t} {}({})",
            if i.unique { "UNIQUE " } else { "" },
            ident(&pg_name(&format!("{}_{}", table.1, i.name))),
            if i.gist { "USING gist " } else { "" },
            parts.join(", ")
        ));
    }

    fn drop_index(&mut self, table: &Name, name: &str) {
        if name.eq_ignore_ascii_case("PRIMARY") {
            self.push(format!(
                "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
                q(table),
                ident(&pg_name(&format!("{}_pkey", table.1)))
            ));
            return;
        }
        self.push(format!(
            "DROP INDEX IF EXISTS {}.{}",
            ident(&table.0),
            ident(&pg_name(&format!("{}_{name}", table.1)))
        ));
    }

    fn create_index(&mut self, c: CreateIndex) -> Result<(), String> {
        let table = self.name(&c.table_name)?;
        let name = c.name.as_ref().map(last).unwrap_or_default();
        let using = c
            .using
            .as_ref()
            .map(|u| u.to_string().to_ascii_uppercase())
            .unwrap_or_default();
        let gist = using.contains("SPATIAL") && self.mapping.postgis;
        if !gist && (using.contains("FULLTEXT") || using.contains("SPATIAL")) {
            self.note("FULLTEXT and SPATIAL indexes are not carried to PostgreSQL");
            return Ok(());
        }
        self.add_index(
            &table,
            Index {
                name,
                unique: c.unique,
                columns: c.columns.iter().map(index_part).collect(),
                foreign: None,
                gist,
            },
        );
        Ok(())
    }

    fn rename_table(&mut self, from: &Name, to: &Name) {
        let mut at = from.clone();
        if from.0 != to.0 {
            self.push(format!(
                "ALTER TABLE {} SET SCHEMA {}",
                q(&at),
                ident(&to.0)
            ));
            at.0 = to.0.clone();
        }
        if at.1 != to.1 {
            self.push(format!("ALTER TABLE {} RENAME TO {}", q(&at), ident(&to.1)));
        }
    }
}

/// An index or a foreign key to create.
struct Index {
    name: String,
    unique: bool,
    /// Columns and prefix lengths.
    columns: Vec<(String, Option<u64>)>,
    foreign: Option<Foreign>,
    /// MySQL's SPATIAL index: GiST on PostGIS.
    gist: bool,
}

impl Index {
    fn unique_on(columns: &[String]) -> Index {
        Index {
            name: columns.first().cloned().unwrap_or_default(),
            unique: true,
            columns: columns.iter().map(|c| (c.clone(), None)).collect(),
            foreign: None,
            gist: false,
        }
    }
}

struct Foreign {
    table: Name,
    columns: Vec<String>,
    on_delete: &'static str,
    on_update: &'static str,
}

fn action(a: Option<ReferentialAction>) -> &'static str {
    match a {
        Some(ReferentialAction::Cascade) => "CASCADE",
        Some(ReferentialAction::SetNull) => "SET NULL",
        Some(ReferentialAction::SetDefault) => "SET DEFAULT",
        Some(ReferentialAction::Restrict) => "RESTRICT",
        Some(ReferentialAction::NoAction) | None => "NO ACTION",
    }
}

fn q((schema, table): &Name) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

fn last(n: &ObjectName) -> String {
    match n.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn tokens(t: &[sqlparser::tokenizer::Token]) -> String {
    t.iter()
        .map(|t| t.to_string().to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// An index column's name and prefix length: `name(10)` is parsed as a
/// function call.
fn index_part(c: &IndexColumn) -> (String, Option<u64>) {
    match &c.column.expr {
        Expr::Identifier(i) => (i.value.clone(), None),
        Expr::CompoundIdentifier(parts) => (
            parts.last().map(|i| i.value.clone()).unwrap_or_default(),
            None,
        ),
        Expr::Function(f) => {
            let name = last(&f.name);
            let prefix = f.args.to_string();
            let digits: String = prefix.chars().filter(char::is_ascii_digit).collect();
            (name, digits.parse().ok())
        }
        other => (other.to_string(), None),
    }
}

fn index_column_name(c: &IndexColumn) -> String {
    index_part(c).0
}

/// A MySQL column definition as `information_schema` would describe it.
fn source_column(def: &ColumnDef) -> SourceColumn {
    let mut column_type = data_type_text(&def.data_type);
    let mut data_type = column_type
        .split(['(', ' '])
        .next()
        .unwrap_or_default()
        .to_string();
    match data_type.as_str() {
        "bool" | "boolean" => {
            data_type = "tinyint".into();
            column_type = "tinyint(1)".into();
        }
        "integer" => data_type = "int".into(),
        "dec" | "fixed" => data_type = "decimal".into(),
        "character" if column_type.starts_with("character varying") => {
            data_type = "varchar".into();
            column_type = column_type.replacen("character varying", "varchar", 1);
        }
        "character" => {
            data_type = "char".into();
            column_type = column_type.replacen("character", "char", 1);
        }
        "double" => data_type = "double".into(),
        _ => {}
    }
    let mut nullable = true;
    let mut default = None;
    let mut extra = String::new();
    let mut collation = None;
    for o in &def.options {
        match &o.option {
            ColumnOption::NotNull | ColumnOption::PrimaryKey(_) => nullable = false,
            ColumnOption::Null => nullable = true,
            ColumnOption::Default(e) => default = Some(e.to_string()),
            ColumnOption::OnUpdate(_) => extra.push_str(" on update current_timestamp"),
            ColumnOption::Generated { .. } => extra.push_str(" stored generated"),
            ColumnOption::Collation(c) => collation = Some(c.to_string()),
            ColumnOption::DialectSpecific(t) => {
                let t = tokens(t);
                if t.contains("AUTO_INCREMENT") {
                    extra.push_str(" auto_increment");
                }
                if t.contains("UNSIGNED") && !column_type.contains("unsigned") {
                    column_type.push_str(" unsigned");
                }
            }
            _ => {}
        }
    }
    if data_type == "serial" {
        data_type = "bigint".into();
        column_type = "bigint unsigned".into();
        nullable = false;
        extra.push_str(" auto_increment");
    }
    SourceColumn {
        name: def.name.value.clone(),
        json: data_type == "json",
        data_type,
        column_type,
        nullable,
        default,
        extra,
        collation,
    }
}

/// A data type as MySQL's `COLUMN_TYPE` writes it (lower case, no
/// spaces after commas).
fn data_type_text(t: &DataType) -> String {
    let text = t.to_string().to_ascii_lowercase();
    let text = text.replace(", ", ",");
    // sqlparser writes `INT UNSIGNED`; MySQL `int(10) unsigned`: equal to
    // the mapping.
    text.replace("character set", "charset")
        .split(" charset")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `ALTER COLUMN ... SET DEFAULT` on a column of PostgreSQL type `ty`.
fn default_of(value: &Expr, ty: &str, mapping: &Mapping) -> Option<String> {
    let enc = match ty {
        "boolean" => types::Enc::Bool,
        "bytea" => types::Enc::Bytea,
        "date" => types::Enc::Date,
        t if t.starts_with("timestamp with") => types::Enc::TimestampTz,
        t if t.starts_with("timestamp") => types::Enc::Timestamp,
        "smallint" | "integer" | "bigint" | "numeric" => types::Enc::Number,
        "real" | "double precision" => types::Enc::Float,
        _ => types::Enc::Text,
    };
    let text = value.to_string();
    if enc == types::Enc::Text {
        return Some(match value {
            Expr::Value(_) => text.clone(),
            _ => return None,
        })
        .filter(|t| t.starts_with('\'') || t.parse::<f64>().is_ok())
        .map(|t| if t.starts_with('\'') { t } else { literal(&t) });
    }
    types::default_sql(&text, enc, mapping).ok().flatten()
}

/// An ALTER TABLE without its table options (storage, charset, comment,
/// algorithm); `Some("")` when only options were there; `None` for other
/// statements.
fn without_table_options(sql: &str) -> Option<String> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    const OPTIONS: &[&str] = &[
        "ENGINE",
        "ROW_FORMAT",
        "AUTO_INCREMENT",
        "KEY_BLOCK_SIZE",
        "STATS_PERSISTENT",
        "STATS_AUTO_RECALC",
        "STATS_SAMPLE_PAGES",
        "CHECKSUM",
        "PACK_KEYS",
        "DELAY_KEY_WRITE",
        "AVG_ROW_LENGTH",
        "MAX_ROWS",
        "MIN_ROWS",
        "COMMENT",
        "CHARSET",
        "COLLATE",
        "ALGORITHM",
        "LOCK",
        "PAGE_CHECKSUM",
        "TRANSACTIONAL",
    ];
    let tokens = Tokenizer::new(&MySqlDialect {}, sql).tokenize().ok()?;
    let words: Vec<(usize, String)> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t, Token::Whitespace(_)))
        .map(|(i, t)| (i, t.to_string().to_ascii_uppercase()))
        .collect();
    let head: Vec<&str> = words.iter().take(2).map(|(_, w)| w.as_str()).collect();
    if head != ["ALTER", "TABLE"] {
        return None;
    }
    // The table name (one word, or db.table), then the operations.
    let mut at = 3;
    if words.get(at).is_some_and(|(_, w)| w == ".") {
        at += 2;
    }
    let name_end = words.get(at - 1).map(|(i, _)| *i + 1)?;
    // The operations, split at top-level commas; a part that starts with
    // a table option is all options (they may follow one another
    // without commas).
    let mut parts: Vec<Vec<&Token>> = vec![Vec::new()];
    let mut depth = 0i32;
    for token in tokens.iter().skip(name_end) {
        match token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                parts.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if let Some(p) = parts.last_mut() {
            p.push(token);
        }
    }
    let is_option = |part: &Vec<&Token>| {
        let mut words = part
            .iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .map(|t| t.to_string().to_ascii_uppercase());
        match (words.next(), words.next()) {
            (Some(w), _) if OPTIONS.contains(&w.as_str()) => true,
            (Some(w), _) if w == "CONVERT" || w == "CHARACTER" || w == "FORCE" => true,
            (Some(w), Some(n)) if w == "DEFAULT" => {
                matches!(n.as_str(), "CHARSET" | "CHARACTER" | "COLLATE")
            }
            _ => false,
        }
    };
    let kept: Vec<String> = parts
        .iter()
        .filter(|p| p.iter().any(|t| !matches!(t, Token::Whitespace(_))) && !is_option(p))
        .map(|p| p.iter().map(|t| t.to_string()).collect::<String>())
        .collect();
    if kept.is_empty() {
        return Some(String::new());
    }
    let head: String = tokens
        .iter()
        .take(name_end)
        .map(|t| t.to_string())
        .collect();
    Some(format!("{head} {}", kept.join(",")))
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(sql: &str) -> Vec<String> {
        let mut existing = Existing::new();
        existing.insert(
            ("app".into(), "t".into()),
            [
                ("id", "integer", true),
                ("Name", "text", false),
                ("flag", "boolean", false),
            ]
            .into_iter()
            .map(|(n, t, identity)| ExistingColumn {
                name: n.into(),
                data_type: t.into(),
                identity,
            })
            .collect(),
        );
        match translate(sql, "app", &Mapping::default(), &existing) {
            Ok(t) => t.statements,
            Err(e) => vec![format!("error: {e}")],
        }
    }

    #[test]
    fn columns_added_dropped_renamed_and_changed() {
        assert_eq!(
            tr("ALTER TABLE t ADD COLUMN c INT UNSIGNED NOT NULL DEFAULT 5 AFTER id"),
            vec![r#"ALTER TABLE "app"."t" ADD COLUMN "c" bigint NOT NULL DEFAULT 5"#]
        );
        assert_eq!(
            tr("ALTER TABLE t ADD e ENUM('a','b') DEFAULT 'a', DROP COLUMN name"),
            vec![
                r#"ALTER TABLE "app"."t" ADD COLUMN "e" text DEFAULT 'a' CHECK ("e" IN ('a', 'b', ''))"#,
                r#"ALTER TABLE "app"."t" DROP COLUMN "Name""#,
            ]
        );
        assert_eq!(
            tr("ALTER TABLE `t` CHANGE `name` `title` VARCHAR(40) NULL"),
            vec![
                r#"ALTER TABLE "app"."t" RENAME COLUMN "Name" TO "title""#,
                r#"ALTER TABLE "app"."t" DROP CONSTRAINT IF EXISTS "t_title_check""#,
                r#"ALTER TABLE "app"."t" ALTER COLUMN "title" DROP DEFAULT, ALTER COLUMN "title" TYPE varchar(40) USING "title"::varchar(40)"#,
                r#"ALTER TABLE "app"."t" ALTER COLUMN "title" DROP NOT NULL"#,
            ]
        );
        assert_eq!(
            tr("ALTER TABLE t MODIFY flag INT NOT NULL"),
            vec![
                r#"ALTER TABLE "app"."t" DROP CONSTRAINT IF EXISTS "t_flag_check""#,
                r#"ALTER TABLE "app"."t" ALTER COLUMN "flag" DROP DEFAULT, ALTER COLUMN "flag" TYPE integer USING "flag"::integer::integer"#,
                r#"ALTER TABLE "app"."t" ALTER COLUMN "flag" SET NOT NULL"#,
            ]
        );
        assert_eq!(
            tr("ALTER TABLE t RENAME COLUMN ID TO key_id"),
            vec![r#"ALTER TABLE "app"."t" RENAME COLUMN "id" TO "key_id""#]
        );
    }

    #[test]
    fn an_identity_keeps_its_sequence_when_retyped() {
        assert_eq!(
            tr("ALTER TABLE t MODIFY id BIGINT NOT NULL AUTO_INCREMENT"),
            vec![
                r#"ALTER TABLE "app"."t" DROP CONSTRAINT IF EXISTS "t_id_check""#,
                r#"ALTER TABLE "app"."t" ALTER COLUMN "id" TYPE bigint USING "id"::bigint"#,
                r#"ALTER TABLE "app"."t" ALTER COLUMN "id" SET NOT NULL"#,
            ]
        );
    }

    #[test]
    fn tables_and_indexes() {
        assert_eq!(
            tr(
                "CREATE TABLE IF NOT EXISTS `u` (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, \
                 t DATETIME(3) DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3), \
                 doc JSON, PRIMARY KEY (id), UNIQUE KEY uk (t), KEY k_doc (doc(10)), \
                 CONSTRAINT fk FOREIGN KEY (id) REFERENCES other.p (id) ON DELETE CASCADE) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ),
            vec![
                r#"CREATE TABLE IF NOT EXISTS "app"."u" ("id" bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL, "t" timestamp(3) DEFAULT LOCALTIMESTAMP, "doc" jsonb, CONSTRAINT "u_pkey" PRIMARY KEY ("id"))"#,
                r#"CREATE UNIQUE INDEX IF NOT EXISTS "u_uk" ON "app"."u" ("t")"#,
                r#"CREATE INDEX IF NOT EXISTS "u_k_doc" ON "app"."u" ((left("doc", 10)))"#,
                r#"ALTER TABLE "app"."u" ADD CONSTRAINT "fk" FOREIGN KEY ("id") REFERENCES "other"."p" ("id") ON UPDATE NO ACTION ON DELETE CASCADE DEFERRABLE"#,
            ]
        );
        assert_eq!(
            tr("RENAME TABLE t TO t_old, app.n TO other.t"),
            vec![
                r#"ALTER TABLE "app"."t" RENAME TO "t_old""#,
                r#"ALTER TABLE "app"."n" SET SCHEMA "other""#,
                r#"ALTER TABLE "other"."n" RENAME TO "t""#,
            ]
        );
        assert_eq!(
            tr("DROP TABLE IF EXISTS t, `u`"),
            vec![
                r#"DROP TABLE IF EXISTS "app"."t" CASCADE"#,
                r#"DROP TABLE IF EXISTS "app"."u" CASCADE"#,
            ]
        );
        assert_eq!(tr("TRUNCATE TABLE t"), vec![r#"TRUNCATE "app"."t""#]);
        assert_eq!(
            tr("CREATE UNIQUE INDEX ix ON t (Name, id)"),
            vec![r#"CREATE UNIQUE INDEX IF NOT EXISTS "t_ix" ON "app"."t" ("Name", "id")"#]
        );
        assert_eq!(
            tr("DROP INDEX ix ON t"),
            vec![r#"DROP INDEX IF EXISTS "app"."t_ix""#]
        );
        assert_eq!(
            tr("ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY (id, name), ENGINE=InnoDB"),
            vec![
                r#"ALTER TABLE "app"."t" DROP CONSTRAINT IF EXISTS "t_pkey""#,
                r#"ALTER TABLE "app"."t" ADD CONSTRAINT "t_pkey" PRIMARY KEY ("id", "Name")"#,
            ]
        );
    }

    #[test]
    fn table_options_have_no_meaning_here() {
        assert_eq!(tr("ALTER TABLE t ENGINE=InnoDB"), Vec::<String>::new());
        assert_eq!(
            tr("ALTER TABLE app.t ADD COLUMN z INT COMMENT 'why', ROW_FORMAT = DYNAMIC, ALGORITHM=INPLACE, LOCK=NONE"),
            vec![r#"ALTER TABLE "app"."t" ADD COLUMN "z" integer"#]
        );
        assert_eq!(
            tr("ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn what_is_not_carried_is_said_or_refused() {
        let t = translate(
            "CREATE VIEW v AS SELECT 1",
            "app",
            &Mapping::default(),
            &Existing::new(),
        )
        .expect("views are noted");
        assert!(t.statements.is_empty() && !t.notes.is_empty(), "{t:?}");
        let e = translate(
            "ALTER TABLE t PARTITION BY HASH(id) PARTITIONS 4",
            "app",
            &Mapping::default(),
            &Existing::new(),
        );
        assert!(e.is_err(), "{e:?}");
    }
}
