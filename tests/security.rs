//! What reaches a node from the network without the cookie gets nowhere and breaks nothing.
//! DESIGN: "Gossip packets carry a tag keyed by the cluster cookie"; "nothing from the network
//! may panic a node".

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::{converged_cluster, logs, serial};

fn stat(cluster: &colony_runtime::testkit::TestCluster, i: usize, layer: &str, field: &str) -> u64 {
    cluster.admin(i).stats().expect("stats")[layer][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {layer}.{field}"))
}

#[test]
fn a_node_with_the_wrong_cookie_is_refused_and_never_listed() {
    let _serial = serial();
    let mut cluster = converged_cluster(3);
    let intruder = cluster.add_node("not-the-cookie").unwrap();
    let refused = cluster.wait_until(Duration::from_secs(15), |c| {
        c.log(intruder).contains("refused by the cluster")
    });
    assert!(
        refused.is_some(),
        "no clear refusal in the intruder's log:\n{}",
        cluster.log(intruder)
    );
    assert!(
        cluster.log(intruder).contains("cookie"),
        "the refusal should name the cookie:\n{}",
        cluster.log(intruder)
    );
    // The members counted and refused its packets...
    let counted = cluster.wait_until(Duration::from_secs(10), |c| {
        stat(c, 0, "membership", "bad_tag") > 0
    });
    assert!(counted.is_some(), "{}", logs(&cluster));
    // ...never listed it, and still agree among themselves.
    for i in 0..3 {
        let status = cluster.status(i).unwrap();
        assert!(
            status
                .members
                .iter()
                .all(|m| m.name != cluster.name(intruder)),
            "{} lists the intruder",
            cluster.name(i)
        );
        assert!(status.has_quorum);
    }
    assert!(cluster.converged(&[0, 1, 2]));
    // The intruder itself knows it is not in: it stays joining and unhealthy.
    assert!(!cluster.admin(intruder).healthy());
    assert_eq!(cluster.status(intruder).unwrap().members.len(), 1);
}

#[test]
fn junk_on_the_gossip_port_is_counted_and_harmless() {
    let _serial = serial();
    let cluster = converged_cluster(3);
    let target = cluster.addr(1);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rejected = |c: &colony_runtime::testkit::TestCluster| {
        stat(c, 1, "membership", "malformed") + stat(c, 1, "membership", "bad_tag")
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut junk = |len: usize| -> Vec<u8> {
        // xorshift: cheap, reproducible junk
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let mut packets: Vec<Vec<u8>> = (0..100usize).map(|n| junk((n * 37) % 2000)).collect();
    // Truncated and forged Colony-looking packets.
    packets.push(b"CO".to_vec());
    packets.push(b"CO\x01\x01".to_vec());
    packets.push(b"CO\x01\x01 forged body with a tag that cannot match".to_vec());
    // UDP may drop a burst on a busy machine: send in small batches and wait for each to count.
    let mut expected = rejected(&cluster);
    for batch in packets.chunks(10) {
        for p in batch {
            socket.send_to(p, target).unwrap();
        }
        expected += batch.len() as u64;
        let counted = cluster.wait_until(Duration::from_secs(10), |c| rejected(c) >= expected);
        assert!(
            counted.is_some(),
            "junk not counted: {:?}",
            cluster.admin(1).stats()
        );
    }
    assert!(
        stat(&cluster, 1, "membership", "bad_tag") >= 1,
        "the forged packet should fail its tag"
    );
    assert!(cluster.admin(1).healthy());
    assert!(cluster.converged(&cluster.all()), "{}", logs(&cluster));
}

#[test]
fn junk_and_truncated_frames_on_the_transport_port_are_counted_and_harmless() {
    let _serial = serial();
    let cluster = converged_cluster(3);
    let target = cluster.addr(1);
    let before = stat(&cluster, 1, "transport", "handshake_failures");

    // Random bytes, then close.
    let mut junk = TcpStream::connect(target).unwrap();
    junk.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(64))
        .unwrap();
    drop(junk);
    // A frame header announcing 1000 bytes followed by 10, held open: only a timeout ends it.
    let mut truncated = TcpStream::connect(target).unwrap();
    truncated.write_all(&1000u64.to_be_bytes()).unwrap();
    truncated.write_all(&[0u8; 10]).unwrap();
    // A frame header announcing more than the node accepts.
    let mut huge = TcpStream::connect(target).unwrap();
    huge.write_all(&u64::MAX.to_be_bytes()).unwrap();

    let counted = cluster.wait_until(Duration::from_secs(15), |c| {
        stat(c, 1, "transport", "handshake_failures") >= before + 3
    });
    assert!(
        counted.is_some(),
        "bad connections not counted: {:?}\n{}",
        cluster.admin(1).stats(),
        cluster.log(1)
    );
    drop((truncated, huge));
    assert!(cluster.admin(1).healthy());
    assert!(cluster.converged(&cluster.all()), "{}", logs(&cluster));
    assert!(!cluster.log(1).contains("panicked"), "{}", cluster.log(1));
}

/// A link opens with a challenge-response on the cookie: a client that cannot answer the
/// server's challenge is closed and counted, and so is one that names a link and falls silent.
#[test]
fn a_link_without_the_cookie_is_refused_and_counted() {
    let _serial = serial();
    let cluster = converged_cluster(2);
    let target = cluster.addr(1);
    let before = stat(&cluster, 1, "transport", "handshake_failures");

    let mut forger = TcpStream::connect(target).unwrap();
    forger
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    forger.write_all(b"COLONYL1").unwrap();
    forger.write_all(&[7; 32]).unwrap(); // an id and a nonce
    let mut challenge = [0; 64]; // the server's id, nonce and proof
    forger.read_exact(&mut challenge).unwrap();
    forger.write_all(&[0; 32]).unwrap(); // a proof it cannot make
    let mut rest = Vec::new();
    let closed = forger.read_to_end(&mut rest);
    assert!(
        matches!(closed, Ok(0)),
        "the server should hang up: {closed:?}"
    );

    // Names a link, then stays open and silent: refused when the handshake times out, not
    // when the stream ends.
    let mut mute = TcpStream::connect(target).unwrap();
    mute.write_all(b"COLONYL1").unwrap();

    let counted = cluster.wait_until(Duration::from_secs(15), |c| {
        stat(c, 1, "transport", "handshake_failures") >= before + 2
    });
    assert!(counted.is_some(), "{:?}", cluster.admin(1).stats());
    assert!(
        cluster.log(1).contains("link refused"),
        "{}",
        cluster.log(1)
    );
    assert!(
        cluster.log(1).contains("no handshake within the timeout"),
        "the silent link was not refused for its silence:\n{}",
        cluster.log(1)
    );
    // The server hung up on it.
    mute.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let closed = mute.read_to_end(&mut rest);
    assert!(
        matches!(closed, Ok(0)),
        "the server should hang up on the silent link: {closed:?}"
    );
    drop(mute);
    assert!(cluster.admin(1).healthy());
    assert!(cluster.converged(&cluster.all()), "{}", logs(&cluster));
}
