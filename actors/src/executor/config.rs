//! How one executor runs on a node: batch size, attempts, backoff and concurrency.

use std::time::Duration;

use colony_runtime::consensus::{ClusterState, Phase};

/// How many buckets an executor processes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// At most `n` buckets in process on each node.
    PerNode(u32),
    /// At most `n` in the cluster, shared out: each node processes at most
    /// `ceil(n / members whose epoch is in force)` at once, recomputed as membership changes.
    PerCluster(u32),
}

impl Concurrency {
    /// Buckets this node may process at once when `live` members' epochs are in force (at
    /// least 1 either way: a limit of 0 would stop the executor for good).
    ///
    /// # Examples
    /// ```
    /// use colony_actors::executor::Concurrency;
    /// assert_eq!(Concurrency::PerNode(4).limit(3), 4);
    /// assert_eq!(Concurrency::PerCluster(10).limit(3), 4);
    /// assert_eq!(Concurrency::PerCluster(10).limit(0), 10);
    /// ```
    pub fn limit(self, live: usize) -> usize {
        let n = match self {
            Concurrency::PerNode(n) => n as usize,
            Concurrency::PerCluster(n) => (n as usize).div_ceil(live.max(1)),
        };
        n.max(1)
    }
}

impl Concurrency {
    /// Buckets this node may process at once by `state`: its members whose epoch is in force
    /// are the live ones ([`Concurrency::limit`]).
    ///
    /// # Examples
    /// ```
    /// use colony_actors::executor::Concurrency;
    /// use colony_runtime::consensus::ClusterState;
    /// // No member's epoch in force yet: the whole limit.
    /// assert_eq!(Concurrency::PerCluster(10).limit_in(&ClusterState::new()), 10);
    /// ```
    pub fn limit_in(self, state: &ClusterState) -> usize {
        let live = state
            .liveness
            .values()
            .filter(|l| l.phase != Phase::Ended)
            .count();
        self.limit(live)
    }
}

/// The wait between failed attempts on a bucket's head: `first`, doubled per further failure,
/// at most `max`. Kept on the node that runs the bucket: a bucket that moves is tried at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `attempts`-th failure.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use colony_actors::executor::Backoff;
    /// let b = Backoff { first: Duration::from_millis(100), max: Duration::from_secs(1) };
    /// assert_eq!(b.after(1), Duration::from_millis(100));
    /// assert_eq!(b.after(3), Duration::from_millis(400));
    /// assert_eq!(b.after(30), Duration::from_secs(1));
    /// ```
    pub fn after(self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

/// How one executor runs on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorSettings {
    /// Most tasks handed to the processor at once (0 counts as 1).
    pub batch_size: usize,
    /// Attempts on a bucket's head before its batch goes to the dead-letter handler (0 counts
    /// as 1).
    pub max_attempts: u32,
    /// The wait between failed attempts.
    pub backoff: Backoff,
    /// How many buckets run at once.
    pub concurrency: Concurrency,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            batch_size: 1,
            max_attempts: 3,
            backoff: Backoff {
                first: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
            concurrency: Concurrency::PerNode(16),
        }
    }
}
