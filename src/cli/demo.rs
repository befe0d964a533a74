//! `colony demo`: a local 3-node cluster shown step by step: membership converging, a cache
//! write reaching every node, a cluster lock passing to a waiter when its holder is SIGKILLed,
//! the holder's bucket queues and its job run carrying on elsewhere with nothing lost, and the
//! node coming back; it ends with a table of the figures it measured.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use colony_runtime::MemberState;
use colony_runtime::testkit::check::{
    Accepted, BatchRun, every_accepted_processed, exclusive_batches, fifo_per_submitter,
};
use colony_runtime::testkit::{ClusterSpec, TestCluster};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::status::table;

const NODES: usize = 3;
const LOCK: &str = "demo-lock";
const LEASE_MS: u64 = 1500;
const WAIT: Duration = Duration::from_secs(30);
const CACHE_WRITES: u64 = 6;
/// The lock workload's history, relative to each node's home.
const LOCK_HISTORY: &str = "log/demo-locks.jsonl";
/// The cache workload's history, relative to each node's home.
const CACHE_HISTORY: &str = "log/demo-cache.jsonl";
/// The job's history, relative to each node's home.
const SCHED_HISTORY: &str = "log/demo-jobs.jsonl";
/// The bucket queues' history, relative to each node's home.
const EXEC_HISTORY: &str = "log/demo-queues.jsonl";
/// Once-per-cluster jobs.
const REMINDERS: usize = 4;
/// Buckets of the demo's queues: enough that the lock holder nearly always owns one (each
/// bucket's slot is one node's of three, so the holder owns none of 6 in 9 % of runs, which
/// failed CI once, and none of 24 in 0.006 %).
const BUCKETS: u64 = 24;
/// Tasks each node submits: a hundred per bucket, as with 6 buckets and 200.
const TASKS: u64 = 800;

pub fn run() -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("find the colony binary")?;
    let scratch = tempfile::tempdir().context("create a scratch directory")?;
    let mut spec = ClusterSpec::new(binary, NODES);
    spec.extra_args = vec!["--lock-lease-ms".into(), LEASE_MS.to_string()];
    for (name, workload) in workloads() {
        let file = scratch.path().join(name);
        std::fs::write(&file, workload.to_string())?;
        spec.extra_args
            .extend(["--workload".into(), file.display().to_string()]);
    }
    let mut demo = Demo {
        done: 0,
        figures: Vec::new(),
    };
    let mut cluster = demo.step("Start 3 node processes on 127.0.0.1", || {
        TestCluster::start(spec).context("start the nodes")
    })?;
    let all = cluster.all();
    for i in &all {
        println!(
            "      {} listens on {} (admin {})",
            cluster.name(*i),
            cluster.addr(*i),
            cluster.admin_addr(*i)
        );
    }
    println!("      shared home: {}", cluster.shared_home().display());

    let took = demo.step("Membership converges", || {
        cluster
            .wait_converged(&all, WAIT)
            .with_context(|| format!("the nodes did not converge; logs:\n{}", logs(&cluster)))
    })?;
    demo.figure("membership convergence", format!("{} ms", took.as_millis()));
    show(&cluster, 0);

    let (key, value, seen) = demo.step(
        "A synchronous write to a cache replicated by invalidation reaches every node",
        || invalidation(&cluster),
    )?;
    println!(
        "      n1 wrote {key} = {value}; the write returned once every node had dropped its old entry"
    );
    for (i, v) in &seen {
        println!("      {} then read {key} = {v}", cluster.name(*i));
    }
    let fresh = seen.iter().filter(|(_, v)| v == &value).count();
    demo.figure(
        "invalidation reach",
        format!("{fresh} of {NODES} nodes read the new value first after the write returned"),
    );

    let (victim, token) = demo.step(
        &format!("Each node asks for the lock `{LOCK}` (lease {LEASE_MS} ms); one gets it"),
        || {
            let mut holder = None;
            cluster.wait_until(WAIT, |c| {
                holder = latest_grant(c);
                holder.is_some()
            });
            holder.with_context(|| format!("nobody got the lock; logs:\n{}", logs(&cluster)))
        },
    )?;
    println!(
        "      {} holds `{LOCK}` with fencing token {token}; the others wait in line",
        cluster.name(victim)
    );
    let job_run = demo.step(
        "Wait until the holder also runs bucket queues and one of the `reminder` jobs",
        || {
            let mut run = None;
            cluster
                .wait_until(WAIT, |c| {
                    run = job_running(c, c.name(victim));
                    run.is_some() && exec_runs(c).iter().any(|r| r.node == c.name(victim))
                })
                .with_context(|| {
                    format!(
                        "the holder {} did not run both: {}; logs:\n{}",
                        cluster.name(victim),
                        who_ran(&cluster),
                        logs(&cluster)
                    )
                })?;
            Ok(run.expect("set when the wait succeeded"))
        },
    )?;
    println!(
        "      it runs `{}` due at {} (attempt {}, token {})",
        job_run.job, job_run.due, job_run.attempt, job_run.token
    );

    let killed_wall = wall_us();
    let killed_at = Instant::now();
    let victim_name = cluster.name(victim).to_owned();
    demo.step(&format!("SIGKILL {victim_name}, the lock holder"), || {
        cluster.kill(victim);
        Ok(())
    })?;
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    let observer = survivors[0];
    let took = demo.step("Every survivor marks it down", || {
        cluster
            .wait_until(WAIT, |c| {
                survivors
                    .iter()
                    .all(|&s| c.sees(s, victim, MemberState::Down))
            })
            .with_context(|| format!("not marked down; logs:\n{}", logs(&cluster)))
    })?;
    demo.figure(
        "crash detection (every survivor)",
        format!("{} ms", took.as_millis()),
    );
    show(&cluster, observer);

    let (heir, heir_token) = demo.step(&format!("`{LOCK}` passes to a waiter"), || {
        let mut next = None;
        cluster
            .wait_until(WAIT, |c| {
                next = latest_grant(c).filter(|(_, t)| *t > token);
                next.is_some()
            })
            .with_context(|| format!("the lock did not pass on; logs:\n{}", logs(&cluster)))?;
        Ok(next.expect("set when the wait succeeded"))
    })?;
    let took = killed_at.elapsed();
    println!(
        "      {} got it with token {heir_token} (> {token}): a store fenced by tokens refuses the dead holder's writes",
        cluster.name(heir)
    );
    demo.figure(
        "lock takeover after SIGKILL",
        format!("{} ms (token {token} → {heir_token})", took.as_millis()),
    );

    let rerun = demo.step(
        "The job's run on the killed node runs again on a survivor",
        || {
            let mut again = None;
            cluster
                .wait_until(WAIT, |c| {
                    again = job_starts(c).into_iter().find(|r| {
                        r.job == job_run.job
                            && r.due == job_run.due
                            && r.token > job_run.token
                            && r.node != victim_name
                    });
                    again.is_some()
                })
                .with_context(|| {
                    format!("the due time never ran again; logs:\n{}", logs(&cluster))
                })?;
            Ok(again.expect("set when the wait succeeded"))
        },
    )?;
    let after = rerun.at_us.saturating_sub(killed_wall) / 1_000;
    println!(
        "      {} ran it {after} ms after the kill, attempt {} with token {} (> {}); the late run, had it gone on, would be fenced",
        rerun.node, rerun.attempt, rerun.token, job_run.token
    );
    demo.figure(
        "job re-run after SIGKILL",
        format!(
            "{after} ms (attempt {} → {}, token {} → {})",
            job_run.attempt, rerun.attempt, job_run.token, rerun.token
        ),
    );

    let queues = demo.step(
        "The killed node's bucket queues carry on elsewhere, nothing accepted lost",
        || queues_carry_on(&cluster, &victim_name, killed_wall),
    )?;
    println!("{}", queues.detail);
    demo.figure("bucket queues resumed after SIGKILL", queues.figure);

    let took = demo.step(
        &format!("Restart {victim_name} on the same address and home"),
        || {
            cluster.restart(victim).context("restart the node")?;
            cluster
                .wait_converged(&all, WAIT)
                .with_context(|| format!("it did not rejoin; logs:\n{}", logs(&cluster)))
        },
    )?;
    demo.figure("rejoin after restart", format!("{} ms", took.as_millis()));
    println!("      it rejoined with a new id and a higher incarnation:");
    show(&cluster, observer);

    demo.step("Stop every node gracefully (SIGTERM)", || {
        for i in all.iter().rev() {
            cluster.terminate(*i, Duration::from_secs(10));
        }
        Ok(())
    })?;
    drop(cluster);
    demo.summary();
    Ok(())
}

/// The steps shown so far and the figures measured.
struct Demo {
    done: usize,
    figures: Vec<(&'static str, String)>,
}

impl Demo {
    /// Runs `work` under a spinner titled `title`, and leaves a line saying how it went.
    fn step<T>(
        &mut self,
        title: &str,
        work: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.done += 1;
        let line = format!("[{}/{STEPS}] {title}", self.done);
        let spinner = ProgressBar::new_spinner().with_message(line.clone());
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
        );
        spinner.enable_steady_tick(Duration::from_millis(100));
        let started = Instant::now();
        let result = work();
        spinner.finish_and_clear();
        let mark = if result.is_ok() { "✓" } else { "✗" };
        println!("{mark} {line} ({:.1} s)", started.elapsed().as_secs_f64());
        result
    }

    fn figure(&mut self, what: &'static str, value: String) {
        self.figures.push((what, value));
    }

    /// The table of what the demo measured.
    fn summary(&self) {
        let width = self.figures.iter().map(|(w, _)| w.len()).max().unwrap_or(0);
        println!("\nWhat the demo showed:");
        for (what, value) in &self.figures {
            println!("  {what:<width$}  {value}");
        }
    }
}

/// Steps [`run`] shows.
const STEPS: usize = 12;

/// The workloads every node runs, by file name.
fn workloads() -> [(&'static str, serde_json::Value); 4] {
    [
        // One client that takes the demo lock and holds it until its node dies.
        (
            "locks.json",
            json!({
                "kind": "lock_hammer", "names": [LOCK], "clients": 1, "hold_ms": 3_600_000u64,
                "pause_ms": 0, "history": LOCK_HISTORY,
            }),
        ),
        // A few writes of its key to a cache replicated by invalidation, and reads of all keys.
        (
            "caching.json",
            json!({
                "kind": "cache_hammer", "mode": "invalidation", "synchronous": true,
                "keys_per_node": 1, "write_every_ms": 300, "read_every_ms": 50,
                "writes": CACHE_WRITES, "db": "demo-db", "history": CACHE_HISTORY,
            }),
        ),
        // Once-per-cluster jobs every second that run most of that second; n1 schedules them,
        // every node can run them. Each due time runs on a node drawn by rendezvous, so with
        // one job a given node would run none for 30 s once in a few hundred demos; with
        // several, the lock holder nearly always runs one at any moment.
        (
            "jobs.json",
            json!({
                "kind": "sched_hammer", "scheduler": "n1", "poll_ms": 300,
                "jobs": (1..=REMINDERS)
                    .map(|i| json!({ "id": format!("reminder-{i}"), "every_ms": 1000, "work_ms": 900 }))
                    .collect::<Vec<_>>(),
                "history": SCHED_HISTORY,
            }),
        ),
        // Numbered tasks to a few bucket queues, slow enough to still be queued at the kill.
        (
            "queues.json",
            json!({
                "kind": "exec_hammer", "executor": "demo-queues", "buckets": BUCKETS,
                "count": TASKS, "work_ms": 150, "batch_size": 1, "history": EXEC_HISTORY,
            }),
        ),
    ]
}

/// What the bucket step found.
struct Queues {
    detail: String,
    figure: String,
}

/// Waits until every task the survivors' submitters were told was accepted has run, then
/// checks the histories with the executor's checkers and says when the killed node's buckets
/// ran again.
fn queues_carry_on(cluster: &TestCluster, victim: &str, killed_us: u64) -> anyhow::Result<Queues> {
    let drained = cluster.wait_until(Duration::from_secs(90), |c| {
        let events = exec_events(c);
        let runs: Vec<BatchRun> = events.iter().filter_map(BatchRun::from_record).collect();
        let accepted: Vec<Accepted> = events.iter().filter_map(Accepted::from_record).collect();
        let submitted = events.iter().filter(|e| e["event"] == "submitted").count();
        submitted >= NODES - 1 && every_accepted_processed(&runs, &[], &accepted).is_empty()
    });
    drained.with_context(|| format!("the queues did not drain; logs:\n{}", logs(cluster)))?;
    let events = exec_events(cluster);
    let runs: Vec<BatchRun> = events.iter().filter_map(BatchRun::from_record).collect();
    let accepted: Vec<Accepted> = events.iter().filter_map(Accepted::from_record).collect();
    let overlaps = exclusive_batches(&runs).len();
    let disorder = fifo_per_submitter(&runs, &accepted).len();
    if overlaps + disorder > 0 {
        bail!(
            "{overlaps} overlapping batches, {disorder} out of order; logs:\n{}",
            logs(cluster)
        );
    }
    // The buckets the killed node ran last before the kill, and when each ran again.
    let mut last: BTreeMap<&str, &BatchRun> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.start_us < killed_us) {
        let e = last.entry(r.bucket.as_str()).or_insert(r);
        if r.start_us > e.start_us {
            *e = r;
        }
    }
    let mut resumed = Vec::new();
    let mut detail = String::new();
    for (bucket, r) in last.iter().filter(|(_, r)| r.node == victim) {
        let next = runs
            .iter()
            .filter(|n| n.bucket == *bucket && n.start_us >= killed_us)
            .min_by_key(|n| n.start_us);
        if let Some(n) = next {
            let after = (n.start_us - killed_us) / 1_000;
            resumed.push(after);
            detail += &format!(
                "      bucket {bucket}: {victim} ran it until the kill (token {}); {} went on {after} ms after it (token {})\n",
                r.token, n.node, n.token
            );
        }
    }
    detail += &format!(
        "      {} tasks accepted, every one processed; batches of a bucket never overlapped, \
         each submitter's tasks ran in its order",
        accepted.len()
    );
    let figure = match resumed.iter().max() {
        Some(max) => format!(
            "{max} ms at most ({} buckets; {} tasks, none lost)",
            resumed.len(),
            accepted.len()
        ),
        None => format!(
            "its buckets had drained ({} tasks, none lost)",
            accepted.len()
        ),
    };
    Ok(Queues { detail, figure })
}

/// A run of a job as its runner recorded its start.
struct JobStart {
    job: String,
    due: u64,
    token: u64,
    attempt: u64,
    node: String,
    at_us: u64,
}

fn job_starts(cluster: &TestCluster) -> Vec<JobStart> {
    let events: Vec<serde_json::Value> = cluster
        .all()
        .into_iter()
        .flat_map(|i| events(cluster, i, SCHED_HISTORY))
        .collect();
    events
        .iter()
        .filter(|e| e["event"] == "start")
        .filter_map(|e| {
            let r = &e["run"];
            Some(JobStart {
                job: r["job"].as_str()?.to_owned(),
                due: r["due"].as_u64()?,
                token: r["token"].as_u64()?,
                attempt: r["attempt"].as_u64()?,
                node: r["node"].as_str()?.to_owned(),
                at_us: r["at_us"].as_u64()?,
            })
        })
        .collect()
}

/// A run of a job `node` has started and not ended, if any: the latest.
fn job_running(cluster: &TestCluster, node: &str) -> Option<JobStart> {
    let ended: std::collections::BTreeSet<(String, u64)> = cluster
        .all()
        .into_iter()
        .flat_map(|i| events(cluster, i, SCHED_HISTORY))
        .filter(|e| e["event"] == "end")
        .filter_map(|e| Some((e["job"].as_str()?.to_owned(), e["token"].as_u64()?)))
        .collect();
    job_starts(cluster)
        .into_iter()
        .filter(|r| r.node == node && !ended.contains(&(r.job.clone(), r.token)))
        .max_by_key(|r| r.at_us)
}

/// How many job runs and batches each node started: what a failed wait for the holder says.
fn who_ran(cluster: &TestCluster) -> String {
    let mut ran: BTreeMap<String, (usize, usize)> = cluster
        .all()
        .into_iter()
        .map(|i| (cluster.name(i).to_owned(), (0, 0)))
        .collect();
    for r in job_starts(cluster) {
        ran.entry(r.node).or_default().0 += 1;
    }
    for r in exec_runs(cluster) {
        ran.entry(r.node).or_default().1 += 1;
    }
    ran.iter()
        .map(|(node, (jobs, batches))| {
            format!("{node} started {jobs} job runs and {batches} batches")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn exec_events(cluster: &TestCluster) -> Vec<serde_json::Value> {
    cluster
        .all()
        .into_iter()
        .flat_map(|i| events(cluster, i, EXEC_HISTORY))
        .collect()
}

fn exec_runs(cluster: &TestCluster) -> Vec<BatchRun> {
    exec_events(cluster)
        .iter()
        .filter_map(BatchRun::from_record)
        .collect()
}

/// Waits for n1's last cache write, then returns the key, the value written and what every
/// node read first after the write returned.
#[allow(clippy::type_complexity)]
fn invalidation(cluster: &TestCluster) -> anyhow::Result<(String, u64, Vec<(usize, u64)>)> {
    let key = format!("{}-0", cluster.name(0));
    let last_write = || {
        cache_events(cluster, 0)
            .into_iter()
            .filter(|e| e["event"] == "write" && e["key"] == key.as_str())
            .filter_map(|e| Some((e["value"].as_u64()?, e["end_us"].as_u64()?)))
            .max()
    };
    if cluster
        .wait_until(WAIT, |_| {
            last_write().is_some_and(|(v, _)| v >= CACHE_WRITES - 1)
        })
        .is_none()
    {
        bail!("n1 did not finish writing; logs:\n{}", logs(cluster));
    }
    let (value, written_at) = last_write().expect("waited for it");
    // The first read of the key on each node that began after the write returned.
    let read_after = |i: usize| {
        cache_events(cluster, i)
            .into_iter()
            .filter(|e| e["event"] == "read" && e["key"] == key.as_str())
            .filter(|e| e["start_us"].as_u64().is_some_and(|s| s > written_at))
            .find_map(|e| e["value"].as_u64())
    };
    if cluster
        .wait_until(WAIT, |c| {
            c.all().into_iter().all(|i| read_after(i).is_some())
        })
        .is_none()
    {
        bail!("the nodes stopped reading; logs:\n{}", logs(cluster));
    }
    let seen = cluster
        .all()
        .into_iter()
        .map(|i| (i, read_after(i).expect("waited for it")))
        .collect();
    Ok((key, value, seen))
}

/// The events node `i` recorded so far in the JSON-lines history `file` (relative to its
/// home); none while the file is missing.
fn events(cluster: &TestCluster, i: usize, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(cluster.home(i).join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn cache_events(cluster: &TestCluster, i: usize) -> Vec<serde_json::Value> {
    events(cluster, i, CACHE_HISTORY)
}

/// The node that most recently took the demo lock, and its token.
fn latest_grant(cluster: &TestCluster) -> Option<(usize, u64)> {
    cluster
        .all()
        .into_iter()
        .flat_map(|i| {
            events(cluster, i, LOCK_HISTORY)
                .into_iter()
                .filter(|e| e["event"] == "acquired")
                .filter_map(|e| e["token"].as_u64())
                .map(move |t| (i, t))
        })
        .max_by_key(|(_, t)| *t)
}

fn show(cluster: &TestCluster, i: usize) {
    match cluster.status(i) {
        Some(status) => print!("{}", table(&status)),
        None => println!("({} did not answer)", cluster.name(i)),
    }
}

fn logs(cluster: &TestCluster) -> String {
    cluster
        .all()
        .into_iter()
        .map(|i| format!("--- {} ---\n{}", cluster.name(i), cluster.log(i)))
        .collect()
}
