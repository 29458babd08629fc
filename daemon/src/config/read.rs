//! Reading the file: each section (and each class, each key) on its own, collecting every
//! mistake with its line and key, so that one reading of the error fixes the whole file.

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::raw::RawConfig;
use super::values::{Name, fingerprint};
use super::{Problem, SECTIONS};

/// The problems found so far, with the text they are in (for line numbers).
pub struct Reader<'a> {
    text: &'a str,
    pub problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Self {
        Reader {
            text,
            problems: Vec::new(),
        }
    }

    /// Notes a problem at byte `offset` of the text.
    pub fn problem(&mut self, offset: Option<usize>, key: impl Into<String>, message: String) {
        let line = offset.map_or(1, |at| {
            self.text[..at.min(self.text.len())].matches('\n').count() + 1
        });
        self.problems.push(Problem {
            line,
            key: key.into(),
            message,
        });
    }

    /// Reads `value` as a `T`; a problem is noted (under `prefix`) if it is not one. In a table,
    /// every key with a mistake is named, not only the first (`rpm = "fifty"` and `itpm = 1.5`
    /// are two problems).
    fn take<T: DeserializeOwned>(
        &mut self,
        prefix: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Option<T> {
        let start = value.span().start;
        let whole = value.clone();
        let error = match serde_path_to_error::deserialize(ValueDeserializer::from(value)) {
            Ok(value) => return Some(value),
            Err(e) => e,
        };
        // Each key on its own, for the mistakes the first one hid. (A key alone may lack the
        // fields it needs beside it: those complaints are not mistakes of its own.)
        if let DeValue::Table(table) = whole.get_ref()
            && table.len() > 1
        {
            let mut found = Vec::new();
            for (key, item) in table.iter() {
                let mut one = DeTable::new();
                one.insert(key.clone(), item.clone());
                let single = Spanned::new(whole.span(), DeValue::Table(one));
                if let Err(e) =
                    serde_path_to_error::deserialize::<_, T>(ValueDeserializer::from(single))
                    && !e.inner().message().starts_with("missing field")
                {
                    found.push(e);
                }
            }
            if !found.is_empty() {
                for e in found {
                    self.report(prefix, e, start);
                }
                return None;
            }
        }
        self.report(prefix, error, start);
        None
    }

    fn report(
        &mut self,
        prefix: &str,
        e: serde_path_to_error::Error<toml::de::Error>,
        start: usize,
    ) {
        let inner_path = e.path().to_string();
        let key = match inner_path.as_str() {
            "" | "." => prefix.to_owned(),
            path if path.starts_with('[') => format!("{prefix}{path}"),
            path => format!("{prefix}.{path}"),
        };
        let inner = e.into_inner();
        let at = inner.span().map_or(start, |s| s.start);
        self.problem(Some(at), key, inner.message().to_owned());
    }

    /// Reads the whole document. A syntax error is the only problem reported then: nothing
    /// after it can be trusted.
    pub fn read(&mut self) -> RawConfig {
        let mut raw = RawConfig::default();
        let root = match DeTable::parse(self.text) {
            Ok(root) => root,
            Err(e) => {
                self.problem(e.span().map(|s| s.start), "", e.message().to_owned());
                return raw;
            }
        };
        for (key, value) in root.into_inner() {
            let at = Some(key.span().start);
            let name = key.into_inner();
            match name.as_ref() {
                "classes" => raw.classes = self.array("classes", value),
                "limits" => {
                    for (class, _, limits) in self.entries("limits", value) {
                        let prefix = format!("limits.{}", class.0);
                        if let Some(limits) = self.take(&prefix, limits) {
                            raw.limits.insert(class, limits);
                        }
                    }
                }
                "keys" => {
                    for (key, at, value) in self.entries("keys", value) {
                        let prefix = format!("keys.{}", key.0);
                        match fingerprint(&key.0) {
                            Ok(fp) => {
                                if let Some(entry) = self.take(&prefix, value) {
                                    raw.keys.insert(fp, entry);
                                }
                            }
                            Err(invalid) => self.problem(Some(at), prefix, invalid.to_string()),
                        }
                    }
                }
                "gateway" => raw.gateway = self.take("gateway", value),
                "state" => raw.state = self.take("state", value),
                "log" => raw.log = self.take("log", value),
                "accounts" => raw.accounts = self.take("accounts", value),
                "access" => raw.access = self.take("access", value),
                "metrics" => raw.metrics = self.take("metrics", value),
                "cluster" => raw.cluster = self.take("cluster", value),
                "windows" => raw.windows = self.take("windows", value),
                "alerts" => raw.alerts = self.take("alerts", value),
                other => self.problem(
                    at,
                    other,
                    format!(
                        "unknown section `{other}`, expected one of {}",
                        SECTIONS.join(", ")
                    ),
                ),
            }
        }
        raw
    }

    /// The entries of a table, with names checked (non-empty), and where each name is.
    fn entries<'v>(
        &mut self,
        prefix: &str,
        value: Spanned<DeValue<'v>>,
    ) -> Vec<(Name, usize, Spanned<DeValue<'v>>)> {
        let at = value.span().start;
        let DeValue::Table(table) = value.into_inner() else {
            self.problem(Some(at), prefix, "expected a table".into());
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, value) in table {
            let at = name.span().start;
            let name = name.into_inner();
            let trimmed = name.trim();
            if trimmed.is_empty() {
                self.problem(
                    Some(at),
                    format!("{prefix}.{name}"),
                    "must not be empty".into(),
                );
                continue;
            }
            out.push((Name(trimmed.to_owned()), at, value));
        }
        out
    }

    /// The elements of an array, each read on its own.
    fn array<T: DeserializeOwned>(&mut self, prefix: &str, value: Spanned<DeValue<'_>>) -> Vec<T> {
        let at = value.span().start;
        let DeValue::Array(items) = value.into_inner() else {
            self.problem(Some(at), prefix, "expected an array of tables".into());
            return Vec::new();
        };
        let items: Vec<Spanned<DeValue<'_>>> = items.iter().cloned().collect();
        items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| self.take(&format!("{prefix}[{i}]"), item))
            .collect()
    }
}
