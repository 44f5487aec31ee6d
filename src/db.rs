//! Connections to the source and target servers.
//!
//! Every session Ferry opens is pinned to `time_zone = '+00:00'`, utf8mb4,
//! and an sql_mode that accepts zero dates and explicit zeros in
//! AUTO_INCREMENT columns, so values round-trip exactly.

use std::sync::{Arc, OnceLock};

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};

use crate::job::{Endpoint, PasswordSource, Tls};

/// How long opening a session may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Which end a connection talks to; it decides the session settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Target,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Target => "target",
        }
    }
}

/// The sql_mode of every Ferry session: strict (no silent truncation), but
/// zero dates, zero parts in dates and the invalid dates a source with
/// ALLOW_INVALID_DATES stores allowed, and 0 kept in AUTO_INCREMENT columns.
pub const SESSION_SQL_MODE: &str =
    "STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,ALLOW_INVALID_DATES";

/// The same without strictness, for the statements that write values only
/// a non-strict server stores (an ENUM's error value): native replication
/// applies such rows unchanged, and so must Ferry.
pub const RELAXED_SQL_MODE: &str =
    "NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,ALLOW_INVALID_DATES";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{role}: password variable ${var} is not set")]
    PasswordEnvMissing { role: &'static str, var: String },
    #[error("{role}: cannot read password file {path}: {source}")]
    PasswordFile {
        role: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{role} {endpoint}: {source}")]
    Connect {
        role: &'static str,
        endpoint: String,
        source: mysql_async::Error,
    },
    #[error("{role}: {context}: {source}")]
    Query {
        role: &'static str,
        context: String,
        source: mysql_async::Error,
    },
    /// The server answered, but not with what Ferry needs: what it was,
    /// and what to do.
    #[error("{role}: {what}")]
    Unexpected { role: &'static str, what: String },
    /// A session was lost in the middle of work (the job retries).
    #[error("{role}: {context}: the connection was lost")]
    Lost { role: &'static str, context: String },
}

impl DbError {
    /// Whether trying again later could succeed (a dropped connection, a
    /// server restarting), as opposed to bad credentials or SQL.
    pub fn is_retryable(&self) -> bool {
        let e = match self {
            DbError::Connect { source, .. } | DbError::Query { source, .. } => source,
            DbError::Lost { .. } => return true,
            _ => return false,
        };
        match e {
            mysql_async::Error::Io(_) => true,
            mysql_async::Error::Driver(d) => matches!(
                d,
                mysql_async::DriverError::ConnectionClosed
                    | mysql_async::DriverError::PoolDisconnected
            ),
            mysql_async::Error::Server(s) => matches!(
                s.code,
                1040 /* too many connections */ | 1053 /* shutdown */ | 1205 /* lock wait */
                    | 1213 /* deadlock */ | 2006 | 2013
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Reads the password from where the job file says. The value is never
/// logged or stored.
pub(crate) fn password(ep: &Endpoint, role: Role) -> Result<Option<String>> {
    match &ep.password {
        PasswordSource::None => Ok(None),
        PasswordSource::Env(var) => match std::env::var(var) {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(DbError::PasswordEnvMissing {
                role: role.as_str(),
                var: var.clone(),
            }),
        },
        PasswordSource::File(path) => std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|source| DbError::PasswordFile {
                role: role.as_str(),
                path: path.display().to_string(),
                source,
            }),
    }
}

/// Opens connections to one server. Cheap to clone; remembers whether a
/// `tls = "prefer"` server spoke TLS so later connections skip the probe.
#[derive(Clone)]
pub struct Connector {
    role: Role,
    endpoint: Arc<Endpoint>,
    tls_works: Arc<OnceLock<bool>>,
    /// Extra statements run when each session opens.
    session: Vec<String>,
}

impl Connector {
    pub fn new(endpoint: &Endpoint, role: Role) -> Self {
        Connector {
            role,
            endpoint: Arc::new(endpoint.clone()),
            tls_works: Arc::new(OnceLock::new()),
            session: Vec::new(),
        }
    }

    /// The same server, with `statement` run at the start of every session.
    pub fn with_session(mut self, statement: impl Into<String>) -> Self {
        self.session.push(statement.into());
        self
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn opts(&self, tls: bool) -> Result<Opts> {
        let ep = &self.endpoint;
        let mut init = vec![
            "SET time_zone = '+00:00'".to_string(),
            format!("SET sql_mode = '{SESSION_SQL_MODE}'"),
        ];
        if self.role == Role::Target {
            init.push("SET foreign_key_checks = 0".into());
        }
        init.extend(self.session.iter().cloned());
        let mut b = OptsBuilder::default()
            .ip_or_hostname(ep.host.clone())
            .tcp_port(ep.port)
            .user(Some(ep.user.clone()))
            .pass(password(ep, self.role)?)
            .prefer_socket(false)
            .stmt_cache_size(64)
            .init(init)
            .setup(vec!["SET NAMES utf8mb4".to_string()]);
        if tls {
            let mut ssl = SslOpts::default();
            match ep.tls {
                Tls::Verify => {
                    if let Some(ca) = &ep.ca {
                        ssl = ssl.with_root_certs(vec![ca.clone().into()]);
                    }
                }
                _ => {
                    ssl = ssl
                        .with_danger_accept_invalid_certs(true)
                        .with_danger_skip_domain_validation(true);
                }
            }
            b = b.ssl_opts(ssl);
        }
        Ok(b.into())
    }

    /// Ends session `id` on this server (its transaction rolls back, its
    /// locks are released), when the server can be reached.
    pub async fn kill_session(&self, id: u32) {
        if let Ok(mut c) = self.connect().await {
            let _ = c.query_drop(format!("KILL {id}")).await;
            let _ = c.disconnect().await;
        }
    }

    /// Opens a session with Ferry's settings.
    pub async fn connect(&self) -> Result<Conn> {
        // A server behind a dead network path may accept the TCP connection
        // (a proxy, a NAT) and never answer: give up after a while.
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_now()).await {
            Ok(r) => r,
            Err(_) => Err(DbError::Connect {
                role: self.role.as_str(),
                endpoint: self.endpoint.display(),
                source: mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                ))),
            }),
        }
    }

    async fn connect_now(&self) -> Result<Conn> {
        let want_tls = match self.endpoint.tls {
            Tls::Disabled => false,
            Tls::Required | Tls::Verify => true,
            Tls::Prefer => *self.tls_works.get().unwrap_or(&true),
        };
        let result = Conn::new(self.opts(want_tls)?).await;
        let conn = match result {
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if self.endpoint.tls == Tls::Prefer => {
                let _ = self.tls_works.set(false);
                Conn::new(self.opts(false)?).await
            }
            other => {
                if other.is_ok() && self.endpoint.tls == Tls::Prefer {
                    let _ = self.tls_works.set(want_tls);
                }
                other
            }
        };
        conn.map_err(|source| DbError::Connect {
            role: self.role.as_str(),
            endpoint: self.endpoint.display(),
            source,
        })
    }

    /// Wraps a query error with what Ferry was doing.
    pub fn query_err(
        &self,
        context: impl Into<String>,
    ) -> impl FnOnce(mysql_async::Error) -> DbError {
        let role = self.role.as_str();
        let context = context.into();
        move |source| DbError::Query {
            role,
            context,
            source,
        }
    }
}

/// Quotes an identifier with backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `db`.`table`
pub fn qualified(db: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(db), quote_ident(table))
}

/// Reads one server variable as a string (`None` if it does not exist).
pub async fn variable(conn: &mut Conn, name: &str) -> mysql_async::Result<Option<String>> {
    debug_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let row: Option<(String, Option<String>)> = conn
        .query_first(format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
        .await?;
    Ok(row.and_then(|(_, v)| v))
}
