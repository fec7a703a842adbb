//! `pipeline-view`: watch a pipeline run in a terminal. See the
//! `tracing_pipeline::view` module docs and `docs/view.md`.

fn main() -> std::process::ExitCode {
    tracing_pipeline::view::main(std::env::args_os())
}
