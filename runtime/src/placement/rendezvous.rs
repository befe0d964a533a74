//! Rendezvous (highest random weight) hashing.
//!
//! Every node computes the same owner from the same member list, and when a member leaves only
//! the keys it owned move; when one joins it takes about `1/n` of the keys.

use crate::NodeId;

/// The member that owns `key`: the one with the highest hash of `(member, key)`.
/// `None` when `members` is empty.
///
/// # Examples
/// ```
/// use colony_runtime::{NodeId, placement::owner_of};
/// let nodes = [NodeId::from_u128(1), NodeId::from_u128(2), NodeId::from_u128(3)];
/// let owner = owner_of(b"lock:reindex", nodes.iter().copied()).unwrap();
/// assert!(nodes.contains(&owner));
/// // Order of the member list does not matter.
/// assert_eq!(owner_of(b"lock:reindex", nodes.iter().rev().copied()), Some(owner));
/// ```
pub fn owner_of(key: &[u8], members: impl IntoIterator<Item = NodeId>) -> Option<NodeId> {
    owner_by(key, members, |m| *m.as_bytes())
}

/// [`owner_of`] for members of any id type, given the bytes every node hashes for an id.
///
/// # Examples
/// ```
/// use colony_runtime::placement::owner_by;
/// let replicas = [7u64, 11, 13];
/// let owner = owner_by(b"slot/3", replicas, |r| r.to_be_bytes()).unwrap();
/// assert!(replicas.contains(&owner));
/// ```
pub fn owner_by<T: Copy + Ord, B: AsRef<[u8]>>(
    key: &[u8],
    members: impl IntoIterator<Item = T>,
    bytes: impl Fn(&T) -> B,
) -> Option<T> {
    members
        .into_iter()
        .max_by_key(|m| (weight(bytes(m).as_ref(), key), *m))
}

/// A 64-bit FNV-1a hash of the member id then the key, finished with a mixer so that
/// neighbouring ids spread. Stable across builds and platforms: every node must agree.
fn weight(member: &[u8], key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.iter().chain(key) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finaliser
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(n: u128) -> Vec<NodeId> {
        (1..=n).map(NodeId::from_u128).collect()
    }

    #[test]
    fn no_members_no_owner() {
        assert_eq!(owner_of(b"k", []), None);
    }

    #[test]
    fn keys_spread_over_members() {
        let members = nodes(5);
        let mut counts = std::collections::HashMap::new();
        for i in 0..10_000u32 {
            let owner = owner_of(&i.to_le_bytes(), members.iter().copied()).unwrap();
            *counts.entry(owner).or_insert(0) += 1;
        }
        for m in &members {
            let c = counts[m];
            assert!((1500..2500).contains(&c), "{m} owns {c} of 10000");
        }
    }

    proptest! {
        #[test]
        fn removing_a_member_moves_only_its_keys(key in any::<Vec<u8>>(), gone in 0usize..5) {
            let members = nodes(5);
            let before = owner_of(&key, members.iter().copied()).unwrap();
            let rest: Vec<_> = members.iter().copied().filter(|m| *m != members[gone]).collect();
            let after = owner_of(&key, rest.iter().copied()).unwrap();
            if before != members[gone] {
                prop_assert_eq!(before, after);
            }
        }
    }
}
