//! Components across the cluster: switched on and off by name on every node, a node that joins
//! later included; a component that is not cluster-compatible never runs beside another node.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::serial;
use colony::{BucketedExecutorSettings, ConcurrencyExt, ExecutorError};
use colony_runtime::lifecycle::{Component, ComponentError, HookFuture};
use colony_runtime::testkit::free_port;
use colony_runtime::{ComponentControlError, Node};

type Log = Arc<Mutex<Vec<String>>>;

struct Recorder {
    name: &'static str,
    node: &'static str,
    log: Log,
    compatible: bool,
}

impl Component for Recorder {
    fn name(&self) -> &str {
        self.name
    }
    fn on_start<'a>(&'a self, _: &'a Node) -> HookFuture<'a, Result<(), ComponentError>> {
        let line = format!("{} start {}", self.node, self.name);
        self.log.lock().unwrap().push(line);
        Box::pin(async { Ok(()) })
    }
    fn on_stop<'a>(&'a self, _: &'a Node) -> HookFuture<'a, ()> {
        let line = format!("{} stop {}", self.node, self.name);
        self.log.lock().unwrap().push(line);
        Box::pin(async {})
    }
    fn cluster_compatible(&self) -> bool {
        self.compatible
    }
}

fn node(
    name: &'static str,
    home: &std::path::Path,
    port: u16,
    seeds: &[u16],
    log: &Log,
) -> colony_runtime::NodeBuilder {
    let component = |c: &'static str, compatible| Recorder {
        name: c,
        node: name,
        log: log.clone(),
        compatible,
    };
    Node::builder()
        .name(name)
        .home(home)
        .bind(format!("127.0.0.1:{port}"))
        .seeds(seeds.iter().map(|p| format!("127.0.0.1:{p}")))
        .cookie("c")
        .cluster_size(3)
        .component(component("db", true))
        .component(component("mail", true))
        .component(component("single", false))
}

/// Waits until `what` holds, at most 20 s.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn running(node: &Node, component: &str) -> bool {
    node.components()
        .await
        .iter()
        .any(|c| c.name == component && c.running)
}

fn count(log: &Log, line: &str) -> usize {
    log.lock().unwrap().iter().filter(|l| *l == line).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_follow_the_cluster_switch_on_every_node_and_on_later_joiners() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let (a, b) = tokio::join!(
        node("a", &dir.path().join("a"), pa, &[], &log).start(),
        node("b", &dir.path().join("b"), pb, &[pa], &log).start(),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    for n in [&a, &b] {
        assert!(running(n, "db").await && running(n, "mail").await);
        assert!(!running(n, "single").await, "not cluster-compatible");
    }
    assert!(matches!(
        a.set_component_enabled("single", true).await,
        Err(ComponentControlError::NotClusterCompatible(_))
    ));

    // Off everywhere, from one node.
    b.set_component_enabled("mail", false).await.unwrap();
    until("mail stopped on a and b", async || {
        !running(&a, "mail").await && !running(&b, "mail").await
    })
    .await;
    assert!(running(&a, "db").await && running(&b, "db").await);

    // A node that joins now never starts it.
    let c = node("c", &dir.path().join("c"), pc, &[pa], &log)
        .start()
        .await
        .unwrap();
    assert!(running(&c, "db").await);
    assert_eq!(count(&log, "c start mail"), 0);

    // On again: everywhere, the later joiner included; twice off and on leaves no residue.
    a.set_component_enabled("mail", true).await.unwrap();
    until("mail running on a, b and c", async || {
        running(&a, "mail").await && running(&b, "mail").await && running(&c, "mail").await
    })
    .await;
    for n in ["a", "b"] {
        assert_eq!(count(&log, &format!("{n} start mail")), 2);
        assert_eq!(count(&log, &format!("{n} stop mail")), 1);
    }
    let listed = a.components().await;
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|s| s.enabled));
    for n in [&c, &b, &a] {
        n.shutdown().await;
    }
    for n in ["a", "b", "c"] {
        for comp in ["db", "mail"] {
            assert_eq!(
                count(&log, &format!("{n} start {comp}")),
                count(&log, &format!("{n} stop {comp}")),
                "{n}/{comp}: every start has its stop"
            );
        }
    }
}

/// What the `worker` component's run left observable: the task it spawned holds a clone.
type Alive = Arc<()>;

/// An application event only the `worker` component listens to.
#[derive(Debug, Clone)]
struct Deployed;

/// A component that takes a listener, a channel subscription with a task reading it, and an
/// executor, puts them in its scope, and undoes nothing itself in `on_stop`.
struct Worker {
    alive: Alive,
}

impl Component for Worker {
    fn name(&self) -> &str {
        "worker"
    }
    fn on_start<'a>(&'a self, node: &'a Node) -> HookFuture<'a, Result<(), ComponentError>> {
        Box::pin(async move {
            let scope = node.component_scope("worker").expect("set before on_start");
            scope.keep(node.events().subscribe::<Deployed>(16));
            let mut chat = node
                .messaging()
                .channel::<String>("chat")
                .unwrap()
                .subscribe();
            let alive = self.alive.clone();
            scope.spawn(async move {
                let _alive = alive;
                while chat.recv().await.is_some() {}
            });
            let exec = node
                .concurrency()
                .bucketed_executor(
                    "residue",
                    BucketedExecutorSettings::new(
                        |n: &u32| n.to_string(),
                        |_: String, _: Vec<u32>, _: u64| async { Ok::<(), std::io::Error>(()) },
                    ),
                )
                .map_err(|e| ComponentError {
                    component: "worker".into(),
                    reason: e.to_string(),
                })?;
            scope.on_release(move || exec.shutdown());
            Ok(())
        })
    }
    fn on_stop<'a>(&'a self, _: &'a Node) -> HookFuture<'a, ()> {
        Box::pin(async {})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_stopped_and_started_twice_leaves_no_residue() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let alive = Alive::default();
    let node = colony::node()
        .name("solo")
        .home(home.path())
        .bind("127.0.0.1:0")
        .cookie("c")
        .component(Worker {
            alive: alive.clone(),
        })
        .start()
        .await
        .unwrap();
    let chat = node.messaging().channel::<String>("chat").unwrap();
    let listeners = || node.events().listeners::<Deployed>();
    // What the executor name is open with: another task type is refused while it is open.
    let reopen = || {
        node.concurrency().bucketed_executor(
            "residue",
            BucketedExecutorSettings::new(
                |s: &String| s.clone(),
                |_: String, _: Vec<String>, _: u64| async { Ok::<(), std::io::Error>(()) },
            ),
        )
    };
    assert!(running(&node, "worker").await);
    for round in 0..2 {
        assert_eq!(listeners(), 1, "round {round}: its listener");
        assert_eq!(chat.subscribers(), 1, "round {round}: its subscription");
        // Held here, by the component, and by its task.
        assert_eq!(Arc::strong_count(&alive), 3, "round {round}: its task");
        assert!(matches!(reopen(), Err(ExecutorError::TypeMismatch { .. })));

        node.set_component_enabled("worker", false).await.unwrap();
        until("worker stopped", async || !running(&node, "worker").await).await;
        assert!(node.component_scope("worker").is_none());
        assert_eq!(listeners(), 0, "round {round}: listener left behind");
        assert_eq!(chat.subscribers(), 0, "round {round}: subscription left");
        until("its task ended", async || Arc::strong_count(&alive) == 2).await;
        reopen().expect("the executor was shut down").shutdown();

        node.set_component_enabled("worker", true).await.unwrap();
        until("worker running", async || running(&node, "worker").await).await;
    }
    node.shutdown().await;
    assert_eq!(listeners(), 0, "released at shutdown too");
    until("its task ended at shutdown", async || {
        Arc::strong_count(&alive) == 2
    })
    .await;
}
