//! Claude Code's settings file (`~/.claude/settings.json`), changed the way a person would want
//! a tool to change it: every other key kept as it was written, in its order, numbers and all
//! (`12345678901234567890123` stays that, not `1.2345678901234568e+22`); nothing written when
//! nothing changes; a backup of the old file that no later run overwrites; and the new file put
//! in place atomically (written beside it, then renamed over it), so a crash or a second run at
//! the same moment never leaves half a file.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde_json::Value;
use serde_json::value::RawValue;

/// The settings as written: top-level keys in order, each value's text untouched.
pub struct Settings {
    path: PathBuf,
    entries: Vec<(String, Box<RawValue>)>,
    existed: bool,
}

/// What [`Settings::set`] did.
#[derive(Debug, PartialEq)]
pub enum Change {
    /// The key already held this value: nothing to write.
    Unchanged,
    /// The key is new.
    Added,
    /// The key held something else, shown here.
    Replaced(String),
}

impl Settings {
    /// Reads the file at `path` (a missing or empty one is an empty object). Anything else that
    /// is not a JSON object is an error that names the file, and nothing is changed.
    pub fn read(path: &Path) -> anyhow::Result<Settings> {
        let (text, existed) = match std::fs::read_to_string(path) {
            Ok(text) => (text, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), false),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let entries = if text.trim().is_empty() {
            Vec::new()
        } else {
            serde_json::from_str::<Entries>(&text)
                .with_context(|| {
                    format!(
                        "{} is not a JSON object; fix it first (nothing was changed)",
                        path.display()
                    )
                })?
                .0
        };
        Ok(Settings {
            path: path.to_owned(),
            entries,
            existed,
        })
    }

    /// The value of top-level `key`, parsed.
    pub fn get(&self, key: &str) -> Option<Value> {
        let (_, raw) = self.entries.iter().find(|(k, _)| k == key)?;
        serde_json::from_str(raw.get()).ok()
    }

    /// Sets top-level `key` to `value`, keeping its place if it was there.
    pub fn set(&mut self, key: &str, value: &Value) -> anyhow::Result<Change> {
        let previous = self.get(key);
        if previous.as_ref() == Some(value) {
            return Ok(Change::Unchanged);
        }
        let raw = RawValue::from_string(serde_json::to_string_pretty(value)?)?;
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, slot)) => *slot = raw,
            None => self.entries.push((key.to_owned(), raw)),
        }
        Ok(match previous {
            Some(previous) => Change::Replaced(previous.to_string()),
            None => Change::Added,
        })
    }

    /// Writes the settings back: the old file copied aside first (a new backup each time;
    /// returned), then the new one written beside it and renamed over it.
    pub fn write(&self) -> anyhow::Result<Option<PathBuf>> {
        let path = &self.path;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let backup = if self.existed {
            Some(back_up(path)?)
        } else {
            None
        };
        let mut text = serde_json::to_string_pretty(&EntriesRef(&self.entries))?;
        text.push('\n');
        let tmp = dir.join(format!(
            ".{}.pacer-{}.tmp",
            path.file_name()
                .map_or("settings.json".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            if let Ok(meta) = std::fs::metadata(path) {
                // The settings may hold secrets (an apiKeyHelper, env): keep their mode.
                let _ = file.set_permissions(meta.permissions());
            }
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
        Ok(backup)
    }
}

/// A file in the user's home (`~/.claude/settings.json`, `~/.claude.json`), unless `given`
/// names another; `flag` is the option that names it, for the error without a home.
pub fn in_home(given: Option<PathBuf>, relative: &str, flag: &str) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path),
        None => Ok(pacer_protocol::endpoint::home_dir()
            .with_context(|| {
                format!("no home directory ($HOME is not set): name the file with {flag}")
            })?
            .join(relative)),
    }
}

impl Settings {
    /// Writes the settings if `change` changed anything, saying so on stderr: `already` when
    /// nothing changed, else where the old file was copied, what was replaced, and `done`.
    pub fn save(&self, change: &Change, already: &str, done: &str) -> anyhow::Result<()> {
        let path = self.path.display();
        if *change == Change::Unchanged {
            eprintln!("pacer: {already} ({path}): nothing changed");
            return Ok(());
        }
        if let Some(backup) = self.write()? {
            eprintln!("pacer: {path} backed up to {}", backup.display());
        }
        if let Change::Replaced(previous) = change {
            eprintln!("pacer: replaced what was there: {previous}");
        }
        eprintln!("pacer: {done} ({path})");
        Ok(())
    }
}

/// Copies `path` to `<path>.bak-<seconds>` (`-2`, `-3`… when that exists): never over an
/// earlier backup, which may be the only copy of the user's own setting.
fn back_up(path: &Path) -> anyhow::Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    for n in 1..1000 {
        let suffix = if n == 1 {
            format!("bak-{stamp}")
        } else {
            format!("bak-{stamp}-{n}")
        };
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{suffix}"));
        let backup = PathBuf::from(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&backup)
        {
            Ok(mut file) => {
                file.write_all(&bytes)
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("cannot write {}", backup.display()))?;
                return Ok(backup);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot back up to {}", backup.display()));
            }
        }
    }
    anyhow::bail!("cannot find a free name to back {} up to", path.display())
}

/// A JSON object's entries, in order, values as written.
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.retain(|(k, _): &(String, _)| *k != key);
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

struct EntriesRef<'a>(&'a [(String, Box<RawValue>)]);

impl serde::Serialize for EntriesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_keys_keep_their_text_order_and_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        let original = r#"{"zeta": 12345678901234567890123, "model": "opus", "env": {"A": 1.50}}"#;
        std::fs::write(&path, original).unwrap();
        let mut settings = Settings::read(&path).unwrap();
        let line = serde_json::json!({"type": "command", "command": "pacer statusline"});
        assert_eq!(settings.set("statusLine", &line).unwrap(), Change::Added);
        let backup = settings.write().unwrap().expect("a backup");
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("12345678901234567890123"), "{text}");
        assert!(text.contains("1.50"), "{text}");
        let order: Vec<_> = ["zeta", "model", "env", "statusLine"]
            .iter()
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        // Again: nothing changes, nothing is written.
        let mut again = Settings::read(&path).unwrap();
        assert_eq!(again.set("statusLine", &line).unwrap(), Change::Unchanged);
    }

    #[test]
    fn backups_made_in_the_same_second_do_not_overwrite_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(
            &path,
            r#"{"statusLine": {"type": "command", "command": "mine"}}"#,
        )
        .unwrap();
        let first = back_up(&path).unwrap();
        std::fs::write(&path, "{}").unwrap();
        let second = back_up(&path).unwrap();
        assert_ne!(first, second);
        assert!(std::fs::read_to_string(first).unwrap().contains("mine"));
    }

    #[test]
    fn what_is_not_an_object_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        for text in ["[1, 2]", "{\"a\": ", "42"] {
            std::fs::write(&path, text).unwrap();
            let error = Settings::read(&path).err().expect(text).to_string();
            assert!(error.contains("is not a JSON object"), "{error}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
    }
}
