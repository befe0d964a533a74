//! `colony demo` end to end: every step passes, and its summary reports what it measured.

use std::process::Command;

use crate::common::serial;

#[test]
fn the_demo_runs_every_step_and_ends_with_its_figures() {
    let _serial = serial();
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .arg("demo")
        .output()
        .expect("run colony demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "colony demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("✓ [12/12]"), "{stdout}");
    assert!(!stdout.contains('✗'), "{stdout}");
    let summary = stdout
        .split("What the demo showed:")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    for figure in [
        "membership convergence",
        "3 of 3 nodes read the new value first after the write returned",
        "crash detection (every survivor)",
        "lock takeover after SIGKILL",
        "job re-run after SIGKILL",
        "none lost",
        "rejoin after restart",
    ] {
        assert!(summary.contains(figure), "{figure} missing:\n{summary}");
    }
}
