//! The scheduler API on one node: interval, cron and one-shot jobs run with rising tokens, local
//! jobs, overlap skipped and recorded, a failing (or panicking) job keeps its schedule,
//! unregister, bad input, the history bound, a slow job does not starve the others, parameters
//! serialized on a standalone node, and `GET /jobs`; and two nodes in one process scheduling
//! one id at once.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::common::serial;
use colony::actors::scheduler::{PassReason, RunEnd, RunOutcome, ScheduleError};
use colony::{
    JobConfig, JobOutcome, JobRequest, JobRun, MisfirePolicy, Node, Overlap, Primitives, RunMode,
    Schedule, SchedulerError, SchedulerExt, SchedulerSettings,
};
use colony_runtime::testkit::AdminClient;
use serde::{Deserialize, Serialize};

/// A one-node cluster of its own for one test (one test at a time), with its home.
async fn solo_with(
    settings: SchedulerSettings,
) -> (MutexGuard<'static, ()>, tempfile::TempDir, Node) {
    let serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = colony::node_with(Primitives {
        scheduler: settings,
        ..Primitives::default()
    })
    .name("solo")
    .home(home.path())
    .bind("127.0.0.1:0")
    .cookie("c")
    .admin("127.0.0.1:0")
    .start()
    .await
    .unwrap();
    (serial, home, node)
}

async fn solo() -> (MutexGuard<'static, ()>, tempfile::TempDir, Node) {
    solo_with(SchedulerSettings::default()).await
}

/// What a runner saw of each run: (job, due time, token, attempt).
type Seen = Arc<Mutex<Vec<(String, SystemTime, u64, u32)>>>;

/// A runner that records its runs, sleeps `busy`, then succeeds.
fn recorder(seen: &Seen, busy: Duration) -> impl colony::JobRunner {
    let seen = seen.clone();
    move |r: JobRequest| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap()
                .push((r.job_id.clone(), r.scheduled, r.token, r.attempt));
            tokio::time::sleep(busy).await;
            JobOutcome::success()
        }
    }
}

/// The node's scheduler with runner `rec`, a [`recorder`] of runs that take no time.
fn recording(node: &Node) -> (colony::Scheduler, Seen) {
    let scheduler = node.scheduler();
    let seen = Seen::default();
    scheduler
        .register_job_runner("rec", recorder(&seen, Duration::ZERO))
        .unwrap();
    (scheduler, seen)
}

fn count(seen: &Seen, job: &str) -> usize {
    seen.lock().unwrap().iter().filter(|s| s.0 == job).count()
}

/// Waits until `done` holds, at most 10 s.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn every(ms: u64) -> Schedule {
    Schedule::interval(Duration::from_millis(ms), SystemTime::now()).unwrap()
}

/// Tokens strictly increase and due times are distinct and increasing, per job, in run order.
fn assert_rising(seen: &Seen, job: &str) {
    let runs: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.0 == job)
        .cloned()
        .collect();
    for w in runs.windows(2) {
        assert!(w[1].2 > w[0].2, "{job}: tokens rise: {runs:?}");
        assert!(w[1].1 > w[0].1, "{job}: each due time runs once: {runs:?}");
    }
}

fn ran(history: &[JobRun], outcome: RunOutcome) -> usize {
    history
        .iter()
        .filter(|r| r.result == RunEnd::Ran(outcome))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_cron_and_once_jobs_run_with_rising_tokens() {
    let (_serial, _home, node) = solo().await;
    let (scheduler, seen) = recording(&node);
    scheduler
        .schedule_job("fast", JobConfig::for_runner("rec").schedule(every(100)))
        .await
        .unwrap();
    let cron = Schedule::cron("* * * * * *", "Europe/Berlin").unwrap();
    scheduler
        .schedule_job("cron", JobConfig::for_runner("rec").schedule(cron))
        .await
        .unwrap();
    let at = SystemTime::now() + Duration::from_millis(300);
    scheduler
        .schedule_job(
            "once",
            JobConfig::for_runner("rec").schedule(Schedule::once(at).unwrap()),
        )
        .await
        .unwrap();
    until("10 interval runs, 2 cron runs, the one-off", || {
        count(&seen, "fast") >= 10 && count(&seen, "cron") >= 2 && count(&seen, "once") == 1
    })
    .await;
    for job in ["fast", "cron"] {
        assert_rising(&seen, job);
    }
    // Cron due times fall on whole seconds.
    for s in seen.lock().unwrap().iter().filter(|s| s.0 == "cron") {
        let ms =
            s.1.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis();
        assert_eq!(ms % 1000, 0, "{s:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&seen, "once"), 1, "a one-off runs once");
    let once = scheduler.job_details("once").unwrap();
    assert_eq!(once.next_run, None);
    assert_eq!(once.run_mode, RunMode::OncePerCluster);
    let history = scheduler.run_history("once").unwrap();
    assert_eq!(ran(&history, RunOutcome::Succeeded), 1, "{history:?}");
    assert_eq!(
        history[0].scheduled,
        Schedule::once(at)
            .unwrap()
            .next_run_times(SystemTime::UNIX_EPOCH, 1)[0]
    );
    assert_eq!(history[0].node.as_deref(), Some("solo"));
    let fast = scheduler.job_details("fast").unwrap();
    assert!(fast.next_run.is_some());
    assert_eq!(scheduler.jobs_by_runner("rec").len(), 3);
    assert!(scheduler.jobs_by_runner("other").is_empty());
    scheduler.unschedule_job("fast").await.unwrap();
    assert!(scheduler.job_details("fast").is_none());
    let after = count(&seen, "fast");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        count(&seen, "fast") <= after + 1,
        "an unscheduled job stops"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_job_runs_on_its_node_with_its_own_history() {
    let (_serial, _home, node) = solo().await;
    let (scheduler, seen) = recording(&node);
    scheduler
        .schedule_job(
            "here",
            JobConfig::for_runner("rec")
                .run_mode(RunMode::Locally)
                .schedule(every(100)),
        )
        .await
        .unwrap();
    until("5 local runs", || count(&seen, "here") >= 5).await;
    assert_rising(&seen, "here");
    let details = scheduler.job_details("here").unwrap();
    assert_eq!(details.run_mode, RunMode::Locally);
    assert!(
        !node.group().status().state.jobs.jobs.contains_key("here"),
        "a local job is not cluster state"
    );
    let history = scheduler.run_history("here").unwrap();
    assert!(ran(&history, RunOutcome::Succeeded) >= 4, "{history:?}");
    assert_eq!(scheduler.jobs_by_runner("rec").len(), 1);
    scheduler.unschedule_job("here").await.unwrap();
    assert!(scheduler.job_details("here").is_none());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_fires_are_skipped_and_recorded() {
    let (_serial, _home, node) = solo().await;
    let scheduler = node.scheduler();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let (r, m, n) = (running.clone(), most.clone(), runs.clone());
    scheduler
        .register_job_runner("slow", move |_: JobRequest| {
            let (r, m, n) = (r.clone(), m.clone(), n.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                n.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(450)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                JobOutcome::success()
            }
        })
        .unwrap();
    scheduler
        .schedule_job("slow", JobConfig::for_runner("slow").schedule(every(100)))
        .await
        .unwrap();
    until("3 runs", || runs.load(Ordering::SeqCst) >= 3).await;
    assert_eq!(most.load(Ordering::SeqCst), 1, "runs never overlap");
    let history = scheduler.run_history("slow").unwrap();
    let skipped: u64 = history
        .iter()
        .filter_map(|r| match r.result {
            RunEnd::Passed {
                why: PassReason::Overlap,
                count,
            } => Some(count),
            _ => None,
        })
        .sum();
    assert!(skipped >= 3, "overlapping fires recorded: {history:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_panicking_job_keeps_its_schedule() {
    let (_serial, _home, node) = solo().await;
    let scheduler = node.scheduler();
    let runs = Arc::new(AtomicUsize::new(0));
    let n = runs.clone();
    scheduler
        .register_job_runner("flaky", move |_: JobRequest| {
            let n = n.clone();
            async move {
                match n.fetch_add(1, Ordering::SeqCst) % 3 {
                    0 => Err::<(), _>("disk full".to_owned()),
                    1 => panic!("runner bug"),
                    _ => Ok(()),
                }
            }
        })
        .unwrap();
    scheduler
        .schedule_job("flaky", JobConfig::for_runner("flaky").schedule(every(100)))
        .await
        .unwrap();
    until("9 runs", || runs.load(Ordering::SeqCst) >= 9).await;
    let history = scheduler.run_history("flaky").unwrap();
    assert!(ran(&history, RunOutcome::Failed) >= 4, "{history:?}");
    assert!(ran(&history, RunOutcome::Succeeded) >= 2, "{history:?}");
    assert!(
        history.iter().any(|r| r.message == "disk full"),
        "the error is the message: {history:?}"
    );
    assert!(
        history.iter().any(|r| r.message == "the runner panicked"),
        "{history:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_runner_no_longer_runs_and_its_fires_are_recorded() {
    let (_serial, _home, node) = solo().await;
    let (scheduler, seen) = recording(&node);
    scheduler
        .schedule_job("j", JobConfig::for_runner("rec").schedule(every(100)))
        .await
        .unwrap();
    until("3 runs", || count(&seen, "j") >= 3).await;
    scheduler.unregister_job_runner("rec").unwrap();
    // The unregistration reaches the cluster state, then fires stop.
    until("no runner recorded", || {
        scheduler.run_history("j").unwrap().iter().any(|r| {
            matches!(
                r.result,
                RunEnd::Passed {
                    why: PassReason::NoRunner,
                    ..
                }
            )
        })
    })
    .await;
    let after = count(&seen, "j");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&seen, "j"), after, "no run without the runner");
    assert!(
        scheduler.job_details("j").is_some(),
        "the job stays scheduled"
    );
    node.shutdown().await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    team: String,
    recipients: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_clear_errors() {
    let (_serial, _home, node) = solo().await;
    let scheduler = node.scheduler();
    let err = Schedule::cron("0 61 * * *", "UTC").unwrap_err();
    assert!(matches!(err, ScheduleError::InvalidCron { .. }), "{err}");
    assert!(err.to_string().contains("invalid cron expression"), "{err}");
    let err = Schedule::cron("0 0 * * *", "Mars/Olympus").unwrap_err();
    assert!(err.to_string().contains("unknown time zone"), "{err}");
    // A configuration built by hand is checked too.
    let mut config = JobConfig::for_runner("r");
    let err = scheduler
        .schedule_job("j", config.clone())
        .await
        .unwrap_err();
    assert_eq!(err, SchedulerError::NoSchedule("j".into()));
    config.schedule = Some(every(1000));
    config.parameters = Some("{not json".into());
    let err = scheduler
        .schedule_job("j", config.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, SchedulerError::Parameters { .. }), "{err}");
    let mut bad = BTreeMap::new();
    bad.insert(vec![1u8], 2u8);
    let err = JobConfig::for_runner("r").parameters(&bad).unwrap_err();
    assert!(err.to_string().contains("do not serialize"), "{err}");
    let local = JobConfig::for_runner("nobody")
        .run_mode(RunMode::Locally)
        .schedule(every(1000));
    let err = scheduler.schedule_job("j", local).await.unwrap_err();
    assert_eq!(
        err,
        SchedulerError::UnknownRunner {
            key: "nobody".into()
        }
    );
    assert!(err.to_string().contains("no runner `nobody`"), "{err}");
    let ok = JobConfig::for_runner("r").schedule(every(1000));
    assert_eq!(
        scheduler.schedule_job("", ok.clone()).await.unwrap_err(),
        SchedulerError::BadName
    );
    assert_eq!(
        scheduler
            .schedule_job(&"x".repeat(257), ok.clone())
            .await
            .unwrap_err(),
        SchedulerError::BadName
    );
    let huge = ok.clone().parameters(&"p".repeat(70_000)).unwrap();
    assert!(matches!(
        scheduler.schedule_job("j", huge).await.unwrap_err(),
        SchedulerError::TooLarge { .. }
    ));
    assert_eq!(
        scheduler.unschedule_job("missing").await.unwrap_err(),
        SchedulerError::NoSuchJob("missing".into())
    );
    // Nothing refused was scheduled; a cluster job for a runner no node has is allowed.
    assert!(scheduler.job_details("j").is_none());
    let id = scheduler.schedule_job_with_generated_id(ok).await.unwrap();
    assert!(scheduler.job_details(&id).is_some());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_keeps_the_configured_count() {
    let (_serial, _home, node) = solo_with(SchedulerSettings {
        history: 4,
        ..Default::default()
    })
    .await;
    let (scheduler, seen) = recording(&node);
    scheduler
        .schedule_job("j", JobConfig::for_runner("rec").schedule(every(50)))
        .await
        .unwrap();
    until("10 runs", || count(&seen, "j") >= 10).await;
    let history = scheduler.run_history("j").unwrap();
    assert_eq!(history.len(), 4, "{history:?}");
    // The latest kept, oldest first.
    for w in history.windows(2) {
        assert!(w[1].scheduled > w[0].scheduled, "{history:?}");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_job_does_not_starve_the_others() {
    let (_serial, _home, node) = solo_with(SchedulerSettings {
        pool: 2,
        per_job: 1,
        history: 20,
    })
    .await;
    let scheduler = node.scheduler();
    let seen = Seen::default();
    scheduler
        .register_job_runner("slow", recorder(&seen, Duration::from_secs(30)))
        .unwrap();
    scheduler
        .register_job_runner("fast", recorder(&seen, Duration::ZERO))
        .unwrap();
    // Overlapping slow runs would fill any pool without a per-job share.
    scheduler
        .schedule_job(
            "slow",
            JobConfig::for_runner("slow")
                .schedule(every(50))
                .overlap(Overlap::Allow),
        )
        .await
        .unwrap();
    until("a slow run", || count(&seen, "slow") >= 1).await;
    scheduler
        .schedule_job("fast", JobConfig::for_runner("fast").schedule(every(100)))
        .await
        .unwrap();
    until("the fast job keeps running", || count(&seen, "fast") >= 5).await;
    assert_eq!(count(&seen, "slow"), 1, "the slow job holds one place only");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_serializes_parameters_and_reports_jobs() {
    let (_serial, _home, node) = solo().await;
    let scheduler = node.scheduler();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    scheduler
        .register_job_runner("report", move |r: JobRequest| {
            let g = g.clone();
            async move {
                let params: Report = r.parameters()?.ok_or("no parameters")?;
                g.lock().unwrap().push(params);
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            }
        })
        .unwrap();
    let params = Report {
        team: "ops".into(),
        recipients: vec!["ann".into(), "bo".into()],
    };
    let config = JobConfig::for_runner("report")
        .schedule(every(100))
        .misfire(MisfirePolicy::Skip)
        .parameters(&params)
        .unwrap();
    scheduler.schedule_job("weekly", config).await.unwrap();
    until("a run", || !got.lock().unwrap().is_empty()).await;
    assert_eq!(
        got.lock().unwrap()[0],
        params,
        "parameters went through JSON"
    );
    until("the run recorded", || {
        ran(
            &scheduler.run_history("weekly").unwrap(),
            RunOutcome::Succeeded,
        ) > 0
    })
    .await;
    let admin = AdminClient::new(node.admin_addr().unwrap());
    let (status, body) = tokio::task::block_in_place(|| admin.get_text("jobs").unwrap());
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let job = &report["jobs"][0];
    assert_eq!(job["id"], "weekly", "{report}");
    assert_eq!(job["runner"], "report");
    assert!(
        job["next_run_ms"].is_string(),
        "large integers as strings: {job}"
    );
    // Under MisfirePolicy::Skip, due times before the node served its jobs pass as missed.
    let run = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["result"] != "Passed")
        .unwrap_or_else(|| panic!("no run in {job}"));
    assert!(run["token"].is_string(), "{run}");
    assert_eq!(run["result"], "Succeeded", "{run}");
    assert_eq!(report["runner_keys_here"][0], "report");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_scheduling_one_id_at_once_end_with_one_job_everywhere() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (
        colony_runtime::testkit::free_port(),
        colony_runtime::testkit::free_port(),
    );
    let builder = |name: &str, port: u16, seeds: &[u16]| {
        colony::node()
            .name(name)
            .home(dir.path().join(name))
            .bind(format!("127.0.0.1:{port}"))
            .seeds(seeds.iter().map(|p| format!("127.0.0.1:{p}")))
            .cookie("c")
            .cluster_size(2)
    };
    let (a, b) = tokio::join!(
        builder("a", pa, &[]).start(),
        builder("b", pb, &[pa]).start()
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (sa, sb) = (a.scheduler(), b.scheduler());
    for round in 1..=5u64 {
        let on_a = JobConfig::for_runner("from-a").schedule(every(100 + round));
        let on_b = JobConfig::for_runner("from-b").schedule(every(200 + round));
        let (ra, rb) = tokio::join!(
            sa.schedule_job("same", on_a.clone()),
            sb.schedule_job("same", on_b.clone()),
        );
        ra.unwrap();
        rb.unwrap();
        // Both applied (two generations a round); then both nodes hold the same job.
        until("both nodes applied both schedules", || {
            [&a, &b].iter().all(|n| {
                n.group()
                    .status()
                    .state
                    .jobs
                    .jobs
                    .get("same")
                    .is_some_and(|j| j.generation == 2 * round)
            })
        })
        .await;
        let (da, db) = (
            a.scheduler().job_details("same").unwrap().config.unwrap(),
            b.scheduler().job_details("same").unwrap().config.unwrap(),
        );
        assert_eq!(da, db, "round {round}: one job everywhere");
        assert!(da == on_a || da == on_b, "round {round}: {da:?}");
    }
    let (a_jobs, b_jobs) = (
        a.scheduler().jobs_by_runner("from-a").len() + a.scheduler().jobs_by_runner("from-b").len(),
        b.scheduler().jobs_by_runner("from-a").len() + b.scheduler().jobs_by_runner("from-b").len(),
    );
    assert_eq!((a_jobs, b_jobs), (1, 1));
    b.shutdown().await;
    a.shutdown().await;
}
