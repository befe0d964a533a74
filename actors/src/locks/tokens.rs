//! Fencing tokens: strictly increasing per owner, and across owners.
//!
//! A token is `epoch << EPOCH_SHIFT | counter`. The epoch is the wall-clock millisecond at which
//! the owner's current term began; a term begins whenever the up set changes. A new owner only
//! grants a name after the takeover delay (a full lease plus the failure-detection bound), so its
//! epoch exceeds every epoch of an earlier owner as long as clocks differ by less than that
//! delay. Tokens learned from holders re-asserting their leases raise the floor too.

/// Bits of a token left for the counter within one epoch.
pub const EPOCH_SHIFT: u32 = 22;

/// Hands out tokens for every name this node owns: one sequence per node is a sequence per name.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    last: u64,
}

impl Tokens {
    /// Starts a term at wall-clock `wall_ms`: later tokens exceed `wall_ms << EPOCH_SHIFT`.
    pub fn new_term(&mut self, wall_ms: u64) {
        let floor = wall_ms.saturating_mul(1 << EPOCH_SHIFT);
        self.last = self.last.max(floor.saturating_sub(1));
    }

    /// A token seen elsewhere (a holder re-asserting its lease): later tokens exceed it.
    pub fn observe(&mut self, token: u64) {
        self.last = self.last.max(token);
    }

    /// The next token, above every token handed out or observed.
    pub fn next(&mut self) -> u64 {
        self.last = self.last.saturating_add(1);
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
    fn a_new_term_jumps_ahead_but_never_back() {
        let mut t = Tokens::default();
        t.new_term(1_000);
        let a = t.next();
        assert_eq!(a, 1_000 << EPOCH_SHIFT);
        t.new_term(900); // a clock that stepped back does not lower the sequence
        assert!(t.next() > a);
        t.observe(5_000 << EPOCH_SHIFT);
        assert_eq!(t.next(), (5_000 << EPOCH_SHIFT) + 1);
    }
}
