//! Cache coherence: DESIGN "after a synchronous put or remove returns, no up node serves the old
//! value" and "asynchronous replication keeps the order of one origin".
//!
//! Each key has one writer, which writes increasing values; so "older" means "smaller".

use std::collections::BTreeMap;

/// A completed write of `value` to `key`, from `start_us` to `end_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key.
    pub key: String,
    /// The value written (values of a key only grow).
    pub value: u64,
    /// When the write was issued.
    pub start_us: u64,
    /// When it returned.
    pub end_us: u64,
}

/// A read of `key` on `node` that returned `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The reading node.
    pub node: String,
    /// The key.
    pub key: String,
    /// What it returned.
    pub value: u64,
    /// When the read began.
    pub start_us: u64,
    /// When it returned.
    pub end_us: u64,
}

/// A read that returned a value older than one whose write had returned before it began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRead {
    /// The read.
    pub read: Read,
    /// The newest write that had returned before the read began.
    pub newer: Write,
}

/// Reads that served a value older than a write that had already returned.
pub fn no_stale_reads(writes: &[Write], reads: &[Read]) -> Vec<StaleRead> {
    let mut by_key: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
    for w in writes {
        by_key.entry(&w.key).or_default().push(w);
    }
    let mut out = Vec::new();
    for r in reads {
        let newest = by_key
            .get(r.key.as_str())
            .into_iter()
            .flatten()
            .filter(|w| w.end_us < r.start_us)
            .max_by_key(|w| w.value);
        if let Some(w) = newest
            && r.value < w.value
        {
            out.push(StaleRead {
                read: r.clone(),
                newer: (*w).clone(),
            });
        }
    }
    out
}

/// Pairs of reads on one node where a later read saw an older value than an earlier one: the
/// node applied one origin's changes out of order.
pub fn reads_never_go_back(reads: &[Read]) -> Vec<(Read, Read)> {
    let mut by_node_key: BTreeMap<(&str, &str), Vec<&Read>> = BTreeMap::new();
    for r in reads {
        by_node_key.entry((&r.node, &r.key)).or_default().push(r);
    }
    let mut out = Vec::new();
    for list in by_node_key.values_mut() {
        list.sort_by_key(|r| r.start_us);
        for pair in list.windows(2) {
            // Only reads that did not overlap are ordered.
            if pair[0].end_us <= pair[1].start_us && pair[1].value < pair[0].value {
                out.push((pair[0].clone(), pair[1].clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(value: u64, start: u64, end: u64) -> Write {
        Write {
            key: "k".into(),
            value,
            start_us: start,
            end_us: end,
        }
    }

    fn r(node: &str, value: u64, start: u64, end: u64) -> Read {
        Read {
            node: node.into(),
            key: "k".into(),
            value,
            start_us: start,
            end_us: end,
        }
    }

    #[test]
    fn a_read_after_a_returned_write_must_see_it_and_a_concurrent_one_may_not() {
        let writes = [w(1, 0, 10), w(2, 20, 30)];
        let ok = [r("a", 1, 11, 12), r("a", 1, 25, 26), r("b", 2, 31, 32)];
        assert!(no_stale_reads(&writes, &ok).is_empty());
        let stale = [r("b", 1, 31, 32)];
        assert_eq!(no_stale_reads(&writes, &stale).len(), 1);
    }

    #[test]
    fn a_node_that_reads_backwards_is_caught() {
        let reads = [
            r("a", 2, 0, 1),
            r("a", 1, 2, 3),
            r("b", 1, 0, 1),
            r("b", 2, 2, 3),
        ];
        let back = reads_never_go_back(&reads);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0.node, "a");
    }
}
