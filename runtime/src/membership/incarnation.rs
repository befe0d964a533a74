//! An incarnation that only grows across restarts.

use std::path::Path;

/// Picks the incarnation for a new process start and records it in `state_dir/incarnation`.
///
/// The result is above both the recorded value and `now_micros` (microseconds since the Unix
/// epoch): the clock makes it larger than any earlier run's even if the file was lost, and the
/// file keeps it growing if the clock steps back. A random incarnation would let a restarted node
/// lose to its own ghost.
///
/// # Errors
/// The file cannot be written.
pub fn next_incarnation(state_dir: &Path, now_micros: u64) -> std::io::Result<u64> {
    let path = state_dir.join("incarnation");
    let recorded = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let next = recorded.saturating_add(1).max(now_micros);
    record_incarnation(state_dir, next)?;
    Ok(next)
}

/// Records an incarnation the node moved to (after a renewal), so the next start exceeds it.
///
/// # Errors
/// The file cannot be written.
pub(crate) fn record_incarnation(state_dir: &Path, incarnation: u64) -> std::io::Result<()> {
    let tmp = state_dir.join("incarnation.tmp");
    std::fs::write(&tmp, incarnation.to_string())?;
    std::fs::rename(tmp, state_dir.join("incarnation"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_past_the_record_even_when_the_clock_steps_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = next_incarnation(dir.path(), 1_000).unwrap();
        assert_eq!(first, 1_000);
        let second = next_incarnation(dir.path(), 10).unwrap();
        assert_eq!(second, 1_001);
        record_incarnation(dir.path(), 5_000).unwrap();
        assert_eq!(next_incarnation(dir.path(), 10).unwrap(), 5_001);
    }
}
