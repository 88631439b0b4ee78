//! Reading the settings from the TOML file and the environment, telling a misspelt setting (refused, so a
//! typo is not silently ignored) from a foreign `WALLETD_*` variable (a warning: Kubernetes injects
//! `WALLETD_SERVICE_HOST`, `WALLETD_PORT_8080_TCP` and the like into every pod of a `walletd` service).

use std::collections::BTreeMap;
use std::path::Path;

use crate::table::{SETTINGS, env_var};
use crate::{Settings, SettingsError};

/// `WALLETD_*` variables that are no settings but are read by walletd (`--config`'s variable, the test
/// failpoints), its test harness or its benchmark: neither refused nor warned about. A trailing `*`
/// stands for any suffix.
pub const NOT_SETTINGS: &[&str] = &["WALLETD_CONFIG", "WALLETD_FAILPOINTS", "WALLETD_TEST_*", "WALLETD_BENCH_*"];

/// The settings, and what the caller logs once logging has started.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    /// One line per ignored name: a `WALLETD_*` variable or a file key that is no setting.
    pub warnings: Vec<String>,
}

impl Settings {
    /// Defaults, then the TOML file (if any), then the process's `WALLETD_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Loaded, SettingsError> {
        // Not `std::env::vars()`: it panics on any variable that is not Unicode, even one not ours.
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Ok(name) = name.into_string() else { continue }; // not ours: ours are ASCII
            let value = match value.into_string() {
                Ok(value) => value,
                Err(_) if key_of(&name).is_some_and(|k| declared(&k).is_some()) => {
                    return Err(SettingsError::Invalid { setting: name, reason: "is not valid UTF-8".into() });
                }
                // Only the name of a variable that is no setting matters.
                Err(raw) => raw.to_string_lossy().into_owned(),
            };
            env.push((name, value));
        }
        Self::load_from(file, env)
    }

    /// [`Settings::load`] with the environment given: the later of the file and the environment wins,
    /// then each value is applied in declaration order and [`Settings::validate`] runs.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, SettingsError> {
        let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut warnings = Vec::new();
        if let Some(path) = file {
            for (key, value) in read_toml(path)? {
                let Some(declared) = declared(&key) else {
                    let suggestion = near_miss(&key.to_ascii_lowercase()).map(str::to_string);
                    unknown(format!("`{key}` in {}", path.display()), suggestion, &mut warnings)?;
                    continue;
                };
                let text = text_of(&value).ok_or_else(|| SettingsError::Invalid {
                    setting: env_var(declared),
                    reason: format!("is a table in {}; it takes a single value", path.display()),
                })?;
                values.insert(declared, text);
            }
        }
        for (name, value) in env {
            let Some(key) = key_of(&name) else { continue };
            if is_not_a_setting(&name) {
                continue;
            }
            match declared(&key) {
                Some(declared) => _ = values.insert(declared, value),
                None => unknown(name, near_miss(&key).map(env_var), &mut warnings)?,
            }
        }
        let mut settings = Self::default();
        for setting in SETTINGS {
            if let Some(value) = values.remove(setting.key) {
                settings.set(setting.key, &value)?;
            }
        }
        settings.validate()?;
        Ok(Loaded { settings, warnings })
    }
}

/// The setting a name that is none most likely misspells: refused with a suggestion; else a warning.
fn unknown(name: String, suggestion: Option<String>, warnings: &mut Vec<String>) -> Result<(), SettingsError> {
    if suggestion.is_some() {
        return Err(SettingsError::Unknown { name, suggestion });
    }
    warnings.push(format!("ignoring {name}: not a walletd setting"));
    Ok(())
}

/// The lower-case key of a `WALLETD_*` variable (matched case-insensitively, as the `config` crate did).
fn key_of(name: &str) -> Option<String> {
    let prefix = name.get(..8).filter(|p| p.eq_ignore_ascii_case("WALLETD_"))?;
    name.get(prefix.len()..).map(str::to_ascii_lowercase)
}

fn is_not_a_setting(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    NOT_SETTINGS.iter().any(|n| n.strip_suffix('*').map_or(name == *n, |prefix| name.starts_with(prefix)))
}

fn declared(key: &str) -> Option<&'static str> {
    SETTINGS.iter().find(|s| s.key == key).map(|s| s.key)
}

fn read_toml(path: &Path) -> Result<toml::Table, SettingsError> {
    let error = |reason: String| SettingsError::File { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    text.parse::<toml::Table>().map_err(|e| error(e.to_string()))
}

/// A TOML value as a setting's text: arrays joined with commas (as the `config` crate did); `None` for a
/// table.
fn text_of(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => items.iter().map(text_of).collect::<Option<Vec<_>>>()?.join(","),
        toml::Value::Table(_) => return None,
    })
}

/// The setting that `key` (lower case, without `WALLETD_`) most likely misspells: at most two edits away
/// (swapping two neighbours is one edit), and at most a quarter of the setting's length (rounded up) so
/// that a short unrelated name does not match by chance. The nearest wins; on a tie, the first declared.
pub fn near_miss(key: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .map(|s| (edit_distance(key, s.key), s.key))
        .filter(|(d, k)| *d <= 2 && *d <= k.len().div_ceil(4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Damerau–Levenshtein distance (optimal string alignment): insertions, deletions, substitutions and
/// swaps of two neighbours.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows of the usual table: distances from a[..i-2], a[..i-1] and a[..i] to each b[..j].
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut current = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let substitution = previous[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            current[j] = substitution.min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                current[j] = current[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_a_swap_as_one() {
        assert_eq!(edit_distance("http_adr", "http_addr"), 1);
        assert_eq!(edit_distance("htpt_addr", "http_addr"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("region", "region"), 0);
    }

    #[test]
    fn near_misses_need_a_long_enough_key() {
        assert_eq!(near_miss("http_adr"), Some("http_addr"));
        assert_eq!(near_miss("regoin"), Some("region"));
        assert_eq!(near_miss("data_dirs"), Some("data_dir"));
        assert_eq!(near_miss("port"), None);
        assert_eq!(near_miss("service_host"), None);
    }

    #[test]
    fn variable_names_are_matched_case_insensitively() {
        assert_eq!(key_of("WALLETD_HTTP_ADDR").as_deref(), Some("http_addr"));
        assert_eq!(key_of("walletd_http_addr").as_deref(), Some("http_addr"));
        assert_eq!(key_of("WALLET_HTTP_ADDR"), None);
        assert_eq!(key_of("WALLETD"), None);
        assert!(is_not_a_setting("WALLETD_TEST_PG_URL") && is_not_a_setting("walletd_config"));
        assert!(!is_not_a_setting("WALLETD_CONFIGS") && !is_not_a_setting("WALLETD_TEST"));
    }
}
