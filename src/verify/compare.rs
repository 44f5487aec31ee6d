//! Comparing what both sides returned: range digests, and rows matched
//! by key (or as multisets, for keyless tables).

use std::collections::HashMap;

use mysql_async::Value;

use crate::model::{DiffClass, VerifyDiff};

use super::table_sql::TableSql;

/// A range reduced to a count and digests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Sum {
    pub(super) rows: u64,
    pub(super) xor: u64,
    /// The SUM of the row hashes (keyless tables only), as decimal text.
    pub(super) sum: String,
}

pub(super) fn first_u64(rows: &[Vec<Value>]) -> u64 {
    rows.first()
        .and_then(|r| r.first())
        .and_then(|v| mysql_async::from_value_opt::<u64>(v.clone()).ok())
        .unwrap_or(0)
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        other => format!("{other:?}"),
    }
}

pub(super) fn sum_of(rows: &[Vec<Value>]) -> Sum {
    let Some(r) = rows.first() else {
        return Sum::default();
    };
    let num = |i: usize| {
        r.get(i)
            .and_then(|v| mysql_async::from_value_opt::<u64>(v.clone()).ok())
            .unwrap_or(0)
    };
    Sum {
        rows: num(0),
        xor: num(1),
        sum: r.get(2).map(text).unwrap_or_default(),
    }
}

/// Rows of a keyed table from both sides, matched by key.
pub(crate) fn diff_rows(
    ts: &TableSql<'_>,
    source: Vec<Vec<Value>>,
    target: Vec<Vec<Value>>,
) -> Vec<VerifyDiff> {
    let mut on_target: HashMap<Vec<u8>, Vec<Value>> =
        target.into_iter().map(|r| (ts.key_bytes(&r), r)).collect();
    let mut out = Vec::new();
    for s in source {
        let diff = |class, columns| VerifyDiff {
            class,
            key: ts.key_of(&s),
            columns,
            copies: 1,
        };
        match on_target.remove(&ts.key_bytes(&s)) {
            None => out.push(diff(DiffClass::Missing, Vec::new())),
            Some(t) if t != s => {
                let columns = ts
                    .cols
                    .iter()
                    .zip(s.iter().zip(&t))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(c, _)| c.name.clone())
                    .collect();
                out.push(diff(DiffClass::Different, columns));
            }
            Some(_) => {}
        }
    }
    let mut extra: Vec<(Vec<u8>, Vec<Value>)> = on_target.into_iter().collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(extra.into_iter().map(|(_, t)| VerifyDiff {
        class: DiffClass::Extra,
        key: ts.key_of(&t),
        columns: Vec::new(),
        copies: 1,
    }));
    out
}

/// Rows of a keyless table from both sides, compared as multisets.
pub(super) fn diff_multiset(
    ts: &TableSql<'_>,
    source: Vec<Vec<Value>>,
    target: Vec<Vec<Value>>,
) -> Vec<VerifyDiff> {
    let mut counts: HashMap<Vec<u8>, (i64, Vec<Value>)> = HashMap::new();
    for (rows, d) in [(source, 1), (target, -1)] {
        for r in rows {
            counts.entry(ts.key_bytes(&r)).or_insert((0, r)).0 += d;
        }
    }
    let mut out: Vec<(Vec<u8>, VerifyDiff)> = counts
        .into_iter()
        .filter(|(_, (n, _))| *n != 0)
        .map(|(k, (n, r))| {
            let d = VerifyDiff {
                class: if n > 0 {
                    DiffClass::Missing
                } else {
                    DiffClass::Extra
                },
                key: ts.key_of(&r),
                columns: Vec::new(),
                copies: n.unsigned_abs(),
            };
            (k, d)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, d)| d).collect()
}
