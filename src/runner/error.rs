//! [`RunnerError`]: everything that can go wrong in the runner, each variant
//! saying when it happens. The HTTP surface turns each into a status code
//! and a JSON `{"error":"..."}` whose text is the variant's message.

use std::path::PathBuf;

/// What can go wrong in the runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// A job id (in a path, a body or a parameter) that is empty, longer
    /// than 64 bytes, or has a character outside `[A-Za-z0-9_-]`.
    #[error("invalid job id: use 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidJobId,
    /// A job with this id exists already (running or in the data directory).
    #[error("job {0} already exists")]
    DuplicateJob(String),
    /// No job has this id.
    #[error("no job {0}")]
    UnknownJob(String),
    /// Cancelling a job that has already ended.
    #[error("job {0} has already finished")]
    AlreadyFinished(String),
    /// Deleting or re-running a job that is still queued or running.
    #[error("job {0} has not finished: cancel it first")]
    NotFinished(String),
    /// A new job was requested while the runner is shutting down.
    #[error("the runner is shutting down")]
    ShuttingDown,
    /// The runner was given an empty command.
    #[error("the pipeline command is empty")]
    EmptyCommand,
    /// The data directory cannot be created, read or written.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Another runner (in this or another process) has the data directory
    /// open: two runners would number and write the same jobs' lines.
    #[error("data directory {0} is in use by another runner (its lock file .lock is held)")]
    DataDirInUse(PathBuf),
    /// A request named a query parameter that its route does not take.
    #[error("unknown parameter {name:?}: this route takes {allowed}")]
    UnknownParameter {
        /// The parameter as given.
        name: String,
        /// The parameters the route takes, for the message.
        allowed: &'static str,
    },
    /// A request gave a parameter twice that may be given once.
    #[error("parameter {0:?} is given more than once")]
    RepeatedParameter(String),
    /// A request gave a parameter a value it cannot have.
    #[error("parameter {name:?}: {problem}")]
    BadParameter {
        /// The parameter.
        name: String,
        /// What is wrong, and what it accepts.
        problem: String,
    },
    /// A query string that does not decode as `name=value&...`.
    #[error("the query string cannot be decoded")]
    BadQuery,
    /// A request body that is not what the route takes.
    #[error("{0}")]
    BadBody(String),
    /// A request body over the limit.
    #[error("request body over {0} KiB")]
    BodyTooLarge(usize),
    /// A `Last-Event-ID` header that is not a line number.
    #[error("bad Last-Event-ID: it must be the number of the last line received")]
    BadLastEventId,
    /// A request whose `Host` the runner was not told to serve.
    #[error("unknown Host: start the runner with --allow-host NAME to serve this name")]
    UnknownHost,
    /// A write (POST) from a page of another origin.
    #[error("cross-origin request refused")]
    CrossOrigin,
    /// A path that no route serves.
    #[error("not found")]
    NoRoute,
    /// A route asked with a method it does not take.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A web node cannot do what was asked now: the broker cannot be
    /// reached, or no worker answered for the job.
    #[error("{0}")]
    Unavailable(String),
}
