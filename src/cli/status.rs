//! `colony status`.

use std::net::SocketAddr;

use colony_runtime::ClusterStatus;
use colony_runtime::testkit::AdminClient;

pub fn run(admin: SocketAddr, json: bool, token: Option<String>) -> anyhow::Result<()> {
    let status = AdminClient::new(admin).with_token(token).cluster()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", table(&status));
    }
    Ok(())
}

/// The status as a text table, one member a row.
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
