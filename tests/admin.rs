//! The admin endpoint as operators meet it: the token gate, the primitives' views and actions,
//! and `/metrics`, on in-process nodes with the real HTTP server.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

mod common;

use colony::actors::caches::report::CachesReport;
use colony::actors::locks::report::LocksReport;
use colony_runtime::testkit::AdminClient;
use colony_runtime::{Node, NodeBuilder, StartError};
use common::serial;

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
        for path in ["cluster", "stats", "locks", "caches"] {
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
        assert_eq!(stats["admin"]["unauthorized"], 10, "{stats}");
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
