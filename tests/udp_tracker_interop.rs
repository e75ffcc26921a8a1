//! UDP trackers (BEP 15) against real programs. `toybt tracker` as the UDP tracker of torrents whose only announce
//! URL is `udp://127.0.0.1:PORT/announce`: libtorrent, aria2 (DHT on, which aria2 1.36 needs for `udp://`) and
//! Transmission announce to it and find their peers through it. The tracker's HTTP scrape reads the same registry,
//! so it shows what arrived over UDP (nothing else can announce there). Data is compared byte for byte.

mod common;

use common::clients::{self, Fixture, Scrape};
use common::{Proc, port_from_line};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const START: Duration = Duration::from_secs(20);
/// Trackers hear of a completion a moment after the client knows; scrapes are retried until this bound.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(20);

/// `toybt tracker` serving `fx`'s torrent on HTTP and UDP (ephemeral ports), with the torrent pointed at the UDP
/// port only.
struct UdpTracker {
    _proc: Proc,
    http: SocketAddr,
}

impl UdpTracker {
    fn start(fx: &mut Fixture) -> UdpTracker {
        let torrent = fx.torrent.path.to_str().unwrap();
        let p = Proc::toybt("tracker", &["tracker", torrent, "--bind", "127.0.0.1", "--port", "0", "--udp-port", "0"]);
        // The HTTP line comes first.
        let http = SocketAddr::from(([127, 0, 0, 1], port_from_line(&p.wait_line("tracker listening on", START))));
        let udp = SocketAddr::from(([127, 0, 0, 1], port_from_line(&p.wait_line("udp tracker listening on", START))));
        assert_ne!(http, udp, "--udp-port 0 is a port of its own");
        fx.announce_to(&format!("udp://{udp}/announce"));
        UdpTracker { _proc: p, http }
    }

    fn wait_scrape(&self, fx: &Fixture, want: impl Fn(&Scrape) -> bool) -> Scrape {
        clients::wait_scrape(self.http, &fx.torrent.info_hash, SCRAPE_TIMEOUT, want)
    }
}

fn toybt_seed(fx: &Fixture) -> Proc {
    let content = fx.seed_dir.join(&fx.torrent.name);
    let t = fx.torrent.path.to_str().unwrap();
    let p = Proc::toybt("toybt-seed", &["seed", t, content.to_str().unwrap(), "--port", "0", "--bind", "127.0.0.1"]);
    p.wait_line("peer listening on", START);
    p
}

fn report(test: &str, start: Instant, download: Duration) {
    eprintln!("timing {test}: leech started to done {download:.1?}, whole test {:.1?}", start.elapsed());
}

#[test]
fn libtorrent_seed_and_leech_trade_through_toybts_udp_tracker() {
    let start = Instant::now();
    let mut fx = Fixture::single_file(21);
    let tracker = UdpTracker::start(&mut fx);
    let t = fx.torrent.path.clone();
    let _seed = clients::libtorrent_seed(&t, &fx.seed_dir, &[]);
    tracker.wait_scrape(&fx, |s| s.complete == 1);
    let mut leech = clients::libtorrent_leech(&t, &fx.leech_dir, &[]);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();
    assert!(leech.output().contains("tracker_reply"), "{}", leech.output());
    let s = tracker.wait_scrape(&fx, |s| s.downloaded == 1 && s.complete == 2);
    assert_eq!(s.incomplete, 0, "{s:?}");
    report("libtorrent_seed_and_leech_trade_through_toybts_udp_tracker", start, took);
}

/// aria2 finds a toybt seed through the UDP tracker (toybt's own UDP client announces the seed).
#[test]
fn aria2_leech_finds_a_toybt_seed_through_toybts_udp_tracker() {
    let start = Instant::now();
    let mut fx = Fixture::multi_file(22);
    let tracker = UdpTracker::start(&mut fx);
    let _seed = toybt_seed(&fx);
    tracker.wait_scrape(&fx, |s| s.complete == 1);
    let mut leech = clients::aria2_leech_udp(&fx.torrent.path, &fx.leech_dir);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();
    let s = tracker.wait_scrape(&fx, |s| s.downloaded == 1 && s.complete == 2);
    assert_eq!(s.incomplete, 0, "{s:?}");
    report("aria2_leech_finds_a_toybt_seed_through_toybts_udp_tracker", start, took);
}

/// Transmission announces over UDP (the scrape shows its leecher before any seed exists); a toybt seed started
/// afterwards learns its address from the tracker and dials it (Transmission drops 127.x peers from trackers).
#[test]
fn transmission_leech_announces_over_udp_and_a_toybt_seed_dials_it() {
    let start = Instant::now();
    let mut fx = Fixture::single_file(23);
    let tracker = UdpTracker::start(&mut fx);
    let mut leech = clients::transmission_leech(&fx.torrent.path, &fx.leech_dir);
    let s = tracker.wait_scrape(&fx, |s| s.incomplete == 1);
    assert_eq!(s.complete, 0, "{s:?}");
    let seed = toybt_seed(&fx);
    seed.wait_line("tracker: 1 peer(s)", START);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();
    let s = tracker.wait_scrape(&fx, |s| s.downloaded == 1 && s.complete == 2);
    assert_eq!(s.incomplete, 0, "{s:?}");
    report("transmission_leech_announces_over_udp_and_a_toybt_seed_dials_it", start, took);
}

/// `toybt leech` of `fx`'s torrent into its leech folder, exiting once done.
fn toybt_leech(fx: &Fixture) -> Proc {
    let (t, dir) = (fx.torrent.path.to_str().unwrap(), fx.leech_dir.to_str().unwrap());
    let args = ["leech", t, "-o", dir, "--port", "0", "--bind", "127.0.0.1", "--seed-time", "0"];
    let p = Proc::toybt("toybt-leech", &args);
    p.wait_line("peer listening on", START);
    p
}

/// The torrent announces to opentracker's UDP port only.
fn opentracker_udp(fx: &mut Fixture) -> clients::Launched {
    let (ot, udp) = clients::opentracker_udp(&[fx.torrent.info_hash]);
    fx.announce_to(&format!("udp://{udp}/announce"));
    ot
}

/// toybt's UDP client against the reference tracker: a libtorrent seed, found by a toybt leech.
#[test]
fn toybt_leech_finds_a_libtorrent_seed_through_opentrackers_udp_port() {
    let start = Instant::now();
    let mut fx = Fixture::multi_file(24);
    let ot = opentracker_udp(&mut fx);
    let _seed = clients::libtorrent_seed(&fx.torrent.path, &fx.seed_dir, &[]);
    clients::wait_scrape(ot.addr(), &fx.torrent.info_hash, SCRAPE_TIMEOUT, |s| s.complete == 1);
    let t0 = Instant::now();
    let mut leech = toybt_leech(&fx);
    assert_eq!(leech.wait_exit(DOWNLOAD_TIMEOUT), Some(0), "{}", leech.output());
    let took = t0.elapsed();
    fx.assert_leech_has_everything();
    assert!(leech.output().contains("tracker: "), "{}", leech.output());
    report("toybt_leech_finds_a_libtorrent_seed_through_opentrackers_udp_port", start, took);
}

/// A toybt seed announced over UDP to opentracker, found there by a libtorrent leech.
#[test]
fn libtorrent_leech_finds_a_toybt_seed_through_opentrackers_udp_port() {
    let start = Instant::now();
    let mut fx = Fixture::single_file(25);
    let ot = opentracker_udp(&mut fx);
    let seed = toybt_seed(&fx);
    clients::wait_scrape(ot.addr(), &fx.torrent.info_hash, SCRAPE_TIMEOUT, |s| s.complete == 1);
    let mut leech = clients::libtorrent_leech(&fx.torrent.path, &fx.leech_dir, &[]);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();
    assert!(seed.output().contains("tracker: "), "{}", seed.output());
    report("libtorrent_leech_finds_a_toybt_seed_through_opentrackers_udp_port", start, took);
}
