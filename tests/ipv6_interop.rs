//! toybt trading with libtorrent over IPv6 on ::1, both directions, every download compared byte for byte with the
//! seed's data:
//! - a libtorrent seed on [::1] serving `toybt leech --bind ::1 --peer [::1]:PORT`;
//! - `toybt seed --bind ::1` serving a libtorrent leech that is given the peer [::1]:PORT;
//! - a libtorrent seed on [::1] found through `toybt tracker --bind ::1` (its `peers6`), no `--peer` given;
//! - one `toybt seed` on its default dual-stack listener (`[::]`) serving a libtorrent leech on 127.0.0.1 and another
//!   on ::1 at the same time.
//!
//! libtorrent listens on and dials from one address only (lt_client.py `--bind`), so a transfer with a libtorrent on
//! ::1 can only have gone over IPv6. Like the other interop tests these fail, not skip, when a program is missing, and
//! they need ::1 on the loopback interface (`ip -6 addr show lo`).
//!
//! The toybt processes log at debug level (RUST_LOG overrides it); a failing test prints every process's output.

mod common;

use common::Proc;
use common::clients::{self, Fixture};
use common::swarm::{assert_exits_0, stop, totals};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bound on one download of a few MiB on loopback (they take well under a second; libtorrent starts in about one).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a toybt process printing its listening line (it checks a few MiB of data first).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on a toybt process ending after SIGTERM (it tells the tracker, bounded by a 5 s request timeout).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// A tracker hears of a start a moment after the client is up; scrapes are retried until this bound.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(15);

const V6_LOOPBACK: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const V4_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The toybt binary with debug logging unless RUST_LOG says otherwise.
fn toybt(name: &str, args: &[&str]) -> Proc {
    let mut cmd = common::toybt_command(args);
    cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()));
    Proc::spawn(name, cmd)
}

/// The address in a `... listening on ADDR:PORT ...` line, `[::1]:PORT` and `[::]:PORT` included.
fn listen_addr(line: &str) -> SocketAddr {
    let after = line.split("listening on ").nth(1).unwrap_or_else(|| panic!("no address in {line:?}"));
    let text = after.split_whitespace().next().unwrap();
    text.parse().unwrap_or_else(|e| panic!("{text:?} in {line:?}: {e}"))
}

/// Waits for `p`'s `peer listening on` line and returns the address in it.
fn peer_listen_addr(p: &Proc) -> SocketAddr {
    listen_addr(&p.wait_line("peer listening on", START_TIMEOUT))
}

/// Fails the test, as a missing program does, if this machine has no IPv6 loopback.
fn require_ipv6_loopback() {
    if let Err(e) = std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
        panic!("cannot listen on [::1] ({e}): these tests need ::1 on the loopback interface (`ip -6 addr show lo`)");
    }
}

/// A `toybt leech` of `fx`'s torrent into `dir` with `args` after it, exiting once done (`--seed-time 0`).
fn toybt_leech(fx: &Fixture, dir: &Path, args: &[&str]) -> Proc {
    let mut all = vec!["leech", fx.torrent.path.to_str().unwrap(), "-o", dir.to_str().unwrap(), "--port", "0"];
    all.extend(["--seed-time", "0"]);
    all.extend_from_slice(args);
    toybt("toybt-leech", &all)
}

/// A `toybt seed` of `fx`'s data with `args` after it.
fn toybt_seed(fx: &Fixture, args: &[&str]) -> Proc {
    let content = fx.seed_dir.join(&fx.torrent.name);
    let mut all = vec!["seed", fx.torrent.path.to_str().unwrap(), content.to_str().unwrap(), "--port", "0"];
    all.extend_from_slice(args);
    toybt("toybt-seed", &all)
}

/// Waits for a `toybt leech --seed-time 0` to exit 0 with the whole torrent and no hash failure.
fn assert_leech_done(leech: &mut Proc, fx: &Fixture) {
    assert_exits_0(leech, DOWNLOAD_TIMEOUT);
    let t = totals(leech, Duration::from_secs(1));
    assert!(t.complete && t.hash_failures == 0, "{}: {t:?}", leech.name);
    assert_eq!(t.downloaded, content_len(&fx.seed_dir.join(&fx.torrent.name)), "{}: downloaded", leech.name);
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

#[test]
fn libtorrent_seed_on_ipv6_loopback_serves_a_toybt_leech_dialling_it() {
    require_ipv6_loopback();
    let fx = Fixture::single_file(61);
    let lt = clients::libtorrent_seed_on(V6_LOOPBACK, &fx.torrent.path, &fx.seed_dir, &[]);
    let peer = lt.addr().to_string();
    assert!(peer.starts_with("[::1]:"), "{peer}");
    let mut leech = toybt_leech(&fx, &fx.leech_dir, &["--bind", "::1", "--peer", &peer]);
    let ours = peer_listen_addr(&leech);
    assert_eq!(ours.ip(), V6_LOOPBACK, "the leech listens where it was told");
    assert_leech_done(&mut leech, &fx);
    fx.assert_leech_has_everything();
}

#[test]
fn toybt_seed_on_ipv6_loopback_serves_a_libtorrent_leech_dialling_it() {
    require_ipv6_loopback();
    let fx = Fixture::multi_file(62);
    let mut seed = toybt_seed(&fx, &["--bind", "::1"]);
    let addr = peer_listen_addr(&seed);
    assert_eq!(addr.ip(), V6_LOOPBACK, "the seed listens where it was told");
    let mut lt = clients::libtorrent_leech_on(V6_LOOPBACK, &fx.torrent.path, &fx.leech_dir, &[addr]);
    lt.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();
    let t = stop(&mut seed, STOP_TIMEOUT);
    assert!(t.uploaded >= content_len(&fx.seed_dir.join(&fx.torrent.name)), "seed totals {t:?}");
}

/// The tracker on [::1] hears the libtorrent seed from [::1] and hands it to the toybt leech in `peers6`; nobody is
/// given an address.
#[test]
fn a_toybt_leech_finds_a_libtorrent_seed_through_peers6() {
    require_ipv6_loopback();
    let mut fx = Fixture::single_file(63);
    let tracker =
        toybt("toybt-tracker", &["tracker", fx.torrent.path.to_str().unwrap(), "--bind", "::1", "--port", "0"]);
    let tracker_addr = listen_addr(&tracker.wait_line("tracker listening on", START_TIMEOUT));
    assert_eq!(tracker_addr.ip(), V6_LOOPBACK);
    fx.announce_to(&format!("http://{tracker_addr}/announce"));
    let _lt = clients::libtorrent_seed_on(V6_LOOPBACK, &fx.torrent.path, &fx.seed_dir, &[]);
    clients::wait_scrape(tracker_addr, &fx.torrent.info_hash, SCRAPE_TIMEOUT, |s| s.complete >= 1);
    let mut leech = toybt_leech(&fx, &fx.leech_dir, &["--bind", "::1"]);
    assert_leech_done(&mut leech, &fx);
    fx.assert_leech_has_everything();
}

/// One toybt seed on its default address (no `--bind`: `[::]`, both families) serves a libtorrent leech on 127.0.0.1
/// and one on ::1, each dialling it in its own family.
#[test]
fn a_dual_stack_toybt_seed_serves_ipv4_and_ipv6_libtorrent_leeches() {
    require_ipv6_loopback();
    let fx = Fixture::single_file(64);
    let mut seed = toybt_seed(&fx, &[]);
    let addr = peer_listen_addr(&seed);
    assert_eq!(addr.ip(), IpAddr::V6(Ipv6Addr::UNSPECIFIED), "the default listener is dual-stack");
    let (dir4, dir6) = (leech_dir(&fx, "leech4"), leech_dir(&fx, "leech6"));
    let at = |ip| SocketAddr::new(ip, addr.port());
    let mut lt4 = clients::libtorrent_leech_on(V4_LOOPBACK, &fx.torrent.path, &dir4, &[at(V4_LOOPBACK)]);
    let mut lt6 = clients::libtorrent_leech_on(V6_LOOPBACK, &fx.torrent.path, &dir6, &[at(V6_LOOPBACK)]);
    lt4.wait_done(DOWNLOAD_TIMEOUT);
    lt6.wait_done(DOWNLOAD_TIMEOUT);
    let name = &fx.torrent.name;
    clients::assert_same_tree(&fx.seed_dir.join(name), &dir4.join(name));
    clients::assert_same_tree(&fx.seed_dir.join(name), &dir6.join(name));
    let t = stop(&mut seed, STOP_TIMEOUT);
    assert!(t.uploaded >= 2 * content_len(&fx.seed_dir.join(name)), "seed totals {t:?}");
    // The IPv4 leech was seen as 127.0.0.1, not as ::ffff:127.0.0.1.
    let out = seed.output();
    assert!(!out.contains("::ffff:"), "an IPv4 peer was logged as IPv4-mapped:\n{out}");
}
