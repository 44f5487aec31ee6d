//! Throwaway MariaDB servers for tests: each in its own temp datadir on a
//! free port, killed (and its datadir removed) when the test process ends.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::wait_until;

pub const PASSWORD: &str = "s3cret-Pa55-word";

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    pub pid: u32,
    /// mariadbd's arguments, to start it again.
    args: Vec<String>,
}

fn mariadbd() -> String {
    which("mariadbd").unwrap_or_else(|| "/usr/sbin/mariadbd".into())
}

fn which(bin: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
            .map(|f| f.display().to_string())
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A datadir made once per test process by mariadb-install-db, copied for
/// every server.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferry-it-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Its own tmpdir: bootstraps running side by side in /tmp lose
        // each other's temporary tables.
        let tmp = dir.with_extension("tmp");
        std::fs::create_dir_all(&tmp).expect("template tmpdir");
        watch_and_remove(None, &tmp);
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--auth-root-authentication-method=normal"])
            .arg(format!("--datadir={}", dir.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--user={user}"))
            .output()
            .expect("mariadb-install-db runs (is mariadb-server installed?)");
        assert!(
            out.status.success(),
            "install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        watch_and_remove(None, &dir);
        dir
    })
}

/// Kills `pid` and removes `dir` once this test process has exited.
pub fn watch_and_remove(pid: Option<u32>, dir: &Path) {
    let me = std::process::id();
    let kill = pid
        .map(|p| format!("kill -9 {p} 2>/dev/null;"))
        .unwrap_or_default();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.3; done; {kill} sleep 0.5; rm -rf '{}'",
        dir.display()
    );
    // Outlives this process on purpose, so it is never waited on.
    let watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watchdog");
    std::mem::forget(watchdog);
}

pub struct Options {
    pub binlog: bool,
    pub server_id: u32,
    pub local_infile: bool,
    /// max_allowed_packet (the tests' default is 64M).
    pub packet: &'static str,
    /// A fixed port (outside the ephemeral range), else a free one.
    pub port: Option<u16>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            binlog: true,
            server_id: 1,
            local_infile: true,
            packet: "64M",
            port: None,
        }
    }
}

impl Server {
    /// A server with the default options and this `server_id`.
    pub fn with_id(server_id: u32) -> Server {
        Server::start(Options {
            server_id,
            ..Default::default()
        })
    }

    pub fn start(opts: Options) -> Server {
        let template = template();
        let port = opts.port.unwrap_or_else(free_port);
        let dir = std::env::temp_dir().join(format!("ferry-it-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let status = Command::new("cp")
            .arg("-a")
            .arg(template)
            .arg(&dir)
            .status()
            .expect("cp");
        assert!(status.success());
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let mut cmd = Command::new(mariadbd());
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.display()))
            .arg(format!("--socket={}/s.sock", dir.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}/pid", dir.display()))
            .arg(format!("--log-error={}/err.log", dir.display()))
            .arg(format!("--tmpdir={}", dir.display()))
            .arg(format!("--server-id={}", opts.server_id))
            .arg(format!("--user={user}"))
            .args([
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=64M",
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-lock-wait-timeout=15",
                "--skip-log-bin",
            ]);
        cmd.arg(format!("--local-infile={}", u8::from(opts.local_infile)));
        cmd.arg(format!("--max-allowed-packet={}", opts.packet));
        if opts.binlog {
            cmd.arg(format!("--log-bin={}/binlog", dir.display()))
                .args([
                    "--binlog-format=ROW",
                    "--binlog-row-image=FULL",
                    "--binlog-row-metadata=FULL",
                ]);
        }
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut server = Server {
            port,
            dir,
            pid: 0,
            args,
        };
        server.spawn();
        server.sql(&format!(
            "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES; \
             CREATE USER 'ferry'@'%' IDENTIFIED BY '{PASSWORD}'; \
             CREATE USER 'ferry'@'localhost' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON *.* TO 'ferry'@'%'; GRANT ALL ON *.* TO 'ferry'@'localhost';"
        ));
        server
    }

    /// Starts mariadbd and waits until it accepts connections.
    fn spawn(&mut self) {
        let child = Command::new(mariadbd())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        self.pid = child.id();
        // The child is reaped by the watchdog's kill; never waited on here.
        std::mem::forget(child);
        watch_and_remove(Some(self.pid), &self.dir);
        wait_until(
            Duration::from_secs(60),
            "the server to accept connections",
            || self.sql_ok("SELECT 1"),
        );
    }

    /// A clean shutdown and a start on the same datadir and port.
    pub fn restart(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        let pid = self.pid;
        wait_until(Duration::from_secs(60), "the server to stop", || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
        });
        self.spawn();
    }

    pub fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.args([
            "--no-defaults",
            "--default-character-set=utf8mb4",
            "-h127.0.0.1",
            "-uroot",
        ])
        .arg(format!("-P{}", self.port));
        c
    }

    fn sql_ok(&self, sql: &str) -> bool {
        self.client()
            .args(["-e", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs SQL (several statements, DELIMITER allowed) through the client.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The same, with the error returned (for workloads that retry, as
    /// applications do, on a deadlock or a lock timeout).
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        use std::io::Write;
        let mut child = self
            .client()
            .arg("-N")
            .arg("-B")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mariadb client");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(sql.as_bytes())
            .expect("write sql");
        let out = child.wait_with_output().expect("client output");
        if !out.status.success() {
            return Err(format!(
                "SQL failed on port {}: {}\n{}",
                self.port,
                String::from_utf8_lossy(&out.stderr),
                sql.chars().take(500).collect::<String>()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn sql_file(&self, path: &Path) {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.sql(&text);
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/", self.port)
    }
}

/// A source (binlog on) and a target shared by every test of the process;
/// tests keep apart by database names.
pub fn shared() -> &'static (Server, Server) {
    static S: OnceLock<(Server, Server)> = OnceLock::new();
    S.get_or_init(|| {
        let source = Server::start(Options::default());
        let target = Server::start(Options {
            server_id: 2,
            ..Options::default()
        });
        (source, target)
    })
}
