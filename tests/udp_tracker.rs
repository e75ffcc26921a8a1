//! `toybt tracker`'s UDP front end (BEP 15) as a process on 127.0.0.1, spoken to by a tiny client over a std
//! `UdpSocket`: connect, announce and scrape, and a correct client still served during a flood of connects; toybt's
//! own `udp://` announces, alone and behind a dead first tier.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Proc, port_from_line};
use toybt::tracker::registry::Event;
use toybt::tracker::udp::wire::{AnnounceRequest, Request, Response, scrape_stats};

const WAIT: Duration = Duration::from_secs(10);
const HASH: [u8; 20] = *b"toybt-udp-tracker-t1";

/// Starts an open `toybt tracker` with HTTP and UDP on ephemeral ports; returns it and the UDP address.
fn tracker() -> (Proc, SocketAddr) {
    let p = Proc::toybt("tracker", &["tracker", "--bind", "127.0.0.1", "--port", "0", "--udp-port", "0", "--open"]);
    let line = p.wait_line("udp tracker listening on", WAIT);
    let port = port_from_line(&line);
    assert!(line.ends_with(&format!("(announce udp://127.0.0.1:{port}/announce)")), "{line}");
    (p, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

/// Sends `request` until an answer comes (each wait bounded, `deadline` overall); returns the answer.
fn exchange(s: &UdpSocket, to: SocketAddr, request: &[u8], deadline: Instant) -> Vec<u8> {
    let mut buf = vec![0; 65536];
    while Instant::now() < deadline {
        s.send_to(request, to).unwrap();
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            assert_eq!(from, to);
            return buf[..n].to_vec();
        }
    }
    panic!("no answer from {to} in time");
}

fn connect(s: &UdpSocket, to: SocketAddr, tid: u32, deadline: Instant) -> u64 {
    let mut req = Vec::new();
    Request::Connect { transaction_id: tid }.encode(&mut req);
    let answer = exchange(s, to, &req, deadline);
    match Response::decode(&answer, false) {
        Ok(Response::Connect { transaction_id, connection_id }) if transaction_id == tid => connection_id,
        other => panic!("{other:?}"),
    }
}

fn announce(cid: u64, tid: u32, peer: u8, port: u16, left: u64) -> Vec<u8> {
    announce_for(HASH, cid, tid, peer, port, left)
}

fn announce_for(info_hash: [u8; 20], cid: u64, tid: u32, peer: u8, port: u16, left: u64) -> Vec<u8> {
    let mut b = Vec::new();
    Request::Announce(AnnounceRequest {
        connection_id: cid,
        transaction_id: tid,
        info_hash,
        peer_id: [peer; 20],
        downloaded: 0,
        left,
        uploaded: 0,
        event: Event::Started,
        ip: None,
        key: 9,
        num_want: -1,
        port,
        url_data: b"/announce".to_vec(),
    })
    .encode(&mut b);
    b
}

#[test]
fn connect_announce_scrape() {
    let (_t, addr) = tracker();
    let deadline = Instant::now() + WAIT;
    let (a, b) = (client(), client());
    let cid_a = connect(&a, addr, 1, deadline);
    let cid_b = connect(&b, addr, 2, deadline);

    let got = exchange(&a, addr, &announce(cid_a, 3, b'a', 7001, 10), deadline);
    let Ok(Response::Announce { transaction_id: 3, leechers: 1, seeders: 0, interval, peers }) =
        Response::decode(&got, false)
    else {
        panic!("{got:?}")
    };
    assert_eq!(interval, 1800);
    assert!(peers.is_empty(), "not itself");

    let got = exchange(&b, addr, &announce(cid_b, 4, b'b', 7002, 0), deadline);
    let Ok(Response::Announce { transaction_id: 4, leechers: 1, seeders: 1, peers, .. }) =
        Response::decode(&got, false)
    else {
        panic!("{got:?}")
    };
    assert_eq!(peers.iter().collect::<Vec<_>>(), vec![SocketAddr::from(([127, 0, 0, 1], 7001))]);

    let mut scrape = Vec::new();
    Request::Scrape { connection_id: cid_a, transaction_id: 5, info_hashes: &[HASH, [0; 20]].concat() }
        .encode(&mut scrape);
    let got = exchange(&a, addr, &scrape, deadline);
    let Ok(Response::Scrape { transaction_id: 5, stats }) = Response::decode(&got, false) else { panic!("{got:?}") };
    let stats: Vec<_> = scrape_stats(stats).map(|s| (s.seeders, s.completed, s.leechers)).collect();
    assert_eq!(stats, vec![(1, 0, 1), (0, 0, 0)]);

    // Another client's connection id is not this one's: dropped, no answer.
    a.send_to(&announce(cid_b, 6, b'a', 7001, 10), addr).unwrap();
    let mut buf = [0; 1500];
    assert!(a.recv_from(&mut buf).is_err(), "a request with a stolen connection id is dropped");
}

#[test]
fn a_flood_of_connects_leaves_a_correct_client_served() {
    let (t, addr) = tracker();
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    flood.set_nonblocking(true).unwrap();
    let mut req = Vec::new();
    Request::Connect { transaction_id: 0xf100d }.encode(&mut req);
    for _ in 0..10_000 {
        // A full socket buffer only means fewer of them arrive.
        let _ = flood.send_to(&req, addr);
    }
    let started = Instant::now();
    let good = client();
    let cid = connect(&good, addr, 42, started + Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(1));
    let got = exchange(&good, addr, &announce(cid, 43, b'g', 7003, 1), started + WAIT);
    assert!(matches!(Response::decode(&got, false), Ok(Response::Announce { transaction_id: 43, .. })));
    assert!(t.try_wait_line("panicked", Duration::from_millis(10)).is_none());
}

#[test]
fn udp_port_defaults_to_the_http_port_and_no_udp_turns_it_off() {
    let port = common::free_port().to_string();
    let p = Proc::toybt("tracker", &["tracker", "--bind", "127.0.0.1", "--port", &port, "--open"]);
    let line = p.wait_line("udp tracker listening on", WAIT);
    assert!(line.contains(&format!("udp://127.0.0.1:{port}/announce")), "{line}");
    drop(p);
    let p = Proc::toybt("tracker", &["tracker", "--bind", "127.0.0.1", "--port", "0", "--no-udp", "--open"]);
    p.wait_line("tracker listening on", WAIT);
    assert!(p.try_wait_line("udp tracker", Duration::from_millis(300)).is_none());
    let (code, _, err) = common::run_toybt(&["tracker", "--open", "--no-udp", "--udp-port", "1"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_seed_with_tracker_port_serves_udp_too() {
    let dir = tempfile::Builder::new().prefix("toybt-udp-seed").tempdir().unwrap();
    let content = dir.path().join("seed/small.bin");
    common::clients::write_random_file(&content, 100_000, 5);
    let torrent = common::swarm::create_torrent(&content, &dir.path().join("small.torrent"), "16K", None);
    let (seed, seed_addr) = common::swarm::seed("seed", &torrent.path, &content, &["--tracker-port", "0"]);
    let line = seed.wait_line("udp tracker listening on", WAIT);
    let addr = SocketAddr::from(([127, 0, 0, 1], port_from_line(&line)));
    let deadline = Instant::now() + WAIT;
    let s = client();
    let cid = connect(&s, addr, 1, deadline);
    // The seed announces itself to its own (HTTP) tracker, and logs the answer; the UDP front end then answers from
    // the same registry.
    seed.wait_line("tracker: ", WAIT);
    let got = exchange(&s, addr, &announce_for(torrent.info_hash, cid, 2, b'l', 7004, 1), deadline);
    let Ok(Response::Announce { seeders, peers, .. }) = Response::decode(&got, false) else { panic!("{got:?}") };
    assert_eq!(seeders, 1, "the seed is in the registry once its tracker answered it");
    assert_eq!(peers.iter().collect::<Vec<_>>(), vec![seed_addr]);
}

#[test]
fn seed_and_leech_find_each_other_through_a_udp_tracker_only() {
    use common::swarm as sw;
    let dir = tempfile::Builder::new().prefix("toybt-udp-swarm").tempdir().unwrap();
    let (_tracker, addr) = tracker();
    let content = dir.path().join("seed/small.bin");
    common::clients::write_random_file(&content, 400_000, 11);
    let url = format!("udp://{addr}/announce");
    let torrent = sw::create_torrent(&content, &dir.path().join("small.torrent"), "16K", Some(&url));
    let (mut seed, _) = sw::seed("seed", &torrent.path, &content, &[]);
    seed.wait_line("tracker: 0 peer(s)", WAIT);
    let out = dir.path().join("leech");
    let (mut leech, _) = sw::leech("leech", &torrent.path, &out, &["--seed-time", "0"]);
    sw::assert_exits_0(&mut leech, Duration::from_secs(30));
    assert!(leech.output().contains("tracker: 1 peer(s)"), "{}", leech.output());
    common::clients::assert_same_tree(&content, &out.join("small.bin"));
    let st = sw::stop(&mut seed, WAIT);
    assert_eq!(st.uploaded, 400_000);
}

/// The client side against the reference: a toybt seed and leech meet through opentracker's UDP port only.
#[test]
fn seed_and_leech_find_each_other_through_opentrackers_udp_port() {
    use common::swarm as sw;
    use std::os::unix::fs::PermissionsExt;
    if !common::which("opentracker") {
        eprintln!("opentracker is not installed: skipped");
        return;
    }
    let dir = tempfile::Builder::new().prefix("toybt-udp-ot").tempdir().unwrap();
    let udp_port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tcp_port = common::free_port();
    let content = dir.path().join("seed/small.bin");
    common::clients::write_random_file(&content, 300_000, 12);
    let url = format!("udp://127.0.0.1:{udp_port}/announce");
    let torrent = sw::create_torrent(&content, &dir.path().join("small.torrent"), "16K", Some(&url));
    let ot_dir = dir.path().join("ot");
    std::fs::create_dir_all(&ot_dir).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&ot_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hex: String = torrent.info_hash.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(ot_dir.join("whitelist.txt"), hex + "\n").unwrap();
    let mut cmd = std::process::Command::new("opentracker");
    cmd.args(["-i", "127.0.0.1", "-p", &tcp_port.to_string(), "-P", &udp_port.to_string(), "-w", "whitelist.txt"])
        .arg("-d")
        .arg(&ot_dir);
    let _ot = Proc::spawn("opentracker", cmd);
    // Ready once it answers a connect.
    connect(&client(), SocketAddr::from(([127, 0, 0, 1], udp_port)), 1, Instant::now() + WAIT);

    let (mut seed, _) = sw::seed("seed", &torrent.path, &content, &[]);
    seed.wait_line("tracker: ", WAIT);
    let out = dir.path().join("leech");
    let (mut leech, _) = sw::leech("leech", &torrent.path, &out, &["--seed-time", "0"]);
    sw::assert_exits_0(&mut leech, Duration::from_secs(30));
    common::clients::assert_same_tree(&content, &out.join("small.bin"));
    let st = sw::stop(&mut seed, WAIT);
    assert_eq!(st.uploaded, 300_000);
}

/// BEP 12 tiers: a dead UDP tracker (a closed port: nothing answers) in the first tier, toybt's HTTP tracker in the
/// second. The toybt leech must move on to the second tier and finish in bounded time; the seed is libtorrent, which
/// announces to every tier on its own, so the time measured is the toybt leech's.
#[test]
fn a_dead_udp_first_tier_falls_back_to_a_live_http_tier() {
    use common::{clients, swarm as sw};
    let mut fx = clients::Fixture::single_file(26);
    let (_tracker, http) = sw::tracker(&fx.torrent.path);
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed again at once
    let tiers = [vec![format!("udp://{dead}/announce")], vec![format!("http://{http}/announce")]];
    fx.torrent = fx.torrent.with_tiers(&tiers, &fx.dir.path().join("tiers.torrent"));
    let _seed = clients::libtorrent_seed(&fx.torrent.path, &fx.seed_dir, &[]);
    clients::wait_scrape(http, &fx.torrent.info_hash, WAIT, |s| s.complete == 1);
    let started = Instant::now();
    let (mut leech, _) = sw::leech("leech", &fx.torrent.path, &fx.leech_dir, &["--seed-time", "0"]);
    // The dead tracker is given up after 20 s (sent at 0 and 15 s), not the full 30 s announce timeout.
    leech.wait_line("download complete", Duration::from_secs(25));
    let done = started.elapsed();
    fx.assert_leech_has_everything();
    // Its `completed` announce passes over the tracker that just failed and goes to the live one at once.
    sw::assert_exits_0(&mut leech, Duration::from_secs(15));
    let exited = started.elapsed();
    eprintln!("timing a_dead_udp_first_tier_falls_back_to_a_live_http_tier: done {done:.1?}, exit {exited:.1?}");
    assert!(done >= Duration::from_secs(19), "no peer can be known before the udp tier is given up: {done:?}");
    assert!(exited < done + Duration::from_secs(10), "the completed announce paid the dead tier again: {exited:?}");
}

/// A magnet link's `tr` value: the URL with everything but unreserved characters percent-encoded.
fn percent_encoded(url: &str) -> String {
    url.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A magnet link whose only tracker is toybt's own UDP tracker: the leech learns the seed from it alone (no `x.pe`,
/// no HTTP tracker), fetches the metadata from the seed, then the data, byte for byte.
#[test]
fn a_magnet_link_whose_only_tracker_is_a_udp_tracker_completes() {
    use common::swarm as sw;
    let dir = tempfile::Builder::new().prefix("toybt-udp-magnet").tempdir().unwrap();
    let (_tracker, addr) = tracker();
    let content = dir.path().join("seed/magnet.bin");
    common::clients::write_random_file(&content, 300_000, 13);
    let url = format!("udp://{addr}/announce");
    let torrent = sw::create_torrent(&content, &dir.path().join("magnet.torrent"), "16K", Some(&url));
    let (mut seed, _) = sw::seed("seed", &torrent.path, &content, &[]);
    seed.wait_line("tracker: 0 peer(s)", WAIT);
    let hex: String = torrent.info_hash.iter().map(|b| format!("{b:02x}")).collect();
    let link = format!("magnet:?xt=urn:btih:{hex}&dn=magnet.bin&tr={}", percent_encoded(&url));
    let out = dir.path().join("leech");
    let (mut leech, _) = sw::leech("leech", std::path::Path::new(&link), &out, &["--seed-time", "0"]);
    leech.wait_line("metadata complete", Duration::from_secs(30));
    sw::assert_exits_0(&mut leech, Duration::from_secs(30));
    assert!(leech.output().contains("tracker: 1 peer(s)"), "{}", leech.output());
    common::clients::assert_same_tree(&content, &out.join("magnet.bin"));
    let st = sw::stop(&mut seed, WAIT);
    assert_eq!(st.uploaded, 300_000);
}

/// The address in a `... listening on ADDR:PORT ...` line, `[::1]:PORT` included.
fn listen_addr(line: &str) -> SocketAddr {
    let after = line.split("listening on ").nth(1).unwrap_or_else(|| panic!("no address in {line:?}"));
    let text = after.split_whitespace().next().unwrap_or_default();
    text.parse().unwrap_or_else(|e| panic!("{text:?} in {line:?}: {e}"))
}

/// `toybt tracker --bind ::1` over UDP only: a toybt seed and leech, both on ::1, meet through
/// `udp://[::1]:N/announce` (an IPv6 announce, answered with 18-byte peers) and trade, byte for byte.
#[test]
fn seed_and_leech_find_each_other_through_an_ipv6_udp_tracker() {
    use common::swarm as sw;
    if let Err(e) = std::net::UdpSocket::bind("[::1]:0") {
        panic!("cannot bind [::1] ({e}): this test needs ::1 on the loopback interface (`ip -6 addr show lo`)");
    }
    let dir = tempfile::Builder::new().prefix("toybt-udp6").tempdir().unwrap();
    let tracker = Proc::toybt("tracker", &["tracker", "--bind", "::1", "--port", "0", "--udp-port", "0", "--open"]);
    let line = tracker.wait_line("udp tracker listening on", WAIT);
    let addr = listen_addr(&line);
    assert_eq!(addr.ip(), std::net::Ipv6Addr::LOCALHOST, "{line}");
    let url = format!("udp://{addr}/announce");
    assert!(line.ends_with(&format!("(announce {url})")), "{line}");

    let content = dir.path().join("seed/six.bin");
    common::clients::write_random_file(&content, 300_000, 14);
    let torrent = sw::create_torrent(&content, &dir.path().join("six.torrent"), "16K", Some(&url));
    let (t, data) = (torrent.path.to_str().unwrap(), content.to_str().unwrap());
    let mut seed = Proc::toybt("seed", &["seed", t, data, "--port", "0", "--bind", "::1"]);
    let seed_addr = listen_addr(&seed.wait_line("peer listening on", WAIT));
    assert_eq!(seed_addr.ip(), std::net::Ipv6Addr::LOCALHOST);
    seed.wait_line("tracker: 0 peer(s)", WAIT);
    let out = dir.path().join("leech");
    let o = out.to_str().unwrap();
    let mut leech = Proc::toybt("leech", &["leech", t, "-o", o, "--port", "0", "--bind", "::1", "--seed-time", "0"]);
    sw::assert_exits_0(&mut leech, Duration::from_secs(30));
    assert!(leech.output().contains("tracker: 1 peer(s)"), "{}", leech.output());
    common::clients::assert_same_tree(&content, &out.join("six.bin"));
    let st = sw::stop(&mut seed, WAIT);
    assert_eq!(st.uploaded, 300_000);
}
