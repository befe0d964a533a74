//! `colony components`: a node's components, and the cluster-wide switch.

use std::net::SocketAddr;

use anyhow::bail;
use colony_runtime::ComponentStatus;
use colony_runtime::testkit::AdminClient;

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// The node's components: the cluster's switch and whether each runs there.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Switch a component on, on every node.
    Enable {
        /// The component's name.
        name: String,
    },
    /// Switch a component off, on every node.
    Disable {
        /// The component's name.
        name: String,
    },
}

pub fn run(admin: SocketAddr, token: Option<String>, action: Action) -> anyhow::Result<()> {
    let client = AdminClient::new(admin).with_token(token);
    let (path, verb) = match &action {
        Action::List { json } => {
            let (status, body) = client.get_text("components")?;
            if status != 200 {
                bail!("{admin} answered {status}: {}", body.trim());
            }
            let components: Vec<ComponentStatus> = serde_json::from_str(&body)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&components)?);
            } else {
                print!("{}", table(&components));
            }
            return Ok(());
        }
        Action::Enable { name } => (format!("components/{name}/enable"), "enabled"),
        Action::Disable { name } => (format!("components/{name}/disable"), "disabled"),
    };
    let (status, body) = client.post_text(&path)?;
    if status != 200 {
        bail!("{admin} answered {status}: {}", body.trim());
    }
    println!("{verb} on every node");
    Ok(())
}

fn table(components: &[ComponentStatus]) -> String {
    let mut out = format!(
        "{:<32} {:<9} {:<8} {}\n",
        "NAME", "ENABLED", "RUNNING", "CLUSTER-COMPATIBLE"
    );
    for c in components {
        out.push_str(&format!(
            "{:<32} {:<9} {:<8} {}\n",
            c.name, c.enabled, c.running, c.cluster_compatible
        ));
    }
    out
}
