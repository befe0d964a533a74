//! Snapshot files beside the store: `<store>.snapshots/<index>-<term>.snap`.
//!
//! A snapshot of a large state (tens of megabytes) is written outside the store's redb file, so
//! that the group's actor need not hold redb's one write transaction while it is written: the
//! group encodes and writes its own snapshots on a blocking thread, then records the file in
//! the store (a small transaction that also drops the entries the snapshot covers).
//!
//! A file is `MAGIC`, a CRC-32 of the rest, the length of the metadata, the snapshot's
//! metadata (protobuf) and its data. It is written to a temporary name, synced and renamed,
//! so a file under its final name is whole. Only the file the store names is ever read; a
//! file is trusted as already written only if this process wrote it (a name may recur after
//! the store was replaced).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protobuf::Message as _;
use raft::eraftpb::{Snapshot, SnapshotMetadata};

use super::DiskError;

const MAGIC: &[u8; 8] = b"colsnap1";
/// `MAGIC`, the CRC and the metadata's length.
const HEADER: usize = 8 + 4 + 4;

/// Where a node's snapshot files go. Cheap to clone; clones share what this process wrote.
#[derive(Debug, Clone)]
pub struct SnapshotFiles {
    dir: PathBuf,
    /// The (index, term) of files written by this process and not yet recorded in the store.
    made: Arc<Mutex<BTreeSet<(u64, u64)>>>,
}

impl SnapshotFiles {
    /// The files of the store at `store`.
    pub(super) fn beside(store: &Path) -> Self {
        SnapshotFiles {
            dir: store.with_extension("snapshots"),
            made: Arc::default(),
        }
    }

    /// The folder.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, index: u64, term: u64) -> PathBuf {
        self.dir.join(format!("{index}-{term}.snap"))
    }

    fn fail(&self, reason: impl std::fmt::Display) -> DiskError {
        DiskError::Io {
            path: self.dir.clone(),
            reason: reason.to_string(),
        }
    }

    /// Writes `snapshot` durably. The store names it only once its [`super::Persist`] is
    /// written; until then (or if the node dies first) the store keeps its previous snapshot.
    ///
    /// # Errors
    /// [`DiskError::Io`] if the folder or the file cannot be written.
    pub fn write(&self, snapshot: &Snapshot) -> Result<(), DiskError> {
        let meta = snapshot.get_metadata();
        let key = (meta.index, meta.term);
        let meta = meta.write_to_bytes().map_err(|e| self.fail(e))?;
        let meta_len = u32::try_from(meta.len()).map_err(|e| self.fail(e))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&meta_len.to_be_bytes());
        crc.update(&meta);
        crc.update(&snapshot.data);
        std::fs::create_dir_all(&self.dir).map_err(|e| self.fail(e))?;
        let path = self.path(key.0, key.1);
        let part = path.with_extension("part");
        // Marked before it appears under its name, so that no prune takes it meanwhile.
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        let written = (|| {
            let mut file = std::fs::File::create(&part)?;
            file.write_all(MAGIC)?;
            file.write_all(&crc.finalize().to_be_bytes())?;
            file.write_all(&meta_len.to_be_bytes())?;
            file.write_all(&meta)?;
            file.write_all(&snapshot.data)?;
            file.sync_all()?;
            std::fs::rename(&part, &path)?;
            // The rename is durable once the folder is.
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        written.map_err(|e| {
            self.take_made(key.0, key.1);
            self.fail(format!("{}: {e}", path.display()))
        })
    }

    /// Whether this process wrote the file of (`index`, `term`) since it was last recorded;
    /// forgets it either way.
    pub(super) fn take_made(&self, index: u64, term: u64) -> bool {
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(index, term))
    }

    /// Reads the snapshot the store names.
    pub(super) fn read(&self, index: u64, term: u64) -> Result<Snapshot, String> {
        let path = self.path(index, term);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bad = |why: &str| format!("snapshot file {}: {why}", path.display());
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad("not a snapshot file"));
        }
        let crc = u32::from_be_bytes(bytes[8..12].try_into().expect("four bytes"));
        if crc32fast::hash(&bytes[12..]) != crc {
            return Err(bad("its checksum does not match (the file is damaged)"));
        }
        let meta_len = u32::from_be_bytes(bytes[12..16].try_into().expect("four bytes")) as usize;
        let data_at = HEADER
            .checked_add(meta_len)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| bad("its metadata runs past its end"))?;
        let meta = SnapshotMetadata::parse_from_bytes(&bytes[HEADER..data_at])
            .map_err(|e| bad(&e.to_string()))?;
        if (meta.index, meta.term) != (index, term) {
            return Err(bad("it holds another snapshot than its name says"));
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        snapshot.data = bytes.into();
        snapshot.data = snapshot.data.slice(data_at..);
        Ok(snapshot)
    }

    /// Removes every snapshot file but the one of `keep` (all of them for `None`) and those
    /// being written: older snapshots, and files written but never recorded. With `parts`,
    /// files cut short by a crash too (only while nothing is being written). Best effort: a
    /// file left over is only space.
    pub(super) fn prune(&self, keep: Option<(u64, u64)>, parts: bool) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let made = self.made.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let keep = keep.map(|(index, term)| self.path(index, term));
        for entry in dir.flatten() {
            let path = entry.path();
            let pending = made.iter().any(|(i, t)| self.path(*i, *t) == path);
            let part = path.extension().is_some_and(|x| x == "part");
            if Some(&path) != keep.as_ref()
                && !pending
                && (parts || !part)
                && let Err(e) = std::fs::remove_file(&path)
            {
                tracing::warn!(file = %path.display(), error = %e, "an old snapshot file stays");
            }
        }
    }
}
