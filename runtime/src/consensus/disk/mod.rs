//! The consensus store on disk: one redb file in the local home holding the node's replica id,
//! its group, the vote and commit, the configuration, the latest snapshot's place (its data is a
//! file beside it, see [`snapshots`]) and the entries after it. Each [`Persist`] is one
//! transaction, durable when [`Disk::write`] returns.
//!
//! A file that cannot be read back is quarantined (renamed aside, with the reason logged) and
//! the node starts as a new member with a new replica id: it never votes with state it may have
//! lost, and the group replaces its old identity once it has been unreachable for the voter
//! grace period.

pub mod snapshots;

use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::log::{Log, Persist};
pub use snapshots::SnapshotFiles;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");

/// The store could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file could not be opened, read or written.
    #[error("consensus store {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// What a node finds in its store when it starts.
#[derive(Debug)]
pub struct Loaded {
    /// Its replica id (new if the store is new).
    pub replica: u64,
    /// Its group (0: none yet).
    pub group: u64,
    /// The log it persisted.
    pub log: Log,
    /// Set when an unreadable store was moved aside: where it went and why.
    pub quarantined: Option<(PathBuf, String)>,
}

/// Why a store was not read.
enum Unreadable {
    /// It is open elsewhere.
    Open,
    /// It cannot be read back.
    Bad(String),
}

/// The open store.
pub struct Disk {
    db: Database,
    path: PathBuf,
    files: SnapshotFiles,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").field("path", &self.path).finish()
    }
}

impl Disk {
    /// Opens (or creates) the store at `path`; `fresh_replica` is the id a new store gets.
    ///
    /// # Errors
    /// [`DiskError`] when the file can be neither opened nor moved aside and recreated.
    pub fn open(path: &Path, fresh_replica: u64) -> Result<(Disk, Loaded), DiskError> {
        let io = |reason: String| DiskError::Io {
            path: path.to_owned(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(e.to_string()))?;
        }
        let mut quarantined = None;
        let files = SnapshotFiles::beside(path);
        if path.exists() {
            match Disk::read(path) {
                Ok((disk, loaded)) => return Ok((disk, loaded)),
                // Another node (or a stopped one still held in this process) has it open: it
                // may be perfectly good, so it is not moved aside.
                Err(Unreadable::Open) => {
                    return Err(io(
                        "the store is open in another node using this local home: stop it first"
                            .into(),
                    ));
                }
                Err(Unreadable::Bad(reason)) => {
                    let stamp = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let aside = path.with_extension(format!("corrupt-{stamp}"));
                    std::fs::rename(path, &aside).map_err(|e| io(e.to_string()))?;
                    if files.dir().exists() {
                        let dir = files
                            .dir()
                            .with_extension(format!("snapshots-corrupt-{stamp}"));
                        std::fs::rename(files.dir(), dir).map_err(|e| io(e.to_string()))?;
                    }
                    tracing::error!(file = %path.display(), moved_to = %aside.display(), %reason,
                        "the consensus store is unreadable: moved aside; this node joins as a new member");
                    quarantined = Some((aside, reason));
                }
            }
        }
        // A new store's snapshots start afresh: a file left from another store may have the
        // name of one of this store's.
        files.prune(None, true);
        let db = Database::create(path).map_err(|e| io(e.to_string()))?;
        let disk = Disk {
            db,
            path: path.to_owned(),
            files,
        };
        disk.put_meta(&[("replica", fresh_replica.to_be_bytes().to_vec())])?;
        Ok((
            disk,
            Loaded {
                replica: fresh_replica,
                group: 0,
                log: Log::default(),
                quarantined,
            },
        ))
    }

    /// Reads a store back; any failure but [`Unreadable::Open`] is a reason to quarantine it.
    fn read(path: &Path) -> Result<(Disk, Loaded), Unreadable> {
        let db = match Database::open(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(Unreadable::Open),
            Err(e) => return Err(Unreadable::Bad(e.to_string())),
        };
        Disk::read_from(db, path).map_err(Unreadable::Bad)
    }

    fn read_from(db: Database, path: &Path) -> Result<(Disk, Loaded), String> {
        let tx = db.begin_read().map_err(|e| e.to_string())?;
        let meta = tx.open_table(META).map_err(|e| e.to_string())?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, String> {
            Ok(meta
                .get(key)
                .map_err(|e| e.to_string())?
                .map(|v| v.value().to_vec()))
        };
        let word = |bytes: Option<Vec<u8>>| -> Result<u64, String> {
            match bytes {
                None => Ok(0),
                Some(b) => Ok(u64::from_be_bytes(
                    b.try_into().map_err(|_| "a malformed id".to_string())?,
                )),
            }
        };
        let replica = word(get("replica")?)?;
        if replica == 0 {
            return Err("no replica id".into());
        }
        let group = word(get("group")?)?;
        let decode_err = |what: &str, e: protobuf::ProtobufError| format!("{what}: {e}");
        let files = SnapshotFiles::beside(path);
        let mut persist = Persist::default();
        if let Some(b) = get("snapshot_meta")? {
            let meta = SnapshotMetadata::parse_from_bytes(&b)
                .map_err(|e| decode_err("snapshot metadata", e))?;
            persist.snapshot = Some(files.read(meta.index, meta.term)?);
        } else if let Some(b) = get("snapshot")? {
            // Written before snapshots went to files.
            persist.snapshot =
                Some(Snapshot::parse_from_bytes(&b).map_err(|e| decode_err("snapshot", e))?);
        }
        let named = persist.snapshot.as_ref().map(|s| {
            let meta = s.get_metadata();
            (meta.index, meta.term)
        });
        files.prune(named, true);
        if let Some(b) = get("hard_state")? {
            persist.hard_state =
                Some(HardState::parse_from_bytes(&b).map_err(|e| decode_err("hard state", e))?);
        }
        if let Some(b) = get("conf_state")? {
            persist.conf_state =
                Some(ConfState::parse_from_bytes(&b).map_err(|e| decode_err("configuration", e))?);
        }
        // A store whose node stopped before its first write has no entries table yet.
        match tx.open_table(ENTRIES) {
            Ok(entries) => {
                for row in entries.iter().map_err(|e| e.to_string())? {
                    let (_, value) = row.map_err(|e| e.to_string())?;
                    persist.entries.push(
                        Entry::parse_from_bytes(value.value())
                            .map_err(|e| decode_err("entry", e))?,
                    );
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        drop(meta);
        drop(tx);
        let mut log = Log::default();
        // Entries first would be dropped as a gap after the snapshot: apply in raft's order.
        let entries = std::mem::take(&mut persist.entries);
        let (hard_state, conf_state) = (persist.hard_state.take(), persist.conf_state.take());
        log.apply(&persist);
        log.apply(&Persist {
            entries,
            hard_state,
            conf_state,
            ..Default::default()
        });
        if log
            .entries_ref()
            .windows(2)
            .any(|w| w[1].index != w[0].index + 1)
        {
            return Err("entries do not follow each other".into());
        }
        Ok((
            Disk {
                db,
                path: path.to_owned(),
                files,
            },
            Loaded {
                replica,
                group,
                log,
                quarantined: None,
            },
        ))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where this store's snapshot files go: write one there ahead of its [`Persist`] (off the
    /// group's actor), and [`Disk::write`] only records it.
    pub fn snapshot_files(&self) -> SnapshotFiles {
        self.files.clone()
    }

    /// Records the group this node belongs to.
    ///
    /// # Errors
    /// [`DiskError`] if the write fails.
    pub fn set_group(&self, group: u64) -> Result<(), DiskError> {
        self.put_meta(&[("group", group.to_be_bytes().to_vec())])
    }

    fn put_meta(&self, rows: &[(&str, Vec<u8>)]) -> Result<(), DiskError> {
        let fail = |e: redb::Error| DiskError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let tx = self.db.begin_write().map_err(|e| fail(e.into()))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| fail(e.into()))?;
            for (key, value) in rows {
                meta.insert(*key, value.as_slice())
                    .map_err(|e| fail(e.into()))?;
            }
        }
        tx.commit().map_err(|e| fail(e.into()))
    }

    /// Writes `changes`, in order, durably and in one transaction.
    ///
    /// # Errors
    /// [`DiskError`]; nothing of the changes is on disk then.
    pub fn write(&self, changes: &[Persist]) -> Result<(), DiskError> {
        let fail = |e: redb::Error| DiskError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let tx = self.db.begin_write().map_err(|e| fail(e.into()))?;
        let mut named = None;
        for change in changes {
            let mut meta = tx.open_table(META).map_err(|e| fail(e.into()))?;
            let mut entries = tx.open_table(ENTRIES).map_err(|e| fail(e.into()))?;
            if let Some(snapshot) = &change.snapshot {
                let (index, term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
                // A snapshot this process made is on disk already; one received is written
                // here, before the store names it.
                if !self.files.take_made(index, term) {
                    self.files.write(snapshot)?;
                    self.files.take_made(index, term);
                }
                named = Some((index, term));
                meta.remove("snapshot").map_err(|e| fail(e.into()))?;
                meta.insert("snapshot_meta", bytes(snapshot.get_metadata()).as_slice())
                    .map_err(|e| fail(e.into()))?;
                meta.insert(
                    "conf_state",
                    bytes(snapshot.get_metadata().get_conf_state()).as_slice(),
                )
                .map_err(|e| fail(e.into()))?;
                entries
                    .retain_in(..=index, |_, _| false)
                    .map_err(|e| fail(e.into()))?;
            }
            if let Some(first) = change.entries.first() {
                let from = first.index;
                // Only the entries from `from` on: not a scan of the whole table per append.
                entries
                    .retain_in(from.., |_, _| false)
                    .map_err(|e| fail(e.into()))?;
                for e in &change.entries {
                    entries
                        .insert(e.index, bytes(e).as_slice())
                        .map_err(|e| fail(e.into()))?;
                }
            }
            if let Some(hs) = &change.hard_state {
                meta.insert("hard_state", bytes(hs).as_slice())
                    .map_err(|e| fail(e.into()))?;
            }
            if let Some(cs) = &change.conf_state {
                meta.insert("conf_state", bytes(cs).as_slice())
                    .map_err(|e| fail(e.into()))?;
            }
        }
        tx.commit().map_err(|e| fail(e.into()))?;
        if named.is_some() {
            self.files.prune(named, false);
        }
        Ok(())
    }
}

fn bytes(m: &impl protobuf::Message) -> Vec<u8> {
    m.write_to_bytes().expect("raft's types always encode")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8].into(),
            ..Default::default()
        }
    }

    #[test]
    fn what_was_written_is_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        let (disk, loaded) = Disk::open(&path, 7).unwrap();
        assert_eq!((loaded.replica, loaded.group), (7, 0));
        let mut log = Log::founding(7, b"state".to_vec());
        disk.write(&[Persist {
            snapshot: Some(log.snapshot_ref().clone()),
            hard_state: Some(log.hard_state().clone()),
            ..Default::default()
        }])
        .unwrap();
        let change = Persist {
            entries: vec![entry(2, 2), entry(3, 2), entry(4, 2)],
            ..Default::default()
        };
        disk.write(std::slice::from_ref(&change)).unwrap();
        log.apply(&change);
        // A conflicting tail replaces the old one.
        let change = Persist {
            entries: vec![entry(3, 3)],
            hard_state: Some(HardState {
                term: 3,
                vote: 7,
                commit: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        disk.write(std::slice::from_ref(&change)).unwrap();
        log.apply(&change);
        disk.set_group(99).unwrap();
        drop(disk);
        let (_, loaded) = Disk::open(&path, 8).unwrap();
        assert_eq!((loaded.replica, loaded.group), (7, 99));
        assert_eq!(loaded.log, log);
        assert!(loaded.quarantined.is_none());
    }

    #[test]
    fn changes_written_together_apply_in_order_and_a_snapshot_drops_the_entries_it_covers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        let (disk, _) = Disk::open(&path, 7).unwrap();
        let mut log = Log::founding(7, b"state".to_vec());
        let mut snapshot = log.snapshot_ref().clone();
        snapshot.mut_metadata().index = 3;
        snapshot.mut_metadata().term = 2;
        let changes = [
            Persist {
                snapshot: Some(log.snapshot_ref().clone()),
                hard_state: Some(log.hard_state().clone()),
                ..Default::default()
            },
            Persist {
                entries: vec![entry(2, 2), entry(3, 2), entry(4, 2), entry(5, 2)],
                ..Default::default()
            },
            Persist {
                snapshot: Some(snapshot),
                hard_state: Some(HardState {
                    term: 2,
                    commit: 3,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        disk.write(&changes).unwrap();
        for change in &changes {
            log.apply(change);
        }
        drop(disk);
        let (_, loaded) = Disk::open(&path, 8).unwrap();
        assert_eq!(loaded.log, log);
        let kept: Vec<u64> = loaded.log.entries_ref().iter().map(|e| e.index).collect();
        assert_eq!(kept, [4, 5]);
    }

    #[test]
    fn an_unreadable_store_is_moved_aside_and_the_node_starts_as_a_new_member() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        std::fs::write(
            &path,
            b"this is not a redb file, just junk bytes of some length",
        )
        .unwrap();
        let (_, loaded) = Disk::open(&path, 5).unwrap();
        assert_eq!(loaded.replica, 5);
        assert!(!loaded.log.is_initialized());
        let (aside, _) = loaded.quarantined.unwrap();
        assert!(aside.exists());
        assert!(path.exists());
    }

    fn snapshot(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let mut snapshot = Snapshot {
            data: data.to_vec().into(),
            ..Default::default()
        };
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = term;
        snapshot
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The group writes its own snapshots ahead, off its actor; the store then only names the
    /// file, and the older file goes.
    #[test]
    fn a_snapshot_written_ahead_is_named_by_the_store_and_the_older_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        let (disk, _) = Disk::open(&path, 7).unwrap();
        let mut log = Log::founding(7, b"state".to_vec());
        let first = Persist {
            snapshot: Some(log.snapshot_ref().clone()),
            hard_state: Some(HardState {
                term: 2,
                commit: 4,
                ..Default::default()
            }),
            entries: vec![entry(2, 2), entry(3, 2), entry(4, 2)],
            ..Default::default()
        };
        disk.write(std::slice::from_ref(&first)).unwrap();
        log.apply(&first);
        let files = disk.snapshot_files();
        assert_eq!(files_in(files.dir()), ["1-1.snap"]);
        let made = snapshot(3, 2, &[9; 100_000]);
        files.write(&made).unwrap();
        assert_eq!(files_in(files.dir()), ["1-1.snap", "3-2.snap"]);
        let second = Persist {
            snapshot: Some(made.clone()),
            ..Default::default()
        };
        disk.write(std::slice::from_ref(&second)).unwrap();
        log.apply(&second);
        assert_eq!(files_in(files.dir()), ["3-2.snap"]);
        drop(disk);
        let (_, loaded) = Disk::open(&path, 8).unwrap();
        assert!(loaded.quarantined.is_none());
        assert!(loaded.log.snapshot_ref() == &made);
        assert!(loaded.log == log, "the log read back differs");
    }

    /// A snapshot written before the node died but never named by the store is not used: the
    /// store's own snapshot and entries load, and the stray file goes.
    #[test]
    fn a_snapshot_file_the_store_never_named_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        let (disk, _) = Disk::open(&path, 7).unwrap();
        let log = Log::founding(7, b"state".to_vec());
        disk.write(&[Persist {
            snapshot: Some(log.snapshot_ref().clone()),
            hard_state: Some(log.hard_state().clone()),
            ..Default::default()
        }])
        .unwrap();
        let files = disk.snapshot_files();
        files.write(&snapshot(5, 1, b"never named")).unwrap();
        std::fs::write(files.dir().join("6-1.part"), b"cut short").unwrap();
        drop(disk);
        let (disk, loaded) = Disk::open(&path, 8).unwrap();
        assert_eq!(loaded.log, log);
        assert_eq!(files_in(disk.snapshot_files().dir()), ["1-1.snap"]);
    }

    #[test]
    fn a_damaged_snapshot_file_quarantines_the_store_with_its_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        let (disk, _) = Disk::open(&path, 7).unwrap();
        disk.write(&[Persist {
            snapshot: Some(snapshot(4, 2, &[7; 1000])),
            ..Default::default()
        }])
        .unwrap();
        let file = disk.snapshot_files().dir().join("4-2.snap");
        drop(disk);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[500] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let (disk, loaded) = Disk::open(&path, 9).unwrap();
        assert_eq!(loaded.replica, 9);
        assert!(!loaded.log.is_initialized());
        let (aside, reason) = loaded.quarantined.unwrap();
        assert!(reason.contains("checksum"), "{reason}");
        assert!(aside.exists());
        assert!(files_in(disk.snapshot_files().dir()).is_empty());
        let moved = files_in(dir.path());
        assert!(
            moved
                .iter()
                .any(|n| n.starts_with("group.snapshots-corrupt-")),
            "{moved:?}"
        );
    }

    /// A new store may get a snapshot with the same index and term as a file left from the
    /// store it replaced: it writes its own.
    #[test]
    fn a_new_store_never_takes_a_file_left_by_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        let earlier = SnapshotFiles::beside(&path);
        earlier
            .write(&snapshot(3, 2, b"the earlier store's"))
            .unwrap();
        let (disk, _) = Disk::open(&path, 7).unwrap();
        assert!(files_in(earlier.dir()).is_empty());
        let ours = snapshot(3, 2, b"this store's");
        disk.write(&[Persist {
            snapshot: Some(ours.clone()),
            ..Default::default()
        }])
        .unwrap();
        drop(disk);
        let (_, loaded) = Disk::open(&path, 8).unwrap();
        assert_eq!(loaded.log.snapshot_ref(), &ours);
    }

    /// Stores written when the snapshot was a value in the store still load, and move to a
    /// file with their next snapshot.
    #[test]
    fn a_store_with_its_snapshot_inside_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        let (disk, _) = Disk::open(&path, 7).unwrap();
        let inside = snapshot(2, 1, b"an older node's state");
        disk.write(&[Persist {
            hard_state: Some(HardState {
                term: 1,
                commit: 2,
                ..Default::default()
            }),
            ..Default::default()
        }])
        .unwrap();
        disk.put_meta(&[("snapshot", bytes(&inside))]).unwrap();
        drop(disk);
        let (disk, loaded) = Disk::open(&path, 8).unwrap();
        assert!(loaded.quarantined.is_none(), "{:?}", loaded.quarantined);
        assert_eq!(loaded.log.snapshot_ref(), &inside);
        let next = snapshot(5, 1, b"a newer state");
        disk.write(&[Persist {
            snapshot: Some(next.clone()),
            ..Default::default()
        }])
        .unwrap();
        drop(disk);
        let (_, loaded) = Disk::open(&path, 8).unwrap();
        assert_eq!(loaded.log.snapshot_ref(), &next);
    }

    /// A snapshot made before the configuration changed is written with the newer
    /// configuration, which is what the store reads back.
    #[test]
    fn a_snapshot_older_than_the_configuration_keeps_the_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        let (disk, _) = Disk::open(&path, 7).unwrap();
        let mut older = snapshot(4, 2, b"state");
        older.mut_metadata().mut_conf_state().voters = vec![7];
        let newer = ConfState {
            voters: vec![7],
            learners: vec![8],
            ..Default::default()
        };
        disk.write(&[Persist {
            snapshot: Some(older.clone()),
            conf_state: Some(newer.clone()),
            ..Default::default()
        }])
        .unwrap();
        drop(disk);
        let (_, loaded) = Disk::open(&path, 9).unwrap();
        assert_eq!(loaded.log.snapshot_ref(), &older);
        assert_eq!(loaded.log.conf_state(), &newer);
    }

    /// A store another node has open is refused, not moved aside: it may be perfectly good.
    #[test]
    fn a_store_open_elsewhere_is_refused_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        let (disk, _) = Disk::open(&path, 7).unwrap();
        let refused = Disk::open(&path, 8).unwrap_err();
        assert!(
            refused.to_string().contains("open in another node"),
            "{refused}"
        );
        assert_eq!(files_in(dir.path()), ["group.redb"]);
        drop(disk);
        let (_, loaded) = Disk::open(&path, 8).unwrap();
        assert_eq!(loaded.replica, 7);
    }
}
