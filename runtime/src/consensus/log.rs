//! The consensus log as raft-rs reads it, and the changes to it that must reach the disk.
//!
//! [`Log`] is both raft-rs's [`Storage`] (in memory, owned by the core) and the image of what
//! a node persisted: the core changes it and hands the same change to the shell as a
//! [`Persist`], which the shell writes before it sends anything that depends on it. A restarted
//! node rebuilds its core from the [`Log`] it loads back.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// The log: the latest snapshot (its metadata marks where the log was compacted), the entries
/// after it, the vote and commit (hard state) and the group's configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

/// A change that must be on disk before the messages that follow it are sent.
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct Persist {
    /// A snapshot received or made: it replaces every entry up to its index.
    pub snapshot: Option<Snapshot>,
    /// Entries to append; any stored entry at or after the first one's index is replaced.
    pub entries: Vec<Entry>,
    /// The new vote, term and commit.
    pub hard_state: Option<HardState>,
    /// The new configuration.
    pub conf_state: Option<ConfState>,
}

impl Persist {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.conf_state.is_none()
    }
}

impl Log {
    /// The log of a node founding a group with itself as the only voter: a snapshot at index
    /// 1 holding that configuration and the initial state `data`. A node that joins later has
    /// nothing at index 1, so it always starts from a snapshot and so learns the founding
    /// configuration before any change to it (as TiKV starts its logs above zero).
    pub fn founding(replica: u64, data: Vec<u8>) -> Self {
        let conf_state = ConfState {
            voters: vec![replica],
            ..Default::default()
        };
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.set_conf_state(conf_state.clone());
        Log {
            hard_state: HardState {
                term: 1,
                commit: 1,
                ..Default::default()
            },
            conf_state,
            snapshot,
            entries: Vec::new(),
        }
    }

    /// Applies a change, in the order raft-rs requires: snapshot, entries, hard state,
    /// configuration.
    pub fn apply(&mut self, change: &Persist) {
        if let Some(snapshot) = &change.snapshot {
            self.install(snapshot.clone());
        }
        self.append(&change.entries);
        if let Some(hs) = &change.hard_state {
            self.hard_state = hs.clone();
        }
        if let Some(cs) = &change.conf_state {
            self.conf_state = cs.clone();
        }
    }

    /// Whether the node ever belonged to a group (it has a configuration or a log).
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty()
            || !self.conf_state.learners.is_empty()
            || self.last() > 0
    }

    /// The vote, term and commit.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The configuration.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The latest snapshot (empty if none was ever made or received).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The entries after the snapshot.
    pub fn entries_ref(&self) -> &[Entry] {
        &self.entries
    }

    /// The index of the last entry (or of the snapshot).
    pub fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.get_metadata().index, |e| e.index)
    }

    fn first(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    fn install(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        let covered = index
            .saturating_sub(self.first() - 1)
            .min(self.entries.len() as u64);
        self.entries.drain(..covered as usize);
        // Entries after a received snapshot may conflict with it; a made one never does.
        if self.entries.first().is_some_and(|e| e.index != index + 1) {
            self.entries.clear();
        }
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        self.hard_state.term = self.hard_state.term.max(snapshot.get_metadata().term);
        self.conf_state = snapshot.get_metadata().get_conf_state().clone();
        self.snapshot = snapshot;
    }

    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        // raft-rs never appends below the snapshot or past a gap; drop what would.
        if first.index < self.first() || first.index > self.last() + 1 {
            return;
        }
        // Entries are contiguous from `first()`: cut by position, not by a scan of the log
        // (which grows to about the state's size between snapshots).
        self.entries.truncate((first.index - self.first()) as usize);
        self.entries.extend_from_slice(entries);
    }
}

fn store_error(e: StorageError) -> raft::Error {
    raft::Error::Store(e)
}

impl Storage for Log {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(store_error(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(store_error(StorageError::Unavailable));
        }
        let offset = self.first();
        let mut entries = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let meta = self.snapshot.get_metadata();
        if index == meta.index {
            return Ok(meta.term);
        }
        if index < self.first() {
            return Err(store_error(StorageError::Compacted));
        }
        if index > self.last() {
            return Err(store_error(StorageError::Unavailable));
        }
        Ok(self.entries[(index - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index == 0 {
            return Err(store_error(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2];
        s
    }

    #[test]
    fn appending_replaces_the_conflicting_tail() {
        let mut log = Log::default();
        log.apply(&Persist {
            entries: vec![entry(1, 1), entry(2, 1), entry(3, 1)],
            ..Default::default()
        });
        log.apply(&Persist {
            entries: vec![entry(2, 2)],
            ..Default::default()
        });
        assert_eq!(log.last(), 2);
        assert_eq!(log.term(2).unwrap(), 2);
        // A gap is never written.
        log.apply(&Persist {
            entries: vec![entry(9, 2)],
            ..Default::default()
        });
        assert_eq!(log.last(), 2);
    }

    #[test]
    fn a_snapshot_compacts_what_it_covers_and_keeps_what_follows() {
        let mut log = Log::default();
        log.apply(&Persist {
            entries: (1..=5).map(|i| entry(i, 1)).collect(),
            ..Default::default()
        });
        log.apply(&Persist {
            snapshot: Some(snapshot(3, 1)),
            ..Default::default()
        });
        assert_eq!(log.first_index().unwrap(), 4);
        assert_eq!(log.last_index().unwrap(), 5);
        assert_eq!(log.term(3).unwrap(), 1);
        assert!(log.term(2).is_err());
        assert!(
            log.entries(2, 5, None, GetEntriesContext::empty(false))
                .is_err()
        );
        assert_eq!(
            log.entries(4, 6, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(log.hard_state().commit, 3);
        assert_eq!(log.conf_state().voters, vec![1, 2]);
    }

    #[test]
    fn asking_past_the_end_is_an_error_not_a_panic() {
        let log = Log::default();
        assert!(
            log.entries(1, 3, None, GetEntriesContext::empty(false))
                .is_err()
        );
        assert!(log.term(7).is_err());
        assert!(log.snapshot(0, 2).is_err());
    }
}
