//! A moved shared home in a real node: a failed update locks the node for maintenance (its
//! primitives refuse work, its components do not start, `/health` and `/cluster` say why), and
//! a start with the old location runs normally again.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::common::serial;
use colony::actors::locks::LockError;
use colony::{CacheSettings, CachesExt, LocksExt, Node};
use colony_runtime::homes::{HomeUpdateError, handler_fn};
use colony_runtime::lifecycle::{Component, ComponentError, HookFuture};

const SUMMARY: &str = "The search index could not be moved; see the log.";

struct Started(Arc<Mutex<bool>>);

impl Component for Started {
    fn name(&self) -> &str {
        "started"
    }
    fn on_start<'a>(&'a self, _: &'a Node) -> HookFuture<'a, Result<(), ComponentError>> {
        *self.0.lock().unwrap() = true;
        Box::pin(async { Ok(()) })
    }
    fn on_stop<'a>(&'a self, _: &'a Node) -> HookFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// A node on `shared` whose one update handler fails, with an admin endpoint.
async fn start(home: &Path, shared: &Path, started: &Arc<Mutex<bool>>) -> Node {
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    colony::node()
        .name("solo")
        .home(home)
        .shared_home(shared)
        .bind("127.0.0.1:0")
        .cookie("c")
        .admin(admin_addr)
        .home_update_handler(handler_fn(
            "index",
            |update| {
                Err(HomeUpdateError::Service {
                    summary: SUMMARY.into(),
                    detail: format!("no index under {}", update.new.display()),
                })
            },
            |_| Ok(()),
        ))
        .component(Started(started.clone()))
        .start()
        .await
        .unwrap()
}

fn get(node: &Node, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", node.config().admin.unwrap());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut answer = agent.get(&url).call().unwrap();
    let status = answer.status().as_u16();
    (status, answer.body_mut().read_to_string().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_move_locks_the_node_and_the_old_location_starts_it_normally() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (home, old, new) = (
        dir.path().join("home"),
        dir.path().join("shared-old"),
        dir.path().join("shared-new"),
    );
    let started = Arc::new(Mutex::new(false));

    // First start: the location is recorded, nothing runs.
    let node = start(&home, &old, &started).await;
    assert_eq!(node.maintenance(), None);
    assert!(*started.lock().unwrap());
    node.shutdown().await;

    // Moved, and the handler fails: locked, with the handler's summary and no path.
    *started.lock().unwrap() = false;
    let node = start(&home, &new, &started).await;
    assert_eq!(node.maintenance(), Some(SUMMARY));
    assert!(
        !*started.lock().unwrap(),
        "no component runs on a locked node"
    );
    let lock = node.locks().lock_for_name("reindex").unwrap();
    assert_eq!(
        lock.try_lock().await.err(),
        Some(LockError::Maintenance {
            message: SUMMARY.into()
        })
    );
    let cache = node
        .caches()
        .get_cache::<String, u64>("c", None, CacheSettings::local())
        .unwrap();
    let refused = cache.put("k".into(), 1).await.unwrap_err();
    assert!(refused.to_string().contains(SUMMARY), "{refused}");
    let (status, body) = tokio::task::block_in_place(|| get(&node, "/health"));
    assert_eq!(status, 503);
    assert!(body.contains("locked for maintenance") && body.contains(SUMMARY));
    let (_, cluster) = tokio::task::block_in_place(|| get(&node, "/cluster"));
    let cluster: serde_json::Value = serde_json::from_str(&cluster).unwrap();
    assert_eq!(cluster["maintenance"], SUMMARY);
    for text in [&body, &cluster.to_string()] {
        assert!(!text.contains(dir.path().to_str().unwrap()), "{text}");
    }
    node.shutdown().await;

    // Back at the old location: a normal start, the handler not called.
    let node = start(&home, &old, &started).await;
    assert_eq!(node.maintenance(), None);
    assert!(*started.lock().unwrap());
    node.shutdown().await;
    // Each start took up the store the last one left (a stopped node's handles, still held
    // here, once kept it open and every start moved it aside as unreadable).
    let state: Vec<String> = std::fs::read_dir(home.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!state.iter().any(|n| n.contains("corrupt")), "{state:?}");
}
