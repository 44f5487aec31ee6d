//! Statements from the binlog understood on tokens, not substrings.
//!
//! A Query event's text is tokenized with `sqlparser`'s MySQL tokenizer
//! (comments dropped, `/*!NNNNN ... */` and MariaDB's `/*M!NNNNN ... */`
//! executed as the server does), then classified: which tables, views,
//! routines or databases it touches, each name resolved against the
//! session's default database. Rewrites (renamed databases, a shadow
//! table's name, a DEFINER clause) are edits of token spans in the
//! original text, so everything else stays byte for byte as the source
//! wrote it.

use std::ops::Range;

use sqlparser::dialect::MySqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

/// One significant token and where it is in the text (bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tok {
    pub kind: TokKind,
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokKind {
    /// A keyword or an unquoted identifier, as written.
    Word(String),
    /// A quoted identifier, unescaped.
    Quoted(String),
    /// A string literal.
    Str,
    Number,
    Dot,
    Comma,
    LParen,
    RParen,
    Eq,
    At,
    Semicolon,
    Other,
}

/// A name as a statement writes it: `name` or `db.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub db: Option<String>,
    pub name: String,
    /// Token index of the name and of its database qualifier.
    pub tok: usize,
    pub db_tok: Option<usize>,
}

impl Name {
    /// The database the name is in, given the session's default database.
    pub fn database<'a>(&'a self, default_db: &'a str) -> &'a str {
        self.db.as_deref().unwrap_or(default_db)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Alter,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XaVerb {
    Start,
    End,
    Prepare,
    Commit { one_phase: bool },
    Rollback,
    Other,
}

/// What a statement is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Begin,
    Commit,
    Rollback,
    /// SAVEPOINT, ROLLBACK TO, RELEASE SAVEPOINT.
    Savepoint,
    Xa(XaVerb),
    CreateTable {
        table: Name,
        like: Option<Name>,
        /// `CREATE TABLE ... SELECT` as written by the user (statement
        /// format); in ROW format the server logs the columns instead.
        select: bool,
        temporary: bool,
    },
    AlterTable {
        table: Name,
        rename_to: Option<Name>,
    },
    RenameTables(Vec<(Name, Name)>),
    DropTables {
        tables: Vec<Name>,
        temporary: bool,
    },
    Truncate(Name),
    /// CREATE or DROP INDEX ... ON table.
    Index(Name),
    /// `name` is `None` for ALTER DATABASE without one (the default db).
    Database {
        verb: Verb,
        name: Option<String>,
    },
    View {
        verb: Verb,
        names: Vec<Name>,
    },
    /// Procedures, functions, packages.
    Routine {
        verb: Verb,
        name: Name,
    },
    Trigger {
        verb: Verb,
        name: Name,
        table: Option<Name>,
    },
    Event {
        verb: Verb,
        name: Name,
    },
    /// Row changes written as a statement (binlog_format STATEMENT/MIXED).
    Dml,
    /// Never replayed: accounts, grants, table maintenance, plugins.
    Never(&'static str),
    /// Anything else, named by its first words.
    Other(String),
}

/// A statement: its text, tokens and kind.
#[derive(Debug, Clone)]
pub struct Statement {
    pub text: String,
    pub toks: Vec<Tok>,
    pub kind: Kind,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot tokenize the statement: {0}")]
pub struct TokenizeError(String);

impl Statement {
    /// Tokenizes and classifies `text`; `ansi_quotes` when the session's
    /// sql_mode makes `"` quote identifiers.
    pub fn parse(text: &str, ansi_quotes: bool) -> Result<Statement, TokenizeError> {
        let toks = tokenize(text, ansi_quotes)?;
        let kind = classify(&toks);
        Ok(Statement {
            text: text.to_string(),
            toks,
            kind,
        })
    }

    /// A statement that could not be tokenized, kept as text.
    pub fn unparsed(text: &str) -> Statement {
        Statement {
            text: text.to_string(),
            toks: Vec::new(),
            kind: Kind::Other(first_words(text)),
        }
    }

    /// The text with edits applied: each `(token range, replacement)`
    /// replaces the bytes from the first token's start to the last one's end.
    pub fn edited(&self, mut edits: Vec<(Range<usize>, String)>) -> String {
        edits.sort_by_key(|(r, _)| r.start);
        let mut out = String::with_capacity(self.text.len() + 32);
        let mut at = 0;
        for (toks, with) in edits {
            let (Some(first), Some(last)) =
                (self.toks.get(toks.start), self.toks.get(toks.end - 1))
            else {
                continue;
            };
            if first.span.start < at {
                continue; // overlapping edits: the first one wins
            }
            out.push_str(&self.text[at..first.span.start]);
            out.push_str(&with);
            at = last.span.end;
        }
        out.push_str(&self.text[at..]);
        out
    }

    /// Every database qualifier (`db.` before a name) that `rename` maps
    /// to another name, as edits.
    pub fn qualifier_edits(
        &self,
        rename: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<(Range<usize>, String)> {
        let mut edits = Vec::new();
        for i in 0..self.toks.len() {
            let Some(id) = ident(&self.toks, i) else {
                continue;
            };
            let qualifies = matches!(self.toks.get(i + 1).map(|t| &t.kind), Some(TokKind::Dot))
                && ident(&self.toks, i + 2).is_some()
                // Not the second part of `a.b.c`.
                && !i
                    .checked_sub(1)
                    .and_then(|j| self.toks.get(j))
                    .is_some_and(|t| t.kind == TokKind::Dot);
            if qualifies {
                if let Some(to) = rename(&id) {
                    edits.push((i..i + 1, crate::db::quote_ident(&to)));
                }
            }
        }
        edits
    }

    /// The `DEFINER = user` clause, as an edit that removes it.
    pub fn definer_edit(&self) -> Option<(Range<usize>, String)> {
        let t = &self.toks;
        let i = t.iter().position(|x| is_word(x, "DEFINER"))?;
        if t.get(i + 1)?.kind != TokKind::Eq {
            return None;
        }
        let mut end = i + 2; // the user
        if is_word(t.get(end)?, "CURRENT_USER") {
            if t.get(end + 1).is_some_and(|x| x.kind == TokKind::LParen)
                && t.get(end + 2).is_some_and(|x| x.kind == TokKind::RParen)
            {
                end += 2;
            }
        } else if t.get(end + 1).is_some_and(|x| x.kind == TokKind::At) {
            end += 2; // user @ host
        }
        Some((i..end + 1, String::new()))
    }

    /// Whether this is a `CREATE OR REPLACE ...`.
    pub fn or_replace(&self) -> bool {
        is_word_at(&self.toks, 1, "OR") && is_word_at(&self.toks, 2, "REPLACE")
    }
}

/// The first two words of a statement, for messages.
pub fn first_words(text: &str) -> String {
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
}

fn tokenize(text: &str, ansi_quotes: bool) -> Result<Vec<Tok>, TokenizeError> {
    let mut out = Vec::new();
    tokenize_into(text, 0, ansi_quotes, &mut out)?;
    Ok(out)
}

/// Tokens of `text` (which starts at byte `base` of the statement).
fn tokenize_into(
    text: &str,
    base: usize,
    ansi_quotes: bool,
    out: &mut Vec<Tok>,
) -> Result<(), TokenizeError> {
    let dialect = MySqlDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .with_unescape(false)
        .tokenize_with_location()
        .map_err(|e| TokenizeError(e.to_string()))?;
    let mut cursor = Cursor::new(text);
    for t in tokens {
        let start = cursor.seek(t.span.start.line, t.span.start.column);
        let end = cursor.seek(t.span.end.line, t.span.end.column);
        let span = base + start..base + end;
        let kind = match t.token {
            Token::Whitespace(Whitespace::MultiLineComment(c)) => {
                // MariaDB's executable comment: `/*M!NNNNNN ... */`.
                if let Some(rest) = c.strip_prefix("M!") {
                    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
                    let inner = &rest[digits..];
                    tokenize_into(inner, span.start + 4 + digits, ansi_quotes, out)?;
                }
                continue;
            }
            Token::Whitespace(_) => continue,
            Token::Word(w) => match w.quote_style {
                None => TokKind::Word(w.value),
                Some(q) => {
                    let doubled: String = [q, q].iter().collect();
                    TokKind::Quoted(w.value.replace(&doubled, &q.to_string()))
                }
            },
            Token::DoubleQuotedString(s) if ansi_quotes => TokKind::Quoted(s.replace("\"\"", "\"")),
            Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::EscapedStringLiteral(_) => TokKind::Str,
            Token::Number(..) => TokKind::Number,
            Token::Period => TokKind::Dot,
            Token::Comma => TokKind::Comma,
            Token::LParen => TokKind::LParen,
            Token::RParen => TokKind::RParen,
            Token::Eq => TokKind::Eq,
            Token::AtSign => TokKind::At,
            Token::SemiColon => TokKind::Semicolon,
            _ => TokKind::Other,
        };
        out.push(Tok { kind, span });
    }
    Ok(())
}

/// Turns the tokenizer's (line, column) locations into byte offsets; the
/// tokens come in order, so one pass over the text serves them all.
struct Cursor<'a> {
    text: &'a str,
    byte: usize,
    line: u64,
    col: u64,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            text,
            byte: 0,
            line: 1,
            col: 1,
        }
    }

    fn seek(&mut self, line: u64, col: u64) -> usize {
        while (self.line, self.col) < (line, col) {
            let Some(c) = self.text[self.byte..].chars().next() else {
                break;
            };
            self.byte += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
        }
        self.byte
    }
}

fn is_word(t: &Tok, kw: &str) -> bool {
    matches!(&t.kind, TokKind::Word(w) if w.eq_ignore_ascii_case(kw))
}

fn is_word_at(toks: &[Tok], i: usize, kw: &str) -> bool {
    toks.get(i).is_some_and(|t| is_word(t, kw))
}

/// The identifier at `i` (a word or a quoted name).
fn ident(toks: &[Tok], i: usize) -> Option<String> {
    match &toks.get(i)?.kind {
        TokKind::Word(w) => Some(w.clone()),
        TokKind::Quoted(q) => Some(q.clone()),
        _ => None,
    }
}

/// Reads tokens left to right.
struct P<'a> {
    t: &'a [Tok],
    i: usize,
}

impl P<'_> {
    fn peek(&self, kw: &str) -> bool {
        is_word_at(self.t, self.i, kw)
    }

    fn eat(&mut self, kw: &str) -> bool {
        let hit = self.peek(kw);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn eat_all(&mut self, kws: &[&str]) -> bool {
        let save = self.i;
        for k in kws {
            if !self.eat(k) {
                self.i = save;
                return false;
            }
        }
        true
    }

    fn kind(&self) -> Option<&TokKind> {
        self.t.get(self.i).map(|t| &t.kind)
    }

    /// `name` or `db.name`.
    fn name(&mut self) -> Option<Name> {
        let first = ident(self.t, self.i)?;
        if matches!(self.t.get(self.i + 1).map(|t| &t.kind), Some(TokKind::Dot)) {
            if let Some(second) = ident(self.t, self.i + 2) {
                let n = Name {
                    db: Some(first),
                    name: second,
                    tok: self.i + 2,
                    db_tok: Some(self.i),
                };
                self.i += 3;
                return Some(n);
            }
        }
        let n = Name {
            db: None,
            name: first,
            tok: self.i,
            db_tok: None,
        };
        self.i += 1;
        Some(n)
    }

    /// Names separated by commas.
    fn names(&mut self) -> Vec<Name> {
        let mut out = Vec::new();
        while let Some(n) = self.name() {
            out.push(n);
            if self.kind() != Some(&TokKind::Comma) {
                break;
            }
            self.i += 1;
        }
        out
    }

    fn if_exists(&mut self) {
        self.eat_all(&["IF", "EXISTS"]);
    }

    fn if_not_exists(&mut self) {
        self.eat_all(&["IF", "NOT", "EXISTS"]);
    }

    /// Skips `OR REPLACE`, `ALGORITHM = x`, `DEFINER = user`, `SQL
    /// SECURITY x`, `AGGREGATE`: what may stand between CREATE/ALTER and
    /// the object's kind.
    fn skip_object_options(&mut self) {
        loop {
            if self.eat_all(&["OR", "REPLACE"]) || self.eat("AGGREGATE") {
                continue;
            }
            if self.peek("ALGORITHM") || self.peek("DEFINER") {
                self.i += 1;
                if self.kind() == Some(&TokKind::Eq) {
                    self.i += 1;
                }
                let definer = is_word_at(self.t, self.i, "CURRENT_USER");
                self.i += 1; // the value
                if definer
                    && self.kind() == Some(&TokKind::LParen)
                    && self.t.get(self.i + 1).map(|t| &t.kind) == Some(&TokKind::RParen)
                {
                    self.i += 2;
                } else if self.kind() == Some(&TokKind::At) {
                    self.i += 2; // @ host
                }
                continue;
            }
            if self.eat_all(&["SQL", "SECURITY"]) {
                self.i += 1;
                continue;
            }
            break;
        }
    }

    /// Whether `kw` appears at parenthesis depth 0 from here on.
    fn top_level(&self, kw: &str) -> Option<usize> {
        let mut depth = 0i32;
        for (j, t) in self.t.iter().enumerate().skip(self.i) {
            match t.kind {
                TokKind::LParen => depth += 1,
                TokKind::RParen => depth -= 1,
                _ if depth == 0 && is_word(t, kw) => return Some(j),
                _ => {}
            }
        }
        None
    }
}

fn classify(toks: &[Tok]) -> Kind {
    let mut p = P { t: toks, i: 0 };
    let Some(first) = ident(toks, 0).map(|w| w.to_ascii_uppercase()) else {
        return Kind::Other(String::new());
    };
    let other = || {
        let words: Vec<String> = toks
            .iter()
            .take(2)
            .filter_map(|t| match &t.kind {
                TokKind::Word(w) => Some(w.to_ascii_uppercase()),
                _ => None,
            })
            .collect();
        Kind::Other(words.join(" "))
    };
    p.i = 1;
    match first.as_str() {
        "BEGIN" => Kind::Begin,
        "START" if p.peek("TRANSACTION") => Kind::Begin,
        "COMMIT" => Kind::Commit,
        "ROLLBACK" => {
            p.eat("WORK");
            if p.peek("TO") {
                Kind::Savepoint
            } else {
                Kind::Rollback
            }
        }
        "SAVEPOINT" => Kind::Savepoint,
        "RELEASE" if p.peek("SAVEPOINT") => Kind::Savepoint,
        "XA" => Kind::Xa(
            match ident(toks, 1).map(|w| w.to_ascii_uppercase()).as_deref() {
                Some("START") | Some("BEGIN") => XaVerb::Start,
                Some("END") => XaVerb::End,
                Some("PREPARE") => XaVerb::Prepare,
                Some("COMMIT") => XaVerb::Commit {
                    one_phase: toks.iter().any(|t| is_word(t, "PHASE")),
                },
                Some("ROLLBACK") => XaVerb::Rollback,
                _ => XaVerb::Other,
            },
        ),
        "INSERT" | "REPLACE" | "UPDATE" | "DELETE" | "LOAD" | "CALL" | "DO" | "HANDLER" => {
            Kind::Dml
        }
        "GRANT" | "REVOKE" => Kind::Never("account management"),
        "SET" => {
            if p.peek("PASSWORD") || p.peek("ROLE") || p.peek("DEFAULT") {
                Kind::Never("account management")
            } else {
                Kind::Never("session settings")
            }
        }
        "FLUSH" | "RESET" | "PURGE" | "KILL" | "SHUTDOWN" => Kind::Never("server administration"),
        "ANALYZE" | "OPTIMIZE" | "REPAIR" | "CHECK" | "CHECKSUM" => {
            Kind::Never("table maintenance")
        }
        "INSTALL" | "UNINSTALL" => Kind::Never("plugins"),
        "TRUNCATE" => {
            p.eat("TABLE");
            p.name().map(Kind::Truncate).unwrap_or_else(other)
        }
        "RENAME" => {
            if p.eat("TABLE") || p.eat("TABLES") {
                p.if_exists();
                let mut pairs = Vec::new();
                while let Some(from) = p.name() {
                    if !p.eat("TO") {
                        break;
                    }
                    let Some(to) = p.name() else { break };
                    pairs.push((from, to));
                    if p.kind() != Some(&TokKind::Comma) {
                        break;
                    }
                    p.i += 1;
                }
                if pairs.is_empty() {
                    other()
                } else {
                    Kind::RenameTables(pairs)
                }
            } else if p.peek("USER") {
                Kind::Never("account management")
            } else {
                other()
            }
        }
        "CREATE" => classify_create(&mut p).unwrap_or_else(other),
        "ALTER" => classify_alter(&mut p).unwrap_or_else(other),
        "DROP" => classify_drop(&mut p).unwrap_or_else(other),
        _ => other(),
    }
}

fn classify_create(p: &mut P<'_>) -> Option<Kind> {
    p.skip_object_options();
    let temporary = p.eat("TEMPORARY");
    if p.eat("TABLE") {
        p.if_not_exists();
        let table = p.name()?;
        let mut like = None;
        let paren = p.kind() == Some(&TokKind::LParen);
        if paren && is_word_at(p.t, p.i + 1, "LIKE") {
            p.i += 2;
            like = p.name();
        } else if p.eat("LIKE") {
            like = p.name();
        }
        let select = like.is_none() && p.top_level("SELECT").is_some();
        return Some(Kind::CreateTable {
            table,
            like,
            select,
            temporary,
        });
    }
    if p.eat("PROCEDURE") || p.eat("FUNCTION") || p.eat("PACKAGE") {
        p.eat("BODY");
        p.if_not_exists();
        let name = p.name()?;
        // A loadable function (`CREATE FUNCTION f RETURNS ... SONAME`).
        if p.top_level("SONAME").is_some() {
            return Some(Kind::Never("plugins"));
        }
        return Some(Kind::Routine {
            verb: Verb::Create,
            name,
        });
    }
    if p.eat("TRIGGER") {
        p.if_not_exists();
        let name = p.name()?;
        let on = p.top_level("ON")?;
        let mut q = P { t: p.t, i: on + 1 };
        return Some(Kind::Trigger {
            verb: Verb::Create,
            name,
            table: q.name(),
        });
    }
    let _ = p.eat("UNIQUE") || p.eat("FULLTEXT") || p.eat("SPATIAL");
    if p.eat("INDEX") {
        let on = p.top_level("ON")?;
        let mut q = P { t: p.t, i: on + 1 };
        return Some(Kind::Index(q.name()?));
    }
    classify_object(p, Verb::Create)
}

/// What CREATE and DROP name alike: a database, views, an event, and the
/// accounts and servers that are never replicated.
fn classify_object(p: &mut P<'_>, verb: Verb) -> Option<Kind> {
    let guard = |p: &mut P<'_>| match verb {
        Verb::Drop => p.if_exists(),
        _ => p.if_not_exists(),
    };
    if p.eat("DATABASE") || p.eat("SCHEMA") {
        guard(p);
        let name = ident(p.t, p.i);
        return Some(Kind::Database { verb, name });
    }
    if p.eat("VIEW") {
        guard(p);
        let names = match verb {
            Verb::Drop => p.names(),
            _ => vec![p.name()?],
        };
        return Some(Kind::View { verb, names });
    }
    if p.eat("EVENT") {
        guard(p);
        let name = p.name()?;
        return Some(Kind::Event { verb, name });
    }
    if p.peek("USER") || p.peek("ROLE") {
        return Some(Kind::Never("account management"));
    }
    if p.peek("SERVER") {
        return Some(Kind::Never("server administration"));
    }
    None
}

fn classify_alter(p: &mut P<'_>) -> Option<Kind> {
    p.eat("ONLINE");
    p.eat("IGNORE");
    if p.eat("TABLE") {
        p.if_exists();
        let table = p.name()?;
        // `RENAME [TO|AS] x` (not RENAME COLUMN / INDEX / KEY / CONSTRAINT).
        let mut rename_to = None;
        let mut q = P { t: p.t, i: p.i };
        while let Some(j) = q.top_level("RENAME") {
            q.i = j + 1;
            if q.peek("COLUMN") || q.peek("INDEX") || q.peek("KEY") || q.peek("CONSTRAINT") {
                continue;
            }
            if !q.eat("TO") {
                q.eat("AS");
            }
            rename_to = q.name();
            break;
        }
        return Some(Kind::AlterTable { table, rename_to });
    }
    if p.eat("DATABASE") || p.eat("SCHEMA") {
        let name = match ident(p.t, p.i) {
            Some(n) if !is_database_option(&n) => Some(n),
            _ => None,
        };
        return Some(Kind::Database {
            verb: Verb::Alter,
            name,
        });
    }
    p.skip_object_options();
    if p.eat("VIEW") {
        return Some(Kind::View {
            verb: Verb::Alter,
            names: vec![p.name()?],
        });
    }
    if p.eat("PROCEDURE") || p.eat("FUNCTION") || p.eat("PACKAGE") {
        return Some(Kind::Routine {
            verb: Verb::Alter,
            name: p.name()?,
        });
    }
    if p.eat("EVENT") {
        return Some(Kind::Event {
            verb: Verb::Alter,
            name: p.name()?,
        });
    }
    if p.peek("USER") || p.peek("ROLE") {
        return Some(Kind::Never("account management"));
    }
    if p.peek("SERVER") || p.peek("INSTANCE") || p.peek("TABLESPACE") {
        return Some(Kind::Never("server administration"));
    }
    None
}

fn is_database_option(word: &str) -> bool {
    [
        "DEFAULT",
        "CHARACTER",
        "CHARSET",
        "COLLATE",
        "COMMENT",
        "UPGRADE",
        "READ",
        "ENCRYPTION",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
}

fn classify_drop(p: &mut P<'_>) -> Option<Kind> {
    let temporary = p.eat("TEMPORARY");
    if p.eat("TABLE") || p.eat("TABLES") {
        p.if_exists();
        let tables = p.names();
        if tables.is_empty() {
            return None;
        }
        return Some(Kind::DropTables { tables, temporary });
    }
    if p.eat("PROCEDURE") || p.eat("FUNCTION") || p.eat("PACKAGE") {
        p.eat("BODY");
        p.if_exists();
        return Some(Kind::Routine {
            verb: Verb::Drop,
            name: p.name()?,
        });
    }
    if p.eat("TRIGGER") {
        p.if_exists();
        return Some(Kind::Trigger {
            verb: Verb::Drop,
            name: p.name()?,
            table: None,
        });
    }
    if p.eat("INDEX") {
        p.eat("ONLINE");
        let on = p.top_level("ON")?;
        let mut q = P { t: p.t, i: on + 1 };
        return Some(Kind::Index(q.name()?));
    }
    classify_object(p, Verb::Drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> Kind {
        Statement::parse(sql, false).expect("tokenizes").kind
    }

    fn n(db: Option<&str>, name: &str) -> (Option<String>, String) {
        (db.map(str::to_string), name.to_string())
    }

    fn names(v: &[Name]) -> Vec<(Option<String>, String)> {
        v.iter().map(|x| (x.db.clone(), x.name.clone())).collect()
    }

    #[test]
    fn tables_with_and_without_quotes_qualifiers_and_comments() {
        for sql in [
            "ALTER TABLE shop.t ADD c INT",
            "alter table `shop`.`t` add c int",
            "ALTER /* gh-ost */ TABLE shop . `t` ADD c INT",
            "ALTER ONLINE IGNORE TABLE shop.t ADD c INT",
            "/*!40000 ALTER TABLE shop.t DISABLE KEYS */",
            "# a comment\nALTER TABLE shop.t -- more\n ADD c INT",
        ] {
            match kind(sql) {
                Kind::AlterTable { table, rename_to } => {
                    assert_eq!(
                        (table.db.as_deref(), table.name.as_str()),
                        (Some("shop"), "t"),
                        "{sql}"
                    );
                    assert_eq!(rename_to, None, "{sql}");
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        match kind("ALTER TABLE t RENAME COLUMN a TO b, RENAME TO other.u") {
            Kind::AlterTable { table, rename_to } => {
                assert_eq!(table.name, "t");
                let r = rename_to.expect("renames");
                assert_eq!((r.db.as_deref(), r.name.as_str()), (Some("other"), "u"));
            }
            other => panic!("{other:?}"),
        }
        match kind("ALTER TABLE t RENAME INDEX a TO b") {
            Kind::AlterTable { rename_to, .. } => assert_eq!(rename_to, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_like_select_temporary() {
        match kind("create /* gh-ost */ table `db`.`_t_gho` like `db`.`t`") {
            Kind::CreateTable {
                table,
                like,
                select,
                temporary,
            } => {
                assert_eq!(table.name, "_t_gho");
                assert_eq!(like.map(|l| l.name), Some("t".into()));
                assert!(!select && !temporary);
            }
            other => panic!("{other:?}"),
        }
        match kind("CREATE TABLE IF NOT EXISTS c2 (LIKE a)") {
            Kind::CreateTable { like, .. } => assert_eq!(like.map(|l| l.name), Some("a".into())),
            other => panic!("{other:?}"),
        }
        match kind("CREATE TABLE c2 AS SELECT * FROM a") {
            Kind::CreateTable { select, .. } => assert!(select),
            other => panic!("{other:?}"),
        }
        match kind("CREATE TABLE c3 (id INT, v INT DEFAULT (SELECT 1))") {
            Kind::CreateTable { select, .. } => assert!(!select),
            other => panic!("{other:?}"),
        }
        match kind("CREATE OR REPLACE TEMPORARY TABLE tmp (a INT)") {
            Kind::CreateTable { temporary, .. } => assert!(temporary),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multi_table_rename_and_drop() {
        match kind("rename /* gh-ost */ table `db`.`t` to `db`.`_t_del`, `db`.`_t_gho` to `db`.`t`")
        {
            Kind::RenameTables(p) => {
                assert_eq!(p.len(), 2);
                assert_eq!(
                    (p[0].0.name.as_str(), p[0].1.name.as_str()),
                    ("t", "_t_del")
                );
                assert_eq!(
                    (p[1].0.name.as_str(), p[1].1.name.as_str()),
                    ("_t_gho", "t")
                );
            }
            other => panic!("{other:?}"),
        }
        match kind("DROP TABLE IF EXISTS a.b, c, `d`.e RESTRICT") {
            Kind::DropTables { tables, temporary } => {
                assert_eq!(
                    names(&tables),
                    vec![n(Some("a"), "b"), n(None, "c"), n(Some("d"), "e")]
                );
                assert!(!temporary);
            }
            other => panic!("{other:?}"),
        }
        match kind("DROP TABLE `t` /* generated by server */") {
            Kind::DropTables { tables, .. } => assert_eq!(names(&tables), vec![n(None, "t")]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            kind("TRUNCATE shop.t"),
            Kind::Truncate(Name {
                db: Some("shop".into()),
                name: "t".into(),
                tok: 3,
                db_tok: Some(1)
            })
        );
        assert!(matches!(kind("truncate table t"), Kind::Truncate(n) if n.name == "t"));
    }

    #[test]
    fn objects_databases_and_what_never_replicates() {
        match kind("CREATE DEFINER=`root`@`localhost` TRIGGER pt_osc_db_t_ins AFTER INSERT ON `db`.`t` FOR EACH ROW REPLACE INTO x VALUES (1)") {
            Kind::Trigger { verb, name, table } => {
                assert_eq!((verb, name.name.as_str()), (Verb::Create, "pt_osc_db_t_ins"));
                assert_eq!(table.map(|t| t.name), Some("t".into()));
            }
            other => panic!("{other:?}"),
        }
        match kind("/*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */ /*!50001 VIEW `v` AS select 1 */") {
            Kind::View { verb, names: v } => {
                assert_eq!(verb, Verb::Create);
                assert_eq!(names(&v), vec![n(None, "v")]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            kind("CREATE OR REPLACE DEFINER='a'@'%' PROCEDURE p() BEGIN END"),
            Kind::Routine {
                verb: Verb::Create,
                ..
            }
        ));
        assert!(
            matches!(kind("DROP FUNCTION IF EXISTS shop.f"), Kind::Routine { verb: Verb::Drop, name } if name.db.as_deref() == Some("shop"))
        );
        assert!(matches!(
            kind("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DO DELETE FROM t"),
            Kind::Event {
                verb: Verb::Create,
                ..
            }
        ));
        assert!(matches!(kind("CREATE INDEX i ON shop.t (a)"), Kind::Index(t) if t.name == "t"));
        assert!(matches!(kind("DROP INDEX i ON t"), Kind::Index(t) if t.name == "t"));
        assert_eq!(
            kind("CREATE DATABASE IF NOT EXISTS x"),
            Kind::Database {
                verb: Verb::Create,
                name: Some("x".into())
            }
        );
        assert_eq!(
            kind("ALTER DATABASE CHARACTER SET utf8mb4"),
            Kind::Database {
                verb: Verb::Alter,
                name: None
            }
        );
        assert_eq!(
            kind("DROP SCHEMA `x`"),
            Kind::Database {
                verb: Verb::Drop,
                name: Some("x".into())
            }
        );
        for sql in [
            "CREATE USER 'u'@'%' IDENTIFIED BY 'secret'",
            "GRANT ALL ON *.* TO u",
            "SET PASSWORD FOR u = PASSWORD('x')",
            "FLUSH PRIVILEGES",
            "ANALYZE TABLE t",
            "OPTIMIZE TABLE t",
            "RENAME USER a TO b",
            "DROP USER IF EXISTS u",
            "CREATE FUNCTION udf RETURNS STRING SONAME 'x.so'",
        ] {
            assert!(matches!(kind(sql), Kind::Never(_)), "{sql}");
        }
        for sql in [
            "INSERT INTO a VALUES (1)",
            "update a set v=1",
            "DELETE FROM a",
            "REPLACE INTO a VALUES (1)",
            "LOAD DATA INFILE 'x' INTO TABLE a",
        ] {
            assert_eq!(kind(sql), Kind::Dml, "{sql}");
        }
        assert_eq!(kind("XA START X'7831',X'',1"), Kind::Xa(XaVerb::Start));
        assert_eq!(
            kind("XA COMMIT X'7831',X'',1 ONE PHASE"),
            Kind::Xa(XaVerb::Commit { one_phase: true })
        );
        assert_eq!(
            kind("XA ROLLBACK X'7831',X'',1"),
            Kind::Xa(XaVerb::Rollback)
        );
        assert_eq!(kind("ROLLBACK TO SAVEPOINT s"), Kind::Savepoint);
        assert_eq!(kind("ROLLBACK"), Kind::Rollback);
        assert_eq!(
            kind("CREATE SEQUENCE s"),
            Kind::Other("CREATE SEQUENCE".into())
        );
    }

    #[test]
    fn edits_keep_the_rest_of_the_text_byte_for_byte() {
        let s = Statement::parse(
            "ALTER TABLE shop.t ADD c VARCHAR(9) DEFAULT 'shop.t é\\'' COMMENT \"shop.x\", ADD d INT -- shop.y\n",
            false,
        )
        .unwrap();
        let rename = |db: &str| (db == "shop").then(|| "copy".to_string());
        let out = s.edited(s.qualifier_edits(&rename));
        assert_eq!(
            out,
            "ALTER TABLE `copy`.t ADD c VARCHAR(9) DEFAULT 'shop.t é\\'' COMMENT \"shop.x\", ADD d INT -- shop.y\n"
        );
        // Three-part names: only the database is rewritten.
        let s =
            Statement::parse("CREATE VIEW v AS SELECT shop.t.a, t.b FROM shop.t", false).unwrap();
        assert_eq!(
            s.edited(s.qualifier_edits(&rename)),
            "CREATE VIEW v AS SELECT `copy`.t.a, t.b FROM `copy`.t"
        );
        // MariaDB's executable comments are code too.
        let s = Statement::parse("/*M!100100 ALTER TABLE shop.t ADD x INT */", false).unwrap();
        assert!(matches!(s.kind, Kind::AlterTable { .. }));
        assert_eq!(
            s.edited(s.qualifier_edits(&rename)),
            "/*M!100100 ALTER TABLE `copy`.t ADD x INT */"
        );
    }

    #[test]
    fn definers_are_removed() {
        for (sql, want) in [
            (
                "CREATE DEFINER=`root`@`localhost` TRIGGER t",
                "CREATE  TRIGGER t",
            ),
            (
                "CREATE DEFINER='a b'@'%' PROCEDURE p()",
                "CREATE  PROCEDURE p()",
            ),
            ("CREATE DEFINER=root@localhost VIEW v", "CREATE  VIEW v"),
            ("CREATE DEFINER = CURRENT_USER() EVENT e", "CREATE  EVENT e"),
            ("CREATE DEFINER=CURRENT_USER VIEW v", "CREATE  VIEW v"),
        ] {
            let s = Statement::parse(sql, false).unwrap();
            let e = s.definer_edit().expect(sql);
            assert_eq!(s.edited(vec![e]), want);
        }
        assert!(Statement::parse("CREATE VIEW v AS SELECT 1", false)
            .unwrap()
            .definer_edit()
            .is_none());
    }

    #[test]
    fn ansi_quotes_make_double_quotes_identifiers() {
        match Statement::parse("ALTER TABLE \"shop\".\"t\" ADD c INT", true)
            .unwrap()
            .kind
        {
            Kind::AlterTable { table, .. } => assert_eq!(table.db.as_deref(), Some("shop")),
            other => panic!("{other:?}"),
        }
    }
}
