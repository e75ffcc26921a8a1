//! The Mainline DHT (BEP 5) between processes on 127.0.0.1: `toybt dht` answers KRPC from any UDP socket, and a
//! trackerless torrent is found through twenty `toybt dht` nodes by a magnet link that names nothing but its hash.
//! Every node here is bootstrapped from another one on this machine: nothing reaches the public routers.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::dht::{dht_network, dht_node};
use common::swarm::{self as sw, STEP};
use common::{Proc, pseudo_random_bytes};

/// From `leech MAGNET` to done: find the seed through the DHT (the lookup starts once the bootstrap node answers),
/// fetch the metadata, then the data.
const DONE: Duration = Duration::from_secs(120);
/// How long a ping may go unanswered in all (each try waits `PING_WAIT`).
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const PING_WAIT: Duration = Duration::from_millis(500);
const NODES: usize = 20;

/// A KRPC ping with transaction id `t`, bencoded by hand (BEP 5): `{"a": {"id": ID}, "q": "ping", "t": T, "y": "q"}`.
fn ping(t: &[u8; 2]) -> Vec<u8> {
    let mut q = b"d1:ad2:id20:".to_vec();
    q.extend_from_slice(b"toybt-test-pinger-01");
    q.extend_from_slice(b"e1:q4:ping1:t2:");
    q.extend_from_slice(t);
    q.extend_from_slice(b"1:y1:qe");
    q
}

/// Pings `node` from a fresh socket until an answer comes (a datagram may be lost); returns the answer.
fn ping_until_answered(node: SocketAddr) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(PING_WAIT)).unwrap();
    let deadline = Instant::now() + PING_TIMEOUT;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        sock.send_to(&ping(b"pq"), node).unwrap();
        // Wait for the answer on the socket; a timeout means it is time to send again.
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(from, node, "the answer comes from the node's address");
            return buf[..n].to_vec();
        }
    }
    panic!("{node} did not answer a ping within {PING_TIMEOUT:?}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn toybt_dht_prints_where_it_listens_answers_a_ping_and_saves_its_table_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, addr) = dht_node("node", dir.path(), None);
    let answer = ping_until_answered(addr);
    let text = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with(b"d") && answer.ends_with(b"e"), "a bencoded dictionary: {text}");
    assert!(contains(&answer, b"1:y1:r"), "a response: {text}");
    assert!(contains(&answer, b"1:t2:pq"), "our transaction id echoed: {text}");
    assert!(contains(&answer, b"2:id20:"), "with the node's id: {text}");
    node.terminate();
    sw::assert_exits_0(&mut node, STEP);
    assert!(dir.path().join("node.dat").exists(), "the routing table is saved on exit");
}

#[test]
fn a_trackerless_magnet_completes_through_twenty_toybt_dht_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes_dir = dir.path().join("nodes");
    std::fs::create_dir_all(&nodes_dir).unwrap();
    let nodes = dht_network(&nodes_dir, NODES);

    // A torrent with no tracker at all: the DHT is the only way to its seed.
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let content = share.join("trackerless.bin");
    let data = pseudo_random_bytes(3 << 20, 41);
    std::fs::write(&content, &data).unwrap();
    let torrent = sw::create_torrent(&content, &dir.path().join("t.torrent"), "64K", None);
    let seed_args = [
        "seed",
        torrent.path.to_str().unwrap(),
        content.to_str().unwrap(),
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--dht-bootstrap",
        &nodes[1].1.to_string(),
        "--dht-state",
        dir.path().join("seed-dht.dat").to_str().unwrap(),
    ]
    .map(String::from);
    let seed = Proc::toybt("seed", &seed_args.iter().map(String::as_str).collect::<Vec<_>>());
    seed.wait_line("dht listening on", STEP);
    // The leech starts once the seed is announced: a lookup running alongside the seed's own may end before the
    // announce is stored, and the next one is many minutes away.
    let hex: String = torrent.info_hash.iter().map(|b| format!("{b:02x}")).collect();
    let announced = seed.wait_line(&format!("dht lookup for {hex} done"), STEP);
    assert!(!announced.contains("announced to 0 node"), "the seed is announced to some node: {announced}");
    let link = format!("magnet:?xt=urn:btih:{hex}");
    let out = dir.path().join("leech");
    let leech_args = [
        "leech",
        &link,
        "-o",
        out.to_str().unwrap(),
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--seed-time",
        "0",
        "--dht-bootstrap",
        &nodes[2].1.to_string(),
        "--dht-state",
        dir.path().join("leech-dht.dat").to_str().unwrap(),
    ]
    .map(String::from);
    let mut leech = Proc::toybt("leech", &leech_args.iter().map(String::as_str).collect::<Vec<_>>());
    leech.wait_line("metadata complete", DONE);
    sw::assert_exits_0(&mut leech, DONE);
    let t = sw::totals(&leech, STEP);
    assert!(t.complete && t.hash_failures == 0, "{t:?}");
    let got = std::fs::read(out.join("trackerless.bin")).unwrap();
    assert!(got == data, "the download is byte for byte the seed's file ({} of {} bytes)", got.len(), data.len());
    assert!(dir.path().join("leech-dht.dat").exists(), "the leech saved its routing table");
    drop(seed);
}
