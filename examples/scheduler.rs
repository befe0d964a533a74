//! The seeds' reminder job on a three-node cluster in one process: every node registers the
//! reminder runner, one node schedules "send reminders every 5 minutes, once per cluster",
//! and each due time runs on exactly one node, with no cluster lock and no "already ran"
//! flag around it: a fire is a record the consensus group applied once, and the run carries
//! that fire's fencing token for what it writes.
//!
//! Run it with `cargo run --example scheduler`. The first reminder is due 2 s after start, the
//! next ones every 5 minutes; the example waits for the first, shows which node ran it, and
//! stops. See `docs/scheduler.md`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use colony::{JobConfig, JobOutcome, JobRequest, Node, Schedule, SchedulerExt};

/// What the reminder runs write: each reminder batch with the token of the run that sent it.
/// A write with a token below the last one comes from a run that lost its fire: refused.
#[derive(Default)]
struct Outbox {
    sent: Vec<(String, u64)>,
    last_token: u64,
}

impl Outbox {
    fn send(&mut self, node: &str, token: u64) -> Result<(), String> {
        if token <= self.last_token {
            return Err(format!("stale token {token}: a newer run already sent"));
        }
        self.last_token = token;
        self.sent.push((node.to_owned(), token));
        Ok(())
    }
}

/// A free local address (the first node's is the others' seed, picked before any starts).
fn free_addr() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

async fn start(
    name: &str,
    bind: std::net::SocketAddr,
    seeds: &[std::net::SocketAddr],
    home: &std::path::Path,
) -> Result<Node, colony::StartError> {
    colony::node()
        .name(name)
        .home(home)
        .bind(bind)
        .cookie("example-cookie")
        .cluster_size(3)
        .seeds(seeds)
        .start()
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addrs = [free_addr()?, free_addr()?, free_addr()?];
    let homes = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    // Started together: each waits for the cluster to form.
    let (a, b, c) = tokio::join!(
        start("alpha", addrs[0], &[], homes[0].path()),
        start("beta", addrs[1], &addrs[..1], homes[1].path()),
        start("gamma", addrs[2], &addrs[..1], homes[2].path()),
    );
    let nodes = [a?, b?, c?];
    println!("three nodes up: alpha, beta, gamma");

    let outbox = Arc::new(Mutex::new(Outbox::default()));
    for node in &nodes {
        // Every node can run reminders: the cluster picks one per due time.
        let (name, outbox) = (node.name().to_owned(), outbox.clone());
        node.scheduler()
            .register_job_runner("reminders", move |r: JobRequest| {
                let (name, outbox) = (name.clone(), outbox.clone());
                async move {
                    println!(
                        "{name}: sending the reminders due at {:?} (token {}, attempt {})",
                        r.scheduled, r.token, r.attempt
                    );
                    outbox.lock().unwrap().send(&name, r.token)?;
                    Ok::<JobOutcome, String>(JobOutcome::success())
                }
            })?;
    }

    // Scheduling again (say, every node at its start) replaces the job: still one job.
    let every_5_minutes = Schedule::interval(
        Duration::from_secs(300),
        SystemTime::now() + Duration::from_secs(2),
    )?;
    for node in &nodes {
        let config = JobConfig::for_runner("reminders").schedule(every_5_minutes.clone());
        node.scheduler()
            .schedule_job("send-reminders", config)
            .await?;
    }

    while outbox.lock().unwrap().sent.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give any other node the chance to send too: none will.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = outbox.lock().unwrap().sent.clone();
    assert_eq!(
        sent.len(),
        1,
        "one run per due time in the cluster: {sent:?}"
    );
    let scheduler = nodes[0].scheduler();
    let details = scheduler.job_details("send-reminders").expect("scheduled");
    println!("next reminders at {:?}", details.next_run);
    println!(
        "the three after that: {:?}",
        scheduler.next_run_times(
            &every_5_minutes,
            details.next_run.unwrap_or(SystemTime::now()),
            3
        )
    );
    for run in scheduler.run_history("send-reminders").unwrap_or_default() {
        println!("history: {run:?}");
    }
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
