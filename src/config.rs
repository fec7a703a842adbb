//! The environment, read into a [`Config`] by a pure function over a lookup.
//!
//! | variable | values | default |
//! |---|---|---|
//! | `STRUCTURED_LOGGING` | true/false, 1/0, yes/no, on/off (any case) | true |
//! | `LOG_LEVEL` | trace, debug, info, warn (warning), error, off, or `EnvFilter` directives | info |
//! | `LANGSMITH_LOGGING` | true/false (same spellings) | false |
//!
//! An empty variable counts as unset. An invalid value never fails: it
//! yields a [`ConfigWarning`] naming the variable, the value and the default
//! used instead, and [`crate::init`] prints each warning as one stderr line.

use std::fmt;

use tracing_subscriber::filter::EnvFilter;

/// How events are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// One JSON object per line (`STRUCTURED_LOGGING=true`, the default).
    #[default]
    Json,
    /// The same events, one readable line each (`STRUCTURED_LOGGING=false`).
    Human,
}

/// What the environment asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// From `STRUCTURED_LOGGING`.
    pub format: Format,
    /// From `LOG_LEVEL`: `EnvFilter` directives, already validated
    /// (`warning` spelled `warn`).
    pub log_level: String,
    /// From `LANGSMITH_LOGGING`: reserved, forwarding is not in this build.
    pub langsmith: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: Format::Json,
            log_level: "info".to_owned(),
            langsmith: false,
        }
    }
}

/// An environment value that could not be used; the default stands instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigWarning {
    /// The variable, such as `LOG_LEVEL`.
    pub variable: &'static str,
    /// The value it held.
    pub value: String,
    /// What was expected.
    pub expected: &'static str,
    /// The value used instead.
    pub default: &'static str,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tracing-pipeline: {}={:?} is not valid (expected {}); using the default {}",
            self.variable, self.value, self.expected, self.default
        )
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

const BOOL_EXPECTED: &str = "true/false, 1/0, yes/no or on/off";

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `LOG_LEVEL` to `EnvFilter` directives: `warning` becomes `warn`, levels
/// are case-insensitive; `None` when `EnvFilter` rejects the result.
fn parse_log_level(s: &str) -> Option<String> {
    let directives: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            let (target, level) = match d.rsplit_once('=') {
                Some((t, l)) => (Some(t), l),
                None => (None, d),
            };
            let level = match level.to_ascii_lowercase().as_str() {
                "warning" => "warn".to_owned(),
                l @ ("trace" | "debug" | "info" | "warn" | "error" | "off") => l.to_owned(),
                _ => level.to_owned(),
            };
            match target {
                Some(t) => format!("{t}={level}"),
                None => level,
            }
        })
        .collect();
    if directives.is_empty() {
        return None;
    }
    // `EnvFilter` reads a bare word as a target name ("verbose" would
    // enable every level of a target called verbose): a lone word must be
    // a level.
    if let [only] = directives.as_slice() {
        if !only.contains(['=', '[']) && !LEVELS.contains(&only.as_str()) {
            return None;
        }
    }
    let joined = directives.join(",");
    EnvFilter::builder()
        .with_regex(false)
        .parse(&joined)
        .ok()
        .map(|_| joined)
}

impl Config {
    /// Reads the process environment. See [`Config::from_lookup`].
    pub fn from_env() -> (Config, Vec<ConfigWarning>) {
        Config::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads the configuration through `lookup` (a variable's name to its
    /// value), returning it with a warning for every value that could not
    /// be used.
    ///
    /// ```
    /// use tracing_pipeline::{Config, Format};
    ///
    /// let (config, warnings) = Config::from_lookup(|name| match name {
    ///     "STRUCTURED_LOGGING" => Some("OFF".into()),
    ///     "LOG_LEVEL" => Some("loud".into()),
    ///     _ => None,
    /// });
    /// assert_eq!(config.format, Format::Human);
    /// assert_eq!(config.log_level, "info");
    /// assert_eq!(warnings[0].variable, "LOG_LEVEL");
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> (Config, Vec<ConfigWarning>) {
        let mut config = Config::default();
        let mut warnings = Vec::new();
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        if let Some(v) = get("STRUCTURED_LOGGING") {
            match parse_bool(&v) {
                Some(true) => config.format = Format::Json,
                Some(false) => config.format = Format::Human,
                None => warnings.push(ConfigWarning {
                    variable: "STRUCTURED_LOGGING",
                    value: v,
                    expected: BOOL_EXPECTED,
                    default: "true",
                }),
            }
        }
        if let Some(v) = get("LOG_LEVEL") {
            match parse_log_level(&v) {
                Some(directives) => config.log_level = directives,
                None => warnings.push(ConfigWarning {
                    variable: "LOG_LEVEL",
                    value: v,
                    expected: "trace, debug, info, warn, error, off or EnvFilter directives",
                    default: "info",
                }),
            }
        }
        if let Some(v) = get("LANGSMITH_LOGGING") {
            match parse_bool(&v) {
                Some(b) => config.langsmith = b,
                None => warnings.push(ConfigWarning {
                    variable: "LANGSMITH_LOGGING",
                    value: v,
                    expected: BOOL_EXPECTED,
                    default: "false",
                }),
            }
        }
        (config, warnings)
    }

    /// The `LOG_LEVEL` filter. The directives were validated when parsed;
    /// should building fail anyway, the default `info` is used.
    pub fn log_filter(&self) -> EnvFilter {
        EnvFilter::builder()
            .with_regex(false)
            .parse(&self.log_level)
            .unwrap_or_else(|_| EnvFilter::new("info"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> (Config, Vec<ConfigWarning>) {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn nothing_set_gives_the_defaults() {
        let (c, w) = read(&[]);
        assert_eq!(c, Config::default());
        assert!(w.is_empty());
        assert_eq!(c.format, Format::Json);
        assert_eq!(c.log_level, "info");
        assert!(!c.langsmith);
    }

    #[test]
    fn structured_logging_values() {
        let table = [
            ("true", Some(Format::Json)),
            ("TRUE", Some(Format::Json)),
            ("1", Some(Format::Json)),
            ("yes", Some(Format::Json)),
            ("On", Some(Format::Json)),
            ("false", Some(Format::Human)),
            ("False", Some(Format::Human)),
            ("0", Some(Format::Human)),
            ("no", Some(Format::Human)),
            ("OFF", Some(Format::Human)),
            (" off ", Some(Format::Human)),
            ("", Some(Format::Json)),
            ("maybe", None),
            ("2", None),
            ("truee", None),
        ];
        for (value, want) in table {
            let (c, w) = read(&[("STRUCTURED_LOGGING", value)]);
            match want {
                Some(f) => {
                    assert_eq!(c.format, f, "{value:?}");
                    assert!(w.is_empty(), "{value:?}");
                }
                None => {
                    assert_eq!(c.format, Format::Json, "{value:?} falls back to JSON");
                    assert_eq!(w.len(), 1, "{value:?}");
                    assert_eq!(w[0].variable, "STRUCTURED_LOGGING");
                    assert_eq!(w[0].value, value);
                    let text = w[0].to_string();
                    assert!(
                        text.contains("STRUCTURED_LOGGING")
                            && text.contains(value)
                            && text.contains("true"),
                        "{text}"
                    );
                }
            }
        }
    }

    #[test]
    fn log_level_values() {
        let table = [
            ("trace", Some("trace")),
            ("DEBUG", Some("debug")),
            ("info", Some("info")),
            ("warn", Some("warn")),
            ("warning", Some("warn")),
            ("WARNING", Some("warn")),
            ("error", Some("error")),
            ("off", Some("off")),
            (
                "info,my_crate::layer4=debug",
                Some("info,my_crate::layer4=debug"),
            ),
            ("info,my_crate=warning", Some("info,my_crate=warn")),
            ("", Some("info")),
            ("loud", None),
            ("info,=", None),
            ("my_crate=verbose", None),
            ("verbose", None),
        ];
        for (value, want) in table {
            let (c, w) = read(&[("LOG_LEVEL", value)]);
            match want {
                Some(d) => {
                    assert_eq!(c.log_level, d, "{value:?}");
                    assert!(w.is_empty(), "{value:?}: {w:?}");
                }
                None => {
                    assert_eq!(c.log_level, "info", "{value:?}");
                    assert_eq!(w.len(), 1, "{value:?}");
                    assert_eq!(w[0].variable, "LOG_LEVEL");
                    assert_eq!(w[0].default, "info");
                }
            }
        }
    }

    #[test]
    fn langsmith_values() {
        assert!(read(&[("LANGSMITH_LOGGING", "true")]).0.langsmith);
        assert!(!read(&[("LANGSMITH_LOGGING", "false")]).0.langsmith);
        let (c, w) = read(&[("LANGSMITH_LOGGING", "sometimes")]);
        assert!(!c.langsmith);
        assert_eq!(w[0].variable, "LANGSMITH_LOGGING");
    }

    #[test]
    fn every_bad_variable_gets_its_own_warning() {
        let (_, w) = read(&[
            ("STRUCTURED_LOGGING", "x"),
            ("LOG_LEVEL", "y"),
            ("LANGSMITH_LOGGING", "z"),
        ]);
        let names: Vec<_> = w.iter().map(|w| w.variable).collect();
        assert_eq!(
            names,
            ["STRUCTURED_LOGGING", "LOG_LEVEL", "LANGSMITH_LOGGING"]
        );
    }
}
