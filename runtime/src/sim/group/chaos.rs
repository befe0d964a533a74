//! Random fault scripts on a group world, shared by the simulators of every primitive: each
//! draws its faults from its own list, and may add faults of its own.

use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;

use super::{GroupWorld, Service, Status};

/// A fault a script may draw; `i` is a node drawn at random for each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pauses node `i` (SIGSTOP) for 200 ms to 3 s.
    Pause,
    /// Kills node `i` if it runs, and starts it again 0 to 3 s later.
    KillRestart,
    /// Cuts the first 1 to n/2 nodes from the rest for 0.5 to 4 s.
    Partition,
    /// Loses 20% of messages and duplicates 10%.
    Lossy,
    /// Loses and duplicates 1% of messages.
    Mild,
    /// Node `i` leaves gracefully, stops and starts again (counted in [`Played::retired`] if
    /// it retired within 10 s).
    GracefulRestart,
    /// A new node joins, up to 8 nodes.
    Join,
    /// A fault of the simulator's own, by its number.
    Own(u8),
}

/// The faults a script draws from unless it has its own: every fault, pauses twice as often.
pub const FAULTS: [Fault; 8] = [
    Fault::Pause,
    Fault::Pause,
    Fault::KillRestart,
    Fault::Partition,
    Fault::Lossy,
    Fault::Mild,
    Fault::GracefulRestart,
    Fault::Join,
];

/// A script: `steps` faults drawn from `faults` (a fault listed twice is drawn twice as
/// often), each followed by `gap_ms` (a range) of running.
#[derive(Debug, Clone, Copy)]
pub struct Script<'a> {
    /// How many faults.
    pub steps: usize,
    /// The faults to draw from.
    pub faults: &'a [Fault],
    /// How long to run after each, in milliseconds: from the first to before the second.
    pub gap_ms: (u64, u64),
}

/// What a script did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Played {
    /// Graceful leaves that ended in a retire.
    pub retired: u64,
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..hi))
}

impl<S: Service> GroupWorld<S> {
    /// Node `i` leaves gracefully and stops, as `SIGTERM` does; returns whether it retired
    /// within 10 s.
    pub fn leave_and_stop(&mut self, i: usize) -> bool {
        self.leave(i);
        let done = self.run_until(
            |w| w.core(i).is_none_or(|c| c.has_left()),
            Duration::from_secs(10),
        );
        self.kill(i);
        done
    }

    /// Plays `script` with faults drawn from `rng`; `own(world, rng, i, n)` carries out
    /// [`Fault::Own`]`(n)` on the node `i` drawn for the step.
    pub fn play_chaos(
        &mut self,
        rng: &mut StdRng,
        script: Script<'_>,
        mut own: impl FnMut(&mut Self, &mut StdRng, usize, u8),
    ) -> Played {
        let mut played = Played::default();
        let trace = std::env::var("COLONY_SIM_TRACE").is_ok();
        for _ in 0..script.steps {
            let i = rng.random_range(0..self.len());
            let fault = script.faults[rng.random_range(0..script.faults.len())];
            if trace {
                eprintln!("{:?} chaos: {fault:?} at n{}", self.now(), i + 1);
            }
            match fault {
                Fault::Pause => {
                    let d = ms(rng, 200, 3_000);
                    self.pause(i, d);
                }
                Fault::KillRestart => {
                    if self.status(i) == Status::Running {
                        self.kill(i);
                        let d = ms(rng, 0, 3_000);
                        self.run_for(d);
                        self.restart(i);
                    }
                }
                Fault::Partition => {
                    let n = self.len();
                    let cut = rng.random_range(1..=n / 2);
                    let (a, b): (Vec<usize>, Vec<usize>) = (0..n).partition(|x| *x < cut);
                    self.partition(&[&a, &b]);
                    let d = ms(rng, 500, 4_000);
                    self.run_for(d);
                    self.heal();
                }
                Fault::Lossy => self.set_faults(0.2, 0.1),
                Fault::Mild => self.set_faults(0.01, 0.01),
                Fault::GracefulRestart => {
                    if self.status(i) == Status::Running && self.core(i).is_some() {
                        if self.leave_and_stop(i) {
                            played.retired += 1;
                        }
                        self.run_for(Duration::from_millis(200));
                        self.restart(i);
                    }
                }
                Fault::Join => {
                    if self.len() < 8 {
                        self.join();
                    }
                }
                Fault::Own(n) => own(self, rng, i, n),
            }
            let d = ms(rng, script.gap_ms.0, script.gap_ms.1);
            self.run_for(d);
        }
        played
    }
}
