//! toybt trading with real clients on 127.0.0.1, both directions: a toybt seed serving libtorrent, aria2 and
//! Transmission leechers; libtorrent, aria2 and Transmission seeds serving a toybt leech; and a mixed swarm of one
//! toybt seed with toybt, libtorrent and aria2 leechers at once. Every download is compared byte for byte with the
//! seed's data.
//!
//! Each test is one pair of programs and runs its variants at the same time on threads of its own: single-file and
//! multi-file torrents of about 3 MiB (and one of 40 MiB, where a client's request queue matters), found through
//! toybt's tracker (a `toybt tracker` process, or the tracker a `toybt seed --tracker-port` runs in its own loop),
//! through opentracker, the reference, or dialled directly. Most of the time goes to waiting on the clients
//! (Transmission takes about 10 s to show interest in or unchoke a new peer), so running variants side by side keeps
//! the file quick without loading the machine.
//!
//! The toybt processes log at debug level (RUST_LOG overrides it); a failing test prints every process's output.

mod common;

use common::clients::{self, Fixture, Kind, Launched, Scrape};
use common::{Proc, port_from_line};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bound on one download; they take 0.1-22 s here (Transmission waits about 10 s before it unchokes or asks).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a toybt process printing its listening line (it checks a few MiB of data first).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Trackers hear of a start or completion a moment after the client acts; scrapes are retried until this bound.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on a toybt process ending after SIGTERM (it tells the tracker, bounded by a 5 s request timeout).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Single,
    Multi,
    /// One file of 40 MiB (2560 blocks): more blocks than toybt queues per peer, and enough for Transmission to
    /// reach a rate at which it would ask for all of them at once unless told our queue size.
    Large,
}

/// How the peers find each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// A `toybt tracker` process.
    ToybtTracker,
    /// The tracker a `toybt seed --tracker-port 0` runs in its own loop.
    SeedsTracker,
    /// opentracker, the reference tracker.
    Opentracker,
    /// No tracker: one side is given the other's address (toybt with `--peer`; libtorrent can be told too).
    Dialled,
}

fn fixture(layout: Layout, seed: u64) -> Fixture {
    match layout {
        Layout::Single => Fixture::single_file(seed),
        Layout::Multi => Fixture::multi_file(seed),
        Layout::Large => Fixture::new(|root| {
            let path = root.join("large.bin");
            clients::write_random_file(&path, 40 << 20, seed);
            path
        }),
    }
}

/// A tracker process (toybt's or opentracker) serving one torrent; dropping it stops the tracker.
struct Tracker {
    _toybt: Option<Proc>,
    _reference: Option<Launched>,
    addr: SocketAddr,
}

impl Tracker {
    /// Starts the tracker `via` names for `fx`'s torrent and points the torrent at it; `None` if `via` is not a
    /// separate tracker process.
    fn start(fx: &mut Fixture, via: Via) -> Option<Tracker> {
        let tracker = match via {
            Via::Opentracker => {
                let ot = clients::opentracker(&[fx.torrent.info_hash]);
                Tracker { addr: ot.addr(), _toybt: None, _reference: Some(ot) }
            }
            Via::ToybtTracker => {
                let torrent = fx.torrent.path.to_str().unwrap();
                let p = toybt("tracker", &["tracker", torrent, "--bind", "127.0.0.1", "--port", "0"]);
                let port = port_from_line(&p.wait_line("tracker listening on", START_TIMEOUT));
                Tracker { addr: SocketAddr::from(([127, 0, 0, 1], port)), _toybt: Some(p), _reference: None }
            }
            Via::SeedsTracker | Via::Dialled => return None,
        };
        fx.announce_to(&format!("http://{}/announce", tracker.addr));
        Some(tracker)
    }
}

fn wait_scrape(tracker: SocketAddr, fx: &Fixture, want: impl Fn(&Scrape) -> bool) -> Scrape {
    clients::wait_scrape(tracker, &fx.torrent.info_hash, SCRAPE_TIMEOUT, want)
}

/// The toybt binary with debug logging unless RUST_LOG says otherwise.
fn toybt(name: &str, args: &[&str]) -> Proc {
    let mut cmd = common::toybt_command(args);
    cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()));
    Proc::spawn(name, cmd)
}

/// A running `toybt seed` and the addresses it listens on.
struct ToybtSeed {
    proc: Proc,
    addr: SocketAddr,
    /// The tracker the seed runs itself (with `--tracker-port`).
    tracker: Option<SocketAddr>,
}

/// `toybt seed` of `fx`'s data, dialling `peers`; with `own_tracker` it also runs the tracker for the torrent (and
/// `fx`'s torrent is pointed at it). Returns once it listens, i.e. after its check of the data.
fn toybt_seed(fx: &mut Fixture, peers: &[SocketAddr], own_tracker: bool) -> ToybtSeed {
    let torrent = fx.torrent.path.to_str().unwrap().to_string();
    let content = fx.seed_dir.join(&fx.torrent.name);
    let mut args = vec!["seed".to_string(), torrent, content.to_str().unwrap().to_string()];
    args.extend(["--port", "0", "--bind", "127.0.0.1"].map(String::from));
    for p in peers {
        args.extend(["--peer".to_string(), p.to_string()]);
    }
    if own_tracker {
        args.extend(["--tracker-port", "0"].map(String::from));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = toybt("toybt-seed", &args);
    let tracker = own_tracker.then(|| {
        let port = port_from_line(&proc.wait_line("tracker listening on", START_TIMEOUT));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        fx.announce_to(&format!("http://{addr}/announce"));
        addr
    });
    let port = port_from_line(&proc.wait_line("peer listening on", START_TIMEOUT));
    ToybtSeed { proc, addr: SocketAddr::from(([127, 0, 0, 1], port)), tracker }
}

/// `toybt leech` of `torrent` into `dir`, dialling `peers`; `seed_time` is passed on (`None`: seed until stopped).
fn toybt_leech(name: &str, torrent: &Path, dir: &Path, peers: &[SocketAddr], seed_time: Option<u64>) -> Proc {
    let mut args = vec!["leech".to_string(), torrent.to_str().unwrap().to_string()];
    args.extend(["-o".to_string(), dir.to_str().unwrap().to_string()]);
    args.extend(["--port", "0", "--bind", "127.0.0.1"].map(String::from));
    for p in peers {
        args.extend(["--peer".to_string(), p.to_string()]);
    }
    if let Some(s) = seed_time {
        args.extend(["--seed-time".to_string(), s.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = toybt(name, &args);
    proc.wait_line("peer listening on", START_TIMEOUT);
    proc
}

/// Waits for a `toybt leech --seed-time 0` to exit 0 with the whole torrent; returns its `totals:` line.
fn wait_leech_exit(leech: &mut Proc) -> String {
    match leech.wait_exit(DOWNLOAD_TIMEOUT) {
        Some(0) => {}
        other => panic!("{}: exit {other:?} (None: still running after {DOWNLOAD_TIMEOUT:?})", leech.name),
    }
    let totals = leech.wait_line("totals:", Duration::from_secs(1));
    assert!(totals.contains("complete=true") && totals.contains("hash_failures=0"), "{}: {totals}", leech.name);
    totals
}

/// Stops a toybt process with SIGTERM, as a person would with Ctrl-C; it must exit 0. Returns its `totals:` line.
fn stop_toybt(p: &mut Proc) -> String {
    p.terminate();
    assert_eq!(p.wait_exit(STOP_TIMEOUT), Some(0), "{}: exit status after SIGTERM", p.name);
    p.wait_line("totals:", Duration::from_secs(1))
}

/// The number after `key=` in a `totals:` line.
fn total(line: &str, key: &str) -> u64 {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {line}"))
}

fn content_len(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).unwrap().len();
    }
    std::fs::read_dir(path).unwrap().map(|e| content_len(&e.unwrap().path())).sum()
}

fn leech_dir(fx: &Fixture, name: &str) -> PathBuf {
    let dir = fx.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `scenario` for every variant at once, each on its own thread; every variant runs to its end, then the test
/// fails if any of them did (their panics are printed as they happen).
fn run_variants(test: &str, variants: &[(Layout, Via)], scenario: fn(Layout, Via, u64) -> Duration) {
    let start = Instant::now();
    let failed: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = variants
            .iter()
            .enumerate()
            .map(|(i, &(layout, via))| {
                let name = format!("{test} {layout:?} via {via:?}");
                let seed = 1000 + i as u64 * 31 + test.len() as u64;
                let h = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn_scoped(s, move || scenario(layout, via, seed))
                    .unwrap();
                (name, h)
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|(name, h)| match h.join() {
                Ok(took) => {
                    eprintln!("timing {name}: leech started to done {took:.1?}");
                    None
                }
                Err(_) => Some(name),
            })
            .collect()
    });
    eprintln!("timing {test}: whole test {:.1?}", start.elapsed());
    assert!(failed.is_empty(), "failed variants: {failed:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// toybt seed -> real leechers

/// A real client downloading from a toybt seed. The seed starts first and registers with the tracker, so the leecher's
/// first announce returns it; Transmission ignores 127.x peers from a tracker, so there it is the other way round:
/// the leecher announces first and the seed dials the address its own first announce returns. Without a tracker,
/// libtorrent is told to dial the seed, and the seed is told (`--peer`) to dial aria2 or Transmission.
fn toybt_seed_to(kind: Kind, layout: Layout, via: Via, seed: u64) -> Duration {
    let mut fx = fixture(layout, seed);
    let tracker = Tracker::start(&mut fx, via);
    let leech_first = kind == Kind::Transmission || (kind == Kind::Aria2 && via == Via::Dialled);
    let start_leech = |fx: &Fixture, seed: Option<SocketAddr>| match kind {
        Kind::Libtorrent => clients::libtorrent_leech(&fx.torrent.path, &fx.leech_dir, &Vec::from_iter(seed)),
        Kind::Aria2 => clients::aria2_leech(&fx.torrent.path, &fx.leech_dir),
        Kind::Transmission => clients::transmission_leech(&fx.torrent.path, &fx.leech_dir),
        Kind::Opentracker => unreachable!("not a BitTorrent client"),
    };

    let (mut leech, seed, tracker_addr) = if leech_first {
        let leech = start_leech(&fx, None);
        if let Some(t) = &tracker {
            wait_scrape(t.addr, &fx, |s| s.incomplete == 1);
        }
        let peers = if via == Via::Dialled { vec![leech.addr()] } else { vec![] };
        let seed = toybt_seed(&mut fx, &peers, via == Via::SeedsTracker);
        let tracker_addr = tracker.as_ref().map(|t| t.addr).or(seed.tracker);
        (leech, seed, tracker_addr)
    } else {
        let seed = toybt_seed(&mut fx, &[], via == Via::SeedsTracker);
        let tracker_addr = tracker.as_ref().map(|t| t.addr).or(seed.tracker);
        match tracker_addr {
            Some(t) => {
                wait_scrape(t, &fx, |s| s.complete == 1);
            }
            None => assert_eq!(kind, Kind::Libtorrent, "only libtorrent can be told to dial the seed"),
        }
        let dial = (via == Via::Dialled).then_some(seed.addr);
        (start_leech(&fx, dial), seed, tracker_addr)
    };
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();

    if let Some(t) = tracker_addr {
        // The leecher said `completed` and stays as a second seed.
        let s = wait_scrape(t, &fx, |s| s.downloaded == 1 && s.complete == 2);
        assert_eq!(s.incomplete, 0, "{s:?}");
    }
    let mut seed_proc = seed.proc;
    let totals = stop_toybt(&mut seed_proc);
    let size = content_len(&fx.seed_dir.join(&fx.torrent.name));
    assert!(total(&totals, "uploaded") >= size, "the seed sent less than the torrent: {totals} (size {size})");
    drop(leech);
    took
}

#[test]
fn toybt_seed_to_libtorrent_leech() {
    let variants =
        [(Layout::Single, Via::SeedsTracker), (Layout::Multi, Via::Opentracker), (Layout::Large, Via::Dialled)];
    run_variants("toybt_seed_to_libtorrent_leech", &variants, |l, v, s| toybt_seed_to(Kind::Libtorrent, l, v, s));
}

#[test]
fn toybt_seed_to_aria2_leech() {
    let variants =
        [(Layout::Single, Via::Opentracker), (Layout::Multi, Via::ToybtTracker), (Layout::Large, Via::Dialled)];
    run_variants("toybt_seed_to_aria2_leech", &variants, |l, v, s| toybt_seed_to(Kind::Aria2, l, v, s));
}

#[test]
fn toybt_seed_dials_transmission_leech() {
    let variants = [
        (Layout::Single, Via::ToybtTracker),
        (Layout::Multi, Via::Opentracker),
        (Layout::Multi, Via::Dialled),
        (Layout::Large, Via::Dialled),
    ];
    run_variants("toybt_seed_dials_transmission_leech", &variants, |l, v, s| {
        toybt_seed_to(Kind::Transmission, l, v, s)
    });
}

// ---------------------------------------------------------------------------------------------------------------
// real seeds -> toybt leech

/// A toybt leech downloading from a real client's seed, found through the tracker or given with `--peer`; the leech
/// exits by itself (`--seed-time 0`) once the data is on disk and the tracker has heard `completed`.
fn toybt_leech_from(kind: Kind, layout: Layout, via: Via, seed: u64) -> Duration {
    let mut fx = fixture(layout, seed);
    let tracker = Tracker::start(&mut fx, via);
    let t = fx.torrent.path.clone();
    let real_seed = match kind {
        Kind::Libtorrent => clients::libtorrent_seed(&t, &fx.seed_dir, &[]),
        Kind::Aria2 => clients::aria2_seed(&t, &fx.seed_dir),
        Kind::Transmission => clients::transmission_seed(&t, &fx.seed_dir),
        Kind::Opentracker => unreachable!("not a BitTorrent client"),
    };
    if let Some(tr) = &tracker {
        wait_scrape(tr.addr, &fx, |s| s.complete == 1);
    }
    let peers = if via == Via::Dialled { vec![real_seed.addr()] } else { vec![] };
    let started = Instant::now();
    let mut leech = toybt_leech("toybt-leech", &t, &fx.leech_dir, &peers, Some(0));
    let totals = wait_leech_exit(&mut leech);
    let took = started.elapsed();
    fx.assert_leech_has_everything();
    let size = content_len(&fx.seed_dir.join(&fx.torrent.name));
    assert!(total(&totals, "downloaded") >= size, "{totals} (size {size})");

    if let Some(tr) = &tracker {
        // toybt said `completed` (counted) and then `stopped` (gone from the swarm) before it exited.
        let s = wait_scrape(tr.addr, &fx, |s| s.downloaded == 1);
        assert_eq!((s.complete, s.incomplete), (1, 0), "{s:?}");
    }
    drop(real_seed);
    took
}

#[test]
fn libtorrent_seed_to_toybt_leech() {
    let variants =
        [(Layout::Multi, Via::ToybtTracker), (Layout::Single, Via::Opentracker), (Layout::Large, Via::Dialled)];
    run_variants("libtorrent_seed_to_toybt_leech", &variants, |l, v, s| toybt_leech_from(Kind::Libtorrent, l, v, s));
}

#[test]
fn aria2_seed_to_toybt_leech() {
    let variants =
        [(Layout::Single, Via::ToybtTracker), (Layout::Multi, Via::Opentracker), (Layout::Large, Via::Dialled)];
    run_variants("aria2_seed_to_toybt_leech", &variants, |l, v, s| toybt_leech_from(Kind::Aria2, l, v, s));
}

#[test]
fn transmission_seed_to_toybt_leech() {
    let variants = [
        (Layout::Multi, Via::ToybtTracker),
        (Layout::Single, Via::Opentracker),
        (Layout::Single, Via::Dialled),
        (Layout::Large, Via::Dialled),
    ];
    run_variants("transmission_seed_to_toybt_leech", &variants, |l, v, s| {
        toybt_leech_from(Kind::Transmission, l, v, s)
    });
}

// ---------------------------------------------------------------------------------------------------------------
// A mixed swarm

/// One toybt seed; toybt, libtorrent and aria2 leechers started together, all finding each other through the
/// tracker. Everyone ends with the seed's data; the toybt leech keeps seeding until it is stopped.
fn mixed_swarm(layout: Layout, via: Via, seed: u64) -> Duration {
    let mut fx = fixture(layout, seed);
    let tracker = Tracker::start(&mut fx, via);
    let mut toybt_seed = toybt_seed(&mut fx, &[], via == Via::SeedsTracker);
    let tracker_addr = tracker.as_ref().map(|t| t.addr).or(toybt_seed.tracker).expect("a tracker");
    wait_scrape(tracker_addr, &fx, |s| s.complete == 1);

    let t = fx.torrent.path.clone();
    let (lt_dir, aria_dir, toybt_dir) = (leech_dir(&fx, "lt"), leech_dir(&fx, "aria2"), leech_dir(&fx, "toybt"));
    let started = Instant::now();
    let mut toybt_leech = toybt_leech("toybt-leech", &t, &toybt_dir, &[], None);
    let mut lt = clients::libtorrent_leech(&t, &lt_dir, &[]);
    let mut aria = clients::aria2_leech(&t, &aria_dir);
    toybt_leech.wait_line("download complete", DOWNLOAD_TIMEOUT);
    lt.wait_done(DOWNLOAD_TIMEOUT);
    aria.wait_done(DOWNLOAD_TIMEOUT);
    let took = started.elapsed();

    let original = fx.seed_dir.join(&fx.torrent.name);
    for dir in [&lt_dir, &aria_dir, &toybt_dir] {
        clients::assert_same_tree(&original, &dir.join(&fx.torrent.name));
    }
    let s = wait_scrape(tracker_addr, &fx, |s| s.downloaded == 3 && s.complete == 4);
    assert_eq!(s.incomplete, 0, "{s:?}");

    let leech_totals = stop_toybt(&mut toybt_leech);
    let seed_totals = stop_toybt(&mut toybt_seed.proc);
    assert!(total(&leech_totals, "downloaded") >= content_len(&original), "{leech_totals}");
    eprintln!(
        "mixed swarm {layout:?} via {via:?}: toybt seed sent {}, toybt leech sent {}, libtorrent sent {}",
        total(&seed_totals, "uploaded"),
        total(&leech_totals, "uploaded"),
        lt.lt_upload_bytes()
    );
    took
}

#[test]
fn mixed_swarm_toybt_seed_with_toybt_libtorrent_and_aria2_leeches() {
    let variants =
        [(Layout::Single, Via::ToybtTracker), (Layout::Multi, Via::Opentracker), (Layout::Multi, Via::SeedsTracker)];
    run_variants("mixed_swarm", &variants, mixed_swarm);
}
