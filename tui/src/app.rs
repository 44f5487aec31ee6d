//! The console's state and how actions change it.

use ferry_proto::{Command, Job, Status};

/// The runner connection as the console sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    Connecting,
    Connected,
    /// Lost; the next attempt comes after the backoff.
    Disconnected {
        error: String,
        retry_in_s: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Overview,
    Detail,
    Help,
}

/// What the console is asking the user, if anything.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Rows per second typed so far.
    Throttle(String),
    /// Cutover of the named job, awaiting `y`.
    ConfirmCutover(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Up,
    Down,
    Open,
    Back,
    Pause,
    Resume,
    Throttle,
    Verify,
    Cutover,
    FocusLog,
    Help,
    Quit,
    /// A character typed into a prompt.
    Char(char),
    Backspace,
    /// A status from the runner.
    Status(Box<Status>),
    Disconnected {
        error: String,
        retry_in_s: u64,
    },
    /// The runner's answer to a command: Ok(message) or Err(error).
    Reply(Result<String, String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub status: Option<Status>,
    pub connection: Connection,
    pub view: View,
    /// The view to go back to from help.
    pub behind_help: View,
    pub selected: usize,
    pub prompt: Option<Prompt>,
    /// The event log has the focus (arrows scroll it).
    pub log_focus: bool,
    /// Events scrolled back from the newest.
    pub log_scroll: usize,
    /// The last command's outcome, shown in the footer.
    pub message: Option<Result<String, String>>,
    pub quit: bool,
    /// Something changed since the last draw.
    pub dirty: bool,
    /// Colours on (off with `NO_COLOR`).
    pub color: bool,
}

impl Default for App {
    fn default() -> Self {
        App {
            status: None,
            connection: Connection::Connecting,
            view: View::Overview,
            behind_help: View::Overview,
            selected: 0,
            prompt: None,
            log_focus: false,
            log_scroll: 0,
            message: None,
            quit: false,
            dirty: true,
            color: true,
        }
    }
}

impl App {
    pub fn jobs(&self) -> &[Job] {
        self.status.as_ref().map_or(&[], |s| s.jobs.as_slice())
    }

    pub fn selected_job(&self) -> Option<&Job> {
        self.jobs().get(self.selected)
    }

    /// Applies an action; returns a command for the runner, if it asks for one.
    pub fn update(&mut self, action: Action) -> Option<Command> {
        self.dirty = true;
        if let Some(prompt) = self.prompt.clone() {
            return self.prompt_key(prompt, action);
        }
        let job = self.selected_job().map(|j| j.name.clone());
        match action {
            Action::Status(s) => {
                self.status = Some(*s);
                self.connection = Connection::Connected;
                self.selected = self.selected.min(self.jobs().len().saturating_sub(1));
            }
            Action::Disconnected { error, retry_in_s } => {
                self.connection = Connection::Disconnected { error, retry_in_s };
            }
            Action::Reply(r) => self.message = Some(r),
            Action::Quit => self.quit = true,
            Action::Help if self.view == View::Help => self.view = self.behind_help,
            Action::Help => {
                self.behind_help = self.view;
                self.view = View::Help;
            }
            Action::Back => match self.view {
                View::Help => self.view = self.behind_help,
                _ if self.log_focus => self.log_focus = false,
                _ => self.view = View::Overview,
            },
            Action::Up if self.log_focus => self.log_scroll += 1,
            Action::Down if self.log_focus => self.log_scroll = self.log_scroll.saturating_sub(1),
            Action::Up => self.selected = self.selected.saturating_sub(1),
            Action::Down => {
                self.selected = (self.selected + 1).min(self.jobs().len().saturating_sub(1))
            }
            Action::Open if !self.jobs().is_empty() => {
                self.view = View::Detail;
                self.log_scroll = 0;
            }
            Action::FocusLog if self.view == View::Detail => self.log_focus = !self.log_focus,
            Action::Pause => return job.map(|job| Command::Pause { job: Some(job) }),
            Action::Resume => return job.map(|job| Command::Resume { job: Some(job) }),
            Action::Throttle if job.is_some() => {
                self.prompt = Some(Prompt::Throttle(String::new()))
            }
            Action::Cutover => {
                if let Some(j) = self.selected_job() {
                    if j.mode == "migrate" {
                        self.prompt = Some(Prompt::ConfirmCutover(j.name.clone()));
                    } else {
                        self.message = Some(Err(format!(
                            "{} is a {} job; only migrate jobs cut over",
                            j.name, j.mode
                        )));
                    }
                }
            }
            Action::Verify => {
                let (name, mode) = self
                    .selected_job()
                    .map(|j| (j.name.clone(), j.mode.clone()))?;
                if mode == "subscribe" {
                    self.message = Some(Err(format!("{name} has no target to verify")));
                    return None;
                }
                self.message = Some(Ok(format!("verification of {name} requested")));
                return Some(Command::Verify {
                    job: name,
                    count: false,
                    tables: Vec::new(),
                    repair: None,
                    apply: false,
                    wait: false,
                });
            }
            _ => self.dirty = false,
        }
        None
    }

    fn prompt_key(&mut self, prompt: Prompt, action: Action) -> Option<Command> {
        match (prompt, action) {
            // Data keeps flowing while a prompt is open.
            (_, a @ (Action::Status(_) | Action::Disconnected { .. } | Action::Reply(_))) => {
                let prompt = self.prompt.take();
                let out = self.update(a);
                self.prompt = prompt;
                out
            }
            (_, Action::Back) => {
                self.prompt = None;
                None
            }
            (Prompt::Throttle(mut digits), Action::Char(c)) if c.is_ascii_digit() => {
                if digits.len() < 12 {
                    digits.push(c);
                }
                self.prompt = Some(Prompt::Throttle(digits));
                None
            }
            (Prompt::Throttle(mut digits), Action::Backspace) => {
                digits.pop();
                self.prompt = Some(Prompt::Throttle(digits));
                None
            }
            (Prompt::Throttle(digits), Action::Open) => {
                self.prompt = None;
                let job = self.selected_job()?.name.clone();
                let rows_per_sec = digits.parse().unwrap_or(0);
                Some(Command::Throttle { job, rows_per_sec })
            }
            (Prompt::ConfirmCutover(job), Action::Char('y')) => {
                self.prompt = None;
                self.message = Some(Ok(format!("cutover of {job} requested; waiting for it")));
                Some(Command::Cutover {
                    job,
                    read_only_source: false,
                })
            }
            (Prompt::ConfirmCutover(_), _) => {
                self.prompt = None;
                self.message = Some(Err("cutover cancelled".into()));
                None
            }
            (p, _) => {
                self.prompt = Some(p);
                self.dirty = false;
                None
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use ferry_proto::*;

    pub fn job(name: &str, mode: &str, state: &str) -> Job {
        Job {
            name: name.into(),
            mode: mode.into(),
            state: state.into(),
            since_ms: 1_000_000,
            reason: None,
            retries: 0,
            throttle_rows_per_sec: 0,
            full: None,
            cdc: None,
            alert_lag_s: Some(30),
            alert: false,
            verification: None,
            verifying: None,
            sink: None,
            events: vec![Event {
                at_ms: 1_000_000,
                kind: "stage".into(),
                message: state.into(),
            }],
        }
    }

    pub fn status(jobs: Vec<Job>) -> Status {
        Status {
            runner: Runner {
                up: true,
                pid: Some(4242),
                version: "0.1.0".into(),
                state_dir: ".ferry".into(),
                started_ms: Some(1_000_000),
                now_ms: 1_060_000,
            },
            jobs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn app() -> App {
        let mut app = App::default();
        app.update(Action::Status(Box::new(status(vec![
            job("a", "sync", "syncing"),
            job("b", "migrate", "syncing"),
        ]))));
        app
    }

    #[test]
    fn selection_moves_within_the_jobs() {
        let mut app = app();
        assert_eq!(app.connection, Connection::Connected);
        app.update(Action::Up);
        assert_eq!(app.selected, 0);
        app.update(Action::Down);
        app.update(Action::Down);
        assert_eq!(app.selected, 1);
        app.update(Action::Open);
        assert_eq!(app.view, View::Detail);
        app.update(Action::Back);
        assert_eq!(app.view, View::Overview);
    }

    #[test]
    fn keys_become_commands_for_the_selected_job() {
        let mut app = app();
        assert_eq!(
            app.update(Action::Pause),
            Some(Command::Pause {
                job: Some("a".into())
            })
        );
        assert_eq!(
            app.update(Action::Resume),
            Some(Command::Resume {
                job: Some("a".into())
            })
        );
        assert_eq!(app.update(Action::Throttle), None);
        for c in ['1', '2', 'x', '5'] {
            app.update(Action::Char(c));
        }
        app.update(Action::Backspace);
        assert_eq!(
            app.update(Action::Open),
            Some(Command::Throttle {
                job: "a".into(),
                rows_per_sec: 12
            })
        );
        assert_eq!(app.prompt, None);
    }

    #[test]
    fn v_asks_the_runner_to_verify_without_waiting() {
        let mut app = app();
        let cmd = app.update(Action::Verify);
        assert_eq!(
            cmd,
            Some(Command::Verify {
                job: "a".into(),
                count: false,
                tables: vec![],
                repair: None,
                apply: false,
                wait: false
            })
        );
        assert!(matches!(app.message, Some(Ok(_))));
    }

    #[test]
    fn cutover_asks_first_and_only_for_migrate_jobs() {
        let mut app = app();
        assert_eq!(app.update(Action::Cutover), None);
        assert!(matches!(app.message, Some(Err(_))));
        app.update(Action::Down);
        assert_eq!(app.update(Action::Cutover), None);
        assert_eq!(app.prompt, Some(Prompt::ConfirmCutover("b".into())));
        // A status arriving meanwhile keeps the question open.
        app.update(Action::Status(Box::new(status(vec![
            job("a", "sync", "syncing"),
            job("b", "migrate", "syncing"),
        ]))));
        assert_eq!(
            app.update(Action::Char('y')),
            Some(Command::Cutover {
                job: "b".into(),
                read_only_source: false
            })
        );
        app.update(Action::Cutover);
        assert_eq!(app.update(Action::Char('n')), None);
        assert_eq!(app.prompt, None);
    }

    #[test]
    fn a_lost_runner_is_shown_and_the_last_status_kept() {
        let mut app = app();
        app.update(Action::Disconnected {
            error: "connection refused".into(),
            retry_in_s: 2,
        });
        assert!(matches!(
            app.connection,
            Connection::Disconnected { retry_in_s: 2, .. }
        ));
        assert_eq!(app.jobs().len(), 2);
        app.update(Action::Quit);
        assert!(app.quit);
    }
}
