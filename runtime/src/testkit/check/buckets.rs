//! Bucketed executors (docs/executor.md, Promises): tasks of a bucket reach the processor in
//! submission order per submitter, no two batches of a bucket run at once, tokens increase per
//! bucket, and every accepted task is processed at least once or dead-lettered.

use std::collections::{BTreeMap, BTreeSet};

use super::holds::{Hold, Violation, no_two_holders, tokens_increase};

/// A task as its submitter names it: who submitted it and its number there. A submitter
/// numbers its tasks in the order it submits them, one at a time.
pub type TaskRef = (String, u64);

/// One batch as its processor recorded it (microseconds on a clock every node shares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRun {
    /// The bucket.
    pub bucket: String,
    /// The batch's fencing token.
    pub token: u64,
    /// The node that ran it.
    pub node: String,
    /// When the processor was called.
    pub start_us: u64,
    /// When it returned.
    pub end_us: u64,
    /// Its tasks, in the order the processor got them.
    pub tasks: Vec<TaskRef>,
}

/// A task whose `submit` returned success, in `bucket`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Accepted {
    /// The bucket.
    pub bucket: String,
    /// The task.
    pub task: TaskRef,
}

impl BatchRun {
    /// A `batch` line of the `exec_hammer` workload's history (`event`, `bucket`, `token`,
    /// `node`, `start_us`, `end_us`, `tasks` as `[submitter, seq]` pairs); `None` for any
    /// other line.
    pub fn from_record(e: &serde_json::Value) -> Option<BatchRun> {
        if e["event"] != "batch" {
            return None;
        }
        let tasks = e["tasks"]
            .as_array()?
            .iter()
            .map(|t| Some((t[0].as_str()?.to_owned(), t[1].as_u64()?)))
            .collect::<Option<_>>()?;
        Some(BatchRun {
            bucket: e["bucket"].as_str()?.to_owned(),
            token: e["token"].as_u64()?,
            node: e["node"].as_str()?.to_owned(),
            start_us: e["start_us"].as_u64()?,
            end_us: e["end_us"].as_u64()?,
            tasks,
        })
    }
}

impl Accepted {
    /// An `accepted` line of the `exec_hammer` workload's history (`event`, `bucket`,
    /// `submitter`, `seq`); `None` for any other line.
    pub fn from_record(e: &serde_json::Value) -> Option<Accepted> {
        if e["event"] != "accepted" {
            return None;
        }
        Some(Accepted {
            bucket: e["bucket"].as_str()?.to_owned(),
            task: (e["submitter"].as_str()?.to_owned(), e["seq"].as_u64()?),
        })
    }
}

/// The most batches each node had in process at once at any instant in `from_us..to_us`:
/// what a concurrency limit (`PerNode`, or `PerCluster` over the live nodes) must bound. Only
/// nodes with a batch in process during the window are listed.
///
/// # Examples
/// ```
/// use colony_runtime::testkit::check::{BatchRun, max_in_process};
/// let run = |node: &str, start_us, end_us| BatchRun {
///     bucket: format!("b{start_us}"), token: 1, node: node.into(), start_us, end_us, tasks: vec![],
/// };
/// let runs = [run("a", 0, 10), run("a", 5, 15), run("a", 12, 20), run("b", 0, 30)];
/// let most = max_in_process(&runs, 0, 100);
/// assert_eq!((most["a"], most["b"]), (2, 1));
/// // From 10 to 12 only the second of node a's batches ran.
/// assert_eq!(max_in_process(&runs, 10, 12)["a"], 1);
/// ```
pub fn max_in_process(runs: &[BatchRun], from_us: u64, to_us: u64) -> BTreeMap<String, usize> {
    let mut edges: BTreeMap<&str, Vec<(u64, i32)>> = BTreeMap::new();
    for r in runs {
        let (start, end) = (r.start_us.max(from_us), r.end_us.min(to_us));
        if start < end {
            let e = edges.entry(&r.node).or_default();
            e.push((start, 1));
            e.push((end, -1));
        }
    }
    edges
        .into_iter()
        .map(|(node, mut e)| {
            // An end before a start at the same instant: back-to-back batches do not overlap.
            e.sort();
            let (mut now, mut most) = (0i32, 0i32);
            for (_, d) in e {
                now += d;
                most = most.max(now);
            }
            (node.to_owned(), most as usize)
        })
        .collect()
}

/// A broken promise about one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketViolation {
    /// Which promise.
    pub promise: &'static str,
    /// The bucket.
    pub bucket: String,
    /// What was seen.
    pub detail: String,
}

fn as_holds(runs: &[BatchRun]) -> Vec<Hold> {
    runs.iter()
        .map(|r| Hold {
            name: r.bucket.clone(),
            token: r.token,
            holder: r.node.clone(),
            start_us: r.start_us,
            end_us: r.end_us,
        })
        .collect()
}

/// Batches of one bucket that ran at once (on any nodes), and tokens of a bucket that did not
/// grow with the batches' starts.
pub fn exclusive_batches(runs: &[BatchRun]) -> Vec<Violation> {
    let holds = as_holds(runs);
    let mut out = no_two_holders(&holds);
    out.extend(tokens_increase(&holds));
    out
}

/// Per bucket and submitter, tasks reach the processor first in the order they were
/// submitted, none skipped: when a task first appears, every accepted task submitted before it
/// to that bucket has appeared already. A batch run again (at least once) may repeat tasks
/// seen before, never run a later one first. Batches are taken in token order.
pub fn fifo_per_submitter(runs: &[BatchRun], accepted: &[Accepted]) -> Vec<BucketViolation> {
    let mut wanted: BTreeMap<(&str, &str), BTreeSet<u64>> = BTreeMap::new();
    for a in accepted {
        wanted
            .entry((&a.bucket, &a.task.0))
            .or_default()
            .insert(a.task.1);
    }
    let mut sorted: Vec<&BatchRun> = runs.iter().collect();
    sorted.sort_by_key(|r| (r.bucket.clone(), r.token));
    let mut seen: BTreeMap<(&str, &str), BTreeSet<u64>> = BTreeMap::new();
    let mut out = Vec::new();
    for run in sorted {
        for (submitter, seq) in &run.tasks {
            let key = (run.bucket.as_str(), submitter.as_str());
            let seen = seen.entry(key).or_default();
            if !seen.insert(*seq) {
                continue;
            }
            let missing: Vec<u64> = wanted
                .get(&key)
                .into_iter()
                .flat_map(|w| w.range(..*seq))
                .filter(|s| !seen.contains(s))
                .copied()
                .collect();
            if !missing.is_empty() {
                out.push(BucketViolation {
                    promise: "per-bucket FIFO per submitter",
                    bucket: run.bucket.clone(),
                    detail: format!(
                        "{submitter}'s task {seq} ran (token {}) before its earlier {missing:?}",
                        run.token
                    ),
                });
            }
        }
    }
    out
}

/// Accepted tasks that no batch processed and no dead letter took.
pub fn every_accepted_processed(
    runs: &[BatchRun],
    dead: &[TaskRef],
    accepted: &[Accepted],
) -> Vec<Accepted> {
    let done: BTreeSet<(&str, &TaskRef)> = runs
        .iter()
        .flat_map(|r| r.tasks.iter().map(move |t| (r.bucket.as_str(), t)))
        .collect();
    let dead: BTreeSet<&TaskRef> = dead.iter().collect();
    accepted
        .iter()
        .filter(|a| !done.contains(&(a.bucket.as_str(), &a.task)) && !dead.contains(&a.task))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bucket: &str, token: u64, start: u64, end: u64, tasks: &[(&str, u64)]) -> BatchRun {
        BatchRun {
            bucket: bucket.into(),
            token,
            node: format!("n{token}"),
            start_us: start,
            end_us: end,
            tasks: tasks.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect(),
        }
    }

    fn accepted(bucket: &str, tasks: &[(&str, u64)]) -> Vec<Accepted> {
        tasks
            .iter()
            .map(|(s, q)| Accepted {
                bucket: bucket.into(),
                task: ((*s).to_owned(), *q),
            })
            .collect()
    }

    #[test]
    fn in_order_runs_with_a_repeat_pass() {
        let acc = accepted("b", &[("x", 1), ("x", 2), ("y", 1), ("x", 3)]);
        let runs = [
            run("b", 1, 0, 10, &[("x", 1), ("x", 2)]),
            // Cut off and run again elsewhere: at least once.
            run("b", 5, 10, 20, &[("x", 2), ("y", 1)]),
            run("b", 6, 20, 30, &[("x", 3)]),
        ];
        assert!(fifo_per_submitter(&runs, &acc).is_empty());
        assert!(exclusive_batches(&runs).is_empty());
        assert!(every_accepted_processed(&runs, &[], &acc).is_empty());
    }

    #[test]
    fn a_task_run_before_an_earlier_one_of_its_submitter_is_caught() {
        let acc = accepted("b", &[("x", 1), ("x", 2)]);
        let runs = [
            run("b", 1, 0, 10, &[("x", 2)]),
            run("b", 2, 10, 20, &[("x", 1)]),
        ];
        let v = fifo_per_submitter(&runs, &acc);
        assert_eq!(v.len(), 1, "{v:?}");
        // Other submitters' order is not promised against each other.
        let acc = accepted("b", &[("x", 1), ("y", 1)]);
        let runs = [run("b", 1, 0, 10, &[("y", 1), ("x", 1)])];
        assert!(fifo_per_submitter(&runs, &acc).is_empty());
    }

    #[test]
    fn overlapping_batches_falling_tokens_and_lost_tasks_are_caught() {
        let runs = [
            run("b", 2, 0, 10, &[("x", 1)]),
            run("b", 1, 5, 15, &[("x", 2)]),
        ];
        let v = exclusive_batches(&runs);
        assert_eq!(v.len(), 2, "{v:?}");
        let acc = accepted("b", &[("x", 1), ("x", 2), ("x", 3), ("x", 4)]);
        let lost = every_accepted_processed(&runs, &[("x".into(), 4)], &acc);
        assert_eq!(lost, accepted("b", &[("x", 3)]));
    }
}
