//! Scenarios as data: a list of [`Op`]s that [`World::play`] carries out in order.
//!
//! Writing a scenario as a list makes it printable, so a property test can generate one, and a
//! failing one shows up in the test output next to the seed.

use std::time::Duration;

use super::world::World;

/// One step of a scenario; node numbers are indexes into the world.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Let simulated time pass.
    RunFor(Duration),
    /// Kill a node's process.
    Kill(usize),
    /// Start a new process at a node's address.
    Restart(usize),
    /// Stop polling a node for a while.
    Pause(usize, Duration),
    /// A node leaves on purpose.
    Leave(usize),
    /// Cut both directions between two nodes.
    Cut(usize, usize),
    /// Cut a node from all others.
    Isolate(usize),
    /// Split the network into groups.
    Partition(Vec<Vec<usize>>),
    /// Lose datagrams between two nodes with this chance.
    Drop(usize, usize, f64),
    /// Slow datagrams between two nodes.
    Delay(usize, usize, Duration),
    /// Remove every network fault.
    Heal,
}

impl World {
    /// Carries out `ops` in order.
    pub fn play(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::RunFor(d) => self.run_for(*d),
                Op::Kill(i) => self.kill(*i),
                Op::Restart(i) => self.restart(*i),
                Op::Pause(i, d) => self.pause(*i, *d),
                Op::Leave(i) => self.leave(*i),
                Op::Cut(a, b) => self.cut(*a, *b),
                Op::Isolate(a) => self.isolate(*a),
                Op::Partition(groups) => {
                    let groups: Vec<&[usize]> = groups.iter().map(Vec::as_slice).collect();
                    self.partition(&groups);
                }
                Op::Drop(a, b, loss) => self.drop(*a, *b, *loss),
                Op::Delay(a, b, d) => self.delay(*a, *b, *d),
                Op::Heal => self.heal(),
            }
        }
    }
}
