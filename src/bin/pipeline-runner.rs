//! Placeholder: the runner binary is being written.
fn main() {}
