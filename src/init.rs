//! [`init`] and [`try_init`]: the one-call setup from the environment.
//!
//! They read [`Config::from_env`], print one stderr line per unusable
//! value, install the panic hook (for panic messages in `layer_error`), set
//! a registry with a [`PipelineLayer`] writing to stdout as the global
//! subscriber, and bridge the `log` crate into it, as
//! `tracing_subscriber::fmt().init()` does: the `log` records of your
//! dependencies become `log` lines with their real target, inside the stage
//! that was running.

use std::io::{IsTerminal as _, Write as _};

use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, Filtered, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, Format};
use crate::filter::KeepStages;
use crate::layer::PipelineLayer;

/// Why [`try_init`] could not install the layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// Another global subscriber was installed first.
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
    /// Another `log` logger was installed first; the layer is installed,
    /// but `log` records do not reach it.
    #[error("a `log` logger is already installed, so `log` records do not reach the layer: {0}")]
    LogLoggerInstalled(#[from] tracing_log::log::SetLoggerError),
}

impl Config {
    /// The [`PipelineLayer`] this configuration describes, writing to stdout
    /// (with colours in the human format when stdout is a terminal), its log
    /// filter inside the layer: for adding it to a subscriber of your own.
    pub fn layer(&self) -> PipelineLayer {
        PipelineLayer::new()
            .with_format(self.format)
            .with_ansi(self.format == Format::Human && std::io::stdout().is_terminal())
            .with_log_filter(self.log_filter())
    }

    /// The layer exactly as [`init`] installs it, writing to `make_writer`:
    /// the log filter is also a per-layer filter in front of the layer, so
    /// an event that `LOG_LEVEL` filters out (and no other layer wants)
    /// costs about what it costs with no subscriber at all. Pipeline and
    /// stage spans of every level and ERROR events always pass it.
    pub fn filtered_layer<W, S>(
        &self,
        make_writer: W,
    ) -> Filtered<PipelineLayer<W>, KeepStages<EnvFilter>, S>
    where
        W: for<'w> MakeWriter<'w> + 'static,
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let filter = self.log_filter();
        // Only span directives (`target[span]=level`) need span lifecycles.
        let follow_spans = filter.to_string().contains('[');
        self.layer()
            .with_writer(make_writer)
            .prefiltered()
            .with_filter(KeepStages::for_layer(filter, follow_spans))
    }

    /// Installs [`Config::filtered_layer`] on stdout as the global
    /// subscriber, with the panic hook, and bridges the `log` crate into it.
    /// Prints nothing.
    pub fn try_init(&self) -> Result<(), InitError> {
        crate::layer::panic::install_hook();
        tracing_subscriber::registry()
            .with(self.filtered_layer(std::io::stdout))
            .try_init()?;
        // `log` records are events, never spans: the bridge may skip what
        // `LOG_LEVEL` filters out (ERROR always passes, for attribution).
        let most_verbose = self
            .log_filter()
            .max_level_hint()
            .unwrap_or(LevelFilter::TRACE)
            .max(LevelFilter::ERROR);
        tracing_log::LogTracer::builder()
            .with_max_level(tracing_log::AsLog::as_log(&most_verbose))
            .init()?;
        Ok(())
    }
}

/// Installs the layer as the global subscriber, configured from the
/// environment (`STRUCTURED_LOGGING`, `LOG_LEVEL`, `LANGSMITH_LOGGING`), and
/// bridges `log` records into it.
///
/// Invalid values never abort: each is reported on one stderr line and the
/// default is used.
///
/// # Panics
///
/// When a global subscriber is already installed, like
/// `tracing_subscriber::fmt().init()`. Use [`try_init`] to get an error. A
/// `log` logger installed before is not a panic: one stderr line says that
/// `log` records do not reach the layer.
pub fn init() {
    match try_init() {
        Ok(()) => {}
        Err(e @ InitError::LogLoggerInstalled(_)) => {
            let _ = writeln!(std::io::stderr(), "tracing-pipeline: {e}");
        }
        Err(e) => panic!("tracing_pipeline::init: {e}"),
    }
}

/// Like [`init`], but returns an error when a global subscriber (or a `log`
/// logger) is already installed.
pub fn try_init() -> Result<(), InitError> {
    let (config, warnings) = Config::from_env();
    let mut stderr = std::io::stderr().lock();
    for w in &warnings {
        let _ = writeln!(stderr, "{w}");
    }
    if config.langsmith {
        let _ = writeln!(
            stderr,
            "tracing-pipeline: LANGSMITH_LOGGING=true, but forwarding to LangSmith is not available in this build; events go to stdout only"
        );
    }
    drop(stderr);
    config.try_init()
}
