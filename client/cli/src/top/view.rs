//! Drawing `pacer top` from a [`Model`]: a pure function of the model and the frame's size,
//! so that it is tested on ratatui's test backend. Sections, top to bottom: the daemon, the
//! budgets (a gauge per limit, what is in flight and waiting, a pause's countdown, sparklines of
//! grants and 429s), the subscription windows, the clients, the latest events. What does not
//! fit is left out from the bottom up, and the last line says so.

use std::time::{Duration, SystemTime};

use pacer_client::StatusSnapshot;
use pacer_protocol::message::{AccountStatus, ClientStatus, WindowStatus};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, LineGauge, Paragraph, Row, Table, Wrap};

use super::budgets::{budget_lines, render_budgets};
use super::model::Model;
use super::text::{count, plural, short};

/// The smallest terminal the view is drawn in.
pub const MIN_WIDTH: u16 = 40;
pub const MIN_HEIGHT: u16 = 8;
pub fn render(frame: &mut Frame, model: &Model) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "pacer top needs {MIN_WIDTH}×{MIN_HEIGHT}; this terminal is {}×{}",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let Some(snapshot) = &model.snapshot else {
        let text = model
            .problem
            .clone()
            .unwrap_or_else(|| "connecting to pacerd…".into());
        frame.render_widget(Paragraph::new(text), area);
        return;
    };
    let plan = Plan::for_area(snapshot, area);
    let [header, budgets, windows, clients, events, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(plan.budgets_height()),
        Constraint::Length(plan.windows_height()),
        Constraint::Length(plan.clients_height()),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(header_line(snapshot, model), header);
    render_budgets(frame, budgets, snapshot, model, plan.budgets);
    if plan.windows > 0 {
        render_windows(frame, windows, snapshot, model.now, plan.windows);
    }
    if plan.clients > 0 {
        render_clients(frame, clients, &snapshot.clients, model.now, plan.clients);
    }
    if events.height >= 3 {
        render_events(frame, events, model);
    }
    frame.render_widget(footer_line(snapshot, model, &plan), footer);
}

/// How many budgets, window lines and clients fit.
struct Plan {
    budgets: usize,
    /// The lines the budgets shown take.
    budget_lines: u16,
    windows: usize,
    clients: usize,
}

impl Plan {
    fn for_area(snapshot: &StatusSnapshot, area: Rect) -> Plan {
        let mut left = area.height.saturating_sub(2) as usize; // header, footer
        let lines: Vec<usize> = snapshot
            .budgets
            .iter()
            .map(|b| budget_lines(b) as usize)
            .collect();
        // The first budget (or the "no budgets" line), then windows, then as many more
        // budgets as two thirds of the rest hold, then clients.
        let first = lines.first().copied().unwrap_or(1);
        left = left.saturating_sub(2 + first);
        let windows = windowed(&snapshot.accounts)
            .count()
            .min(3)
            .min(left.saturating_sub(2));
        if windows > 0 {
            left -= windows + 2;
        }
        let mut room = left * 2 / 3;
        let mut budgets = lines.len().min(1);
        let mut budget_lines = first;
        for &n in lines.iter().skip(1) {
            if n > room {
                break;
            }
            room -= n;
            left -= n;
            budgets += 1;
            budget_lines += n;
        }
        let clients = snapshot.clients.len().min(left.saturating_sub(3));
        Plan {
            budgets,
            budget_lines: budget_lines as u16,
            windows,
            clients,
        }
    }

    fn budgets_height(&self) -> u16 {
        2 + self.budget_lines
    }

    fn windows_height(&self) -> u16 {
        if self.windows == 0 {
            0
        } else {
            2 + self.windows as u16
        }
    }

    fn clients_height(&self) -> u16 {
        if self.clients == 0 {
            0
        } else {
            3 + self.clients as u16
        }
    }
}

fn windowed(accounts: &[AccountStatus]) -> impl Iterator<Item = &AccountStatus> {
    accounts.iter().filter(|a| !a.windows.is_empty())
}

fn header_line<'a>(snapshot: &'a StatusSnapshot, model: &Model) -> Line<'a> {
    let daemon = &snapshot.daemon;
    let up = daemon
        .started_at
        .and_then(|at| model.now.duration_since(at).ok())
        .map_or("-".into(), |up| match up.as_secs() {
            secs @ 0..60 => format!("{secs}s"),
            secs => short(Duration::from_secs(secs / 60 * 60)),
        });
    let waiting: u32 = snapshot.budgets.iter().map(|b| b.waiting).sum();
    let in_flight: u32 = snapshot.budgets.iter().map(|b| b.in_flight).sum();
    let mut spans = vec![
        Span::styled("pacer top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            " · pacerd {} · up {up} · {} · {in_flight} in flight · {waiting} waiting",
            snapshot.daemon_version,
            plural(daemon.connections as usize, "connection")
        )),
    ];
    if let Some(problem) = &model.problem {
        spans.push(Span::styled(format!(" · {problem}"), Color::Red));
    }
    Line::from(spans)
}

fn footer_line<'a>(snapshot: &StatusSnapshot, model: &Model, plan: &Plan) -> Line<'a> {
    let mut text = "q quits".to_owned();
    let hidden = snapshot.budgets.len().saturating_sub(plan.budgets);
    if hidden > 0 {
        let what = if hidden == 1 { "budget" } else { "budgets" };
        text.push_str(&format!(" · {hidden} more {what}"));
    }
    let hidden = snapshot.clients.len().saturating_sub(plan.clients);
    if hidden > 0 {
        let what = if hidden == 1 { "client" } else { "clients" };
        text.push_str(&format!(" · {hidden} more {what}"));
    }
    text.push_str(&format!(" · refreshed every {}", short(model.refresh)));
    Line::from(text).dim()
}

fn render_windows(
    frame: &mut Frame,
    area: Rect,
    snapshot: &StatusSnapshot,
    now: SystemTime,
    shown: usize,
) {
    let block = Block::bordered().title(" subscription windows ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows = Layout::vertical(vec![Constraint::Length(1); shown]).split(inner);
    for (account, row) in windowed(&snapshot.accounts).zip(rows.iter()) {
        let [name, gauges] =
            Layout::horizontal([Constraint::Length(18), Constraint::Fill(1)]).areas(*row);
        frame.render_widget(Line::from(account.owner.to_string()).bold(), name);
        let cells = Layout::horizontal(vec![Constraint::Fill(1); account.windows.len()])
            .spacing(2)
            .split(gauges);
        for (window, cell) in account.windows.iter().zip(cells.iter()) {
            frame.render_widget(window_gauge(window, now), *cell);
        }
    }
}

fn window_gauge(w: &WindowStatus, now: SystemTime) -> LineGauge<'static> {
    let used = w.utilization.unwrap_or(0.0).clamp(0.0, 1.0);
    let mut label = format!("{} {:.0}%", w.name, used * 100.0);
    if crate::status::reset_passed(w, now).is_some() {
        label = format!("{} reset · unknown until the next answer", w.name);
    }
    if let Some(estimated) = w
        .estimated
        .filter(|e| (e - w.utilization.unwrap_or(0.0)).abs() >= 0.005)
    {
        label.push_str(&format!(" ~{:.0}%", estimated * 100.0));
    }
    if let Some(reset) = w.reset.filter(|r| *r > now) {
        label.push_str(&format!(
            " ↻{}",
            short(reset.duration_since(now).unwrap_or_default())
        ));
    }
    // Which priorities the window holds now, and when it runs out at the recent pace.
    let held: Vec<String> = w
        .ceilings
        .iter()
        .filter(|c| c.held)
        .map(|c| c.priority.to_string())
        .collect();
    if !held.is_empty() {
        label.push_str(&format!(" {} held", held.join("+")));
    }
    if let Some(out) = w.runs_out {
        label.push_str(&format!(
            " out in {}",
            short(out.duration_since(now).unwrap_or_default())
        ));
    }
    let color = match used {
        u if u >= 0.9 => Color::Red,
        u if u >= 0.75 => Color::Yellow,
        _ => Color::Green,
    };
    LineGauge::default()
        .ratio(used)
        .label(label)
        .filled_style(Style::new().fg(color))
        .filled_symbol("━")
        .unfilled_symbol("─")
}

fn render_clients(
    frame: &mut Frame,
    area: Rect,
    clients: &[ClientStatus],
    now: SystemTime,
    shown: usize,
) {
    let header = Row::new(["CLIENT", "PRIORITY", "GRANTS", "TOKENS", "WAITING", "SEEN"]).bold();
    let rows = clients.iter().take(shown).map(|c| {
        let waiting = match c.longest_wait {
            Some(longest) if c.waiting > 0 => format!("{} · {}", c.waiting, short(longest)),
            _ => "-".into(),
        };
        let seen = now.duration_since(c.last_seen).unwrap_or_default();
        Row::new([
            c.id.clone(),
            c.priority.to_string(),
            c.granted.to_string(),
            count((c.input_tokens + c.output_tokens) as i64),
            waiting,
            if seen < Duration::from_secs(1) {
                "now".into()
            } else {
                format!("{} ago", short(seen))
            },
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(11),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(8),
        ],
    )
    .header(header)
    .block(Block::bordered().title(" clients "));
    frame.render_widget(table, area);
}

fn render_events(frame: &mut Frame, area: Rect, model: &Model) {
    let block = Block::bordered().title(" events ");
    let inner = block.inner(area);
    let lines: Vec<Line> = model
        .events
        .iter()
        .skip(model.events.len().saturating_sub(inner.height as usize))
        .map(|e| Line::from(e.clone()))
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
