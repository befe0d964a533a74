//! Fencing tokens: strictly increasing per owner, and across owners.
//!
//! A token is `wall-clock milliseconds << EPOCH_SHIFT`, or one more than the previous token if
//! that is larger: time-ordered grants get ordered tokens. A new owner grants a name only after
//! the takeover delay (a full lease plus the failure-detection bound), and an old owner stops
//! granting within the detection bound, so the new owner's first grant comes at least a lease
//! after the old owner's last one. Its token is therefore larger as long as the two nodes' clocks
//! differ by less than a lease. Tokens learned from holders re-asserting their leases raise the
//! floor too.

/// Bits of a token below the millisecond: room for 4 million grants per millisecond.
pub const EPOCH_SHIFT: u32 = 22;

/// Hands out tokens for every name this node owns: one sequence per node is a sequence per name.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    last: u64,
}

impl Tokens {
    /// A token seen elsewhere (a holder re-asserting its lease): later tokens exceed it.
    pub fn observe(&mut self, token: u64) {
        self.last = self.last.max(token);
    }

    /// The token of a grant made at wall-clock `wall_ms`: above every token handed out or
    /// observed, and at least `wall_ms << EPOCH_SHIFT`.
    pub fn issue(&mut self, wall_ms: u64) -> u64 {
        self.last = self
            .last
            .saturating_add(1)
            .max(wall_ms.saturating_mul(1 << EPOCH_SHIFT));
        self.last
    }

    /// The last token handed out or observed.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_clock_but_never_go_back() {
        let mut t = Tokens::default();
        let a = t.issue(1_000);
        assert_eq!(a, 1_000 << EPOCH_SHIFT);
        assert_eq!(t.issue(1_000), a + 1);
        // A clock that stepped back does not lower the sequence.
        assert_eq!(t.issue(900), a + 2);
        t.observe(5_000 << EPOCH_SHIFT);
        assert_eq!(t.issue(1_001), (5_000 << EPOCH_SHIFT) + 1);
        assert_eq!(t.issue(6_000), 6_000 << EPOCH_SHIFT);
    }
}
