//! No false down: a node that runs is never declared down while the network is healthy.
//!
//! SWIM may wrongly declare a node down only when probes to it fail: a cut, lossy or slow link,
//! or a paused process on either end. So a `NodeDown` about a node whose process ran unpaused for
//! the whole `window` before the event, while no network fault and no pause existed anywhere, is a
//! false down. `window` should cover a detection cycle plus dissemination, so that a verdict
//! reached during an earlier fault and still spreading is not blamed on a healthy period; the
//! membership's detection bound is a good value.

use std::time::Duration;

use super::Violation;
use crate::membership::MemberEvent;
use crate::sim::history::{History, Span};

/// Finds every false down.
pub fn check(history: &History, window: Duration) -> Vec<Violation> {
    let lives = history.lives();
    let mut disturbed: Vec<Span> = history.net_faults();
    disturbed.extend(lives.iter().flat_map(|l| l.pauses.iter().copied()));
    let mut out = Vec::new();
    for (at, node, event) in history.events() {
        let MemberEvent::NodeDown(member) = event else {
            continue;
        };
        let from = at.saturating_sub(window);
        let Some(life) = lives.iter().find(|l| l.id == member.id) else {
            continue;
        };
        let healthy = !disturbed.iter().any(|s| s.overlaps(from, at));
        if healthy && life.ran_throughout(from, at) {
            out.push(Violation {
                promise: "no_false_down",
                at,
                node: Some(node),
                detail: format!(
                    "declared {} ({}) down, though it ran on a healthy network since {from:?}",
                    member.name, member.addr
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{Member, MemberState};
    use crate::sim;
    use crate::sim::history::Happening;
    use crate::sim::net::NetChange;

    use crate::sim::tests::ident;

    fn down(n: u8) -> Happening {
        Happening::Event {
            node: sim::tests::addr(1),
            event: MemberEvent::NodeDown(Member::from_identity(&ident(n), MemberState::Down)),
        }
    }

    fn started(h: &mut History, n: u8) {
        h.push(
            Duration::ZERO,
            Happening::Started {
                node: ident(n).addr,
                identity: ident(n),
                cookie: "c".into(),
            },
        );
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_down_for_a_running_node_on_a_healthy_network_is_false() {
        let mut h = History::new();
        started(&mut h, 1);
        started(&mut h, 2);
        h.push(5 * S, down(2));
        let v = check(&h, 2 * S);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].at, 5 * S);
    }

    #[test]
    fn a_down_after_a_kill_or_during_a_cut_is_fine() {
        let mut h = History::new();
        started(&mut h, 1);
        started(&mut h, 2);
        started(&mut h, 3);
        h.push(
            S,
            Happening::Killed {
                node: ident(2).addr,
            },
        );
        h.push(3 * S, down(2));
        let cut = NetChange::Isolated(ident(3).addr);
        h.push(
            4 * S,
            Happening::Net {
                change: cut,
                healthy: false,
            },
        );
        h.push(
            5 * S,
            Happening::Net {
                change: NetChange::Healed,
                healthy: true,
            },
        );
        h.push(6 * S, down(3));
        assert_eq!(check(&h, 2 * S), vec![]);
        // Long after the heal, the same verdict would be false.
        h.push(9 * S, down(3));
        assert_eq!(check(&h, 2 * S).len(), 1);
    }
}
