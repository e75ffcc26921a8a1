//! Proves the real-client launchers in tests/common/clients.rs: real programs trading with each other on 127.0.0.1,
//! through opentracker or by dialling each other, with the data compared byte for byte. If one of these fails, the
//! toybt interop tests built on the same launchers cannot be trusted either.

mod common;

use common::clients::{self, Fixture};
use std::time::{Duration, Instant};

/// Bound on one download; in practice they take 1-16 s (Transmission waits up to 10 s before it unchokes or asks).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

fn report(test: &str, start: Instant, download: Duration) {
    eprintln!("timing {test}: leech started to done {download:.1?}, whole test {:.1?}", start.elapsed());
}

#[test]
fn libtorrent_seed_to_aria2_leech_through_opentracker() {
    let start = Instant::now();
    let mut fx = Fixture::single_file(1);
    let tracker = clients::opentracker(&[fx.torrent.info_hash]);
    fx.announce_to(&tracker.announce_url());
    let hash = fx.torrent.info_hash;

    let _seed = clients::libtorrent_seed(&fx.torrent.path, &fx.seed_dir, &[]);
    clients::wait_scrape(tracker.addr(), &hash, SCRAPE_TIMEOUT, |s| s.complete == 1);
    let mut leech = clients::aria2_leech(&fx.torrent.path, &fx.leech_dir);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();

    // aria2 announced `completed` and goes on seeding: one download counted, two seeds.
    let s = clients::wait_scrape(tracker.addr(), &hash, SCRAPE_TIMEOUT, |s| s.downloaded == 1);
    assert_eq!((s.complete, s.incomplete), (2, 0), "{s:?}");
    report("libtorrent_seed_to_aria2_leech_through_opentracker", start, took);
}

#[test]
fn aria2_seed_to_libtorrent_leech_multi_file() {
    let start = Instant::now();
    let fx = Fixture::multi_file(2);
    let seed = clients::aria2_seed(&fx.torrent.path, &fx.seed_dir);
    let mut leech = clients::libtorrent_leech(&fx.torrent.path, &fx.leech_dir, &[seed.addr()]);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();
    report("aria2_seed_to_libtorrent_leech_multi_file", start, took);
}

#[test]
fn libtorrent_seed_dials_transmission_leech() {
    let start = Instant::now();
    let fx = Fixture::single_file(3);
    let mut leech = clients::transmission_leech(&fx.torrent.path, &fx.leech_dir);
    let seed = clients::libtorrent_seed(&fx.torrent.path, &fx.seed_dir, &[leech.addr()]);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();
    let size = std::fs::metadata(fx.seed_dir.join("single.bin")).unwrap().len();
    // lt_client.py reports its upload figure on its next status poll (every 0.25 s), which may come after the leech's
    // done hook.
    let sent = common::wait_until(Duration::from_secs(5), || seed.lt_upload_bytes() >= size);
    assert!(sent, "libtorrent says it sent {} of {size} bytes", seed.lt_upload_bytes());
    report("libtorrent_seed_dials_transmission_leech", start, took);
}

#[test]
fn transmission_seed_to_libtorrent_leech_multi_file() {
    let start = Instant::now();
    let fx = Fixture::multi_file(4);
    let seed = clients::transmission_seed(&fx.torrent.path, &fx.seed_dir);
    let mut leech = clients::libtorrent_leech(&fx.torrent.path, &fx.leech_dir, &[seed.addr()]);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();
    report("transmission_seed_to_libtorrent_leech_multi_file", start, took);
}

/// The pattern a toybt seed must follow with Transmission: the leecher announces first, and the seed dials the
/// address the tracker hands it (Transmission itself ignores 127.x peers from a tracker).
#[test]
fn aria2_seed_dials_transmission_leech_found_through_opentracker() {
    let start = Instant::now();
    let mut fx = Fixture::multi_file(5);
    let tracker = clients::opentracker(&[fx.torrent.info_hash]);
    fx.announce_to(&tracker.announce_url());
    let hash = fx.torrent.info_hash;

    let mut leech = clients::transmission_leech(&fx.torrent.path, &fx.leech_dir);
    clients::wait_scrape(tracker.addr(), &hash, SCRAPE_TIMEOUT, |s| s.incomplete == 1);
    let _seed = clients::aria2_seed(&fx.torrent.path, &fx.seed_dir);
    let took = leech.wait_done(DOWNLOAD_TIMEOUT);
    fx.assert_leech_has_everything();
    report("aria2_seed_dials_transmission_leech_found_through_opentracker", start, took);
}

#[test]
fn compare_trees_finds_every_kind_of_difference() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let files = [("x.bin", 70_000), ("d/y.bin", 1000)];
    clients::write_random_tree(&a, &files, 9);
    clients::write_random_tree(&b, &files, 9);
    clients::compare_trees(&a, &b).unwrap();
    clients::compare_trees(&a.join("x.bin"), &b.join("x.bin")).unwrap();

    let mut y = std::fs::read(b.join("d/y.bin")).unwrap();
    y[999] ^= 1;
    std::fs::write(b.join("d/y.bin"), &y).unwrap();
    let err = clients::compare_trees(&a, &b).unwrap_err();
    assert!(err.contains("differ at byte 999"), "{err}");

    y[999] ^= 1;
    y.push(0);
    std::fs::write(b.join("d/y.bin"), &y).unwrap();
    assert!(clients::compare_trees(&a, &b).unwrap_err().contains("length"));

    std::fs::remove_file(b.join("d/y.bin")).unwrap();
    assert!(clients::compare_trees(&a, &b).unwrap_err().contains("has files"));
}

#[test]
fn port_state_tells_our_listener_from_someone_elses() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = std::process::id();
    assert_eq!(clients::port_state(me, port), clients::PortState::Ours);
    // A second socket of ours on the same port (Transmission listens on IPv4 and IPv6) is still ours.
    let v6 = std::net::TcpListener::bind(("::1", port)).ok();
    assert_eq!(clients::port_state(me, port), clients::PortState::Ours, "with IPv6 listener: {}", v6.is_some());

    let other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let seen_by_other = clients::port_state(other.id(), port);
    let mut other = other;
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(seen_by_other, clients::PortState::Taken);

    drop(listener);
    drop(v6);
    assert_eq!(clients::port_state(me, port), clients::PortState::Free);
}
