//! Cluster channels between node processes: every message reaches every other node once, in
//! its sender's order, never the sender itself, with the sender its link authenticated; a
//! message over the channel's limit is refused at the sender.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::serial;
use colony_runtime::testkit::TestCluster;
use serde_json::{Value, json};

const NODES: usize = 3;
const COUNT: u64 = 300;

fn events(cluster: &TestCluster) -> Vec<Value> {
    crate::common::histories(cluster, "log/chatter.jsonl")
}

#[test]
fn messages_reach_every_other_node_once_in_order_from_their_real_sender() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let workload = json!({
        "kind": "chatter", "channel": "chat", "peers": NODES - 1, "count": COUNT,
        "every_ms": 2, "max_bytes": 1024, "history": "log/chatter.jsonl",
    });
    let cluster = crate::common::cluster_with_workload(dir.path(), NODES, &workload);

    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let done: Vec<Value> = events(&cluster)
            .into_iter()
            .filter(|e| e["event"] == "done")
            .collect();
        if done.len() == NODES {
            break done;
        }
        assert!(
            Instant::now() < deadline,
            "only {} nodes finished",
            done.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Messages still on their way when the last sender finished: give them a moment.
    std::thread::sleep(Duration::from_millis(500));
    let all = events(&cluster);

    let oversized: Vec<&Value> = all.iter().filter(|e| e["event"] == "oversized").collect();
    assert_eq!(oversized.len(), NODES);
    assert!(
        oversized.iter().all(|e| e["refused"] == true),
        "{oversized:?}"
    );

    let unconfirmed: HashMap<String, u64> = done
        .iter()
        .map(|e| {
            let name = e["node"].as_str().unwrap().to_owned();
            (name, e["stats"]["unconfirmed"].as_u64().unwrap())
        })
        .collect();
    // Nothing failed here: almost every publish reached both peers (a rare timeout on a loaded
    // machine is allowed for, and accounted for below).
    for (node, n) in &unconfirmed {
        assert!(*n <= COUNT / 10, "{node}: {n} deliveries unconfirmed");
    }
    let mut by_pair: HashMap<(String, String), Vec<u64>> = HashMap::new();
    for e in all.iter().filter(|e| e["event"] == "received") {
        let (node, from) = (e["node"].as_str().unwrap(), e["from"].as_str().unwrap());
        assert_ne!(node, from, "a node received its own message: {e}");
        assert_eq!(
            e["claimed"], e["from"],
            "the sender is the authenticated one: {e}"
        );
        let n = e["n"].as_u64().unwrap();
        if n > 0 {
            by_pair
                .entry((node.to_owned(), from.to_owned()))
                .or_default()
                .push(n);
        }
    }
    assert_eq!(by_pair.len(), NODES * (NODES - 1), "every pair talked");
    for ((node, from), ns) in &by_pair {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{node} got {from}'s messages out of order or twice"
        );
        // At most once: each missing message is one the sender counted as unconfirmed.
        let missing = COUNT - ns.len() as u64;
        assert!(
            missing <= unconfirmed[from],
            "{node} missed {missing} of {from}'s messages, {from} counted {} unconfirmed",
            unconfirmed[from]
        );
    }
}
