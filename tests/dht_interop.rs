//! toybt and libtorrent in one Mainline DHT on 127.0.0.1, both directions, with nothing but the DHT to find each
//! other: a trackerless torrent, a magnet link with no `tr` and no `x.pe`, and a few `toybt dht` nodes as the only
//! bootstrap. (a) a libtorrent seed announces itself and a toybt leech finds it; (b) a toybt seed announces itself
//! and a libtorrent leech finds it. Each download is compared byte for byte with the seed's file.
//!
//! Every test has its own bootstrap nodes: libtorrent's bootstrap stalls on a node that hands out dead peers from an
//! earlier test (INTEROP.md).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::clients::{self, Torrent};
use common::dht::{assert_leech_completes, dht_network, toybt_dht_leech, toybt_dht_seed, wait_announced};
use common::swarm::{self as sw, STEP};
use common::{Proc, pseudo_random_bytes};

/// From the leech's start to done: its DHT lookup (a few round trips here), the metadata, then 3 MiB.
const DONE: Duration = Duration::from_secs(120);
/// libtorrent's own DHT lookup and announce after it starts (its bootstrap takes a few seconds).
const LT_ANNOUNCED: Duration = Duration::from_secs(60);
/// A few bootstrap nodes: enough for a lookup to have several nodes to ask, few enough to start quickly.
const NODES: usize = 3;

/// A trackerless single-file torrent of 3 MiB + 7 bytes made by `toybt create` in `dir/seed`; returns it, the data
/// and the folder that holds the file.
fn trackerless(dir: &Path, seed: u64) -> (Torrent, Vec<u8>, std::path::PathBuf) {
    let seed_dir = dir.join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let content = seed_dir.join("dht-interop.bin");
    let data = pseudo_random_bytes((3 << 20) + 7, seed);
    std::fs::write(&content, &data).unwrap();
    let torrent = sw::create_torrent(&content, &dir.join("t.torrent"), "64K", None);
    (torrent, data, seed_dir)
}

/// The magnet link that names only the info hash: no tracker, no peer.
fn bare_magnet(torrent: &Torrent) -> String {
    format!("magnet:?xt=urn:btih:{}", torrent.hex_hash())
}

/// lt_client.py's switches that join the DHT through `nodes`.
fn dht_flags(nodes: &[(Proc, SocketAddr)]) -> Vec<String> {
    nodes.iter().flat_map(|(_, a)| ["--dht-node".to_string(), a.to_string()]).collect()
}

fn assert_same_bytes(path: &Path, data: &[u8]) {
    // libtorrent may write its last blocks a moment after it says it finished (see clients::Fixture).
    common::wait_until(Duration::from_secs(5), || std::fs::read(path).is_ok_and(|got| got == data));
    let got = std::fs::read(path).unwrap_or_default();
    assert!(got == data, "{} is the seed's file byte for byte ({} of {} bytes)", path.display(), got.len(), data.len());
}

#[test]
fn a_toybt_leech_finds_a_trackerless_libtorrent_seed_through_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = dht_network(&dir.path().join("nodes"), NODES);
    let (torrent, data, seed_dir) = trackerless(dir.path(), 51);

    let flags = dht_flags(&nodes);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let seed = clients::libtorrent_with("seed", &torrent.path, &seed_dir, &[], &flags);
    seed.wait_line("seeding", STEP);
    // libtorrent's first lookup runs before its table has a node; a later one announces it. A get_peers answer that
    // names one peer names the seed itself (the only peer there is): the DHT holds its announce.
    seed.wait_line("dht_reply 1", LT_ANNOUNCED);

    let out = dir.path().join("leech");
    let link = bare_magnet(&torrent);
    let mut leech = toybt_dht_leech(&link, &out, nodes[NODES - 1].1, &dir.path().join("leech-dht.dat"));
    assert_leech_completes(&mut leech, DONE);
    assert_same_bytes(&out.join(&torrent.name), &data);
    drop(seed);
}

#[test]
fn a_libtorrent_leech_finds_a_trackerless_toybt_seed_through_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = dht_network(&dir.path().join("nodes"), NODES);
    let (torrent, data, seed_dir) = trackerless(dir.path(), 52);

    let content = seed_dir.join(&torrent.name);
    let seed = toybt_dht_seed(&torrent.path, &content, nodes[0].1, &dir.path().join("seed-dht.dat"));
    wait_announced(&seed, &torrent.hex_hash());

    let out = dir.path().join("leech");
    std::fs::create_dir_all(&out).unwrap();
    let flags = dht_flags(&nodes);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut leech = clients::libtorrent_with("leech", bare_magnet(&torrent), &out, &[], &flags);
    leech.wait_line("metadata", DONE);
    leech.wait_done(DONE);
    assert_same_bytes(&out.join(&torrent.name), &data);
    drop(seed);
}
