//! Drawing: the header, the jobs overview or one job's detail, the footer.

use ferry_proto::{Job, Status};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Gauge, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

use crate::app::{App, Connection, Prompt, View};

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_line(app)), header);
    match app.view {
        View::Help => frame.render_widget(help(), body),
        View::Detail => match app.selected_job() {
            Some(job) => detail(frame, app, job, body),
            None => overview(frame, app, body),
        },
        View::Overview => overview(frame, app, body),
    }
    frame.render_widget(Paragraph::new(footer_lines(app)), footer);
}

fn style(app: &App, color: Color) -> Style {
    if app.color {
        Style::default().fg(color)
    } else {
        Style::default()
    }
}

fn state_style(app: &App, job: &Job) -> Style {
    let color = match job.state.as_str() {
        "failed" | "precheck_failed" => Color::Red,
        "retrying" => Color::Magenta,
        "paused" => Color::Yellow,
        "syncing" | "done" => Color::Green,
        _ => Color::Cyan,
    };
    let s = style(app, color);
    if job.alert {
        s.add_modifier(Modifier::BOLD)
    } else {
        s
    }
}

fn header_line(app: &App) -> Line<'static> {
    let mut spans = vec![Span::styled(
        "ferry ",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    match (&app.connection, &app.status) {
        (Connection::Disconnected { error, retry_in_s }, _) => {
            spans.push(Span::styled(
                format!("DISCONNECTED: {error}; retrying in {retry_in_s}s"),
                style(app, Color::Red).add_modifier(Modifier::BOLD),
            ));
        }
        (Connection::Connecting, None) => spans.push(Span::raw("connecting...")),
        (_, Some(s)) => {
            let up = s.runner.started_ms.map_or("?".into(), |t| {
                duration(s.runner.now_ms.saturating_sub(t) / 1000)
            });
            spans.push(Span::raw(format!(
                "runner {} {up} | {} | {} UTC",
                if s.runner.up { "up" } else { "DOWN" },
                s.runner.state_dir,
                clock(s.runner.now_ms)
            )));
        }
        (_, None) => {}
    }
    Line::from(spans)
}

fn footer_lines(app: &App) -> Vec<Line<'static>> {
    let keys = match app.view {
        View::Overview => {
            "↑↓ Enter open  p pause  r resume  t throttle  v verify  c cutover  ? help  q"
        }
        View::Detail => {
            "Esc back  p pause  r resume  t throttle  v verify  c cutover  l log  ? help  q"
        }
        View::Help => "Esc or ? back  q quit",
    };
    let second = match (&app.prompt, &app.message) {
        (Some(Prompt::Throttle(d)), _) => Line::from(format!(
            "throttle to rows/s (0 = unlimited), Enter to apply, Esc to cancel: {d}_"
        )),
        (Some(Prompt::ConfirmCutover(j)), _) => Line::styled(
            format!("cut over {j}? It applies up to the source's head and finishes the job. y/n"),
            style(app, Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        (None, Some(Ok(m))) => Line::styled(m.clone(), style(app, Color::Green)),
        (None, Some(Err(e))) => Line::styled(e.clone(), style(app, Color::Red)),
        (None, None) => Line::raw(""),
    };
    vec![
        Line::styled(keys, Style::default().add_modifier(Modifier::DIM)),
        second,
    ]
}

fn overview(frame: &mut Frame, app: &App, area: Rect) {
    let rows: Vec<Row> = app
        .jobs()
        .iter()
        .map(|j| {
            let lag = j
                .cdc
                .as_ref()
                .map_or("-".into(), |c| format!("{}s", c.lag_s));
            let lag_style = if j
                .cdc
                .as_ref()
                .zip(j.alert_lag_s)
                .is_some_and(|(c, a)| c.lag_s > a)
            {
                style(app, Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            let rate = j
                .cdc
                .as_ref()
                .filter(|_| j.state != "full_load")
                .map(|c| c.rows_per_s)
                .or(j.full.as_ref().map(|f| f.rows_per_s))
                .unwrap_or(0);
            Row::new(vec![
                Cell::from(j.name.clone()),
                Cell::from(j.mode.clone()),
                // The mark also works without colours.
                Cell::from(if j.alert {
                    format!("!{}", j.state)
                } else {
                    j.state.clone()
                })
                .style(state_style(app, j)),
                Cell::from(progress(j)),
                Cell::from(rate.to_string()),
                Cell::from(lag).style(lag_style),
                Cell::from(match j.throttle_rows_per_sec {
                    0 => "-".to_string(),
                    n => n.to_string(),
                }),
                verify_cell(app, j),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Min(10),
            Constraint::Length(8),
            Constraint::Length(14),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(7),
        ],
    )
    .header(
        Row::new([
            "job", "mode", "state", "full", "rows/s", "lag", "throttle", "verify",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .block(Block::default().borders(Borders::ALL).title(" jobs "));
    let mut state = ratatui::widgets::TableState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// The last verification in a few characters: running, ok, DIFF, error.
fn verify_cell(app: &App, j: &Job) -> Cell<'static> {
    if j.verifying.is_some() {
        return Cell::from("running").style(style(app, Color::Cyan));
    }
    match &j.verification {
        None => Cell::from("-"),
        Some(v) if v.error.is_some() => Cell::from("error").style(style(app, Color::Red)),
        Some(v) if v.ok => Cell::from("ok").style(style(app, Color::Green)),
        Some(_) => Cell::from("DIFF").style(style(app, Color::Red).add_modifier(Modifier::BOLD)),
    }
}

/// The verification block's lines: what runs or how the last run ended,
/// then a line per table (differing tables first) with its first keys.
fn verification_lines(app: &App, j: &Job, now_ms: u64) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if let Some(p) = &j.verifying {
        lines.push(Line::styled(p.clone(), style(app, Color::Cyan)));
    }
    let Some(v) = &j.verification else {
        if lines.is_empty() {
            lines.push(Line::raw("never verified (v verifies)"));
        }
        return lines;
    };
    let bad = v.tables.iter().filter(|t| !t.ok).count();
    let (what, color) = match (&v.error, bad) {
        (Some(e), _) => (format!("did not finish: {e}"), Color::Red),
        (None, 0) => (format!("ok, {} tables equal", v.tables.len()), Color::Green),
        (None, n) => (
            format!("DIFFERENT: {n} of {} tables", v.tables.len()),
            Color::Red,
        ),
    };
    lines.push(Line::from(vec![
        Span::styled(what, style(app, color)),
        Span::raw(format!(
            " ({}{}, {}) {} ago",
            v.level,
            if v.online { ", online" } else { "" },
            v.trigger,
            duration(now_ms.saturating_sub(v.finished_ms) / 1000)
        )),
    ]));
    let mut tables: Vec<_> = v.tables.iter().collect();
    tables.sort_by_key(|t| t.ok);
    for t in tables {
        let keys: Vec<String> = t
            .diffs
            .iter()
            .take(3)
            .map(|d| match d.columns.is_empty() {
                true => format!("{} {}", d.class, d.key),
                false => format!("{} {} ({})", d.class, d.key, d.columns.join(",")),
            })
            .collect();
        let result = if t.ok {
            "ok".to_string()
        } else {
            format!(
                "{}/{} chunks differ  {}",
                t.chunks_differing,
                t.chunks,
                keys.join("; ")
            )
        };
        lines.push(Line::styled(
            format!(
                "{} {}/{} rows  {result}",
                t.table, t.source_rows, t.target_rows
            ),
            if t.ok {
                Style::default()
            } else {
                style(app, Color::Red)
            },
        ));
    }
    lines
}

fn progress(j: &Job) -> String {
    match &j.full {
        Some(f) if f.rows_total > 0 => {
            format!(
                "{:.0}%",
                (f.rows_done as f64 * 100.0 / f.rows_total as f64).min(100.0)
            )
        }
        Some(_) => "100%".into(),
        None => "-".into(),
    }
}

fn detail(frame: &mut Frame, app: &App, job: &Job, area: Rect) {
    let tables = job
        .full
        .as_ref()
        .map_or(0, |f| f.tables.iter().filter(|t| !t.done).count());
    let now = app.status.as_ref().map_or(0, |s: &Status| s.runner.now_ms);
    let verification = verification_lines(app, job, now);
    let [head, gauges, cdc, verify, log] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(if tables > 0 {
            tables.min(6) as u16 + 2
        } else {
            0
        }),
        Constraint::Length(if job.cdc.is_some() { 7 } else { 0 }),
        Constraint::Length(verification.len().min(4) as u16 + 2),
        Constraint::Min(3),
    ])
    .areas(area);
    let mut head_lines = vec![Line::from(vec![
        Span::styled(
            job.name.clone(),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(" ({}) ", job.mode)),
        Span::styled(job.state.to_uppercase(), state_style(app, job)),
        Span::raw(match job.throttle_rows_per_sec {
            0 => String::new(),
            n => format!("  throttled to {n} rows/s"),
        }),
    ])];
    head_lines.push(match &job.reason {
        Some(r) => Line::styled(
            r.lines().next().unwrap_or("").to_string(),
            style(app, Color::Red),
        ),
        None => Line::raw(match (&job.full, &job.sink) {
            (_, Some(sink)) => format!("sink: {sink}"),
            (Some(f), None) => format!(
                "full load {}/{} rows, {}/{} tables done",
                f.rows_done,
                f.rows_total,
                f.tables.iter().filter(|t| t.done).count(),
                f.tables.len()
            ),
            (None, None) => String::new(),
        }),
    });
    frame.render_widget(Paragraph::new(head_lines), head);

    if let Some(f) = job.full.as_ref().filter(|_| tables > 0) {
        let block = Block::default()
            .borders(Borders::ALL)
            .title(" tables loading ");
        let inner = block.inner(gauges);
        frame.render_widget(block, gauges);
        let active: Vec<_> = f.tables.iter().filter(|t| !t.done).take(6).collect();
        for (i, t) in active.iter().enumerate() {
            let row = Rect {
                y: inner.y + i as u16,
                height: 1,
                ..inner
            };
            if row.y >= inner.y + inner.height {
                break;
            }
            let ratio = if t.rows_total > 0 {
                (t.rows_done as f64 / t.rows_total as f64).min(1.0)
            } else {
                0.0
            };
            let eta = t.eta_s.map_or("?".into(), duration);
            let label = format!(
                "{} {}/{} {} rows/s eta {eta}",
                t.name, t.rows_done, t.rows_total, t.rows_per_s
            );
            frame.render_widget(
                Gauge::default()
                    .ratio(ratio)
                    .label(label)
                    .gauge_style(style(app, Color::Blue)),
                row,
            );
        }
    }

    if let Some(c) = &job.cdc {
        let block = Block::default().borders(Borders::ALL).title(" cdc ");
        let inner = block.inner(cdc);
        frame.render_widget(block, cdc);
        let [text, spark] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(inner);
        let mut lines = vec![
            Line::raw(format!("at   {}", c.position)),
            Line::raw(format!(
                "head {}",
                c.source_head.clone().unwrap_or_else(|| "?".into())
            )),
            Line::raw(format!(
                "lag {}s / {} bytes  {} rows/s",
                c.lag_s, c.lag_bytes, c.rows_per_s
            )),
        ];
        if let Some(risk) = &c.retention_risk {
            lines.push(Line::styled(
                format!("RISK: {risk}"),
                style(app, Color::Red),
            ));
        }
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text);
        let [lag, rate] =
            Layout::vertical([Constraint::Length(2), Constraint::Length(3)]).areas(spark);
        let lags: Vec<u64> = c.history.iter().map(|s| s.lag_s).collect();
        let rates: Vec<u64> = c.history.iter().map(|s| s.rows_per_s).collect();
        let tail = |v: &[u64], n: usize| v[v.len().saturating_sub(n)..].to_vec();
        frame.render_widget(
            Sparkline::default()
                .block(Block::default().title("lag"))
                .data(tail(&lags, lag.width as usize))
                .style(style(app, Color::Yellow)),
            lag,
        );
        frame.render_widget(
            Sparkline::default()
                .block(Block::default().title("rows/s"))
                .data(tail(&rates, rate.width as usize))
                .style(style(app, Color::Green)),
            rate,
        );
    }

    frame.render_widget(
        Paragraph::new(verification).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" verification "),
        ),
        verify,
    );

    let shown = log.height.saturating_sub(2) as usize;
    let end = job.events.len().saturating_sub(app.log_scroll);
    let start = end.saturating_sub(shown);
    let lines: Vec<Line> = job.events[start..end]
        .iter()
        .map(|e| {
            let kind_style = match e.kind.as_str() {
                "error" | "retry" => style(app, Color::Red),
                "pause" | "throttle" => style(app, Color::Yellow),
                _ => Style::default(),
            };
            Line::from(vec![
                Span::raw(format!(
                    "{:>8} ago ",
                    duration(now.saturating_sub(e.at_ms) / 1000)
                )),
                Span::styled(format!("{:<8} ", e.kind), kind_style),
                Span::raw(e.message.clone()),
            ])
        })
        .collect();
    let title = if app.log_focus {
        " events (↑↓ scroll) "
    } else {
        " events "
    };
    let mut block = Block::default().borders(Borders::ALL).title(title);
    if app.log_focus {
        block = block.border_style(style(app, Color::Cyan));
    }
    frame.render_widget(Paragraph::new(lines).block(block), log);
}

fn help() -> Paragraph<'static> {
    Paragraph::new(vec![
        Line::raw("↑↓ or j/k   select a job (or scroll the event log when it has the focus)"),
        Line::raw("Enter       the job's detail        Esc  back"),
        Line::raw("p / r       pause / resume the job (at a committed boundary)"),
        Line::raw("t           throttle: rows per second, 0 = unlimited"),
        Line::raw(
            "v           verify now (checksums, online while syncing; the result shows here)",
        ),
        Line::raw("c           cut over a migrate job (asks first)"),
        Line::raw("l           focus the event log      ?    this help"),
        Line::raw("q           detach: the jobs go on running"),
    ])
    .block(Block::default().borders(Borders::ALL).title(" keys "))
}

/// Whole seconds as "1h2m", "3m4s", "5s".
fn duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// Unix milliseconds as HH:MM:SS of the day (UTC).
fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use ferry_proto::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use crate::app::fixtures::{job, status};
    use crate::{Action, App};

    fn render(app: &App, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        t.draw(|f| super::draw(f, app)).expect("draw");
        t.backend().to_string()
    }

    fn half_done_load() -> Job {
        let mut j = job("shop-full", "full", "full_load");
        j.full = Some(FullLoad {
            rows_done: 150_000,
            rows_total: 300_000,
            rows_per_s: 41_000,
            tables: vec![
                Table {
                    name: "shop.customers".into(),
                    rows_done: 50_000,
                    rows_total: 50_000,
                    rows_per_s: 0,
                    eta_s: None,
                    done: true,
                },
                Table {
                    name: "shop.orders".into(),
                    rows_done: 100_000,
                    rows_total: 250_000,
                    rows_per_s: 41_000,
                    eta_s: Some(4),
                    done: false,
                },
            ],
        });
        j
    }

    fn lagging_sync() -> Job {
        let mut j = job("shop-sync", "sync", "syncing");
        j.alert = true;
        j.cdc = Some(Cdc {
            position: "binlog.000004:1200".into(),
            gtid: Some("0-1-99".into()),
            source_head: Some("binlog.000004:98000".into()),
            lag_s: 95,
            lag_bytes: 96_800,
            rows_per_s: 1_200,
            events_per_s: 3_000,
            oldest_binlog: Some("binlog.000001".into()),
            retention_risk: None,
            history: (0..40)
                .map(|i| Sample {
                    at_ms: 1_000_000 + i * 5000,
                    lag_s: i * 2,
                    rows_per_s: 1000 + i * 10,
                })
                .collect(),
        });
        j.verification = Some(Verification {
            started_ms: 1_030_000,
            finished_ms: 1_040_000,
            level: "checksum".into(),
            trigger: "every".into(),
            online: true,
            ok: false,
            error: None,
            note: None,
            tables: vec![
                VerifyTable {
                    table: "shop.orders".into(),
                    target: "shop.orders".into(),
                    source_rows: 250_000,
                    target_rows: 249_999,
                    chunks: 13,
                    chunks_differing: 1,
                    ok: false,
                    truncated: false,
                    duration_ms: 900,
                    diffs: vec![
                        VerifyDiff {
                            class: "missing".into(),
                            key: "id=777".into(),
                            columns: vec![],
                            copies: 1,
                        },
                        VerifyDiff {
                            class: "different".into(),
                            key: "id=778".into(),
                            columns: vec!["status".into()],
                            copies: 1,
                        },
                    ],
                },
                VerifyTable {
                    table: "shop.customers".into(),
                    target: "shop.customers".into(),
                    source_rows: 50_000,
                    target_rows: 50_000,
                    chunks: 3,
                    chunks_differing: 0,
                    ok: true,
                    truncated: false,
                    duration_ms: 200,
                    diffs: vec![],
                },
            ],
            repair: None,
        });
        j
    }

    fn failed() -> Job {
        let mut j = job("billing", "sync", "failed");
        j.alert = true;
        j.reason = Some("source binlog stream at binlog.000002:4: the source purged it".into());
        j
    }

    fn app_with(jobs: Vec<Job>) -> App {
        let mut app = App {
            color: false,
            ..App::default()
        };
        app.update(Action::Status(Box::new(status(jobs))));
        app
    }

    #[test]
    fn overview_frames() {
        let app = app_with(vec![half_done_load(), lagging_sync(), failed()]);
        insta::assert_snapshot!("overview_80x24", render(&app, 80, 24));
        insta::assert_snapshot!("overview_120x40", render(&app, 120, 40));
    }

    #[test]
    fn detail_frames() {
        let mut app = app_with(vec![half_done_load(), lagging_sync(), failed()]);
        app.update(Action::Open);
        insta::assert_snapshot!("detail_full_80x24", render(&app, 80, 24));
        app.update(Action::Back);
        app.update(Action::Down);
        app.update(Action::Open);
        insta::assert_snapshot!("detail_sync_120x40", render(&app, 120, 40));
        insta::assert_snapshot!("detail_sync_80x24", render(&app, 80, 24));
    }

    #[test]
    fn disconnected_frame() {
        let mut app = app_with(vec![lagging_sync()]);
        app.update(Action::Disconnected {
            error: "connection refused".into(),
            retry_in_s: 4,
        });
        insta::assert_snapshot!("disconnected_80x24", render(&app, 80, 24));
    }
}
