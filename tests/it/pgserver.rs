//! A throwaway PostgreSQL for tests: `initdb` into a temp dir, a free port,
//! password (SCRAM) login over TCP; run as the `postgres` user when the
//! tests run as root (PostgreSQL refuses root). Killed and removed when the
//! test process ends.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::server::{free_port, watch_and_remove, PASSWORD};
use crate::wait_until;

pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
}

/// The newest installed PostgreSQL's binaries (`$FERRY_PG_BIN` first).
fn bin_dir() -> PathBuf {
    if let Ok(b) = std::env::var("FERRY_PG_BIN") {
        return b.into();
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop()
        .expect("PostgreSQL is installed (scripts/test.sh installs it)")
}

/// (uid, gid) to run PostgreSQL as: ours, or `postgres`'s when we are root.
fn run_as() -> Option<(u32, u32)> {
    let me = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

impl PgServer {
    pub fn start() -> PgServer {
        Self::start_with(false)
    }

    /// With `tls`, a self-signed certificate and connections over TCP
    /// only with TLS (`hostssl` in pg_hba.conf).
    pub fn start_with(tls: bool) -> PgServer {
        let bin = bin_dir();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("ferry-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pg dir");
        let owner = run_as();
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("pwfile");
        if let Some((uid, gid)) = owner {
            let _ = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(&dir)
                .status();
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        if let Some((uid, gid)) = owner {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut tls_args: Vec<String> = Vec::new();
        if tls {
            let out = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=127.0.0.1", "-keyout"])
                .arg(data.join("server.key"))
                .arg("-out")
                .arg(data.join("server.crt"))
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            )
            .expect("pg_hba");
            if let Some((uid, gid)) = owner {
                let _ = Command::new("chown")
                    .arg("-R")
                    .arg(format!("{uid}:{gid}"))
                    .arg(&data)
                    .status();
            }
            let _ = Command::new("chmod")
                .arg("600")
                .arg(data.join("server.key"))
                .status();
            tls_args = ["-c", "ssl=on"].map(String::from).to_vec();
        }
        let mut postgres = Command::new(bin.join("postgres"));
        postgres.args(&tls_args);
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("log"));
        if let Some((uid, gid)) = owner {
            postgres.uid(uid).gid(gid);
        }
        let child = postgres.spawn().expect("postgres starts");
        watch_and_remove(Some(child.id()), &dir);
        std::mem::forget(child);
        let server = PgServer { port, bin };
        wait_until(
            Duration::from_secs(30),
            "PostgreSQL to accept logins",
            || server.try_sql("postgres", "SELECT 1").is_ok(),
        );
        server.sql(
            "postgres",
            &format!("CREATE USER ferry PASSWORD '{PASSWORD}'"),
        );
        server
    }

    /// Runs `sql` in database `db` as the superuser; the output, unaligned.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-X", "-q", "-A", "-t"])
            .env("PGSSLMODE", "prefer")
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .env("PGTZ", "UTC")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("SQL failed on PostgreSQL {}: {sql}\n{e}", self.port))
    }

    /// A fresh database owned by `ferry`.
    pub fn database(&self, name: &str) {
        self.sql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        self.sql("postgres", &format!("CREATE DATABASE {name} OWNER ferry"));
    }
}

/// One PostgreSQL for the whole test process.
pub fn shared_pg() -> &'static PgServer {
    static S: OnceLock<PgServer> = OnceLock::new();
    S.get_or_init(PgServer::start)
}
