//! Many torrents in one loop: one process seeds two torrents on one peer port, and two `toybt leech` processes, one
//! per torrent, fetch each its own from that port. The seeding loop is this test's own (the library's
//! `start_session` + `add_session`, exactly what the commands run), so the test can look at both sessions at the end;
//! the leechers are the real binary. An incoming connection is routed by the info hash in its handshake; a
//! handshake naming neither torrent is closed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::clients::assert_same_tree;
use common::pseudo_random_bytes;
use common::swarm::{self as sw, STEP};
use toybt::cli::seed;
use toybt::cli::swarm::{SwarmOptions, add_session, start_session};
use toybt::create::{self, Options};
use toybt::metainfo::Metainfo;
use toybt::reactor::Reactor;

const DONE: Duration = Duration::from_secs(60);

/// Writes `len` bytes of content and its .torrent (16 KiB pieces, no tracker) into `dir`.
fn make_torrent(dir: &Path, name: &str, len: usize, seed: u64) -> (Metainfo, std::path::PathBuf) {
    let content = dir.join(name);
    std::fs::write(&content, pseudo_random_bytes(len, seed)).unwrap();
    let opts = Options { piece_length: Some(16 << 10), ..Options::default() };
    let (bytes, meta) = create::create(&content, &opts, &mut |_, _| {}).unwrap();
    let torrent = dir.join(format!("{name}.torrent"));
    std::fs::write(&torrent, bytes).unwrap();
    (meta, torrent)
}

/// Runs `reactor` on its own thread until `stop` is set; hands it back for a look at the sessions.
fn spawn_loop(mut reactor: Reactor, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Reactor> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            reactor.turn(Some(Duration::from_millis(20))).unwrap();
        }
        reactor
    })
}

#[test]
fn one_process_seeds_two_torrents_on_one_port_to_two_leechers() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = dir.path().join("seed");
    std::fs::create_dir(&seeds).unwrap();
    let (meta_a, torrent_a) = make_torrent(&seeds, "a.bin", 3 << 20, 1);
    let (meta_b, torrent_b) = make_torrent(&seeds, "b.bin", (2 << 20) + 12_345, 2);
    assert_ne!(meta_a.info_hash, meta_b.info_hash);

    let plan_a = seed::plan(meta_a.clone(), seeds.join("a.bin"), SwarmOptions::loopback(), None).unwrap();
    let plan_b = seed::plan(meta_b.clone(), seeds.join("b.bin"), SwarmOptions::loopback(), None).unwrap();
    let (mut reactor, addr) = start_session(plan_a).unwrap();
    add_session(&mut reactor, plan_b, addr.port()).unwrap();
    assert_eq!(reactor.services.torrents.len(), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let seeder = spawn_loop(reactor, stop.clone());

    // A handshake for a torrent this process does not serve is closed without an answer.
    let mut stranger = TcpStream::connect(addr).unwrap();
    let mut hs = vec![19];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0; 8]);
    hs.extend_from_slice(&[0x77; 20]);
    hs.extend_from_slice(b"-XX0000-stranger0000");
    stranger.write_all(&hs).unwrap();
    stranger.set_read_timeout(Some(STEP)).unwrap();
    let mut got = Vec::new();
    let closed = stranger.read_to_end(&mut got);
    assert!(closed.is_ok(), "a connection for an unknown info hash was not closed: {closed:?}");
    assert!(got.is_empty(), "an unknown info hash got an answer: {got:?}");

    let peer = addr.to_string();
    let out_a = dir.path().join("leech-a");
    let out_b = dir.path().join("leech-b");
    let extra = ["--seed-time", "0", "--peer", peer.as_str()];
    let (mut leech_a, _) = sw::leech("leech-a", &torrent_a, &out_a, &extra);
    let (mut leech_b, _) = sw::leech("leech-b", &torrent_b, &out_b, &extra);
    for (l, size) in [(&mut leech_a, meta_a.total_length), (&mut leech_b, meta_b.total_length)] {
        sw::assert_exits_0(l, DONE);
        let t = sw::totals(l, STEP);
        assert!(t.complete && t.hash_failures == 0, "{}: {t:?}", l.name);
        assert_eq!(t.downloaded, size, "{}: every byte from the one seed, once", l.name);
    }
    assert_same_tree(&seeds.join("a.bin"), &out_a.join("a.bin"));
    assert_same_tree(&seeds.join("b.bin"), &out_b.join("b.bin"));

    stop.store(true, Ordering::Relaxed);
    let reactor = seeder.join().unwrap();
    let uploaded = |hash: &[u8; 20]| reactor.services.torrents[hash].torrent().unwrap().uploaded();
    assert_eq!(uploaded(&meta_a.info_hash), meta_a.total_length, "torrent a served only to its leecher");
    assert_eq!(uploaded(&meta_b.info_hash), meta_b.total_length, "torrent b served only to its leecher");
}
