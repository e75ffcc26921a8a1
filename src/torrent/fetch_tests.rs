//! Fetching the metadata for a magnet link, on a virtual clock: from a real seed session through in-memory pipes, and
//! against scripted peers that lie, announce impossible sizes, or only reject.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::fetch::{Fetch, Start};
use super::{Action, Config, Session, Torrent};
use crate::bitfield::Bitfield;
use crate::metainfo::Metainfo;
use crate::peer::extension::ExtHandshake;
use crate::peer::metadata::MetadataMsg;
use crate::storage::{OpenMode, Storage};
use crate::test_data::bytes as data;
use crate::wire::{self, Handshake, Limits, Message};

/// A real torrent of `len` bytes (so its info dictionary hashes to its info hash), its content written in `dir`.
fn real_torrent(dir: &std::path::Path, len: usize) -> (Metainfo, Vec<u8>) {
    let content = data(len, 5);
    let path = dir.join("payload.bin");
    std::fs::write(&path, &content).unwrap();
    let opts = crate::create::Options { piece_length: Some(16 << 10), ..Default::default() };
    let (_, meta) = crate::create::create(&path, &opts, &mut |_, _| {}).unwrap();
    (meta, content)
}

fn start(info_hash: [u8; 20]) -> Start {
    Start { info_hash, trackers: vec![], peers: vec![] }
}

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000 + i))
}

/// Every extended message in `out` (after our handshake, if it starts with it), owned.
fn messages(out: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let greeted = out.starts_with(b"\x13BitTorrent protocol");
    let mut rest = if greeted { out.get(wire::HANDSHAKE_LEN..).unwrap_or(&[]) } else { out };
    let mut found = Vec::new();
    while let Ok(Some((msg, n))) = wire::decode(rest, &Limits::unknown_pieces()) {
        if let Message::Extended { ext_id, payload } = msg {
            found.push((ext_id, payload.to_vec()));
        }
        rest = &rest[n..];
    }
    found
}

/// The metadata pieces `out` asks for with ut_metadata id `id`.
fn requests(out: &[u8], id: u8) -> Vec<u32> {
    messages(out)
        .into_iter()
        .filter(|(ext, _)| *ext == id)
        .filter_map(|(_, p)| match MetadataMsg::decode(&p) {
            Ok(MetadataMsg::Request { piece }) => Some(piece),
            _ => None,
        })
        .collect()
}

/// A scripted peer's greeting: a handshake with BEP 10 and an extended handshake offering ut_metadata as 5.
fn greeting(info_hash: [u8; 20], peer: u8, size: Option<i64>) -> Vec<u8> {
    let mut h = Handshake::new(info_hash, [0x80 | peer; 20]);
    h.reserved[5] |= 0x10;
    let mut out = Vec::new();
    h.encode(&mut out);
    ExtHandshake { m: vec![("ut_metadata".into(), 5)], metadata_size: size, ..Default::default() }.encode(&mut out);
    out
}

fn fetch_for(info_hash: [u8; 20]) -> Fetch {
    Fetch::new(start(info_hash), Config::new([1; 20], 7001), Instant::now())
}

/// Connects a scripted peer as `key` and feeds it `input`; returns what the fetch sends back.
fn scripted(f: &mut Fetch, now: Instant, key: usize, input: &[u8]) -> Vec<u8> {
    f.peer_connected(now, key, key as u64, addr(key as u16), true);
    f.peer_input(now, key, input).unwrap();
    let mut out = Vec::new();
    f.peer_transmit(now, key, &mut out);
    out
}

#[test]
fn the_metadata_comes_from_a_seed_session_and_the_session_becomes_a_download() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = real_torrent(dir.path(), 3 * 16384 + 100);
    assert!(!meta.info.is_empty());
    let seed_storage = Storage::open(&meta, dir.path().join("payload.bin"), OpenMode::Seed).unwrap();
    let have = Bitfield::full(meta.piece_count());
    let now = Instant::now();
    let mut seed = Torrent::new(meta.clone(), seed_storage, have, Config::new([2; 20], 7002), now).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().to_path_buf();
    let build: super::Builder = Box::new(move |meta: Metainfo, _bytes: Vec<u8>| {
        let storage = Storage::open(&meta, target.join(&meta.name), OpenMode::Leech)?;
        let have = Bitfield::new(meta.piece_count());
        Torrent::new(meta, storage, have, Config::new([1; 20], 7001), Instant::now())
    });
    let mut session = Session::metadata(fetch_for(meta.info_hash), build);
    session.peer_connected(now, 1, 1, addr(2), true);
    seed.peer_connected(now, 1, 1, addr(1), false);
    let (mut to_seed, mut to_fetch) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        session.peer_transmit(now, 1, &mut to_seed);
        let n = seed.peer_input(now, 1, &to_seed).unwrap();
        to_seed.drain(..n);
        seed.peer_transmit(now, 1, &mut to_fetch);
        let n = session.peer_input(now, 1, &to_fetch).unwrap();
        to_fetch.drain(..n);
        let closes: Vec<Action> = session.advance();
        if session.torrent().is_some() {
            assert!(closes.contains(&Action::Close(1, 1)), "the fetch's connection is closed: {closes:?}");
            break;
        }
    }
    let t = session.torrent().expect("the metadata arrived and the download session was built");
    assert_eq!(t.meta().info_hash, meta.info_hash);
    assert_eq!(t.meta().info, meta.info);
    session.handle_timeout(Instant::now() + Duration::from_secs(1));
    assert!(
        std::iter::from_fn(|| session.poll_action()).any(|a| a == Action::Connect(addr(2))),
        "the seed is dialled again by the download session"
    );
}

#[test]
fn metadata_that_fails_its_hash_bans_its_sender_and_is_fetched_again_from_others() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = real_torrent(dir.path(), 20_000);
    let size = meta.info.len() as i64;
    let now = Instant::now();
    let mut f = fetch_for(meta.info_hash);
    let out = scripted(&mut f, now, 1, &greeting(meta.info_hash, 9, Some(size)));
    assert_eq!(requests(&out, 5), vec![0], "one small piece, asked of the first peer");
    let mut lie = Vec::new();
    let junk = vec![b'x'; size as usize];
    MetadataMsg::Data { piece: 0, total_size: size, data: &junk }.encode(1, &mut lie);
    f.peer_input(now, 1, &lie).unwrap();
    assert!(!f.has_metadata());
    let actions: Vec<Action> = std::iter::from_fn(|| f.poll_action()).collect();
    assert!(actions.contains(&Action::Close(1, 1)), "the liar is dropped: {actions:?}");
    f.add_peer_addrs([addr(1)]);
    f.handle_timeout(now + Duration::from_secs(60));
    let redial: Vec<Action> = std::iter::from_fn(|| f.poll_action()).collect();
    assert!(!redial.contains(&Action::Connect(addr(1))), "and never dialled again: {redial:?}");
    // An honest peer gets asked, and its copy is taken.
    let out = scripted(&mut f, now, 2, &greeting(meta.info_hash, 8, Some(size)));
    assert_eq!(requests(&out, 5), vec![0]);
    let mut honest = Vec::new();
    MetadataMsg::Data { piece: 0, total_size: size, data: &meta.info }.encode(1, &mut honest);
    f.peer_input(now, 2, &honest).unwrap();
    assert!(f.has_metadata());
}

#[test]
fn impossible_or_conflicting_sizes_are_never_asked_for() {
    let hash = [0x42; 20];
    let now = Instant::now();
    let mut f = fetch_for(hash);
    for (key, size) in [(1, 0), (2, -5), (3, 33 << 20)] {
        let out = scripted(&mut f, now, key, &greeting(hash, key as u8, Some(size)));
        assert!(requests(&out, 5).is_empty(), "size {size} was asked for");
    }
    // The first sane size wins; a peer announcing another one is not asked.
    let out = scripted(&mut f, now, 4, &greeting(hash, 4, Some(40_000)));
    assert_eq!(requests(&out, 5), vec![0]);
    let out = scripted(&mut f, now, 5, &greeting(hash, 5, Some(50_000)));
    assert!(requests(&out, 5).is_empty());
    let out = scripted(&mut f, now, 6, &greeting(hash, 6, Some(40_000)));
    assert_eq!(requests(&out, 5), vec![1], "another piece, from another peer at once");
    assert!(f.progress_line().contains("metadata 0/3 pieces from 2 peers"), "{}", f.progress_line());
}

#[test]
fn a_peer_that_only_rejects_is_asked_less_and_less_often() {
    let hash = [0x43; 20];
    let t0 = Instant::now();
    let mut f = fetch_for(hash);
    scripted(&mut f, t0, 1, &greeting(hash, 1, Some(10_000)));
    let mut asked_at = Vec::new();
    let mut now = t0;
    for _ in 0..40 {
        let mut reject = Vec::new();
        MetadataMsg::Reject { piece: 0 }.encode(1, &mut reject);
        f.peer_input(now, 1, &reject).unwrap();
        now += Duration::from_secs(1);
        f.handle_timeout(now);
        let mut out = Vec::new();
        f.peer_transmit(now, 1, &mut out);
        if !requests(&out, 5).is_empty() {
            asked_at.push(now.duration_since(t0).as_secs());
        }
    }
    assert!(asked_at.len() >= 2 && asked_at.len() <= 6, "asked at {asked_at:?}");
    let gaps: Vec<u64> = asked_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "waits grow: {asked_at:?}");
}

#[test]
fn a_magnet_fetch_uses_the_dht_and_turns_port_messages_into_nodes() {
    let now = Instant::now();
    let mut cfg = Config::new([1; 20], 7001);
    cfg.dht = true;
    let mut f = Fetch::new(start([0x42; 20]), cfg, now);
    assert!(f.uses_dht());
    let mut input = greeting([0x42; 20], 1, None);
    input[27] |= 0x01; // the DHT bit of the handshake's reserved bytes
    wire::encode_port(&mut input, 7200);
    let out = scripted(&mut f, now, 1, &input);
    assert!(Handshake::decode(&out).unwrap().unwrap().supports_dht());
    let nodes: Vec<Action> =
        std::iter::from_fn(|| f.poll_action()).filter(|a| matches!(a, Action::DhtNode(_))).collect();
    assert_eq!(nodes, vec![Action::DhtNode(SocketAddr::new(addr(1).ip(), 7200))]);
    f.stop(now);
    assert!(!f.uses_dht(), "a stopping fetch leaves the DHT");
    // Off unless asked.
    assert!(!fetch_for([0x42; 20]).uses_dht());
}

#[test]
fn peers_the_dht_finds_are_dialled_at_once() {
    let now = Instant::now();
    let mut f = fetch_for([0x42; 20]);
    while f.poll_action().is_some() {}
    f.found_peers(now, [addr(1), addr(2)]);
    let mut dials: Vec<SocketAddr> = std::iter::from_fn(|| f.poll_action())
        .filter_map(|a| if let Action::Connect(to) = a { Some(to) } else { None })
        .collect();
    // The address book hands them out in no particular order.
    dials.sort();
    assert_eq!(dials, vec![addr(1), addr(2)]);
}
