//! Checks across sections, once the file is read: limits only for classes some model maps to.

use super::raw::RawConfig;
use super::read::Reader;

/// Limits for a class no model maps to are a mistake (`[limits.sonet]`): a class is one of the
/// defaults, one `[[classes]]` names, or a full model name (a class of its own), which has a
/// digit, `-`, `.` or `/` in it.
pub fn check_classes(raw: &RawConfig, text: &str, reader: &mut Reader<'_>) {
    let known = raw.known_classes();
    let looks_like_a_model =
        |name: &str| name.contains(|c: char| c.is_ascii_digit() || matches!(c, '-' | '.' | '/'));
    let classes = raw
        .limits
        .keys()
        .map(|class| (format!("limits.{}", class.0), class.0.as_str()))
        .chain(raw.keys.iter().flat_map(|(key, entry)| {
            entry
                .limits
                .keys()
                .map(move |class| (format!("keys.{key}.limits.{}", class.0), class.0.as_str()))
        }));
    for (path, class) in classes {
        let lower = class.to_ascii_lowercase();
        if known.iter().any(|k| k.eq_ignore_ascii_case(class)) || looks_like_a_model(&lower) {
            continue;
        }
        let closest = known
            .iter()
            .min_by_key(|k| edit_distance(k, &lower))
            .filter(|k| edit_distance(k, &lower) <= 2);
        let hint = closest.map_or(String::new(), |k| format!(" (did you mean `{k}`?)"));
        let offset = text.find(&format!(
            "{}]",
            path.rsplit_once('.').map_or(class, |(_, c)| c)
        ));
        reader.problem(
            offset,
            path,
            format!(
                "no model maps to the class `{class}`{hint}: the classes are {}, any a \
                 [[classes]] entry names, or a full model name",
                known.join(", ")
            ),
        );
    }
}

/// How many single-character edits turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// `[alerts]`: a list of thresholds to tell, and Slack's format only with a webhook to send it to.
pub fn check_alerts(raw: &RawConfig, text: &str, reader: &mut Reader<'_>) {
    let Some(alerts) = &raw.alerts else {
        return;
    };
    if alerts.thresholds.as_ref().is_some_and(Vec::is_empty) {
        reader.problem(
            text.find("thresholds"),
            "alerts.thresholds",
            "is empty: list the window shares to tell of (0.75, 0.9, 1.0), or leave it out for \
             those"
                .into(),
        );
    }
    if alerts.slack == Some(true) && alerts.webhook.is_none() {
        reader.problem(
            text.find("slack"),
            "alerts.slack",
            "asks for Slack's format, but no webhook is set to post it to".into(),
        );
    }
}

/// `[windows]`: batch may not bring a window further than normal work may.
pub fn check_windows(raw: &RawConfig, text: &str, reader: &mut Reader<'_>) {
    let Some(windows) = &raw.windows else {
        return;
    };
    if let (Some(batch), Some(normal)) = (windows.batch, windows.normal)
        && batch.0 > normal.0
    {
        reader.problem(
            text.find("batch"),
            "windows.batch",
            format!(
                "batch ({}) may not bring a window further than normal work ({}): lower batch, \
                 or raise normal",
                batch.0, normal.0
            ),
        );
    }
}
