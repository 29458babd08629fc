//! The benchmark binaries run and print their tables (tiny durations: this checks that they
//! work, not their figures — those are for BENCHMARKS.md, from release builds).

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{bin} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn herd_runs_every_strategy_and_draws_its_plot() {
    let dir = tempfile::tempdir().unwrap();
    let plots = dir.path().to_str().unwrap();
    let common = [
        "--duration",
        "2",
        "--clients",
        "4",
        "--rpm",
        "600",
        "--latency-ms",
        "5",
        "--plot-dir",
        plots,
    ];
    let table = run(env!("CARGO_BIN_EXE_herd"), &common);
    for name in [
        "strategy",
        "sdk-retry",
        "retry-after",
        "pacer-ipc",
        "pacer-gateway",
        "goodput",
        "jain",
    ] {
        assert!(table.contains(name), "{name} missing from\n{table}");
    }
    assert!(dir.path().join("herd-uniform.svg").exists());

    let mut mixed: Vec<&str> = common.to_vec();
    mixed.extend(["--scenario", "mixed", "--json"]);
    let lines = run(env!("CARGO_BIN_EXE_herd"), &mixed);
    let objects: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 4);
    for o in &objects {
        for key in [
            "strategy",
            "ok",
            "failed",
            "upstream_429",
            "goodput",
            "p50_ms",
            "p99_ms",
            "jain",
            "interactive_p99_ms",
        ] {
            assert!(o.get(key).is_some(), "{key} missing from {o}");
        }
    }
    let svg = std::fs::read_to_string(dir.path().join("herd-mixed.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("pacer-gateway"));
}

#[test]
fn ipc_bench_prints_latency_throughput_and_memory() {
    let table = run(
        env!("CARGO_BIN_EXE_ipc-bench"),
        &[
            "--duration",
            "0.2",
            "--clients",
            "1,4",
            "--rates",
            "500",
            "--paced-clients",
            "4",
            "--memory-clients",
            "10",
            "--waiters-per-client",
            "2",
        ],
    );
    for text in [
        "machine floor",
        "permits/s",
        "p99.9 µs",
        "offered/s",
        "RSS MiB",
        "20 waiters",
    ] {
        assert!(table.contains(text), "{text} missing from\n{table}");
    }
}

#[test]
fn gateway_bench_prints_the_added_latency() {
    let table = run(env!("CARGO_BIN_EXE_gateway-bench"), &["--requests", "20"]);
    for text in [
        "direct",
        "gateway",
        "added by the gateway",
        "first byte p50 ms",
    ] {
        assert!(table.contains(text), "{text} missing from\n{table}");
    }
}
