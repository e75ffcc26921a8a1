//! The Mainline DHT (BEP 5) between processes on 127.0.0.1: `toybt dht` answers KRPC from any UDP socket, and a
//! trackerless torrent is found through twenty `toybt dht` nodes by a magnet link that names nothing but its hash.
//! Every node here is bootstrapped from another one on this machine: nothing reaches the public routers.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::dht::{assert_leech_completes, dht_network, dht_node, toybt_dht_leech, toybt_dht_seed, wait_announced};
use common::pseudo_random_bytes;
use common::swarm::{self as sw, STEP};

/// From `leech MAGNET` to done: find the seed through the DHT (the lookup starts once the bootstrap node answers),
/// fetch the metadata, then the data.
const DONE: Duration = Duration::from_secs(120);
/// How long a ping may go unanswered in all (each try waits `PING_WAIT`).
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const PING_WAIT: Duration = Duration::from_millis(500);
const NODES: usize = 20;
/// The flood: packets in all, and the source addresses they come from (127.0.0.2 up to this last byte).
const FLOOD_PACKETS: usize = 10_000;
const FLOOD_LAST_SOURCE: u8 = 250;
/// Bounds through the flood (the issue's): peak RSS, and how long a correct ping may wait for its answer.
const MAX_PEAK_RSS_KIB: u64 = 64 * 1024;
const FLOODED_PING_WITHIN: Duration = Duration::from_secs(1);
/// A ping under the flood is sent again this often (the kernel may drop a datagram when the node's buffer is full).
const FLOODED_PING_RESEND: Duration = Duration::from_millis(100);

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
    let nodes = dht_network(&dir.path().join("nodes"), NODES);

    // A torrent with no tracker at all: the DHT is the only way to its seed.
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let content = share.join("trackerless.bin");
    let data = pseudo_random_bytes(3 << 20, 41);
    std::fs::write(&content, &data).unwrap();
    let torrent = sw::create_torrent(&content, &dir.path().join("t.torrent"), "64K", None);
    let seed = toybt_dht_seed(&torrent.path, &content, nodes[1].1, &dir.path().join("seed-dht.dat"));
    seed.wait_line("dht listening on", STEP);
    // The leech starts once the seed is announced: a lookup running alongside the seed's own may end before the
    // announce is stored, and the next one is many minutes away.
    let hex = torrent.hex_hash();
    wait_announced(&seed, &hex);
    let link = format!("magnet:?xt=urn:btih:{hex}");
    let out = dir.path().join("leech");
    let mut leech = toybt_dht_leech(&link, &out, nodes[2].1, &dir.path().join("leech-dht.dat"));
    assert_leech_completes(&mut leech, DONE);
    let got = std::fs::read(out.join("trackerless.bin")).unwrap();
    assert!(got == data, "the download is byte for byte the seed's file ({} of {} bytes)", got.len(), data.len());
    assert!(dir.path().join("leech-dht.dat").exists(), "the leech saved its routing table");
    drop(seed);
}

/// The flood's packet number `i`: garbage, truncated bencode, absurd lengths, an unknown query and valid queries
/// (ping, find_node, get_peers, announce_peer with a token never given), in turn.
fn flood_packet(i: usize, rng: &mut u64) -> Vec<u8> {
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                // xorshift64: cheap bytes that differ from packet to packet.
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                *rng as u8
            })
            .collect()
    };
    let tid = [b'f', (i % 251) as u8];
    let query = |q: &str, args: &[u8]| -> Vec<u8> {
        let mut m = b"d1:ad2:id20:toybt-test-flooder-0001".to_vec();
        m.extend_from_slice(args);
        m.extend_from_slice(format!("e1:q{}:{q}1:t2:", q.len()).as_bytes());
        m.extend_from_slice(&tid);
        m.extend_from_slice(b"1:y1:qe");
        m
    };
    let with_20 = |key: &str, bytes: Vec<u8>| -> Vec<u8> {
        let mut a = format!("{}:{key}20:", key.len()).into_bytes();
        a.extend_from_slice(&bytes);
        a
    };
    match i % 8 {
        0 => random(1 + i % 1400),
        1 => {
            let full = query("get_peers", &with_20("info_hash", random(20)));
            full[..i % full.len()].to_vec()
        }
        2 => b"d1:ad2:id999999999:".to_vec(),
        3 => query("vote", b""),
        4 => query("ping", b""),
        5 => query("find_node", &with_20("target", random(20))),
        6 => query("get_peers", &with_20("info_hash", random(20))),
        _ => {
            let mut a = with_20("info_hash", random(20));
            a.extend_from_slice(b"4:porti6881e5:token8:notgiven");
            query("announce_peer", &a)
        }
    }
}

/// Pings `node` from a fresh socket, again every `FLOODED_PING_RESEND`, until the answer with our transaction id
/// comes; returns how long it took, or None past `FLOODED_PING_WITHIN`.
fn ping_answered_within_a_second(node: SocketAddr, round: u16) -> Option<Duration> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(FLOODED_PING_RESEND)).unwrap();
    let tid = round.to_be_bytes();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < FLOODED_PING_WITHIN {
        sock.send_to(&ping(&tid), node).unwrap();
        let resend_at = Instant::now() + FLOODED_PING_RESEND;
        while Instant::now() < resend_at {
            // A timeout means it is time to send again.
            let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
            let mut want = b"1:t2:".to_vec();
            want.extend_from_slice(&tid);
            if from == node && contains(&buf[..n], &want) && contains(&buf[..n], b"1:y1:r") {
                return Some(start.elapsed());
            }
        }
    }
    None
}

/// The peak resident set of process `pid` in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("a VmHWM line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmHWM in kB")
}

#[test]
fn a_flood_of_10000_packets_from_249_addresses_neither_kills_the_node_nor_grows_it_and_a_ping_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, addr) = dht_node("flooded", dir.path(), None);
    ping_until_answered(addr);
    let sources: Vec<UdpSocket> = (2..=FLOOD_LAST_SOURCE)
        .map(|b| UdpSocket::bind(("127.0.0.".to_string() + &b.to_string(), 0)).unwrap())
        .collect();
    let flood = std::thread::spawn(move || {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut sent = 0;
        for i in 0..FLOOD_PACKETS {
            // A full socket buffer may refuse a datagram now and then; the count says how many went out.
            if sources[i % sources.len()].send_to(&flood_packet(i, &mut rng), addr).is_ok() {
                sent += 1;
            }
        }
        sent
    });
    // Pings while the flood goes on, and once after it.
    let mut waits = Vec::new();
    let mut round = 0u16;
    while !flood.is_finished() || waits.is_empty() {
        round = round.wrapping_add(1);
        let wait = ping_answered_within_a_second(addr, round);
        assert!(wait.is_some(), "ping {round} under the flood not answered within {FLOODED_PING_WITHIN:?}");
        waits.extend(wait);
    }
    let sent = flood.join().unwrap();
    assert!(sent >= FLOOD_PACKETS * 9 / 10, "the flood went out: {sent} of {FLOOD_PACKETS} datagrams");
    let after = ping_answered_within_a_second(addr, 0);
    assert!(after.is_some(), "a ping after the flood not answered within {FLOODED_PING_WITHIN:?}");
    assert!(node.child.try_wait().unwrap().is_none(), "the node is still running:\n{}", node.output());
    let peak = peak_rss_kib(node.child.id());
    let slowest = waits.iter().max().unwrap();
    eprintln!(
        "flood: {sent} datagrams; {} pings during it answered in at most {slowest:?}, one after in {after:?}; peak RSS {peak} KiB",
        waits.len()
    );
    assert!(peak < MAX_PEAK_RSS_KIB, "peak RSS {peak} KiB under the flood (bound {MAX_PEAK_RSS_KIB} KiB)");
    node.terminate();
    sw::assert_exits_0(&mut node, STEP);
}
