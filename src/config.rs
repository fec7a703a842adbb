//! The environment, read into a [`Config`] by a pure function over a lookup.
//!
//! | variable | values | default |
//! |---|---|---|
//! | `STRUCTURED_LOGGING` | true/false, 1/0, yes/no, on/off (any case) | true |
//! | `LOG_LEVEL` | trace, debug, info, warn (warning), error, off, or `EnvFilter` directives | info |
//! | `LANGSMITH_LOGGING` | true/false (same spellings) | false |
//! | `LANGSMITH_API_KEY`, `LANGSMITH_PROJECT`, `LANGSMITH_ENDPOINT` | key, project name, URL | none, none, `https://api.smith.langchain.com` |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | http(s) URL | none (no export) |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS` | `key=value,...` (values percent-encoded) | none |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` | milliseconds | 10000 |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | a name; `key=value,...` | the program's name; none |
//! | `OTEL_SDK_DISABLED` | true/false | false |
//! | `OTEL_BSP_MAX_QUEUE_SIZE` | spans | 2048 |
//! | `TRACEPARENT`, `TRACESTATE` | W3C trace context | none |
//!
//! The OpenTelemetry variables are read in every build, so that a warning
//! names a bad value the same way; they take effect with the `otel` feature.
//!
//! An empty variable counts as unset. An invalid value never fails: it
//! yields a [`ConfigWarning`] naming the variable, the value and the default
//! used instead, and [`crate::init`] prints each warning as one stderr line.

use std::fmt;
use std::time::Duration;

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
    /// From `LANGSMITH_LOGGING`: export stage spans to LangSmith (feature
    /// `otel`; see [`OtelConfig`]).
    pub langsmith: bool,
    /// OpenTelemetry export: the `OTEL_*`, `LANGSMITH_*` and `TRACEPARENT`
    /// variables.
    pub otel: OtelConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: Format::Json,
            log_level: "info".to_owned(),
            langsmith: false,
            otel: OtelConfig::default(),
        }
    }
}

/// LangSmith's API, whose OpenTelemetry endpoint is `/otel` below it.
pub const LANGSMITH_DEFAULT_ENDPOINT: &str = "https://api.smith.langchain.com";

/// Where and how stage spans are exported over OTLP/HTTP (protobuf), as the
/// environment says. With the `otel` feature, [`crate::init`] exports to
/// every destination when [`exporting`](Self::exporting).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtelConfig {
    /// The OTLP endpoint (`OTEL_EXPORTER_OTLP_*`) and LangSmith
    /// (`LANGSMITH_LOGGING=true`), each with its full traces URL.
    pub destinations: Vec<OtlpDestination>,
    /// `OTEL_SDK_DISABLED=true`: no export whatever else is set.
    pub disabled: bool,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded.
    pub resource_attributes: Vec<(String, String)>,
    /// How long one export request may take, retries included
    /// (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub timeout: Duration,
    /// The most spans waiting for export (`OTEL_BSP_MAX_QUEUE_SIZE`); more
    /// are dropped and counted.
    pub queue_size: usize,
    /// `TRACEPARENT`, validated (lowercase): the remote parent of every
    /// root span, so that a child process joins its parent's trace.
    pub traceparent: Option<String>,
    /// `TRACESTATE`, passed on with the parent.
    pub tracestate: Option<String>,
}

impl Default for OtelConfig {
    fn default() -> Self {
        OtelConfig {
            destinations: Vec::new(),
            disabled: false,
            service_name: None,
            resource_attributes: Vec::new(),
            timeout: Duration::from_secs(10),
            queue_size: 2048,
            traceparent: None,
            tracestate: None,
        }
    }
}

impl OtelConfig {
    /// Whether spans are to be exported: a destination, and not disabled.
    pub fn exporting(&self) -> bool {
        !self.disabled && !self.destinations.is_empty()
    }
}

/// One place spans go.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtlpDestination {
    /// `otlp` (the `OTEL_EXPORTER_OTLP_*` endpoint) or `langsmith`.
    pub name: &'static str,
    /// The full URL spans are posted to (`…/v1/traces`).
    pub url: String,
    /// Request headers (`x-api-key` for LangSmith, ...).
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for OtlpDestination {
    /// Header values are secrets (API keys): only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpDestination")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("headers", &names)
            .finish()
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
        if self.value.is_empty() {
            return write!(
                f,
                "tracing-pipeline: {} is not set (expected {}); using the default {}",
                self.variable, self.expected, self.default
            );
        }
        write!(
            f,
            "tracing-pipeline: {}={:?} is not valid (expected {}); using the default {}",
            self.variable, self.value, self.expected, self.default
        )
    }
}

/// Whether `s` looks like an absolute `http`/`https` URL with a host (and a
/// numeric port, if any): enough to reject typos with a clear warning.
fn valid_url(s: &str) -> bool {
    let rest = match s.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest
        }
        _ => return false,
    };
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return false,
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    !host.is_empty() && port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok())
}

/// `%XX` sequences decoded (W3C baggage / OTLP header values); `None` for
/// a malformed sequence or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `key=value,key2=value2` (values percent-encoded), as the OTLP header and
/// resource variables are written. Bad entries are left out, each with a
/// warning that shows its key but never its value (it may be a secret).
fn parse_pairs(
    variable: &'static str,
    value: &str,
    key_ok: fn(&str) -> bool,
    warnings: &mut Vec<ConfigWarning>,
) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.split_once('=').and_then(|(k, v)| {
            let k = k.trim();
            let v = percent_decode(v.trim())?;
            (key_ok(k) && !v.chars().any(char::is_control)).then(|| (k.to_owned(), v))
        });
        match parsed {
            Some(pair) => pairs.push(pair),
            None => warnings.push(ConfigWarning {
                variable,
                value: match entry.split_once('=') {
                    Some((k, _)) => format!("{}=…", k.trim()),
                    None => entry.to_owned(),
                },
                expected: "key=value entries separated by commas, values percent-encoded",
                default: "none (the entry is left out)",
            }),
        }
    }
    pairs
}

/// A W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), lowercased, or
/// `None` when it is not one (all-zero ids and version `ff` are invalid).
pub(crate) fn parse_traceparent(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let zero = |p: &str| p.bytes().all(|b| b == b'0');
    match parts.as_slice() {
        [version, trace, span, flags, rest @ ..]
            if hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && !zero(trace)
                && hex(span, 16)
                && !zero(span)
                && hex(flags, 2) =>
        {
            Some(format!("00-{trace}-{span}-{flags}"))
        }
        _ => None,
    }
}

/// A traces URL from a base endpoint: `/v1/traces` appended.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
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

/// The OpenTelemetry part of [`Config::from_lookup`].
fn read_otel(
    get: &dyn Fn(&str) -> Option<String>,
    langsmith: bool,
    warnings: &mut Vec<ConfigWarning>,
) -> OtelConfig {
    let mut otel = OtelConfig::default();
    if let Some(v) = get("OTEL_SDK_DISABLED") {
        match parse_bool(&v) {
            Some(b) => otel.disabled = b,
            None => warnings.push(ConfigWarning {
                variable: "OTEL_SDK_DISABLED",
                value: v,
                expected: BOOL_EXPECTED,
                default: "false",
            }),
        }
    }
    let url_expected = "an http:// or https:// URL";
    let endpoint = match (
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(v), _) if valid_url(v.trim()) => Some(v.trim().to_owned()),
        (Some(v), _) => {
            warnings.push(ConfigWarning {
                variable: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                value: v,
                expected: url_expected,
                default: "none (no OTLP export)",
            });
            None
        }
        (None, Some(v)) if valid_url(v.trim()) => Some(traces_url(v.trim())),
        (None, Some(v)) => {
            warnings.push(ConfigWarning {
                variable: "OTEL_EXPORTER_OTLP_ENDPOINT",
                value: v,
                expected: url_expected,
                default: "none (no OTLP export)",
            });
            None
        }
        (None, None) => None,
    };
    let mut headers = Vec::new();
    for variable in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some(v) = get(variable) {
            for (k, v) in parse_pairs(variable, &v, is_token, warnings) {
                headers.retain(|(old, _): &(String, String)| !old.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
        }
    }
    if let Some(url) = endpoint {
        otel.destinations.push(OtlpDestination {
            name: "otlp",
            url,
            headers,
        });
    }
    if langsmith {
        let base = match get("LANGSMITH_ENDPOINT") {
            Some(v) if valid_url(v.trim()) => Some(v.trim().trim_end_matches('/').to_owned()),
            Some(v) => {
                warnings.push(ConfigWarning {
                    variable: "LANGSMITH_ENDPOINT",
                    value: v,
                    expected: url_expected,
                    default: "none (no export to LangSmith)",
                });
                None
            }
            None => Some(LANGSMITH_DEFAULT_ENDPOINT.to_owned()),
        };
        match (base, get("LANGSMITH_API_KEY")) {
            (Some(base), Some(key)) => {
                let otel_base = match base.ends_with("/otel") {
                    true => base,
                    false => format!("{base}/otel"),
                };
                let mut headers = vec![("x-api-key".to_owned(), key.trim().to_owned())];
                if let Some(project) = get("LANGSMITH_PROJECT") {
                    headers.push(("Langsmith-Project".to_owned(), project.trim().to_owned()));
                }
                otel.destinations.push(OtlpDestination {
                    name: "langsmith",
                    url: traces_url(&otel_base),
                    headers,
                });
            }
            (Some(_), None) => warnings.push(ConfigWarning {
                variable: "LANGSMITH_API_KEY",
                value: String::new(),
                expected: "your LangSmith API key, required with LANGSMITH_LOGGING=true",
                default: "none (no export to LangSmith)",
            }),
            (None, _) => {}
        }
    }
    let timeout = [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .into_iter()
    .find_map(|variable| get(variable).map(|v| (variable, v)));
    if let Some((variable, v)) = timeout {
        match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => otel.timeout = Duration::from_millis(ms),
            _ => warnings.push(ConfigWarning {
                variable,
                value: v,
                expected: "a whole number of milliseconds above 0",
                default: "10000",
            }),
        }
    }
    if let Some(v) = get("OTEL_BSP_MAX_QUEUE_SIZE") {
        match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => otel.queue_size = n,
            _ => warnings.push(ConfigWarning {
                variable: "OTEL_BSP_MAX_QUEUE_SIZE",
                value: v,
                expected: "a whole number of spans above 0",
                default: "2048",
            }),
        }
    }
    otel.service_name = get("OTEL_SERVICE_NAME").map(|v| v.trim().to_owned());
    if let Some(v) = get("OTEL_RESOURCE_ATTRIBUTES") {
        otel.resource_attributes =
            parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &v, |k| !k.is_empty(), warnings);
    }
    if let Some(v) = get("TRACEPARENT") {
        match parse_traceparent(&v) {
            Some(tp) => otel.traceparent = Some(tp),
            None => warnings.push(ConfigWarning {
                variable: "TRACEPARENT",
                value: v,
                expected: "a W3C traceparent, 00-<32 hex>-<16 hex>-<2 hex>",
                default: "none (a new trace)",
            }),
        }
    }
    otel.tracestate = get("TRACESTATE").map(|v| v.trim().to_owned());
    otel
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
        config.otel = read_otel(&get, config.langsmith, &mut warnings);
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

    #[test]
    fn otlp_endpoints_become_traces_urls() {
        let (c, w) = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")]);
        assert!(w.is_empty(), "{w:?}");
        assert!(c.otel.exporting());
        assert_eq!(
            c.otel.destinations[0].url,
            "http://127.0.0.1:4318/v1/traces"
        );
        let (c, _) = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://b/custom/path",
            ),
        ]);
        assert_eq!(c.otel.destinations[0].url, "https://b/custom/path");
        let (c, _) = read(&[]);
        assert!(!c.otel.exporting());
        let (c, w) = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(w.is_empty());
        assert!(!c.otel.exporting());
    }

    #[test]
    fn bad_endpoints_are_warnings_and_no_export() {
        for bad in [
            "localhost:4318",
            "ftp://x",
            "http://",
            "http://host:port",
            "http://a b",
            "http://h:99999",
        ] {
            let (c, w) = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)]);
            assert!(!c.otel.exporting(), "{bad}");
            assert_eq!(w.len(), 1, "{bad}");
            assert_eq!(w[0].variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
            assert!(w[0].to_string().contains(bad), "{}", w[0]);
        }
        for good in ["http://[::1]:4318", "https://user@host/otel", "HTTP://h"] {
            assert!(valid_url(good), "{good}");
        }
    }

    #[test]
    fn headers_are_decoded_and_bad_entries_warned_without_their_value() {
        let (c, w) = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s%20ecret, bad key=hidden-secret,novalue,x=%zz",
            ),
        ]);
        assert_eq!(
            c.otel.destinations[0].headers,
            [("api-key".to_owned(), "s ecret".to_owned())]
        );
        let values: Vec<&str> = w.iter().map(|w| w.value.as_str()).collect();
        assert_eq!(values, ["bad key=…", "novalue", "x=…"]);
        assert!(
            !format!("{w:?}{c:?}").contains("secret"),
            "secrets stay out of messages"
        );
    }

    #[test]
    fn langsmith_needs_its_key_and_uses_its_otel_endpoint() {
        let (c, w) = read(&[("LANGSMITH_LOGGING", "true")]);
        assert!(!c.otel.exporting());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].variable, "LANGSMITH_API_KEY");
        assert!(w[0].to_string().contains("required"), "{}", w[0]);

        let (c, w) = read(&[
            ("LANGSMITH_LOGGING", "true"),
            ("LANGSMITH_API_KEY", "lsv2_key"),
            ("LANGSMITH_PROJECT", "jobs"),
        ]);
        assert!(w.is_empty());
        let d = &c.otel.destinations[0];
        assert_eq!(d.name, "langsmith");
        assert_eq!(d.url, "https://api.smith.langchain.com/otel/v1/traces");
        assert_eq!(
            d.headers,
            [
                ("x-api-key".to_owned(), "lsv2_key".to_owned()),
                ("Langsmith-Project".to_owned(), "jobs".to_owned())
            ]
        );
        for (endpoint, url) in [
            (
                "https://eu.api.smith.langchain.com",
                "https://eu.api.smith.langchain.com/otel/v1/traces",
            ),
            (
                "http://127.0.0.1:9/otel/",
                "http://127.0.0.1:9/otel/v1/traces",
            ),
        ] {
            let (c, _) = read(&[
                ("LANGSMITH_LOGGING", "true"),
                ("LANGSMITH_API_KEY", "k"),
                ("LANGSMITH_ENDPOINT", endpoint),
            ]);
            assert_eq!(c.otel.destinations[0].url, url);
        }
    }

    #[test]
    fn traceparent_values() {
        let good = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(good).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        let (c, w) = read(&[("TRACEPARENT", "garbage")]);
        assert_eq!(c.otel.traceparent, None);
        assert_eq!(w[0].variable, "TRACEPARENT");
    }

    #[test]
    fn timeout_queue_and_resource_values() {
        let (c, w) = read(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
            ("OTEL_SERVICE_NAME", "jobs"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=a%2Cb",
            ),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.otel.timeout, Duration::from_millis(2500));
        assert_eq!(c.otel.queue_size, 64);
        assert_eq!(c.otel.service_name.as_deref(), Some("jobs"));
        assert_eq!(
            c.otel.resource_attributes[1],
            ("team".to_owned(), "a,b".to_owned())
        );
        let (c, w) = read(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ]);
        assert_eq!(c.otel.timeout, Duration::from_secs(10));
        assert_eq!(c.otel.queue_size, 2048);
        assert_eq!(w.len(), 2);
    }
}
