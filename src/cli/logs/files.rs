//! The log files of `colony node`: `colony.<period>.log` in the local home's `log/`, a new file
//! each period (day or hour, UTC) and, with a size cap, `colony.<period>.<n>.log` each time the
//! current one would pass it; at most `max_files` files, the oldest removed. Written on the
//! non-blocking appender's thread, so a slow disk never holds the node up.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{LOG_FILE_PREFIX, LogRotation};

/// A bounded set of log files, written as one stream.
pub struct LogFiles {
    dir: PathBuf,
    rotation: LogRotation,
    max_bytes: Option<u64>,
    max_files: usize,
    period: String,
    index: u32,
    file: File,
    written: u64,
}

impl LogFiles {
    /// Opens (appending) the current period's newest file in `dir` that has room, and removes
    /// the oldest files beyond `max_files`.
    pub fn open(
        dir: &Path,
        rotation: LogRotation,
        max_bytes: Option<u64>,
        max_files: usize,
    ) -> io::Result<LogFiles> {
        let period = period(rotation, SystemTime::now());
        // The period's last file, or the next one if that is full.
        let mut index = last_index(dir, &period).unwrap_or(0);
        if let Some(cap) = max_bytes
            && std::fs::metadata(dir.join(name(&period, index))).is_ok_and(|m| m.len() >= cap)
        {
            index += 1;
        }
        let (file, written) = open(&dir.join(name(&period, index)))?;
        let files = LogFiles {
            dir: dir.to_owned(),
            rotation,
            max_bytes,
            max_files: max_files.max(1),
            period,
            index,
            file,
            written,
        };
        files.prune();
        Ok(files)
    }

    /// Starts the next file: the first of a new period, or the next of this one.
    fn roll(&mut self, period: String) -> io::Result<()> {
        self.index = if period == self.period {
            self.index + 1
        } else {
            0
        };
        self.period = period;
        // Pruned first, so the directory never holds more than `max_files` of them.
        self.prune();
        (self.file, self.written) = open(&self.dir.join(name(&self.period, self.index)))?;
        Ok(())
    }

    /// Removes the oldest of the log files (by modification time, then name) so that the
    /// current one, about to be opened, makes `max_files`; other files in the directory are
    /// left alone.
    fn prune(&self) {
        let current = name(&self.period, self.index);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut logs: Vec<(SystemTime, String)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let ours = name.starts_with(&format!("{LOG_FILE_PREFIX}."))
                    && name.ends_with(".log")
                    && name != current;
                let modified = e.metadata().ok()?.modified().ok()?;
                ours.then_some((modified, name))
            })
            .collect();
        logs.sort();
        let excess = (logs.len() + 1).saturating_sub(self.max_files);
        for (_, name) in &logs[..excess] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }
}

impl Write for LogFiles {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let now = period(self.rotation, SystemTime::now());
        let full = self
            .max_bytes
            .is_some_and(|cap| self.written > 0 && self.written + line.len() as u64 > cap);
        if now != self.period || full {
            self.roll(now)?;
        }
        self.file.write_all(line)?;
        self.written += line.len() as u64;
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The highest index among `period`'s files in `dir`.
fn last_index(dir: &Path, period: &str) -> Option<u32> {
    let stem = format!("{LOG_FILE_PREFIX}.{period}.");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(&stem)?.strip_suffix("log")?;
            match rest {
                "" => Some(0),
                n => n.strip_suffix('.')?.parse().ok(),
            }
        })
        .max()
}

fn open(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// `colony.<period>.log`, or `colony.<period>.<index>.log` past the first.
fn name(period: &str, index: u32) -> String {
    match index {
        0 => format!("{LOG_FILE_PREFIX}.{period}.log"),
        n => format!("{LOG_FILE_PREFIX}.{period}.{n}.log"),
    }
}

/// The UTC day (`2026-12-03`) or hour (`2026-12-03-14`) of `at`.
fn period(rotation: LogRotation, at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil(secs / 86_400);
    match rotation {
        LogRotation::Daily => format!("{y:04}-{m:02}-{d:02}"),
        LogRotation::Hourly => format!("{y:04}-{m:02}-{d:02}-{:02}", secs % 86_400 / 3600),
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn periods_are_utc_days_and_hours() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_303_253);
        assert_eq!(period(LogRotation::Daily, at), "2026-12-03");
        assert_eq!(period(LogRotation::Hourly, at), "2026-12-03-13");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn a_full_file_rolls_to_the_next_and_the_oldest_go_past_the_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.txt"), "kept").unwrap();
        let mut files = LogFiles::open(dir.path(), LogRotation::Daily, Some(100), 3).unwrap();
        let line = [b'x'; 39];
        for _ in 0..10 {
            files.write_all(&line).unwrap();
        }
        files.flush().unwrap();
        let day = period(LogRotation::Daily, SystemTime::now());
        // Two lines fit in 100 bytes: ten lines make five files, of which the last three stay.
        assert_eq!(
            names(dir.path()),
            [
                format!("colony.{day}.2.log"),
                format!("colony.{day}.3.log"),
                format!("colony.{day}.4.log"),
                "other.txt".to_owned(),
            ]
        );
        for name in &names(dir.path())[..3] {
            assert_eq!(std::fs::metadata(dir.path().join(name)).unwrap().len(), 78);
        }
        // Opened again, it goes on after the last full file rather than writing into it.
        drop(files);
        let mut again = LogFiles::open(dir.path(), LogRotation::Daily, Some(78), 3).unwrap();
        again.write_all(&line).unwrap();
        assert!(names(dir.path()).contains(&format!("colony.{day}.5.log")));
        assert_eq!(names(dir.path()).len(), 4);
    }

    #[test]
    fn without_a_cap_one_file_per_period_takes_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = LogFiles::open(dir.path(), LogRotation::Hourly, None, 2).unwrap();
        for _ in 0..100 {
            files.write_all(b"a line\n").unwrap();
        }
        let hour = period(LogRotation::Hourly, SystemTime::now());
        let current = dir.path().join(format!("colony.{hour}.log"));
        // An hour may turn during the test: then the new hour's file has the rest.
        let total: u64 = names(dir.path())
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).unwrap().len())
            .sum();
        assert_eq!(total, 700);
        assert!(current.exists() || names(dir.path()).len() == 2);
    }
}
