//! An append-only JSON-lines history file, flushed line by line so that a killed process
//! leaves every event it recorded.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone)]
pub struct History {
    file: Arc<Mutex<File>>,
}

impl History {
    pub fn open(path: &Path) -> std::io::Result<History> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(History {
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub fn record(&self, event: &serde_json::Value) {
        let mut line = event.to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::error!(error = %e, "history write failed");
        }
    }
}

/// Microseconds since the Unix epoch: every process on the machine shares this clock.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `at` (a monotonic instant) on the wall clock.
pub fn wall_us_of(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = wall_us();
    if at >= now {
        wall + (at - now).as_micros() as u64
    } else {
        wall.saturating_sub((now - at).as_micros() as u64)
    }
}
