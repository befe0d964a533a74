//! The lock table of the names this node owns, with no IO.
//!
//! Each name's state lives on its owner, the up member chosen by rendezvous hashing. The table
//! grants leases, queues waiters in FIFO order, renews and releases, and settles ownership
//! changes. Drive it with one input (`acquire`, `renew`, `release`, `cancel`, `set_view`,
//! `handle_timeout`), then drain [`LockTable::poll_output`], then sleep until
//! [`LockTable::poll_timeout`].
//!
//! # Safety argument
//! - A name is granted only by a node that has owned it, with quorum, for the whole takeover
//!   delay (a lease plus the failure-detection bound) before the grant ([`super::views`]). An
//!   earlier owner stops granting and renewing within the detection bound of losing the name
//!   (it sees the new view or loses quorum), so every lease it gave has ended by then.
//! - A holder re-asserting its lease during that delay (its renewal reaching the new owner) is
//!   adopted, so a hold survives a change of owner and the token floor rises to its token.
//! - A released or expired name is granted to the next waiter at once: the owner itself ended
//!   the previous lease.
//! - Entries with no holder and no waiter are removed: ever-new names leave nothing behind.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use colony_runtime::NodeId;
use serde::{Deserialize, Serialize};

use super::tokens::Tokens;
use super::views::{View, Views};

/// Who holds or waits: a guard on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Holder {
    /// The node the guard lives on.
    pub node: NodeId,
    /// The guard's id, unique on that node.
    pub guard: u64,
}

/// The shell's handle for an answer owed to a caller.
pub type RequestId = u64;

/// How an acquire waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Answer at once.
    No,
    /// Queue until granted or until this deadline.
    Until(Instant),
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// The lock is held with this token for one lease from the grant.
    Granted {
        /// The fencing token.
        token: u64,
        /// How long the request waited in the queue before the grant, in microseconds: the
        /// holder's lease runs from its send time plus this.
        waited_us: u64,
    },
    /// Someone else holds it (or it cannot be granted yet) and the caller did not wait.
    Busy,
    /// The wait ended without a grant.
    TimedOut,
    /// The lease was renewed.
    Renewed,
    /// The lock was released.
    Released,
    /// The caller does not hold the lock (its lease ended or was never granted).
    NotHeld,
    /// This node does not own the name; ask `owner`.
    NotOwner {
        /// The owner in this node's view.
        owner: Option<NodeId>,
    },
    /// This node cannot see a quorum; nothing is granted or renewed.
    NoQuorum,
    /// The waiter was withdrawn.
    Cancelled,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Answer request `request`.
    Reply {
        /// The request.
        request: RequestId,
        /// The answer.
        answer: Answer,
    },
}

#[derive(Debug, Clone)]
struct Hold {
    holder: Holder,
    token: u64,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct Waiter {
    holder: Holder,
    request: RequestId,
    deadline: Instant,
    since: Instant,
}

#[derive(Debug, Default)]
struct Entry {
    hold: Option<Hold>,
    waiters: VecDeque<Waiter>,
    /// This entry's one timer, at its earliest deadline.
    timer: Option<(Instant, u64)>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.hold.is_none() && self.waiters.is_empty()
    }
}

/// Timing of the lock table.
#[derive(Debug, Clone, Copy)]
pub struct TableConfig {
    /// How long a grant or renewal lasts.
    pub lease: Duration,
    /// How long a node must own a name before it grants it: a lease plus the failure-detection
    /// bound. Zero for a cluster of one, where no other owner can have existed.
    pub takeover_delay: Duration,
}

/// The lock table. See the module doc.
#[derive(Debug)]
pub struct LockTable {
    me: NodeId,
    config: TableConfig,
    views: Views,
    entries: HashMap<String, Entry>,
    tokens: Tokens,
    /// A monotonic instant and the wall-clock milliseconds at it, to date grants on the wall
    /// clock that tokens follow.
    clock: Option<(Instant, u64)>,
    timers: BTreeMap<(Instant, u64), String>,
    next_timer: u64,
    outputs: VecDeque<Output>,
}

/// The placement key of a lock name: every node must compute the same owner from it.
pub fn key(name: &str) -> Vec<u8> {
    let mut k = b"lock/".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

impl LockTable {
    /// An empty table for node `me`.
    pub fn new(me: NodeId, config: TableConfig) -> Self {
        LockTable {
            me,
            config,
            views: Views::new(config.takeover_delay),
            entries: HashMap::new(),
            tokens: Tokens::default(),
            clock: None,
            timers: BTreeMap::new(),
            next_timer: 0,
            outputs: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// Names with a holder or a waiter.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no name has a holder or a waiter.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The current holder of `name` and its token, as this owner sees it.
    pub fn holder(&self, name: &str) -> Option<(Holder, u64)> {
        let hold = self.entries.get(name)?.hold.as_ref()?;
        Some((hold.holder, hold.token))
    }

    /// Waiters queued for `name`.
    pub fn waiting(&self, name: &str) -> usize {
        self.entries.get(name).map_or(0, |e| e.waiters.len())
    }

    /// The owner of `name` in the current view.
    pub fn owner(&self, name: &str) -> Option<NodeId> {
        self.views.current().and_then(|v| v.owner(&key(name)))
    }

    /// The next deadline for [`Self::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- inputs ----

    /// A new membership view: `up` members (this node included), and whether they are a quorum.
    /// `wall_ms` is the wall clock (milliseconds since the Unix epoch) at `now`; tokens follow it.
    pub fn set_view(&mut self, now: Instant, wall_ms: u64, mut up: Vec<NodeId>, has_quorum: bool) {
        up.sort_unstable();
        if self
            .views
            .current()
            .is_some_and(|v| v.up == up && v.has_quorum == has_quorum)
        {
            return;
        }
        self.views.push(View {
            since: now,
            up,
            has_quorum,
        });
        self.clock = Some((now, wall_ms));
        let names: Vec<String> = self.entries.keys().cloned().collect();
        for name in names {
            let answer = if !has_quorum {
                Some(Answer::NoQuorum)
            } else {
                let owner = self.owner(&name);
                (owner != Some(self.me)).then_some(Answer::NotOwner { owner })
            };
            if let Some(answer) = answer {
                // Holders re-assert at the new owner; waiters ask it again.
                let entry = self.entries.remove(&name).expect("listed above");
                if let Some(slot) = entry.timer {
                    self.timers.remove(&slot);
                }
                for w in entry.waiters {
                    self.reply(w.request, answer.clone());
                }
            } else {
                self.rearm(&name);
            }
        }
    }

    /// This node did not run between `dark_since` and `now` (the process was paused or starved).
    /// Its view may be stale by that much: others may have declared it down and taken its names
    /// over. So it starts a new term and grants nothing it did not hear about for a full
    /// takeover delay, as a new owner would.
    pub fn went_dark(&mut self, dark_since: Instant, now: Instant, wall_ms: u64) {
        let Some(current) = self.views.current().cloned() else {
            return;
        };
        self.views.push(View {
            since: dark_since,
            up: current.up.clone(),
            has_quorum: false,
        });
        self.views.push(View {
            since: now,
            ..current
        });
        self.clock = Some((now, wall_ms));
        let names: Vec<String> = self.entries.keys().cloned().collect();
        for name in names {
            self.rearm(&name);
        }
    }

    /// `holder` asks for `name`.
    pub fn acquire(
        &mut self,
        now: Instant,
        name: &str,
        holder: Holder,
        request: RequestId,
        wait: Wait,
    ) {
        if let Some(refusal) = self.refusal(name) {
            self.reply(request, refusal);
            return;
        }
        let entry = self.entries.entry(name.to_owned()).or_default();
        if let Some(hold) = entry.hold.as_mut()
            && hold.holder == holder
        {
            // A repeated acquire of a grant the caller never saw: same token, fresh lease.
            hold.expires = now + self.config.lease;
            let token = hold.token;
            self.rearm(name);
            self.reply(
                request,
                Answer::Granted {
                    token,
                    waited_us: 0,
                },
            );
            return;
        }
        if let Some(pos) = entry.waiters.iter().position(|w| w.holder == holder) {
            // The caller re-sent its wait (a long poll renewed): keep its place in the queue.
            let old = std::mem::replace(&mut entry.waiters[pos].request, request);
            // The caller's lease will be counted from this request: so is the wait.
            entry.waiters[pos].since = now;
            if let Wait::Until(deadline) = wait {
                entry.waiters[pos].deadline = deadline;
            }
            self.rearm(name);
            self.reply(old, Answer::Cancelled);
            return;
        }
        match wait {
            Wait::No => {
                let free = entry.hold.is_none() && entry.waiters.is_empty();
                if free && self.views.owned_throughout(self.me, &key(name), now) {
                    let token = self.grant(now, name, holder);
                    self.reply(
                        request,
                        Answer::Granted {
                            token,
                            waited_us: 0,
                        },
                    );
                } else {
                    self.reply(request, Answer::Busy);
                }
                self.rearm(name);
            }
            Wait::Until(deadline) => {
                entry.waiters.push_back(Waiter {
                    holder,
                    request,
                    deadline,
                    since: now,
                });
                self.promote(now, name);
                self.rearm(name);
            }
        }
    }

    /// `holder` extends its lease on `name` with `token`.
    pub fn renew(
        &mut self,
        now: Instant,
        name: &str,
        holder: Holder,
        token: u64,
        request: RequestId,
    ) {
        if let Some(refusal) = self.refusal(name) {
            self.reply(request, refusal);
            return;
        }
        let lease = self.config.lease;
        let grantable = self.views.owned_throughout(self.me, &key(name), now);
        let entry = self.entries.entry(name.to_owned()).or_default();
        let answer = match entry.hold.as_mut() {
            Some(hold) if hold.holder == holder && hold.token == token => {
                hold.expires = now + lease;
                Answer::Renewed
            }
            // Nobody holds it here and this node has not granted it yet: the caller held it from
            // the previous owner. Adopt the hold so that it survives the change of owner.
            None if !grantable => {
                entry.hold = Some(Hold {
                    holder,
                    token,
                    expires: now + lease,
                });
                self.tokens.observe(token);
                Answer::Renewed
            }
            _ => Answer::NotHeld,
        };
        self.rearm(name);
        self.reply(request, answer);
    }

    /// `holder` gives `name` back.
    pub fn release(
        &mut self,
        now: Instant,
        name: &str,
        holder: Holder,
        token: u64,
        request: RequestId,
    ) {
        let held = self
            .entries
            .get(name)
            .and_then(|e| e.hold.as_ref())
            .is_some_and(|h| h.holder == holder && h.token == token);
        if held {
            self.entries.get_mut(name).expect("checked").hold = None;
            self.reply(request, Answer::Released);
            self.promote(now, name);
        } else {
            self.reply(request, Answer::NotHeld);
        }
        self.rearm(name);
    }

    /// `holder` withdraws from `name`: out of the queue, or released if the grant raced.
    pub fn cancel(&mut self, now: Instant, name: &str, holder: Holder, request: RequestId) {
        let Some(entry) = self.entries.get_mut(name) else {
            self.reply(request, Answer::Cancelled);
            return;
        };
        let withdrawn = entry
            .waiters
            .iter()
            .position(|w| w.holder == holder)
            .and_then(|pos| entry.waiters.remove(pos));
        let was_holder = entry.hold.as_ref().is_some_and(|h| h.holder == holder);
        if was_holder {
            entry.hold = None;
        }
        if let Some(w) = withdrawn {
            self.reply(w.request, Answer::Cancelled);
        }
        if was_holder {
            self.promote(now, name);
        }
        self.reply(request, Answer::Cancelled);
        self.rearm(name);
    }

    /// Expires leases and waits, and grants what became grantable.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let name = entry.remove();
            if let Some(e) = self.entries.get_mut(&name) {
                e.timer = None;
            }
            self.expire(now, &name);
        }
    }

    // ---- internals ----

    fn refusal(&self, name: &str) -> Option<Answer> {
        match self.views.current() {
            None => Some(Answer::NoQuorum),
            Some(v) if !v.has_quorum => Some(Answer::NoQuorum),
            Some(v) => {
                let owner = v.owner(&key(name));
                (owner != Some(self.me)).then_some(Answer::NotOwner { owner })
            }
        }
    }

    fn expire(&mut self, now: Instant, name: &str) {
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        if entry.hold.as_ref().is_some_and(|h| h.expires <= now) {
            entry.hold = None;
        }
        let mut timed_out = Vec::new();
        entry.waiters.retain(|w| {
            let keep = w.deadline > now;
            if !keep {
                timed_out.push(w.request);
            }
            keep
        });
        for request in timed_out {
            self.reply(request, Answer::TimedOut);
        }
        self.promote(now, name);
        self.rearm(name);
    }

    /// Grants `name` to the first waiter if it is free and grantable.
    fn promote(&mut self, now: Instant, name: &str) {
        if !self.views.owned_throughout(self.me, &key(name), now) {
            return;
        }
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        if entry.hold.is_some() {
            return;
        }
        while let Some(w) = entry.waiters.pop_front() {
            if w.deadline <= now {
                self.outputs.push_back(Output::Reply {
                    request: w.request,
                    answer: Answer::TimedOut,
                });
                continue;
            }
            let token = self.grant(now, name, w.holder);
            let waited_us = now.saturating_duration_since(w.since).as_micros() as u64;
            self.reply(w.request, Answer::Granted { token, waited_us });
            return;
        }
    }

    fn grant(&mut self, now: Instant, name: &str, holder: Holder) -> u64 {
        let wall_ms = self.clock.map_or(0, |(at, ms)| {
            ms + now.saturating_duration_since(at).as_millis() as u64
        });
        let token = self.tokens.issue(wall_ms);
        let expires = now + self.config.lease;
        self.entries.entry(name.to_owned()).or_default().hold = Some(Hold {
            holder,
            token,
            expires,
        });
        token
    }

    /// Points the one timer of `name` at its earliest deadline: lease end, a waiter's deadline,
    /// or the moment this node may start granting it. Removes the entry if it is empty.
    fn rearm(&mut self, name: &str) {
        let grantable_at = self.views.grantable_at(self.me, &key(name));
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        if let Some(old) = entry.timer.take() {
            self.timers.remove(&old);
        }
        if entry.is_empty() {
            self.entries.remove(name);
            return;
        }
        let waiting = entry.waiters.iter().map(|w| w.deadline).min();
        let wake = waiting.and(grantable_at.filter(|_| entry.hold.is_none()));
        let at = [entry.hold.as_ref().map(|h| h.expires), waiting, wake]
            .into_iter()
            .flatten()
            .min();
        if let Some(at) = at {
            self.next_timer += 1;
            let slot = (at, self.next_timer);
            self.timers.insert(slot, name.to_owned());
            entry.timer = Some(slot);
        }
    }

    fn reply(&mut self, request: RequestId, answer: Answer) {
        self.outputs.push_back(Output::Reply { request, answer });
    }
}
