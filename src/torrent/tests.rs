//! Sessions driven against each other through in-memory pipes on a virtual clock: no sockets, no sleeps.

use super::assembly::Sender;
use super::download::{MAX_REQUESTS_IN_FLIGHT, MAX_UNWRITTEN, REQUESTS_ALWAYS_ALLOWED, requests_to_add};
use super::*;
use crate::metainfo::FileEntry;
use crate::picker::Block;
use crate::storage::OpenMode;
use crate::tracker::announce::AnnounceResponse;
use crate::wire::{Handshake, Message};

use crate::test_data::bytes as data;

fn meta_for(content: &[u8], piece_length: u32) -> Metainfo {
    Metainfo::single_file_for_tests([0xAB; 20], "blob.bin", content, piece_length)
}

fn cfg(id: u8, port: u16) -> Config {
    Config::new([id; 20], port)
}

struct Node {
    t: Torrent,
    dir: tempfile::TempDir,
}

fn seed_node(meta: &Metainfo, content: &[u8], id: u8) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(&meta.name);
    std::fs::write(&path, content).unwrap();
    let storage = Storage::open(meta, path, OpenMode::Seed).unwrap();
    let have = Bitfield::full(meta.piece_count());
    let t = Torrent::new(meta.clone(), storage, have, cfg(id, 7000 + id as u16), Instant::now()).unwrap();
    Node { t, dir }
}

fn leech_node(meta: &Metainfo, id: u8) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(meta, dir.path().join(&meta.name), OpenMode::Leech).unwrap();
    let have = Bitfield::new(meta.piece_count());
    let t = Torrent::new(meta.clone(), storage, have, cfg(id, 7000 + id as u16), Instant::now()).unwrap();
    Node { t, dir }
}

/// One direction of a connection: bytes written by one session, not yet consumed by the other.
#[derive(Default)]
struct Pipe {
    bytes: Vec<u8>,
}

/// A connection between two sessions; `a_key`/`b_key` are the slab keys each side knows it by.
struct Link {
    a: usize,
    b: usize,
    a_key: usize,
    b_key: usize,
    a_to_b: Pipe,
    b_to_a: Pipe,
    open: bool,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

fn connect(nodes: &mut [Node], links: &mut Vec<Link>, a: usize, b: usize, now: Instant) {
    let key = links.len() + 1;
    nodes[a].t.peer_connected(now, key, 0, addr(b), true);
    nodes[b].t.peer_connected(now, key, 0, addr(a), false);
    links.push(Link { a, b, a_key: key, b_key: key, a_to_b: Pipe::default(), b_to_a: Pipe::default(), open: true });
}

/// Moves bytes both ways on every link until nothing moves; returns whether anything did.
fn shuttle(nodes: &mut [Node], links: &mut [Link], now: Instant) -> bool {
    let mut moved = false;
    // The disk workers' reports come in first, as if their writes were instant.
    for node in nodes.iter_mut() {
        moved |= node.t.drain_disk(now);
    }
    moved |= move_bytes(nodes, links, now);
    moved |= carry_out_closes(nodes, links, now);
    moved
}

/// One pass of bytes over every open link; a session that has paused its input (its disk is behind) is not fed, as
/// the reactor does. Returns whether anything was consumed.
fn move_bytes(nodes: &mut [Node], links: &mut [Link], now: Instant) -> bool {
    let mut moved = false;
    for link in links.iter_mut().filter(|l| l.open) {
        for dir in 0..2 {
            let (from, to, from_key, to_key, pipe) = if dir == 0 {
                (link.a, link.b, link.a_key, link.b_key, &mut link.a_to_b)
            } else {
                (link.b, link.a, link.b_key, link.a_key, &mut link.b_to_a)
            };
            nodes[from].t.peer_transmit(now, from_key, &mut pipe.bytes);
            if pipe.bytes.is_empty() || nodes[to].t.input_paused() {
                continue;
            }
            match nodes[to].t.peer_input(now, to_key, &pipe.bytes) {
                Ok(n) => {
                    moved |= n > 0;
                    pipe.bytes.drain(..n);
                }
                Err(why) => {
                    nodes[to].t.peer_closed(now, to_key, &why);
                    nodes[from].t.peer_closed(now, from_key, "closed by the peer");
                    link.open = false;
                    break;
                }
            }
        }
    }
    moved
}

/// Closes the links the sessions asked to close; returns whether any was.
fn carry_out_closes(nodes: &mut [Node], links: &mut [Link], now: Instant) -> bool {
    let mut moved = false;
    for (i, node) in nodes.iter_mut().enumerate() {
        while let Some(action) = node.t.poll_action() {
            if let Action::Close(key, _) = action {
                for link in links.iter_mut().filter(|l| l.open) {
                    let (other, other_key) = if link.a == i && link.a_key == key {
                        (link.b, link.b_key)
                    } else if link.b == i && link.b_key == key {
                        (link.a, link.a_key)
                    } else {
                        continue;
                    };
                    link.open = false;
                    let _ = (other, other_key);
                    moved = true;
                }
            }
        }
    }
    // The peer side of a connection closed above learns of it.
    for link in links.iter_mut() {
        if !link.open {
            nodes[link.a].t.peer_closed(now, link.a_key, "closed");
            nodes[link.b].t.peer_closed(now, link.b_key, "closed");
        }
    }
    moved
}

/// Runs the swarm on a virtual clock until `done` or `limit` of virtual time.
fn run(nodes: &mut [Node], links: &mut [Link], limit: Duration, done: impl Fn(&[Node]) -> bool) -> Instant {
    let mut now = Instant::now();
    let end = now + limit;
    while !done(nodes) {
        assert!(now < end, "swarm did not finish in {limit:?} of virtual time");
        let mut rounds = 0;
        while shuttle(nodes, links, now) && rounds < 10_000 {
            rounds += 1;
        }
        now += Duration::from_millis(250);
        for n in nodes.iter_mut() {
            n.t.handle_timeout(now);
        }
    }
    now
}

#[test]
fn leech_downloads_everything_from_a_seed_and_stores_it() {
    let content = data(300_000, 1);
    let meta = meta_for(&content, 32 * 1024);
    let mut nodes = vec![seed_node(&meta, &content, 1), leech_node(&meta, 2)];
    let mut links = Vec::new();
    connect(&mut nodes, &mut links, 1, 0, Instant::now());
    run(&mut nodes, &mut links, Duration::from_secs(30), |n| n[1].t.is_complete());
    let got = std::fs::read(nodes[1].dir.path().join("blob.bin")).unwrap();
    assert!(got == content, "downloaded data differs");
    assert_eq!(nodes[1].t.downloaded(), content.len() as u64, "no block fetched twice");
    assert_eq!(nodes[0].t.uploaded(), content.len() as u64);
}

#[test]
fn a_leech_whose_disk_is_behind_stops_taking_blocks_and_counts_a_piece_only_once_written() {
    let piece = 256 * 1024;
    let content = data(MAX_UNWRITTEN + 16 * piece, 5);
    let meta = meta_for(&content, piece as u32);
    let mut nodes = vec![seed_node(&meta, &content, 1), leech_node(&meta, 2)];
    let gate = nodes[1].t.disk.gate();
    let mut links = Vec::new();
    let mut now = Instant::now();
    connect(&mut nodes, &mut links, 1, 0, now);
    for _ in 0..100_000 {
        if !move_bytes(&mut nodes, &mut links, now) {
            now += Duration::from_millis(250);
            nodes.iter_mut().for_each(|n| n.t.handle_timeout(now));
        }
        if nodes[1].t.input_paused() {
            break;
        }
    }
    let leech = &nodes[1].t;
    assert!(leech.input_paused(), "the leech never paused");
    let unwritten = leech.disk.unwritten_bytes();
    // Past the bound by at most what one pass over the link brought in.
    assert!(unwritten < MAX_UNWRITTEN + 2 * crate::peer::UPLOAD_LOW_WATER + piece, "{unwritten} bytes queued");
    assert_eq!(leech.verified_pieces(), 0, "pieces count only once the disk reports them written");
    let received = leech.downloaded();
    for _ in 0..10 {
        move_bytes(&mut nodes, &mut links, now);
    }
    assert_eq!(nodes[1].t.downloaded(), received, "a paused leech takes no blocks");

    gate.send(()).unwrap();
    assert!(nodes[1].t.drain_disk(now));
    assert!(!nodes[1].t.input_paused());
    assert_eq!(nodes[1].t.verified_pieces() as usize * piece, unwritten);
    assert_eq!(nodes[1].t.take_dirty(), vec![(1, 0)], "the paused peer is woken to be read again");
    run(&mut nodes, &mut links, Duration::from_secs(60), |n| n[1].t.is_complete());
    assert!(std::fs::read(nodes[1].dir.path().join("blob.bin")).unwrap() == content);
}

#[test]
fn leechers_trade_with_each_other() {
    let content = data(2_000_000, 2);
    let meta = meta_for(&content, 16 * 1024);
    let mut nodes =
        vec![seed_node(&meta, &content, 1), leech_node(&meta, 2), leech_node(&meta, 3), leech_node(&meta, 4)];
    let mut links = Vec::new();
    let now = Instant::now();
    for l in 1..4 {
        connect(&mut nodes, &mut links, l, 0, now);
    }
    connect(&mut nodes, &mut links, 1, 2, now);
    connect(&mut nodes, &mut links, 2, 3, now);
    connect(&mut nodes, &mut links, 1, 3, now);
    run(&mut nodes, &mut links, Duration::from_secs(60), |n| n[1..].iter().all(|n| n.t.is_complete()));
    for n in &nodes[1..] {
        assert!(std::fs::read(n.dir.path().join("blob.bin")).unwrap() == content);
    }
    let leecher_uploads: u64 = nodes[1..].iter().map(|n| n.t.uploaded()).sum();
    assert!(leecher_uploads > 0, "leechers must upload to each other");
}

#[test]
fn corrupt_seed_is_dropped_and_honest_seed_finishes_the_job() {
    let content = data(200_000, 3);
    let meta = meta_for(&content, 16 * 1024);
    let mut bad = content.clone();
    for b in bad.iter_mut().step_by(1000) {
        *b ^= 0xFF;
    }
    let mut nodes = vec![seed_node(&meta, &bad, 1), leech_node(&meta, 2)];
    let mut links = Vec::new();
    connect(&mut nodes, &mut links, 1, 0, Instant::now());
    let now =
        run(&mut nodes, &mut links, Duration::from_secs(10), |n| n[1].t.hash_failures > 0 && n[1].t.peer_count() == 0);
    assert!(!nodes[1].t.is_complete());
    nodes.push(seed_node(&meta, &content, 3));
    connect(&mut nodes, &mut links, 1, 2, now);
    run(&mut nodes, &mut links, Duration::from_secs(30), |n| n[1].t.is_complete());
    assert!(std::fs::read(nodes[1].dir.path().join("blob.bin")).unwrap() == content);
}

#[test]
fn a_wrong_info_hash_or_ourselves_is_refused() {
    let content = data(50_000, 4);
    let meta = meta_for(&content, 16 * 1024);
    let mut node = leech_node(&meta, 2);
    let now = Instant::now();
    node.t.peer_connected(now, 1, 0, addr(1), false);
    let mut hs = Vec::new();
    Handshake::new([0; 20], [9; 20]).encode(&mut hs);
    assert!(node.t.peer_input(now, 1, &hs).unwrap_err().contains("another torrent"));
    node.t.peer_connected(now, 2, 0, addr(3), false);
    hs.clear();
    Handshake::new(meta.info_hash, [2; 20]).encode(&mut hs);
    assert!(node.t.peer_input(now, 2, &hs).unwrap_err().contains("ourselves"));
}

#[test]
fn requests_past_a_piece_end_close_the_connection() {
    let content = data(50_000, 5);
    let meta = meta_for(&content, 16 * 1024);
    let mut node = seed_node(&meta, &content, 1);
    let now = Instant::now();
    node.t.peer_connected(now, 1, 0, addr(2), false);
    let mut input = Vec::new();
    Handshake::new(meta.info_hash, [2; 20]).encode(&mut input);
    wire::encode_bare(&mut input, wire::id::INTERESTED);
    node.t.peer_input(now, 1, &input).unwrap();
    let mut bad = Vec::new();
    // The last piece is 50_000 - 3 * 16384 = 848 bytes long.
    wire::encode_request(&mut bad, 3, 0, 16384);
    assert!(node.t.peer_input(now, 1, &bad).unwrap_err().contains("past the end"));
}

#[test]
fn a_seed_with_damaged_pieces_serves_the_rest_and_never_asks_for_them() {
    let content = data(100_000, 6);
    let meta = meta_for(&content, 16 * 1024);
    let mut partial = seed_node(&meta, &content, 1);
    // Pieces 0 and 1 failed the start-up check: the seed has the rest.
    let mut have = Bitfield::full(meta.piece_count());
    have.clear(0);
    have.clear(1);
    let storage = Storage::open(&meta, partial.dir.path().join(&meta.name), OpenMode::Seed).unwrap();
    partial.t = Torrent::new(meta.clone(), storage, have, cfg(1, 7001), Instant::now()).unwrap();
    let mut nodes = vec![partial, seed_node(&meta, &content, 2), leech_node(&meta, 3)];
    let mut links = Vec::new();
    let now = Instant::now();
    connect(&mut nodes, &mut links, 2, 0, now);
    connect(&mut nodes, &mut links, 2, 1, now);
    connect(&mut nodes, &mut links, 0, 1, now);
    run(&mut nodes, &mut links, Duration::from_secs(30), |n| n[2].t.is_complete());
    assert!(nodes[0].t.uploaded() > 0, "the damaged seed serves what it has");
    assert_eq!(nodes[0].t.downloaded(), 0, "a seed's data is read-only: it must not fetch pieces");
    assert!(nodes[0].t.disk_error().is_none());
}

#[test]
fn a_liar_sharing_pieces_with_an_honest_peer_is_caught_and_the_honest_one_kept() {
    // Pieces of eight blocks; the liar (connection 1) spoils one block of pieces the honest peer (2) filled the rest of.
    let content = data(8 * 128 * 1024, 7);
    let meta = meta_for(&content, 128 * 1024);
    let mut node = leech_node(&meta, 3);
    let now = Instant::now();
    for key in [1, 2] {
        node.t.peer_connected(now, key, 100 + key as u64, addr(key), false);
        let mut hs = Vec::new();
        Handshake::new(meta.info_hash, [key as u8; 20]).encode(&mut hs);
        node.t.peer_input(now, key, &hs).unwrap();
    }
    let sender = |key: usize| Some(Sender { generation: 100 + key as u64, addr: addr(key) });
    let piece = |index: u32, liar_slot: Option<usize>| {
        let mut data = content[index as usize * 131072..][..131072].to_vec();
        let mut senders = vec![sender(2); 8];
        if let Some(slot) = liar_slot {
            data[slot * 16384 + 5] ^= 0xFF;
            senders[slot] = sender(1);
        }
        (data, senders)
    };
    for index in 0..4 {
        let (data, senders) = piece(index, Some(index as usize + 2));
        node.t.assembly.insert(index, data, senders);
        node.t.finish_piece(now, index);
    }
    // The disk worker hashes the pieces; its verdicts are taken as the loop would.
    node.t.drain_disk(now);
    assert_eq!(node.t.hash_failures(), 4);
    assert_eq!(node.t.poll_action(), None, "nobody is dropped on a shared failure");
    // A good copy of piece 2 shows whose block was bad.
    let (data, senders) = piece(2, None);
    node.t.assembly.insert(2, data, senders);
    node.t.finish_piece(now, 2);
    node.t.drain_disk(now);
    assert_eq!(node.t.poll_action(), Some(Action::Close(1, 101)));
    assert!(node.t.addrs.is_banned(addr(1)));
    assert!(!node.t.addrs.is_banned(addr(2)));
    assert_eq!(node.t.peer_count(), 1);
}

#[test]
fn a_late_bitfield_counts_as_haves() {
    // aria2 says nothing of its pieces while it has none, asks for blocks, and sends its bitfield once it has one.
    let content = data(50_000, 6);
    let meta = meta_for(&content, 16 * 1024);
    let mut node = leech_node(&meta, 1);
    let now = Instant::now();
    node.t.peer_connected(now, 1, 0, addr(2), false);
    let mut input = Vec::new();
    Handshake::new(meta.info_hash, [2; 20]).encode(&mut input);
    wire::encode_bare(&mut input, wire::id::INTERESTED);
    wire::encode_bitfield(&mut input, &[0b0100_0000]);
    node.t.peer_input(now, 1, &input).unwrap();
    let peer = &node.t.peers[&1];
    assert_eq!(peer.pieces().iter_ones().collect::<Vec<_>>(), vec![1]);
    assert!(peer.am_interested(), "the late bitfield made the peer interesting");
    // Spare bits are still refused.
    let mut bad = Vec::new();
    wire::encode_bitfield(&mut bad, &[0b0000_0001]);
    assert!(node.t.peer_input(now, 1, &bad).is_err());
}

#[test]
fn peers_that_speak_bep10_hear_our_request_queue_size_after_the_bitfield() {
    let content = data(50_000, 7);
    let meta = meta_for(&content, 16 * 1024);
    let now = Instant::now();
    for extensions in [true, false] {
        let mut node = seed_node(&meta, &content, 1);
        node.t.peer_connected(now, 1, 0, addr(2), false);
        let mut theirs = Handshake::new(meta.info_hash, [2; 20]);
        if extensions {
            theirs.reserved[5] |= 0x10;
        }
        let mut hs = Vec::new();
        theirs.encode(&mut hs);
        node.t.peer_input(now, 1, &hs).unwrap();
        let mut out = Vec::new();
        node.t.peer_transmit(now, 1, &mut out);
        let ours = Handshake::decode(&out).unwrap().unwrap();
        assert!(ours.supports_extensions() && ours.supports_fast());
        let limits = wire::Limits::new(meta.piece_count());
        let mut rest = &out[wire::HANDSHAKE_LEN..];
        let mut ids = Vec::new();
        while let Some((msg, n)) = wire::decode(rest, &limits).unwrap() {
            ids.push(match msg {
                Message::Bitfield(_) => wire::id::BITFIELD,
                Message::Extended { ext_id: 0, payload } => {
                    let dict = crate::bencode::decode(payload).unwrap();
                    assert_eq!(
                        dict.get("reqq").and_then(|v| v.as_int()),
                        Some(crate::peer::MAX_QUEUED_REQUESTS as i64)
                    );
                    wire::id::EXTENDED
                }
                other => panic!("unexpected {other:?}"),
            });
            rest = &rest[n..];
        }
        let want = if extensions { vec![wire::id::BITFIELD, wire::id::EXTENDED] } else { vec![wire::id::BITFIELD] };
        assert_eq!(ids, want, "extensions: {extensions}");
    }
}

#[test]
fn a_block_nobody_asked_this_peer_for_is_dropped() {
    let content = data(4 * 32 * 1024, 8);
    let meta = meta_for(&content, 32 * 1024);
    let mut node = leech_node(&meta, 3);
    let now = Instant::now();
    for key in [1, 2] {
        node.t.peer_connected(now, key, key as u64, addr(key), false);
        let mut input = Vec::new();
        Handshake::new(meta.info_hash, [key as u8; 20]).encode(&mut input);
        if key == 1 {
            // Peer 1 has everything and lets us ask; peer 2 claims nothing.
            wire::encode_bitfield(&mut input, Bitfield::full(meta.piece_count()).as_wire());
            wire::encode_bare(&mut input, wire::id::UNCHOKE);
        }
        node.t.peer_input(now, key, &input).unwrap();
    }
    let asked: Vec<Block> = node.t.peers[&1].requested().collect();
    assert!(!asked.is_empty());
    // Peer 2 answers one of peer 1's requests with junk, unasked: it is not taken into the piece.
    let b = asked[0];
    let mut junk = Vec::new();
    wire::encode_piece(&mut junk, b.index, b.begin, &vec![0xEE; b.length as usize]);
    node.t.peer_input(now, 2, &junk).unwrap();
    assert_eq!(node.t.downloaded(), 0);
    assert!(node.t.assembly.is_empty());
    // Peer 1's real answer is.
    let mut real = Vec::new();
    let start = (b.index * meta.piece_length + b.begin) as usize;
    wire::encode_piece(&mut real, b.index, b.begin, &content[start..start + b.length as usize]);
    node.t.peer_input(now, 1, &real).unwrap();
    assert_eq!(node.t.downloaded(), b.length as u64);
}

#[test]
fn debug_throttle_serves_its_rate_and_says_when_to_come_back() {
    let t0 = Instant::now();
    let mut t = super::throttle::Throttle::new(100_000, t0);
    let block = 16 * 1024;
    // Nothing earned yet: come back once 16 KiB is, about 164 ms later.
    let wake = t.take(t0, block).unwrap_err();
    assert_eq!(wake - t0, Duration::from_micros(163_840));
    assert!(t.take(wake, block).is_ok());
    // Over ten seconds about ten times the rate goes out, never a burst of more than a block beyond it.
    let mut sent = 0u64;
    let mut now = wake;
    while now < wake + Duration::from_secs(10) {
        match t.take(now, block) {
            Ok(()) => sent += block as u64,
            Err(at) => now = at,
        }
    }
    assert!((990_000..=1_000_000 + block as u64).contains(&sent), "{sent}");
}

#[test]
fn requests_share_one_budget_but_every_peer_keeps_a_few() {
    // Alone, a peer gets its whole depth.
    assert_eq!(requests_to_add(250, 0, 0), 250);
    assert_eq!(requests_to_add(250, 100, 100), 150);
    // The budget is shared: with others holding most of it, only what is left.
    assert_eq!(requests_to_add(250, 0, MAX_REQUESTS_IN_FLIGHT - 20), 20);
    assert_eq!(requests_to_add(250, 50, MAX_REQUESTS_IN_FLIGHT), 0);
    // A newcomer still gets its first few when fast peers hold the whole budget, and no more.
    assert_eq!(requests_to_add(250, 0, MAX_REQUESTS_IN_FLIGHT + 100), REQUESTS_ALWAYS_ALLOWED);
    assert_eq!(requests_to_add(250, 3, MAX_REQUESTS_IN_FLIGHT), REQUESTS_ALWAYS_ALLOWED - 3);
    // Never beyond the peer's own depth (a snubbing peer gets one at a time).
    assert_eq!(requests_to_add(1, 0, 0), 1);
    assert_eq!(requests_to_add(8, 8, 0), 0);
}

#[test]
fn a_slot_given_up_goes_to_a_waiting_peer_at_the_next_tick_not_the_next_round() {
    let content = data(400_000, 9);
    let meta = meta_for(&content, 16 * 1024);
    // A seed with one regular slot and the optimistic one: two of three leechers are served, the third waits.
    let mut seed = seed_node(&meta, &content, 1);
    let mut seed_cfg = cfg(1, 7001);
    seed_cfg.unchoke_slots = 1;
    let storage = Storage::open(&meta, seed.dir.path().join(&meta.name), OpenMode::Seed).unwrap();
    let start = Instant::now();
    seed.t = Torrent::new(meta.clone(), storage, Bitfield::full(meta.piece_count()), seed_cfg, start).unwrap();
    let mut nodes = vec![seed, leech_node(&meta, 2), leech_node(&meta, 3), leech_node(&meta, 4)];
    let mut links = Vec::new();
    for l in 1..4 {
        connect(&mut nodes, &mut links, l, 0, start);
    }
    // With no rate limit on the pipes, the two served leechers finish at once and leave (seed to seed); the third
    // must get a slot at the next one-second tick, not when the ten-second round ends.
    let before = Instant::now();
    let done = run(&mut nodes, &mut links, Duration::from_secs(30), |n| n[1..].iter().all(|n| n.t.is_complete()));
    let took = done.saturating_duration_since(before);
    assert!(took < choker::ROUND / 2, "the third leecher waited for a whole choke round: {took:?}");
    assert!(std::fs::read(nodes[3].dir.path().join("blob.bin")).unwrap() == content);
}

/// A peer that speaks BEP 10 with ut_metadata as 3 and ut_pex as 4, connected to `node` under key 1.
fn extended_peer(node: &mut Node, meta: &Metainfo, now: Instant) {
    node.t.peer_connected(now, 1, 0, addr(2), false);
    let mut input = Vec::new();
    let mut theirs = Handshake::new(meta.info_hash, [2; 20]);
    theirs.reserved[5] |= 0x10;
    theirs.encode(&mut input);
    let hs = crate::peer::extension::ExtHandshake {
        m: vec![("ut_metadata".into(), 3), ("ut_pex".into(), 4)],
        ..Default::default()
    };
    hs.encode(&mut input);
    node.t.peer_input(now, 1, &input).unwrap();
    node.t.peer_transmit(now, 1, &mut Vec::new());
}

#[test]
fn metadata_is_served_to_peers_that_ask_and_refused_past_its_end() {
    use crate::peer::metadata::MetadataMsg;
    let content = data(50_000, 9);
    let mut meta = meta_for(&content, 16 * 1024);
    meta.info = data(20_000, 10);
    let mut node = seed_node(&meta, &content, 1);
    let now = Instant::now();
    extended_peer(&mut node, &meta, now);
    let mut ask = Vec::new();
    for piece in [1, 2] {
        MetadataMsg::Request { piece }.encode(crate::peer::extension::UT_METADATA, &mut ask);
    }
    node.t.peer_input(now, 1, &ask).unwrap();
    let mut out = Vec::new();
    node.t.peer_transmit(now, 1, &mut out);
    let limits = wire::Limits::new(meta.piece_count());
    let (first, n) = wire::decode(&out, &limits).unwrap().unwrap();
    let Message::Extended { ext_id: 3, payload } = first else { panic!("{first:?}") };
    let want = MetadataMsg::Data { piece: 1, total_size: 20_000, data: &meta.info[16384..] };
    assert_eq!(MetadataMsg::decode(payload).unwrap(), want);
    let (second, _) = wire::decode(&out[n..], &limits).unwrap().unwrap();
    let Message::Extended { ext_id: 3, payload } = second else { panic!("{second:?}") };
    assert_eq!(MetadataMsg::decode(payload).unwrap(), MetadataMsg::Reject { piece: 2 });
}

#[test]
fn pex_news_is_dialled_within_limits_and_never_for_a_private_torrent() {
    use crate::peer::pex::Pex;
    let content = data(50_000, 11);
    for private in [false, true] {
        let mut meta = meta_for(&content, 16 * 1024);
        meta.private = private;
        let mut node = leech_node(&meta, 1);
        let now = Instant::now();
        extended_peer(&mut node, &meta, now);
        // A flood: ten thousand addresses, ourselves, port 0 and one address many times.
        let mut added: Vec<(SocketAddr, u8)> =
            (0..10_000u16).map(|i| (SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6881)), 0)).collect();
        added.push((SocketAddr::from(([127, 0, 0, 1], 7001)), 0));
        added.push((SocketAddr::from(([10, 9, 9, 9], 0)), 0));
        added.extend(std::iter::repeat_n((SocketAddr::from(([10, 8, 8, 8], 1)), 0), 100));
        let mut input = Vec::new();
        for chunk in added.chunks(50) {
            Pex { added: chunk.to_vec(), dropped: vec![] }.encode(crate::peer::extension::UT_PEX, &mut input);
        }
        node.t.peer_input(now, 1, &input).unwrap();
        let dials: Vec<SocketAddr> = std::iter::from_fn(|| node.t.poll_action())
            .filter_map(|a| if let Action::Connect(addr) = a { Some(addr) } else { None })
            .collect();
        if private {
            assert!(dials.is_empty(), "PEX is ignored for a private torrent");
        } else {
            assert_eq!(dials.len(), Config::new([1; 20], 7001).max_connecting, "dials stay capped: {dials:?}");
            assert!(dials.iter().all(|a| a.port() != 0 && a.port() != 7001), "{dials:?}");
            let known = node.t.addrs.known().count();
            assert!((1000..=2000).contains(&known), "the address book keeps at most 2000: {known}");
        }
    }
}

#[test]
fn peers_hear_of_each_other_through_pex() {
    use crate::peer::pex::Pex;
    let content = data(50_000, 12);
    let meta = meta_for(&content, 16 * 1024);
    let mut node = seed_node(&meta, &content, 1);
    let now = Instant::now();
    extended_peer(&mut node, &meta, now);
    // A second peer, one we dialled: its address is where it listens.
    node.t.peer_connected(now, 2, 0, addr(3), true);
    let mut hs = Vec::new();
    Handshake::new(meta.info_hash, [3; 20]).encode(&mut hs);
    node.t.peer_input(now, 2, &hs).unwrap();
    let later = now + Duration::from_secs(6);
    node.t.handle_timeout(later);
    let mut out = Vec::new();
    node.t.peer_transmit(later, 1, &mut out);
    let limits = wire::Limits::new(meta.piece_count());
    let mut rest = &out[..];
    let mut told = None;
    while let Some((msg, n)) = wire::decode(rest, &limits).unwrap() {
        if let Message::Extended { ext_id: 4, payload } = msg {
            told = Some(Pex::decode(payload).unwrap());
        }
        rest = &rest[n..];
    }
    let told = told.expect("a PEX message to peer 1");
    assert_eq!(told.added.iter().map(|(a, _)| *a).collect::<Vec<_>>(), vec![addr(3)]);
}

#[test]
fn a_peers_port_message_becomes_a_dht_node_and_a_private_torrent_never_uses_the_dht() {
    let content = data(50_000, 13);
    for private in [false, true] {
        let mut meta = meta_for(&content, 16 * 1024);
        meta.private = private;
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&meta, dir.path().join(&meta.name), OpenMode::Leech).unwrap();
        let mut c = cfg(1, 7001);
        c.dht = true;
        let now = Instant::now();
        let mut t = Torrent::new(meta.clone(), storage, Bitfield::new(meta.piece_count()), c, now).unwrap();
        assert_eq!(t.uses_dht(), !private, "BEP 27: never for a private torrent, whatever the flag says");
        let peer: SocketAddr = "127.0.0.9:6999".parse().unwrap();
        t.peer_connected(now, 1, 0, peer, false);
        let mut h = Handshake::new(meta.info_hash, [9; 20]);
        h.reserved[7] |= 0x01;
        let mut input = Vec::new();
        h.encode(&mut input);
        wire::encode_port(&mut input, 7123);
        t.peer_input(now, 1, &input).unwrap();
        let mut out = Vec::new();
        t.peer_transmit(now, 1, &mut out);
        let ours = Handshake::decode(&out).unwrap().unwrap();
        assert_eq!(ours.supports_dht(), !private);
        let said_port = out[wire::HANDSHAKE_LEN..].windows(7).any(|w| w == [0, 0, 0, 3, 9, 0x1B, 0x59]);
        assert_eq!(said_port, !private, "our DHT port (the peer port, 7001) after the handshake");
        let nodes: Vec<SocketAddr> = std::iter::from_fn(|| t.poll_action())
            .filter_map(|a| if let Action::DhtNode(n) = a { Some(n) } else { None })
            .collect();
        let want: Vec<SocketAddr> = if private { vec![] } else { vec!["127.0.0.9:7123".parse().unwrap()] };
        assert_eq!(nodes, want);
        t.stop(now);
        assert!(!t.uses_dht(), "a stopping session leaves the DHT");
    }
}

#[test]
fn peers_the_dht_finds_are_dialled_at_once_but_never_ourselves() {
    let content = data(50_000, 14);
    let meta = meta_for(&content, 16 * 1024);
    let mut node = leech_node(&meta, 1);
    let now = Instant::now();
    while node.t.poll_action().is_some() {}
    // 127.0.0.1:7001 is our own listen port: our own announce coming back.
    node.t.found_peers(now, [addr(2), addr(1), addr(2)]);
    let dials: Vec<Action> = std::iter::from_fn(|| node.t.poll_action()).collect();
    assert_eq!(dials, vec![Action::Connect(addr(2))]);
}

/// Three files of 40,000, 70,000 and 50,000 bytes in 32 KiB pieces: file 1 shares piece 1 with file 0 and piece 3
/// with file 2, and piece 2 lies in it alone.
fn three_files(content: &[u8]) -> Metainfo {
    let mut meta = meta_for(content, 32 * 1024);
    meta.name = "three".into();
    meta.multi_file = true;
    let mut offset = 0;
    meta.files = [40_000u64, 70_000, 50_000]
        .iter()
        .enumerate()
        .map(|(i, &length)| {
            let f = FileEntry { path: vec![format!("f{i}")], length, offset, padding: false };
            offset += length;
            f
        })
        .collect();
    meta
}

fn selective_leech(meta: &Metainfo, id: u8, wanted: &[bool]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open_selected(meta, dir.path().join(&meta.name), OpenMode::Leech, wanted).unwrap();
    let have = Bitfield::new(meta.piece_count());
    let t = Torrent::new(meta.clone(), storage, have, cfg(id, 7000 + id as u16), Instant::now()).unwrap();
    Node { t, dir }
}

#[test]
fn a_leech_with_a_file_deselected_fetches_only_wanted_pieces_and_completes_without_the_rest() {
    let content = data(160_000, 4);
    let meta = three_files(&content);
    let mut nodes = vec![seed_node_multi(&meta, &content, 1), selective_leech(&meta, 2, &[true, false, true])];
    let wanted_bytes = 160_000 - 32 * 1024;
    assert!(!nodes[1].t.is_complete());
    assert_eq!(nodes[1].t.snapshot().total_bytes, wanted_bytes);
    assert_eq!(nodes[1].t.picker.wanted_left(), wanted_bytes, "the tracker's left: wanted bytes missing");
    let mut links = Vec::new();
    connect(&mut nodes, &mut links, 1, 0, Instant::now());
    run(&mut nodes, &mut links, Duration::from_secs(30), |n| n[1].t.is_complete());
    let t = &nodes[1].t;
    assert_eq!(t.picker.have().iter_ones().collect::<Vec<_>>(), vec![0, 1, 3, 4], "piece 2 was never fetched");
    assert_eq!(t.downloaded(), wanted_bytes, "no block of an unwanted piece fetched");
    assert!(t.completed_at.is_some());
    assert_eq!(t.snapshot().have_bytes, wanted_bytes);
    assert_eq!(t.picker.wanted_left(), 0);
    let root = nodes[1].dir.path().join("three");
    assert_eq!(std::fs::read(root.join("f0")).unwrap(), &content[..40_000]);
    assert_eq!(std::fs::read(root.join("f2")).unwrap(), &content[110_000..]);
    // File 1 holds the bytes of the two pieces it shares, nothing of piece 2.
    let mid = std::fs::read(root.join("f1")).unwrap();
    assert_eq!(mid.len(), 70_000);
    assert_eq!(&mid[..25_536], &content[40_000..65_536]);
    assert!(mid[25_536..58_304].iter().all(|&b| b == 0));
    assert_eq!(&mid[58_304..], &content[98_304..110_000]);
}

/// At run time both ways: a file deselected before its pieces come is not fetched and the download completes
/// without it; selected again, the download resumes and completes with it.
#[test]
fn set_wanted_files_at_run_time_stops_and_resumes_a_file() {
    let content = data(160_000, 5);
    let meta = three_files(&content);
    let mut nodes = vec![seed_node_multi(&meta, &content, 1), selective_leech(&meta, 2, &[true; 3])];
    let now = Instant::now();
    assert!(nodes[1].t.set_wanted_files(now, &[true, false]).is_err(), "one entry per file");
    nodes[1].t.set_wanted_files(now, &[false, false, true]).unwrap();
    assert_eq!(nodes[1].t.wanted_files(), &[false, false, true]);
    let mut links = Vec::new();
    connect(&mut nodes, &mut links, 1, 0, now);
    run(&mut nodes, &mut links, Duration::from_secs(30), |n| n[1].t.is_complete());
    assert_eq!(nodes[1].t.picker.have().iter_ones().collect::<Vec<_>>(), vec![3, 4]);
    let root = nodes[1].dir.path().join("three");
    // f0 was created at open, when it was still wanted, and deselected before any of its pieces came.
    assert!(std::fs::read(root.join("f0")).unwrap().iter().all(|&b| b == 0));
    assert!(nodes[1].t.completed_at.is_some());

    let now = now + Duration::from_secs(60);
    nodes[1].t.set_wanted_files(now, &[true; 3]).unwrap();
    assert!(!nodes[1].t.is_complete());
    assert!(nodes[1].t.completed_at.is_none());
    // Done with its selection, the leech had closed the seed ("both sides are seeds"); it dials it again now that it
    // wants more (the address book's part, tested there), here by hand.
    assert!(links.iter().all(|l| !l.open));
    connect(&mut nodes, &mut links, 1, 0, now);
    run(&mut nodes, &mut links, Duration::from_secs(30), |n| n[1].t.is_complete());
    assert_eq!(std::fs::read(root.join("f0")).unwrap(), &content[..40_000]);
    assert_eq!(std::fs::read(root.join("f1")).unwrap(), &content[40_000..110_000]);
    assert_eq!(nodes[1].t.downloaded(), 160_000, "nothing fetched twice");
}

fn seed_node_multi(meta: &Metainfo, content: &[u8], id: u8) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(&meta.name);
    std::fs::create_dir_all(&root).unwrap();
    for f in &meta.files {
        let start = f.offset as usize;
        std::fs::write(root.join(&f.path[0]), &content[start..start + f.length as usize]).unwrap();
    }
    let storage = Storage::open(meta, root, OpenMode::Seed).unwrap();
    let have = Bitfield::full(meta.piece_count());
    let t = Torrent::new(meta.clone(), storage, have, cfg(id, 7000 + id as u16), Instant::now()).unwrap();
    Node { t, dir }
}

mod idle;
