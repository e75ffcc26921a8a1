//! toybt ↔ toybt as processes on 127.0.0.1: a tracker, seeds and leechers moving real data, compared byte for byte.
//! Swarms whose leechers must trade put the seed behind a [`Throttle`] (a slow uplink), so most of the data can only
//! come from other leechers; the `totals:` line each process prints at exit shows who sent what.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::clients::{assert_same_tree, wait_scrape, write_random_file, write_random_tree};
use common::hostile::{Msg, Throttle, WirePeer};
use common::swarm::{self as sw, STEP, Totals};
use common::{Proc, pseudo_random_bytes};
use tempfile::TempDir;

/// A whole transfer of a few MiB, with room for a loaded machine.
const DONE: Duration = Duration::from_secs(60);
/// A stopping process sends `stopped` and exits within this.
const STOPPING: Duration = Duration::from_secs(10);

fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// What a swarm run measured.
struct SwarmRun {
    seed: Totals,
    leechers: Vec<Totals>,
    /// Bytes the seed sent through its throttle.
    relayed: u64,
    elapsed: Duration,
}

/// A tracker, a seed of `content` (under `dir/seed`) reachable only through a throttle of `rate` bytes/s, and
/// `n` leechers that find each other through the tracker and leave when done. Checks every leecher's copy.
fn swarm(dir: &Path, content: &Path, n: usize, rate: u64) -> SwarmRun {
    let name = content.file_name().unwrap();
    // The seed's copy names no tracker: leechers reach it only through the throttle, never directly.
    let torrent = sw::create_torrent(content, &dir.join("seed.torrent"), "16K", None);
    let (_tracker, tracker_addr) = sw::tracker(&torrent.path);
    let tracked = torrent.with_announce(&sw::announce_url(tracker_addr), &dir.join("tracked.torrent"));
    // Without PEX: leechers would tell it of each other, and it would dial them around the throttle.
    let (mut seed, seed_addr) = sw::seed("seed", &torrent.path, content, &["--no-pex"]);
    let throttle = Throttle::start(seed_addr, rate);
    let via = throttle.addr.to_string();

    let started = Instant::now();
    let mut leechers: Vec<_> = (0..n)
        .map(|i| {
            let out = dir.join(format!("leech{i}"));
            sw::leech(&format!("leech{i}"), &tracked.path, &out, &["--seed-time", "0", "--peer", &via]).0
        })
        .collect();
    let mut totals = Vec::new();
    for (i, l) in leechers.iter_mut().enumerate() {
        sw::assert_exits_0(l, DONE);
        let t = sw::totals(l, STEP);
        assert!(t.complete && t.hash_failures == 0, "leech{i}: {t:?}");
        assert_same_tree(content, &dir.join(format!("leech{i}")).join(name));
        totals.push(t);
    }
    let elapsed = started.elapsed();
    let scrape = wait_scrape(tracker_addr, &tracked.info_hash, STEP, |s| s.downloaded == n as i64);
    assert_eq!(scrape.incomplete, 0, "every leecher said `completed` and then `stopped`: {scrape:?}");
    let seed = sw::stop(&mut seed, STOPPING);
    SwarmRun { seed, leechers: totals, relayed: throttle.relayed(), elapsed }
}

/// The leechers got most of the data from each other, not from the seed.
fn assert_traded(run: &SwarmRun, size: u64) {
    let n = run.leechers.len() as u64;
    let down: u64 = run.leechers.iter().map(|t| t.downloaded).sum();
    let up: u64 = run.leechers.iter().map(|t| t.uploaded).sum();
    eprintln!(
        "swarm of {n} leechers, {size} bytes: {:.2}s; seed uploaded {} ({} through the throttle), leechers uploaded \
         {up}, downloaded {down}",
        run.elapsed.as_secs_f64(),
        run.seed.uploaded,
        run.relayed
    );
    assert!(down >= n * size, "leechers downloaded {down} bytes in all, less than {n} copies of {size}");
    // Every piece a leecher got came from the seed or from another leecher; the seed could not have sent them all.
    assert!(run.relayed < down * 3 / 4, "the seed sent {} of the {down} bytes the leechers received", run.relayed);
    assert!(up >= size, "leechers uploaded only {up} bytes to each other, not even one copy of {size}");
}

#[test]
fn swarm_single_file_leechers_trade() {
    let dir = tempdir("toybt-swarm-single");
    let size = 3 * 1024 * 1024 + 12_345;
    let content = dir.path().join("seed").join("big.bin");
    write_random_file(&content, size, 11);
    let run = swarm(dir.path(), &content, 4, 2 << 20);
    assert_traded(&run, size as u64);
}

#[test]
fn swarm_multi_file_leechers_trade() {
    let dir = tempdir("toybt-swarm-multi");
    let content = dir.path().join("seed").join("album");
    let files = [
        ("a.bin", 1_000_003),
        ("empty.txt", 0),
        ("docs/readme.txt", 777),
        ("docs/deep/er/b.bin", 16_384 * 5 + 1),
        ("docs/deep/er/empty", 0),
        ("z/c.bin", 1_234_567),
        ("z/tiny", 3),
    ];
    write_random_tree(&content, &files, 23);
    let size: usize = files.iter().map(|(_, l)| l).sum();
    let run = swarm(dir.path(), &content, 5, 1 << 20);
    assert_traded(&run, size as u64);
    for empty in ["empty.txt", "docs/deep/er/empty"] {
        let got = dir.path().join("leech0/album").join(empty);
        assert_eq!(fs::metadata(&got).map(|m| m.len()).ok(), Some(0), "{} is created empty", got.display());
    }
}

/// A copy of `data` with one byte flipped in every piece for which `damage` is true.
fn damaged(data: &[u8], piece_len: usize, damage: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut out = data.to_vec();
    for (i, piece) in out.chunks_mut(piece_len).enumerate() {
        if damage(i) {
            piece[piece.len() / 2] ^= 0xFF;
        }
    }
    out
}

#[test]
fn leech_from_two_seeds_at_once() {
    // Each seed has every other piece intact, so the download completes only if both serve it at once.
    let dir = tempdir("toybt-two-seeds");
    let piece = 16 * 1024;
    let data = pseudo_random_bytes(2 * 1024 * 1024 + 1000, 5);
    let pieces = data.len().div_ceil(piece);
    let original = dir.path().join("orig").join("data.bin");
    write_file(&original, &data);
    let torrent = sw::create_torrent(&original, &dir.path().join("t.torrent"), "16K", None);
    let (a_data, b_data) = (dir.path().join("a/data.bin"), dir.path().join("b/data.bin"));
    write_file(&a_data, &damaged(&data, piece, |i| i % 2 == 1));
    write_file(&b_data, &damaged(&data, piece, |i| i % 2 == 0));
    let (mut a, a_addr) = sw::seed("seed-a", &torrent.path, &a_data, &[]);
    let (mut b, b_addr) = sw::seed("seed-b", &torrent.path, &b_data, &[]);
    for (s, missing) in [(&a, pieces / 2), (&b, pieces.div_ceil(2))] {
        s.wait_line(&format!("{missing} of {pieces} pieces are missing or damaged"), STEP);
    }

    let out = dir.path().join("leech");
    let (a_s, b_s) = (a_addr.to_string(), b_addr.to_string());
    let (mut l, _) = sw::leech("leech", &torrent.path, &out, &["--seed-time", "0", "--peer", &a_s, "--peer", &b_s]);
    sw::assert_exits_0(&mut l, DONE);
    let lt = sw::totals(&l, STEP);
    assert!(lt.complete && lt.hash_failures == 0, "{lt:?}");
    assert_same_tree(&original, &out.join("data.bin"));

    let (ta, tb) = (sw::stop(&mut a, STOPPING), sw::stop(&mut b, STOPPING));
    let size_of = |odd: bool| -> u64 {
        (0..pieces).filter(|i| (i % 2 == 1) == odd).map(|i| data.len().min((i + 1) * piece) - i * piece).sum::<usize>()
            as u64
    };
    eprintln!("seed a uploaded {}, seed b uploaded {}, leech {lt:?}", ta.uploaded, tb.uploaded);
    assert!(ta.uploaded >= size_of(false), "seed a sent {} bytes, less than its even pieces", ta.uploaded);
    assert!(tb.uploaded >= size_of(true), "seed b sent {} bytes, less than its odd pieces", tb.uploaded);
}

fn write_file(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// Counts the pieces a peer says it has (its bitfield and `have`s) until `enough` or the time runs out.
fn watch_pieces(w: &mut WirePeer, pieces: u32, enough: u32, timeout: Duration) -> u32 {
    let mut has = vec![false; pieces as usize];
    let deadline = Instant::now() + timeout;
    let count = |has: &[bool]| has.iter().filter(|h| **h).count() as u32;
    while count(&has) < enough {
        let left = deadline.saturating_duration_since(Instant::now());
        match w.recv(left) {
            Ok(Msg::Have(i)) => has[i as usize] = true,
            Ok(Msg::Bitfield(bits)) => {
                for (i, h) in has.iter_mut().enumerate() {
                    *h |= bits[i / 8] & (0x80 >> (i % 8)) != 0;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("watching a peer's pieces: {e:?} with {} of {enough} seen", count(&has)),
        }
    }
    count(&has)
}

#[test]
fn seed_restarted_mid_transfer() {
    let dir = tempdir("toybt-restart");
    let data = pseudo_random_bytes(2 * 1024 * 1024 + 4321, 9);
    let content = dir.path().join("seed/data.bin");
    write_file(&content, &data);
    let torrent = sw::create_torrent(&content, &dir.path().join("t.torrent"), "16K", None);
    let pieces = data.len().div_ceil(16 * 1024) as u32;
    let (mut first, seed_addr) = sw::seed("seed-1", &torrent.path, &content, &["--no-pex"]);
    // A slow link keeps the transfer going long enough to cut it in the middle.
    let throttle = Throttle::start(seed_addr, 1 << 20);
    let out = dir.path().join("leech");
    let via = throttle.addr.to_string();
    let (mut l, leech_addr) = sw::leech("leech", &torrent.path, &out, &["--seed-time", "0", "--peer", &via]);

    // Our own peer watches the leecher's `have`s and pulls the plug a quarter of the way.
    let mut watcher = WirePeer::connect(leech_addr, toybt::wire::Limits::new(pieces));
    watcher.handshake(torrent.info_hash, common::hostile::test_peer_id(1), STEP).unwrap();
    let seen = watch_pieces(&mut watcher, pieces, pieces / 4, DONE);
    first.kill9();
    assert!(seen < pieces, "the leecher was complete before the seed was killed");
    drop(throttle);

    // The seed comes back (and checks its data again) and dials the leecher itself.
    let leech_s = leech_addr.to_string();
    let (mut second, _) = sw::seed("seed-2", &torrent.path, &content, &["--peer", &leech_s]);
    sw::assert_exits_0(&mut l, DONE);
    let lt = sw::totals(&l, STEP);
    assert!(lt.complete && lt.hash_failures == 0, "{lt:?}");
    assert_same_tree(&content, &out.join("data.bin"));
    let st = sw::stop(&mut second, STOPPING);
    let kept = seen as u64 * 16 * 1024;
    eprintln!("restart: leecher had {seen} of {pieces} pieces; the restarted seed sent {}", st.uploaded);
    // The relay still passes on what the dead seed had written, so for a moment the leecher has two sources and its
    // endgame may ask both for a last few blocks; re-fetching what it had would be 32 blocks more.
    let endgame_slack = 8 * 16 * 1024;
    assert!(
        st.uploaded <= data.len() as u64 - kept + endgame_slack,
        "the restarted seed sent {} bytes: the leecher did not keep the {kept} it had",
        st.uploaded
    );
}

/// A seed of a fresh random file under `dir`, trackerless unless `tracker` is given.
fn small_torrent(dir: &Path, len: usize, tracker: Option<&str>) -> (PathBuf, PathBuf) {
    let content = dir.join("seed/small.bin");
    write_file(&content, &pseudo_random_bytes(len, len as u64));
    let torrent = sw::create_torrent(&content, &dir.join("small.torrent"), "16K", tracker);
    (torrent.path, content)
}

#[test]
fn seed_time_n_exits_n_seconds_after_completion() {
    let dir = tempdir("toybt-seed-time");
    let (torrent, content) = small_torrent(dir.path(), 300_000, None);
    let (_seed, seed_addr) = sw::seed("seed", &torrent, &content, &[]);
    let out = dir.path().join("leech");
    let peer = seed_addr.to_string();
    let (mut l, _) = sw::leech("leech", &torrent, &out, &["--seed-time", "2", "--peer", &peer]);
    l.wait_line("download complete", DONE);
    let done = Instant::now();
    sw::assert_exits_0(&mut l, Duration::from_secs(10));
    let seeded = done.elapsed();
    assert!(
        seeded >= Duration::from_millis(1800) && seeded < Duration::from_secs(5),
        "--seed-time 2 exited {seeded:?} after the download completed"
    );
    assert!(sw::totals(&l, STEP).complete);
    assert_same_tree(&content, &out.join("small.bin"));
}

#[test]
fn sigterm_sends_stopped_and_exits_0() {
    let dir = tempdir("toybt-sigterm");
    let (torrent, content) = small_torrent(dir.path(), 200_000, None);
    let (_tracker, tracker_addr) = sw::tracker(&torrent);
    let tracked = common::clients::Torrent::load(&torrent)
        .with_announce(&sw::announce_url(tracker_addr), &dir.path().join("tracked.torrent"));
    let hash = tracked.info_hash;

    // A leecher with nobody to download from stays a leecher until it is told to stop.
    let (mut l, _) = sw::leech("leech", &tracked.path, &dir.path().join("leech"), &[]);
    wait_scrape(tracker_addr, &hash, STEP, |s| s.incomplete == 1);
    let t0 = Instant::now();
    let lt = sw::stop(&mut l, STOPPING);
    eprintln!("leech stopped in {:?}", t0.elapsed());
    assert!(!lt.complete);
    l.wait_line("stopping on SIGTERM", STEP);
    assert_eq!(wait_scrape(tracker_addr, &hash, STEP, |s| s.incomplete == 0).complete, 0);

    let (mut s, _) = sw::seed("seed", &tracked.path, &content, &[]);
    wait_scrape(tracker_addr, &hash, STEP, |s| s.complete == 1);
    let t0 = Instant::now();
    let st = sw::stop(&mut s, STOPPING);
    eprintln!("seed stopped in {:?}", t0.elapsed());
    assert!(st.complete);
    // `stopped` reached the tracker before the exit: the seed is gone from the swarm at once.
    let now = common::clients::scrape(tracker_addr, &hash).unwrap();
    assert_eq!((now.complete, now.incomplete), (0, 0), "{now:?}");
}

#[test]
fn embedded_tracker_serves_a_leecher_that_knows_only_the_announce_url() {
    let dir = tempdir("toybt-embedded");
    let (torrent, content) = small_torrent(dir.path(), 500_000, None);
    let (mut seed, _) = sw::seed("seed", &torrent, &content, &["--tracker-port", "0"]);
    let tracker_addr: std::net::SocketAddr = {
        let line = seed.wait_line("tracker listening on", STEP);
        ([127, 0, 0, 1], common::port_from_line(&line)).into()
    };
    // Same info hash, announce URL pointing at the seed's own tracker.
    let tracked = common::clients::Torrent::load(&torrent)
        .with_announce(&sw::announce_url(tracker_addr), &dir.path().join("tracked.torrent"));
    let out = dir.path().join("leech");
    let (mut l, _) = sw::leech("leech", &tracked.path, &out, &["--seed-time", "0"]);
    sw::assert_exits_0(&mut l, DONE);
    assert!(sw::totals(&l, STEP).complete);
    assert_same_tree(&content, &out.join("small.bin"));
    let s = wait_scrape(tracker_addr, &tracked.info_hash, STEP, |s| s.downloaded == 1);
    assert_eq!((s.complete, s.incomplete), (1, 0), "only the seed is left: {s:?}");
    let st = sw::stop(&mut seed, STOPPING);
    assert_eq!(st.uploaded, 500_000);
}

#[test]
fn cli_errors_exit_2_with_a_message() {
    let dir = tempdir("toybt-cli-errors");
    let (single, content) = small_torrent(dir.path(), 20_000, None);
    let folder = dir.path().join("album");
    write_random_tree(&folder, &[("x.bin", 1000), ("sub/y.bin", 2000)], 3);
    let multi = sw::create_torrent(&folder, &dir.path().join("multi.torrent"), "16K", None).path;
    let missing = dir.path().join("nowhere.bin");
    let malformed = common::fixtures().join("malformed/not-bencode.torrent");
    let (single, multi, content, folder, missing, malformed) = (
        single.to_str().unwrap(),
        multi.to_str().unwrap(),
        content.to_str().unwrap(),
        folder.to_str().unwrap(),
        missing.to_str().unwrap(),
        malformed.to_str().unwrap(),
    );
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    // Download folders where the content's name is taken by the other kind.
    let (with_folder, with_file) = (dir.path().join("f1"), dir.path().join("f2"));
    fs::create_dir_all(with_folder.join("small.bin")).unwrap();
    write_file(&with_file.join("album"), b"not a folder");
    let (dir_with_folder, dir_with_file) = (with_folder.to_str().unwrap(), with_file.to_str().unwrap());
    let cases: &[(&[&str], &str)] = &[
        (&["seed", single, missing], "nowhere.bin: no such file or folder"),
        (&["seed", single, folder], "album: the torrent describes a file"),
        (&["seed", multi, content], "small.bin: the torrent describes a folder"),
        (&["seed", malformed, content], "not-bencode.torrent: "),
        (&["leech", malformed, "-o", out], "not-bencode.torrent: "),
        (&["leech", missing, "-o", out], "nowhere.bin: no such file"),
        (&["leech", single, "-o", content], "small.bin: not a folder"),
        (&["leech", single, "-o", dir_with_folder], "small.bin: is in the way, the torrent describes a file"),
        (&["leech", multi, "-o", dir_with_file], "album: is in the way, the torrent describes a folder"),
        (&["seed", single], "give the data path"),
        (&["leech"], "give the .torrent file"),
        (&["leech", single, "--seed-time", "soon"], "soon"),
        (&["seed", single, content, "--port", "70000"], "70000"),
    ];
    for (args, want) in cases {
        let mut all = args.to_vec();
        if !all.contains(&"--port") {
            // Should a case wrongly start, it must not take the default port.
            all.extend(["--port", "0", "--bind", "127.0.0.1"]);
        }
        let mut p = Proc::toybt("toybt", &all);
        let code = p.wait_exit(STEP);
        // Waits for the output to be read to its end, too.
        let msg = p.wait_line("toybt: ", STEP);
        assert_eq!(code, Some(2), "toybt {all:?}: exit code; output:\n{}", p.output());
        assert!(msg.contains(want), "toybt {all:?}: {msg:?} does not say {want:?}");
    }
}
