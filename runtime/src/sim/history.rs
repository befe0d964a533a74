//! What happened in a run: the ground truth (starts, kills, pauses, network faults) and what
//! every node said (events and member views), in time order.
//!
//! A [`History`] is plain data with times as offsets from the start of the run, so the checkers
//! in [`super::check`] read it the same way whether a simulator or a multi-process test wrote it.

use std::net::SocketAddr;
use std::time::Duration;

use super::net::NetChange;
use crate::NodeId;
use crate::membership::{Member, MemberEvent, NodeIdentity};

/// One thing that happened at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Time since the start of the run.
    pub at: Duration,
    /// What happened.
    pub what: Happening,
}

/// Something that happened: a fact about the world or something a node said.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    /// A process started at `node` with this identity and cookie (first start or restart).
    Started {
        /// Its address.
        node: SocketAddr,
        /// Its identity.
        identity: NodeIdentity,
        /// Its cluster cookie.
        cookie: String,
    },
    /// The process at `node` was killed.
    Killed {
        /// Its address.
        node: SocketAddr,
    },
    /// The process at `node` stopped running (its timers and datagrams wait).
    Paused {
        /// Its address.
        node: SocketAddr,
    },
    /// The process at `node` runs again.
    Resumed {
        /// Its address.
        node: SocketAddr,
    },
    /// The process at `node` left the cluster on purpose and stopped.
    Left {
        /// Its address.
        node: SocketAddr,
    },
    /// The network changed; `healthy` says whether any fault remains.
    Net {
        /// The change.
        change: NetChange,
        /// No fault remains after it.
        healthy: bool,
    },
    /// The process at `node` renewed its identity after being declared down.
    Renewed {
        /// Its address.
        node: SocketAddr,
        /// The new identity.
        identity: NodeIdentity,
    },
    /// The process at `node` emitted a membership event.
    Event {
        /// The observer.
        node: SocketAddr,
        /// The event.
        event: MemberEvent,
    },
    /// The member table of the process at `node` changed to this (the local node first).
    View {
        /// The observer.
        node: SocketAddr,
        /// Every member it lists.
        members: Vec<Member>,
    },
    /// The process at `node` rejected a datagram from `from` (bad tag or malformed).
    Rejected {
        /// The observer.
        node: SocketAddr,
        /// The sender.
        from: SocketAddr,
    },
    /// The process at `node` was refused by `peer` (its cookie differs).
    RefusedBy {
        /// The refused node.
        node: SocketAddr,
        /// The peer that refused it.
        peer: SocketAddr,
    },
}

/// A time interval; `to` is the end of the history when the interval never closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Start, inclusive.
    pub from: Duration,
    /// End, exclusive.
    pub to: Duration,
}

impl Span {
    /// Whether the two intervals share a moment (touching ends count).
    pub fn overlaps(&self, from: Duration, to: Duration) -> bool {
        self.from <= to && from <= self.to
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Killed (a crash, or stopped for a restart).
    Killed,
    /// Left on purpose.
    Left,
}

/// One process from start to end: ground truth, derived from a [`History`].
#[derive(Debug, Clone, PartialEq)]
pub struct Life {
    /// Its address.
    pub node: SocketAddr,
    /// Its id (stable across renewals).
    pub id: NodeId,
    /// Its cookie.
    pub cookie: String,
    /// When it started.
    pub start: Duration,
    /// When and how it ended, if it did.
    pub end: Option<(Duration, End)>,
    /// When it was paused.
    pub pauses: Vec<Span>,
}

impl Life {
    /// Whether it ran, unpaused, from `from` to `to` inclusive.
    pub fn ran_throughout(&self, from: Duration, to: Duration) -> bool {
        self.start <= from
            && self.end.is_none_or(|(at, _)| at > to)
            && !self.pauses.iter().any(|p| p.overlaps(from, to))
    }

    /// Whether it was running (started, not ended, not paused) at `at`.
    pub fn running_at(&self, at: Duration) -> bool {
        self.ran_throughout(at, at)
    }
}

/// Everything that happened in a run, in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    entries: Vec<Entry>,
    end: Duration,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    /// Appends an entry; times must not go back.
    pub fn push(&mut self, at: Duration, what: Happening) {
        debug_assert!(self.entries.last().is_none_or(|e| e.at <= at));
        self.end = self.end.max(at);
        self.entries.push(Entry { at, what });
    }

    /// Marks how far the run went, even if nothing happened lately.
    pub fn extend_to(&mut self, at: Duration) {
        self.end = self.end.max(at);
    }

    /// Every entry, in time order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How far the run went.
    pub fn end(&self) -> Duration {
        self.end
    }

    /// Every event with its time and observer.
    pub fn events(&self) -> impl Iterator<Item = (Duration, SocketAddr, &MemberEvent)> {
        self.entries.iter().filter_map(|e| match &e.what {
            Happening::Event { node, event } => Some((e.at, *node, event)),
            _ => None,
        })
    }

    /// Every `NodeRejoined` naming `new` as the member and `old` as the id it replaced, with its
    /// time and observer (`new == old` for a renewal).
    pub fn rejoins(
        &self,
        new: NodeId,
        old: NodeId,
    ) -> impl Iterator<Item = (Duration, SocketAddr)> {
        self.events().filter_map(move |(at, node, event)| {
            matches!(event, MemberEvent::NodeRejoined { member, previous, .. }
                if member.id == new && *previous == old)
            .then_some((at, node))
        })
    }

    /// Every identity renewal, with its time and the renewed node.
    pub fn renewals(&self) -> impl Iterator<Item = (Duration, SocketAddr, &NodeIdentity)> {
        self.entries.iter().filter_map(|e| match &e.what {
            Happening::Renewed { node, identity } => Some((e.at, *node, identity)),
            _ => None,
        })
    }

    /// Every process that ran, in start order.
    pub fn lives(&self) -> Vec<Life> {
        let mut lives: Vec<Life> = Vec::new();
        // The life currently at an address is the last one started there.
        let current = |lives: &mut Vec<Life>, node: SocketAddr| {
            lives
                .iter()
                .rposition(|l| l.node == node && l.end.is_none())
        };
        for e in &self.entries {
            match &e.what {
                Happening::Started {
                    node,
                    identity,
                    cookie,
                } => lives.push(Life {
                    node: *node,
                    id: identity.id,
                    cookie: cookie.clone(),
                    start: e.at,
                    end: None,
                    pauses: Vec::new(),
                }),
                Happening::Killed { node } | Happening::Left { node } => {
                    if let Some(i) = current(&mut lives, *node) {
                        let how = match e.what {
                            Happening::Left { .. } => End::Left,
                            _ => End::Killed,
                        };
                        lives[i].end = Some((e.at, how));
                        if let Some(p) = lives[i].pauses.last_mut() {
                            p.to = p.to.min(e.at);
                        }
                    }
                }
                Happening::Paused { node } => {
                    if let Some(i) = current(&mut lives, *node) {
                        lives[i].pauses.push(Span {
                            from: e.at,
                            to: self.end,
                        });
                    }
                }
                Happening::Resumed { node } => {
                    if let Some(i) = current(&mut lives, *node)
                        && let Some(p) = lives[i].pauses.last_mut()
                    {
                        p.to = e.at;
                    }
                }
                _ => {}
            }
        }
        lives
    }

    /// The intervals during which some network fault was in place.
    pub fn net_faults(&self) -> Vec<Span> {
        let mut spans = Vec::new();
        let mut open: Option<Duration> = None;
        for e in &self.entries {
            if let Happening::Net { healthy, .. } = e.what {
                match (open, healthy) {
                    (None, false) => open = Some(e.at),
                    (Some(from), true) => {
                        spans.push(Span { from, to: e.at });
                        open = None;
                    }
                    _ => {}
                }
            }
        }
        if let Some(from) = open {
            spans.push(Span { from, to: self.end });
        }
        spans
    }

    /// When the network was last healed, if it ever was.
    pub fn last_heal(&self) -> Option<Duration> {
        self.entries.iter().rev().find_map(|e| match e.what {
            Happening::Net { healthy: true, .. } => Some(e.at),
            _ => None,
        })
    }
}
