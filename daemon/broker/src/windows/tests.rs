//! The windows table on its own: lengths and titles, pacing, the table's bounds.
use super::*;
use pacer_api::unified::UnifiedWindow;

#[test]
fn accounts_past_the_tables_size_make_room_by_the_least_recently_heard() {
    let mut windows = Windows::new(WindowsConfig::default());
    let t0 = Instant::now();
    let unified = Unified {
        windows: vec![UnifiedWindow {
            name: "5h".into(),
            utilization: Some(0.1),
            ..UnifiedWindow::default()
        }],
        ..Unified::default()
    };
    let owner = |i: usize| Owner::Account(Arc::from(format!("org-{i}")));
    for i in 0..MAX_ACCOUNTS + 10 {
        let at = t0 + Duration::from_millis(i as u64);
        windows.observe(&owner(i), &unified, None, at);
    }
    assert_eq!(windows.accounts.len(), MAX_ACCOUNTS);
    assert!(
        !windows.accounts.contains_key(&owner(0)),
        "the stalest went"
    );
    assert!(windows.accounts.contains_key(&owner(MAX_ACCOUNTS + 9)));
}

#[test]
fn window_lengths_come_from_their_names() {
    assert_eq!(window_length("5h"), Some(Duration::from_secs(5 * 3600)));
    assert_eq!(
        window_length("7d"),
        Some(Duration::from_secs(7 * 24 * 3600))
    );
    assert_eq!(
        window_length("7d_opus"),
        Some(Duration::from_secs(7 * 24 * 3600))
    );
    assert_eq!(window_length("overage"), None);
    assert_eq!(window_length("0h"), None);
    assert_eq!(window_title("7d_opus"), "the weekly opus window");
    assert_eq!(window_title("5h"), "the 5-hour window");
}

#[test]
fn a_weekly_window_half_gone_paces_batch_to_half_its_ceiling() {
    let config = WindowsConfig {
        batch: 0.7,
        pace: true,
        ..WindowsConfig::default()
    };
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let window = Window {
        said: UnifiedWindow {
            name: "7d".into(),
            utilization: Some(0.2),
            reset: Some(wall + Duration::from_secs(7 * 24 * 3600 / 2)),
            ..UnifiedWindow::default()
        },
        ..Window::default()
    };
    let allowed = config.allowed(Priority::Batch, "7d", &window, wall);
    assert!((allowed - 0.35).abs() < 1e-9, "{allowed}");
    assert!(
        config
            .allowed(Priority::Interactive, "7d", &window, wall)
            .is_infinite()
    );
    // A window just started: at least a tenth of the ceiling.
    let mut fresh = window.clone();
    fresh.said.reset = Some(wall + Duration::from_secs(7 * 24 * 3600));
    let allowed = config.allowed(Priority::Batch, "7d", &fresh, wall);
    assert!((allowed - 0.07).abs() < 1e-9, "{allowed}");
}
