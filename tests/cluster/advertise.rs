//! `advertise`: peers dial and gossip the address a node advertises, while its sockets stay on
//! the address it bound (containers, NAT), which may then be `0.0.0.0`.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::serial;
use colony_runtime::config::ConfigError;
use colony_runtime::testkit::free_port;
use colony_runtime::{Node, StartError};

fn builder(home: &std::path::Path, name: &str) -> colony_runtime::NodeBuilder {
    Node::builder()
        .name(name)
        .home(home.join(name))
        .shared_home(home.join("shared"))
        .cookie("c")
        .cluster_size(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_reach_a_node_at_its_advertised_address_not_its_bound_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Bound to every interface, reachable (on Linux's loopback /8) at 127.0.0.2 only as far as
    // peers know: they can reach it through nothing but the advertised address.
    let advertised: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let a = builder(dir.path(), "a")
        .bind(format!("0.0.0.0:{port}"))
        .advertise(advertised)
        .start()
        .await
        .unwrap();
    let b = tokio::time::timeout(
        Duration::from_secs(30),
        builder(dir.path(), "b")
            .bind("127.0.0.1:0")
            .seeds([advertised])
            .start(),
    )
    .await
    .expect("b joins through a's advertised address")
    .unwrap();
    assert_eq!(a.addr(), advertised);
    let seen = b
        .members()
        .into_iter()
        .find(|m| m.name == "a")
        .expect("a is a member");
    assert_eq!(seen.addr, advertised, "b knows a by its advertised address");
    assert!(seen.state.is_up());
    let echoed: Vec<u8> = tokio::time::timeout(
        Duration::from_secs(5),
        b.request_raw(a.id(), "node", "echo", b"hi".to_vec(), None),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        echoed, b"hi",
        "b's link to a goes to the advertised address"
    );
    // The echo crossed b's link to a: both count its bytes.
    let (sent, read) = (b.stats().transport.bytes_out, a.stats().transport.bytes_in);
    assert!(sent > 2 && read > 2, "b wrote {sent} bytes, a read {read}");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn binding_every_interface_without_an_advertised_address_is_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let err = builder(dir.path(), "a")
        .cluster_size(1)
        .bind("0.0.0.0:0")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StartError::Config(ConfigError::Invalid {
                setting: "bind",
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("advertise"), "{err}");
    let err = builder(dir.path(), "a")
        .bind("127.0.0.1:0")
        .advertise("0.0.0.0:7400")
        .resolve()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                setting: "advertise",
                ..
            }
        ),
        "{err}"
    );
}
