//! Reading configuration files, with errors that name the file, the line, the key and the
//! reason — one line each, for a router's log.

use linkpool_protocol::flow::{Mode, Modes};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// 1-based line of the key, when known.
    pub line: Option<usize>,
    /// The key at fault (`tunnel.mtu`, `uplink[1].device`, `linkpool.main.mtu`), if any.
    pub key: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    /// An error about the file as a whole.
    pub fn file(file: &Path, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            reason: reason.into(),
        }
    }

    /// An error about one key.
    pub fn key(
        file: &Path,
        key: impl Into<String>,
        line: Option<usize>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line,
            key: Some(key.into()),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Reads a configuration file as text.
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::file(path, format!("cannot read the file: {e}")))
}

/// 1-based line of byte offset `at` in `text`.
pub fn line_of_offset(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Deserializes TOML `text` (read from `path`) into `T`. Errors carry the key path (as
/// serde walked it), the line, and the reason, without the multi-line snippet `toml`
/// normally prints.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key_path = e.path().to_string();
        let inner = e.into_inner();
        let mut line = inner.span().map(|s| line_of_offset(text, s.start));
        let message = inner.message().trim().replace('\n', "; ");
        let parent = (key_path != ".").then_some(key_path);
        // serde reports a missing field at its parent; name the field itself.
        let (key, reason) = if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            let key = match &parent {
                Some(p) => format!("{p}.{field}"),
                None => field.to_string(),
            };
            // The span of a missing field is its whole table; point at its header only
            // when that is not the whole file.
            if parent.is_none() {
                line = None;
            }
            (Some(key), "missing".to_string())
        } else if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            let key = match &parent {
                Some(p) if !p.ends_with(field) => format!("{p}.{field}"),
                Some(p) => p.clone(),
                None => field.to_string(),
            };
            let expected = message
                .split_once(", expected ")
                .map(|(_, e)| e)
                .unwrap_or("");
            (Some(key), format!("unknown key (known keys: {expected})"))
        } else {
            (parent, message)
        };
        ConfigError {
            file: path.to_path_buf(),
            line,
            key,
            reason,
        }
    })
}

/// A flow mode in a TOML file, checked as it is read, so that a wrong one is reported with
/// its key and line: ``key `spreading.bulk`: unknown flow mode `fast` (expected auto,
/// session, packet or redundant)``.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSetting(pub Mode);

impl<'de> Deserialize<'de> for ModeSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse()
            .map(ModeSetting)
            .map_err(serde::de::Error::custom)
    }
}

/// A `[spreading]` table (the gateway's, the proxy's) or a proxy member's `spreading`: how
/// each class of flow is spread, where given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadingTable {
    /// Mode of interactive flows.
    pub interactive: Option<ModeSetting>,
    /// Mode of bulk flows.
    pub bulk: Option<ModeSetting>,
    /// Mode of the other flows.
    pub default: Option<ModeSetting>,
}

impl SpreadingTable {
    /// `base` with the classes this table names set to their mode.
    pub fn over(&self, base: Modes) -> Modes {
        let pick = |set: Option<ModeSetting>, base: Mode| set.map_or(base, |m| m.0);
        Modes {
            interactive: pick(self.interactive, base.interactive),
            bulk: pick(self.bulk, base.bulk),
            default: pick(self.default, base.default),
        }
    }
}

/// Best-effort line of a key given as a path (`tunnel.mtu`, `uplink[1].device`,
/// `member[0].address`) in TOML text: used for errors found after deserializing, when
/// serde's spans are gone. Understands `[table]` and `[[array]]` headers and plain
/// `key = value` lines, which is what our configs use.
pub fn toml_key_line(text: &str, key_path: &str) -> Option<usize> {
    // Split "member[2].address" into table "member", index 2, key "address".
    let (table, index, key) = match key_path.rsplit_once('.') {
        Some((t, k)) => match t.split_once('[') {
            Some((name, idx)) => (name, idx.trim_end_matches(']').parse::<usize>().ok(), k),
            None => (t, None, k),
        },
        None => match key_path.split_once('[') {
            // "uplink[1]": the header of that array entry.
            Some((name, idx)) => {
                let want = idx.trim_end_matches(']').parse::<usize>().ok()?;
                let mut seen = 0;
                for (i, l) in text.lines().enumerate() {
                    if l.trim() == format!("[[{name}]]") {
                        if seen == want {
                            return Some(i + 1);
                        }
                        seen += 1;
                    }
                }
                return None;
            }
            None => ("", None, key_path),
        },
    };
    let mut current = String::new();
    let mut count: Option<usize> = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let h = h.trim().to_string();
            count = if h == table {
                Some(count.map_or(0, |c| c + 1))
            } else {
                count
            };
            current = h;
            continue;
        }
        if let Some(h) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = h.trim().to_string();
            continue;
        }
        let in_table = current == table && (index.is_none() || index == count);
        if in_table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_are_found_in_tables_and_arrays() {
        let text =
            "a = 1\n[tunnel]\nmtu = 0\n\n[[uplink]]\nname = \"x\"\n[[uplink]]\n name = \"y\"\n";
        assert_eq!(toml_key_line(text, "a"), Some(1));
        assert_eq!(toml_key_line(text, "tunnel.mtu"), Some(3));
        assert_eq!(toml_key_line(text, "uplink[0].name"), Some(6));
        assert_eq!(toml_key_line(text, "uplink[1].name"), Some(8));
        assert_eq!(toml_key_line(text, "uplink[1]"), Some(7));
        assert_eq!(toml_key_line(text, "uplink[2].name"), None);
        assert_eq!(toml_key_line(text, "tunnel.table"), None);
    }

    #[test]
    fn spreading_tables_are_checked_where_they_are_read() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            spreading: Option<SpreadingTable>,
            #[serde(default)]
            member: Vec<Member>,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Member {
            #[allow(dead_code)]
            name: String,
            spreading: Option<SpreadingTable>,
        }
        let path = Path::new("/etc/x.toml");
        let f: File = parse_toml(
            path,
            "[spreading]\nbulk = \"session\"\n[[member]]\nname = \"a\"\nspreading = { interactive = \"packet\", bulk = \"auto\" }\n",
        )
        .unwrap();
        let proxy = f.spreading.unwrap().over(Modes::default());
        assert_eq!(
            proxy,
            Modes {
                interactive: Mode::Auto,
                bulk: Mode::Session,
                default: Mode::Auto
            }
        );
        let member = f.member[0].spreading.unwrap().over(proxy);
        assert_eq!(
            member,
            Modes {
                interactive: Mode::Packet,
                bulk: Mode::Auto,
                default: Mode::Auto
            }
        );

        let err = |text: &str| parse_toml::<File>(path, text).unwrap_err();
        let e = err("\n[spreading]\nbulk = \"fast\"\n");
        assert_eq!(
            e.to_string(),
            "/etc/x.toml:3: key `spreading.bulk`: unknown flow mode `fast` (expected auto, session, packet or redundant)"
        );
        let e = err("[[member]]\nname = \"a\"\nspreading = { default = \"Session\" }\n");
        assert_eq!(
            e.to_string(),
            "/etc/x.toml:3: key `member[0].spreading.default`: unknown flow mode `Session` (expected auto, session, packet or redundant)"
        );
        let e = err("[spreading]\nbulky = \"packet\"\n");
        assert_eq!(e.key.as_deref(), Some("spreading.bulky"));
        assert_eq!(e.line, Some(2));
        assert!(
            e.reason
                .contains("unknown key (known keys: one of `interactive`, `bulk`, `default`)"),
            "{e}"
        );
        let e = err("[spreading]\ninteractive = 1\n");
        assert_eq!(e.key.as_deref(), Some("spreading.interactive"));
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("expected a string"), "{e}");
    }

    #[test]
    fn display_names_file_line_key_and_reason() {
        let e = ConfigError::key(Path::new("/etc/x.toml"), "tunnel.mtu", Some(7), "too small");
        assert_eq!(e.to_string(), "/etc/x.toml:7: key `tunnel.mtu`: too small");
        assert_eq!(
            ConfigError::file(Path::new("f"), "cannot read").to_string(),
            "f: cannot read"
        );
    }
}
