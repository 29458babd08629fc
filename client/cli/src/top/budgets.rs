//! The budgets section of `pacer top`: per budget its line (in flight, waiting, drain), a gauge
//! per limit, sparklines of grants and 429s, and a pause's countdown.

use std::time::SystemTime;

use pacer_client::StatusSnapshot;
use pacer_protocol::message::{BudgetStatus, PauseCause};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, LineGauge, Paragraph, Sparkline};

use super::model::{History, Model};
use super::text::{of_limit, short};

/// Lines a budget takes: its line, its gauges, its sparklines, and its pause if it has one.
pub(super) fn budget_lines(b: &BudgetStatus) -> u16 {
    if b.paused_until.is_some() || b.overloaded_until.is_some() {
        4
    } else {
        3
    }
}

pub(super) fn render_budgets(
    frame: &mut Frame,
    area: Rect,
    snapshot: &StatusSnapshot,
    model: &Model,
    shown: usize,
) {
    let block = Block::bordered().title(" budgets ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if snapshot.budgets.is_empty() {
        let text = "no budgets yet: one appears with the first call for a key and model class";
        frame.render_widget(Paragraph::new(text), inner);
        return;
    }
    let heights = snapshot
        .budgets
        .iter()
        .take(shown)
        .map(|b| Constraint::Length(budget_lines(b)));
    let rows = Layout::vertical(heights).split(inner);
    for (budget, row) in snapshot.budgets.iter().zip(rows.iter()) {
        let empty = History::default();
        let history = model.history.get(&budget.budget).unwrap_or(&empty);
        render_budget(frame, *row, budget, history, model.now);
    }
}

fn render_budget(
    frame: &mut Frame,
    area: Rect,
    b: &BudgetStatus,
    history: &History,
    now: SystemTime,
) {
    let lines = Layout::vertical(vec![Constraint::Length(1); budget_lines(b) as usize]).split(area);
    let (title, gauges, sparks) = (lines[0], lines[1], lines[2]);
    frame.render_widget(budget_line(b), title);
    if let (Some(line), Some(pause)) = (pause_line(b, now), lines.get(3)) {
        frame.render_widget(line, *pause);
    }
    let limits: Vec<(&str, u64, i64)> = [
        ("rpm", b.limits.rpm, b.available.requests),
        ("itpm", b.limits.itpm, b.available.input_tokens),
        ("otpm", b.limits.otpm, b.available.output_tokens),
    ]
    .into_iter()
    .filter_map(|(name, limit, available)| Some((name, limit?, available.unwrap_or(0))))
    .collect();
    if limits.is_empty() {
        let text = "  no limit known yet: learned from the first answer's headers";
        frame.render_widget(Line::from(text).dim(), gauges);
    } else {
        let cells = Layout::horizontal(vec![Constraint::Fill(1); limits.len()])
            .spacing(2)
            .split(gauges.inner(ratatui::layout::Margin::new(1, 0)));
        for ((name, limit, available), cell) in limits.into_iter().zip(cells.iter()) {
            let ratio = (available as f64 / limit as f64).clamp(0.0, 1.0);
            let color = if ratio < 0.1 {
                Color::Red
            } else {
                Color::Green
            };
            let gauge = LineGauge::default()
                .ratio(ratio)
                .label(format!("{name} {}", of_limit(available, limit)))
                .filled_style(Style::new().fg(color))
                .filled_symbol("━")
                .unfilled_symbol("─");
            frame.render_widget(gauge, *cell);
        }
    }
    let [g_label, g_spark, l_label, l_spark] = Layout::horizontal([
        Constraint::Length(9),
        Constraint::Fill(1),
        Constraint::Length(6),
        Constraint::Fill(1),
    ])
    .areas(sparks);
    frame.render_widget(Line::from("  grants ").dim(), g_label);
    frame.render_widget(
        sparkline(&history.grants, g_spark.width, Color::Cyan),
        g_spark,
    );
    frame.render_widget(Line::from(" 429s ").dim(), l_label);
    frame.render_widget(
        sparkline(&history.limited, l_spark.width, Color::Red),
        l_spark,
    );
}

/// The newest `width` values, on a scale of their own.
fn sparkline(
    series: &std::collections::VecDeque<u64>,
    width: u16,
    color: Color,
) -> Sparkline<'static> {
    let tail: Vec<u64> = series
        .iter()
        .skip(series.len().saturating_sub(width as usize))
        .copied()
        .collect();
    let max = tail.iter().copied().max().unwrap_or(0).max(1);
    Sparkline::default()
        .data(tail)
        .max(max)
        .style(Style::new().fg(color))
}

fn budget_line(b: &BudgetStatus) -> Line<'static> {
    let mut spans = vec![Span::styled(
        format!("{}/{}", b.budget.owner, b.budget.model_class),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    let in_flight = match b.limits.max_in_flight {
        Some(max) => format!("{}/{max}", b.in_flight),
        None => b.in_flight.to_string(),
    };
    spans.push(Span::raw(format!(
        "  in flight {in_flight}  waiting {}",
        b.waiting
    )));
    if b.waiting > 0 {
        let [i, n, batch] = b.waiting_by_priority;
        spans.push(Span::raw(format!(" (i{i} n{n} b{batch})")));
        if let Some(drain) = b.drain_estimate {
            spans.push(Span::raw(format!(" drains ~{}", short(drain))));
        }
    }
    if b.throttled.bare > 0 {
        // Bare 429s held their own request only: shown apart from the ones that pause.
        spans.push(Span::raw(format!("  bare 429s {}", b.throttled.bare)).dim());
    }
    Line::from(spans)
}

/// `PAUSED 429 12s more: <the API's message>` or the 529 backoff, for a budget that has one.
fn pause_line(b: &BudgetStatus, now: SystemTime) -> Option<Line<'static>> {
    let style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
    if let Some(until) = b.paused_until {
        let left = until.duration_since(now).unwrap_or_default();
        let cause = b.pause_cause.map_or("PAUSED", |c| match c {
            PauseCause::RateLimited => "PAUSED 429",
            PauseCause::Administrator => "PAUSED by hand",
            PauseCause::Lockout => "LOCKED OUT",
        });
        let reason = b.pause_reason.as_deref().unwrap_or("");
        return Some(Line::styled(
            format!("  {cause} {} more: {reason}", short(left)),
            style,
        ));
    }
    let until = b.overloaded_until?;
    let left = until.duration_since(now).unwrap_or_default();
    Some(Line::styled(
        format!(
            "  529 BACKOFF {} more: the model class is overloaded",
            short(left)
        ),
        style,
    ))
}
