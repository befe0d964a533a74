//! Multi-process test clusters: real `colony node` processes on 127.0.0.1, each with its own
//! home and a common shared home, and the faults a cluster meets in production.
//!
//! Faults: [`TestCluster::kill`] (SIGKILL), [`TestCluster::pause`] / [`TestCluster::resume`]
//! (SIGSTOP / SIGCONT), [`TestCluster::restart`], and [`TestCluster::partition`] /
//! [`TestCluster::heal`]. Partitions use the fault filter inside each node's network layer
//! (enabled by `--fault-injection`): it drops gossip to and from the cut-off addresses and
//! closes and refuses sessions with them, so tests need no root, iptables or namespaces.
//!
//! Each node's stdout and stderr go to `<home>/log/node.log`; [`TestCluster::log`] reads it.

mod cluster;
mod http;

pub use cluster::{ClusterSpec, TestCluster};
pub use http::{AdminClient, AdminError};

/// A free TCP port on 127.0.0.1 whose UDP twin is free too.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free TCP port");
        let port = tcp.local_addr().expect("local addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
