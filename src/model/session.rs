//! The source session's settings a statement ran under.

use serde::{Deserialize, Serialize};

/// What the source's session was when it ran a statement. Absent fields
/// were not logged (the server logs some only when the statement used them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionContext {
    /// The statement's time: seconds and, when logged, microseconds.
    pub timestamp: u32,
    pub micros: Option<u32>,
    pub flags2: Option<u32>,
    pub sql_mode: Option<u64>,
    /// auto_increment_increment, auto_increment_offset
    pub auto_increment: Option<(u16, u16)>,
    /// character_set_client, collation_connection, collation_server (ids)
    pub charset: Option<(u16, u16, u16)>,
    pub time_zone: Option<String>,
    pub lc_time_names: Option<u16>,
    /// MySQL's own status variable for it (MariaDB logs a flags2 bit).
    pub explicit_defaults_for_timestamp: Option<bool>,
    /// The source is MariaDB (its flags2 carry more bits).
    pub mariadb: bool,
}
