//! Which tables a job follows, and what a statement from the binlog means
//! for them: the same answer for the CDC apply and the subscription.
//!
//! A statement is applied when it touches a followed table (rewritten for
//! `rename`), skipped when it touches none, and turned into a copy of the
//! table when a table enters the selection from outside it (renamed in,
//! created LIKE an unselected table, or by a statement-format CREATE ...
//! SELECT). Online schema changes (gh-ost, pt-online-schema-change) are
//! recognised by their table names: the shadow table is never followed;
//! the ALTERs run on it are recorded, and at the cut-over RENAME they are
//! applied to the table on the target (as TiDB DM does), so the target's
//! table is never missing and the helper tables never reach it.

use std::collections::BTreeMap;

use crate::db::{qualified, quote_ident};
use crate::job::{JobSpec, Selection};
use crate::model::{Ghost, GhostStatement, SessionContext};
use crate::source::binlog::Query;
use crate::source::ddl::{Kind, Name, Statement, Verb};

/// What to do for a statement, step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run `sql` on the target with `USE db` and the source's session.
    Run {
        db: String,
        sql: String,
        /// The statement as the source's subscribers see it.
        source_sql: String,
        /// The source database and table it is about, for events.
        source_db: String,
        table: Option<String>,
        context: SessionContext,
    },
    /// Copy the table whole from the source (it entered the selection
    /// from outside it), then follow it.
    Copy { db: String, table: String },
    /// Nothing to do on the target; why, for the job's events.
    Skip(String),
    /// The job cannot go on: why and what to do.
    Fail(String),
}

impl Step {
    /// Whether the step changes the target (so `[cdc] ddl` applies).
    pub fn changes_target(&self) -> bool {
        matches!(self, Step::Run { .. } | Step::Copy { .. })
    }
}

/// A table-name template (`_{table}_gho`): what comes before and after
/// the table's name, each a glob.
#[derive(Debug, Clone)]
struct Template {
    pre: globset::GlobMatcher,
    post: globset::GlobMatcher,
}

impl Template {
    fn new(t: &str) -> Option<Template> {
        let (pre, post) = t.split_once("{table}")?;
        let glob = |s: &str| {
            globset::GlobBuilder::new(s)
                .literal_separator(false)
                .build()
                .ok()
                .map(|g| g.compile_matcher())
        };
        Some(Template {
            pre: glob(pre)?,
            post: glob(post)?,
        })
    }

    /// The table names `name` may be this template of, longest first.
    fn bases<'a>(&self, name: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let cuts: Vec<usize> = name
            .char_indices()
            .map(|(i, _)| i)
            .chain([name.len()])
            .collect();
        for (a, &i) in cuts.iter().enumerate() {
            if !self.pre.is_match(&name[..i]) {
                continue;
            }
            for &j in cuts.iter().skip(a + 1).rev() {
                if self.post.is_match(&name[j..]) {
                    out.push(&name[i..j]);
                }
            }
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.len()));
        out
    }
}

/// The job's selection and the online schema changes in progress.
pub struct Follow {
    select: Vec<Selection>,
    shadow: Vec<Template>,
    trash: Vec<Template>,
    /// (database, shadow table) → the change in progress.
    ghosts: BTreeMap<(String, String), Ghost>,
}

/// What a name is to the job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// Selected: its rows and DDL are followed; the target database.
    Followed(String),
    /// An online schema change's new copy of the (followed) table.
    Shadow(String),
    /// An online schema change's old or helper table of the table.
    Trash(String),
    NotSelected,
}

impl Follow {
    pub fn new(job: &JobSpec, ghosts: BTreeMap<(String, String), Ghost>) -> Follow {
        let templates = |list: &[String]| list.iter().filter_map(|t| Template::new(t)).collect();
        Follow {
            select: job.select.clone(),
            shadow: templates(&job.cdc.shadow_tables),
            trash: templates(&job.cdc.trash_tables),
            ghosts,
        }
    }

    pub fn ghosts(&self) -> &BTreeMap<(String, String), Ghost> {
        &self.ghosts
    }

    fn selection(&self, db: &str) -> Option<&Selection> {
        self.select.iter().find(|s| s.database == db)
    }

    /// The target database of `db.table` when the job follows its rows.
    pub fn target_of(&self, db: &str, table: &str) -> Option<&str> {
        match self.role(db, table) {
            Role::Followed(_) => self.selection(db).map(|s| s.target_database.as_str()),
            _ => None,
        }
    }

    /// Whether the rows of `db.table` are followed.
    pub fn follows(&self, db: &str, table: &str) -> bool {
        self.target_of(db, table).is_some()
    }

    fn role(&self, db: &str, table: &str) -> Role {
        let Some(sel) = self.selection(db) else {
            return Role::NotSelected;
        };
        if self
            .ghosts
            .contains_key(&(db.to_string(), table.to_string()))
        {
            if let Some(g) = self.ghosts.get(&(db.to_string(), table.to_string())) {
                return Role::Shadow(g.table.clone());
            }
        }
        let base_of = |templates: &[Template]| {
            templates.iter().find_map(|t| {
                t.bases(table).into_iter().find_map(|b| {
                    // pt-online-schema-change adds underscores until the name is free.
                    [b, b.trim_start_matches('_')]
                        .into_iter()
                        .find(|b| !b.is_empty() && *b != table && sel.matches(b))
                        .map(str::to_string)
                })
            })
        };
        if let Some(b) = base_of(&self.shadow) {
            return Role::Shadow(b);
        }
        if let Some(b) = base_of(&self.trash) {
            return Role::Trash(b);
        }
        if sel.matches(table) {
            Role::Followed(sel.target_database.clone())
        } else {
            Role::NotSelected
        }
    }

    fn rename_map(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |db: &str| {
            self.selection(db)
                .filter(|s| s.target_database != s.database)
                .map(|s| s.target_database.clone())
        }
    }

    /// The statement for the target: renamed databases rewritten, plus
    /// `extra` edits.
    fn for_target(&self, s: &Statement, extra: Vec<(std::ops::Range<usize>, String)>) -> String {
        let rename = self.rename_map();
        let overlaps = |r: &std::ops::Range<usize>| {
            extra
                .iter()
                .any(|(e, _)| r.start < e.end && e.start < r.end)
        };
        let mut edits: Vec<_> = s
            .qualifier_edits(&rename)
            .into_iter()
            .filter(|(r, _)| !overlaps(r))
            .collect();
        edits.extend(extra);
        s.edited(edits)
    }

    /// The target database a statement runs in: the default database's
    /// when it is selected, else that of the database it names.
    fn use_db(&self, default_db: &str, named: &str) -> String {
        self.selection(default_db)
            .or_else(|| self.selection(named))
            .map(|s| s.target_database.clone())
            .unwrap_or_else(|| named.to_string())
    }

    fn run(
        &self,
        q: &Query,
        db: &str,
        table: Option<&str>,
        sql: String,
        source_sql: String,
    ) -> Step {
        Step::Run {
            db: self.use_db(&q.default_db, db),
            sql,
            source_sql,
            source_db: db.to_string(),
            table: table.map(str::to_string),
            context: q.context.clone(),
        }
    }

    fn target_name(&self, db: &str, table: &str) -> String {
        let tdb = self
            .selection(db)
            .map(|s| s.target_database.as_str())
            .unwrap_or(db);
        qualified(tdb, table)
    }

    /// What `q` means for the target. Records the statements run on a
    /// shadow table (the caller persists [`Follow::ghosts`] after a change).
    pub fn plan(&mut self, q: &Query) -> Vec<Step> {
        let s = &q.statement;
        let def = q.default_db.as_str();
        let skip = |why: &str| vec![Step::Skip(why.to_string())];
        match &s.kind {
            Kind::Begin | Kind::Commit | Kind::Rollback | Kind::Savepoint | Kind::Xa(_) => {
                skip("transaction control")
            }
            Kind::Never(what) => vec![Step::Skip(format!("{what} statement (never replayed)"))],
            Kind::Dml => self.dml(q),
            Kind::CreateTable {
                table,
                like,
                select,
                temporary,
            } => {
                if *temporary {
                    return skip("temporary table");
                }
                let db = table.database(def).to_string();
                match self.role(&db, &table.name) {
                    Role::Shadow(base) => {
                        self.ghosts.insert(
                            (db.clone(), table.name.clone()),
                            Ghost {
                                table: base.clone(),
                                statements: Vec::new(),
                            },
                        );
                        vec![Step::Skip(format!(
                            "online schema change of {db}.{base}: {} is its new copy",
                            table.name
                        ))]
                    }
                    Role::Trash(base) => vec![Step::Skip(format!(
                        "online schema change of {db}.{base}: helper table {}",
                        table.name
                    ))],
                    Role::NotSelected => skip("table not selected"),
                    Role::Followed(_) => {
                        let from_outside = match like {
                            Some(l) => !self.follows(l.database(def), &l.name),
                            None => *select,
                        };
                        if from_outside {
                            vec![Step::Copy {
                                db,
                                table: table.name.clone(),
                            }]
                        } else {
                            vec![self.run(
                                q,
                                &db,
                                Some(&table.name),
                                self.for_target(s, vec![]),
                                s.text.clone(),
                            )]
                        }
                    }
                }
            }
            Kind::AlterTable { table, rename_to } => {
                let db = table.database(def).to_string();
                match (self.role(&db, &table.name), rename_to) {
                    (Role::Shadow(base), None) => self.record_ghost(q, &db, table, &base),
                    (Role::Shadow(_) | Role::Trash(_), Some(to)) => {
                        self.renames(q, &[(table.clone(), to.clone())])
                    }
                    (Role::Trash(base), None) => vec![Step::Skip(format!(
                        "online schema change of {db}.{base}: helper table {}",
                        table.name
                    ))],
                    (Role::NotSelected, None) => skip("table not selected"),
                    (Role::NotSelected, Some(to)) => {
                        self.renames(q, &[(table.clone(), to.clone())])
                    }
                    (Role::Followed(_), None) => {
                        vec![self.run(
                            q,
                            &db,
                            Some(&table.name),
                            self.for_target(s, vec![]),
                            s.text.clone(),
                        )]
                    }
                    (Role::Followed(_), Some(to)) => {
                        let to_db = to.database(def).to_string();
                        if matches!(self.role(&to_db, &to.name), Role::Trash(b) if b == table.name)
                        {
                            // gh-ost's two-step cut-over, first step.
                            return self.renames(q, &[(table.clone(), to.clone())]);
                        }
                        if self.follows(&to_db, &to.name) {
                            vec![self.run(
                                q,
                                &db,
                                Some(&table.name),
                                self.for_target(s, vec![]),
                                s.text.clone(),
                            )]
                        } else {
                            // Renamed out: the target keeps it under the new name.
                            let edits = vec![(
                                to.db_tok.unwrap_or(to.tok)..to.tok + 1,
                                self.target_name(&db, &to.name),
                            )];
                            let mut steps = vec![self.run(
                                q,
                                &db,
                                Some(&table.name),
                                self.for_target(s, edits),
                                s.text.clone(),
                            )];
                            steps.push(Step::Skip(format!(
                                "{db}.{} renamed to {to_db}.{}, which the job does not select: \
                                 no longer followed (the target keeps it as {})",
                                table.name,
                                to.name,
                                self.target_name(&db, &to.name)
                            )));
                            steps
                        }
                    }
                }
            }
            Kind::RenameTables(pairs) => self.renames(q, pairs),
            Kind::DropTables { tables, temporary } => {
                if *temporary {
                    return skip("temporary table");
                }
                let mut drop = Vec::new();
                let mut notes = Vec::new();
                for t in tables {
                    let db = t.database(def).to_string();
                    match self.role(&db, &t.name) {
                        Role::Followed(_) => drop.push(self.target_name(&db, &t.name)),
                        Role::Shadow(base) | Role::Trash(base) => {
                            self.ghosts.remove(&(db.clone(), t.name.clone()));
                            notes.push(format!(
                                "online schema change of {db}.{base}: helper table {} dropped",
                                t.name
                            ));
                        }
                        Role::NotSelected => {}
                    }
                }
                let mut steps: Vec<Step> = notes.into_iter().map(Step::Skip).collect();
                if drop.is_empty() {
                    if steps.is_empty() {
                        steps.push(Step::Skip("table not selected".into()));
                    }
                    return steps;
                }
                let Some(first) = tables.first() else {
                    return steps;
                };
                let db = first.database(def).to_string();
                steps.push(self.run(
                    q,
                    &db,
                    None,
                    format!("DROP TABLE IF EXISTS {}", drop.join(", ")),
                    s.text.clone(),
                ));
                steps
            }
            Kind::Truncate(t) | Kind::Index(t) => {
                let db = t.database(def).to_string();
                match self.role(&db, &t.name) {
                    Role::Followed(_) => vec![self.run(
                        q,
                        &db,
                        Some(&t.name),
                        self.for_target(s, vec![]),
                        s.text.clone(),
                    )],
                    Role::Shadow(base) if matches!(s.kind, Kind::Index(_)) => {
                        self.record_ghost(q, &db, t, &base)
                    }
                    Role::Shadow(base) | Role::Trash(base) => vec![Step::Skip(format!(
                        "online schema change of {db}.{base}: helper table {}",
                        t.name
                    ))],
                    Role::NotSelected => skip("table not selected"),
                }
            }
            Kind::Database { verb, name } => {
                let db = name.clone().unwrap_or_else(|| def.to_string());
                let Some(sel) = self.selection(&db) else {
                    return skip("database not selected");
                };
                let target_db = sel.target_database.clone();
                // The database's name is a plain identifier, not a qualifier.
                let mut edits = Vec::new();
                if let Some(i) = s.toks.iter().position(|t| {
                    matches!(&t.kind, crate::source::ddl::TokKind::Word(w) | crate::source::ddl::TokKind::Quoted(w) if *w == db)
                }) {
                    if name.is_some() && target_db != db {
                        edits.push((i..i + 1, quote_ident(&target_db)));
                    }
                }
                match verb {
                    Verb::Drop if sel.tables.is_some() => {
                        // Only some of its tables are selected: drop those.
                        vec![Step::Skip(format!(
                            "DROP DATABASE {db}: the job selects only some of its tables; \
                             they are dropped one by one as the source's drops arrive"
                        ))]
                    }
                    _ => vec![Step::Run {
                        db: target_db,
                        sql: s.edited(edits),
                        source_sql: s.text.clone(),
                        source_db: db,
                        table: None,
                        context: q.context.clone(),
                    }],
                }
            }
            Kind::View { verb, names } => {
                let followed: Vec<&Name> = names
                    .iter()
                    .filter(|n| {
                        let db = n.database(def);
                        self.selection(db).is_some_and(|sel| sel.matches(&n.name))
                    })
                    .collect();
                let Some(first) = followed.first() else {
                    return skip("view not selected");
                };
                let db = first.database(def).to_string();
                let sql = match verb {
                    Verb::Drop => format!(
                        "DROP VIEW IF EXISTS {}",
                        followed
                            .iter()
                            .map(|n| self.target_name(n.database(def), &n.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    _ => self.for_target(s, s.definer_edit().into_iter().collect()),
                };
                vec![self.run(q, &db, None, sql, s.text.clone())]
            }
            Kind::Routine { name, .. } => {
                let db = name.database(def).to_string();
                // Routines belong to a database: copied when all of it is selected.
                match self.selection(&db) {
                    Some(sel) if sel.tables.is_none() => {
                        let sql = self.for_target(s, s.definer_edit().into_iter().collect());
                        vec![self.run(q, &db, None, sql, s.text.clone())]
                    }
                    Some(_) => skip("routine of a database selected by table list (not copied)"),
                    None => skip("database not selected"),
                }
            }
            Kind::Trigger { verb, name, table } => {
                let db = table
                    .as_ref()
                    .map(|t| t.database(def))
                    .unwrap_or_else(|| name.database(def))
                    .to_string();
                if self.selection(&db).is_none() {
                    return skip("database not selected");
                }
                if name.name.starts_with("pt_osc_") {
                    return skip("pt-online-schema-change trigger (never on the target)");
                }
                match verb {
                    Verb::Drop => skip("triggers are not on the target while it replicates"),
                    _ => skip(
                        "trigger: created on the target when the job finishes (the binlog \
                         holds the rows it writes while the job replicates)",
                    ),
                }
            }
            Kind::Event { verb, name } => {
                let db = name.database(def).to_string();
                if self.selection(&db).is_none() {
                    return skip("database not selected");
                }
                match verb {
                    Verb::Drop => skip("events are not on the target while it replicates"),
                    _ => skip(
                        "event: created on the target when the job finishes (the binlog \
                         holds the rows it writes while the job replicates)",
                    ),
                }
            }
            Kind::Other(words) => {
                let touches = self.selection(def).is_some()
                    || !s
                        .qualifier_edits(&|db| self.selection(db).map(|_| String::new()))
                        .is_empty();
                if !touches {
                    return skip("not about a selected database");
                }
                if words.starts_with("CREATE SEQUENCE")
                    || words.starts_with("ALTER SEQUENCE")
                    || words.starts_with("DROP SEQUENCE")
                {
                    return skip("sequences are not copied");
                }
                vec![Step::Fail(format!(
                    "unsupported statement on a selected database ({}): {}. Ferry does not know \
                     what it changes; apply it on the target by hand, then restart the job with \
                     [cdc] start at the position after it, or set [cdc] ddl = \"skip\" for a while",
                    if words.is_empty() { "?" } else { words },
                    crate::model::truncate(&s.text, 200)
                ))]
            }
        }
    }

    /// A statement on a shadow table: recorded for the cut-over.
    fn record_ghost(&mut self, q: &Query, db: &str, shadow: &Name, base: &str) -> Vec<Step> {
        let s = &q.statement;
        let replacement = match &shadow.db {
            Some(d) => format!("{}.{}", quote_ident(d), quote_ident(base)),
            None => quote_ident(base),
        };
        let sql = s.edited(vec![(
            shadow.db_tok.unwrap_or(shadow.tok)..shadow.tok + 1,
            replacement,
        )]);
        let ghost = self
            .ghosts
            .entry((db.to_string(), shadow.name.clone()))
            .or_insert_with(|| Ghost {
                table: base.to_string(),
                statements: Vec::new(),
            });
        if !ghost.statements.iter().any(|g| g.at == q.end) {
            ghost.statements.push(GhostStatement {
                at: q.end.clone(),
                sql,
                default_db: q.default_db.clone(),
                context: q.context.clone(),
            });
        }
        vec![Step::Skip(format!(
            "online schema change of {db}.{base}: recorded for its cut-over ({} statements so far)",
            ghost.statements.len()
        ))]
    }

    /// RENAME TABLE pairs, in order.
    fn renames(&mut self, q: &Query, pairs: &[(Name, Name)]) -> Vec<Step> {
        let def = q.default_db.as_str();
        let mut target_pairs: Vec<String> = Vec::new();
        let mut after: Vec<Step> = Vec::new();
        let mut notes: Vec<Step> = Vec::new();
        let mut first_db: Option<String> = None;
        for (from, to) in pairs {
            let (fdb, tdb) = (from.database(def).to_string(), to.database(def).to_string());
            let (fr, tr) = (self.role(&fdb, &from.name), self.role(&tdb, &to.name));
            match (&fr, &tr) {
                // Cut-over, first half (gh-ost, pt-osc): the table steps aside.
                (Role::Followed(_), Role::Trash(base)) if *base == from.name => {
                    notes.push(Step::Skip(format!(
                        "online schema change of {fdb}.{base}: the old table steps aside as {}",
                        to.name
                    )));
                }
                // Cut-over: the shadow becomes the table.
                (Role::Shadow(base), Role::Followed(_)) if *base == to.name => {
                    let ghost = self.ghosts.remove(&(fdb.clone(), from.name.clone()));
                    match ghost {
                        Some(g) => {
                            for st in g.statements {
                                let parsed = Statement::parse(&st.sql, st.context.ansi_quotes())
                                    .unwrap_or_else(|_| Statement::unparsed(&st.sql));
                                let sql = self.for_target(&parsed, vec![]);
                                after.push(Step::Run {
                                    db: self.use_db(&st.default_db, &tdb),
                                    sql,
                                    source_sql: st.sql.clone(),
                                    source_db: tdb.clone(),
                                    table: Some(to.name.clone()),
                                    context: st.context,
                                });
                            }
                            notes.push(Step::Skip(format!(
                                "online schema change of {tdb}.{}: cut over; its recorded \
                                 statements applied to the table",
                                to.name
                            )));
                        }
                        // The change began before the job could see it: copy
                        // the new table whole.
                        None => after.push(Step::Copy {
                            db: tdb.clone(),
                            table: to.name.clone(),
                        }),
                    }
                }
                (Role::Followed(_), Role::Followed(_)) => {
                    first_db.get_or_insert(fdb.clone());
                    target_pairs.push(format!(
                        "{} TO {}",
                        self.target_name(&fdb, &from.name),
                        self.target_name(&tdb, &to.name)
                    ));
                }
                (Role::Followed(_), _) => {
                    // Renamed out: kept on the target under its new name,
                    // in its target database, no longer followed.
                    first_db.get_or_insert(fdb.clone());
                    target_pairs.push(format!(
                        "{} TO {}",
                        self.target_name(&fdb, &from.name),
                        self.target_name(&fdb, &to.name)
                    ));
                    notes.push(Step::Skip(format!(
                        "{fdb}.{} renamed to {tdb}.{}, which the job does not select: no longer \
                         followed (the target keeps it as {})",
                        from.name,
                        to.name,
                        self.target_name(&fdb, &to.name)
                    )));
                }
                (_, Role::Followed(_)) => after.push(Step::Copy {
                    db: tdb.clone(),
                    table: to.name.clone(),
                }),
                (Role::Shadow(_), _) => {
                    // A shadow renamed to something else: still a helper.
                    if let Some(g) = self.ghosts.remove(&(fdb.clone(), from.name.clone())) {
                        self.ghosts.insert((tdb.clone(), to.name.clone()), g);
                    }
                }
                _ => {}
            }
        }
        let mut steps = notes;
        if let Some(db) = first_db {
            steps.insert(
                0,
                self.run(
                    q,
                    &db,
                    None,
                    format!("RENAME TABLE {}", target_pairs.join(", ")),
                    q.statement.text.clone(),
                ),
            );
        }
        steps.extend(after);
        if steps.is_empty() {
            steps.push(Step::Skip("table not selected".into()));
        }
        steps
    }

    /// A row change logged as a statement: Ferry needs row events.
    fn dml(&self, q: &Query) -> Vec<Step> {
        let touches = self.selection(&q.default_db).is_some()
            || !q
                .statement
                .qualifier_edits(&|db| self.selection(db).map(|_| String::new()))
                .is_empty();
        if !touches {
            return vec![Step::Skip(
                "statement-format row change outside the selection".into(),
            )];
        }
        vec![Step::Fail(format!(
            "a row change at {} was logged as a statement (binlog_format STATEMENT or MIXED), \
             not as row events, so Ferry cannot apply it: {}. On the source: SET GLOBAL \
             binlog_format = 'ROW' (sessions opened before keep their format: reconnect the \
             applications), then start the job again with a new --state (a new full load), or \
             apply the change on the target by hand and restart with [cdc] start after it",
            q.end,
            crate::model::truncate(&q.statement.text, 200)
        ))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BinlogPos;

    fn job(tables: Option<&str>, rename: Option<&str>) -> JobSpec {
        let mut text = String::from(
            "name = \"j\"\nmode = \"sync\"\n[source]\nhost = \"h\"\nport = 1\nuser = \"u\"\n\
             password_env = \"P\"\n[target]\nhost = \"h\"\nport = 2\nuser = \"u\"\npassword_env = \"P\"\n\
             [[select]]\ndatabase = \"shop\"\n",
        );
        if let Some(t) = tables {
            text.push_str(&format!("tables = [{t}]\n"));
        }
        if let Some(r) = rename {
            text.push_str(&format!("rename = \"{r}\"\n"));
        }
        crate::job::parse_job("t.toml", &text).expect("job")
    }

    fn q(default_db: &str, sql: &str, pos: u64) -> Query {
        Query {
            statement: Statement::parse(sql, false).expect("parses"),
            default_db: default_db.into(),
            context: SessionContext::default(),
            end: BinlogPos {
                file: "binlog.000001".into(),
                pos,
            },
            gtid: None,
            in_txn: false,
            server_id: 1,
        }
    }

    fn runs(steps: &[Step]) -> Vec<(String, String)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Run { db, sql, .. } => Some((db.clone(), sql.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ddl_is_filtered_by_table_not_by_database() {
        let mut f = Follow::new(
            &job(Some("\"orders\", \"items\""), Some("copy")),
            BTreeMap::new(),
        );
        let steps = f.plan(&q("", "ALTER TABLE shop.orders ADD c INT", 1));
        assert_eq!(
            runs(&steps),
            vec![("copy".into(), "ALTER TABLE `copy`.orders ADD c INT".into())]
        );
        let steps = f.plan(&q("shop", "DROP TABLE other", 2));
        assert!(runs(&steps).is_empty(), "{steps:?}");
        let steps = f.plan(&q("shop", "DROP TABLE other, orders", 3));
        assert_eq!(
            runs(&steps),
            vec![("copy".into(), "DROP TABLE IF EXISTS `copy`.`orders`".into())]
        );
        let steps = f.plan(&q("", "TRUNCATE TABLE shop.items", 4));
        assert_eq!(
            runs(&steps),
            vec![("copy".into(), "TRUNCATE TABLE `copy`.items".into())]
        );
        let steps = f.plan(&q("other", "create table SHOP.orders2 (a int)", 5));
        assert!(
            runs(&steps).is_empty(),
            "not selected (case matters): {steps:?}"
        );
        let steps = f.plan(&q("other", "ALTER TABLE orders ADD c INT", 6));
        assert!(runs(&steps).is_empty(), "other.orders is not shop.orders");
    }

    #[test]
    fn renames_in_and_out_of_the_selection() {
        let mut f = Follow::new(&job(Some("\"orders\""), None), BTreeMap::new());
        let steps = f.plan(&q(
            "shop",
            "RENAME TABLE orders TO orders_2024, orders_new TO orders",
            1,
        ));
        assert_eq!(
            runs(&steps),
            vec![(
                "shop".into(),
                "RENAME TABLE `shop`.`orders` TO `shop`.`orders_2024`".into()
            )]
        );
        assert!(steps.contains(&Step::Copy {
            db: "shop".into(),
            table: "orders".into()
        }));
        let steps = f.plan(&q("shop", "CREATE TABLE orders LIKE template", 2));
        assert_eq!(
            steps,
            vec![Step::Copy {
                db: "shop".into(),
                table: "orders".into()
            }]
        );
    }

    #[test]
    fn gh_ost_cut_over_applies_the_recorded_alter() {
        for tables in [Some("\"t\""), None] {
            let mut f = Follow::new(&job(tables, Some("copy")), BTreeMap::new());
            let seq = [
                "drop /* gh-ost */ table if exists `shop`.`_t_gho`",
                "create /* gh-ost */ table `shop`.`_t_ghc` (id bigint auto_increment, primary key(id))",
                "create /* gh-ost */ table `shop`.`_t_gho` like `shop`.`t`",
                "alter /* gh-ost */ table `shop`.`_t_gho` add column c int not null default 7",
                "create /* gh-ost */ table `shop`.`_t_del` (id int auto_increment primary key) engine=InnoDB comment='ghost-cut-over-sentinel'",
                "drop /* gh-ost */ table if exists `shop`.`_t_del`",
            ];
            for (i, sql) in seq.iter().enumerate() {
                let steps = f.plan(&q("", sql, 10 + i as u64));
                assert!(runs(&steps).is_empty(), "{sql}: {steps:?}");
            }
            assert!(!f.follows("shop", "_t_gho") && !f.follows("shop", "_t_ghc"));
            assert!(f.follows("shop", "t"));
            let steps = f.plan(&q(
                "",
                "rename /* gh-ost */ table `shop`.`t` to `shop`.`_t_del`, `shop`.`_t_gho` to `shop`.`t`",
                30,
            ));
            assert_eq!(
                runs(&steps),
                vec![(
                    "copy".into(),
                    "alter /* gh-ost */ table `copy`.`t` add column c int not null default 7"
                        .into()
                )]
            );
            assert!(f.ghosts().is_empty());
            let steps = f.plan(&q(
                "",
                "drop /* gh-ost */ table if exists `shop`.`_t_del`",
                31,
            ));
            assert!(runs(&steps).is_empty());
        }
    }

    #[test]
    fn gh_ost_two_step_cut_over() {
        let mut f = Follow::new(&job(Some("\"t\""), None), BTreeMap::new());
        for (i, sql) in [
            "create /* gh-ost */ table `shop`.`_t_gho` like `shop`.`t`",
            "alter /* gh-ost */ table `shop`.`_t_gho` add column c int",
            "alter /* gh-ost */ table `shop`.`t` rename `_t_del`",
        ]
        .iter()
        .enumerate()
        {
            assert!(runs(&f.plan(&q("shop", sql, i as u64))).is_empty(), "{sql}");
        }
        let steps = f.plan(&q(
            "shop",
            "alter /* gh-ost */ table `shop`.`_t_gho` rename `t`",
            9,
        ));
        assert_eq!(
            runs(&steps),
            vec![(
                "shop".into(),
                "alter /* gh-ost */ table `shop`.`t` add column c int".into()
            )]
        );
    }

    #[test]
    fn pt_osc_without_a_recorded_start_copies_the_table() {
        let mut f = Follow::new(&job(Some("\"t\""), None), BTreeMap::new());
        let steps = f.plan(&q(
            "shop",
            "RENAME TABLE `shop`.`t` TO `shop`.`_t_old`, `shop`.`__t_new` TO `shop`.`t`",
            1,
        ));
        assert!(runs(&steps).is_empty(), "{steps:?}");
        assert!(steps.contains(&Step::Copy {
            db: "shop".into(),
            table: "t".into()
        }));
        // Its triggers never reach the target.
        let steps = f.plan(&q("shop", "CREATE TRIGGER `pt_osc_shop_t_ins` AFTER INSERT ON `shop`.`t` FOR EACH ROW REPLACE INTO `shop`.`_t_new` VALUES (NEW.id)", 2));
        assert!(runs(&steps).is_empty());
    }

    #[test]
    fn custom_templates() {
        assert_eq!(
            Template::new("_{table}_*_del")
                .unwrap()
                .bases("_t_20231010_del"),
            vec!["t"]
        );
        assert_eq!(
            Template::new("{table}__tmp").unwrap().bases("orders__tmp"),
            vec!["orders"]
        );
        assert!(Template::new("_{table}_gho")
            .unwrap()
            .bases("_t_ghc")
            .is_empty());
    }

    #[test]
    fn statement_format_dml_stops_only_inside_the_selection() {
        let mut f = Follow::new(&job(None, None), BTreeMap::new());
        assert!(matches!(
            f.plan(&q("shop", "INSERT INTO a VALUES (1)", 1))[..],
            [Step::Fail(_)]
        ));
        assert!(matches!(
            f.plan(&q("other", "INSERT INTO a VALUES (1)", 2))[..],
            [Step::Skip(_)]
        ));
        assert!(matches!(
            f.plan(&q("other", "UPDATE shop.a SET v = 1", 3))[..],
            [Step::Fail(_)]
        ));
        assert!(matches!(
            f.plan(&q("shop", "GRANT ALL ON shop.* TO x", 4))[..],
            [Step::Skip(_)]
        ));
    }

    #[test]
    fn views_routines_and_definers() {
        let mut f = Follow::new(&job(None, Some("copy")), BTreeMap::new());
        let steps = f.plan(&q(
            "shop",
            "CREATE DEFINER=`root`@`localhost` VIEW v AS SELECT * FROM shop.t",
            1,
        ));
        assert_eq!(
            runs(&steps),
            vec![(
                "copy".into(),
                "CREATE  VIEW v AS SELECT * FROM `copy`.t".into()
            )]
        );
        let steps = f.plan(&q("shop", "DROP VIEW v, other.w", 2));
        assert_eq!(
            runs(&steps),
            vec![("copy".into(), "DROP VIEW IF EXISTS `copy`.`v`".into())]
        );
        let steps = f.plan(&q(
            "shop",
            "CREATE DEFINER=`a`@`%` PROCEDURE p() SELECT 1",
            3,
        ));
        assert_eq!(
            runs(&steps),
            vec![("copy".into(), "CREATE  PROCEDURE p() SELECT 1".into())]
        );
        let steps = f.plan(&q("", "CREATE DATABASE IF NOT EXISTS shop", 4));
        assert_eq!(
            runs(&steps),
            vec![("copy".into(), "CREATE DATABASE IF NOT EXISTS `copy`".into())]
        );
    }
}
