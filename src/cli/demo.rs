//! `colony demo`: a local 3-node cluster that loses a node and gets it back.

use std::time::Duration;

use anyhow::{Context, bail};
use colony_runtime::MemberState;
use colony_runtime::testkit::{ClusterSpec, TestCluster};

use super::status::table;

const NODES: usize = 3;

pub fn run() -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("find the colony binary")?;
    println!(
        "Starting {NODES} node processes on 127.0.0.1 with temporary homes and a common shared home..."
    );
    let mut cluster =
        TestCluster::start(ClusterSpec::new(binary, NODES)).context("start the nodes")?;
    let all = cluster.all();
    for i in &all {
        println!(
            "  {} listens on {} (admin {})",
            cluster.name(*i),
            cluster.addr(*i),
            cluster.admin_addr(*i)
        );
    }
    println!("  shared home: {}", cluster.shared_home().display());

    let Some(took) = cluster.wait_converged(&all, Duration::from_secs(20)) else {
        bail!(
            "the nodes did not converge within 20 s; their logs:\n{}",
            logs(&cluster)
        );
    };
    println!(
        "\nMembership converged in {} ms. As n1 sees it:",
        took.as_millis()
    );
    show(&cluster, 0);

    let victim = NODES - 1;
    println!("\nKilling {} with SIGKILL...", cluster.name(victim));
    cluster.kill(victim);
    let survivors: Vec<usize> = (0..victim).collect();
    let Some(took) = cluster.wait_until(Duration::from_secs(20), |c| {
        survivors
            .iter()
            .all(|&s| c.sees(s, victim, MemberState::Down))
    }) else {
        bail!(
            "the survivors did not mark {} down; their logs:\n{}",
            cluster.name(victim),
            logs(&cluster)
        );
    };
    println!(
        "Every survivor marked {} down after {} ms. As n1 sees it:",
        cluster.name(victim),
        took.as_millis()
    );
    show(&cluster, 0);
    println!(
        "n1 still has quorum (2 of 3): {}",
        cluster.status(0).is_some_and(|s| s.has_quorum)
    );

    println!(
        "\nRestarting {} on the same address and home...",
        cluster.name(victim)
    );
    cluster.restart(victim).context("restart the node")?;
    let Some(took) = cluster.wait_converged(&all, Duration::from_secs(20)) else {
        bail!(
            "{} did not rejoin; logs:\n{}",
            cluster.name(victim),
            logs(&cluster)
        );
    };
    println!(
        "{} rejoined after {} ms with a new id and a higher incarnation:",
        cluster.name(victim),
        took.as_millis()
    );
    show(&cluster, 0);

    println!("\nStopping every node gracefully (SIGTERM) and removing the temporary files.");
    for i in all.iter().rev() {
        cluster.terminate(*i, Duration::from_secs(10));
    }
    drop(cluster);
    println!("Done.");
    Ok(())
}

fn show(cluster: &TestCluster, i: usize) {
    match cluster.status(i) {
        Some(status) => print!("{}", table(&status)),
        None => println!("({} did not answer)", cluster.name(i)),
    }
}

fn logs(cluster: &TestCluster) -> String {
    cluster
        .all()
        .into_iter()
        .map(|i| format!("--- {} ---\n{}", cluster.name(i), cluster.log(i)))
        .collect()
}
