//! Quorum arithmetic: whether the nodes one can reach may act for the cluster.

/// Whether `reachable` nodes (this one included) reach `quorum`.
///
/// # Examples
/// ```
/// use colony_runtime::quorum::has_quorum;
/// assert!(has_quorum(3, 3));
/// assert!(!has_quorum(2, 3));
/// ```
pub fn has_quorum(reachable: usize, quorum: usize) -> bool {
    reachable >= quorum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::majority;

    #[test]
    fn majority_table() {
        for (size, q) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)] {
            assert_eq!(majority(size), q, "cluster of {size}");
        }
    }

    #[test]
    fn two_sides_of_a_split_never_both_have_a_majority() {
        for size in 1..=9 {
            for a in 0..=size {
                let q = majority(size);
                assert!(
                    !(has_quorum(a, q) && has_quorum(size - a, q)),
                    "{a}|{}",
                    size - a
                );
            }
        }
    }
}
