//! Verification results as text and as the control socket's model.

use crate::model::{KeyValue, VerifyRun, VerifyTable};

/// A key as `col=value` pairs, for people.
pub fn render_key(columns: &[String], key: &[KeyValue]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .zip(key)
        .map(|(c, v)| format!("{c}={}", render_value(v)))
        .collect();
    parts.join(",")
}

pub(super) fn render_value(v: &KeyValue) -> String {
    match v {
        KeyValue::Null => "NULL".into(),
        KeyValue::Int(i) => i.to_string(),
        KeyValue::UInt(u) => u.to_string(),
        KeyValue::Float(f) => f.to_string(),
        KeyValue::Double(d) => d.to_string(),
        KeyValue::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("{:?}", crate::model::truncate(s, 40)),
            Err(_) => {
                let hex: String = b.iter().take(20).map(|b| format!("{b:02x}")).collect();
                format!("0x{hex}{}", if b.len() > 20 { "..." } else { "" })
            }
        },
        KeyValue::Date(y, mo, d, h, mi, s, us) => {
            format!("'{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}'")
        }
        KeyValue::Time(neg, d, h, mi, s, us) => format!(
            "'{}{}:{mi:02}:{s:02}.{us:06}'",
            if *neg { "-" } else { "" },
            u64::from(*d) * 24 + u64::from(*h)
        ),
    }
}

/// One line for the job's event log and the terminal.
pub fn summary(run: &VerifyRun) -> String {
    let how = format!(
        "verify ({}{})",
        run.level,
        if run.online { ", online" } else { "" }
    );
    if let Some(e) = &run.error {
        return format!("{how} did not finish: {e}");
    }
    let bad: Vec<&VerifyTable> = run.tables.iter().filter(|t| !t.ok()).collect();
    if bad.is_empty() {
        return format!("{how}: {} tables equal", run.tables.len());
    }
    let rows: u64 = bad.iter().flat_map(|t| &t.diffs).map(|d| d.copies).sum();
    let names: Vec<&str> = bad.iter().take(3).map(|t| t.table.as_str()).collect();
    format!(
        "{how}: DIFFERENCES in {} of {} tables ({}{}), {rows}{} rows named",
        bad.len(),
        run.tables.len(),
        names.join(", "),
        if bad.len() > 3 { ", ..." } else { "" },
        if bad.iter().any(|t| t.truncated) {
            "+"
        } else {
            ""
        }
    )
}

/// A stored run in the status model's shape.
pub fn to_proto(run: &VerifyRun) -> ferry_proto::Verification {
    ferry_proto::Verification {
        started_ms: run.started_ms,
        finished_ms: run.finished_ms,
        level: run.level.clone(),
        trigger: run.trigger.clone(),
        online: run.online,
        ok: run.ok(),
        error: run.error.clone(),
        note: run.note.clone(),
        tables: run
            .tables
            .iter()
            .map(|t| ferry_proto::VerifyTable {
                table: t.table.clone(),
                target: t.target.clone(),
                source_rows: t.source_rows,
                target_rows: t.target_rows,
                chunks: t.chunks,
                chunks_differing: t.chunks_differing,
                ok: t.ok(),
                truncated: t.truncated,
                duration_ms: t.duration_ms,
                diffs: t
                    .diffs
                    .iter()
                    .map(|d| ferry_proto::VerifyDiff {
                        class: d.class.as_str().into(),
                        key: render_key(&t.key_columns, &d.key),
                        columns: d.columns.clone(),
                        copies: d.copies,
                    })
                    .collect(),
            })
            .collect(),
        repair: run.repair.as_ref().map(|r| ferry_proto::Repair {
            file: r.file.clone(),
            statements: r.statements,
            applied: r.applied,
            still_differing: r.still_differing,
        }),
    }
}
