//! `pipeline-view` in a real pseudo-terminal: tmux runs it in a detached
//! pane of a chosen size and `tmux capture-pane -p` reads the screen back.
//! The reference pipeline runs with a failure and a skip (as
//! `pipeline-runner reference`, hence the `runner` feature), at 80 and 40
//! columns, and with the pane resized mid-run (80 to 40, 40 to 80).
//! Hostile output (escape sequences that would clear the screen or move the
//! cursor) must not change anything but the lines it is printed on.
//!
//! Needs `tmux` (scripts/test.sh installs it).
#![cfg(all(feature = "view", feature = "runner"))]

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const VIEW: &str = env!("CARGO_BIN_EXE_pipeline-view");
const RUNNER: &str = env!("CARGO_BIN_EXE_pipeline-runner");
const TIMEOUT: Duration = Duration::from_secs(60);

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `script` (run by `sh -c`) in a `cols`×`rows` pane; the pane
    /// prints `EXIT=<status>` when the view ends, and stays.
    fn start(script: &str, cols: u16, rows: u16) -> Tmux {
        static N: AtomicU64 = AtomicU64::new(0);
        let socket = format!(
            "tp-view-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let t = Tmux { socket };
        let full = format!("{script}; echo EXIT=$?; exec sleep 600");
        let status = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "v",
            ])
            .args(["-x", &cols.to_string(), "-y", &rows.to_string()])
            .args(["-e", "TERM=xterm-256color"])
            .args(["sh", "-c", &full])
            .status()
            .expect("tmux is needed for this test (scripts/test.sh installs it)");
        assert!(status.success(), "tmux new-session failed");
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The screen and its scrollback.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-", "-t", "v"])
    }

    /// The screen alone.
    fn visible(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "v"])
    }

    /// Polls the screen until `pred` holds; fails after [`TIMEOUT`].
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&self) -> (String, i32) {
        let screen = self.wait_for("the view to exit", |s| s.contains("EXIT="));
        let code = screen
            .lines()
            .find_map(|l| l.trim().strip_prefix("EXIT="))
            .and_then(|c| c.parse().ok())
            .expect("an exit status");
        (screen, code)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// Durations (`402ms`, `3.21s`, `0.4s`, `1m05s`) become `<t>`.
fn normalise(line: &str) -> String {
    line.split(' ')
        .map(|w| {
            let core = w.trim_end_matches('…');
            let is_time = (core.ends_with("ms")
                && core[..core.len() - 2].bytes().all(|b| b.is_ascii_digit()))
                || (core.ends_with('s')
                    && !core[..core.len() - 1].is_empty()
                    && core[..core.len() - 1]
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'm'));
            if is_time && core.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                "<t>".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The lines from the last block header to the exit marker, normalised.
fn final_block(screen: &str) -> Vec<String> {
    let lines: Vec<&str> = screen.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("job demo  "))
        .unwrap_or_else(|| panic!("no block header on the screen:\n{screen}"));
    lines[start..]
        .iter()
        .take_while(|l| !l.starts_with("EXIT="))
        .map(|l| normalise(l))
        .collect()
}

fn reference(speed: &str) -> String {
    format!(
        "{VIEW} -- {RUNNER} reference --job-id demo --speed {speed} --fail people_mapper --skip generator"
    )
}

#[test]
fn reference_pipeline_at_80_columns() {
    let t = Tmux::start(&reference("0.05"), 80, 40);
    let (screen, code) = t.wait_exit();
    assert_eq!(code, 0, "partial exits 0:\n{screen}");
    let block = final_block(&screen);
    let want = [
        "job demo  partial in <t>",
        "  ✓ 2   pain_point_miner    <t>",
        "  ✓ 2.5 star_selector       <t>",
        "  ✓ 3   company_researcher  <t>",
        "  ✓ 3   role_researcher     <t>",
        "  ✓ 4   opportunity_mapper  <t>",
        "  ✗ 5   people_mapper       <t> people_mapper failed: injected failure",
        "  ↷ 6   generator           skipped",
        "  ✓ 7   publisher           <t>",
        "",
        "job demo: partial",
        "  stages   6 complete, 1 error, 1 skipped",
        "  time     <t>",
    ];
    assert_eq!(block[..want.len()], want, "screen:\n{screen}");
    assert!(block[want.len()].starts_with("  slowest  "), "{block:#?}");
    assert_eq!(block[want.len() + 1], "  tokens   1200");
    // Logs and the error's text scrolled above the block.
    assert!(screen.contains("info opportunity_mapper: mapped the opportunity fit_score=85"));
    assert!(screen.contains("error people_mapper: people_mapper failed: injected failure"));
    // ... once: the stage's end repeats the error it logged, and is not printed again.
    assert!(!screen.contains("✗ people_mapper:"), "{screen}");
}

#[test]
fn reference_pipeline_at_40_columns() {
    let t = Tmux::start(&reference("0.05"), 40, 40);
    let (screen, code) = t.wait_exit();
    assert_eq!(code, 0, "{screen}");
    let block = final_block(&screen);
    let want = [
        "job demo  partial in <t>",
        "  ✓ 2   pain_point_miner    <t>",
        "  ✓ 2.5 star_selector       <t>",
        "  ✓ 3   company_researcher  <t>",
        "  ✓ 3   role_researcher     <t>",
        "  ✓ 4   opportunity_mapper  <t>",
    ];
    assert_eq!(block[..want.len()], want, "screen:\n{screen}");
    assert!(
        block[6].starts_with("  ✗ 5   people_mapper       <t> "),
        "{}",
        block[6]
    );
    assert!(
        block[6].ends_with('…'),
        "the error is cut to the width: {}",
        block[6]
    );
    assert_eq!(block[7], "  ↷ 6   generator           skipped");
    assert_eq!(block[8], "  ✓ 7   publisher           <t>");
    assert_eq!(block[10], "job demo: partial");
    assert_eq!(block[11], "  stages   6 complete, 1 error,");
    assert_eq!(block[12], "           1 skipped");
    // Nothing of the block reaches the last column (no terminal wrap).
    for line in screen.lines().skip_while(|l| !l.starts_with("job demo  ")) {
        assert!(
            line.chars().count() <= 39,
            "{line:?} is wider than 39 columns"
        );
    }
}

/// Runs the reference pipeline at `from` columns, resizes the pane to `to`
/// mid-run, and checks the final screen: one block, every stage once in
/// order, nothing wider than the terminal, and no log line lost or doubled
/// (a terminal that reflows its lines re-cuts the old block on a resize).
fn resized_mid_run(from: u16, to: u16) {
    let t = Tmux::start(&reference("3"), from, 50);
    t.wait_for("two stages done", |s| {
        s.contains("job demo  running") && s.contains("✓ 2.5")
    });
    t.tmux(&[
        "resize-window",
        "-t",
        "v",
        "-x",
        &to.to_string(),
        "-y",
        "50",
    ]);
    let (screen, code) = t.wait_exit();
    assert_eq!(code, 0, "{screen}");
    // (When the terminal pushed rows of the old block into its scrollback
    // on the reflow, they stay there: only the screen can be redrawn.)
    let visible = t.visible();
    let headers = visible
        .lines()
        .filter(|l| l.starts_with("job demo  "))
        .count();
    assert_eq!(
        headers, 1,
        "a stale block is left on the screen:\n{visible}"
    );
    let block = final_block(&screen);
    assert_eq!(block[0], "job demo  partial in <t>", "{screen}");
    let names: Vec<&str> = block[1..9]
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "pain_point_miner",
            "star_selector",
            "company_researcher",
            "role_researcher",
            "opportunity_mapper",
            "people_mapper",
            "generator",
            "publisher"
        ],
        "{screen}"
    );
    for line in &block[..9] {
        assert!(line.chars().count() < usize::from(to), "{line:?}");
    }
    // The log lines (above the last block, scrollback included), joined
    // back where the terminal wrapped them.
    let all: Vec<&str> = screen.lines().collect();
    let last_block = all
        .iter()
        .rposition(|l| l.starts_with("job demo  "))
        .unwrap();
    let joined: String = all[..last_block].concat();
    for log in [
        "info star_selector: selected STAR stories stars_selected=3",
        "info opportunity_mapper: mapped the opportunity fit_score=85",
        "error people_mapper: people_mapper failed: injected failure",
        "info publisher: published documents destination=drive",
    ] {
        assert_eq!(
            joined.matches(log).count(),
            1,
            "{log:?} not once in:\n{screen}"
        );
    }
}

#[test]
fn resized_from_80_to_40_columns_mid_run() {
    resized_mid_run(80, 40);
}

#[test]
fn resized_from_40_to_80_columns_mid_run() {
    resized_mid_run(40, 80);
}

#[test]
fn hostile_output_stays_on_its_own_lines() {
    let dir = std::env::temp_dir().join(format!("tp-view-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("stream");
    let mut bytes: Vec<u8> = Vec::new();
    let ev = |s: &str| format!("{s}\n").into_bytes();
    bytes.extend(ev(
        r#"{"timestamp":"2025-11-29T10:30:45.123Z","event":"pipeline_start","job_id":"demo"}"#,
    ));
    bytes.extend(ev(r#"{"timestamp":"2025-11-29T10:30:45.123Z","event":"layer_start","layer":3,"layer_name":"company_researcher","job_id":"demo"}"#));
    bytes.extend(b"\x1b[2J\x1b[1;1Hcleared? \x1b[31mred\x1b[0m\n");
    bytes.extend(b"up \x1b[3A\x1b[2K and \r over \xff\xfe\n");
    bytes.extend(vec![b'z'; 200_000]);
    bytes.push(b'\n');
    bytes.extend(ev(r#"{"timestamp":"2025-11-29T10:30:45.123Z","event":"layer_start","layer":3,"layer_name":"role_researcher","job_id":"demo"}"#));
    bytes.extend(ev(r#"{"timestamp":"2025-11-29T10:30:45.200Z","event":"layer_complete","layer":3,"layer_name":"role_researcher","job_id":"demo","status":"success","duration_ms":77}"#));
    std::fs::write(&file, &bytes).unwrap();
    let t = Tmux::start(&format!("{VIEW} < {}", file.display()), 40, 40);
    let (screen, code) = t.wait_exit();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 2, "no pipeline_complete: {screen}");
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines[0], "cleared? red", "{screen}");
    assert_eq!(lines[1], "up  and ^M over ��", "{screen}");
    // Cut to four rows of the terminal.
    assert!(
        lines[2..5].iter().all(|l| l.chars().all(|c| c == 'z')),
        "{screen}"
    );
    assert!(
        lines[5].starts_with("zzz") && lines[5].ends_with('…'),
        "{screen}"
    );
    let block = final_block(&screen);
    assert_eq!(block[0], "job demo  running <t>", "{screen}");
    assert!(
        block[1].starts_with("  ") && block[1].ends_with(" 3 company_researcher  <t>"),
        "{}",
        block[1]
    );
    assert_eq!(
        block[2..],
        [
            "  ✓ 3 role_researcher     <t>",
            "",
            "job demo: incomplete",
            "  no pipeline_complete in the input",
            "  stages   1 complete, 1 running",
            "  running  company_researcher",
            "  time     <t>",
            "  slowest  role_researcher <t>",
        ],
        "{screen}"
    );
}

#[test]
fn concurrent_jobs_are_grouped_by_job() {
    let t = Tmux::start(
        &format!(
            "{VIEW} -- {RUNNER} reference --job-id demo --jobs 2 --speed 0.05 --fail people_mapper"
        ),
        80,
        50,
    );
    let (screen, code) = t.wait_exit();
    assert_eq!(code, 0, "{screen}");
    let lines: Vec<String> = screen.lines().map(normalise).collect();
    for job in ["demo-1", "demo-2"] {
        let head = format!("job {job}  partial in <t>");
        let at = lines
            .iter()
            .position(|l| *l == head)
            .unwrap_or_else(|| panic!("no {head:?} on the screen:\n{screen}"));
        assert_eq!(lines[at + 1], "  ✓ 2   pain_point_miner    <t>", "{screen}");
        assert!(
            lines[at + 6].starts_with("  ✗ 5   people_mapper       <t> "),
            "{screen}"
        );
        assert_eq!(lines[at + 8], "  ✓ 7   publisher           <t>", "{screen}");
        assert!(lines.contains(&format!("job {job}: partial")), "{screen}");
    }
    assert!(lines.contains(&"2 jobs: 2 partial".to_owned()), "{screen}");
    // With two jobs, lines above the block say whose they are.
    assert!(
        screen.contains("[demo-2] error people_mapper: people_mapper failed: injected failure"),
        "{screen}"
    );
}
