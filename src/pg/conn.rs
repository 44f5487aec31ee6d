//! Sessions on a PostgreSQL target: the job's endpoint, its password read
//! when a session opens (never stored or shown), TLS as the job says.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

use crate::db::{self, DbError, Role};
use crate::job::{Endpoint, JobSpec, Tls};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    Password(#[from] DbError),
    #[error("target {endpoint}: {}", pg_message(.source))]
    Connect {
        endpoint: String,
        source: tokio_postgres::Error,
    },
    #[error("target {endpoint}: no answer within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout { endpoint: String },
    #[error("target {endpoint}: TLS: {what}")]
    Tls { endpoint: String, what: String },
    #[error("target: {context}: {}", pg_message(.source))]
    Query {
        context: String,
        source: tokio_postgres::Error,
    },
    /// The target answered, but not with what Ferry needs.
    #[error("target: {0}")]
    Unexpected(String),
}

/// A server error's message with its detail and hint; else the error.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = format!("{} ({})", d.message(), d.code().code());
            if let Some(detail) = d.detail() {
                s.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = d.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => e.to_string(),
    }
}

impl PgError {
    /// A lost or refused connection (the job retries), as opposed to SQL
    /// or credentials the server refused.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Connect { source, .. } | PgError::Query { source, .. } => {
                source.as_db_error().is_none_or(|d| {
                    // Shutting down, or too many connections.
                    matches!(d.code().code(), "57P01" | "57P02" | "57P03" | "53300")
                })
            }
            PgError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Query { source, .. } | PgError::Connect { source, .. } => {
                source.as_db_error().map(|d| d.code().code())
            }
            _ => None,
        }
    }
}

/// Wraps a query error with what was being done.
/// Whether PostGIS is installed in the session's database with its
/// `geometry` type on the search path.
pub async fn has_postgis(client: &Client) -> Result<bool, PgError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'postgis') \
             AND to_regtype('geometry') IS NOT NULL",
            &[],
        )
        .await
        .map_err(query_err("looking for PostGIS"))?;
    Ok(row.get(0))
}

/// `job` with what its target database offers filled into the mapping
/// (PostGIS, for spatial columns).
pub async fn with_postgis(job: &JobSpec, target: &PgConnector) -> Result<JobSpec, PgError> {
    let client = target.connect().await?;
    let mut job = job.clone();
    job.mapping.postgis = has_postgis(&client).await?;
    Ok(job)
}

pub fn query_err(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Query { context, source }
}

/// Opens sessions on a PostgreSQL target.
#[derive(Clone)]
pub struct PgConnector {
    endpoint: Arc<Endpoint>,
}

impl PgConnector {
    pub fn new(endpoint: &Endpoint) -> Self {
        PgConnector {
            endpoint: Arc::new(endpoint.clone()),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `user@host:port/database`, for messages.
    pub fn display(&self) -> String {
        format!(
            "{}/{}",
            self.endpoint.display(),
            self.endpoint.database.as_deref().unwrap_or_default()
        )
    }

    /// A session, in UTC, with its connection driven by a task that ends
    /// when the client is dropped.
    pub async fn connect(&self) -> Result<Client, PgError> {
        let e = &self.endpoint;
        let mut config = Config::new();
        config
            .host(&e.host)
            .port(e.port)
            .user(&e.user)
            .dbname(e.database.as_deref().unwrap_or("postgres"))
            .application_name("ferry")
            .options(
                "-c TimeZone=UTC -c client_encoding=UTF8 -c DateStyle=ISO,MDY \
                 -c IntervalStyle=postgres -c extra_float_digits=1",
            )
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(p) = db::password(e, Role::Target)? {
            config.password(p);
        }
        let endpoint = self.display();
        let connect_err = |source| PgError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let attempt = async {
            let client = if e.tls == Tls::Disabled {
                config.ssl_mode(SslMode::Disable);
                let (client, conn) = config.connect(NoTls).await.map_err(connect_err)?;
                tokio::spawn(conn);
                client
            } else {
                config.ssl_mode(match e.tls {
                    Tls::Prefer => SslMode::Prefer,
                    _ => SslMode::Require,
                });
                let tls = tls_connector(e).map_err(|what| PgError::Tls {
                    endpoint: endpoint.clone(),
                    what,
                })?;
                let (client, conn) = config.connect(tls).await.map_err(connect_err)?;
                tokio::spawn(conn);
                client
            };
            Ok(client)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(PgError::Timeout { endpoint }),
        }
    }
}

/// rustls for `prefer` and `required` (encrypted, the certificate not
/// checked, as MySQL's modes of those names) and `verify` (checked
/// against the job's `ca`).
fn tls_connector(e: &Endpoint) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match (e.tls, &e.ca) {
        (Tls::Verify, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(ca).map_err(|err| format!("{}: {err}", ca.display()))?;
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> =
                    cert.map_err(|err| format!("{}: {err}", ca.display()))?;
                roots.add(cert).map_err(|err| err.to_string())?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Accepts the server's certificate unchecked (`prefer`, `required`); the
/// handshake's signatures are still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
