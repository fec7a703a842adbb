//! Watch a multi-stage pipeline run, live, from plain `tracing` spans.
//! (Crate guide: being written.)

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod event;
mod init;
mod layer;

#[cfg(feature = "reference")]
#[cfg_attr(docsrs, doc(cfg(feature = "reference")))]
pub mod reference;

#[cfg(feature = "runner")]
#[cfg_attr(docsrs, doc(cfg(feature = "runner")))]
pub mod runner;

pub use config::{Config, ConfigWarning, Format};
pub use event::{EventKind, Level, PipelineEvent, Status};
pub use init::{init, try_init, InitError};
pub use layer::panic::install_hook as install_panic_hook;
pub use layer::PipelineLayer;
