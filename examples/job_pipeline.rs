//! The reference job-application pipeline, from the command line.
//!
//! ```text
//! cargo run --example job_pipeline --features reference -- --job-id demo
//! cargo run --example job_pipeline --features reference -- --speed 0 --fail people_mapper --skip generator
//! STRUCTURED_LOGGING=false cargo run --example job_pipeline --features reference
//! ```
//!
//! Every line on stdout is one event of the schema (docs/schema.md). The
//! pipeline's code lives in `tracing_pipeline::reference`, which the runner
//! runs too.

fn main() -> std::process::ExitCode {
    tracing_pipeline::reference::main(std::env::args_os())
}
