//! The JSON bodies of `/cluster` and `/faults`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::membership::Member;
use crate::node::Node;

/// The body of `GET /cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub id: String,
    /// This node's name.
    pub name: String,
    /// Whether this node sees a quorum of the cluster up.
    pub has_quorum: bool,
    /// Nodes needed for quorum.
    pub quorum: usize,
    /// The configured cluster size.
    pub cluster_size: usize,
    /// Every known member, this node first.
    pub members: Vec<Member>,
    /// The consensus group as this node sees it.
    pub consensus: ConsensusReport,
    /// Why this node is locked for maintenance, if it is (see `Node::maintenance`).
    #[serde(default)]
    pub maintenance: Option<String>,
}

/// The consensus group in `GET /cluster`. Member ids are hexadecimal strings (they exceed the
/// integers JavaScript holds exactly).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConsensusReport {
    /// This node's member id.
    pub replica: String,
    /// The group's id (empty: not in a group yet).
    pub group: String,
    /// The current term.
    pub term: u64,
    /// The leader's member id, if one is known.
    pub leader: Option<String>,
    /// Voting members.
    pub voters: Vec<String>,
    /// Members that follow without voting.
    pub learners: Vec<String>,
    /// The outgoing voters while a joint configuration change is under way (empty otherwise).
    #[serde(default)]
    pub outgoing: Vec<String>,
    /// Highest index known committed.
    pub commit: u64,
    /// Highest index applied on this node.
    pub applied: u64,
    /// Entries each member is behind the leader's commit (reported by the leader only).
    pub lag: std::collections::BTreeMap<String, u64>,
    /// This node's liveness epoch, while in force.
    pub epoch: Option<u64>,
    /// Milliseconds left of this node's entitlement to act on its slots.
    pub entitled_ms: Option<u64>,
    /// Why this node takes no part, if it does not (disagreeing settings, a failed store).
    pub problem: Option<String>,
    /// Snapshots of the state this node made (its log is compacted behind each).
    #[serde(default)]
    pub snapshots: u64,
    /// Snapshots this node received from a leader and installed, having fallen behind its log.
    #[serde(default)]
    pub installed: u64,
    /// The member serving each slot of the lock names (`None`: nobody yet), by slot number.
    #[serde(default)]
    pub lock_slots: Vec<Option<String>>,
}

impl ConsensusReport {
    /// The report of `node` now.
    pub fn of(node: &Node) -> Self {
        let s = node.group().status();
        let hex = |r: &crate::consensus::ReplicaId| format!("{:x}", r.0);
        let now = std::time::Instant::now();
        ConsensusReport {
            replica: hex(&s.replica),
            group: if s.group == 0 {
                String::new()
            } else {
                format!("{:x}", s.group)
            },
            term: s.term,
            leader: s.leader.as_ref().map(hex),
            voters: s.voters.iter().map(hex).collect(),
            learners: s.learners.iter().map(hex).collect(),
            outgoing: s.outgoing.iter().map(hex).collect(),
            commit: s.commit,
            applied: s.applied,
            lag: s
                .progress
                .iter()
                .map(|(r, matched)| (hex(r), s.commit.saturating_sub(*matched)))
                .collect(),
            epoch: s.epoch,
            entitled_ms: s
                .entitlement
                .map(|e| e.until.saturating_duration_since(now).as_millis() as u64),
            problem: s
                .failed
                .clone()
                .or_else(|| s.disagreement.as_ref().map(ToString::to_string)),
            snapshots: s.stats.snapshots,
            installed: s.stats.installed,
            lock_slots: s
                .state
                .slots
                .get(&crate::consensus::Domain::Locks)
                .map(|slots| {
                    slots
                        .iter()
                        .map(|x| x.owner.map(|(r, _)| hex(&r)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl ClusterStatus {
    /// The status of `node` now.
    pub fn of(node: &Node) -> Self {
        ClusterStatus {
            id: node.id().to_string(),
            name: node.name().to_owned(),
            has_quorum: node.has_quorum(),
            quorum: node.config().quorum,
            cluster_size: node.config().cluster_size,
            members: node.members(),
            consensus: ConsensusReport::of(node),
            maintenance: node.maintenance().map(str::to_owned),
        }
    }
}

/// The body of `POST /faults`: the addresses to cut this node off from; empty heals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Faults {
    /// `host:port` addresses of the nodes to cut off.
    pub blocked: Vec<SocketAddr>,
}
