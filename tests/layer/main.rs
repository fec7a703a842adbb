//! The layer's behaviour, one module per behaviour, in one test binary
//! (one link instead of sixteen). Tests that install something process-wide
//! (a global subscriber, the `log` bridge) or measure the process stay in
//! files of their own: `test_init.rs`, `test_log_records.rs`,
//! `test_diagnostics.rs`, `test_soak_short.rs`.

#[path = "../common/mod.rs"]
mod common;

mod concurrency;
mod duration;
mod errors;
mod golden;
mod hostile;
mod human;
mod job_id;
mod log_filter;
mod output;
mod pipeline_status;
mod properties;
mod skips;
mod smoke;
mod spans;
mod stacks;
mod writers;
