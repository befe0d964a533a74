//! `colony status`.

use std::net::SocketAddr;

use colony_runtime::ClusterStatus;
use colony_runtime::testkit::AdminClient;

pub fn run(admin: SocketAddr, json: bool) -> anyhow::Result<()> {
    let status = AdminClient::new(admin).cluster()?;
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
    out
}
