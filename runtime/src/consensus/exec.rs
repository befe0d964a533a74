//! The bucketed executor's part of the cluster state: per-(executor, bucket) FIFO queues of
//! tasks, the attempts on each bucket's head, dead-letter counts, and the last submit of each
//! submitting node (so a submit proposed again applies once). Deterministic like the rest of the
//! state: every time in it is a number a proposer put in a command, never a clock read here.
//!
//! A task is accepted when the [`ExecCommand::Submit`] carrying it commits: the log gives it
//! durability and its place in the queue. Each task gets a number from its executor's counter,
//! which never goes back, so within a bucket numbers increase in queue order and a report about
//! tasks that left the queue can never match a later task.
//!
//! A batch ends with [`ExecCommand::Done`], which applies only while its first task is still the
//! bucket's head: a late report of a worker whose batch was run again elsewhere changes nothing.
//!
//! Memory follows the work: a bucket whose queue drains is removed; what stays per executor is
//! two counters; submitters are kept only while their epoch is in force.
//!
//! The group publishes a copy of the whole state after every applied command, so executors,
//! buckets and tasks are [`Shared`] and a bucket's queue and an executor's buckets are
//! persistent collections: a copy shares them, and a command copies only the executor and
//! bucket it changes, in time logarithmic in their sizes (a task's payload is never copied).
//!
//! # Examples
//! ```
//! use colony_runtime::consensus::ReplicaId;
//! use colony_runtime::consensus::exec::{
//!     BatchOutcome, ExecCommand, ExecOutcome, ExecTable, NewTask,
//! };
//!
//! let mut table = ExecTable::default();
//! let in_force = |_: ReplicaId, _: u64| true;
//! let submit = ExecCommand::Submit {
//!     executor: "mail".into(),
//!     submitter: (ReplicaId(1), 1),
//!     seq: 1,
//!     bound: 100,
//!     tasks: vec![NewTask::new("user-7", b"hello".to_vec(), 0)],
//! };
//! assert_eq!(table.apply(&submit, in_force), ExecOutcome::Accepted { first: 1, count: 1 });
//! let head: Vec<u64> = table.head("mail", "user-7", 10, 0).map(|t| t.id).collect();
//! assert_eq!(head, [1]);
//! let done = ExecCommand::Done {
//!     executor: "mail".into(),
//!     bucket: "user-7".into(),
//!     first: 1,
//!     through: 1,
//!     token: 5,
//!     outcome: BatchOutcome::Succeeded,
//! };
//! assert_eq!(table.apply(&done, in_force), ExecOutcome::Removed { count: 1 });
//! assert_eq!(table.depth("mail"), 0);
//! ```

use std::collections::BTreeMap;

use imbl::ordmap::DiffItem;

use serde::{Deserialize, Serialize};

use super::Shared;
use super::command::ReplicaId;

/// Longest executor name or bucket id, in bytes.
pub const MAX_NAME: usize = 256;

/// Largest task payload, in bytes. Tasks are log entries: larger payloads belong in a store,
/// with a reference in the task.
pub const MAX_TASK_BYTES: usize = 64 * 1024;

/// Most tasks one [`ExecCommand::Submit`] carries.
pub const MAX_SUBMIT_TASKS: usize = 1024;

/// Most payload bytes one [`ExecCommand::Submit`] carries: well below the group's largest
/// append message (1 MiB by default), so one submit always fits in one.
pub const MAX_SUBMIT_BYTES: usize = 256 * 1024;

/// Most executors the state keeps (each keeps its counters once created).
pub const MAX_EXECUTORS: usize = 256;

/// A task as a submitter proposes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NewTask {
    /// The bucket it runs in.
    pub bucket: String,
    /// The executor's encoding of the task.
    pub bytes: serde_bytes::ByteBuf,
    /// Not processed before this UTC millisecond (the submitter's clock; 0: at once). A task
    /// not yet due holds the tasks behind it in its bucket: order comes first.
    pub not_before_ms: u64,
}

impl NewTask {
    /// A task for `bucket`.
    pub fn new(bucket: impl Into<String>, bytes: Vec<u8>, not_before_ms: u64) -> Self {
        NewTask {
            bucket: bucket.into(),
            bytes: serde_bytes::ByteBuf::from(bytes),
            not_before_ms,
        }
    }
}

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BatchOutcome {
    /// The processor succeeded: the tasks leave the queue.
    Succeeded,
    /// The processor failed: one more attempt on the bucket's head.
    Failed,
    /// The dead-letter handler took the tasks: they leave the queue, counted.
    DeadLettered,
}

/// A change to the executors' queues.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecCommand {
    /// Appends `tasks` to their buckets' queues, in order, or refuses them all.
    Submit {
        /// The executor.
        executor: String,
        /// The submitting node and its epoch.
        submitter: (ReplicaId, u64),
        /// Numbers the node's submits to this executor, increasing: a submit whose `seq` is
        /// not above the last one applied changes nothing.
        seq: u64,
        /// Refused (`Busy`) if the executor would then hold more tasks than this.
        bound: u64,
        /// The tasks.
        #[serde(deserialize_with = "crate::wire::codec::seq_as_read")]
        tasks: Vec<NewTask>,
    },
    /// Ends a batch of tasks `first..=through` of a bucket, run with `token`.
    Done {
        /// The executor.
        executor: String,
        /// The bucket.
        bucket: String,
        /// The batch's first task: must be the bucket's head.
        first: u64,
        /// Its last task.
        through: u64,
        /// The batch's fencing token.
        token: u64,
        /// How it ended.
        outcome: BatchOutcome,
    },
}

/// A queued task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Its number in the executor, from 1.
    pub id: u64,
    /// The executor's encoding of the task.
    pub bytes: serde_bytes::ByteBuf,
    /// Not processed before this UTC millisecond.
    pub not_before_ms: u64,
}

/// One bucket's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The tasks, oldest first (so by increasing number).
    pub tasks: imbl::Vector<Shared<Task>>,
    /// Failed attempts on the current head.
    pub attempts: u32,
    /// The highest token a batch of this bucket reported with.
    pub reported: u64,
}

impl Bucket {
    /// The place of the first task numbered above `after`: numbers increase along the queue.
    pub fn position_after(&self, after: u64) -> usize {
        self.tasks
            .binary_search_by(|t| t.id.cmp(&after))
            .map_or_else(|at| at, |at| at + 1)
    }
}

/// One executor's queues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executor {
    /// The number of the next task.
    pub next_task: u64,
    /// Tasks queued in all buckets.
    pub queued: u64,
    /// Tasks handed to the dead-letter handler so far.
    pub dead_letters: u64,
    /// Buckets with tasks, by id.
    pub buckets: imbl::OrdMap<String, Shared<Bucket>>,
}

/// The last submit applied from one node's epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitter {
    /// The epoch.
    pub epoch: u64,
    /// Per executor: the last `seq` applied and what it gave.
    pub last: BTreeMap<String, (u64, ExecOutcome)>,
}

/// The executors' state. See the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecTable {
    /// Executors by name.
    pub executors: BTreeMap<String, Shared<Executor>>,
    /// Submitting nodes whose epoch is in force.
    pub submitters: BTreeMap<ReplicaId, Submitter>,
}

/// What applying an executor command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecOutcome {
    /// The tasks are queued, numbered `first..first + count`.
    Accepted {
        /// The first task's number.
        first: u64,
        /// How many.
        count: u64,
    },
    /// Nothing was queued: the executor would hold more than the submit's bound.
    Busy {
        /// Tasks the executor holds.
        queued: u64,
    },
    /// A batch's tasks left the queue (succeeded or dead-lettered).
    Removed {
        /// How many.
        count: u64,
    },
    /// A failed batch was counted.
    Failed {
        /// Failed attempts on the bucket's head, this one included.
        attempts: u32,
    },
    /// It changed nothing.
    Refused(ExecRefusal),
}

/// Why an executor command changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ExecRefusal {
    /// The submitter's epoch is not in force. A submit proposed earlier with the same `seq`
    /// may have been applied before it ended.
    #[error("the submitting node's epoch has ended")]
    EpochEnded,
    /// A later submit of this node was applied already: this one is an old copy.
    #[error("a later submit of this node was applied already")]
    Outdated,
    /// A task's payload is larger than [`MAX_TASK_BYTES`].
    #[error("task {index} has {bytes} bytes, above the limit of {MAX_TASK_BYTES}")]
    TaskTooLarge {
        /// Its place in the submit.
        index: usize,
        /// Its size.
        bytes: usize,
    },
    /// The submit carries more than [`MAX_SUBMIT_TASKS`] tasks or [`MAX_SUBMIT_BYTES`] bytes,
    /// or no task.
    #[error("a submit of {tasks} tasks and {bytes} bytes is outside the limits")]
    BatchSize {
        /// Its tasks.
        tasks: usize,
        /// Its payload bytes.
        bytes: usize,
    },
    /// An executor name or bucket id is empty or longer than [`MAX_NAME`] bytes.
    #[error("an executor name or bucket id is empty or longer than {MAX_NAME} bytes")]
    BadName,
    /// [`MAX_EXECUTORS`] executors exist already.
    #[error("too many executors")]
    TooManyExecutors,
    /// The batch's first task is not the bucket's head (it ended already): a late report.
    #[error("the batch is no longer at the head of its bucket")]
    Stale,
    /// A failure reported with a token not above one the bucket already reported with.
    #[error("a batch with a later token reported already")]
    Fenced,
}

impl ExecTable {
    /// Applies one command. `in_force` says whether a node's epoch is in force.
    pub fn apply(
        &mut self,
        command: &ExecCommand,
        in_force: impl Fn(ReplicaId, u64) -> bool,
    ) -> ExecOutcome {
        match command {
            ExecCommand::Submit {
                executor,
                submitter,
                seq,
                bound,
                tasks,
            } => self.submit(executor, *submitter, *seq, *bound, tasks, in_force),
            ExecCommand::Done {
                executor,
                bucket,
                first,
                through,
                token,
                outcome,
            } => self.done(executor, bucket, *first, *through, *token, *outcome),
        }
    }

    fn submit(
        &mut self,
        executor: &str,
        (replica, epoch): (ReplicaId, u64),
        seq: u64,
        bound: u64,
        tasks: &[NewTask],
        in_force: impl Fn(ReplicaId, u64) -> bool,
    ) -> ExecOutcome {
        if !in_force(replica, epoch) {
            return ExecOutcome::Refused(ExecRefusal::EpochEnded);
        }
        // Records of ended epochs go: a submit of theirs is refused above, so none can repeat.
        self.submitters.retain(|r, s| in_force(*r, s.epoch));
        if let Some((last, outcome)) = self
            .submitters
            .get(&replica)
            .and_then(|s| s.last.get(executor))
        {
            if *last == seq {
                return *outcome;
            }
            if *last > seq {
                return ExecOutcome::Refused(ExecRefusal::Outdated);
            }
        }
        if let Err(refusal) = check(executor, tasks) {
            return ExecOutcome::Refused(refusal);
        }
        if !self.executors.contains_key(executor) && self.executors.len() >= MAX_EXECUTORS {
            return ExecOutcome::Refused(ExecRefusal::TooManyExecutors);
        }
        let count = tasks.len() as u64;
        let queued = self.depth(executor);
        let outcome = if queued.saturating_add(count) > bound {
            ExecOutcome::Busy { queued }
        } else {
            let e = self
                .executors
                .entry(executor.to_owned())
                .or_default()
                .make_mut();
            let first = e.next_task.max(1);
            for (id, t) in (first..).zip(tasks) {
                let task = Shared::new(Task {
                    id,
                    bytes: t.bytes.clone(),
                    not_before_ms: t.not_before_ms,
                });
                let bucket = e.buckets.entry(t.bucket.clone()).or_default();
                bucket.make_mut().tasks.push_back(task);
            }
            e.next_task = first + count;
            e.queued += count;
            ExecOutcome::Accepted { first, count }
        };
        let s = self.submitters.entry(replica).or_default();
        s.epoch = epoch;
        s.last.insert(executor.to_owned(), (seq, outcome));
        outcome
    }

    fn done(
        &mut self,
        executor: &str,
        bucket: &str,
        first: u64,
        through: u64,
        token: u64,
        outcome: BatchOutcome,
    ) -> ExecOutcome {
        // A batch ends at or after its first task: anything else names no batch.
        if through < first {
            return ExecOutcome::Refused(ExecRefusal::Stale);
        }
        // Checked before anything is changed: a refusal copies nothing.
        let Some(reported) = self
            .bucket(executor, bucket)
            .filter(|b| b.tasks.front().is_some_and(|t| t.id == first))
            .map(|b| b.reported)
        else {
            return ExecOutcome::Refused(ExecRefusal::Stale);
        };
        // A failure reported again (a proposal that timed out, then applied twice) or by an
        // older batch counts once at most.
        if outcome == BatchOutcome::Failed && token <= reported {
            return ExecOutcome::Refused(ExecRefusal::Fenced);
        }
        let Some(e) = self.executors.get_mut(executor).map(Shared::make_mut) else {
            return ExecOutcome::Refused(ExecRefusal::Stale);
        };
        let Some(b) = e.buckets.get_mut(bucket).map(Shared::make_mut) else {
            return ExecOutcome::Refused(ExecRefusal::Stale);
        };
        b.reported = reported.max(token);
        if outcome == BatchOutcome::Failed {
            b.attempts += 1;
            return ExecOutcome::Failed {
                attempts: b.attempts,
            };
        }
        let mut count = 0;
        while b.tasks.front().is_some_and(|t| t.id <= through) {
            b.tasks.pop_front();
            count += 1;
        }
        b.attempts = 0;
        if b.tasks.is_empty() {
            e.buckets.remove(bucket);
        }
        e.queued -= count;
        if outcome == BatchOutcome::DeadLettered {
            e.dead_letters += count;
        }
        ExecOutcome::Removed { count }
    }

    // ---- queries ----

    /// The buckets of `executor` with tasks, in id order, with their queues.
    pub fn buckets(&self, executor: &str) -> impl Iterator<Item = (&str, &Bucket)> + '_ {
        self.executors
            .get(executor)
            .into_iter()
            .flat_map(|e| e.buckets.iter().map(|(b, q)| (b.as_str(), &**q)))
    }

    /// The bucket `bucket` of `executor`, if it has tasks.
    pub fn bucket(&self, executor: &str, bucket: &str) -> Option<&Bucket> {
        self.executors
            .get(executor)?
            .buckets
            .get(bucket)
            .map(|b| &**b)
    }

    /// The next batch of a bucket: up to `n` tasks from its head that are due at `wall_ms`
    /// (stopping at the first that is not: order comes first).
    pub fn head(
        &self,
        executor: &str,
        bucket: &str,
        n: usize,
        wall_ms: u64,
    ) -> impl Iterator<Item = &Task> + '_ {
        self.after(executor, bucket, 0, n, wall_ms)
    }

    /// [`ExecTable::head`] of what follows task `after` in its bucket: the next batch of a
    /// worker that ran the tasks up to `after` and whose report the state does not show yet.
    pub fn after(
        &self,
        executor: &str,
        bucket: &str,
        after: u64,
        n: usize,
        wall_ms: u64,
    ) -> impl Iterator<Item = &Task> + '_ {
        self.bucket(executor, bucket)
            .into_iter()
            .flat_map(move |b| b.tasks.focus().narrow(b.position_after(after)..))
            .map(|t| &**t)
            .take(n)
            .take_while(move |t| t.not_before_ms <= wall_ms)
    }

    /// The buckets of `executor` whose queue differs in `old`: added, changed or removed. Only
    /// what changed is visited; the maps share the rest.
    ///
    /// # Examples
    /// ```
    /// use colony_runtime::consensus::ReplicaId;
    /// use colony_runtime::consensus::exec::{ExecCommand, ExecTable, NewTask};
    ///
    /// let submit = |seq, bucket: &str| ExecCommand::Submit {
    ///     executor: "mail".into(),
    ///     submitter: (ReplicaId(1), 1),
    ///     seq,
    ///     bound: 100,
    ///     tasks: vec![NewTask::new(bucket, b"hi".to_vec(), 0)],
    /// };
    /// let mut old = ExecTable::default();
    /// old.apply(&submit(1, "a"), |_, _| true);
    /// old.apply(&submit(2, "b"), |_, _| true);
    /// let mut new = old.clone();
    /// new.apply(&submit(3, "c"), |_, _| true);
    /// assert_eq!(new.changed_since(&old, "mail"), ["c"]);
    /// ```
    pub fn changed_since(&self, old: &ExecTable, executor: &str) -> Vec<String> {
        let (before, now) = (old.executors.get(executor), self.executors.get(executor));
        if let (Some(a), Some(b)) = (before, now)
            && Shared::ptr_eq(a, b)
        {
            return Vec::new();
        }
        let buckets =
            |e: Option<&Shared<Executor>>| e.map(|e| e.buckets.clone()).unwrap_or_default();
        buckets(before)
            .diff(&buckets(now))
            .map(|d| match d {
                DiffItem::Add(id, _)
                | DiffItem::Remove(id, _)
                | DiffItem::Update { new: (id, _), .. } => id.clone(),
            })
            .collect()
    }

    /// Failed attempts on the head of a bucket.
    pub fn attempts(&self, executor: &str, bucket: &str) -> u32 {
        self.bucket(executor, bucket).map_or(0, |b| b.attempts)
    }

    /// Tasks queued in `executor`.
    pub fn depth(&self, executor: &str) -> u64 {
        self.executors.get(executor).map_or(0, |e| e.queued)
    }

    /// Tasks of `executor` handed to the dead-letter handler so far.
    pub fn dead_letters(&self, executor: &str) -> u64 {
        self.executors.get(executor).map_or(0, |e| e.dead_letters)
    }
}

/// Checks a submit's names and sizes.
fn check(executor: &str, tasks: &[NewTask]) -> Result<(), ExecRefusal> {
    let bad = |name: &str| name.is_empty() || name.len() > MAX_NAME;
    if bad(executor) || tasks.iter().any(|t| bad(&t.bucket)) {
        return Err(ExecRefusal::BadName);
    }
    if let Some((index, t)) = tasks
        .iter()
        .enumerate()
        .find(|(_, t)| t.bytes.len() > MAX_TASK_BYTES)
    {
        return Err(ExecRefusal::TaskTooLarge {
            index,
            bytes: t.bytes.len(),
        });
    }
    let bytes = tasks.iter().map(|t| t.bytes.len()).sum();
    if tasks.is_empty() || tasks.len() > MAX_SUBMIT_TASKS || bytes > MAX_SUBMIT_BYTES {
        return Err(ExecRefusal::BatchSize {
            tasks: tasks.len(),
            bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
