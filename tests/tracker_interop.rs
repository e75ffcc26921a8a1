//! Real clients (python3-libtorrent, aria2c, transmission-cli) announce to `toybt tracker`, find each other through it
//! and trade a whole torrent, compared byte for byte; the tracker's scrape must then count what happened.
//!
//! With TOYBT_REFERENCE_TRACKER=1 the same scenarios run against opentracker instead, which shows that what these
//! tests expect is what the reference tracker does.

mod common;

use common::clients::{self, Fixture, Launched, Scrape};
use common::{Proc, port_from_line};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const TRACKER_START: Duration = Duration::from_secs(10);
/// Trackers hear of a completion a moment after the client knows; scrapes are retried until this bound.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(15);

/// The tracker under test, running and serving the fixture's torrent; dropping it stops the tracker.
struct Tracker {
    _toybt: Option<Proc>,
    _reference: Option<Launched>,
    addr: SocketAddr,
}

impl Tracker {
    /// Starts the tracker for `fx`'s torrent and points the torrent at it.
    fn start(fx: &mut Fixture) -> Tracker {
        let tracker = if std::env::var_os("TOYBT_REFERENCE_TRACKER").is_some() {
            let ot = clients::opentracker(&[fx.torrent.info_hash]);
            Tracker { addr: ot.addr(), _toybt: None, _reference: Some(ot) }
        } else {
            let torrent = fx.torrent.path.to_str().unwrap();
            let p = Proc::toybt("tracker", &["tracker", torrent, "--bind", "127.0.0.1", "--port", "0"]);
            let port = port_from_line(&p.wait_line("tracker listening on", TRACKER_START));
            Tracker { addr: SocketAddr::from(([127, 0, 0, 1], port)), _toybt: Some(p), _reference: None }
        };
        fx.announce_to(&format!("http://{}/announce", tracker.addr));
        tracker
    }

    fn wait_scrape(&self, fx: &Fixture, want: impl Fn(&Scrape) -> bool) -> Scrape {
        clients::wait_scrape(self.addr, &fx.torrent.info_hash, SCRAPE_TIMEOUT, want)
    }
}

fn report(test: &str, start: Instant, download: Duration) {
    eprintln!("timing {test}: leech started to done {download:.1?}, whole test {:.1?}", start.elapsed());
}

/// One libtorrent seed, two leechers (aria2 and libtorrent) that know of nobody but the tracker.
#[test]
fn libtorrent_seed_serves_aria2_and_libtorrent_leeches_found_through_tracker() {
    let start = Instant::now();
    let mut fx = Fixture::single_file(11);
    let tracker = Tracker::start(&mut fx);
    let t = fx.torrent.path.clone();

    let _seed = clients::libtorrent_seed(&t, &fx.seed_dir, &[]);
    tracker.wait_scrape(&fx, |s| s.complete == 1);
    let lt_dir = fx.dir.path().join("lt-leech");
    std::fs::create_dir(&lt_dir).unwrap();
    let mut aria = clients::aria2_leech(&t, &fx.leech_dir);
    let mut lt = clients::libtorrent_leech(&t, &lt_dir, &[]);
    let took = aria.wait_done(DOWNLOAD_TIMEOUT).max(lt.wait_done(DOWNLOAD_TIMEOUT));
    fx.assert_leech_has_everything();
    clients::assert_same_tree(&fx.seed_dir.join(&fx.torrent.name), &lt_dir.join(&fx.torrent.name));

    // Both leechers announced `completed` and stay as seeds.
    let s = tracker.wait_scrape(&fx, |s| s.downloaded == 2 && s.complete == 3);
    assert_eq!(s.incomplete, 0, "{s:?}");
    report("libtorrent_seed_serves_aria2_and_libtorrent_leeches", start, took);
}

#[test]
fn aria2_seed_serves_libtorrent_leech_found_through_tracker() {
    let start = Instant::now();
    let mut fx = Fixture::multi_file(12);
    let tracker = Tracker::start(&mut fx);

    let _seed = clients::aria2_seed(&fx.torrent.path, &fx.seed_dir);
    tracker.wait_scrape(&fx, |s| s.complete == 1);
    let mut leech = clients::libtorrent_leech(&fx.torrent.path, &fx.leech_dir, &[]);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();

    let s = tracker.wait_scrape(&fx, |s| s.downloaded == 1 && s.complete == 2);
    assert_eq!(s.incomplete, 0, "{s:?}");
    report("aria2_seed_serves_libtorrent_leech", start, took);
}

/// Transmission drops 127.x peers a tracker hands it, so the seed must learn of it from the tracker and dial it.
#[test]
fn libtorrent_seed_dials_transmission_leech_found_through_tracker() {
    let start = Instant::now();
    let mut fx = Fixture::single_file(13);
    let tracker = Tracker::start(&mut fx);

    let mut leech = clients::transmission_leech(&fx.torrent.path, &fx.leech_dir);
    tracker.wait_scrape(&fx, |s| s.incomplete == 1);
    let _seed = clients::libtorrent_seed(&fx.torrent.path, &fx.seed_dir, &[]);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();

    let s = tracker.wait_scrape(&fx, |s| s.downloaded == 1 && s.complete == 2);
    assert_eq!(s.incomplete, 0, "{s:?}");
    report("libtorrent_seed_dials_transmission_leech", start, took);
}

#[test]
fn libtorrent_leech_dials_transmission_seed_found_through_tracker() {
    let start = Instant::now();
    let mut fx = Fixture::multi_file(14);
    let tracker = Tracker::start(&mut fx);

    let _seed = clients::transmission_seed(&fx.torrent.path, &fx.seed_dir);
    tracker.wait_scrape(&fx, |s| s.complete == 1);
    let mut leech = clients::libtorrent_leech(&fx.torrent.path, &fx.leech_dir, &[]);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();

    let s = tracker.wait_scrape(&fx, |s| s.downloaded == 1 && s.complete == 2);
    assert_eq!(s.incomplete, 0, "{s:?}");
    report("libtorrent_leech_dials_transmission_seed", start, took);
}
