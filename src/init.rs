//! [`init`] and [`try_init`]: the one-call setup from the environment.
//!
//! They read [`Config::from_env`], print one stderr line per unusable
//! value, install the panic hook (for panic messages in `layer_error`), and
//! set a registry with a [`PipelineLayer`] writing to stdout as the global
//! subscriber.

use std::io::{IsTerminal as _, Write as _};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, Format};
use crate::layer::PipelineLayer;

/// Why [`try_init`] could not install the layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// Another global subscriber (or `log` logger) was installed first.
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

impl Config {
    /// The [`PipelineLayer`] this configuration describes, writing to stdout
    /// (with colours in the human format when stdout is a terminal).
    pub fn layer(&self) -> PipelineLayer {
        PipelineLayer::new()
            .with_format(self.format)
            .with_ansi(self.format == Format::Human && std::io::stdout().is_terminal())
            .with_log_filter(self.log_filter())
    }

    /// Installs [`Config::layer`] as the global subscriber, with the panic
    /// hook. Prints nothing.
    pub fn try_init(&self) -> Result<(), InitError> {
        crate::layer::panic::install_hook();
        tracing_subscriber::registry()
            .with(self.layer())
            .try_init()?;
        Ok(())
    }
}

/// Installs the layer as the global subscriber, configured from the
/// environment (`STRUCTURED_LOGGING`, `LOG_LEVEL`, `LANGSMITH_LOGGING`).
///
/// Invalid values never abort: each is reported on one stderr line and the
/// default is used.
///
/// # Panics
///
/// When a global subscriber is already installed, like
/// `tracing_subscriber::fmt().init()`. Use [`try_init`] to get an error.
pub fn init() {
    if let Err(e) = try_init() {
        panic!("tracing_pipeline::init: {e}");
    }
}

/// Like [`init`], but returns an error when a global subscriber is already
/// installed.
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
