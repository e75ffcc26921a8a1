use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::tracker::udp::UdpFront;
use crate::tracker::udp::wire::ANNOUNCE_LEN;
use crate::tracker::{Config, Registry};

const HASH: [u8; 20] = [0x42; 20];

fn url() -> TrackerUrl {
    TrackerUrl::parse("udp://tracker.example:6969/announce?passkey=abc").unwrap()
}

fn params(port: u16, event: Option<Event>) -> AnnounceParams {
    AnnounceParams {
        info_hash: HASH,
        peer_id: [port as u8; 20],
        port,
        uploaded: 0,
        downloaded: 0,
        left: 10,
        event,
        numwant: 50,
        key: 7,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A tracker (the real front end and registry) and clients on a virtual network: datagrams are delivered at once.
struct Net {
    front: UdpFront,
    registry: Registry,
    tracker: SocketAddr,
}

impl Net {
    fn new(now: Instant, tracker: &str) -> Net {
        let cfg = Config { open: true, ..Config::default() };
        Net {
            front: UdpFront::with_key(now, [9; 16]),
            registry: Registry::new(cfg, [], 3, now),
            tracker: addr(tracker),
        }
    }

    /// Moves datagrams between the announcer (at `me`) and the tracker until both are quiet; returns how many
    /// datagrams the announcer sent.
    fn run(&mut self, now: Instant, me: SocketAddr, a: &mut UdpAnnouncer) -> usize {
        let mut sent = 0;
        let mut out = Vec::new();
        loop {
            out.clear();
            let Some(to) = a.poll_datagram(now, &mut out) else { break };
            assert_eq!(to, self.tracker);
            sent += 1;
            self.front.handle_datagram(now, me, &out, &mut self.registry);
            let mut answer = Vec::new();
            while let Some(back) = self.front.poll_datagram(now, &mut answer) {
                assert_eq!(back, me);
                a.handle_datagram(now, self.tracker, &answer);
                answer.clear();
            }
        }
        sent
    }
}

#[test]
fn connects_then_announces_and_reuses_the_connection_id_for_a_minute() {
    let now = Instant::now();
    let mut net = Net::new(now, "10.0.0.100:6969");
    let (me, other) = (addr("10.0.0.1:40000"), addr("10.0.0.2:40000"));
    let mut a = UdpAnnouncer::new(1, false);
    let mut b = UdpAnnouncer::new(2, false);
    b.start(now, HASH, net.tracker, &url(), &params(7002, Some(Event::Started)), Duration::from_secs(30));
    assert_eq!(net.run(now, other, &mut b), 2, "connect, announce");
    let (hash, got) = b.poll_done().unwrap();
    assert_eq!(hash, HASH);
    assert!(got.unwrap().peers.is_empty());

    a.start(now, HASH, net.tracker, &url(), &params(7001, Some(Event::Started)), Duration::from_secs(30));
    assert_eq!(net.run(now, me, &mut a), 2);
    let got = a.poll_done().unwrap().1.unwrap();
    assert_eq!(got.peers, vec![addr("10.0.0.2:7002")]);
    assert_eq!((got.complete, got.incomplete, got.interval), (Some(0), Some(2), Some(Duration::from_secs(1800))));

    // Within the minute: straight to the announce.
    let later = now + Duration::from_secs(59);
    a.start(later, HASH, net.tracker, &url(), &params(7001, None), Duration::from_secs(30));
    let mut out = Vec::new();
    assert_eq!(a.poll_datagram(later, &mut out), Some(net.tracker));
    assert!(out.len() > ANNOUNCE_LEN, "an announce with its URL data: {} bytes", out.len());
    assert!(out.ends_with(b"/announce?passkey=abc"));
    // After it: a new connect.
    let mut c = UdpAnnouncer::new(3, false);
    c.cids = a.cids.clone();
    c.start(now + Duration::from_secs(61), HASH, net.tracker, &url(), &params(7001, None), Duration::from_secs(30));
    out.clear();
    c.poll_datagram(now + Duration::from_secs(61), &mut out);
    assert_eq!(out.len(), 16);
}

#[test]
fn answers_with_another_transaction_id_or_from_elsewhere_are_ignored() {
    let now = Instant::now();
    let tracker = addr("10.0.0.100:6969");
    let mut a = UdpAnnounce::new(now, tracker, &url(), &params(1, None), Duration::from_secs(30), None, 5);
    let mut out = Vec::new();
    a.poll_datagram(now, &mut out);
    let tid = u32::from_be_bytes(out[12..16].try_into().unwrap());
    let mut answer = Vec::new();
    Response::Connect { transaction_id: tid ^ 1, connection_id: 9 }.encode(&mut answer);
    assert!(!a.handle_datagram(now, tracker, &answer));
    answer.clear();
    Response::Connect { transaction_id: tid, connection_id: 9 }.encode(&mut answer);
    assert!(!a.handle_datagram(now, addr("10.0.0.101:6969"), &answer));
    assert!(!a.handle_datagram(now, tracker, &answer[..15]));
    assert!(a.handle_datagram(now, addr("[::ffff:10.0.0.100]:6969"), &answer), "a v4-mapped source is the same");
    assert_eq!(a.connection(), Some((9, now)));
    out.clear();
    a.poll_datagram(now, &mut out);
    assert_eq!(u64::from_be_bytes(out[..8].try_into().unwrap()), 9);
    let tid = u32::from_be_bytes(out[12..16].try_into().unwrap());
    answer.clear();
    Response::Error { transaction_id: tid, message: b"unregistered torrent" }.encode(&mut answer);
    assert!(a.handle_datagram(now, tracker, &answer));
    assert_eq!(a.take_result(), Some(Err("tracker failure: unregistered torrent".into())));
}

#[test]
fn retransmits_after_15_then_30_seconds_and_fails_at_the_deadline() {
    let now = Instant::now();
    let tracker = addr("10.0.0.100:6969");
    let mut a = UdpAnnounce::new(now, tracker, &url(), &params(1, None), Duration::from_secs(60), None, 5);
    let mut sends = Vec::new();
    let mut t = now;
    let mut out = Vec::new();
    while t <= now + Duration::from_secs(70) {
        a.handle_timeout(t);
        if a.poll_datagram(t, &mut out).is_some() {
            sends.push((t - now).as_secs());
        }
        match a.take_result() {
            Some(r) => {
                assert!(r.unwrap_err().contains("did not answer"));
                assert_eq!((t - now).as_secs(), 60);
                break;
            }
            None => t += Duration::from_secs(1),
        }
    }
    assert_eq!(sends, vec![0, 15, 45]);
}

#[test]
fn a_stopped_announce_gives_up_at_its_short_deadline() {
    let now = Instant::now();
    let mut a = UdpAnnouncer::new(1, false);
    let p = params(1, Some(Event::Stopped));
    a.start(now, HASH, addr("10.0.0.100:6969"), &url(), &p, Duration::from_secs(5));
    let mut out = Vec::new();
    assert!(a.poll_datagram(now, &mut out).is_some());
    assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(5)));
    a.handle_timeout(now + Duration::from_secs(4));
    assert!(a.poll_done().is_none());
    a.handle_timeout(now + Duration::from_secs(5));
    assert!(a.poll_done().unwrap().1.is_err());
    assert_eq!(a.in_flight(), 0);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn ipv6_trackers_answer_with_18_byte_peers() {
    let now = Instant::now();
    let mut net = Net::new(now, "[2001:db8::100]:6969");
    let mut b = UdpAnnouncer::new(2, true);
    b.start(now, HASH, net.tracker, &url(), &params(7002, None), Duration::from_secs(30));
    net.run(now, addr("[2001:db8::2]:1"), &mut b);
    assert!(b.poll_done().unwrap().1.is_ok());
    let mut a = UdpAnnouncer::new(1, true);
    a.start(now, HASH, net.tracker, &url(), &params(7001, None), Duration::from_secs(30));
    net.run(now, addr("[2001:db8::1]:1"), &mut a);
    assert_eq!(a.poll_done().unwrap().1.unwrap().peers, vec![addr("[2001:db8::2]:7002")]);
}

#[test]
fn ipv4_trackers_are_reached_through_a_dual_stack_socket_by_mapped_address() {
    let now = Instant::now();
    let mut a = UdpAnnouncer::new(1, true);
    a.start(now, HASH, addr("10.0.0.100:6969"), &url(), &params(1, None), Duration::from_secs(30));
    let mut out = Vec::new();
    assert_eq!(a.poll_datagram(now, &mut out), Some(addr("[::ffff:10.0.0.100]:6969")));
    let mut v4only = UdpAnnouncer::new(1, false);
    v4only.start(now, HASH, addr("[2001:db8::1]:6969"), &url(), &params(1, None), Duration::from_secs(30));
    assert!(v4only.poll_done().unwrap().1.is_err());
}

#[test]
fn a_reused_connection_id_left_unanswered_is_asked_for_again() {
    let now = Instant::now();
    let mut net = Net::new(now, "10.0.0.100:6969");
    let me = addr("10.0.0.1:40000");
    let mut a = UdpAnnouncer::new(1, false);
    a.start(now, HASH, net.tracker, &url(), &params(7001, None), Duration::from_secs(30));
    net.run(now, me, &mut a);
    assert!(a.poll_done().unwrap().1.is_ok());
    // The tracker restarts (a new key): the cached id is now unknown to it and its announce is dropped.
    net.front = UdpFront::with_key(now, [1; 16]);
    let t = now + Duration::from_secs(10);
    a.start(t, HASH, net.tracker, &url(), &params(7001, None), Duration::from_secs(30));
    assert_eq!(net.run(t, me, &mut a), 1, "the announce, straight away");
    assert!(a.poll_done().is_none());
    let t = t + RETRANSMIT;
    a.handle_timeout(t);
    assert_eq!(net.run(t, me, &mut a), 2, "a new connect, then the announce");
    assert!(a.poll_done().unwrap().1.is_ok());
}

/// Sends what is due at `t` from `a`; returns the transaction id of the request written, if one was.
fn due_tid(a: &mut UdpAnnounce, t: Instant) -> Option<u32> {
    let mut out = Vec::new();
    a.poll_datagram(t, &mut out)?;
    Some(u32::from_be_bytes(out[12..16].try_into().unwrap()))
}

/// An announce that has its connection id (9) and has sent its announce request; returns it and that request's
/// transaction id.
fn announcing(now: Instant, tracker: SocketAddr) -> (UdpAnnounce, u32) {
    let mut a = UdpAnnounce::new(now, tracker, &url(), &params(1, None), Duration::from_secs(30), None, 11);
    let tid = due_tid(&mut a, now).unwrap();
    let mut answer = Vec::new();
    Response::Connect { transaction_id: tid, connection_id: 9 }.encode(&mut answer);
    assert!(a.handle_datagram(now, tracker, &answer));
    let tid = due_tid(&mut a, now).unwrap();
    (a, tid)
}

/// An announce answer with `peers` (raw records, whole or not) after the 20-byte head.
fn announce_answer(tid: u32, peers: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    crate::tracker::udp::wire::encode_announce_head(&mut b, tid, 900, 3, 4);
    b.extend_from_slice(peers);
    b
}

#[test]
fn a_silent_tracker_fails_the_announce_and_the_schedule_backs_off() {
    use crate::tracker::announce::Schedule;
    let t0 = Instant::now();
    let tracker = addr("10.0.0.100:6969");
    let mut schedule = Schedule::new(vec![vec![url()]], t0, 3);
    let mut a = UdpAnnouncer::new(1, false);
    let mut t = t0;
    let mut fails = Vec::new();
    let mut out = Vec::new();
    // Three rounds: each announce sends its connect at 0 and 15 s and fails at the 30 s deadline; the schedule
    // then waits 15 s, then 30 s (±25%) before the next.
    while fails.len() < 3 {
        assert!(t < t0 + Duration::from_secs(600), "no failure in time");
        if let Some(due) = schedule.poll_due(t) {
            assert_eq!(due.url, url());
            a.start(t, HASH, tracker, &due.url, &params(1, due.event), crate::tracker::announce::REQUEST_TIMEOUT);
        }
        let mut sends = 0;
        while a.poll_datagram(t, &mut out).is_some() {
            out.clear();
            sends += 1;
        }
        assert!(sends <= 1);
        a.handle_timeout(t);
        if let Some((hash, r)) = a.poll_done() {
            assert_eq!(hash, HASH);
            assert!(r.unwrap_err().contains("did not answer"));
            schedule.on_failure(t);
            fails.push((t, schedule.poll_timeout().unwrap()));
        }
        // The next moment anything is due, as the reactor would sleep to it.
        t = [a.poll_timeout(), schedule.poll_timeout()].into_iter().flatten().min().unwrap().max(t);
    }
    let secs = |d: Duration| d.as_secs_f64();
    assert_eq!(fails[0].0, t0 + Duration::from_secs(30));
    let waits: Vec<f64> = fails.iter().map(|(at, next)| secs(*next - *at)).collect();
    assert!((11.25..=18.75).contains(&waits[0]), "{waits:?}");
    assert!((22.5..=37.5).contains(&waits[1]), "{waits:?}");
    assert!((45.0..=75.0).contains(&waits[2]), "{waits:?}");
    assert_eq!(a.in_flight(), 0);
}

#[test]
fn an_error_answer_to_the_connect_fails_with_its_message() {
    let now = Instant::now();
    let tracker = addr("10.0.0.100:6969");
    let mut a = UdpAnnounce::new(now, tracker, &url(), &params(1, None), Duration::from_secs(30), None, 5);
    let tid = due_tid(&mut a, now).unwrap();
    let mut answer = Vec::new();
    Response::Error { transaction_id: tid, message: b"torrent not whitelisted" }.encode(&mut answer);
    assert!(a.handle_datagram(now, tracker, &answer));
    assert_eq!(a.poll_timeout(), None, "finished: nothing more to send or wait for");
    assert_eq!(due_tid(&mut a, now + Duration::from_secs(15)), None);
    assert_eq!(a.take_result(), Some(Err("tracker failure: torrent not whitelisted".into())));
    // A long message is cut to 200 bytes; bytes that are not UTF-8 are replaced.
    let mut b = UdpAnnounce::new(now, tracker, &url(), &params(1, None), Duration::from_secs(30), None, 6);
    let tid = due_tid(&mut b, now).unwrap();
    answer.clear();
    let long = [b'x'; 5000];
    Response::Error { transaction_id: tid, message: &long }.encode(&mut answer);
    assert!(b.handle_datagram(now, tracker, &answer));
    assert_eq!(b.take_result().unwrap().unwrap_err(), format!("tracker failure: {}", "x".repeat(200)));
    let (mut c, tid) = announcing(now, tracker);
    answer.clear();
    Response::Error { transaction_id: tid, message: b"bad\xff" }.encode(&mut answer);
    assert!(c.handle_datagram(now, tracker, &answer));
    assert_eq!(c.take_result(), Some(Err("tracker failure: bad\u{fffd}".into())));
}

#[test]
fn a_ragged_peer_list_is_refused_and_the_announce_goes_on_to_its_deadline() {
    let now = Instant::now();
    let tracker = addr("10.0.0.100:6969");
    let (mut a, tid) = announcing(now, tracker);
    // Two whole peers and 5 bytes of a third: not a well-formed answer, so not taken at all.
    let peers = [10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0x1a, 0xe2, 10, 0, 0, 3, 0x1a];
    assert!(!a.handle_datagram(now, tracker, &announce_answer(tid, &peers)));
    assert_eq!(a.take_result(), None);
    // Still waiting: the announce is retransmitted at 15 s and a whole answer to it is taken.
    a.handle_timeout(now + RETRANSMIT);
    let tid = due_tid(&mut a, now + RETRANSMIT).expect("a retransmission");
    assert!(a.handle_datagram(now + RETRANSMIT, tracker, &announce_answer(tid, &peers[..12])));
    let got = a.take_result().unwrap().unwrap();
    assert_eq!(got.peers, vec![addr("10.0.0.1:6881"), addr("10.0.0.2:6882")]);
    assert_eq!((got.complete, got.incomplete), (Some(4), Some(3)));
    // Only ragged answers: bounded by the deadline.
    let (mut b, tid) = announcing(now, tracker);
    let head_only_plus_one = announce_answer(tid, &[1]);
    assert!(!b.handle_datagram(now, tracker, &head_only_plus_one));
    assert!(!b.handle_datagram(now, tracker, &head_only_plus_one[..19]), "short of the head");
    b.handle_timeout(now + Duration::from_secs(30));
    assert!(b.take_result().unwrap().unwrap_err().contains("did not answer"));
}

#[test]
fn a_10000_peer_answer_keeps_at_most_max_peers() {
    let now = Instant::now();
    let tracker = addr("10.0.0.100:6969");
    let (mut a, tid) = announcing(now, tracker);
    let mut peers = Vec::new();
    for i in 0..10_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i + 1);
        let port = if i == 0 { 0 } else { 1000 + (i % 60_000) as u16 };
        crate::tracker::udp::wire::Peers::push(&mut peers, SocketAddr::new(ip.into(), port), false);
    }
    let answer = announce_answer(tid, &peers);
    assert_eq!(answer.len(), 20 + 60_000);
    assert!(answer.len() <= 65_507, "fits one IPv4 datagram");
    assert!(a.handle_datagram(now, tracker, &answer));
    let got = a.take_result().unwrap().unwrap();
    assert_eq!(got.peers.len(), MAX_PEERS);
    // The first ones, in the tracker's order, without the one that gave port 0.
    assert_eq!(got.peers[0], addr("10.0.0.2:1001"));
    assert_eq!(got.peers[MAX_PEERS - 1], addr(&format!("10.0.0.{}:{}", MAX_PEERS + 1, 1000 + MAX_PEERS)));
}
