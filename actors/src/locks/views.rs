//! The recent history of membership views, to decide whether this node has owned a name long
//! enough to grant it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use colony_runtime::NodeId;
use colony_runtime::placement::owner_of;

/// One membership view: who was up, and whether that was a quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// When this node started seeing it.
    pub since: Instant,
    /// The up members, this node included.
    pub up: Vec<NodeId>,
    /// Whether they reached quorum.
    pub has_quorum: bool,
}

impl View {
    /// The owner of `key` in this view.
    pub fn owner(&self, key: &[u8]) -> Option<NodeId> {
        owner_of(key, self.up.iter().copied())
    }
}

/// The views of the last `window`, oldest first. The first one may have begun before the window.
#[derive(Debug, Clone)]
pub struct Views {
    window: Duration,
    views: VecDeque<View>,
}

impl Views {
    /// A history covering `window` (the takeover delay). Until a view older than the window is
    /// known, nothing is grantable: another owner may have granted before this node started.
    pub fn new(window: Duration) -> Self {
        Views {
            window,
            views: VecDeque::new(),
        }
    }

    /// The view in force now.
    pub fn current(&self) -> Option<&View> {
        self.views.back()
    }

    /// Records a new view seen at `now`, dropping what fell out of the window.
    pub fn push(&mut self, view: View) {
        let now = view.since;
        self.views.push_back(view);
        let start = now.checked_sub(self.window);
        // Keep the last view that began at or before the window start: it was in force then.
        while self.views.len() > 1 && start.is_some_and(|s| self.views[1].since <= s) {
            self.views.pop_front();
        }
    }

    /// Whether `me` owned `key` with quorum through the whole window before `now`.
    pub fn owned_throughout(&self, me: NodeId, key: &[u8], now: Instant) -> bool {
        let Some(start) = now.checked_sub(self.window) else {
            return false;
        };
        // The view in force at the window start, and every later one.
        let Some(first) = self.views.iter().rposition(|v| v.since <= start) else {
            return false;
        };
        self.views
            .iter()
            .skip(first)
            .all(|v| v.has_quorum && v.owner(key) == Some(me))
    }

    /// When `key` becomes grantable by `me` if the view does not change again, or `None` if
    /// `me` does not own it now.
    pub fn grantable_at(&self, me: NodeId, key: &[u8]) -> Option<Instant> {
        let current = self.views.back()?;
        if !current.has_quorum || current.owner(key) != Some(me) {
            return None;
        }
        // The newest view in which `me` did not own it with quorum ends the wait's start.
        let mut since = self.views.front()?.since;
        for pair in self.views.iter().collect::<Vec<_>>().windows(2) {
            let (before, after) = (pair[0], pair[1]);
            if !before.has_quorum || before.owner(key) != Some(me) {
                since = after.since;
            }
        }
        Some(since + self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> NodeId {
        NodeId::from_u128(n)
    }

    /// Views of a window `w` where node 1 has been alone with quorum since `t0`.
    fn alone_since(t0: Instant, w: Duration) -> Views {
        let mut views = Views::new(w);
        views.push(View {
            since: t0,
            up: vec![id(1)],
            has_quorum: true,
        });
        views
    }

    #[test]
    fn a_name_is_grantable_only_after_a_full_window_of_ownership() {
        let t0 = Instant::now();
        let w = Duration::from_secs(5);
        let views = alone_since(t0, w);
        assert!(!views.owned_throughout(id(1), b"k", t0 + Duration::from_secs(4)));
        assert!(views.owned_throughout(id(1), b"k", t0 + Duration::from_secs(5)));
        assert_eq!(views.grantable_at(id(1), b"k"), Some(t0 + w));
    }

    #[test]
    fn losing_quorum_restarts_the_wait() {
        let t0 = Instant::now();
        let w = Duration::from_secs(5);
        let mut views = alone_since(t0, w);
        views.push(View {
            since: t0 + Duration::from_secs(10),
            up: vec![id(1)],
            has_quorum: false,
        });
        let healed = t0 + Duration::from_secs(12);
        views.push(View {
            since: healed,
            up: vec![id(1)],
            has_quorum: true,
        });
        assert!(!views.owned_throughout(id(1), b"k", healed + Duration::from_secs(1)));
        assert_eq!(views.grantable_at(id(1), b"k"), Some(healed + w));
        assert!(views.owned_throughout(id(1), b"k", healed + w));
    }

    #[test]
    fn old_views_fall_out_of_the_window() {
        let t0 = Instant::now();
        let w = Duration::from_secs(1);
        let mut views = Views::new(w);
        for i in 0..100u64 {
            views.push(View {
                since: t0 + Duration::from_secs(i),
                up: vec![id(1)],
                has_quorum: true,
            });
        }
        assert!(views.views.len() <= 3);
    }
}
