//! The page's JavaScript unit tests (`tests/page_js/*.test.mjs`) under
//! node's built-in test runner: the pure state reducer, the stream hub, the
//! ANSI rendering (hostile input included), formatting and the colour
//! contrast of both themes.
//!
//! Needs `node` (18 or newer). Without it the test says so loudly and passes,
//! unless `PIPELINE_REQUIRE_BROWSER=1` (set by `bash scripts/test.sh`, which
//! installs Debian's `nodejs` when `node` is missing) makes that a failure.

use std::io::Write;
use std::path::Path;
use std::process::Command;

#[test]
fn page_modules_pass_their_node_tests() {
    let node = std::env::var_os("PIPELINE_NODE").unwrap_or_else(|| "node".into());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(dir.join("tests/page_js"))
        .expect("tests/page_js exists")
        .map(|entry| entry.expect("readable directory").path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests in tests/page_js");
    let output = match Command::new(&node)
        .arg("--test")
        .args(&files)
        .current_dir(dir)
        .output()
    {
        Ok(output) => output,
        Err(err) => {
            let required = std::env::var("PIPELINE_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
            let message = format!(
                "\n==================================================================\n\
                 PAGE JS TESTS {}: cannot run {node:?}: {err}\n\
                 Install node with:  apt-get install -y nodejs\n\
                 or run the suite with:  bash scripts/test.sh\n\
                 ==================================================================\n",
                if required { "FAILED" } else { "SKIPPED" }
            );
            assert!(!required, "{message}PIPELINE_REQUIRE_BROWSER=1 is set");
            let _ = std::io::stderr().write_all(message.as_bytes());
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node --test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let passed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok());
    assert!(
        passed.is_some_and(|n| n > 0),
        "node ran no test:\n{stdout}\n{stderr}"
    );
}
