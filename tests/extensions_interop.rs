//! toybt's protocol extensions against real clients on 127.0.0.1: BEP 9 metadata served to libtorrent, aria2 and
//! Transmission started from the magnet link `toybt info --magnet` prints; BEP 6 Fast (and the BEP 10 bit) negotiated
//! with libtorrent and Transmission, as toybt's own `ADDR: peer CLIENT (...) [fast ext]` line says; and BEP 11 PEX,
//! where a toybt leech told of one libtorrent peer finds the rest of the swarm through it. Every download is compared
//! byte for byte with the seed's data.
//!
//! Each test is one scenario and the tests run side by side; most of the time goes to waiting on the clients
//! (Transmission drops its peers once a magnet's metadata has come, and waits ~10 s before it asks for data).
//! The toybt processes log at debug level (RUST_LOG overrides it); a failing test prints every process's output.

mod common;

use common::clients::{self, Fixture, Launched};
use common::{Proc, port_from_line, run_toybt};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bound on a toybt process printing its listening line (it checks a few MiB of data first).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on one download from a magnet link, metadata included; libtorrent and aria2 take 1-5 s here.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Transmission closes every peer to check a magnet's data once the metadata has come, so the toybt seed reaches it
/// again only when it redials (30 s later), and then Transmission waits up to 10 s before it asks: ~50 s here.
const TRANSMISSION_MAGNET_TIMEOUT: Duration = Duration::from_secs(100);
/// libtorrent sends its first PEX message within a few seconds of the extended handshake (then once a minute).
const PEX_TIMEOUT: Duration = Duration::from_secs(90);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(15);

/// The toybt binary with debug logging unless RUST_LOG says otherwise (PEX news is a debug line).
fn toybt(name: &str, args: &[String]) -> Proc {
    let mut cmd = common::toybt_command(args);
    cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()));
    Proc::spawn(name, cmd)
}

fn addr_on(line: &str) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port_from_line(line)))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A running `toybt seed` and the addresses it listens on.
struct ToybtSeed {
    proc: Proc,
    addr: SocketAddr,
    /// The tracker it runs itself (`--tracker-port 0`).
    tracker: Option<SocketAddr>,
}

/// `toybt seed` of `fx`'s data on 127.0.0.1, dialling `peers`, with its own tracker if `own_tracker`.
fn toybt_seed(fx: &Fixture, peers: &[SocketAddr], own_tracker: bool) -> ToybtSeed {
    let content = fx.seed_dir.join(&fx.torrent.name);
    let mut args = strings(&["seed", fx.torrent.path.to_str().unwrap(), content.to_str().unwrap()]);
    args.extend(strings(&["--port", "0", "--bind", "127.0.0.1"]));
    for p in peers {
        args.extend(["--peer".to_string(), p.to_string()]);
    }
    if own_tracker {
        args.extend(strings(&["--tracker-port", "0"]));
    }
    let proc = toybt("toybt-seed", &args);
    let tracker = own_tracker.then(|| addr_on(&proc.wait_line("tracker listening on", START_TIMEOUT)));
    let addr = addr_on(&proc.wait_line("peer listening on", START_TIMEOUT));
    ToybtSeed { proc, addr, tracker }
}

/// `toybt info --magnet TORRENT`: the torrent's magnet link (info hash, name, every tracker).
fn magnet_of(torrent: &Path) -> String {
    let (code, stdout, stderr) = run_toybt(&["info", "--magnet", torrent.to_str().unwrap()]);
    assert_eq!(code, 0, "toybt info --magnet failed:\n{stdout}{stderr}");
    let link = stdout.trim().to_string();
    assert!(link.starts_with("magnet:?xt=urn:btih:"), "{link}");
    link
}

/// toybt's `ADDR: peer CLIENT (we seed|we leech) [...]` line for the connection with `addr`.
fn peer_line(p: &Proc, addr: SocketAddr, timeout: Duration) -> String {
    p.wait_line(&format!("{addr}: peer "), timeout)
}

fn report(test: &str, start: Instant, download: Duration) {
    eprintln!("timing {test}: download {download:.1?}, whole test {:.1?}", start.elapsed());
}

/// Waits for `leech` (started with the magnet link) to say `metadata` and then `finished`.
fn wait_magnet_download(leech: &mut Launched) -> Duration {
    leech.wait_line("metadata", DOWNLOAD_TIMEOUT);
    leech.wait_done(DOWNLOAD_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------------------------
// BEP 9: real clients started from toybt's magnet link

/// The seed runs the tracker itself; the magnet's `tr` is all libtorrent knows.
#[test]
fn libtorrent_leech_from_magnet_finds_toybt_seed_through_tracker() {
    let start = Instant::now();
    let mut fx = Fixture::single_file(61);
    let seed = toybt_seed(&fx, &[], true);
    let tracker = seed.tracker.unwrap();
    fx.announce_to(&format!("http://{tracker}/announce"));
    clients::wait_scrape(tracker, &fx.torrent.info_hash, SCRAPE_TIMEOUT, |s| s.complete == 1);

    let magnet = magnet_of(&fx.torrent.path);
    assert!(magnet.contains(&format!("&tr=http%3A%2F%2F127.0.0.1%3A{}%2Fannounce", tracker.port())), "{magnet}");
    let mut leech = clients::libtorrent_leech(&magnet, &fx.leech_dir, &[]);
    let took = wait_magnet_download(&mut leech);
    fx.assert_leech_has_everything();
    seed.proc.wait_line(": peer libtorrent", Duration::ZERO);
    report("libtorrent_leech_from_magnet_finds_toybt_seed_through_tracker", start, took);
}

/// No tracker: the magnet names the seed with `x.pe`, which libtorrent's parse_magnet_uri turns into a peer to dial.
#[test]
fn libtorrent_leech_from_magnet_dials_toybt_seed_given_by_x_pe() {
    let start = Instant::now();
    let fx = Fixture::multi_file(62);
    let seed = toybt_seed(&fx, &[], false);
    let magnet = format!("{}&x.pe={}", magnet_of(&fx.torrent.path), seed.addr);
    let mut leech = clients::libtorrent_leech(&magnet, &fx.leech_dir, &[]);
    let took = wait_magnet_download(&mut leech);
    fx.assert_leech_has_everything();
    report("libtorrent_leech_from_magnet_dials_toybt_seed_given_by_x_pe", start, took);
}

/// aria2 reads only `tr` from a magnet (no `x.pe`). Through opentracker: while aria2 fetches the metadata it announces
/// `left=0`, and toybt's tracker, like many, answers a seed with leechers only, so it would hear of no toybt seed.
#[test]
fn aria2_from_magnet_downloads_from_toybt_seed() {
    let start = Instant::now();
    let mut fx = Fixture::single_file(63);
    let tracker = clients::opentracker(&[fx.torrent.info_hash]);
    fx.announce_to(&tracker.announce_url());
    let _seed = toybt_seed(&fx, &[], false);
    clients::wait_scrape(tracker.addr(), &fx.torrent.info_hash, SCRAPE_TIMEOUT, |s| s.complete == 1);

    let magnet = magnet_of(&fx.torrent.path);
    let started = Instant::now();
    let mut leech = clients::aria2_magnet_leech(&magnet, &fx.leech_dir);
    match leech.wait_exit(DOWNLOAD_TIMEOUT) {
        Some(0) => {}
        other => panic!("aria2: exit {other:?} (None: still running after {DOWNLOAD_TIMEOUT:?})"),
    }
    let took = started.elapsed();
    fx.assert_leech_has_everything();
    assert!(!fx.leech_dir.join(format!("{}.torrent", fx.torrent.hex_hash())).exists(), "aria2 saved the metadata");
    report("aria2_from_magnet_downloads_from_toybt_seed", start, took);
}

/// Transmission keeps no 127.x peer a tracker hands out, so the toybt seed dials it (started first). Once it has
/// the metadata Transmission closes its peers and checks the (empty) data; the seed's redial finishes the job.
#[test]
fn transmission_from_magnet_downloads_from_toybt_seed_that_dials_it() {
    let start = Instant::now();
    let fx = Fixture::single_file(64);
    let magnet = magnet_of(&fx.torrent.path);
    let mut leech = clients::transmission_leech(&magnet, &fx.leech_dir);
    let seed = toybt_seed(&fx, &[leech.addr()], false);
    let took = leech.wait_done(TRANSMISSION_MAGNET_TIMEOUT);
    fx.assert_leech_has_everything();
    assert!(peer_line(&seed.proc, leech.addr(), Duration::ZERO).contains("Transmission"));
    report("transmission_from_magnet_downloads_from_toybt_seed_that_dials_it", start, took);
}

// ---------------------------------------------------------------------------------------------------------------
// BEP 6 Fast, seen from toybt's side

/// A toybt leech dials a libtorrent seed (`--peer`) and exits once done; its line for the seed says both reserved
/// bits, Fast and BEP 10, were on on both sides.
#[test]
fn fast_extension_is_negotiated_with_libtorrent() {
    let start = Instant::now();
    let fx = Fixture::single_file(65);
    let lt = clients::libtorrent_seed(&fx.torrent.path, &fx.seed_dir, &[]);
    let mut args = strings(&["leech", fx.torrent.path.to_str().unwrap(), "-o", fx.leech_dir.to_str().unwrap()]);
    args.extend(strings(&["--port", "0", "--bind", "127.0.0.1", "--seed-time", "0", "--peer"]));
    args.push(lt.addr().to_string());
    let started = Instant::now();
    let mut leech = toybt("toybt-leech", &args);
    let line = peer_line(&leech, lt.addr(), DOWNLOAD_TIMEOUT);
    assert!(line.contains("peer libtorrent") && line.contains("(we leech) [fast ext]"), "{line}");
    assert_eq!(leech.wait_exit(DOWNLOAD_TIMEOUT), Some(0), "toybt leech did not finish");
    let took = started.elapsed();
    fx.assert_leech_has_everything();
    report("fast_extension_is_negotiated_with_libtorrent", start, took);
}

/// A toybt seed dials a Transmission leech; Transmission closes peers that send Fast messages without having
/// negotiated them, so the finished download also shows toybt kept to what was agreed.
#[test]
fn fast_extension_is_negotiated_with_transmission() {
    let start = Instant::now();
    let fx = Fixture::single_file(66);
    let mut leech = clients::transmission_leech(&fx.torrent.path, &fx.leech_dir);
    let seed = toybt_seed(&fx, &[leech.addr()], false);
    let line = peer_line(&seed.proc, leech.addr(), START_TIMEOUT);
    assert!(line.contains("peer Transmission") && line.contains("(we seed) [fast ext]"), "{line}");
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();
    report("fast_extension_is_negotiated_with_transmission", start, took);
}

// ---------------------------------------------------------------------------------------------------------------
// BEP 11 PEX

/// Overwrites `path` from byte `from` on with zeros: the pieces there fail a client's check.
fn spoil_from(path: &Path, from: usize) {
    let mut data = std::fs::read(path).unwrap();
    data[from..].fill(0);
    std::fs::write(path, data).unwrap();
}

/// libtorrent seeds S and L2 and a libtorrent peer L1 that holds only the first half of the pieces and serves what it
/// has (upload mode); L1 is connected to S and L2, and only L1 speaks PEX. The toybt leech is given L1 alone: it can
/// finish only by dialling S or L2, which it hears of only through L1's PEX. (`--keep-seed-links`: libtorrent would
/// otherwise close the links between S, L2 and the upload-only L1, and L1 would have no one to tell of.)
#[test]
fn toybt_leech_finds_the_swarm_through_libtorrent_pex() {
    let start = Instant::now();
    let fx = Fixture::single_file(67);
    let name = &fx.torrent.name;
    let copy = |dir: &str| {
        let d = fx.dir.path().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(fx.seed_dir.join(name), d.join(name)).unwrap();
        d
    };
    let (l1_dir, l2_dir) = (copy("l1"), copy("l2"));
    spoil_from(&l1_dir.join(name), 6 * 256 * 1024); // L1 keeps pieces 0-5 of 13

    let t = &fx.torrent.path;
    let keep = "--keep-seed-links";
    let s = clients::libtorrent_with("seed", t, &fx.seed_dir, &[], &[keep]);
    s.wait_line("seeding", clients::READY_TIMEOUT);
    let l1 = clients::libtorrent_with("seed", t, &l1_dir, &[s.addr()], &[keep, "--pex", "--upload-mode"]);
    let l2 = clients::libtorrent_with("seed", t, &l2_dir, &[s.addr(), l1.addr()], &[keep]);
    l2.wait_line("seeding", clients::READY_TIMEOUT);
    l1.wait_line("peers 2", clients::READY_TIMEOUT);
    assert_eq!(l1.count_lines("seeding"), 0, "L1 must hold only part of the data");

    let mut args = strings(&["leech", t.to_str().unwrap(), "-o", fx.leech_dir.to_str().unwrap()]);
    args.extend(strings(&["--port", "0", "--bind", "127.0.0.1", "--seed-time", "0", "--peer"]));
    args.push(l1.addr().to_string());
    let started = Instant::now();
    let mut leech = toybt("toybt-leech", &args);
    let pex = leech.wait_line(&format!("{}: PEX: ", l1.addr()), PEX_TIMEOUT);
    let pex_after = started.elapsed();
    assert_eq!(leech.wait_exit(PEX_TIMEOUT), Some(0), "toybt leech did not finish");
    let took = started.elapsed();
    fx.assert_leech_has_everything();

    // toybt dialled S or L2 by the address L1 told of; it was given neither.
    let learned = [s.addr(), l2.addr()].map(|a| leech.count_lines(&format!("{a}: peer libtorrent")));
    assert!(learned.iter().any(|&n| n > 0), "no connection with S {} or L2 {}", s.addr(), l2.addr());
    eprintln!("PEX from L1 ({pex}) {pex_after:.1?} after the leech started; connected to S/L2: {learned:?}");
    report("toybt_leech_finds_the_swarm_through_libtorrent_pex", start, took);
}
