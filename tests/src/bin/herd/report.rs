//! What the herd prints (a table, or JSON) and draws (the grants over time).

use std::path::PathBuf;
use std::time::Duration;

use pacer_tests::bench::{ms, table};
use serde_json::json;

use super::{Args, Outcome, Scenario};

pub fn report(args: &Args, outcomes: &[Outcome]) {
    if args.json {
        for o in outcomes {
            let mut line = json!({
                "strategy": o.strategy.name(),
                "ok": o.ok,
                "failed": o.failed,
                "upstream_429": o.upstream_429,
                "goodput": (o.goodput * 1000.0).round() / 1000.0,
                "p50_ms": o.p50.as_millis() as u64,
                "p99_ms": o.p99.as_millis() as u64,
                "jain": (o.jain * 1000.0).round() / 1000.0,
            });
            if let Some((p50, p99, failed)) = o.interactive {
                line["interactive_p50_ms"] = json!(p50.as_millis() as u64);
                line["interactive_p99_ms"] = json!(p99.as_millis() as u64);
                line["interactive_failed"] = json!(failed);
            }
            if !o.per_daemon.is_empty() {
                line["per_daemon"] = json!(o.per_daemon);
                line["share_spread"] = json!((spread(&o.per_daemon) * 1000.0).round() / 1000.0);
            }
            println!("{line}");
        }
        return;
    }
    println!(
        "herd: {} clients, {} s, {} rpm / {} itpm / {} otpm, {} ms latency, scenario {:?}, limits {}{}",
        args.clients,
        args.duration,
        args.rpm,
        args.itpm,
        args.otpm,
        args.latency_ms,
        args.scenario,
        if args.configured {
            "configured"
        } else {
            "learned"
        },
        match (args.daemons, args.redis) {
            (1, false) => String::new(),
            (n, false) => format!(", {n} daemons alone"),
            (n, true) => format!(", {n} daemons sharing through Redis"),
        }
    );
    let mixed = args.scenario == Scenario::Mixed;
    let mut header = vec![
        "strategy",
        "ok",
        "failed",
        "upstream 429",
        "goodput",
        "p50 ms",
        "p99 ms",
        "jain",
    ];
    let several = outcomes.iter().any(|o| !o.per_daemon.is_empty());
    if several {
        header.extend(["per daemon", "spread"]);
    }
    if mixed {
        header.extend([
            "interactive p50 ms",
            "interactive p99 ms",
            "interactive failed",
        ]);
    }
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let mut row = vec![
                o.strategy.name().to_owned(),
                o.ok.to_string(),
                o.failed.to_string(),
                o.upstream_429.to_string(),
                format!("{:.3}", o.goodput),
                ms(o.p50),
                ms(o.p99),
                format!("{:.3}", o.jain),
            ];
            if several {
                match o.per_daemon.as_slice() {
                    [] => row.extend(["-".to_owned(), "-".to_owned()]),
                    shares => row.extend([
                        shares
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join("/"),
                        format!("{:.1} %", spread(shares) * 100.0),
                    ]),
                }
            }
            if let Some((p50, p99, failed)) = o.interactive {
                row.extend([ms(p50), ms(p99), failed.to_string()]);
            }
            row
        })
        .collect();
    print!("{}", table(&header, &rows));
}

/// One panel per strategy: accepted requests/s and 429s/s over time, against the limit.
pub fn plot(args: &Args, outcomes: &[Outcome]) -> anyhow::Result<PathBuf> {
    use plotters::prelude::*;

    std::fs::create_dir_all(&args.plot_dir)?;
    let scenario = match args.scenario {
        Scenario::Uniform => "uniform",
        Scenario::Mixed => "mixed",
    };
    let path = args.plot_dir.join(format!("herd-{scenario}.svg"));
    let seconds = args.duration.ceil() as usize + 5;
    let per_second = |timeline: &[(Duration, u16)], accepted: bool| -> Vec<(f64, f64)> {
        let mut counts = vec![0u32; seconds + 1];
        for (at, status) in timeline {
            let second = (at.as_secs() as usize).min(seconds);
            if (*status == 200) == accepted && (accepted || *status == 429) {
                counts[second] += 1;
            }
        }
        counts
            .iter()
            .enumerate()
            .map(|(s, &c)| (s as f64 + 0.5, c as f64))
            .collect()
    };
    // Scaled to the 429s and the limit: the start-up burst (a full bucket) runs off the top.
    let peak = outcomes
        .iter()
        .flat_map(|o| per_second(&o.timeline, false).into_iter().map(|(_, y)| y))
        .fold(args.rpm as f64 / 60.0 * 4.0, f64::max);
    let limit = args.rpm as f64 / 60.0;
    let target = path.clone();
    let root = SVGBackend::new(&target, (1200, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "herd ({scenario}): {} clients, {} rpm, {} ms latency — accepted/s (blue), 429/s (red), limit (black); start-up burst clipped",
        args.clients, args.rpm, args.latency_ms
    );
    let root = root.titled(&title, ("sans-serif", 18))?;
    let panels = root.split_evenly((2, 2));
    for (panel, outcome) in panels.iter().zip(outcomes) {
        let mut chart = ChartBuilder::on(panel)
            .caption(outcome.strategy.name(), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..seconds as f64, 0f64..peak * 1.1)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("requests / s")
            .draw()?;
        chart.draw_series(LineSeries::new(per_second(&outcome.timeline, true), &BLUE))?;
        chart.draw_series(LineSeries::new(per_second(&outcome.timeline, false), &RED))?;
        chart.draw_series(LineSeries::new(
            [(0.0, limit), (seconds as f64, limit)],
            BLACK.stroke_width(1),
        ))?;
    }
    root.present()?;
    Ok(path)
}

/// The largest share's distance from the mean share, as a fraction of the mean.
fn spread(shares: &[u64]) -> f64 {
    let mean = shares.iter().sum::<u64>() as f64 / shares.len().max(1) as f64;
    if mean == 0.0 {
        return 0.0;
    }
    shares
        .iter()
        .map(|&n| (n as f64 - mean).abs() / mean)
        .fold(0.0, f64::max)
}
