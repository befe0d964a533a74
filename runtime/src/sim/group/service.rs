//! The service a [`GroupWorld`](super::GroupWorld) runs on top of each node's consensus core:
//! the primitive under test, driven the way its actor shell drives it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;

use super::{Clock, GroupWorldConfig};
use crate::consensus::{Command, GroupStatus, Outcome, ReplicaId};
use crate::ownership::Ownership;

/// A primitive on one simulated node, fed what its shell would feed it: the group's status
/// after every change, messages from the services of other nodes, and its own timers.
///
/// An implementor must
/// - take every decision in its cores, with the `now` its [`Ctx`] gives (the node's clock);
/// - say when it next wants [`Service::timeout`] in [`Service::poll_timeout`];
/// - record what its checkers judge in [`Service::Record`], which outlives kills: a killed
///   node's service is dropped and a restarted node gets a new one from [`Service::start`].
pub trait Service: Sized {
    /// A message between the services of two nodes.
    type Msg: Clone;
    /// What the services of every node record together (it survives kills).
    type Record: Default;

    /// Whether each message reaches its node at most once: a service whose requests and
    /// answers travel on the transport's sessions (a request is sent once, and its answer comes
    /// back once or not at all) is never sent duplicates. Messages may still be lost, delayed
    /// and reordered.
    const AT_MOST_ONCE: bool = false;

    /// The service of a node that (re)started.
    fn start(ctx: &mut Ctx<'_, Self>) -> Self;

    /// The group's status changed (as [`GroupStatus::of`] publishes it on a real node).
    fn status(&mut self, ctx: &mut Ctx<'_, Self>, status: &Arc<GroupStatus>);

    /// A message from the service on member `from`.
    fn message(&mut self, ctx: &mut Ctx<'_, Self>, from: ReplicaId, msg: Self::Msg);

    /// The time [`Service::poll_timeout`] asked for has come.
    fn timeout(&mut self, ctx: &mut Ctx<'_, Self>);

    /// A command this service proposed failed (it may still apply later).
    fn proposal_failed(&mut self, ctx: &mut Ctx<'_, Self>, command: &Command);

    /// A command this node proposed (in this run of its process) was applied with `outcome`,
    /// as the group answers a proposal on a real node. Every proposal of the node is reported,
    /// its group core's own included: match on the command.
    fn proposal_applied(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _command: &Command,
        _outcome: &Outcome,
    ) {
    }

    /// When to call [`Service::timeout`] next, on the node's clock.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The slots this node's service serves, for [`GroupWorld::settled`](super::GroupWorld::settled).
    fn ownership(&self) -> &Ownership;
}

/// What a service does besides changing itself.
pub(super) enum Effect<M> {
    Send(ReplicaId, M),
    Propose(Command),
}

/// A service's window on its node and the world, for one call.
pub struct Ctx<'a, S: Service> {
    /// The node's index in the world.
    pub node: usize,
    /// The node's name (`n1`, ...).
    pub name: &'a str,
    /// The node's member id.
    pub replica: ReplicaId,
    /// How many times this node's process started (from 0).
    pub incarnation: u64,
    /// The node's clock reading now.
    pub now: Instant,
    /// World time now.
    pub world: Duration,
    /// The world's one generator (draws in a fixed order, so a seed replays).
    pub rng: &'a mut StdRng,
    /// What every node's service records.
    pub record: &'a mut S::Record,
    /// How the world was built.
    pub config: &'a GroupWorldConfig,
    pub(super) clock: Clock,
    pub(super) effects: Vec<Effect<S::Msg>>,
}

impl<S: Service> Ctx<'_, S> {
    /// Sends `msg` to the service on member `to` (through the simulated network).
    pub fn send(&mut self, to: ReplicaId, msg: S::Msg) {
        self.effects.push(Effect::Send(to, msg));
    }

    /// Proposes `command` to the group through this node's core.
    pub fn propose(&mut self, command: Command) {
        self.effects.push(Effect::Propose(command));
    }

    /// Proposes each of `commands`, in order.
    pub fn propose_all(&mut self, commands: impl IntoIterator<Item = Command>) {
        for command in commands {
            self.propose(command);
        }
    }

    /// The node's wall clock now: its reading past the world's common origin (nodes disagree by
    /// their clocks' offsets and drift).
    pub fn wall(&self) -> Duration {
        self.clock.since_origin(self.now)
    }

    /// The world time at which this node's clock reads `at`.
    pub fn world_of(&self, at: Instant) -> Duration {
        self.clock.world(at)
    }
}
