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
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, Format};
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

    /// The subscriber [`init`] installs (a registry with this
    /// configuration's layer and nothing else), writing to `make_writer`:
    /// for a scoped subscriber in tests (`tracing::subscriber::with_default`)
    /// or to install yourself. Being the only layer, its log filter also
    /// filters globally: an event that `LOG_LEVEL` hides costs about what it
    /// costs with no subscriber at all. To add other layers, build your own
    /// subscriber with [`Config::layer`] instead.
    pub fn subscriber<W>(
        &self,
        make_writer: W,
    ) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        tracing_subscriber::registry().with(self.layer().with_writer(make_writer).sole())
    }

    /// Installs [`Config::subscriber`] on stdout as the global subscriber,
    /// with the panic hook, and bridges the `log` crate into it. Prints
    /// nothing.
    pub fn try_init(&self) -> Result<(), InitError> {
        crate::layer::panic::install_hook();
        self.subscriber(std::io::stdout).try_init()?;
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
