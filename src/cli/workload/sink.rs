//! A fenced store on disk: it remembers the highest token written per name and refuses lower
//! ones, as any store written under a Colony lock should.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

pub struct FencedSink {
    dir: PathBuf,
}

impl FencedSink {
    pub fn new(dir: PathBuf) -> std::io::Result<FencedSink> {
        std::fs::create_dir_all(&dir)?;
        Ok(FencedSink { dir })
    }

    /// The sink in directory `dir` of `node`'s shared home, if a workload names one.
    pub fn shared(
        node: &colony::Node,
        dir: Option<&std::path::Path>,
    ) -> std::io::Result<Option<std::sync::Arc<FencedSink>>> {
        dir.map(|dir| FencedSink::new(node.shared_home().root().join(dir)))
            .transpose()
            .map(|sink| sink.map(std::sync::Arc::new))
    }

    /// Writes under `token`: `Ok(true)` accepted, `Ok(false)` refused as stale.
    pub fn write(&self, name: &str, token: u64) -> std::io::Result<bool> {
        self.write_at(name, token).map(|at| at.is_some())
    }

    /// Writes under `token`; when accepted, says when the write took effect: the wall-clock
    /// microsecond its check-and-set took the lock. A writer paused while it holds the lock
    /// (SIGSTOP) has its write ordered there, before any writer it kept waiting, however late
    /// it finishes.
    pub fn write_at(&self, name: &str, token: u64) -> std::io::Result<Option<u64>> {
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.dir.join(format!("{safe}.token")))?;
        // Writers in several processes: the OS lock makes check-and-set atomic.
        file.lock()?;
        let at = super::history::wall_us();
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let last: u64 = text.trim().parse().unwrap_or(0);
        if token < last {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(0))?;
        file.set_len(0)?;
        file.write_all(token.to_string().as_bytes())?;
        Ok(Some(at))
    }
}
