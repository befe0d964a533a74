//! Components start after the node joined, in order, and stop in reverse before it leaves.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::serial;
use colony_runtime::lifecycle::{Component, ComponentError, HookFuture};
use colony_runtime::transport::{Request, Service, ServiceFuture, TransportError};
use colony_runtime::{MemberEvent, MemberState, Node, StartError};

#[derive(Clone)]
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    fail: bool,
}

impl Component for Recorder {
    fn name(&self) -> &str {
        self.name
    }

    fn on_start<'a>(&'a self, node: &'a Node) -> HookFuture<'a, Result<(), ComponentError>> {
        Box::pin(async move {
            let state = node.local().state;
            self.log
                .lock()
                .unwrap()
                .push(format!("start {} ({state})", self.name));
            if self.fail {
                return Err(ComponentError {
                    component: self.name.into(),
                    reason: "refused on purpose".into(),
                });
            }
            Ok(())
        })
    }

    fn on_stop<'a>(&'a self, node: &'a Node) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let state = node.local().state;
            self.log
                .lock()
                .unwrap()
                .push(format!("stop {} ({state})", self.name));
        })
    }
}

fn recorder(name: &'static str, log: &Arc<Mutex<Vec<String>>>, fail: bool) -> Recorder {
    Recorder {
        name,
        log: log.clone(),
        fail,
    }
}

/// A component whose start never finishes: the node is joined, and its start-up is not over.
struct Stuck;

impl Component for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }

    fn on_start<'a>(&'a self, _: &'a Node) -> HookFuture<'a, Result<(), ComponentError>> {
        Box::pin(std::future::pending())
    }

    fn on_stop<'a>(&'a self, _: &'a Node) -> HookFuture<'a, ()> {
        Box::pin(async {})
    }
}

fn builder(home: &std::path::Path) -> colony_runtime::NodeBuilder {
    Node::builder()
        .name("solo")
        .home(home)
        .bind("127.0.0.1:0")
        .cookie("c")
}

#[tokio::test]
async fn components_start_in_order_once_up_and_stop_in_reverse_before_leaving() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let node = builder(home.path())
        .component(recorder("db", &log, false))
        .component(recorder("web", &log, false))
        .start()
        .await
        .unwrap();
    assert_eq!(node.local().state, MemberState::Up);
    node.shutdown().await;
    node.shutdown().await; // a second call does nothing
    assert_eq!(
        *log.lock().unwrap(),
        [
            "start db (up)",
            "start web (up)",
            "stop web (up)",
            "stop db (up)"
        ]
    );
}

#[tokio::test]
async fn a_failing_component_stops_those_started_before_it_and_fails_the_start() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let err = builder(home.path())
        .component(recorder("db", &log, false))
        .component(recorder("broken", &log, true))
        .component(recorder("never", &log, false))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Component(_)), "{err}");
    assert!(err.to_string().contains("broken"), "{err}");
    assert_eq!(
        *log.lock().unwrap(),
        ["start db (up)", "start broken (up)", "stop db (up)"]
    );
}

#[tokio::test]
async fn a_standalone_node_serves_its_own_requests_through_the_wire() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = builder(home.path())
        .max_message_bytes(4096)
        .start()
        .await
        .unwrap();
    assert!(node.has_quorum());
    assert_eq!(node.owner_of(b"any key"), Some(node.id()));
    let echoed = node
        .request_raw(node.id(), "node", "echo", b"x".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(echoed, b"x");
    // Standalone still encodes: an oversized request fails exactly as it would remotely.
    let err = node
        .request_raw(node.id(), "node", "echo", vec![0; 8192], None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            colony_runtime::transport::RequestError::TooLarge { .. }
        ),
        "{err}"
    );
    assert!(node.local_home().state().is_dir());
    assert!(node.shared_home().plugins().is_dir());

    // A service name is taken once, and must fit a link frame.
    let err = node
        .register_service("node", Arc::new(Silent))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::DuplicateService(_)), "{err}");
    let err = node
        .register_service(&"s".repeat(256), Arc::new(Silent))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::ServiceName(_)), "{err}");
    node.shutdown().await;
}

/// A service that answers nothing useful: only its name matters.
struct Silent;

impl Service for Silent {
    fn call(&self, _: Request) -> ServiceFuture {
        Box::pin(async { Ok(Vec::new()) })
    }
}

async fn next_about_b(
    events: &mut colony_runtime::events::Subscription<MemberEvent>,
    want: fn(&MemberEvent) -> bool,
) -> MemberEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("an event about b")
            .expect("bus open");
        if event.member().name == "b" && want(&event) {
            return event;
        }
    }
}

/// Peers may list a node before its start-up is over; stopping it then must still be a leave.
/// (`colony node` got SIGTERM in that window in CI and its peers saw it *down*.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_node_still_starting_is_a_leave_its_peers_see() {
    let _serial = serial();
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = builder(home_a.path())
        .name("a")
        .cluster_size(2)
        .start()
        .await
        .unwrap();
    let mut events = a.subscribe(16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let b = builder(home_b.path())
        .name("b")
        .seeds([a.addr()])
        .cluster_size(2)
        .component(Stuck)
        .start_until(async {
            let _ = stopped.await;
        });
    let b = tokio::spawn(b);
    next_about_b(&mut events, |e| matches!(e, MemberEvent::NodeUp(_))).await;
    stop.send(()).unwrap();
    assert!(b.await.unwrap().unwrap().is_none(), "stopped, not started");
    let seen = next_about_b(&mut events, |e| !matches!(e, MemberEvent::NodeUp(_))).await;
    assert!(matches!(seen, MemberEvent::NodeLeft(_)), "{seen:?}");
    a.shutdown().await;
}
