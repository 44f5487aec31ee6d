//! The session a statement ran in on the source, as its Query event
//! records it (the status variables), and the statements that recreate it
//! on the target, so defaults, conversions and truncation behave there as
//! they did on the source.

use std::collections::HashMap;

use crate::model::SessionContext;

/// Flags2 bits (`thd->options` as the server logs them).
const AUTO_IS_NULL: u32 = 0x0000_4000;
/// MariaDB only.
const NO_CHECK_CONSTRAINT_CHECKS: u32 = 0x0000_8000;
/// MariaDB only (MySQL logs it as its own status variable).
const EXPLICIT_DEFAULTS_FOR_TIMESTAMP: u32 = 0x0100_0000;
const NO_FOREIGN_KEY_CHECKS: u32 = 0x0400_0000;
const RELAXED_UNIQUE_CHECKS: u32 = 0x0800_0000;

/// sql_mode bits that change how a statement is tokenized.
const MODE_ANSI_QUOTES: u64 = 0x4;
const MODE_NO_BACKSLASH_ESCAPES: u64 = 0x10_0000;

impl SessionContext {
    /// Reads the status variables of a Query event. An unknown variable
    /// ends the parse (its length is unknown); what was read is kept.
    pub fn parse(vars: &[u8], timestamp: u32, mariadb: bool) -> SessionContext {
        let mut c = SessionContext {
            timestamp,
            mariadb,
            ..Default::default()
        };
        let mut r = Reader { b: vars, at: 0 };
        while let Some(code) = r.u8() {
            let ok = match code {
                0 => r.u32().map(|v| c.flags2 = Some(v)),
                1 => r.u64().map(|v| c.sql_mode = Some(v)),
                // Catalog: length, bytes, NUL.
                2 => r.u8().and_then(|n| r.skip(usize::from(n) + 1)),
                3 => r
                    .u16()
                    .zip(r.u16())
                    .map(|(i, o)| c.auto_increment = Some((i, o))),
                4 => match (r.u16(), r.u16(), r.u16()) {
                    (Some(a), Some(b), Some(s)) => {
                        c.charset = Some((a, b, s));
                        Some(())
                    }
                    _ => None,
                },
                5 => r
                    .u8()
                    .and_then(|n| r.bytes(usize::from(n)))
                    .map(|tz| c.time_zone = Some(String::from_utf8_lossy(tz).into_owned())),
                6 => r.u8().and_then(|n| r.skip(usize::from(n))),
                7 => r.u16().map(|v| c.lc_time_names = Some(v)),
                8 => r.skip(2),
                9 => r.skip(8),
                10 => r.skip(4),
                // Invoker: user and host, each with a length byte.
                11 => r
                    .u8()
                    .and_then(|n| r.skip(usize::from(n)))
                    .and_then(|_| r.u8())
                    .and_then(|n| r.skip(usize::from(n))),
                // Updated databases: a count (254: too many, none listed),
                // then NUL-terminated names.
                12 => r.u8().and_then(|n| {
                    if n == 254 {
                        return Some(());
                    }
                    for _ in 0..n {
                        r.until_nul()?;
                    }
                    Some(())
                }),
                // MySQL's microseconds and MariaDB's Q_HRNOW: 3 bytes.
                13 | 128 => r.u24().map(|v| c.micros = Some(v)),
                14 | 15 => Some(()),
                16 => r
                    .u8()
                    .map(|v| c.explicit_defaults_for_timestamp = Some(v != 0)),
                17 => r.skip(8),
                18 => r.skip(2),
                19 | 20 => r.skip(1),
                // MariaDB's Q_XID.
                129 => r.skip(8),
                _ => None,
            };
            if ok.is_none() {
                break;
            }
        }
        c
    }

    fn sql_mode_has(&self, bit: u64) -> bool {
        self.sql_mode.is_some_and(|m| m & bit != 0)
    }

    /// `"` quotes identifiers (sql_mode ANSI_QUOTES).
    pub fn ansi_quotes(&self) -> bool {
        self.sql_mode_has(MODE_ANSI_QUOTES)
    }

    /// Backslashes are not escapes in strings (NO_BACKSLASH_ESCAPES).
    pub fn no_backslash_escapes(&self) -> bool {
        self.sql_mode_has(MODE_NO_BACKSLASH_ESCAPES)
    }

    /// The session's foreign_key_checks.
    pub fn foreign_key_checks(&self) -> bool {
        self.flags2.is_none_or(|f| f & NO_FOREIGN_KEY_CHECKS == 0)
    }

    /// `SET` statements that give a target session this context. The
    /// statement itself is sent as UTF-8 (it was decoded from its own
    /// charset), so the client charset is utf8mb4; the connection and
    /// server collations are the source's. `time_zone` stands in when the
    /// event did not log one (the source's global zone).
    pub fn set_statements(&self, time_zone: &str) -> Vec<String> {
        let mut sets = Vec::new();
        match self.micros {
            Some(us) => sets.push(format!("TIMESTAMP = {}.{us:06}", self.timestamp)),
            None => sets.push(format!("TIMESTAMP = {}", self.timestamp)),
        }
        if let Some(m) = self.sql_mode {
            sets.push(format!("@@session.sql_mode = {m}"));
        }
        let tz = self.time_zone.as_deref().unwrap_or(time_zone);
        let mut tz_lit = Vec::new();
        crate::sql::push_quoted(&mut tz_lit, tz.as_bytes());
        sets.push(format!(
            "@@session.time_zone = {}",
            String::from_utf8_lossy(&tz_lit)
        ));
        sets.push("@@session.character_set_client = utf8mb4".into());
        if let Some((_, connection, server)) = self.charset {
            sets.push(format!("@@session.collation_connection = {connection}"));
            sets.push(format!("@@session.collation_server = {server}"));
        } else {
            sets.push("@@session.collation_connection = utf8mb4_general_ci".into());
        }
        if let Some(f) = self.flags2 {
            let on = |bit: u32| u8::from(f & bit != 0);
            sets.push(format!(
                "@@session.foreign_key_checks = {}",
                1 - on(NO_FOREIGN_KEY_CHECKS)
            ));
            sets.push(format!(
                "@@session.unique_checks = {}",
                1 - on(RELAXED_UNIQUE_CHECKS)
            ));
            sets.push(format!("@@session.sql_auto_is_null = {}", on(AUTO_IS_NULL)));
            if self.mariadb {
                sets.push(format!(
                    "@@session.check_constraint_checks = {}",
                    1 - on(NO_CHECK_CONSTRAINT_CHECKS)
                ));
                sets.push(format!(
                    "@@session.explicit_defaults_for_timestamp = {}",
                    on(EXPLICIT_DEFAULTS_FOR_TIMESTAMP)
                ));
            }
        }
        if let Some(e) = self.explicit_defaults_for_timestamp {
            sets.push(format!(
                "@@session.explicit_defaults_for_timestamp = {}",
                u8::from(e)
            ));
        }
        if let Some((inc, off)) = self.auto_increment {
            sets.push(format!("@@session.auto_increment_increment = {inc}"));
            sets.push(format!("@@session.auto_increment_offset = {off}"));
        }
        if let Some(l) = self.lc_time_names {
            sets.push(format!("@@session.lc_time_names = {l}"));
        }
        vec![format!("SET {}", sets.join(", "))]
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.bytes(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        self.bytes(2)?.try_into().ok().map(u16::from_le_bytes)
    }
    fn u24(&mut self) -> Option<u32> {
        let [a, b, c]: [u8; 3] = self.bytes(3)?.try_into().ok()?;
        Some(u32::from_le_bytes([a, b, c, 0]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn until_nul(&mut self) -> Option<()> {
        let rest = self.b.get(self.at..)?;
        let n = rest.iter().position(|&c| c == 0)?;
        self.at += n + 1;
        Some(())
    }
}

/// Collation id → character set name, as the source server reports them
/// (`information_schema.COLLATIONS`).
#[derive(Debug, Clone, Default)]
pub struct Charsets(pub HashMap<u16, String>);

impl Charsets {
    /// Decodes statement text written in the charset of collation `id`.
    /// UTF-8 text is taken as it is; text in another charset is converted;
    /// bytes that are not valid in their charset are an error, never
    /// replaced silently.
    pub fn decode(&self, id: Option<u16>, bytes: &[u8]) -> Result<String, String> {
        let name = match id {
            Some(id) => self
                .0
                .get(&id)
                .map(String::as_str)
                .or_else(|| well_known(id)),
            None => Some("utf8mb4"),
        };
        let Some(name) = name else {
            return Err(format!("unknown character set of collation id {id:?}"));
        };
        let encoding = encoding_of(name).ok_or_else(|| {
            format!("statements in character set {name} are not supported (use utf8mb4 or latin1)")
        })?;
        let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
        if had_errors {
            return Err(format!("the statement is not valid {name} text"));
        }
        Ok(text.into_owned())
    }
}

/// Collation ids that are the same on every server (for sources whose
/// COLLATIONS table could not be read).
fn well_known(id: u16) -> Option<&'static str> {
    Some(match id {
        8 | 47 | 48 | 49 | 5 | 15 | 31 | 94 => "latin1",
        33 | 83 | 192..=215 => "utf8mb3",
        45 | 46 | 224..=247 | 255 => "utf8mb4",
        63 => "binary",
        11 | 65 => "ascii",
        _ => return None,
    })
}

/// MySQL charset name → the encoding it means. MySQL's latin1 is
/// Windows-1252.
fn encoding_of(name: &str) -> Option<&'static encoding_rs::Encoding> {
    use encoding_rs::*;
    Some(match name {
        "utf8" | "utf8mb3" | "utf8mb4" | "ascii" | "binary" => UTF_8,
        "latin1" => WINDOWS_1252,
        "latin2" => ISO_8859_2,
        "greek" => ISO_8859_7,
        "hebrew" => ISO_8859_8,
        "latin5" => WINDOWS_1254,
        "latin7" => ISO_8859_13,
        "cp1250" => WINDOWS_1250,
        "cp1251" => WINDOWS_1251,
        "cp1256" => WINDOWS_1256,
        "cp1257" => WINDOWS_1257,
        "koi8r" => KOI8_R,
        "koi8u" => KOI8_U,
        "tis620" => WINDOWS_874,
        "sjis" | "cp932" => SHIFT_JIS,
        "ujis" | "eucjpms" => EUC_JP,
        "euckr" => EUC_KR,
        "gbk" | "gb2312" => GBK,
        "gb18030" => GB18030,
        "big5" => BIG5,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_variables_of_a_mariadb_query_event() {
        // flags2 (fk checks off, explicit defaults on), sql_mode, catalog,
        // charset, time zone, lc_time_names, HRNOW, then an XID.
        let mut v = vec![0u8];
        v.extend_from_slice(&(0x0500_0000u32).to_le_bytes());
        v.push(1);
        v.extend_from_slice(&1_411_383_296u64.to_le_bytes());
        v.extend_from_slice(&[6, 3, b's', b't', b'd']);
        v.push(4);
        for id in [33u16, 8, 224] {
            v.extend_from_slice(&id.to_le_bytes());
        }
        v.extend_from_slice(&[5, 6]);
        v.extend_from_slice(b"+02:00");
        v.extend_from_slice(&[7, 0, 0]);
        v.push(128);
        v.extend_from_slice(&121_182u32.to_le_bytes()[..3]);
        v.push(129);
        v.extend_from_slice(&[0; 8]);
        let c = SessionContext::parse(&v, 1_796_161_372, true);
        assert_eq!(c.flags2, Some(0x0500_0000));
        assert_eq!(c.sql_mode, Some(1_411_383_296));
        assert_eq!(c.charset, Some((33, 8, 224)));
        assert_eq!(c.time_zone.as_deref(), Some("+02:00"));
        assert_eq!(c.micros, Some(121_182));
        assert!(!c.foreign_key_checks());
        let set = c.set_statements("SYSTEM").join(";");
        for want in [
            "TIMESTAMP = 1796161372.121182",
            "sql_mode = 1411383296",
            "time_zone = '+02:00'",
            "collation_connection = 8",
            "collation_server = 224",
            "foreign_key_checks = 0",
            "unique_checks = 1",
            "explicit_defaults_for_timestamp = 1",
        ] {
            assert!(set.contains(want), "{want} in {set}");
        }
    }

    #[test]
    fn a_truncated_or_unknown_variable_ends_the_parse_without_panicking() {
        let c = SessionContext::parse(&[1, 0, 0], 5, true);
        assert_eq!(c.sql_mode, None);
        let c = SessionContext::parse(&[3, 1, 0, 1, 0, 99, 1, 2], 5, true);
        assert_eq!(c.auto_increment, Some((1, 1)));
        let set = c.set_statements("+00:00").join(";");
        assert!(set.contains("time_zone = '+00:00'"), "{set}");
    }

    #[test]
    fn statements_are_decoded_in_their_own_charset() {
        let cs = Charsets::default();
        assert_eq!(cs.decode(Some(8), b"caf\xe9").unwrap(), "café");
        assert_eq!(cs.decode(Some(45), "café".as_bytes()).unwrap(), "café");
        assert!(cs.decode(Some(45), b"caf\xe9").is_err());
        assert!(cs.decode(Some(9999), b"x").is_err());
    }
}
