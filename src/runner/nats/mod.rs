//! Jobs, lines and job state through NATS JetStream (feature `nats`): many
//! workers on any hosts, one shared broker.
//!
//! The single-process runner keeps everything in its data directory. With
//! this module the same pieces live on a NATS server (or cluster) with
//! JetStream enabled instead:
//!
//! * a **work-queue stream** of job requests: each is taken by exactly one
//!   worker ([`submit_job`] puts one there);
//! * an **events stream** with one subject per job, `pipeline.events.<job>`,
//!   holding every line of the job, each message carrying the line's
//!   sequence number (the same number the single-process runner uses as its
//!   SSE id) and the message id `<job>:<seq>`, so that a retried publish is
//!   stored once ([`Bus::replay`] reads a job's lines back after a given
//!   sequence and then follows);
//! * a **key-value bucket of job state** (queued, running on which worker,
//!   finished, and the job's summary), written with compare-and-set so that
//!   two nodes never both decide a job's end;
//! * a **key-value bucket of worker liveness** whose entries expire on the
//!   server when a worker stops heartbeating, which is what
//!   [`end_lost_jobs`] looks for.
//!
//! [`run_worker`] is the worker role (`pipeline-runner worker --nats URL --
//! COMMAND`): it runs each job it takes with a local [`Runner`](super::Runner)
//! (the same child handling, classification and numbering as the
//! single-process runner; its data directory is the worker's durable
//! buffer) and forwards each job's stored lines to the events stream.
//!
//! [`open_web_node`] is the web role (`pipeline-runner serve --nats URL`):
//! a [`Runner`](super::Runner) that runs no children and mirrors the
//! broker's jobs into its data directory (a cache), each line stored with
//! its number on the broker, so that the same page, API and SSE streams as
//! the single-process runner's are served by any number of web nodes, with
//! the same SSE ids on each; creating, cancelling and deleting jobs go to
//! the broker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tracing_pipeline::runner::nats::{open_web_node, BusConfig, WebNodeConfig};
//! use tracing_pipeline::runner::{serve, shutdown_signal, RunnerOptions};
//!
//! let runner = open_web_node(WebNodeConfig {
//!     bus: BusConfig::new("nats://127.0.0.1:4222"),
//!     data_dir: "./pipeline-web-data".into(),
//!     node_id: None,
//!     options: RunnerOptions::default(),
//! })
//! .await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! serve(listener, runner, shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! `docs/distributed.md` describes the subjects, streams, buckets, the
//! sequence mapping, the lost-worker rule, what is buffered and how much,
//! and a deployment.

mod bus;
mod cli;
mod lost;
mod web;
mod worker;

pub use bus::{
    submit_job, Bus, BusConfig, EventLine, JobPhase, JobState, NatsError, Replay, WorkerInfo,
    CANCEL_PREFIX, EVENTS_PREFIX, EVENTS_STREAM, JOBS_STREAM, JOBS_SUBJECT, REPLAY_HOLD,
    SEQ_HEADER, STATE_BUCKET, WORKERS_BUCKET, WORKER_CONSUMER,
};
pub use cli::{worker_main, BusArgs};
pub use lost::{end_lost_job, end_lost_jobs, WORKER_LOST};
pub use web::{open_web_node, WebNodeConfig, CANCEL_TIMEOUT, CATCH_UP, MISSING_LINES_GRACE};
pub use worker::{run_worker, WorkerConfig};
