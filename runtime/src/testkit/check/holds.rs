//! Exclusive holds (locks, bucket ownership): DESIGN "at most one live holder per name at any
//! instant" and "fencing tokens per name strictly increase".

use std::collections::BTreeMap;

/// One hold of a name, as its holder recorded it: valid from `start_us` to `end_us`
/// (microseconds on a clock every holder shares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// What was held.
    pub name: String,
    /// Its fencing token.
    pub token: u64,
    /// Who held it.
    pub holder: String,
    /// When the hold began.
    pub start_us: u64,
    /// When the holder stopped relying on it: released, lost, or its lease ended.
    pub end_us: u64,
}

/// A broken promise, with the two holds that break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which promise.
    pub promise: &'static str,
    /// The earlier hold.
    pub first: Hold,
    /// The later hold.
    pub second: Hold,
}

/// Holds by name, in order of start. A hold whose window is empty is left out: its holder
/// only looked at its guard after the lease had ended (a process paused between the grant and
/// the record, say), so it never held anything, and its token is older than its start.
fn by_name(holds: &[Hold]) -> BTreeMap<&str, Vec<&Hold>> {
    let mut map: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for h in holds.iter().filter(|h| h.end_us > h.start_us) {
        map.entry(&h.name).or_default().push(h);
    }
    for list in map.values_mut() {
        list.sort_by_key(|h| (h.start_us, h.token));
    }
    map
}

/// Holds of one name whose valid windows overlap.
pub fn no_two_holders(holds: &[Hold]) -> Vec<Violation> {
    let mut out = Vec::new();
    for list in by_name(holds).values() {
        // Sorted by start: each hold must end before any later one starts.
        let mut latest_end: Option<&Hold> = None;
        for h in list {
            if let Some(prev) = latest_end
                && prev.end_us > h.start_us
            {
                out.push(Violation {
                    promise: "no two holders",
                    first: (*prev).clone(),
                    second: (*h).clone(),
                });
            }
            if latest_end.is_none_or(|p| h.end_us > p.end_us) {
                latest_end = Some(h);
            }
        }
    }
    out
}

/// Holds of one name whose tokens do not grow with their start.
pub fn tokens_increase(holds: &[Hold]) -> Vec<Violation> {
    let mut out = Vec::new();
    for list in by_name(holds).values() {
        for pair in list.windows(2) {
            if pair[1].token <= pair[0].token {
                out.push(Violation {
                    promise: "tokens increase",
                    first: pair[0].clone(),
                    second: pair[1].clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(name: &str, token: u64, start: u64, end: u64) -> Hold {
        Hold {
            name: name.into(),
            token,
            holder: format!("h{token}"),
            start_us: start,
            end_us: end,
        }
    }

    #[test]
    fn back_to_back_holds_pass_and_overlaps_are_caught() {
        let ok = [
            hold("a", 1, 0, 10),
            hold("a", 2, 10, 20),
            hold("b", 1, 5, 15),
        ];
        assert!(no_two_holders(&ok).is_empty());
        assert!(tokens_increase(&ok).is_empty());
        let bad = [
            hold("a", 1, 0, 30),
            hold("a", 2, 10, 20),
            hold("a", 3, 25, 40),
        ];
        let v = no_two_holders(&bad);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().all(|v| v.first.token == 1));
    }

    /// Found by `tests/cluster/locks.rs`: a holder SIGSTOPped between its grant and its record wakes
    /// past its lease and records a hold that ends before it starts, inside a later holder's.
    #[test]
    fn a_hold_that_ended_before_it_began_held_nothing() {
        let holds = [hold("a", 9, 100, 200), hold("a", 5, 150, 90)];
        assert!(no_two_holders(&holds).is_empty());
        assert!(tokens_increase(&holds).is_empty());
        // A real window inside another still counts.
        let bad = [hold("a", 9, 100, 200), hold("a", 10, 150, 151)];
        assert_eq!(no_two_holders(&bad).len(), 1);
    }

    #[test]
    fn a_token_that_goes_back_is_caught() {
        let bad = [hold("a", 5, 0, 10), hold("a", 4, 10, 20)];
        assert_eq!(tokens_increase(&bad).len(), 1);
    }
}
