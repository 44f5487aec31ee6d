//! SQL literals that reproduce a value exactly on the target.
//!
//! Values come from the binary protocol, so integers and floats arrive as
//! numbers, DECIMAL as exact text, dates and times as parts, and strings as
//! bytes. The target session runs with Ferry's sql_mode (backslash escapes
//! on, zero dates allowed) and `time_zone = '+00:00'`.

use std::io::Write;

use mysql_async::Value;

use crate::catalog::ColumnKind;

/// Appends `v` as a literal for a column of `kind`.
pub fn push_literal(buf: &mut Vec<u8>, v: &Value, kind: ColumnKind) {
    match v {
        Value::NULL => buf.extend_from_slice(b"NULL"),
        Value::Int(i) => buf.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::UInt(u) => buf.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
        // Through f64 so the decimal text is exact for the f32 value: the
        // server parses it as a double and narrows it without a second rounding.
        Value::Float(f) => push_double(buf, f64::from(*f)),
        Value::Double(d) => push_double(buf, *d),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let _ = write!(buf, "'{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
            if *us > 0 {
                let _ = write!(buf, ".{us:06}");
            }
            buf.push(b'\'');
        }
        Value::Time(neg, days, h, mi, s, us) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            let _ = write!(buf, "'{sign}{hours:02}:{mi:02}:{s:02}");
            if *us > 0 {
                let _ = write!(buf, ".{us:06}");
            }
            buf.push(b'\'');
        }
        Value::Bytes(b) => match kind {
            ColumnKind::Decimal | ColumnKind::Plain if is_numeric_text(b) => {
                buf.extend_from_slice(b)
            }
            ColumnKind::Binary | ColumnKind::Bits => push_hex(buf, b),
            ColumnKind::Json => {
                buf.extend_from_slice(b"_utf8mb4");
                push_quoted(buf, b);
            }
            _ => push_quoted(buf, b),
        },
    }
}

fn push_double(buf: &mut Vec<u8>, d: f64) {
    // `{:e}` prints the shortest text that parses back to the same double.
    let _ = write!(buf, "{d:e}");
}

fn is_numeric_text(b: &[u8]) -> bool {
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
}

/// Appends `v` for a multi-row INSERT of the full load: as
/// [`push_literal`], but binary strings and BLOBs as `_binary'...'`, about
/// as long as the value (a hex literal doubles it against the target's
/// max_allowed_packet). The statement is sent as bytes over a utf8mb4
/// session, which never takes a quote or a backslash for part of a
/// multi-byte character.
pub fn push_insert_value(buf: &mut Vec<u8>, v: &Value, kind: ColumnKind) {
    match (v, kind) {
        (Value::Bytes(b), ColumnKind::Binary) => {
            buf.extend_from_slice(b"_binary");
            push_quoted(buf, b);
        }
        _ => push_literal(buf, v, kind),
    }
}

/// Whether a value is an ENUM's error value (`''`, index 0), which only a
/// non-strict session writes.
pub fn is_enum_error_value(v: &Value, kind: ColumnKind) -> bool {
    kind == ColumnKind::Enum && matches!(v, Value::Bytes(b) if b.is_empty())
}

/// FNV-1a: a small hash that stays the same across builds and runs (what
/// is derived from it may be persisted).
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// `X'..'` (an empty value is `''`, which a hex literal cannot express).
pub fn push_hex(buf: &mut Vec<u8>, b: &[u8]) {
    if b.is_empty() {
        buf.extend_from_slice(b"''");
        return;
    }
    buf.extend_from_slice(b"X'");
    push_hex_digits(buf, b);
    buf.push(b'\'');
}

/// A single-quoted string with MySQL's backslash escapes.
pub fn push_quoted(buf: &mut Vec<u8>, b: &[u8]) {
    buf.push(b'\'');
    push_escaped(buf, b, |c| match c {
        0 => Some(b"\\0"),
        b'\'' => Some(b"\\'"),
        b'\\' => Some(b"\\\\"),
        b'\n' => Some(b"\\n"),
        b'\r' => Some(b"\\r"),
        0x1a => Some(b"\\Z"),
        _ => None,
    });
    buf.push(b'\'');
}

/// Appends `b`, replacing each byte `escape` maps by its escape sequence.
fn push_escaped(buf: &mut Vec<u8>, b: &[u8], escape: impl Fn(u8) -> Option<&'static [u8; 2]>) {
    buf.reserve(b.len() + 2);
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if let Some(esc) = escape(c) {
            buf.extend_from_slice(b.get(start..i).unwrap_or_default());
            buf.extend_from_slice(esc);
            start = i + 1;
        }
    }
    buf.extend_from_slice(b.get(start..).unwrap_or_default());
}

/// Appends `b` as uppercase hex digits.
fn push_hex_digits(buf: &mut Vec<u8>, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    buf.reserve(b.len() * 2);
    for &c in b {
        // Both halves are below 16.
        #[allow(clippy::indexing_slicing)]
        buf.extend_from_slice(&[HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
    }
}

/// Appends `v` as a field of LOAD DATA input (tab-separated, backslash
/// escapes, `\N` for NULL, file character set utf8mb4). Binary columns are
/// hex text, decoded by `UNHEX` in the statement.
pub fn push_tsv_field(buf: &mut Vec<u8>, v: &Value, kind: ColumnKind) {
    match v {
        Value::NULL => buf.extend_from_slice(b"\\N"),
        Value::Int(0) | Value::UInt(0) if kind == ColumnKind::Year => {
            buf.extend_from_slice(b"0000")
        }
        Value::Bytes(b) => match kind {
            ColumnKind::Binary | ColumnKind::Bits => push_hex_digits(buf, b),
            _ => push_escaped(buf, b, |c| match c {
                0 => Some(b"\\0"),
                b'\t' => Some(b"\\t"),
                b'\n' => Some(b"\\n"),
                b'\\' => Some(b"\\\\"),
                _ => None,
            }),
        },
        // Numbers, dates and times: the literal without its quotes.
        other => {
            let at = buf.len();
            push_literal(buf, other, kind);
            if buf.get(at) == Some(&b'\'') {
                buf.remove(at);
                buf.pop();
            }
        }
    }
}

/// The bytes a literal for `v` takes, without building it (for batching).
pub fn literal_len(v: &Value) -> usize {
    match v {
        Value::Bytes(b) => b.len() * 2 + 12,
        _ => 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(v: Value, kind: ColumnKind) -> String {
        let mut b = Vec::new();
        push_literal(&mut b, &v, kind);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn literals() {
        assert_eq!(lit(Value::NULL, ColumnKind::Text), "NULL");
        assert_eq!(
            lit(Value::Int(i64::MIN), ColumnKind::Plain),
            "-9223372036854775808"
        );
        assert_eq!(
            lit(Value::UInt(u64::MAX), ColumnKind::Plain),
            "18446744073709551615"
        );
        assert_eq!(
            lit(Value::Bytes(b"-12.500".to_vec()), ColumnKind::Decimal),
            "-12.500"
        );
        assert_eq!(
            lit(Value::Bytes(b"a'b\\c\0\n".to_vec()), ColumnKind::Text),
            r"'a\'b\\c\0\n'"
        );
        assert_eq!(
            lit(Value::Bytes(vec![0, 255]), ColumnKind::Binary),
            "X'00FF'"
        );
        assert_eq!(lit(Value::Bytes(vec![]), ColumnKind::Binary), "''");
        assert_eq!(
            lit(Value::Date(0, 0, 0, 0, 0, 0, 0), ColumnKind::Plain),
            "'0000-00-00 00:00:00'"
        );
        assert_eq!(
            lit(Value::Date(2024, 2, 29, 23, 59, 59, 5), ColumnKind::Plain),
            "'2024-02-29 23:59:59.000005'"
        );
        assert_eq!(
            lit(Value::Time(true, 34, 22, 59, 59, 0), ColumnKind::Plain),
            "'-838:59:59'"
        );
        assert_eq!(
            lit(Value::Bytes(b"{\"a\":1}".to_vec()), ColumnKind::Json),
            "_utf8mb4'{\"a\":1}'"
        );
    }

    #[test]
    fn tsv_fields() {
        let tsv = |v: Value, kind| {
            let mut b = Vec::new();
            push_tsv_field(&mut b, &v, kind);
            b
        };
        assert_eq!(tsv(Value::NULL, ColumnKind::Text), b"\\N");
        assert_eq!(
            tsv(Value::Bytes(b"a\tb\nc\\\0".to_vec()), ColumnKind::Text),
            b"a\\tb\\nc\\\\\\0"
        );
        assert_eq!(tsv(Value::Bytes(b"N".to_vec()), ColumnKind::Text), b"N");
        assert_eq!(
            tsv(Value::Bytes(vec![0, 0xAB]), ColumnKind::Binary),
            b"00AB"
        );
        assert_eq!(tsv(Value::Bytes(vec![]), ColumnKind::Binary), b"");
        assert_eq!(tsv(Value::Int(-5), ColumnKind::Plain), b"-5");
        assert_eq!(tsv(Value::Int(0), ColumnKind::Year), b"0000");
        assert_eq!(tsv(Value::Int(2024), ColumnKind::Year), b"2024");
        assert_eq!(
            tsv(Value::Date(2024, 1, 2, 3, 4, 5, 6), ColumnKind::Plain),
            b"2024-01-02 03:04:05.000006"
        );
        assert_eq!(
            tsv(Value::Time(true, 1, 2, 3, 4, 0), ColumnKind::Plain),
            b"-26:03:04"
        );
    }

    #[test]
    fn floats_print_exactly() {
        for f in [f32::MAX, f32::MIN_POSITIVE, 0.1f32, -3.25f32] {
            let s = lit(Value::Float(f), ColumnKind::Plain);
            assert_eq!(s.parse::<f64>().unwrap() as f32, f, "{s}");
        }
        for d in [f64::MAX, f64::MIN_POSITIVE, 0.1, 1e-300] {
            let s = lit(Value::Double(d), ColumnKind::Plain);
            assert_eq!(s.parse::<f64>().unwrap(), d, "{s}");
        }
    }
}
