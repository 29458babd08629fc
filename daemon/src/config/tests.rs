use super::*;
use pacer_protocol::KeyFingerprint;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/pacer.toml"))
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn an_empty_file_is_the_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config.broker, BrokerConfig::default());
}

#[test]
fn a_full_file() {
    let text = r#"
[[classes]]
pattern = "claude-3-7-*"
class = "sonnet"

[limits.sonnet]
rpm = 50
itpm = 30000
otpm = 8000
max_in_flight = 8

[keys.0123456789abcdef.limits.sonnet]
rpm = 4000
"#;
    let config = parse(text).unwrap();
    let broker = &config.broker;
    assert_eq!(broker.classes.classify("claude-3-7-foo"), "sonnet");
    let key: KeyFingerprint = "0123456789abcdef".parse().unwrap();
    let limits = broker.limits.for_budget(key, "sonnet");
    assert_eq!(limits.rpm, Some(4000));
    assert_eq!(limits.itpm, Some(30_000));
    assert_eq!(limits.max_in_flight, Some(8));
    assert_eq!(
        broker
            .limits
            .for_budget(KeyFingerprint::of("x"), "sonnet")
            .rpm,
        Some(50)
    );
}

#[test]
fn a_misspelt_key_is_named_with_its_line() {
    let e = error("[limits.sonnet]\nrpm = 50\nrmp = 10\n");
    assert!(e.contains("/etc/pacer.toml"), "{e}");
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("rmp"), "{e}");
}

#[test]
fn a_zero_limit_is_refused() {
    let e = error("[limits.opus]\n\nitpm = 0\n");
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("limits.opus.itpm"), "{e}");
    assert!(e.contains("nonzero"), "{e}");
}

#[test]
fn an_absurd_limit_is_refused() {
    let e = error("[limits.opus]\nrpm = 18446744073709551615\n");
    assert!(
        e.contains("limits.opus.rpm") && e.contains("at most"),
        "{e}"
    );
}

#[test]
fn a_wrong_type_is_refused() {
    let e = error("[limits.opus]\nrpm = \"fast\"\n");
    assert!(e.contains("line 2"), "{e}");
    assert!(e.contains("limits.opus.rpm"), "{e}");
}

#[test]
fn a_bad_fingerprint_is_refused() {
    let e = error("\n[keys.sk-ant-123.limits.sonnet]\nrpm = 1\n");
    assert!(e.contains("line 2"), "{e}");
    assert!(e.contains("16 hexadecimal"), "{e}");
}

#[test]
fn an_empty_class_name_is_refused() {
    let e = error("[[classes]]\npattern = \"gpt-*\"\nclass = \" \"\n");
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("classes[0].class"), "{e}");
}

#[test]
fn gateway_settings() {
    let config = parse("[gateway]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://localhost:9000/api\"\nmax_hold = 1.5\n").unwrap();
    assert_eq!(config.gateway.listen, Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(
        config.gateway.upstream.as_str(),
        "http://localhost:9000/api"
    );
    assert_eq!(config.gateway.max_hold, Duration::from_millis(1500));
    let disabled = parse("[gateway]\nenabled = false\n").unwrap();
    assert_eq!(disabled.gateway.listen, None);
    assert_eq!(parse("").unwrap().gateway, GatewayConfig::default());
}

#[test]
fn bad_gateway_settings_are_named() {
    let e = error("[gateway]\nlisten = \"localhost\"\n");
    assert!(e.contains("gateway.listen") && e.contains("IP:PORT"), "{e}");
    let e = error("[gateway]\nupstream = \"ftp://x\"\n");
    assert!(e.contains("gateway.upstream"), "{e}");
    let e = error("[gateway]\nmax_hold = -1\n");
    assert!(e.contains("gateway.max_hold"), "{e}");
}

#[test]
fn state_and_log_settings() {
    let config = parse("[state]\nfile = \"/var/lib/pacer/state\"\n[log]\ndir = \"/var/log/pacer\"\nfilter = \"debug\"\n").unwrap();
    assert_eq!(
        config.state_file,
        Some(PathBuf::from("/var/lib/pacer/state"))
    );
    assert_eq!(config.log.dir, Some(PathBuf::from("/var/log/pacer")));
    assert_eq!(config.log.filter.as_deref(), Some("debug"));
    let off = parse("[state]\nenabled = false\n[log]\nenabled = false\n").unwrap();
    assert_eq!((off.state_file, off.log.dir), (None, None));
    let e = error("[log]\nfilter = \"info,[[\"\n");
    assert!(e.contains("log.filter"), "{e}");
}

#[test]
fn accounts_settings() {
    let config = parse("[accounts]\ngroup_by = \"key\"\n[keys.0123456789abcdef]\naccount = \"team\"\n[gateway]\nmax_hold = 30\n").unwrap();
    let accounts = &config.broker.accounts;
    assert!(!accounts.by_organization);
    let key: KeyFingerprint = "0123456789abcdef".parse().unwrap();
    assert_eq!(accounts.tied.get(&key).map(String::as_str), Some("team"));
    assert_eq!(config.broker.max_hold, Duration::from_secs(30));
    assert!(parse("").unwrap().broker.accounts.by_organization);
    let e = error("[accounts]\ngroup_by = \"team\"\n");
    assert!(e.contains("accounts.group_by"), "{e}");
    let e = error("[keys.0123456789abcdef]\naccount = \"org-x\"\n");
    assert!(e.contains("reserved"), "{e}");
    let e = error("[keys.0123456789abcdef]\naccount = \"my team\"\n");
    assert!(e.contains("keys.0123456789abcdef.account"), "{e}");
}

#[test]
fn every_mistake_is_reported_at_once() {
    let text = "[limits.sonnet]\nrmp = 50\n\n[gateway]\nlisten = \"localhost\"\n\n[limits.opus]\nitpm = 0\n\n[oops]\nx = 1\n";
    let e = error(text);
    assert!(e.contains("4 mistakes"), "{e}");
    for part in [
        "line 2, key `limits.sonnet.rmp`",
        "line 5, key `gateway.listen`",
        "line 8, key `limits.opus.itpm`",
        "line 10, key `oops`: unknown section",
    ] {
        assert!(e.contains(part), "no `{part}` in {e}");
    }
}

#[test]
fn a_class_no_model_maps_to_is_refused() {
    let e = error("[limits.sonet]\nrpm = 5\n");
    assert!(e.contains("line 1, key `limits.sonet`"), "{e}");
    assert!(e.contains("did you mean `sonnet`?"), "{e}");
    let e = error("[keys.0123456789abcdef.limits.hiaku]\nrpm = 5\n");
    assert!(e.contains("keys.0123456789abcdef.limits.hiaku"), "{e}");
    // Declared classes and model names (classes of their own) are fine.
    parse("[[classes]]\npattern = \"gpt-*\"\nclass = \"openai\"\n[limits.openai]\nrpm = 5\n[limits.\"gpt-4o\"]\nrpm = 1\n[limits.Sonnet]\nrpm = 2\n").unwrap();
}

#[test]
fn durations_take_units_as_on_the_command_line() {
    let config = parse("[gateway]\nmax_hold = \"4m\"\n").unwrap();
    assert_eq!(config.gateway.max_hold, Duration::from_secs(240));
    let config = parse("[gateway]\nmax_hold = 90\n").unwrap();
    assert_eq!(config.gateway.max_hold, Duration::from_secs(90));
    let e = error("[gateway]\nmax_hold = \"soon\"\n");
    assert!(
        e.contains("gateway.max_hold") && e.contains("`soon`"),
        "{e}"
    );
    let e = error("[gateway]\nmax_hold = \"0s\"\n");
    assert!(e.contains("gateway.max_hold"), "{e}");
}

#[test]
fn broken_toml_is_refused_with_its_line() {
    let e = error("[limits.sonnet]\nrpm = = 5\n");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn an_explicit_missing_file_is_an_error_but_the_default_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = Config::load(Some(&missing)).unwrap_err().to_string();
    assert!(e.contains("nope.toml"), "{e}");
}

#[cfg(unix)]
#[test]
fn a_redis_password_file_every_user_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "s3cret\n").unwrap();
    let toml = format!(
        "[cluster]\nredis = \"redis://127.0.0.1:6379\"\npassword_file = \"{}\"\n",
        file.display()
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let message = error(&toml);
    assert!(
        message.contains("mode 0644") && message.contains("chmod 600"),
        "{message}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = parse(&toml).unwrap();
    assert_eq!(config.cluster.password.as_deref(), Some("s3cret"));
}

#[test]
fn the_gateways_body_memory_takes_sizes_with_units() {
    let config = parse("[gateway]\nmax_buffered = \"64MiB\"\n").unwrap();
    assert_eq!(config.gateway.max_buffered, 64 << 20);
    assert_eq!(
        parse("").unwrap().gateway.max_buffered,
        crate::config::DEFAULT_MAX_BUFFERED
    );
    assert!(error("[gateway]\nmax_buffered = \"lots\"\n").contains("max_buffered"));
    assert!(error("[gateway]\nmax_buffered = 12\n").contains("between 1MiB"));
}

#[test]
fn every_mistake_within_one_table_is_named() {
    let text = "[limits.sonnet]\nrpm = \"fifty\"\nitpm = 1.5\n\n[gateway]\nlisten = 4141\nenabled = \"yes\"\n";
    let message = error(text);
    for key in [
        "limits.sonnet.rpm",
        "limits.sonnet.itpm",
        "gateway.listen",
        "gateway.enabled",
    ] {
        assert!(message.contains(key), "{key} missing from: {message}");
    }
    assert!(message.contains("4 mistakes"), "{message}");
}

#[test]
fn an_unreadable_file_says_its_os_error_once() {
    let message = Config::load(Some(Path::new("/nonexistent/pacer.toml")))
        .unwrap_err()
        .to_string();
    assert_eq!(message.matches("No such file").count(), 1, "{message}");
    assert!(
        std::error::Error::source(
            &Config::load(Some(Path::new("/nonexistent/x.toml"))).unwrap_err()
        )
        .is_none()
    );
}

#[test]
fn windows_settings_are_read_and_checked() {
    let config =
        parse("[windows]\nbatch = \"70%\"\npace = true\noverage = [\"interactive\", \"normal\"]\n")
            .unwrap();
    let windows = &config.broker.windows;
    assert!((windows.batch - 0.7).abs() < 1e-9);
    assert!(windows.pace);
    assert_eq!(windows.overage.len(), 2);
    assert!(
        error("[windows]\nbatch = 0.9\nnormal = 0.5\n").contains("may not bring a window further")
    );
    assert!(error("[windows]\nbatch = 1.5\n").contains("windows.batch"));
    assert!(error("[windows]\noverage = [\"everyone\"]\n").contains("not a priority"));
    // A normal set below batch's default brings batch down with it.
    let config = parse("[windows]\nnormal = 0.5\n").unwrap();
    assert!((config.broker.windows.batch - 0.5).abs() < 1e-9);
}

#[test]
fn alerts_and_caps_are_read_and_bad_values_named() {
    let config = parse(
        r#"
[windows.max_share]
nightly = "10%"

[alerts]
thresholds = [0.9, "75%"]
command = "notify.sh"
webhook = "https://hooks.example.com/T0/B0"
slack = true
pause_over = "2m"
runaway_per_hour = 0.25
"#,
    )
    .unwrap();
    assert_eq!(
        config.broker.windows.max_share_of("nightly/3f2a"),
        Some(0.1)
    );
    let alerts = &config.alerts;
    assert_eq!(alerts.thresholds, [0.75, 0.9]);
    assert_eq!(alerts.command.as_deref(), Some("notify.sh"));
    assert!(alerts.slack && alerts.enabled() && !alerts.desktop);
    assert_eq!(alerts.pause_over, Duration::from_secs(120));
    assert_eq!(alerts.runaway_per_hour, Some(0.25));
    assert!(!AlertsConfig::default().enabled());
    for (text, named) in [
        ("[alerts]\nthresholds = [1.5]\n", "alerts.thresholds"),
        ("[alerts]\nwebhook = \"ftp://x\"\n", "alerts.webhook"),
        ("[alerts]\nmax_per_minute = 0\n", "alerts.max_per_minute"),
        ("[alerts]\nsound = true\n", "sound"),
        ("[windows.max_share]\nnightly = 2\n", "windows.max_share"),
        ("[alerts]\nthresholds = []\n", "alerts.thresholds"),
        ("[alerts]\nslack = true\n", "alerts.slack"),
    ] {
        let message = error(text);
        assert!(message.contains(named), "{text}: {message}");
    }
}
