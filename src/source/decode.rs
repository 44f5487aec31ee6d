//! Row values as the binlog holds them, made into values the target takes.
//!
//! Columns are described by the TABLE_MAP event of the same transaction
//! (with `binlog_row_metadata=FULL`: names, signedness, charsets, primary
//! key), never by today's schema, so rows written before and after an
//! ALTER TABLE both decode right.

use std::sync::Arc;

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::Value;

/// One column of a row image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub ty: ColumnType,
    pub unsigned: bool,
    pub primary: bool,
    /// Collation id of a character column (63 = binary).
    pub collation: u16,
    /// A SET column read by a SELECT (its value is the text "a,b").
    pub set_flag: bool,
}

impl ColumnInfo {
    pub fn from_column(c: &mysql_async::Column) -> Self {
        ColumnInfo {
            name: c.name_str().into_owned(),
            ty: c.column_type(),
            unsigned: c.flags().contains(ColumnFlags::UNSIGNED_FLAG),
            primary: c.flags().contains(ColumnFlags::PRI_KEY_FLAG),
            collation: c.character_set(),
            set_flag: c.flags().contains(ColumnFlags::SET_FLAG),
        }
    }

    /// Bytes of this column are characters in a charset (not binary).
    pub fn is_text(&self) -> bool {
        self.ty.is_character_type() && self.collation != 63
    }

    /// Bytes of this column are raw bytes (binary strings, BLOB, BIT, spatial).
    pub fn is_bytes(&self) -> bool {
        (self.ty.is_character_type() && self.collation == 63)
            || matches!(
                self.ty,
                ColumnType::MYSQL_TYPE_BIT | ColumnType::MYSQL_TYPE_GEOMETRY
            )
    }
}

/// One row image: the columns the TABLE_MAP described, and their values.
#[derive(Debug, Clone)]
pub struct Image {
    pub columns: Arc<[ColumnInfo]>,
    pub values: Vec<Value>,
}

impl Image {
    pub fn from_row(columns: &Arc<[ColumnInfo]>, row: BinlogRow) -> Result<Image, DecodeError> {
        let mut values = Vec::with_capacity(columns.len());
        for (col, v) in columns.iter().zip(row.unwrap()) {
            values.push(value(col, v)?);
        }
        Ok(Image {
            columns: columns.clone(),
            values,
        })
    }

    /// The table has a primary key (the TABLE_MAP's FULL metadata says).
    pub fn keyed(&self) -> bool {
        self.columns.iter().any(|c| c.primary)
    }
}

/// The row images of a rows event: (before, after) per row.
pub type Images = Vec<(Option<Image>, Option<Image>)>;

/// Decodes every row of a rows event with its TABLE_MAP.
pub fn rows(rows: &RowsEventData<'_>, tme: &TableMapEvent<'_>) -> Result<Images, DecodeError> {
    // Every before image of an event has the same columns, and every after
    // image.
    let (mut before_columns, mut after_columns) = (None, None);
    let image = |side: &mut Option<Arc<[ColumnInfo]>>, row: BinlogRow| {
        let cols = side.get_or_insert_with(|| {
            row.columns_ref()
                .iter()
                .map(ColumnInfo::from_column)
                .collect()
        });
        Image::from_row(cols, row)
    };
    let mut images = Vec::new();
    for row in rows.rows(tme) {
        let (before, after) = row.map_err(|e| DecodeError {
            column: String::new(),
            message: format!("undecodable row: {e}"),
        })?;
        images.push((
            before.map(|r| image(&mut before_columns, r)).transpose()?,
            after.map(|r| image(&mut after_columns, r)).transpose()?,
        ));
    }
    Ok(images)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode column {column}: {message}")]
pub struct DecodeError {
    pub column: String,
    pub message: String,
}

/// Turns a binlog value into a value for the target.
pub fn value(col: &ColumnInfo, v: BinlogValue<'_>) -> Result<Value, DecodeError> {
    let v = match v {
        BinlogValue::Value(v) => v,
        // MySQL's binary JSON, as JSON text (the target parses it again).
        BinlogValue::Jsonb(j) => {
            let dom = j.parse().map_err(|e| DecodeError {
                column: col.name.clone(),
                message: format!("undecodable binary JSON: {e}"),
            })?;
            let text = serde_json::Value::from(dom).to_string();
            return Ok(Value::Bytes(text.into_bytes()));
        }
        BinlogValue::JsonDiff(_) => {
            return Err(DecodeError {
                column: col.name.clone(),
                message: "a partial JSON update (MySQL binlog_row_value_options = PARTIAL_JSON) \
                          cannot be applied from the binlog; set binlog_row_value_options = '' \
                          on the source"
                    .into(),
            })
        }
    };
    Ok(match (col.ty, v) {
        // mysql_common does not sign-extend a signed MEDIUMINT.
        (ColumnType::MYSQL_TYPE_INT24, Value::Int(i)) if !col.unsigned && i >= 0x80_0000 => {
            Value::Int(i - 0x100_0000)
        }
        (ColumnType::MYSQL_TYPE_INT24, Value::UInt(u)) if !col.unsigned && u >= 0x80_0000 => {
            Value::Int(u as i64 - 0x100_0000)
        }
        // TIMESTAMP arrives as UTC epoch text, "secs[.micros]".
        (ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2, Value::Bytes(b)) => {
            epoch_to_date(&b).ok_or_else(|| DecodeError {
                column: col.name.clone(),
                message: format!("bad TIMESTAMP text {:?}", String::from_utf8_lossy(&b)),
            })?
        }
        // SET is its little-endian bitmask; the target takes the number.
        (ColumnType::MYSQL_TYPE_SET, Value::Bytes(b)) => Value::UInt(
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        ),
        (_, v) => v,
    })
}

/// `"1704067201.5"` → 2024-01-01 00:00:01.500000 UTC; `"0"` → the zero date.
fn epoch_to_date(text: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(text).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let micros: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").get(..6)?.parse().ok()?
    };
    if secs == 0 && micros == 0 {
        return Some(Value::Date(0, 0, 0, 0, 0, 0, 0));
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    Some(Value::Date(
        y as u16,
        m as u8,
        d as u8,
        (rem / 3600) as u8,
        (rem % 3600 / 60) as u8,
        (rem % 60) as u8,
        micros,
    ))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::binlog::jsonb;

    #[test]
    fn mysql_binary_json_becomes_json_text() {
        let col = ColumnInfo {
            name: "doc".into(),
            ty: ColumnType::MYSQL_TYPE_JSON,
            unsigned: false,
            primary: false,
            collation: 63,
            set_flag: false,
        };
        let text = |v: jsonb::Value<'static>| match value(&col, BinlogValue::Jsonb(v)) {
            Ok(Value::Bytes(b)) => String::from_utf8(b).expect("utf8"),
            other => panic!("{other:?}"),
        };
        assert_eq!(text(jsonb::Value::Bool(true)), "true");
        assert_eq!(text(jsonb::Value::I64(-42)), "-42");
        assert_eq!(text(jsonb::Value::Null), "null");
        assert_eq!(
            text(jsonb::Value::String(jsonb::JsonbString::new(
                "a \"q\" é".as_bytes().to_vec()
            ))),
            r#""a \"q\" é""#
        );
        assert!(value(&col, BinlogValue::JsonDiff(Vec::new())).is_err());
    }

    #[test]
    fn epochs() {
        assert_eq!(epoch_to_date(b"0"), Some(Value::Date(0, 0, 0, 0, 0, 0, 0)));
        assert_eq!(
            epoch_to_date(b"1704067201.5"),
            Some(Value::Date(2024, 1, 1, 0, 0, 1, 500_000))
        );
        assert_eq!(
            epoch_to_date(b"2147483647.999999"),
            Some(Value::Date(2038, 1, 19, 3, 14, 7, 999_999))
        );
        assert_eq!(
            epoch_to_date(b"951782400"),
            Some(Value::Date(2000, 2, 29, 0, 0, 0, 0))
        );
        assert_eq!(epoch_to_date(b"x"), None);
    }

    #[test]
    fn set_bitmask_becomes_a_number() {
        let col = ColumnInfo {
            name: "s".into(),
            ty: ColumnType::MYSQL_TYPE_SET,
            unsigned: false,
            primary: false,
            collation: 33,
            set_flag: false,
        };
        let v = value(&col, BinlogValue::Value(Value::Bytes(vec![0x05, 0x01]))).unwrap();
        assert_eq!(v, Value::UInt(0x0105));
    }

    #[test]
    fn signed_mediumint_is_sign_extended() {
        let col = ColumnInfo {
            name: "m".into(),
            ty: ColumnType::MYSQL_TYPE_INT24,
            unsigned: false,
            primary: false,
            collation: 0,
            set_flag: false,
        };
        let v = value(&col, BinlogValue::Value(Value::Int(16_777_211))).unwrap();
        assert_eq!(v, Value::Int(-5));
        let unsigned = ColumnInfo {
            unsigned: true,
            ..col
        };
        let v = value(&unsigned, BinlogValue::Value(Value::Int(16_777_211))).unwrap();
        assert_eq!(v, Value::Int(16_777_211));
    }
}
