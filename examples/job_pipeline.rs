//! The reference job-application pipeline, from the command line.
//!
//! ```text
//! cargo run --example job_pipeline --features reference -- --job-id demo
//! cargo run --example job_pipeline --features reference -- --speed 0 --fail people_mapper --skip generator
//! STRUCTURED_LOGGING=false cargo run --example job_pipeline --features reference
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 cargo run --example job_pipeline --features reference,otel
//! ```
//!
//! Every line on stdout is one event of the schema (docs/schema.md). The
//! pipeline's code lives in `tracing_pipeline::reference`, which the runner
//! runs too. It installs the layer with `init_guarded`, so with the `otel`
//! feature and an OTLP endpoint in the environment its spans are exported
//! and the last ones sent before it exits.

fn main() -> std::process::ExitCode {
    tracing_pipeline::reference::main(std::env::args_os())
}
