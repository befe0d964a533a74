//! Multi-process test clusters: real `colony node` processes on 127.0.0.1, each with its own
//! home and a common shared home, and the faults a cluster meets in production.
//!
//! Faults: [`TestCluster::kill`] (SIGKILL), [`TestCluster::pause`] / [`TestCluster::resume`]
//! (SIGSTOP / SIGCONT), [`TestCluster::restart`], and [`TestCluster::partition`] /
//! [`TestCluster::heal`]. Partitions use the fault filter inside each node's network layer
//! (enabled by `--fault-injection`): it drops gossip to and from the cut-off addresses and
//! closes and refuses links with them, so tests need no root, iptables or namespaces.
//!
//! Each node's stdout and stderr go to `<home>/log/node.log`; [`TestCluster::log`] reads it.

/// The history checkers, shared with the simulator.
pub use crate::check;
mod cluster;
mod http;

pub use cluster::{ClusterSpec, TestCluster};
pub use http::{AdminClient, AdminError};

/// A free TCP port on 127.0.0.1 whose UDP twin is free too, never the same twice in a process.
///
/// The OS hands a just-released port out again, so a cluster that asked for its ports one at a
/// time could get one twice; remembering what was handed out prevents that.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free TCP port");
        let port = tcp.local_addr().expect("local addr").port();
        if !handed_out.contains(&port) && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
}
