//! A simulated application task on one node: it takes a name (`try_lock`, `try_lock_for` or
//! `lock`, sometimes giving up early as a dropped future does), holds it across several
//! leases and releases it, as `ClusterLock` and `LockGuard` do on a real node.

use std::time::{Duration, Instant};

use colony_runtime::testkit::check::Hold;
use rand::RngExt;

use super::{Cause, Ctx, LockNode, Lost, NAMES, Purpose, us};
use crate::locks::attempt::{Attempt, Mode, Next};
use crate::locks::core::{Answer, Holder, RenewRoute};
use crate::locks::msg::LockRequest;

/// Where one client stands.
#[derive(Debug)]
enum State {
    /// Thinking until `next`.
    Idle { next: Instant },
    /// Waiting for the answer to request `rpc`.
    Asking {
        name: String,
        guard: u64,
        attempt: Attempt,
        rpc: u64,
        sent_at: Instant,
        timeout: Duration,
        give_up: Option<Instant>,
    },
    /// Backing off before asking again.
    Backoff {
        name: String,
        guard: u64,
        attempt: Attempt,
        until: Instant,
        give_up: Option<Instant>,
    },
    /// Holding `name` until `release_at`; its hold is `record.holds[hold]`.
    Holding {
        name: String,
        guard: u64,
        token: u64,
        hold: usize,
        release_at: Instant,
    },
}

/// One client. See the module doc.
#[derive(Debug)]
pub(super) struct Client {
    state: State,
}

fn between(ctx: &mut Ctx<'_, LockNode>, min: Duration, max: Duration) -> Duration {
    min + Duration::from_nanos(ctx.rng.random_range(0..=(max - min).as_nanos() as u64))
}

impl Client {
    pub(super) fn new(ctx: &mut Ctx<'_, LockNode>) -> Self {
        let next = ctx.now + between(ctx, Duration::ZERO, Duration::from_millis(500));
        Client {
            state: State::Idle { next },
        }
    }

    /// The guard this client holds a lock with, and the hold's index in the record.
    pub(super) fn holding(&self) -> Option<(u64, usize)> {
        match &self.state {
            State::Holding { guard, hold, .. } => Some((*guard, *hold)),
            _ => None,
        }
    }

    /// Whether this client is waiting for `name`.
    pub(super) fn waits_for(&self, name: &str) -> bool {
        matches!(&self.state, State::Asking { name: n, .. } | State::Backoff { name: n, .. } if n == name)
    }

    /// When this client next acts.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Idle { next } => Some(*next),
            State::Asking { give_up, .. } => *give_up,
            State::Backoff { until, give_up, .. } => {
                Some(give_up.map_or(*until, |g| g.min(*until)))
            }
            State::Holding { release_at, .. } => Some(*release_at),
        }
    }
}

fn holder(node: &LockNode, guard: u64) -> Holder {
    Holder {
        node: node.id,
        guard,
    }
}

fn idle(node: &mut LockNode, ctx: &mut Ctx<'_, LockNode>, i: usize) {
    let next = ctx.now + between(ctx, Duration::ZERO, Duration::from_millis(300));
    node.clients[i].state = State::Idle { next };
}

/// Acts if this client's time has come.
pub(super) fn tick(node: &mut LockNode, ctx: &mut Ctx<'_, LockNode>, i: usize) {
    let now = ctx.now;
    if node.clients[i].deadline().is_none_or(|d| d > now) {
        return;
    }
    match &node.clients[i].state {
        State::Idle { .. } => start(node, ctx, i),
        State::Asking { give_up, .. } | State::Backoff { give_up, .. }
            if give_up.is_some_and(|g| g <= now) =>
        {
            withdraw(node, ctx, i);
            idle(node, ctx, i);
        }
        State::Asking { .. } => {}
        State::Backoff { .. } => ask(node, ctx, i),
        State::Holding { .. } => release(node, ctx, i),
    }
}

/// Picks a name and a way to wait for it, and asks.
fn start(node: &mut LockNode, ctx: &mut Ctx<'_, LockNode>, i: usize) {
    let name = NAMES[ctx.rng.random_range(0..NAMES.len())].to_owned();
    let roll = ctx.rng.random_range(0..100);
    let mode = match roll {
        0..25 => Mode::Try,
        25..80 => {
            let wait = between(ctx, Duration::from_millis(100), Duration::from_secs(3));
            Mode::For(ctx.now + wait)
        }
        _ => Mode::Forever,
    };
    // Some waits are abandoned early (the caller's future dropped).
    let give_up = (mode != Mode::Try && ctx.rng.random_range(0..100) < 15)
        .then(|| ctx.now + between(ctx, Duration::from_millis(50), Duration::from_secs(2)));
    node.next_guard += 1;
    node.clients[i].state = State::Backoff {
        name,
        guard: node.next_guard,
        attempt: Attempt::new(mode, ctx.now, node.holdings_config),
        until: ctx.now,
        give_up,
    };
    ask(node, ctx, i);
}

/// Sends the acquire of a client that is backing off (or starting).
fn ask(node: &mut LockNode, ctx: &mut Ctx<'_, LockNode>, i: usize) {
    let State::Backoff {
        name,
        guard,
        attempt,
        give_up,
        ..
    } = &node.clients[i].state
    else {
        return;
    };
    let (name, guard, mut attempt, give_up) = (name.clone(), *guard, attempt.clone(), *give_up);
    let wait = attempt.wait(ctx.now);
    let timeout = Attempt::timeout(wait);
    let request = LockRequest::Acquire {
        name: name.clone(),
        holder: holder(node, guard),
        wait_ms: Attempt::wait_ms(wait),
        attempt: attempt.number(),
    };
    let sent_at = ctx.now;
    // No owner known: the shell's `ask` answers at once, with nothing.
    let rpc = match node.owner(&name) {
        Some(to) => node.call(ctx, to, &request, Purpose::Acquire { client: i }, timeout),
        None => 0,
    };
    node.clients[i].state = State::Asking {
        name,
        guard,
        attempt,
        rpc,
        sent_at,
        timeout,
        give_up,
    };
    if rpc == 0 {
        answer(node, ctx, i, None);
    }
}

/// The answer to client `i`'s request `rpc` (`None`: none in time).
pub(super) fn answered(
    node: &mut LockNode,
    ctx: &mut Ctx<'_, LockNode>,
    i: usize,
    rpc: u64,
    reply: Option<Answer>,
) {
    if matches!(&node.clients[i].state, State::Asking { rpc: r, .. } if *r == rpc) {
        answer(node, ctx, i, reply);
    }
}

fn answer(node: &mut LockNode, ctx: &mut Ctx<'_, LockNode>, i: usize, reply: Option<Answer>) {
    let State::Asking {
        name,
        guard,
        attempt,
        sent_at,
        timeout,
        give_up,
        ..
    } = &node.clients[i].state
    else {
        return;
    };
    let (name, guard, mut attempt, sent_at, timeout, give_up) = (
        name.clone(),
        *guard,
        attempt.clone(),
        *sent_at,
        *timeout,
        *give_up,
    );
    let owner_known = reply.is_some() || node.owner(&name).is_some();
    if ctx.record.trace {
        eprintln!(
            "{:>9?} {}/{guard} asked for {name} at {:?}: {reply:?}",
            ctx.world,
            ctx.name,
            ctx.world_of(sent_at)
        );
    }
    let next = attempt.answer(ctx.now, sent_at, timeout, reply, owner_known);
    match next {
        Next::Granted {
            token,
            sent_at,
            lease_ms,
        } => granted(node, ctx, i, name, guard, token, sent_at, lease_ms),
        Next::Busy => {
            ctx.record.busy += 1;
            idle(node, ctx, i);
        }
        Next::Again | Next::Retry { .. } => {
            let after = match next {
                Next::Retry { after, .. } => after,
                _ => Duration::ZERO,
            };
            node.clients[i].state = State::Backoff {
                name,
                guard,
                attempt,
                until: ctx.now + after,
                give_up,
            };
            if after.is_zero() {
                ask(node, ctx, i);
            }
        }
        Next::GaveUp { withdraw: w, .. } => {
            ctx.record.gave_up += 1;
            if w {
                withdraw(node, ctx, i);
            }
            idle(node, ctx, i);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn granted(
    node: &mut LockNode,
    ctx: &mut Ctx<'_, LockNode>,
    i: usize,
    name: String,
    guard: u64,
    token: u64,
    sent_at: Instant,
    lease_ms: u64,
) {
    node.holdings
        .granted(ctx.now, guard, name.clone(), token, sent_at, lease_ms);
    let valid_until = node.holdings.valid_until(guard).expect("just granted");
    let end = ctx.world_of(valid_until);
    if ctx.record.trace {
        eprintln!(
            "{:>9?} {}/{guard} holds {name} #{token} until {end:?}",
            ctx.world, ctx.name
        );
    }
    ctx.record.holds.push(Hold {
        name: name.clone(),
        token,
        holder: format!("{}/{guard}", ctx.name),
        start_us: us(ctx.world),
        end_us: us(end),
    });
    let lease = ctx.config.group.liveness;
    let hold_for = between(ctx, lease / 10, lease * 7 / 2);
    node.clients[i].state = State::Holding {
        name,
        guard,
        token,
        hold: ctx.record.holds.len() - 1,
        release_at: ctx.now + hold_for,
    };
}

/// Withdraws client `i`'s wait at every member along the name's route, as a dropped acquire
/// does (`tell_holders` in the shell).
fn withdraw(node: &mut LockNode, ctx: &mut Ctx<'_, LockNode>, i: usize) {
    let (State::Asking { name, guard, .. } | State::Backoff { name, guard, .. }) =
        &node.clients[i].state
    else {
        return;
    };
    let (name, guard) = (name.clone(), *guard);
    ctx.record.cancels += 1;
    let mut route = RenewRoute::from(node.table.renew_route(&name));
    if let Some(to) = route.next_to_tell(None) {
        let request = LockRequest::Cancel {
            holder: holder(node, guard),
            name,
        };
        node.along_route(ctx, to, Purpose::Cancel { route, request });
    }
}

/// Releases client `i`'s hold, as `LockGuard::unlock` does.
fn release(node: &mut LockNode, ctx: &mut Ctx<'_, LockNode>, i: usize) {
    let State::Holding {
        name,
        guard,
        token,
        hold,
        ..
    } = &node.clients[i].state
    else {
        return;
    };
    let (name, guard, token, hold) = (name.clone(), *guard, *token, *hold);
    let lost = node
        .holdings
        .valid_until(guard)
        .is_none_or(|v| ctx.now + node.margin >= v);
    node.holdings.released(guard);
    // The holder stops relying on it now; the owner frees it when the release arrives.
    let h = &mut ctx.record.holds[hold];
    h.end_us = h.end_us.min(us(ctx.world));
    if !lost {
        ctx.record.releases += 1;
        let mut route = RenewRoute::from(node.table.renew_route(&name));
        if let Some(to) = route.next(None) {
            let request = LockRequest::Release {
                name,
                holder: holder(node, guard),
                token,
            };
            node.along_route(ctx, to, Purpose::Release { route, request });
        }
    }
    idle(node, ctx, i);
}

/// The holder's lease of `guard` now runs until `valid_until`.
pub(super) fn extended(
    node: &mut LockNode,
    ctx: &mut Ctx<'_, LockNode>,
    guard: u64,
    valid_until: Instant,
) {
    let held = node.clients.iter().find_map(|c| match &c.state {
        State::Holding { guard: g, hold, .. } if *g == guard => Some(*hold),
        _ => None,
    });
    if let Some(hold) = held {
        let end = us(ctx.world_of(valid_until));
        let h = &mut ctx.record.holds[hold];
        h.end_us = h.end_us.max(end);
    }
}

/// The holder's lease of `guard` was lost: its client stops using it.
pub(super) fn lost(node: &mut LockNode, ctx: &mut Ctx<'_, LockNode>, guard: u64, cause: Cause) {
    let Some(i) = node
        .clients
        .iter()
        .position(|c| matches!(&c.state, State::Holding { guard: g, .. } if *g == guard))
    else {
        return;
    };
    if let State::Holding { name, token, .. } = &node.clients[i].state {
        if ctx.record.trace {
            eprintln!(
                "{:>9?} {}/{guard} lost {name} #{token}: {cause:?}",
                ctx.world, ctx.name
            );
        }
        ctx.record.lost.push(Lost {
            holder: format!("{}/{guard}", ctx.name),
            name: name.clone(),
            token: *token,
            at: ctx.world,
            cause,
        });
    }
    idle(node, ctx, i);
}
