//! The node's Prometheus metrics, served by the admin endpoint's `GET /metrics`.
//!
//! Each node has its own recorder, never the process-global one: several nodes in one process
//! (tests, embedders) keep their figures apart, and every series carries `node="<name>"`.
//! Counters that the layers already keep are copied into the recorder when scraped
//! (collectors); request latencies are recorded as they happen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Histogram, Key, Label, Metadata, Recorder, counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::Node;
use crate::membership::MemberState;

/// Copies one part's figures into the node's recorder when `/metrics` is scraped: it runs
/// with the node's recorder installed for the thread, so the `metrics` macros
/// (`counter!`, `gauge!`) inside it record there. It must not block.
pub type MetricsCollector = Arc<dyn Fn(&Node) + Send + Sync>;

/// Request latency buckets, in seconds: loopback round trips to multi-second timeouts.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub(crate) struct NodeMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    collectors: Mutex<Vec<MetricsCollector>>,
    latency: dashmap::DashMap<String, Histogram>,
}

impl NodeMetrics {
    /// A recorder whose every series is labelled `node="<name>"`.
    pub(crate) fn new(name: &str) -> Self {
        let recorder = PrometheusBuilder::new()
            .add_global_label("node", name)
            .set_buckets(&LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        NodeMetrics {
            recorder,
            handle,
            collectors: Mutex::new(vec![Arc::new(runtime_figures)]),
            latency: dashmap::DashMap::new(),
        }
    }

    pub(crate) fn add_collector(&self, collector: MetricsCollector) {
        self.collectors
            .lock()
            .expect("collectors lock")
            .push(collector);
    }

    /// Records one request's round trip to `service` (success or failure).
    pub(crate) fn request_took(&self, service: &str, took: Duration) {
        if let Some(h) = self.latency.get(service) {
            h.record(took.as_secs_f64());
            return;
        }
        let key = Key::from_parts(
            "colony_transport_request_seconds",
            vec![Label::new("service", service.to_owned())],
        );
        let metadata = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let histogram = self.recorder.register_histogram(&key, &metadata);
        histogram.record(took.as_secs_f64());
        self.latency.insert(service.to_owned(), histogram);
    }

    /// Runs every collector, then renders the Prometheus text exposition.
    pub(crate) fn render(&self, node: &Node) -> String {
        let collectors = self.collectors.lock().expect("collectors lock").clone();
        metrics::with_local_recorder(&self.recorder, || {
            for collect in &collectors {
                collect(node);
            }
        });
        self.handle.render()
    }
}

/// The runtime's own figures: membership, transport, consensus, events, admin refusals.
fn runtime_figures(node: &Node) {
    let stats = node.stats();
    let members = node.members();
    for state in [
        MemberState::Joining,
        MemberState::Up,
        MemberState::Suspect,
        MemberState::Down,
        MemberState::Leaving,
        MemberState::Left,
    ] {
        let n = members.iter().filter(|m| m.state == state).count();
        gauge!("colony_members", "state" => state.to_string()).set(n as f64);
    }
    gauge!("colony_quorum").set(if node.has_quorum() { 1.0 } else { 0.0 });
    let m = &stats.membership;
    counter!("colony_gossip_packets_total", "direction" => "in").absolute(m.packets_in);
    counter!("colony_gossip_packets_total", "direction" => "out").absolute(m.packets_out);
    for (why, n) in [
        ("malformed", m.malformed),
        ("bad_tag", m.bad_tag),
        ("swim_error", m.swim_errors),
    ] {
        counter!("colony_gossip_rejected_total", "reason" => why).absolute(n);
    }
    counter!("colony_gossip_refusals_received_total").absolute(m.refusals_received);
    let t = &stats.transport;
    counter!("colony_transport_requests_total").absolute(t.requests);
    counter!("colony_transport_request_failures_total").absolute(t.request_failures);
    counter!("colony_transport_handled_total").absolute(t.handled);
    counter!("colony_transport_bad_requests_total").absolute(t.bad_requests);
    counter!("colony_transport_busy_total").absolute(t.busy);
    counter!("colony_transport_handshake_failures_total").absolute(t.handshake_failures);
    counter!("colony_transport_refused_connections_total").absolute(t.refused_connections);
    counter!("colony_transport_forged_senders_total").absolute(t.forged_senders);
    counter!("colony_transport_link_dials_total").absolute(t.link_dials);
    counter!("colony_transport_bytes_total", "direction" => "in").absolute(t.bytes_in);
    counter!("colony_transport_bytes_total", "direction" => "out").absolute(t.bytes_out);
    gauge!("colony_transport_links").set(t.links as f64);
    let group = node.group().status();
    gauge!("colony_consensus_term").set(group.term as f64);
    gauge!("colony_consensus_commit_index").set(group.commit as f64);
    gauge!("colony_consensus_applied_index").set(group.applied as f64);
    let leader = group.leader.is_some_and(|l| l == group.replica);
    gauge!("colony_consensus_is_leader").set(if leader { 1.0 } else { 0.0 });
    gauge!("colony_consensus_has_leader").set(if group.leader.is_some() { 1.0 } else { 0.0 });
    let entitled = group
        .entitlement
        .is_some_and(|e| e.until > std::time::Instant::now());
    gauge!("colony_consensus_entitled").set(if entitled { 1.0 } else { 0.0 });
    let c = &stats.consensus;
    counter!("colony_consensus_leader_changes_total").absolute(c.leader_changes);
    counter!("colony_consensus_refused_total").absolute(c.refused);
    counter!("colony_consensus_failed_proposals_total").absolute(c.failed_proposals);
    counter!("colony_consensus_snapshots_total").absolute(c.snapshots);
    counter!("colony_consensus_snapshots_installed_total").absolute(c.installed);
    counter!("colony_events_published_total").absolute(stats.events_published);
    counter!("colony_events_dropped_total").absolute(stats.events_dropped);
    let a = &stats.admin;
    counter!("colony_admin_refused_total", "status" => "401").absolute(a.unauthorized);
    counter!("colony_admin_refused_total", "status" => "403").absolute(a.read_only_refused);
}
