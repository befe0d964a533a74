//! The consensus store on disk: one redb file in the local home holding the node's replica id,
//! its group, the vote and commit, the configuration, the latest snapshot and the entries after
//! it. Each [`Persist`] is one transaction, durable when [`Disk::write`] returns.
//!
//! A file that cannot be read back is quarantined (renamed aside, with the reason logged) and
//! the node starts as a new member with a new replica id: it never votes with state it may have
//! lost, and the group replaces its old identity once it has been unreachable for the voter
//! grace period.

use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::log::{Log, Persist};

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

/// The open store.
pub struct Disk {
    db: Database,
    path: PathBuf,
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
        if path.exists() {
            match Disk::read(path) {
                Ok((disk, loaded)) => return Ok((disk, loaded)),
                Err(reason) => {
                    let aside = path.with_extension(format!(
                        "corrupt-{}",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs())
                    ));
                    std::fs::rename(path, &aside).map_err(|e| io(e.to_string()))?;
                    tracing::error!(file = %path.display(), moved_to = %aside.display(), %reason,
                        "the consensus store is unreadable: moved aside; this node joins as a new member");
                    quarantined = Some((aside, reason));
                }
            }
        }
        let db = Database::create(path).map_err(|e| io(e.to_string()))?;
        let disk = Disk {
            db,
            path: path.to_owned(),
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

    /// Reads a store back; any failure is a reason to quarantine it.
    fn read(path: &Path) -> Result<(Disk, Loaded), String> {
        let db = Database::open(path).map_err(|e| e.to_string())?;
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
        let mut persist = Persist::default();
        if let Some(b) = get("snapshot")? {
            persist.snapshot =
                Some(Snapshot::parse_from_bytes(&b).map_err(|e| decode_err("snapshot", e))?);
        }
        if let Some(b) = get("hard_state")? {
            persist.hard_state =
                Some(HardState::parse_from_bytes(&b).map_err(|e| decode_err("hard state", e))?);
        }
        if let Some(b) = get("conf_state")? {
            persist.conf_state =
                Some(ConfState::parse_from_bytes(&b).map_err(|e| decode_err("configuration", e))?);
        }
        let entries = tx.open_table(ENTRIES).map_err(|e| e.to_string())?;
        for row in entries.iter().map_err(|e| e.to_string())? {
            let (_, value) = row.map_err(|e| e.to_string())?;
            persist
                .entries
                .push(Entry::parse_from_bytes(value.value()).map_err(|e| decode_err("entry", e))?);
        }
        drop(entries);
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
        for change in changes {
            let mut meta = tx.open_table(META).map_err(|e| fail(e.into()))?;
            let mut entries = tx.open_table(ENTRIES).map_err(|e| fail(e.into()))?;
            if let Some(snapshot) = &change.snapshot {
                let index = snapshot.get_metadata().index;
                meta.insert("snapshot", bytes(snapshot).as_slice())
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
        tx.commit().map_err(|e| fail(e.into()))
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
}
