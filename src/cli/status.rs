//! `colony status`: in the terminal, the summary the cluster page (`GET /`) shows: members, the
//! consensus group, the locks this node serves, caches, executors and components.

use std::fmt::Write;
use std::net::SocketAddr;

use anyhow::bail;
use colony::actors::caches::report::CachesReport;
use colony::actors::locks::report::LocksReport;
use colony_runtime::testkit::AdminClient;
use colony_runtime::{ClusterStatus, ComponentStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Everything `status` prints: `/cluster` with each primitive's view beside it (`null` for a
/// view the node does not offer). The cluster's fields stay at the top level, as before the
/// views were added.
#[derive(Debug, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub cluster: ClusterStatus,
    pub locks: Option<LocksReport>,
    pub caches: Option<CachesReport>,
    pub executors: Option<Value>,
    pub components: Option<Vec<ComponentStatus>>,
}

pub fn run(admin: SocketAddr, json: bool, token: Option<String>) -> anyhow::Result<()> {
    let client = AdminClient::new(admin).with_token(token);
    let summary = Summary {
        cluster: client.cluster()?,
        locks: view(&client, "locks")?,
        caches: view(&client, "caches")?,
        executors: view(&client, "executors")?,
        components: view(&client, "components")?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", text(&summary));
    }
    Ok(())
}

/// `GET /{name}`, or `None` if the node has no such view.
fn view<T: DeserializeOwned>(client: &AdminClient, name: &str) -> anyhow::Result<Option<T>> {
    let (status, body) = client.get_text(name)?;
    match status {
        200 => Ok(Some(serde_json::from_str(&body)?)),
        404 => Ok(None),
        _ => bail!("GET /{name} answered {status}: {}", body.trim()),
    }
}

/// The summary as text: the cluster table, then one table per primitive.
pub fn text(s: &Summary) -> String {
    let mut out = table(&s.cluster);
    let name_of = |node: &str, name: &Option<String>| {
        name.clone().unwrap_or_else(|| {
            let member = s.cluster.members.iter().find(|m| m.id.to_string() == node);
            member.map_or_else(|| node.to_owned(), |m| m.name.clone())
        })
    };
    if let Some(locks) = &s.locks {
        let _ = writeln!(
            out,
            "\nlocks ({} held by this node's guards)",
            locks.held_by_this_node
        );
        if !locks.unanswered.is_empty() {
            let _ = writeln!(
                out,
                "not answering, their locks are missing: {}",
                locks.unanswered.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "{:<30} {:<12} {:<22} {:<10} {:<12} WAITERS",
            "NAME", "HOLDER", "TOKEN", "LEASE", "SERVED BY"
        );
        for l in &locks.served {
            let holder = l.holder.as_ref().map(|h| name_of(&h.node, &h.node_name));
            let waiters: Vec<String> = l
                .waiters
                .iter()
                .map(|w| name_of(&w.node, &w.node_name))
                .collect();
            let lease = l.lease_ends_in_ms.map(|ms| format!("{ms} ms"));
            let _ = writeln!(
                out,
                "{:<30} {:<12} {:<22} {:<10} {:<12} {}",
                l.name,
                holder.as_deref().unwrap_or("-"),
                l.token.as_deref().unwrap_or("-"),
                lease.as_deref().unwrap_or("-"),
                l.served_by.as_deref().unwrap_or("-"),
                waiters.join(", ")
            );
        }
    }
    if let Some(caches) = &s.caches {
        let _ = writeln!(
            out,
            "\ncaches\n{:<20} {:<14} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
            "NAME", "MODE", "SIZE", "HITS", "MISSES", "LOADS", "EVICTIONS", "UNACKED"
        );
        for c in &caches.caches {
            let st = &c.stats;
            let _ = writeln!(
                out,
                "{:<20} {:<14} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
                c.name,
                c.mode,
                c.size,
                st.hits,
                st.misses,
                st.loads,
                st.evictions,
                st.unacknowledged
            );
        }
    }
    if let Some(executors) = &s.executors {
        let _ = writeln!(
            out,
            "\nexecutors\n{:<30} {:>8} {:>8} {:>10} {:>10} {:>7} {:>5}",
            "NAME", "QUEUED", "BUCKETS", "IN-PROCESS", "SUCCEEDED", "FAILED", "DEAD"
        );
        let empty = Vec::new();
        for e in executors["executors"].as_array().unwrap_or(&empty) {
            let n = |k: &str| e["stats"][k].to_string();
            let _ = writeln!(
                out,
                "{:<30} {:>8} {:>8} {:>10} {:>10} {:>7} {:>5}",
                e["name"].as_str().unwrap_or("?"),
                n("queued"),
                n("buckets"),
                n("in_process"),
                n("succeeded"),
                n("failed"),
                n("dead_letters")
            );
        }
    }
    if let Some(components) = &s.components {
        let _ = writeln!(out, "\ncomponents\n{:<30} {:<8} RUNNING", "NAME", "ENABLED");
        let yes = |b: bool| if b { "yes" } else { "no" };
        for c in components {
            let _ = writeln!(
                out,
                "{:<30} {:<8} {}",
                c.name,
                yes(c.enabled),
                yes(c.running)
            );
        }
    }
    out
}

/// The cluster as a text table, one member a row, then the consensus group.
pub fn table(status: &ClusterStatus) -> String {
    let mut out = format!(
        "node {} ({})  quorum: {} ({} of {} needed)\n",
        status.name,
        status.id,
        if status.has_quorum { "yes" } else { "NO" },
        status.quorum,
        status.cluster_size,
    );
    out.push_str(&format!(
        "{:<38} {:<12} {:<22} {:<8} {}\n",
        "ID", "NAME", "ADDRESS", "STATE", "INCARNATION"
    ));
    for m in &status.members {
        out.push_str(&format!(
            "{:<38} {:<12} {:<22} {:<8} {}\n",
            m.id.to_string(),
            m.name,
            m.addr.to_string(),
            m.state.to_string(),
            m.incarnation
        ));
    }
    let c = &status.consensus;
    out.push_str(&format!(
        "consensus group {}  term {}  leader {}  commit {}  applied {}\n",
        if c.group.is_empty() {
            "(none yet)"
        } else {
            &c.group
        },
        c.term,
        c.leader.as_deref().unwrap_or("(none)"),
        c.commit,
        c.applied,
    ));
    for r in c
        .voters
        .iter()
        .map(|r| (r, "voter"))
        .chain(c.learners.iter().map(|r| (r, "learner")))
    {
        let name = status
            .members
            .iter()
            .find(|m| format!("{:x}", m.replica) == *r.0)
            .map_or("?", |m| m.name.as_str());
        let lag = c
            .lag
            .get(r.0)
            .map_or(String::new(), |l| format!("  lag {l}"));
        out.push_str(&format!("  {:<18} {:<12} {}{}\n", r.0, name, r.1, lag));
    }
    if let Some(problem) = &c.problem {
        out.push_str(&format!("  problem: {problem}\n"));
    }
    out
}
