//! Settings that every node of a cluster must share, recorded in the group when it is founded.

use serde::{Deserialize, Serialize};

/// The settings recorded in the consensus group. A node whose own configuration disagrees is
/// refused at join, with the setting's name and both values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// How many nodes the cluster is meant to have.
    pub cluster_size: u32,
    /// How many up members make a quorum in the membership view.
    pub quorum: u32,
    /// The lock lease, in milliseconds: a grant lasts at most this long without renewal, and a
    /// node's entitlement to grant lasts this long after its last committed heartbeat.
    pub lock_lease_ms: u64,
    /// SWIM probe period, in milliseconds.
    pub probe_period_ms: u64,
    /// SWIM direct-probe timeout, in milliseconds.
    pub probe_rtt_ms: u64,
    /// SWIM suspicion before down, in milliseconds.
    pub suspect_to_down_ms: u64,
}

/// A setting on which a node and its cluster disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused by the cluster: setting `{name}` is {ours} on this node but {cluster} in the cluster; start the node with the cluster's value"
)]
pub struct Disagreement {
    /// The setting's name, as in the configuration file.
    pub name: &'static str,
    /// This node's value.
    pub ours: String,
    /// The cluster's value.
    pub cluster: String,
}

impl ClusterSettings {
    /// The first setting on which `self` (this node's) differs from `cluster`'s.
    ///
    /// # Examples
    /// ```
    /// use colony_runtime::consensus::ClusterSettings;
    /// let cluster = ClusterSettings {
    ///     cluster_size: 3, quorum: 2, lock_lease_ms: 5000,
    ///     probe_period_ms: 400, probe_rtt_ms: 150, suspect_to_down_ms: 1200,
    /// };
    /// let ours = ClusterSettings { lock_lease_ms: 1500, ..cluster.clone() };
    /// let d = ours.disagreement(&cluster).unwrap();
    /// assert_eq!((d.name, d.ours.as_str(), d.cluster.as_str()), ("lock_lease_ms", "1500", "5000"));
    /// assert!(cluster.disagreement(&cluster).is_none());
    /// ```
    pub fn disagreement(&self, cluster: &ClusterSettings) -> Option<Disagreement> {
        let pairs: [(&'static str, u64, u64); 6] = [
            (
                "cluster_size",
                self.cluster_size.into(),
                cluster.cluster_size.into(),
            ),
            ("quorum", self.quorum.into(), cluster.quorum.into()),
            ("lock_lease_ms", self.lock_lease_ms, cluster.lock_lease_ms),
            (
                "probe_period_ms",
                self.probe_period_ms,
                cluster.probe_period_ms,
            ),
            ("probe_rtt_ms", self.probe_rtt_ms, cluster.probe_rtt_ms),
            (
                "suspect_to_down_ms",
                self.suspect_to_down_ms,
                cluster.suspect_to_down_ms,
            ),
        ];
        pairs
            .into_iter()
            .find(|(_, ours, theirs)| ours != theirs)
            .map(|(name, ours, theirs)| Disagreement {
                name,
                ours: ours.to_string(),
                cluster: theirs.to_string(),
            })
    }
}
