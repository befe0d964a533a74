//! What reaches a node from the network without the cookie gets nowhere and breaks nothing, and
//! what comes with it cannot speak for another node. DESIGN: "Gossip packets carry a tag keyed
//! by the cluster cookie"; "nothing from the network may panic a node"; "The serving side knows
//! which peer its link authenticated and trusts no identity claimed inside a payload".

// Each async test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::common::locks::{self, LEASE_MS};
use crate::common::{RawLink, converged_cluster, join, logs, peer_id, serial, wait_voters};
use colony_runtime::NodeId;
use colony_runtime::consensus::core::encode_message;
use colony_runtime::consensus::group::RaftBatch;
use colony_runtime::wire::{self, Envelope, ErrorCode, PROTOCOL_VERSION};
use raft::eraftpb::{Entry, Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The transport port speaks links only: a connection whose first eight bytes are not a link's
/// opening (junk, or a frame header such as a ractor_cluster session would send) is counted and
/// hung up on as soon as those bytes arrive, and breaks nothing.
#[test]
fn junk_that_is_no_link_handshake_on_the_transport_port_is_counted_and_closed() {
    let _serial = serial();
    let cluster = converged_cluster(3);
    let target = cluster.addr(1);
    let before = stat(&cluster, 1, "transport", "handshake_failures");

    // Random bytes, then close.
    let mut junk = TcpStream::connect(target).unwrap();
    junk.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(64))
        .unwrap();
    drop(junk);
    // A frame header announcing 1000 bytes followed by 10, and one announcing more than any
    // node accepts, both held open: the node hangs up on them itself.
    let mut truncated = TcpStream::connect(target).unwrap();
    truncated.write_all(&1000u64.to_be_bytes()).unwrap();
    truncated.write_all(&[0u8; 10]).unwrap();
    let mut huge = TcpStream::connect(target).unwrap();
    huge.write_all(&u64::MAX.to_be_bytes()).unwrap();
    for held in [&mut truncated, &mut huge] {
        held.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let closed = held.read_to_end(&mut rest);
        assert!(
            matches!(closed, Ok(0))
                || closed
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "the node should hang up on bytes that are no link: {closed:?}"
        );
    }

    let counted = cluster.wait_until(Duration::from_secs(15), |c| {
        stat(c, 1, "transport", "handshake_failures") >= before + 3
    });
    assert!(
        counted.is_some(),
        "bad connections not counted: {:?}\n{}",
        cluster.admin(1).stats(),
        cluster.log(1)
    );
    // Refused for what they said, not for running out of time.
    assert!(
        cluster
            .log(1)
            .contains("did not open with a link handshake"),
        "{}",
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

fn echo(from: NodeId, payload: &[u8]) -> Envelope {
    Envelope {
        version: PROTOCOL_VERSION,
        request_id: 7,
        from,
        kind: "echo".into(),
        payload: payload.to_vec(),
    }
}

fn node_id(cluster: &colony_runtime::testkit::TestCluster, i: usize) -> NodeId {
    NodeId::parse(&cluster.status(i).expect("status").id).expect("a node id")
}

/// An envelope names its sender, but a node believes the connection: a link that proved the
/// cookie as one node and sends an envelope naming another is refused, counted and logged,
/// and the link stays usable for what it may say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_that_claims_another_sender_than_its_connection_is_refused_and_counted() {
    let _serial = serial();
    let cluster = tokio::task::block_in_place(|| converged_cluster(2));
    let forged =
        |c: &colony_runtime::testkit::TestCluster| stat(c, 1, "transport", "forged_senders");
    let before = forged(&cluster);
    let (victim, me) = (node_id(&cluster, 0), NodeId::random());

    // Over a link: the handshake named `me`, the envelope names node 0.
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut link = RawLink::open(cluster.addr(1), localhost, me).await.unwrap();
    let reply = link.call(&echo(victim, b"for node 0")).await;
    let error = reply.error.expect("a forged sender is refused");
    assert_eq!(error.code(), ErrorCode::BadRequest);
    assert!(
        error
            .to_string()
            .contains(&format!("authenticated node {me}")),
        "{error}"
    );
    assert_eq!(reply.ok, None);
    // The same link, speaking for itself, is answered.
    let reply = link.call(&echo(me, b"for me")).await;
    assert_eq!(
        (reply.error, reply.ok.as_deref()),
        (None, Some(&b"for me"[..]))
    );

    let counted = tokio::task::block_in_place(|| forged(&cluster));
    assert_eq!(counted, before + 1, "{}", cluster.log(1));
    assert!(
        cluster.log(1).contains("request refused"),
        "{}",
        cluster.log(1)
    );
}

/// Raises this process's open-file limit to `want` (or its hard limit): the test holds
/// thousands of sockets.
fn raise_open_files(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// Opens `n` connections to `target` from `addresses` loopback addresses (127.0.1.1 on), all
/// apart from the members' 127.0.0.1, and sends nothing.
async fn open_idle(target: SocketAddr, n: usize, addresses: u8) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(200) {
        let mut connecting = tokio::task::JoinSet::new();
        for &i in batch {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i % addresses as usize) as u8));
            connecting.spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(source, 0))?;
                socket.connect(target).await
            });
        }
        while let Some(done) = connecting.join_next().await {
            open.push(done.unwrap().expect("connect"));
        }
    }
    open
}

/// Sends `opening` at once, then one byte a second from 127.0.2.x; returns whether the node
/// hung up before ten bytes had gone.
async fn drip(target: SocketAddr, source: u8, opening: Vec<u8>) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(Ipv4Addr::new(127, 0, 2, source).into(), 0))
        .unwrap();
    let Ok(mut stream) = socket.connect(target).await else {
        return true;
    };
    if stream.write_all(&opening).await.is_err() {
        return true;
    }
    let mut scratch = [0; 64];
    for _ in 0..10 {
        // The node's answer to a slow sender is to close: a read that ends says so. Waiting a
        // second for it paces the drip.
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut scratch)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return true;
        }
        if stream.write_all(&[0]).await.is_err() {
            return true;
        }
    }
    false
}

/// Idle and slow connections that never authenticate take at most their capped slots for at
/// most the accept deadline: members' links and new member connections keep working
/// meanwhile, the refused connections are counted, and nothing is left once the junk closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_unauthenticated_connections_neither_stop_members_nor_linger() {
    let _serial = serial();
    raise_open_files(8192);
    let cluster = tokio::task::block_in_place(|| converged_cluster(3));
    let home = tempfile::tempdir().unwrap();
    let node = join(&cluster, home.path()).await;
    let (a, b) = (
        peer_id(&node, &cluster, 0).await,
        peer_id(&node, &cluster, 1).await,
    );
    let target = cluster.addr(1);
    let stats = |c: &colony_runtime::testkit::TestCluster| c.admin(1).stats().expect("stats");
    let before = tokio::task::block_in_place(|| stats(&cluster));

    // Slow senders: from the first byte, after naming a link, and after eight bytes that are
    // no link's (the node hangs up on those at once).
    let mut drips = tokio::task::JoinSet::new();
    for source in 1..=48u8 {
        let opening = match source % 3 {
            0 => Vec::new(),
            1 => b"COLONYL1".to_vec(),
            _ => 100u64.to_be_bytes().to_vec(),
        };
        drips.spawn(drip(target, source, opening));
    }
    // 2,000 idle connections from 40 addresses: more than the caps per address and overall.
    let idle = open_idle(target, 2000, 40).await;

    // Meanwhile members still answer, over the links they had...
    for round in 0..20u8 {
        let answers = node
            .request_each(
                &[a, b],
                "node",
                "echo",
                vec![round],
                Some(Duration::from_secs(5)),
            )
            .await;
        for answer in answers {
            assert_eq!(answer.expect("a member answers"), [round]);
        }
    }
    // ...and a new member connection from a member's address gets in past the full overall cap.
    let me = NodeId::random();
    let mut link = RawLink::open(target, IpAddr::V4(Ipv4Addr::LOCALHOST), me)
        .await
        .expect("a new link from a member's address");
    let reply = link.call(&echo(me, b"new")).await;
    assert_eq!(
        (reply.error, reply.ok.as_deref()),
        (None, Some(&b"new"[..]))
    );

    let during = tokio::task::block_in_place(|| stats(&cluster));
    let refused = during["transport"]["refused_connections"].as_u64().unwrap()
        - before["transport"]["refused_connections"].as_u64().unwrap();
    assert!(refused > 0, "{during}");
    let unauthenticated = during["transport"]["unauthenticated"].as_u64().unwrap();
    assert!(unauthenticated <= 256 + 32, "{during}");

    // Every slow sender was hung up on, by the deadline rather than by its own end.
    while let Some(hung_up) = drips.join_next().await {
        assert!(
            hung_up.unwrap(),
            "a slow sender was still open after ten seconds"
        );
    }
    drop((idle, link));
    let settled = tokio::task::block_in_place(|| {
        let tasks = before["tasks"].as_u64().unwrap();
        cluster.wait_until(Duration::from_secs(15), |c| {
            let now = stats(c);
            now["transport"]["unauthenticated"] == 0 && now["tasks"].as_u64().unwrap() <= tasks + 16
        })
    });
    assert!(
        settled.is_some(),
        "connections or tasks linger: before {before}, now {}",
        stats(&cluster)
    );
    let (failures_before, failures) = (
        before["transport"]["handshake_failures"].as_u64().unwrap(),
        stats(&cluster)["transport"]["handshake_failures"]
            .as_u64()
            .unwrap(),
    );
    assert!(failures >= failures_before + 48, "slow senders not counted");
    assert!(cluster.admin(1).healthy());
    // Membership never wavered: every process, and this one, still sees all four nodes up.
    let all = cluster.all();
    let up = |i: usize, j: usize| cluster.sees(i, j, colony_runtime::MemberState::Up);
    assert!(
        all.iter().all(|&i| all.iter().all(|&j| up(i, j))),
        "{}",
        logs(&cluster)
    );
    assert_eq!(node.up_members().len(), cluster.len() + 1);
    assert!(!cluster.log(1).contains("panicked"), "{}", cluster.log(1));
    node.shutdown().await;
}

/// A `raft` request to the `consensus` service: a batch of `messages` for `group`, naming
/// member `from` as its sender.
fn raft_request(sender: NodeId, group: u64, from: u64, messages: Vec<Vec<u8>>) -> Envelope {
    let batch = RaftBatch {
        group,
        from,
        messages: messages
            .into_iter()
            .map(serde_bytes::ByteBuf::from)
            .collect(),
    };
    Envelope {
        version: PROTOCOL_VERSION,
        request_id: 9,
        from: sender,
        kind: "raft".into(),
        payload: wire::encode_payload(&batch).unwrap(),
    }
}

/// A member id as `/cluster` prints it.
fn replica(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).expect("a hexadecimal member id")
}

/// Consensus messages no member sends, over links that proved the cookie: bytes that are no
/// batch, a garbage message, a truncated one, one without a term, one from an earlier term,
/// and a well-formed one from a node that is no member. None panics the node; all but the
/// stale one are refused and counted (the stale one is stepped and ignored), and the group
/// goes on granting and renewing locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_consensus_messages_are_refused_counted_and_harmless() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = tokio::task::block_in_place(|| {
        let cluster = locks::hammer(dir.path(), 3, &["steady", "still"], 1, LEASE_MS * 2);
        wait_voters(&cluster, 3);
        locks::assert_renewing(&cluster, 2, Duration::from_secs(30));
        cluster
    });
    let (target, sender) = (1, 0);
    let (report, member, member_node) = tokio::task::block_in_place(|| {
        (
            cluster.status(target).unwrap().consensus,
            replica(&cluster.status(sender).unwrap().consensus.replica),
            node_id(&cluster, sender),
        )
    });
    let (group, term, me) = (
        replica(&report.group),
        report.term,
        replica(&report.replica),
    );
    let refused =
        |c: &colony_runtime::testkit::TestCluster| stat(c, target, "consensus", "refused");
    let (refused_before, granted_before, renewed_before) = tokio::task::block_in_place(|| {
        (
            refused(&cluster),
            locks::total(&cluster),
            locks::renewed_holds(&cluster, LEASE_MS),
        )
    });

    let message = |kind: MessageType, term: u64| {
        let mut m = Message::default();
        m.set_msg_type(kind);
        (m.from, m.to, m.term) = (member, me, term);
        m
    };
    let mut append = message(MessageType::MsgAppend, term);
    append.set_entries(
        vec![Entry {
            index: 1,
            term,
            data: vec![7; 64].into(),
            ..Default::default()
        }]
        .into(),
    );
    let append = encode_message(&append);
    // The entries are the last field: cutting into them leaves a message that cannot decode.
    let truncated = append[..append.len() - 8].to_vec();

    // A link that proved the cookie naming itself the member `sender`.
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut link = RawLink::open(cluster.addr(target), localhost, member_node)
        .await
        .unwrap();
    let junk = Envelope {
        payload: b"\xc1 not a batch".to_vec(),
        ..raft_request(member_node, group, member, Vec::new())
    };
    let reply = link.call_service("consensus", &junk).await;
    assert_eq!(
        reply
            .error
            .expect("bytes that are no batch are refused")
            .code(),
        ErrorCode::BadRequest
    );
    let mut counted = 0;
    for bad in [
        vec![0xff; 40],
        truncated,
        encode_message(&message(MessageType::MsgHeartbeat, 0)),
        encode_message(&message(MessageType::MsgHeartbeat, term - 1)),
    ] {
        let request = raft_request(member_node, group, member, vec![bad]);
        let reply = link.call_service("consensus", &request).await;
        assert_eq!(
            reply.error, None,
            "a batch is taken; its messages are judged"
        );
        counted += 1;
    }
    // The stale heartbeat is stepped and ignored (unless the term was 1: then it has none).
    if term > 1 {
        counted -= 1;
    }
    // A well-formed message on a link that proved the cookie as a node that is no member.
    let stranger = NodeId::random();
    let mut other = RawLink::open(cluster.addr(target), localhost, stranger)
        .await
        .unwrap();
    let well_formed = encode_message(&message(MessageType::MsgHeartbeat, term));
    let reply = other
        .call_service(
            "consensus",
            &raft_request(stranger, group, member, vec![well_formed]),
        )
        .await;
    assert_eq!(reply.error, None);
    counted += 1;

    tokio::task::block_in_place(|| {
        let seen = cluster.wait_until(Duration::from_secs(10), |c| {
            refused(c) >= refused_before + counted
        });
        assert!(
            seen.is_some(),
            "refusals not counted: {} before, {} now, {counted} sent",
            refused_before,
            refused(&cluster)
        );
        // The group goes on: locks are granted and holds renewed after all that.
        assert!(
            locks::wait_progress(&cluster, granted_before, 6, Duration::from_secs(30)),
            "no locks granted after the bad messages:\n{}",
            logs(&cluster)
        );
        locks::assert_renewing(&cluster, renewed_before + 2, Duration::from_secs(30));
        let now = cluster.status(target).unwrap().consensus;
        assert_eq!(now.group, report.group);
        assert!(now.leader.is_some() && now.problem.is_none(), "{now:?}");
        assert!(
            !cluster.log(target).contains("panicked"),
            "{}",
            cluster.log(target)
        );
        locks::stop_and_check(cluster);
    });
}
