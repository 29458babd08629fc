//! `pacer top`: a live full-screen view of the budgets, windows and clients, refreshed from
//! the daemon's status and event stream; `q` (or Esc, Ctrl-C) quits. `--once` prints one frame
//! as text instead (for a capture, or a terminal without a screen to take over).
//!
//! - this file: the command and its loop (keys, status reads, events, a daemon that restarts);
//! - `model`: what is shown, and the history behind the sparklines;
//! - `view`: drawing it (a pure function, tested on ratatui's test backend), with `budgets`
//!   (that section's gauges, sparklines and countdowns) and `text` (numbers in little room).

mod budgets;
mod model;
#[cfg(test)]
mod tests;
mod text;
mod view;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use crossterm::event::{Event as TermEvent, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures_util::StreamExt;
use pacer_client::Client;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use model::Model;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// How often the status is read (seconds, or 500ms, 2s…).
    #[arg(long, default_value = "1", value_parser = crate::args::parse_duration)]
    refresh: Duration,
    /// Print one frame as text and exit (no terminal needed).
    #[arg(long)]
    once: bool,
    /// The size of the `--once` frame, COLSxROWS [default: the terminal's, else 100x30].
    #[arg(long, value_name = "COLSxROWS", value_parser = parse_size)]
    size: Option<(u16, u16)>,
    /// With --once: watch this long first (the sparklines' history, the events), then print.
    #[arg(long, value_name = "DURATION", value_parser = crate::args::parse_duration, requires = "once")]
    after: Option<Duration>,
}

fn parse_size(text: &str) -> Result<(u16, u16), crate::args::BadValue> {
    let bad = || crate::args::BadValue::Size(text.to_owned());
    let (cols, rows) = text.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let parse = |n: &str| {
        n.trim()
            .parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(bad)
    };
    Ok((parse(cols)?, parse(rows)?))
}

pub async fn top(client: &Client, args: TopArgs) -> anyhow::Result<ExitCode> {
    let mut model = Model::new(args.refresh);
    if args.once {
        if let Some(watch_for) = args.after {
            observe(client, &mut model, watch_for).await?;
        }
        model.update(client.status().await?, SystemTime::now());
        let (cols, rows) = args
            .size
            .or_else(|| crossterm::terminal::size().ok())
            .unwrap_or((100, 30));
        crate::out!("{}", frame_text(&model, cols, rows));
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "pacer top needs a terminal; `pacer top --once` prints one frame, `pacer status` a table"
        );
    }
    let mut terminal = ratatui::try_init().context("cannot take over the terminal")?;
    let result = run(&mut terminal, client, model).await;
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

/// One frame of the view as text, `cols` × `rows`.
pub fn frame_text(model: &Model, cols: u16, rows: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(cols, rows)).expect("a test terminal");
    terminal
        .draw(|frame| view::render(frame, model))
        .expect("drawing in memory");
    let mut out = String::new();
    for line in buffer_lines(terminal.backend().buffer()) {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A buffer's rows as text (styles dropped; the cells a wide character covers skipped).
pub fn buffer_lines(buffer: &ratatui::buffer::Buffer) -> Vec<String> {
    buffer
        .content
        .chunks(buffer.area.width as usize)
        .map(|row| {
            let mut line = String::new();
            let mut skip = 0usize;
            for cell in row {
                if skip == 0 {
                    line.push_str(cell.symbol());
                }
                let width = unicode_width(cell.symbol());
                skip = skip.max(width).saturating_sub(1);
            }
            line
        })
        .collect()
}

/// Columns a symbol takes: the double-width ranges a terminal draws wide, else one.
fn unicode_width(symbol: &str) -> usize {
    symbol
        .chars()
        .next()
        .map_or(1, |c| if is_wide(c) { 2 } else { 1 })
}

fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF | 0x20000..=0x3FFFD)
}

async fn run(
    terminal: &mut ratatui::DefaultTerminal,
    client: &Client,
    mut model: Model,
) -> anyhow::Result<()> {
    let mut keys = EventStream::new();
    let mut refresh = tokio::time::interval(model.refresh);
    let mut events = client.subscribe().await.ok();
    loop {
        terminal.draw(|frame| view::render(frame, &model))?;
        tokio::select! {
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(key))) if key.kind == KeyEventKind::Press => {
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            _ = refresh.tick() => match client.status().await {
                Ok(snapshot) => {
                    model.update(snapshot, SystemTime::now());
                    if events.is_none() {
                        events = client.subscribe().await.ok();
                    }
                }
                Err(e) => {
                    model.lost(format!("pacerd is not answering ({e}); retrying"));
                    events = None;
                }
            },
            event = next_event(&mut events) => match event {
                Some(event) => {
                    let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                    model.event(&event, &at[11..19]);
                }
                None => events = None,
            },
        }
    }
}

/// Reads the status every refresh and takes in the events, for `watch_for`.
async fn observe(client: &Client, model: &mut Model, watch_for: Duration) -> anyhow::Result<()> {
    let mut events = Some(client.subscribe().await?);
    let mut refresh = tokio::time::interval(model.refresh);
    let end = tokio::time::sleep(watch_for);
    tokio::pin!(end);
    loop {
        tokio::select! {
            () = &mut end => return Ok(()),
            _ = refresh.tick() => model.update(client.status().await?, SystemTime::now()),
            event = next_event(&mut events) => match event {
                Some(event) => {
                    let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                    model.event(&event, &at[11..19]);
                }
                None => events = None,
            },
        }
    }
}

/// The next event, or never while there is no subscription.
async fn next_event(
    events: &mut Option<pacer_client::Subscription>,
) -> Option<pacer_client::Event> {
    match events {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}
