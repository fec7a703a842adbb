//! [`init`] and [`try_init`]: the one-call setup from the environment.
//!
//! They read [`Config::from_env`], print one stderr line per unusable
//! value, install the panic hook (for panic messages in `layer_error`), set
//! a registry with a [`PipelineLayer`] writing to stdout as the global
//! subscriber, and bridge the `log` crate into it, as
//! `tracing_subscriber::fmt().init()` does: the `log` records of your
//! dependencies become `log` lines with their real target, inside the stage
//! that was running.
//!
//! With the `otel` feature, when the environment names an OTLP endpoint or
//! turns LangSmith on, they also add `tracing-opentelemetry` with an OTLP
//! exporter after the layer (so the layer sets each span's outcome before
//! it is exported). [`init_guarded`] returns a [`FlushGuard`] that sends the
//! last spans when it is dropped; [`init`] instead flushes when the
//! outermost pipeline span closes. Either waits at most
//! [`FLUSH_TIMEOUT`].

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

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

/// The longest the program waits for its last spans to be sent, at the end
/// of the outermost pipeline span ([`init`]) or when the [`FlushGuard`] is
/// dropped; after that they are counted as lost. The pipeline itself never
/// waits for the export.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Returned by [`init_guarded`]: keep it until the end of `main`. Dropping
/// it sends the spans still queued and stops the export, waiting at most
/// [`FLUSH_TIMEOUT`], then reports on stderr how many spans were lost, if
/// any. Without the `otel` feature, or when nothing is exported, it does
/// nothing.
///
/// ```no_run
/// let _guard = tracing_pipeline::init_guarded();
/// // ... run the pipeline; at the end of `main` the last spans are sent.
/// ```
#[must_use = "dropping the guard ends the export: keep it until the end of main"]
pub struct FlushGuard {
    #[cfg(feature = "otel")]
    exporting: Option<std::sync::Arc<crate::otel::Exporting>>,
}

impl std::fmt::Debug for FlushGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushGuard")
            .field("exporting", &self.is_exporting())
            .finish()
    }
}

impl FlushGuard {
    fn none() -> Self {
        FlushGuard {
            #[cfg(feature = "otel")]
            exporting: None,
        }
    }

    /// Whether spans are being exported.
    pub fn is_exporting(&self) -> bool {
        #[cfg(feature = "otel")]
        return self.exporting.is_some();
        #[cfg(not(feature = "otel"))]
        false
    }

    /// Sends the spans queued so far, waiting at most [`FLUSH_TIMEOUT`].
    pub fn flush(&self) {
        #[cfg(feature = "otel")]
        if let Some(e) = &self.exporting {
            e.flush();
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(e) = self.exporting.take() {
            e.shutdown(FLUSH_TIMEOUT);
        }
    }
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
    /// with the panic hook, and bridges the `log` crate into it; with the
    /// `otel` feature and an export configured, adds the OpenTelemetry
    /// export, flushed when the outermost pipeline span closes. Prints
    /// nothing but problems of the export (one stderr line each).
    pub fn try_init(&self) -> Result<(), InitError> {
        // The export lives as long as the global subscriber: forever.
        std::mem::forget(self.install(false)?);
        Ok(())
    }

    /// Like [`Config::try_init`], with the export flushed and stopped when
    /// the returned guard is dropped instead of at each pipeline's end.
    pub fn try_init_guarded(&self) -> Result<FlushGuard, InitError> {
        self.install(true)
    }

    fn install(&self, guarded: bool) -> Result<FlushGuard, InitError> {
        crate::layer::panic::install_hook();
        let guard = self.install_subscriber(guarded)?;
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
        Ok(guard)
    }

    #[cfg(not(feature = "otel"))]
    fn install_subscriber(&self, _guarded: bool) -> Result<FlushGuard, InitError> {
        self.subscriber(std::io::stdout).try_init()?;
        Ok(FlushGuard::none())
    }

    #[cfg(feature = "otel")]
    fn install_subscriber(&self, guarded: bool) -> Result<FlushGuard, InitError> {
        use std::sync::Arc;

        let mut problems = Vec::new();
        let installed = crate::otel::install(&self.otel, &mut problems);
        let mut stderr = std::io::stderr().lock();
        for p in &problems {
            let _ = writeln!(stderr, "{p}");
        }
        drop(stderr);
        let Some((tracer, exporting)) = installed else {
            self.subscriber(std::io::stdout).try_init()?;
            return Ok(FlushGuard::none());
        };
        let exporting = Arc::new(exporting);
        let flush_at_end =
            (!guarded).then(|| crate::otel::FlushAtPipelineEnd(Arc::clone(&exporting)));
        let subscriber = tracing_subscriber::registry()
            .with(self.layer().with_writer(std::io::stdout).sole())
            .with(crate::otel::QuietExportThreads)
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .with(flush_at_end);
        if let Err(e) = subscriber.try_init() {
            exporting.shutdown(Duration::ZERO);
            return Err(e.into());
        }
        Ok(FlushGuard {
            exporting: Some(exporting),
        })
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
    env_config().try_init()
}

/// Like [`init`], and returns a [`FlushGuard`]: keep it until the end of
/// `main`, so that the spans of the last pipeline are sent before the
/// program exits (waiting at most [`FLUSH_TIMEOUT`]). Without the `otel`
/// feature it is [`init`].
///
/// # Panics
///
/// As [`init`].
pub fn init_guarded() -> FlushGuard {
    match try_init_guarded() {
        Ok(guard) => guard,
        Err(e @ InitError::LogLoggerInstalled(_)) => {
            let _ = writeln!(std::io::stderr(), "tracing-pipeline: {e}");
            FlushGuard::none()
        }
        Err(e) => panic!("tracing_pipeline::init_guarded: {e}"),
    }
}

/// Like [`init_guarded`], but returns an error when a global subscriber (or
/// a `log` logger) is already installed.
pub fn try_init_guarded() -> Result<FlushGuard, InitError> {
    env_config().try_init_guarded()
}

/// [`Config::from_env`], its warnings printed.
fn env_config() -> Config {
    let (config, warnings) = Config::from_env();
    let mut stderr = std::io::stderr().lock();
    for w in &warnings {
        let _ = writeln!(stderr, "{w}");
    }
    if cfg!(not(feature = "otel")) {
        if config.langsmith {
            let _ = writeln!(
                stderr,
                "tracing-pipeline: LANGSMITH_LOGGING=true, but this build has no OpenTelemetry export (the `otel` feature); events go to stdout only"
            );
        } else if config.otel.exporting() {
            let _ = writeln!(
                stderr,
                "tracing-pipeline: an OTLP endpoint is set, but this build has no OpenTelemetry export (the `otel` feature); events go to stdout only"
            );
        }
    }
    drop(stderr);
    config
}
