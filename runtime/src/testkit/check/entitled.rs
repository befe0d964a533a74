//! Grants need an entitlement: DESIGN "only a node the group has entitled to grant a name may
//! grant or renew it" (issue 8: "nothing granted without the entitlement the group
//! committed"). A grant is entitled when its token lies in a block of tokens the group gave the
//! granter for that scope (a slot), and its lease ends no later than the entitlement the
//! group's committed heartbeats gave the granter in that epoch, as known when it granted. A
//! renewal keeps the token of its grant (which may come from an earlier owner's block, handed
//! over with the hold): its token must lie in a block of the scope, and its lease end within
//! the renewer's entitlement.

use std::collections::BTreeMap;

/// A grant or renewal, as its granter made it (microseconds on a clock every record shares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What was granted.
    pub name: String,
    /// Where its tokens come from (the name's slot).
    pub scope: String,
    /// Who granted it.
    pub granter: String,
    /// The granter's epoch.
    pub epoch: u64,
    /// The token.
    pub token: u64,
    /// Whether this renews an earlier grant (of this token) rather than grants.
    pub renewal: bool,
    /// When it was granted.
    pub at_us: u64,
    /// When the lease it gave ends, as the granter counts it.
    pub lease_end_us: u64,
}

/// An entitlement as the group committed it: from `at_us` on, `granter` may grant until
/// `until_us` in `epoch` (one record each time that end moved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitled {
    /// The node.
    pub granter: String,
    /// Its epoch.
    pub epoch: u64,
    /// When the node learnt it.
    pub at_us: u64,
    /// When it ends.
    pub until_us: u64,
}

/// A block of tokens `[start, end)` the group gave `granter` for `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The slot.
    pub scope: String,
    /// Its owner.
    pub granter: String,
    /// The first token.
    pub start: u64,
    /// One past the last token.
    pub end: u64,
}

/// A grant without the entitlement it needed, and what was missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unentitled {
    /// The grant.
    pub grant: Grant,
    /// What was missing.
    pub why: &'static str,
}

/// Grants whose token is not in a block the group gave their granter, or whose lease outlives
/// the granter's entitlement in its epoch.
pub fn granted_with_entitlement(
    grants: &[Grant],
    entitled: &[Entitled],
    blocks: &[Block],
) -> Vec<Unentitled> {
    let mut ends: BTreeMap<(&str, u64), Vec<(u64, u64)>> = BTreeMap::new();
    for e in entitled {
        ends.entry((&e.granter, e.epoch))
            .or_default()
            .push((e.at_us, e.until_us));
    }
    for list in ends.values_mut() {
        list.sort();
    }
    let mut out = Vec::new();
    for g in grants {
        let in_block = blocks.iter().any(|b| {
            b.scope == g.scope
                && (g.renewal || b.granter == g.granter)
                && (b.start..b.end).contains(&g.token)
        });
        // The latest end known when it granted (an end only moves forward within an epoch).
        let until = ends.get(&(g.granter.as_str(), g.epoch)).and_then(|list| {
            list.iter()
                .filter(|(at, _)| *at <= g.at_us)
                .map(|(_, until)| *until)
                .max()
        });
        let why = if !in_block {
            Some("token from no block the group gave")
        } else if until.is_none_or(|u| g.lease_end_us > u) {
            Some("lease past the granter's entitlement")
        } else {
            None
        };
        if let Some(why) = why {
            out.push(Unentitled {
                grant: g.clone(),
                why,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(token: u64, at: u64, end: u64) -> Grant {
        Grant {
            name: "a".into(),
            scope: "slot-1".into(),
            granter: "n1".into(),
            epoch: 2,
            token,
            renewal: false,
            at_us: at,
            lease_end_us: end,
        }
    }

    #[test]
    fn a_grant_inside_its_block_and_entitlement_passes_and_others_are_caught() {
        let entitled = [
            Entitled {
                granter: "n1".into(),
                epoch: 2,
                at_us: 0,
                until_us: 100,
            },
            Entitled {
                granter: "n1".into(),
                epoch: 2,
                at_us: 50,
                until_us: 150,
            },
        ];
        let blocks = [Block {
            scope: "slot-1".into(),
            granter: "n1".into(),
            start: 10,
            end: 20,
        }];
        // A renewal may keep a token from another owner's block of the scope.
        let blocks = [
            blocks[0].clone(),
            Block {
                granter: "n2".into(),
                start: 1,
                end: 10,
                ..blocks[0].clone()
            },
        ];
        let renewal = Grant {
            renewal: true,
            ..grant(3, 60, 140)
        };
        let ok = [grant(10, 10, 100), grant(11, 60, 150), renewal];
        assert!(granted_with_entitlement(&ok, &entitled, &blocks).is_empty());
        let bad = [
            // Past the end known when granted (the later end came after).
            grant(12, 10, 120),
            // Outside the granter's blocks.
            grant(20, 60, 70),
            grant(3, 60, 70),
            // Another epoch.
            Grant {
                epoch: 3,
                ..grant(13, 60, 70)
            },
        ];
        let found = granted_with_entitlement(&bad, &entitled, &blocks);
        assert_eq!(found.len(), 4, "{found:?}");
    }
}
