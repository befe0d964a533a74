//! Components across the cluster: switched on and off by name on every node, a node that joins
//! later included; a component that is not cluster-compatible never runs beside another node.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony_runtime::lifecycle::{Component, ComponentError, HookFuture};
use colony_runtime::testkit::free_port;
use colony_runtime::{ComponentControlError, Node};
use common::serial;

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
