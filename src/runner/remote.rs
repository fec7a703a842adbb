//! A runner without children: its jobs run elsewhere (on the workers of a
//! broker) and are mirrored into its data directory, which is then a cache.
//!
//! Such a runner serves the same page and API from the mirrored jobs: a
//! mirrored job's lines are appended to its log with the numbers they have
//! on the broker, so every route that reads a job's lines (replay, search,
//! the log, `Last-Event-ID`) works unchanged and hands out the same ids on
//! every node. What changes jobs (create, cancel, delete, re-run) is asked
//! of the [`Remote`], which the broker's module implements.

use std::future::Future;
use std::pin::Pin;

use super::error::RunnerError;
use super::model::Summary;

/// A boxed future of a remote request.
pub(crate) type RemoteFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, RunnerError>> + Send + 'a>>;

/// Whoever runs a mirroring runner's jobs.
pub(crate) trait Remote: Send + Sync + std::fmt::Debug {
    /// Queues a new job `id` (re-running `rerun_of`, if given); returns
    /// its summary, queued.
    fn submit(&self, id: String, rerun_of: Option<String>) -> RemoteFuture<'_, Summary>;
    /// Cancels job `id` wherever it is, queued or running.
    fn cancel<'a>(&'a self, id: &'a str) -> RemoteFuture<'a, ()>;
    /// Deletes finished job `id` everywhere.
    fn delete<'a>(&'a self, id: &'a str) -> RemoteFuture<'a, ()>;
    /// Mirrors job `id` here now if the broker has it (a job this node
    /// has not heard of yet); false when it does not, or cannot say.
    fn fetch<'a>(&'a self, id: &'a str) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
    /// What `GET /api/health` adds: the role, where the broker is.
    fn health(&self) -> serde_json::Map<String, serde_json::Value>;
}
