//! The executor API on one node: batches in order, retries then a dead letter, a panic counted
//! as a failure, the per-node limit measured, Busy, a type mismatch, an unserializable task,
//! serialization on a standalone node, shutdown.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::common::serial;
use colony::actors::executor::ExecutorStats;
use colony::{BucketedExecutorSettings, ConcurrencyExt, ConcurrencyPolicy, ExecutorError, Node};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A one-node cluster of its own for one test (one test at a time), with its home.
async fn solo() -> (MutexGuard<'static, ()>, tempfile::TempDir, Node) {
    let serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = colony::node()
        .name("solo")
        .home(home.path())
        .bind("127.0.0.1:0")
        .cookie("c")
        .start()
        .await
        .unwrap();
    (serial, home, node)
}

/// Waits until `done` holds of the stats, at most 10 s.
async fn until(
    what: &str,
    stats: impl Fn() -> ExecutorStats,
    done: impl Fn(&ExecutorStats) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats();
        if done(&s) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `counter` is above 0, at most 10 s.
async fn reaches(what: &str, counter: &AtomicUsize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counter.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

type Batches = Arc<Mutex<Vec<(String, Vec<u32>, u64)>>>;

#[tokio::test]
async fn tasks_reach_the_processor_in_order_in_batches_with_rising_tokens() {
    let (_serial, _home, node) = solo().await;
    let seen: Batches = Arc::default();
    let (go, gate) = watch::channel(false);
    let entered = Arc::new(AtomicUsize::new(0));
    let (record, e) = (seen.clone(), entered.clone());
    let exec = node
        .concurrency()
        .bucketed_executor(
            "ordered",
            BucketedExecutorSettings::new(
                |_: &u32| "only".to_owned(),
                move |bucket: String, tasks: Vec<u32>, token: u64| {
                    let (record, mut gate, e) = (record.clone(), gate.clone(), e.clone());
                    async move {
                        // The first batch waits until every task is queued.
                        e.fetch_add(1, Ordering::SeqCst);
                        gate.wait_for(|go| *go).await.unwrap();
                        record.lock().unwrap().push((bucket, tasks, token));
                        Ok::<(), std::io::Error>(())
                    }
                },
            )
            .batch_size(3),
        )
        .unwrap();
    let mut ids = vec![exec.submit(0).await.unwrap()];
    reaches("the first batch never started", &entered).await;
    for i in 1..10 {
        ids.push(exec.submit(i).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    go.send_replace(true);
    until("all processed", || exec.stats(), |s| s.queued == 0).await;
    let seen = seen.lock().unwrap().clone();
    let batches: Vec<Vec<u32>> = seen.iter().map(|(_, t, _)| t.clone()).collect();
    assert_eq!(
        batches,
        [vec![0], vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]
    );
    assert!(seen.iter().all(|(b, _, _)| b == "only"));
    assert!(
        seen.windows(2).all(|w| w[0].2 < w[1].2),
        "tokens rise: {seen:?}"
    );
    assert_eq!(exec.stats().succeeded, 4);
    node.shutdown().await;
}

#[tokio::test]
async fn a_failing_batch_is_retried_then_dead_lettered_and_the_bucket_goes_on() {
    let (_serial, _home, node) = solo().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let dead: Batches = Arc::default();
    let (c, d) = (calls.clone(), dead.clone());
    let exec = node
        .concurrency()
        .bucketed_executor(
            "failing",
            BucketedExecutorSettings::new(
                |_: &u32| "b".to_owned(),
                move |_: String, tasks: Vec<u32>, _: u64| {
                    let c = c.clone();
                    async move {
                        if tasks == [0] {
                            // The second attempt panics: a failure like any other.
                            if c.fetch_add(1, Ordering::SeqCst) == 1 {
                                panic!("processor panic (expected by the test)");
                            }
                            return Err("always fails".to_owned());
                        }
                        Ok(())
                    }
                },
            )
            .max_attempts(3)
            .retry_backoff(Duration::from_millis(10), Duration::from_millis(40))
            .dead_letters(move |dl| d.lock().unwrap().push((dl.bucket, dl.tasks, dl.token))),
        )
        .unwrap();
    exec.submit(0).await.unwrap();
    exec.submit(1).await.unwrap();
    until("drained", || exec.stats(), |s| s.queued == 0).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "three attempts");
    let dead = dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].0.as_str(), dead[0].1.as_slice()), ("b", &[0][..]));
    let s = exec.stats();
    assert_eq!((s.failed, s.dead_letters, s.succeeded), (3, 1, 1), "{s:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn a_per_node_limit_caps_the_buckets_in_process() {
    let (_serial, _home, node) = solo().await;
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (n, m) = (now.clone(), most.clone());
    let exec = node
        .concurrency()
        .bucketed_executor(
            "limited",
            BucketedExecutorSettings::new(
                |i: &u32| format!("bucket-{i}"),
                move |_: String, _: Vec<u32>, _: u64| {
                    let (n, m) = (n.clone(), m.clone());
                    async move {
                        let running = n.fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(running, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        n.fetch_sub(1, Ordering::SeqCst);
                        Ok::<(), std::io::Error>(())
                    }
                },
            )
            .max_concurrency(2, ConcurrencyPolicy::PerNode),
        )
        .unwrap();
    let submits: Vec<_> = (0..12).map(|i| exec.submit(i)).collect();
    for r in futures_util::future::join_all(submits).await {
        r.unwrap();
    }
    until("drained", || exec.stats(), |s| s.queued == 0).await;
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "at most 2 at once, and 2 reached"
    );
    assert_eq!(exec.stats().succeeded, 12);
    node.shutdown().await;
}

#[tokio::test]
async fn past_its_bound_an_executor_is_busy_and_keeps_what_it_accepted() {
    let (_serial, _home, node) = solo().await;
    let (go, gate) = watch::channel(false);
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let exec = node
        .concurrency()
        .bucketed_executor(
            "bounded",
            BucketedExecutorSettings::new(
                |_: &u32| "b".to_owned(),
                move |_: String, tasks: Vec<u32>, _: u64| {
                    let (mut gate, d) = (gate.clone(), d.clone());
                    async move {
                        gate.wait_for(|go| *go).await.unwrap();
                        d.fetch_add(tasks.len(), Ordering::SeqCst);
                        Ok::<(), std::io::Error>(())
                    }
                },
            )
            .max_queued(3),
        )
        .unwrap();
    for i in 0..3 {
        exec.submit(i).await.unwrap();
    }
    assert_eq!(exec.submit(3).await, Err(ExecutorError::Busy { queued: 3 }));
    go.send_replace(true);
    until("drained", || exec.stats(), |s| s.queued == 0).await;
    assert_eq!(done.load(Ordering::SeqCst), 3);
    exec.submit(4).await.unwrap();
    node.shutdown().await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    text: String,
    /// Never serialized: a task that went through the log arrives without it.
    #[serde(skip)]
    local: u32,
}

/// A task whose serialization always fails.
#[derive(Debug, Deserialize)]
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("not today"))
    }
}

#[tokio::test]
async fn names_types_and_serialization_are_checked_and_a_standalone_node_serializes() {
    let (_serial, _home, node) = solo().await;
    let seen: Arc<Mutex<Vec<Note>>> = Arc::default();
    let s = seen.clone();
    let settings = move || {
        let s = s.clone();
        BucketedExecutorSettings::new(
            |n: &Note| n.text.clone(),
            move |_: String, tasks: Vec<Note>, _: u64| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().extend(tasks);
                    Ok::<(), std::io::Error>(())
                }
            },
        )
    };
    let notes = node
        .concurrency()
        .bucketed_executor("notes", settings())
        .unwrap();
    // The same name and type: the same executor, whose settings stay the first ones.
    let again = node
        .concurrency()
        .bucketed_executor("notes", settings())
        .unwrap();
    let other = BucketedExecutorSettings::new(
        |n: &u64| n.to_string(),
        |_: String, _: Vec<u64>, _: u64| async { Ok::<(), std::io::Error>(()) },
    );
    let mismatch = node
        .concurrency()
        .bucketed_executor("notes", other)
        .err()
        .unwrap();
    assert!(
        matches!(mismatch, ExecutorError::TypeMismatch { .. }),
        "{mismatch}"
    );
    assert!(mismatch.to_string().contains("Note"), "{mismatch}");
    let bad = node
        .concurrency()
        .bucketed_executor("", settings())
        .err()
        .unwrap();
    assert_eq!(bad, ExecutorError::BadName);

    again
        .submit(Note {
            text: "hello".into(),
            local: 7,
        })
        .await
        .unwrap();
    until("processed", || notes.stats(), |s| s.succeeded == 1).await;
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Note {
            text: "hello".into(),
            local: 0
        }],
        "the task went through its serialized form"
    );
    let empty_bucket = notes.submit(Note {
        text: String::new(),
        local: 0,
    });
    assert_eq!(empty_bucket.await, Err(ExecutorError::BadName));

    let refusing = node
        .concurrency()
        .bucketed_executor(
            "refusing",
            BucketedExecutorSettings::new(
                |_: &Unserializable| "b".to_owned(),
                |_: String, _: Vec<Unserializable>, _: u64| async { Ok::<(), std::io::Error>(()) },
            ),
        )
        .unwrap();
    let refused = refusing.submit(Unserializable).await.err().unwrap();
    assert!(
        matches!(refused, ExecutorError::Serialize { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("not today"), "{refused}");
    assert_eq!(refusing.stats().queued, 0);
    node.shutdown().await;
}

/// Drops set the flag: a batch dropped mid-call leaves it set without finishing.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn shutdown_drops_the_batches_in_process_and_the_queue_waits_for_the_next_opening() {
    let (_serial, _home, node) = solo().await;
    let (started, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, d) = (started.clone(), dropped.clone());
    let stuck = node
        .concurrency()
        .bucketed_executor(
            "jobs",
            BucketedExecutorSettings::new(
                |_: &u32| "b".to_owned(),
                move |_: String, _: Vec<u32>, _: u64| {
                    let (s, d) = (s.clone(), d.clone());
                    async move {
                        let _guard = Dropped(d);
                        s.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                        Ok::<(), std::io::Error>(())
                    }
                },
            ),
        )
        .unwrap();
    stuck.submit(1).await.unwrap();
    reaches("the batch never started", &started).await;
    stuck.shutdown();
    reaches("the batch was not dropped", &dropped).await;
    assert_eq!(
        stuck.submit(2).await,
        Err(ExecutorError::ShutDown("jobs".into()))
    );
    // The task stayed queued; the name opens again and its processor takes it.
    let took: Batches = Arc::default();
    let t = took.clone();
    let next = node
        .concurrency()
        .bucketed_executor(
            "jobs",
            BucketedExecutorSettings::new(
                |_: &u32| "b".to_owned(),
                move |b: String, tasks: Vec<u32>, token: u64| {
                    let t = t.clone();
                    async move {
                        t.lock().unwrap().push((b, tasks, token));
                        Ok::<(), std::io::Error>(())
                    }
                },
            ),
        )
        .unwrap();
    until("processed again", || next.stats(), |s| s.queued == 0).await;
    assert_eq!(took.lock().unwrap()[0].1, [1]);
    assert_eq!(started.load(Ordering::SeqCst), 1);
    node.shutdown().await;
}
