//! The admin endpoint as operators meet it: the token gate, the primitives' views and actions,
//! and `/metrics`, on in-process nodes with the real HTTP server.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use crate::common::serial;
use colony::actors::caches::report::CachesReport;
use colony::actors::locks::report::LocksReport;
use colony_runtime::testkit::AdminClient;
use colony_runtime::{Node, NodeBuilder, StartError};

fn builder(home: &std::path::Path) -> NodeBuilder {
    colony::node_with(colony::Primitives::default())
        .name("solo")
        .home(home)
        .bind("127.0.0.1:0")
        .cookie("c")
        .admin("127.0.0.1:0")
}

fn client(node: &Node, token: Option<&str>) -> AdminClient {
    AdminClient::new(node.admin_addr().expect("an admin endpoint"))
        .with_token(token.map(str::to_owned))
}

/// Runs blocking HTTP calls from a test on the multi-threaded runtime.
fn http<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_request_but_health_needs_it_and_refusals_are_counted() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = builder(home.path())
        .admin_token("s3cret")
        .start()
        .await
        .unwrap();
    let (none, wrong, right) = (
        client(&node, None),
        client(&node, Some("s3cres")),
        client(&node, Some("s3cret")),
    );
    http(|| {
        assert!(none.healthy(), "GET /health is open to all");
        // The cluster page is open too: a static file with no data, which asks for the token.
        let (status, page) = none.get_text("").unwrap();
        assert_eq!(status, 200, "GET / without a token");
        assert!(page.contains("Authorization") && !page.contains("s3cret"));
        for path in ["cluster", "stats", "locks", "caches", "metrics"] {
            assert_eq!(
                none.get_text(path).unwrap().0,
                401,
                "GET /{path} without a token"
            );
            assert_eq!(
                wrong.get_text(path).unwrap().0,
                401,
                "GET /{path}, wrong token"
            );
            assert_eq!(
                right.get_text(path).unwrap().0,
                200,
                "GET /{path}, right token"
            );
        }
        assert_eq!(none.post_text("actions/caches.flush").unwrap().0, 401);
        assert_eq!(wrong.post_text("actions/caches.flush").unwrap().0, 401);
        let (status, body) = right.post_text("actions/caches.flush").unwrap();
        assert_eq!(status, 200, "{body}");
        let stats = right.stats().unwrap();
        assert_eq!(stats["admin"]["unauthorized"], 12, "{stats}");
        assert_eq!(stats["admin"]["read_only_refused"], 0, "{stats}");
    });
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_loopback_endpoint_serves_reads_and_refuses_every_change() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = builder(home.path())
        .fault_injection(true)
        .start()
        .await
        .unwrap();
    let (none, guessed) = (client(&node, None), client(&node, Some("guess")));
    http(|| {
        assert_eq!(none.get_text("cluster").unwrap().0, 200);
        assert_eq!(none.get_text("locks").unwrap().0, 200);
        for path in ["actions/caches.flush", "faults", "caches/c/flush"] {
            assert_eq!(none.post_text(path).unwrap().0, 403, "POST /{path}");
            assert_eq!(guessed.post_text(path).unwrap().0, 403, "POST /{path}");
        }
        assert!(none.set_faults(Vec::new()).is_err());
        let stats = none.stats().unwrap();
        assert_eq!(stats["admin"]["read_only_refused"], 7, "{stats}");
    });
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_exist_only_on_nodes_started_with_fault_injection() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let plain = builder(&home.path().join("plain"))
        .admin_token("t")
        .start()
        .await
        .unwrap();
    let faulty = builder(&home.path().join("faulty"))
        .admin_token("t")
        .fault_injection(true)
        .start()
        .await
        .unwrap();
    http(|| {
        let err = client(&plain, Some("t"))
            .set_faults(Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
        client(&faulty, Some("t")).set_faults(Vec::new()).unwrap();
    });
    plain.shutdown().await;
    faulty.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_beyond_loopback_without_a_token_is_refused_at_start() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let err = builder(home.path())
        .admin("0.0.0.0:0")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, StartError::AdminUnprotected { addr } if addr.ip().is_unspecified()),
        "{err}"
    );
    assert!(err.to_string().contains("COLONY_ADMIN_TOKEN"), "{err}");
    // With the token in the local home's file it starts, and asks for that token.
    std::fs::write(home.path().join("admin-token"), "from-file\n").unwrap();
    let node = builder(home.path())
        .admin("0.0.0.0:0")
        .start()
        .await
        .unwrap();
    let port = node.admin_addr().unwrap().port();
    let local = |token: &str| {
        AdminClient::new(([127, 0, 0, 1], port).into()).with_token(Some(token.to_owned()))
    };
    http(|| {
        assert_eq!(local("wrong").get_text("cluster").unwrap().0, 401);
        assert_eq!(local("from-file").get_text("cluster").unwrap().0, 200);
    });
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_lists_holders_tokens_as_strings_lease_ends_and_waiters() {
    use colony::actors::locks::LocksExt;
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = builder(home.path()).admin_token("t").start().await.unwrap();
    let lock = node.locks().lock_for_name("reindex").unwrap();
    let guard = lock.try_lock().await.unwrap().expect("free");
    let waiting = tokio::spawn({
        let lock = lock.clone();
        async move { lock.lock().await }
    });
    let admin = client(&node, Some("t"));
    let report = http(|| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let report: LocksReport = serde_json::from_value(admin.view("locks").unwrap()).unwrap();
            if report.served.first().is_some_and(|l| !l.waiters.is_empty()) {
                return report;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no waiter listed: {report:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let served = &report.served[0];
    assert_eq!(served.name, "n:reindex");
    assert_eq!(
        served.token.as_deref(),
        Some(guard.token().to_string().as_str())
    );
    let holder = served.holder.as_ref().expect("a holder");
    assert_eq!(holder.node, node.id().to_string());
    assert_eq!(holder.node_name.as_deref(), Some("solo"));
    let lease = served.lease_ends_in_ms.expect("a lease end");
    assert!(lease > 0 && lease <= 5_000, "{lease}");
    assert_eq!(served.waiters.len(), 1);
    assert_ne!(served.waiters[0].guard, holder.guard);
    assert_eq!(report.held_by_this_node, 1);
    assert_eq!(served.served_by.as_deref(), Some("solo"));
    assert!(report.unanswered.is_empty());
    let raw = admin.view("locks").unwrap();
    assert!(raw["served"][0]["token"].is_string(), "{raw}");
    guard.unlock().await.unwrap();
    waiting.await.unwrap().unwrap().unlock().await.unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_lists_mode_size_and_counters_and_flushes_one_cache_by_name() {
    use colony::actors::caches::{CacheSettings, CachesExt};
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = builder(home.path()).admin_token("t").start().await.unwrap();
    let users = node
        .caches()
        .get_cache::<String, u64>("users", None, CacheSettings::local().max_entries(10))
        .unwrap();
    let pinned = node
        .caches()
        .get_cache::<String, u64>("pinned", None, CacheSettings::local().flushable(false))
        .unwrap();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        users.put(name.into(), i as u64).await.unwrap();
    }
    pinned.put("x".into(), 1).await.unwrap();
    assert_eq!(users.get(&"a".into()).await.unwrap(), Some(0));
    assert_eq!(users.get(&"zz".into()).await.unwrap(), None);
    let admin = client(&node, Some("t"));
    let report: CachesReport =
        http(|| serde_json::from_value(admin.view("caches").unwrap()).unwrap());
    let names: Vec<&str> = report.caches.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pinned", "users"]);
    let listed = &report.caches[1];
    assert_eq!(listed.mode, "local");
    assert_eq!((listed.size, listed.max_entries), (2, Some(10)));
    assert_eq!((listed.stats.hits, listed.stats.misses), (1, 1));
    http(|| {
        let (status, body) = admin.post_text("caches/users/flush").unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(admin.post_text("caches/nosuch/flush").unwrap().0, 404);
        assert_eq!(admin.post_text("caches/pinned/flush").unwrap().0, 200);
    });
    assert_eq!(users.len(), 0, "flushed");
    assert_eq!(pinned.len(), 1, "not flushable: kept");
    node.shutdown().await;
}

/// `GET /metrics` of `node`, parsed as Prometheus text.
fn scrape(node: &Node, token: &str) -> prometheus_parse::Scrape {
    let (status, text) = http(|| client(node, Some(token)).get_text("metrics").unwrap());
    assert_eq!(status, 200, "{text}");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample `metric` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {metric} {labels:?}"));
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        prometheus_parse::Value::Summary(_) => panic!("{metric} is a summary"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_two_nodes_in_one_process_do_not_mix() {
    use colony::actors::caches::{CacheSettings, CachesExt};
    use colony::actors::locks::LocksExt;
    use colony::{
        BucketedExecutorSettings, ConcurrencyExt, JobConfig, JobOutcome, JobRequest, Schedule,
        SchedulerExt,
    };
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let alpha = builder(&home.path().join("alpha"))
        .name("alpha")
        .admin_token("t")
        .start()
        .await
        .unwrap();
    let beta = builder(&home.path().join("beta"))
        .name("beta")
        .admin_token("t")
        .start()
        .await
        .unwrap();
    let guard = alpha
        .locks()
        .lock_for_name("m")
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    let cache = alpha
        .caches()
        .get_cache::<String, u64>("users", None, CacheSettings::local())
        .unwrap();
    cache.put("a".into(), 1).await.unwrap();
    cache.get(&"a".into()).await.unwrap();
    cache.get(&"b".into()).await.unwrap();
    alpha
        .request_raw(alpha.id(), "node", "echo", b"x".to_vec(), None)
        .await
        .unwrap();
    let mail = alpha
        .concurrency()
        .bucketed_executor(
            "mail",
            BucketedExecutorSettings::new(
                |n: &u32| n.to_string(),
                |_: String, _: Vec<u32>, _: u64| async { Ok::<(), std::io::Error>(()) },
            ),
        )
        .unwrap();
    mail.submit(7).await.unwrap();
    while mail.stats().succeeded == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let scheduler = alpha.scheduler();
    scheduler
        .register_job_runner("tick", |_: JobRequest| async { JobOutcome::success() })
        .unwrap();
    let every = Schedule::interval(
        std::time::Duration::from_millis(50),
        std::time::SystemTime::now(),
    )
    .unwrap();
    scheduler
        .schedule_job("tick", JobConfig::for_runner("tick").schedule(every))
        .await
        .unwrap();
    while scheduler.run_history("tick").is_none_or(|h| h.is_empty()) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let a = scrape(&alpha, "t");
    assert!(a.samples.len() > 30, "{} samples", a.samples.len());
    for sample in &a.samples {
        assert_eq!(sample.labels.get("node"), Some("alpha"), "{sample:?}");
    }
    assert_eq!(value(&a, "colony_members", &[("state", "up")]), 1.0);
    assert_eq!(value(&a, "colony_quorum", &[]), 1.0);
    assert!(value(&a, "colony_consensus_term", &[]) >= 1.0);
    assert!(value(&a, "colony_consensus_commit_index", &[]) >= 1.0);
    assert_eq!(value(&a, "colony_consensus_is_leader", &[]), 1.0);
    assert!(value(&a, "colony_consensus_leader_changes_total", &[]) >= 1.0);
    assert!(value(&a, "colony_transport_requests_total", &[]) >= 1.0);
    let echo = [("service", "node")];
    assert_eq!(
        value(&a, "colony_transport_request_seconds_count", &echo),
        1.0
    );
    assert_eq!(value(&a, "colony_lock_grants_total", &[]), 1.0);
    assert_eq!(value(&a, "colony_lock_held_guards", &[]), 1.0);
    let users = [("cache", "users")];
    assert_eq!(value(&a, "colony_cache_hits_total", &users), 1.0);
    assert_eq!(value(&a, "colony_cache_misses_total", &users), 1.0);
    assert_eq!(value(&a, "colony_cache_entries", &users), 1.0);
    let mail = [("executor", "mail")];
    assert_eq!(
        value(&a, "colony_executor_batches_succeeded_total", &mail),
        1.0
    );
    assert_eq!(value(&a, "colony_executor_queued_tasks", &mail), 0.0);
    assert_eq!(value(&a, "colony_executor_limit", &mail), 16.0);
    assert_eq!(value(&a, "colony_scheduler_jobs", &[]), 1.0);
    assert!(value(&a, "colony_scheduler_runs_started_total", &[]) >= 1.0);
    assert!(
        value(
            &a,
            "colony_scheduler_runs_ended_total",
            &[("outcome", "succeeded")]
        ) >= 1.0
    );

    let b = scrape(&beta, "t");
    for sample in &b.samples {
        assert_eq!(sample.labels.get("node"), Some("beta"), "{sample:?}");
    }
    assert_eq!(
        value(&b, "colony_lock_grants_total", &[]),
        0.0,
        "alpha's lock"
    );
    assert!(
        !b.samples
            .iter()
            .any(|s| s.metric.starts_with("colony_cache_")),
        "alpha's cache"
    );
    drop(guard);
    alpha.shutdown().await;
    beta.shutdown().await;
}
