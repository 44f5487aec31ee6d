//! The control socket `STATE/ferry.sock`: newline-delimited JSON requests
//! and replies (see `ferry_proto`), served by the runner; the CLI commands
//! and the console are its clients.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::{Command, Reply, Request, VERSION};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{Framed, LinesCodec};
use tracing::{info, warn};

use crate::db::{Connector, Role};
use crate::job::{Mode, VerifyLevel};
use crate::runner::{self, Runner};
use crate::source::position;
use crate::status;
use crate::verify;

/// The longest request line accepted.
const MAX_LINE: usize = 64 << 10;
/// A client that does not take a reply within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_path(state: &Path) -> PathBuf {
    state.join("ferry.sock")
}

/// Serves the socket until the runner stops. The socket file is readable
/// and writable by its owner only.
pub async fn serve(runner: Arc<Runner>) -> std::io::Result<()> {
    let path = socket_path(runner.store.dir());
    // A socket left by a runner that died: the state lock, held by this
    // process, proves no other runner uses it.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    info!(socket = %path.display(), "control socket listening");
    loop {
        let stream = tokio::select! {
            s = listener.accept() => s,
            _ = runner.cancel.cancelled() => break,
        };
        match stream {
            Ok((stream, _)) => {
                let tasks = runner.tasks.clone();
                let runner = runner.clone();
                tasks.spawn(client(runner, stream));
            }
            Err(e) => warn!(error = %e, "control socket accept failed"),
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Serves one connection until the client leaves or the runner stops (a
/// request being handled gets its reply first).
async fn client(runner: Arc<Runner>, stream: UnixStream) {
    let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
    loop {
        let line = tokio::select! {
            line = lines.next() => line,
            _ = runner.cancel.cancelled() => return,
        };
        let Some(line) = line else {
            return;
        };
        let reply = match line {
            Ok(line) => match serde_json::from_str::<Request>(&line) {
                Ok(req) if req.v != VERSION => Reply::error(format!(
                    "protocol version {} is not spoken here (this runner speaks {VERSION})",
                    req.v
                )),
                Ok(Request {
                    cmd: Command::Subscribe { job },
                    ..
                }) => {
                    subscribe(&runner, &mut lines, job.as_deref()).await;
                    return;
                }
                Ok(req) => handle(&runner, req.cmd).await,
                Err(e) => Reply::error(format!("bad request: {e}")),
            },
            Err(e) => {
                let _ = send(&mut lines, &Reply::error(format!("bad request: {e}"))).await;
                return;
            }
        };
        if !send(&mut lines, &reply).await {
            return;
        }
    }
}

/// Sends one reply; false when the client is gone or does not read.
async fn send(lines: &mut Framed<UnixStream, LinesCodec>, reply: &Reply) -> bool {
    let Ok(text) = serde_json::to_string(reply) else {
        return false;
    };
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, lines.send(text)).await,
        Ok(Ok(()))
    )
}

fn status_reply(runner: &Runner, job: Option<&str>) -> Reply {
    if let Some(name) = job {
        if runner.control(name).is_none() && !matches!(runner.store.job(name), Ok(Some(_))) {
            return Reply::error(format!("no job {name:?}"));
        }
    }
    match status::build(&runner.store, Some(runner), job) {
        Ok(s) => Reply::status(s),
        Err(e) => Reply::error(e.to_string()),
    }
}

async fn subscribe(runner: &Runner, lines: &mut Framed<UnixStream, LinesCodec>, job: Option<&str>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = runner.cancel.cancelled() => return,
        }
        if !send(lines, &status_reply(runner, job)).await {
            return;
        }
    }
}

async fn handle(runner: &Runner, cmd: Command) -> Reply {
    let controls = |job: &Option<String>| match job {
        None => Ok(runner.controls()),
        Some(name) => runner
            .control(name)
            .map(|c| vec![c])
            .ok_or_else(|| format!("no job {name:?} in this runner")),
    };
    match cmd {
        Command::Status { job } => status_reply(runner, job.as_deref()),
        Command::Subscribe { .. } => Reply::error("subscribe is handled per connection"),
        Command::Pause { job } => match controls(&job) {
            Ok(cs) => {
                cs.iter().for_each(|c| c.pause());
                Reply::ok(format!("paused {}", names(&cs)))
            }
            Err(e) => Reply::error(e),
        },
        Command::Resume { job } => match controls(&job) {
            Ok(cs) => {
                cs.iter().for_each(|c| c.resume());
                Reply::ok(format!("resumed {}", names(&cs)))
            }
            Err(e) => Reply::error(e),
        },
        Command::Throttle { job, rows_per_sec } => match controls(&Some(job)) {
            Ok(cs) => {
                cs.iter().for_each(|c| c.throttle(rows_per_sec));
                Reply::ok(match rows_per_sec {
                    0 => format!("{}: unlimited", names(&cs)),
                    n => format!("{}: {n} rows/s", names(&cs)),
                })
            }
            Err(e) => Reply::error(e),
        },
        Command::Stop => {
            info!("stop requested through the control socket");
            runner.cancel.cancel();
            Reply::ok("stopping")
        }
        Command::Cutover {
            job,
            read_only_source,
        } => cutover(runner, &job, read_only_source).await,
        Command::Verify {
            job,
            count,
            tables,
            repair,
            apply,
            wait,
        } => {
            let opts = verify::Options {
                level: if count {
                    VerifyLevel::Count
                } else {
                    VerifyLevel::Checksum
                },
                tables,
                trigger: "command".into(),
            };
            verify(
                runner,
                &job,
                opts,
                repair.map(|f| (PathBuf::from(f), apply)),
                wait,
            )
            .await
        }
    }
}

/// Starts a verification in the runner: online when the job syncs here.
/// With `wait`, replies with its result; else at once.
async fn verify(
    runner: &Runner,
    name: &str,
    opts: verify::Options,
    repair: Option<(PathBuf, bool)>,
    wait: bool,
) -> Reply {
    let spec = match runner.spec(name) {
        Some(s) => s,
        None => match runner.store.job(name) {
            Ok(Some(rec)) => rec.spec,
            _ => return Reply::error(format!("no job {name:?}")),
        },
    };
    if spec.target.is_none() {
        return Reply::error(format!("{name} has no target; nothing to verify"));
    }
    if let Some((file, _)) = &repair {
        if !file.is_absolute() {
            return Reply::error("the repair file must be an absolute path");
        }
    }
    let control = runner.control(name);
    let busy = || {
        control.as_ref().is_some_and(|c| {
            c.verifying
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
        })
    };
    // The console's `v` does not queue behind a running verification; the
    // CLI (`wait`) waits its turn.
    if !wait && busy() {
        return Reply::error(format!("a verification of {name} is already running"));
    }
    let store = runner.store.clone();
    let cancel = runner.cancel.child_token();
    let task = runner.tasks.clone().spawn(async move {
        loop {
            let result = runner::verify_job(
                &store,
                &spec,
                control.as_ref(),
                &opts,
                repair.clone(),
                cancel.clone(),
            )
            .await;
            match result {
                Err(verify::VerifyError::AlreadyRunning(_)) if wait => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = cancel.cancelled() => return Err(verify::VerifyError::Cancelled),
                    }
                }
                other => return other,
            }
        }
    });
    if !wait {
        return Reply::ok(format!(
            "verification of {name} started; `ferry status {name}` shows its result"
        ));
    }
    match task.await {
        Ok(Ok(run)) => Reply {
            verification: Some(verify::to_proto(&run)),
            ..Reply::ok(verify::summary(&run))
        },
        Ok(Err(e)) => Reply::error(format!("verify: {e}")),
        Err(e) => Reply::error(format!("verify: the task ended abnormally: {e}")),
    }
}

fn names(cs: &[Arc<crate::runner::JobControl>]) -> String {
    if cs.is_empty() {
        return "no jobs".into();
    }
    cs.iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `migrate` jobs: optionally makes the source read-only, takes its head,
/// has the job apply up to it, and waits for the count verification.
async fn cutover(runner: &Runner, name: &str, read_only_source: bool) -> Reply {
    let Some(control) = runner.control(name) else {
        return Reply::error(format!("no job {name:?} in this runner"));
    };
    let spec = match runner.store.job(name) {
        Ok(Some(rec)) => rec.spec,
        _ => return Reply::error(format!("no job {name:?} in the state")),
    };
    if spec.mode != Mode::Migrate {
        return Reply::error(format!(
            "{name} is a {} job; only mode = \"migrate\" jobs cut over",
            spec.mode.as_str()
        ));
    }
    if control.is_paused() {
        return Reply::error(format!("{name} is paused; resume it first"));
    }
    let source = Connector::new(&spec.source, Role::Source);
    let head = async {
        let mut conn = source.connect().await?;
        if read_only_source {
            conn_exec(&mut conn, &source, "SET GLOBAL read_only = 1").await?;
            control.event("cutover", "source set read-only");
        }
        let (head, _) = position::head(&mut conn, &source).await?;
        let _ = conn.disconnect().await;
        Ok::<_, crate::db::DbError>(head)
    };
    let head = match head.await {
        Ok(h) => h,
        Err(e) => return Reply::error(format!("cutover: {e}")),
    };
    control.event(
        "cutover",
        &format!("applying up to the source's head {head}"),
    );
    let mut done = control.cutover_done.subscribe();
    control.cutover_at.send_replace(Some(head));
    let outcome = tokio::select! {
        // The job's end may come with the runner's own stop (its last job
        // is done): the outcome wins.
        biased;
        r = done.wait_for(|d| d.is_some()) => r.ok().and_then(|d| d.clone()),
        _ = runner.cancel.cancelled() => control.cutover_done.borrow().clone(),
    };
    match outcome {
        Some(Ok(c)) => Reply {
            cutover: Some(c),
            ..Reply::ok(format!("{name} cut over"))
        },
        Some(Err(e)) => Reply::error(e),
        None => Reply::error("the runner stopped before the cutover finished"),
    }
}

async fn conn_exec(
    conn: &mut mysql_async::Conn,
    source: &Connector,
    sql: &str,
) -> Result<(), crate::db::DbError> {
    use mysql_async::prelude::*;
    conn.query_drop(sql).await.map_err(source.query_err(sql))
}

/// Why a client could not talk to a runner.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no runner is running on {0} (start one with `ferry run`)")]
    NoRunner(String),
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket {path}: {message}")]
    Protocol { path: String, message: String },
}

/// A connection to a runner's socket.
pub struct Client {
    lines: Framed<UnixStream, LinesCodec>,
    path: String,
}

impl Client {
    pub async fn connect(state: &Path) -> Result<Client, ClientError> {
        let path = socket_path(state);
        let shown = path.display().to_string();
        match UnixStream::connect(&path).await {
            Ok(s) => Ok(Client {
                lines: Framed::new(s, LinesCodec::new_with_max_length(64 << 20)),
                path: shown,
            }),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Err(ClientError::NoRunner(shown))
            }
            Err(source) => Err(ClientError::Io {
                path: shown,
                source,
            }),
        }
    }

    pub async fn send(&mut self, cmd: Command) -> Result<(), ClientError> {
        let text = serde_json::to_string(&Request::new(cmd)).map_err(|e| self.protocol(e))?;
        self.lines.send(text).await.map_err(|e| self.protocol(e))
    }

    /// The next reply; `None` when the runner closed the connection.
    pub async fn reply(&mut self) -> Result<Option<Reply>, ClientError> {
        match self.lines.next().await {
            None => Ok(None),
            Some(Ok(line)) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| self.protocol(e)),
            Some(Err(e)) => Err(self.protocol(e)),
        }
    }

    /// One request, one reply.
    pub async fn call(&mut self, cmd: Command) -> Result<Reply, ClientError> {
        self.send(cmd).await?;
        self.reply().await?.ok_or_else(|| ClientError::Protocol {
            path: self.path.clone(),
            message: "the runner closed the connection".into(),
        })
    }

    fn protocol(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}
