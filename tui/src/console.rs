//! The console's runtime: the terminal, keys, and a subscription to the
//! runner's socket that reconnects by itself (with backoff) when the runner
//! goes away. One `select!` over terminal events, socket data and signals;
//! the screen is redrawn only when something changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ferry_proto::{Command, Reply, Request};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::app::{Action, App};

/// How the console ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `q`: the jobs go on.
    Detached,
    /// `q` then `y` in `ferry run --console`: stop the runner too.
    StopRunner,
}

/// Runs the console on the terminal until the user leaves (or SIGTERM).
/// `in_process`: the runner lives in this process (`ferry run --console`),
/// so leaving asks whether to stop the jobs.
pub async fn run(socket: PathBuf, in_process: bool) -> std::io::Result<Exit> {
    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, socket, in_process).await;
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    socket: PathBuf,
    in_process: bool,
) -> std::io::Result<Exit> {
    let mut app = App {
        color: std::env::var_os("NO_COLOR").is_none(),
        ..App::default()
    };
    let (tx, mut rx) = mpsc::channel::<Action>(64);
    tokio::spawn(subscribe(socket.clone(), tx.clone()));
    let mut keys = EventStream::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut asking_stop = false;
    loop {
        if app.dirty {
            terminal.draw(|f| crate::ui::draw(f, &app))?;
            app.dirty = false;
        }
        let action = tokio::select! {
            a = rx.recv() => a,
            ev = keys.next() => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => {
                    if asking_stop {
                        return Ok(match k.code {
                            KeyCode::Char('y') => Exit::StopRunner,
                            _ => Exit::Detached,
                        });
                    }
                    action_for(&app, k)
                }
                Some(Ok(Event::Resize(..))) => {
                    app.dirty = true;
                    None
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(Exit::Detached),
                _ => None,
            },
            _ = term.recv() => return Ok(Exit::Detached),
        };
        let Some(action) = action else { continue };
        if let Some(cmd) = app.update(action) {
            tokio::spawn(send(socket.clone(), cmd, tx.clone()));
        }
        if app.quit {
            if !in_process {
                return Ok(Exit::Detached);
            }
            asking_stop = true;
            app.quit = false;
            app.message = Some(Err(
                "stop the jobs too? y = stop the runner, any other key = detach (jobs go on)"
                    .into(),
            ));
            app.dirty = true;
        }
    }
}

/// The action a key stands for, given the state (prompts take text).
pub fn action_for(app: &App, key: KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    if app.prompt.is_some() {
        return match key.code {
            KeyCode::Esc => Some(Action::Back),
            KeyCode::Enter => Some(Action::Open),
            KeyCode::Backspace => Some(Action::Backspace),
            KeyCode::Char(c) => Some(Action::Char(c)),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Enter => Action::Open,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('p') => Action::Pause,
        KeyCode::Char('r') => Action::Resume,
        KeyCode::Char('t') => Action::Throttle,
        KeyCode::Char('v') => Action::Verify,
        KeyCode::Char('c') => Action::Cutover,
        KeyCode::Char('l') => Action::FocusLog,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}

/// Subscribes to the runner's status, forever: on any failure it reports
/// the disconnection and tries again after a growing pause (1 s to 10 s).
async fn subscribe(socket: PathBuf, tx: mpsc::Sender<Action>) {
    let mut backoff = 1;
    loop {
        let error = match stream_status(&socket, &tx).await {
            Ok(()) => "the runner closed the connection".to_string(),
            Err(e) => e,
        };
        if tx
            .send(Action::Disconnected {
                error,
                retry_in_s: backoff,
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_secs(backoff)).await;
        backoff = (backoff * 2).min(10);
    }
}

async fn stream_status(socket: &Path, tx: &mpsc::Sender<Action>) -> Result<(), String> {
    let stream = tokio::time::timeout(Duration::from_secs(3), UnixStream::connect(socket))
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| format!("no runner on {} ({e})", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let line = serde_json::to_string(&Request::new(Command::Subscribe { job: None }))
        .map_err(|e| e.to_string())?;
    write
        .write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(read).lines();
    loop {
        // The runner sends a status every second; silence means trouble.
        let next = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .map_err(|_| "the runner stopped answering".to_string())?
            .map_err(|e| e.to_string())?;
        let Some(line) = next else { return Ok(()) };
        let reply: Reply = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        match reply.status {
            Some(s) if reply.ok => {
                if tx.send(Action::Status(Box::new(s))).await.is_err() {
                    return Ok(());
                }
            }
            _ => return Err(reply.error.unwrap_or_else(|| "unexpected reply".into())),
        }
    }
}

/// Sends one command on its own connection and reports the reply.
async fn send(socket: PathBuf, cmd: Command, tx: mpsc::Sender<Action>) {
    let result = async {
        let mut stream = UnixStream::connect(&socket)
            .await
            .map_err(|e| format!("no runner ({e})"))?;
        let line = serde_json::to_string(&Request::new(cmd)).map_err(|e| e.to_string())?;
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut lines = BufReader::new(stream).lines();
        let line = lines
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the runner closed the connection")?;
        let reply: Reply = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        match (reply.ok, reply.cutover) {
            (true, Some(c)) => Ok(format!("cut over at {}", c.position)),
            (true, None) => Ok(reply.message.unwrap_or_default()),
            (false, _) => Err(reply.error.unwrap_or_default()),
        }
    }
    .await;
    let _ = tx.send(Action::Reply(result)).await;
}
