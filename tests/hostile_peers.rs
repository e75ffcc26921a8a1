//! Hostile peers against running `toybt seed` and `toybt leech` processes: malformed handshakes and messages,
//! out-of-range indices and lengths, unsolicited and corrupted blocks, a peer that stalls mid-block, floods of
//! keep-alives and of connections. After each, a correct peer of our own still gets a correct block.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Proc;
use common::clients::assert_same_tree;
use common::hostile::{self, Behaviour, Content, FakeSeed, Msg, Throttle, WirePeer, assert_serves_block, wire_bits};
use common::swarm::{self as sw, STEP};
use tempfile::TempDir;
use toybt::wire::{self, Handshake};

/// A daemon closes a connection that broke the protocol within this.
const CLOSE: Duration = Duration::from_secs(5);
const DONE: Duration = Duration::from_secs(60);
const PIECE: u32 = 32 * 1024;
/// Upload rate of the honest seed in tests with a bad peer.
const HONEST_RATE: u64 = 4 << 20;

/// A single-file torrent of 41 pieces of 32 KiB (two blocks each), the last one short, so the bitfield has spare
/// bits and the last piece has an odd size.
struct Fixture {
    dir: TempDir,
    torrent: PathBuf,
    data: PathBuf,
    content: Content,
}

fn fixture(prefix: &str) -> Fixture {
    fixture_of(prefix, 41, PIECE)
}

fn fixture_of(prefix: &str, pieces: usize, piece_len: u32) -> Fixture {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let bytes = common::pseudo_random_bytes(pieces * piece_len as usize - 1000, 77);
    let data = dir.path().join("seed").join("target.bin");
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    std::fs::write(&data, &bytes).unwrap();
    let t = sw::create_torrent(&data, &dir.path().join("target.torrent"), &format!("{}K", piece_len / 1024), None);
    let content = sw::content_of(&t, piece_len, bytes);
    Fixture { torrent: t.path, data, content, dir }
}

/// Without PEX, so it reaches peers only as a test arranges (the leecher would otherwise tell it of the others).
fn seed(f: &Fixture) -> (Proc, SocketAddr) {
    sw::seed("seed", &f.torrent, &f.data, &["--no-pex"])
}

/// Bytes sent after a correct handshake that must make the daemon close the connection.
fn bad_messages(c: &Content) -> Vec<(&'static str, Vec<u8>)> {
    let n = c.num_pieces();
    let last = n - 1;
    let bits = wire_bits(n, |_| true);
    let enc = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = Vec::new();
        f(&mut v);
        v
    };
    let mut spare = bits.clone();
    *spare.last_mut().unwrap() |= 1;
    vec![
        ("a length prefix of 0xFFFFFFFF", vec![0xFF; 4]),
        ("a length prefix of 0xFFFFFFFF on a piece", vec![0xFF, 0xFF, 0xFF, 0xFF, wire::id::PIECE]),
        ("a piece message longer than a block", enc(&|o| wire::encode_piece(o, 0, 0, &vec![0; 16 * 1024 + 1]))),
        ("a bitfield one byte short", enc(&|o| wire::encode_bitfield(o, &bits[1..]))),
        ("a bitfield one byte long", enc(&|o| wire::encode_bitfield(o, &[&bits[..], &[0]].concat()))),
        ("a bitfield with a spare bit set", enc(&|o| wire::encode_bitfield(o, &spare))),
        ("a have past the last piece", enc(&|o| wire::encode_have(o, n))),
        ("a have of piece 2^32-1", enc(&|o| wire::encode_have(o, u32::MAX))),
        ("a request past the last piece", enc(&|o| wire::encode_request(o, n, 0, 16 * 1024))),
        ("a request past the end of a piece", enc(&|o| wire::encode_request(o, 0, PIECE - 8192, 16 * 1024))),
        (
            "a request past the end of the short last piece",
            enc(&|o| wire::encode_request(o, last, 16 * 1024, 16 * 1024)),
        ),
        ("a request whose end overflows", enc(&|o| wire::encode_request(o, 0, u32::MAX - 100, 16 * 1024))),
        ("a request of 1 MiB", enc(&|o| wire::encode_request(o, 0, 0, 1 << 20))),
        ("a request of 32 KiB", enc(&|o| wire::encode_request(o, 0, 0, PIECE))),
        ("a request of 0 bytes", enc(&|o| wire::encode_request(o, 0, 0, 0))),
        ("a cancel past the last piece", enc(&|o| wire::encode_cancel(o, n + 7, 0, 16 * 1024))),
        ("a choke with a body", vec![0, 0, 0, 2, wire::id::CHOKE, 0]),
        ("a have of 3 bytes", vec![0, 0, 0, 4, wire::id::HAVE, 0, 0, 0]),
    ]
}

/// Handshakes that must be refused.
fn bad_handshakes(c: &Content) -> Vec<(&'static str, Vec<u8>)> {
    let good = |hash: [u8; 20]| {
        let mut v = Vec::new();
        Handshake::new(hash, hostile::test_peer_id(99)).encode(&mut v);
        v
    };
    let mut wrong_string = good(c.info_hash);
    wrong_string[19] = b'X';
    let mut wrong_len = good(c.info_hash);
    wrong_len[0] = 18;
    vec![
        ("a wrong protocol string", wrong_string),
        ("a wrong protocol length", wrong_len),
        ("a wrong info hash", good([0x42; 20])),
        ("an HTTP request", b"GET /announce?info_hash=x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("nothing but a length prefix", vec![0xFF; 4]),
    ]
}

/// Every bad handshake and bad message on a connection of its own: each must be closed, and the daemon must then
/// still serve piece `index` correctly.
fn assert_survives_malformed_input(addr: SocketAddr, c: &Content, index: u32) {
    for (what, bytes) in bad_handshakes(c) {
        let mut p = WirePeer::connect(addr, c.limits());
        p.send(&bytes).unwrap();
        assert!(p.closed_within(CLOSE), "{addr}: {what} did not close the connection");
    }
    for (i, (what, bytes)) in bad_messages(c).into_iter().enumerate() {
        let mut p = WirePeer::open(addr, c, i as u32);
        p.send(&bytes).unwrap();
        assert!(p.closed_within(CLOSE), "{addr}: {what} did not close the connection");
    }
    assert_serves_block(addr, c, index, 1000);
}

#[test]
fn seed_survives_malformed_handshakes_and_messages() {
    let f = fixture("toybt-hostile-seed");
    let (_seed, addr) = seed(&f);
    assert_survives_malformed_input(addr, &f.content, f.content.num_pieces() - 1);
    assert_serves_block(addr, &f.content, 7, 1001);
}

#[test]
fn leech_survives_malformed_handshakes_and_messages() {
    // A leecher halfway: our fake seed has (and serves honestly) only the first 20 pieces.
    let f = fixture("toybt-hostile-leech");
    let half = 20;
    let source = FakeSeed::start(&f.content, |i| i < half, Behaviour::Honest);
    let out = f.dir.path().join("leech");
    let (l, addr) = sw::leech("leech", &f.torrent, &out, &["--peer", &source.addr.to_string()]);
    l.wait_line("peer listening on", STEP);
    let mut watcher = WirePeer::open(addr, &f.content, 500);
    let mut has = 0;
    let deadline = Instant::now() + DONE;
    while has < half {
        match watcher.recv(deadline.saturating_duration_since(Instant::now())) {
            Ok(Msg::Have(_)) => has += 1,
            Ok(Msg::Bitfield(b)) => has = b.iter().map(|x| x.count_ones()).sum(),
            Ok(_) => {}
            Err(e) => panic!("waiting for the leecher's pieces: {e:?} after {has}"),
        }
    }
    assert_survives_malformed_input(addr, &f.content, half - 1);
    assert!(l.child.id() > 0 && l.count_lines("download complete") == 0, "still a leecher");
}

#[test]
fn unsolicited_pieces_do_not_touch_a_seeds_data() {
    let f = fixture("toybt-hostile-unsolicited");
    let (_seed, addr) = seed(&f);
    let mut p = WirePeer::open(addr, &f.content, 1);
    for index in 0..f.content.num_pieces() {
        for (begin, length) in f.content.blocks(index) {
            let junk = vec![0xEE; length as usize];
            p.send_with(|o| wire::encode_piece(o, index, begin, &junk)).unwrap();
        }
    }
    // The same connection goes on to be served.
    p.interested_until_unchoked(STEP).unwrap();
    let (begin, length) = f.content.blocks(3)[1];
    let got = p.request_block(3, begin, length, STEP).unwrap();
    assert!(got == f.content.block(3, begin, length));
    assert!(std::fs::read(&f.data).unwrap() == *f.content.data, "the seed's file changed");
}

#[test]
fn keepalive_flood_then_a_request_on_the_same_connection() {
    let f = fixture("toybt-hostile-keepalive");
    let (_seed, addr) = seed(&f);
    let mut p = WirePeer::open(addr, &f.content, 1);
    let t0 = Instant::now();
    let chunk = vec![0u8; 4 * 16_384];
    for _ in 0..64 {
        p.send(&chunk).unwrap(); // 1,048,576 keep-alives in all
    }
    p.interested_until_unchoked(STEP).unwrap();
    let (begin, length) = f.content.blocks(0)[0];
    assert!(p.request_block(0, begin, length, STEP).unwrap() == f.content.block(0, begin, length));
    eprintln!("a million keep-alives and a block in {:?}", t0.elapsed());
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_thousand_connections_held_open() {
    let f = fixture("toybt-hostile-thousand");
    let (s, addr) = seed(&f);
    let t0 = Instant::now();
    let mut held = Vec::new();
    let mut hs = Vec::new();
    Handshake::new(f.content.info_hash, hostile::test_peer_id(7)).encode(&mut hs);
    for i in 0..1000 {
        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else { continue };
        // Half of them greet properly and then say nothing more.
        if i % 2 == 0 {
            let _ = std::io::Write::write_all(&mut c, &hs);
        }
        held.push(c);
    }
    assert!(held.len() >= 900, "only {} of 1000 connections were made", held.len());
    assert_serves_block(addr, &f.content, 5, 1);
    let fds = open_fds(s.child.id());
    eprintln!("1000 connections held: {} made in {:?}, the seed has {fds} descriptors open", held.len(), t0.elapsed());
    assert!(fds < 150, "the seed holds {fds} descriptors for 1000 connections");
    drop(held);
    assert_serves_block(addr, &f.content, 6, 2);
}

/// A leecher of `f` that dials a bad peer and an honest `toybt seed`, exiting once done.
struct AmongLiars {
    leech: Proc,
    out: PathBuf,
    _honest: Proc,
    _link: Throttle,
}

/// The honest seed sits behind a slow link, so the transfer lasts long enough for the bad peer to take part however
/// fast the machine (an optimised seed would otherwise send everything before the fake peer's thread runs).
fn leech_among(f: &Fixture, bad: SocketAddr) -> AmongLiars {
    let (honest, honest_addr) = seed(f);
    let link = Throttle::start(honest_addr, HONEST_RATE);
    let out = f.dir.path().join("leech");
    let (bad, slow) = (bad.to_string(), link.addr.to_string());
    let leech = sw::leech("leech", &f.torrent, &out, &["--seed-time", "0", "--peer", &bad, "--peer", &slow]).0;
    AmongLiars { leech, out, _honest: honest, _link: link }
}

/// The leecher finishes with a correct copy; returns its totals.
fn finishes(f: &Fixture, l: &mut Proc, out: &std::path::Path) -> sw::Totals {
    let t0 = Instant::now();
    sw::assert_exits_0(l, DONE);
    let t = sw::totals(l, STEP);
    eprintln!("leecher done in {:?}: {t:?}", t0.elapsed());
    assert!(t.complete, "{t:?}");
    assert_same_tree(&f.data, &out.join("target.bin"));
    t
}

/// A leecher dialling a fake seed that corrupts every block and an honest `toybt seed` must reject the bad pieces,
/// drop the liar (and only the liar), and finish.
fn corrupt_blocks_rejected(f: &Fixture, behaviour: Behaviour) {
    let liar = FakeSeed::start(&f.content, |_| true, behaviour);
    let mut a = leech_among(f, liar.addr);
    let t = finishes(f, &mut a.leech, &a.out);
    let l = &a.leech;
    assert!(liar.blocks_sent() > 0, "the liar was never asked for a block");
    assert!(t.hash_failures > 0, "corrupt blocks were sent but no hash failed: {t:?}");
    let dropped = l.wait_line("failed the hash check", STEP);
    assert!(dropped.contains(&liar.addr.to_string()), "the liar was not the one dropped: {dropped}");
    assert_eq!(l.count_lines("failed the hash check"), 1, "someone besides the liar was dropped");
}

#[test]
fn corrupt_pieces_are_rejected_and_the_leecher_finishes_from_an_honest_seed() {
    corrupt_blocks_rejected(&fixture("toybt-hostile-corrupt"), Behaviour::Corrupt);
}

#[test]
fn a_liar_spoiling_only_shared_pieces_does_not_get_the_honest_seed_dropped() {
    // Six blocks a piece, so request pipelines split pieces between the two seeds, and a liar that spoils only such
    // pieces: every failure has two senders, and only the liar must pay for them.
    corrupt_blocks_rejected(&fixture_of("toybt-hostile-corrupt-shared", 40, 96 * 1024), Behaviour::CorruptShared);
}

#[test]
fn unsolicited_garbage_does_not_poison_a_leechers_pieces() {
    let f = fixture("toybt-hostile-spray");
    // It claims no piece, so it is never asked for one: every block it sends is unsolicited.
    let sprayer = FakeSeed::start(&f.content, |_| false, Behaviour::Spray);
    let mut a = leech_among(&f, sprayer.addr);
    let t = finishes(&f, &mut a.leech, &a.out);
    assert!(sprayer.blocks_sent() > 0);
    assert_eq!(t.hash_failures, 0, "unrequested blocks were taken into pieces: {t:?}");
}

#[test]
fn a_peer_stalling_mid_block_does_not_stop_the_download() {
    let f = fixture("toybt-hostile-stall");
    let staller = FakeSeed::start(&f.content, |_| true, Behaviour::StallMidBlock);
    let mut a = leech_among(&f, staller.addr);
    finishes(&f, &mut a.leech, &a.out);
    assert!(staller.requests() > 0, "the staller was never asked for a block");
}

/// Resident memory of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn peers_that_ask_for_everything_and_never_read_do_not_grow_the_seed() {
    let f = fixture("toybt-hostile-noread");
    let (s, addr) = seed(&f);
    let before = rss_kib(s.child.id());
    let mut hogs = Vec::new();
    for n in 0..4 {
        let mut p = WirePeer::open(addr, &f.content, n);
        p.interested_until_unchoked(STEP).unwrap();
        // Every block of the torrent, five times over, and not one byte read back.
        let mut reqs = Vec::new();
        for _ in 0..5 {
            for index in 0..f.content.num_pieces() {
                for (begin, length) in f.content.blocks(index) {
                    wire::encode_request(&mut reqs, index, begin, length);
                }
            }
        }
        p.stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = p.send(&reqs);
        hogs.push(p);
    }
    assert_serves_block(addr, &f.content, 9, 50);
    let after = rss_kib(s.child.id());
    eprintln!("seed RSS {before} KiB before, {after} KiB with 4 peers that never read");
    // Unbounded, each would hold its 410 blocks (6.5 MiB) in memory.
    assert!(after < before + 8 * 1024, "the seed grew from {before} to {after} KiB");
}
