//! The loop itself on 127.0.0.1: real sockets, real timers, scripted machines.

use super::conn::probe::Probe;
use super::datagram::echo::Echo;
use super::*;
use crate::tracker::{Config, Registry};
use std::io::{Read, Write};

const HASH: [u8; 20] = [0x5A; 20];

fn tracker_loop(cfg: Config, hashes: &[[u8; 20]], max_conns: usize) -> (Reactor, SocketAddr) {
    let tracker = Registry::new(cfg, hashes.iter().copied(), 1, Instant::now());
    let mut r = Reactor::new(Services { tracker: Some(tracker), ..Services::default() }).unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    r.listen(l, ListenKind::Tracker, max_conns).unwrap();
    (r, addr)
}

/// Turns the loop until `done` holds; fails the test after `limit`.
fn spin_until(r: &mut Reactor, limit: Duration, mut done: impl FnMut(&mut Reactor) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(r) {
        assert!(Instant::now() < deadline, "condition not reached within {limit:?}");
        r.turn(Some(Duration::from_millis(10))).unwrap();
    }
}

fn client(addr: SocketAddr) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Reads what is there without blocking; `None` once the peer has closed (EOF or reset).
fn read_some(s: &mut std::net::TcpStream, into: &mut Vec<u8>) -> Option<usize> {
    let mut buf = [0u8; 65536];
    match s.read(&mut buf) {
        Ok(0) => None,
        Ok(n) => {
            into.extend_from_slice(&buf[..n]);
            Some(n)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(0),
        Err(_) => None,
    }
}

#[test]
fn outgoing_connect_reaches_the_tracker_in_the_same_loop() {
    let (mut r, addr) = tracker_loop(Config::default(), &[HASH], 10);
    let (probe, log) = Probe::new(b"GET /scrape HTTP/1.1\r\nConnection: close\r\n\r\n", usize::MAX);
    r.connect(addr, Conn::Probe(probe)).unwrap();
    spin_until(&mut r, Duration::from_secs(5), |r| r.is_stopping());
    let log = log.borrow();
    assert!(log.connected);
    let text = String::from_utf8_lossy(&log.got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("incompletei0eeee"), "{text}");
    assert_eq!(log.closed.as_deref(), Some("closed by the peer"));
    assert_eq!(r.conn_count(), 0, "the tracker side closed too");
}

#[test]
fn refused_connect_is_reported_to_the_machine() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut r = Reactor::new(Services::default()).unwrap();
    let (probe, log) = Probe::new(b"hello", usize::MAX);
    r.connect(SocketAddr::from(([127, 0, 0, 1], port)), Conn::Probe(probe)).unwrap();
    spin_until(&mut r, Duration::from_secs(5), |r| r.is_stopping());
    let log = log.borrow();
    assert!(!log.connected);
    assert!(log.closed.as_deref().unwrap().starts_with("connect failed"), "{:?}", log.closed);
    assert_eq!(r.conn_count(), 0);
}

#[test]
fn connect_requested_by_a_machine_goes_through_ctl() {
    let (mut r, addr) = tracker_loop(Config::default(), &[HASH], 10);
    let (probe, log) = Probe::new(b"GET /scrape HTTP/1.1\r\n\r\n", 10);
    r.ctl.connect(addr, Conn::Probe(probe));
    r.run_requests(Instant::now());
    spin_until(&mut r, Duration::from_secs(5), |r| r.is_stopping());
    assert!(log.borrow().got.starts_with(b"HTTP/1.1 200"));
}

#[test]
fn wake_sends_what_a_machine_was_given_from_outside() {
    let (mut r, addr) = tracker_loop(Config::default(), &[HASH], 10);
    let (probe, log) = Probe::new(b"GET /scrape HTTP/1.1\r\n\r\n", usize::MAX);
    let id = r.connect(addr, Conn::Probe(probe)).unwrap();
    let answered = |log: &std::cell::RefCell<super::conn::probe::Log>, n: usize| {
        log.borrow().got.windows(12).filter(|w| w == b"HTTP/1.1 200").count() == n
    };
    spin_until(&mut r, Duration::from_secs(5), |_| answered(&log, 1));
    log.borrow_mut().outbox.extend_from_slice(b"GET /scrape HTTP/1.1\r\n\r\n");
    for _ in 0..5 {
        r.turn(Some(Duration::from_millis(1))).unwrap();
    }
    assert!(answered(&log, 1), "nothing is sent without a wake");
    r.wake(id);
    spin_until(&mut r, Duration::from_secs(5), |_| answered(&log, 2));
}

#[test]
fn a_client_that_does_not_read_stops_being_read_and_gets_everything_later() {
    // 100 torrents make a full scrape of about 7 KB, so 2000 answers (14 MB) outgrow what the kernel buffers
    // for a reader that does not read.
    let hashes: Vec<[u8; 20]> = (0..100u8)
        .map(|i| {
            let mut h = [0xEE; 20];
            h[0] = i;
            h
        })
        .collect();
    let (mut r, addr) = tracker_loop(Config::default(), &hashes, 10);
    let mut c = client(addr);
    let requests = 2000;
    let input = b"GET /scrape HTTP/1.1\r\n\r\n".repeat(requests);
    let mut written = 0;
    spin_until(&mut r, Duration::from_secs(10), |r| {
        if written < input.len() {
            written += c.write(&input[written..]).unwrap_or(0);
        }
        r.conns.iter().next().is_some_and(|(_, e)| e.buf.backed_up())
    });
    // Stuck: turning the loop more does not grow the queue past one response over the mark.
    for _ in 0..20 {
        r.turn(Some(Duration::from_millis(1))).unwrap();
    }
    let (_, e) = r.conns.iter().next().unwrap();
    let limits = e.conn.limits(&r.services);
    assert!(e.buf.pending_out() < limits.out_high + 20_000, "queued {}", e.buf.pending_out());
    let Conn::TrackerClient(tc) = &e.conn else { panic!("not a tracker client") };
    assert!(tc.requests() < requests as u64, "all {} requests were handled while nobody read", tc.requests());
    // Now read everything: every request gets its answer.
    let mut got = Vec::new();
    let one = {
        let mut body = Vec::new();
        crate::tracker::scrape_query(r.services.tracker.as_ref().unwrap(), b"", &mut body);
        body.len()
    };
    spin_until(&mut r, Duration::from_secs(20), |_| {
        if written < input.len() {
            written += c.write(&input[written..]).unwrap_or(0);
        }
        while read_some(&mut c, &mut got).is_some_and(|n| n > 0) {}
        got.len() >= requests * (one + 60)
    });
    let answers = got.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count();
    assert_eq!(answers, requests);
}

#[test]
fn a_machine_that_wakes_itself_still_reads_one_budget_per_turn() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut r = Reactor::new(Services::default()).unwrap();
    let (probe, log) = Probe::new(b"", usize::MAX);
    let id = r.connect(l.local_addr().unwrap(), Conn::Probe(probe)).unwrap();
    log.borrow_mut().wake = Some(id);
    let (mut server, _) = l.accept().unwrap();
    let total = 8 << 20;
    let writer = std::thread::spawn(move || server.write_all(&vec![7u8; total]).map(|_| server));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut most, mut turns) = (0, 0);
    while log.borrow().got.len() < total {
        assert!(Instant::now() < deadline, "only {} bytes arrived", log.borrow().got.len());
        let before = log.borrow().got.len();
        r.turn(Some(Duration::from_millis(10))).unwrap();
        most = most.max(log.borrow().got.len() - before);
        turns += 1;
    }
    let _server = writer.join().unwrap().unwrap();
    // One fill may overshoot the budget by at most the input buffer's size.
    let max_in = Conn::Probe(Probe::new(b"", 0).0).limits(&r.services).max_in;
    assert!(most <= READ_BUDGET + max_in, "one turn read {most} bytes");
    assert!(turns >= total / (READ_BUDGET + max_in), "{turns} turns");
}

#[test]
fn idle_connections_are_closed_by_their_deadline() {
    let cfg = Config { idle_timeout: Duration::from_millis(100), ..Config::default() };
    let (mut r, addr) = tracker_loop(cfg, &[HASH], 10);
    let mut c = client(addr);
    let opened = Instant::now();
    let mut sink = Vec::new();
    spin_until(&mut r, Duration::from_secs(5), |_| read_some(&mut c, &mut sink).is_none());
    assert!(opened.elapsed() >= Duration::from_millis(100));
    assert!(sink.is_empty(), "closed without an answer");
    assert_eq!(r.conn_count(), 0);
    assert!(r.timers.is_empty(), "the closed connection's deadline was cancelled");
}

#[test]
fn the_longest_silent_connection_makes_room_at_the_limit() {
    let (mut r, addr) = tracker_loop(Config::default(), &[HASH], 2);
    let mut first = client(addr);
    spin_until(&mut r, Duration::from_secs(5), |r| r.conn_count() == 1);
    let mut second = client(addr);
    spin_until(&mut r, Duration::from_secs(5), |r| r.conn_count() == 2);
    second.write_all(b"GET /scrape HTTP/1.1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    spin_until(&mut r, Duration::from_secs(5), |_| {
        read_some(&mut second, &mut got);
        !got.is_empty()
    });
    let mut third = client(addr);
    let mut sink = Vec::new();
    spin_until(&mut r, Duration::from_secs(5), |_| read_some(&mut first, &mut sink).is_none());
    assert_eq!(r.conn_count(), 2);
    third.write_all(b"GET /scrape HTTP/1.1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    spin_until(&mut r, Duration::from_secs(5), |_| {
        read_some(&mut third, &mut got);
        got.starts_with(b"HTTP/1.1 200")
    });
    assert!(read_some(&mut second, &mut Vec::new()).is_some(), "the recently active one stays");
}

#[test]
fn an_answer_before_closing_survives_unread_input() {
    let (mut r, addr) = tracker_loop(Config::default(), &[HASH], 10);
    let mut c = client(addr);
    // 64 KiB of request line: the tracker answers 431 after 8 KiB and must not reset the rest away.
    let mut line = b"GET /announce?x=".to_vec();
    line.resize(64 * 1024, b'a');
    let mut written = 0;
    let mut got = Vec::new();
    spin_until(&mut r, Duration::from_secs(5), |_| {
        if written < line.len() {
            written += c.write(&line[written..]).unwrap_or(0);
        }
        read_some(&mut c, &mut got).is_none()
    });
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{text}");
}

fn udp_echo(r: &mut Reactor, echo: Echo, limits: DatagramLimits) -> (UdpId, SocketAddr) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    (r.bind_udp_limited(sock, DatagramKind::Echo(echo), limits).unwrap(), addr)
}

fn udp_client() -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Receives what has arrived without blocking.
fn recv_all(s: &std::net::UdpSocket, into: &mut Vec<Vec<u8>>) {
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = s.recv_from(&mut buf) {
        into.push(buf[..n].to_vec());
    }
}

#[test]
fn datagrams_are_answered_to_the_address_they_came_from() {
    let mut r = Reactor::new(Services::default()).unwrap();
    let (id, addr) = udp_echo(&mut r, Echo::new(1), DatagramLimits::default());
    let (a, b) = (udp_client(), udp_client());
    for i in 0..5 {
        a.send_to(format!("from a {i}").as_bytes(), addr).unwrap();
        b.send_to(format!("from b {i}").as_bytes(), addr).unwrap();
    }
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    spin_until(&mut r, Duration::from_secs(5), |_| {
        recv_all(&a, &mut got_a);
        recv_all(&b, &mut got_b);
        got_a.len() + got_b.len() == 10
    });
    let want = |who: &str| (0..5).map(|i| format!("from {who} {i}").into_bytes()).collect::<Vec<_>>();
    assert_eq!(got_a, want("a"));
    assert_eq!(got_b, want("b"));
    let stats = r.datagram_stats(id);
    assert_eq!((stats.received, stats.sent, stats.dropped, stats.failed, stats.queued), (10, 10, 0, 0, 0));
}

#[test]
fn work_given_from_outside_is_sent_on_a_wake() {
    let mut r = Reactor::new(Services::default()).unwrap();
    let (id, _) = udp_echo(&mut r, Echo::new(1), DatagramLimits::default());
    let c = udp_client();
    // The socket's first writable event comes and goes.
    for _ in 0..3 {
        r.turn(Some(Duration::from_millis(1))).unwrap();
    }
    let DatagramKind::Echo(echo) = r.datagram_machine(id) else { unreachable!("an echo socket") };
    echo.handle_datagram(Instant::now(), c.local_addr().unwrap(), b"pushed");
    for _ in 0..3 {
        r.turn(Some(Duration::from_millis(1))).unwrap();
    }
    let mut got = Vec::new();
    recv_all(&c, &mut got);
    assert!(got.is_empty(), "nothing is sent without a wake");
    r.wake_datagram(id);
    spin_until(&mut r, Duration::from_secs(5), |_| {
        recv_all(&c, &mut got);
        !got.is_empty()
    });
    assert_eq!(got, [b"pushed".to_vec()]);
}

#[test]
fn a_full_send_queue_drops_new_datagrams_and_never_grows() {
    // Ten answers per datagram into a queue of four: four go, six are dropped, each time.
    let mut r = Reactor::new(Services::default()).unwrap();
    let limits = DatagramLimits { max_queued: 4, max_queued_bytes: 1 << 20 };
    let (id, addr) = udp_echo(&mut r, Echo::new(10), limits);
    let c = udp_client();
    for _ in 0..3 {
        c.send_to(b"ping", addr).unwrap();
    }
    let mut got = Vec::new();
    spin_until(&mut r, Duration::from_secs(5), |r| {
        recv_all(&c, &mut got);
        assert!(r.datagram_stats(id).queued <= 4);
        got.len() == 12 && r.datagram_stats(id).received == 3
    });
    let stats = r.datagram_stats(id);
    assert_eq!((stats.sent, stats.dropped, stats.queued, stats.queued_bytes), (12, 18, 0, 0));
    assert!(stats.peak_queued <= 4, "the queue grew to {}", stats.peak_queued);

    // The byte bound: two 4-byte answers fit in 10 bytes.
    let limits = DatagramLimits { max_queued: 100, max_queued_bytes: 10 };
    let (id, addr) = udp_echo(&mut r, Echo::new(10), limits);
    c.send_to(b"abcd", addr).unwrap();
    spin_until(&mut r, Duration::from_secs(5), |r| r.datagram_stats(id).received == 1);
    let stats = r.datagram_stats(id);
    assert_eq!((stats.sent, stats.dropped, stats.peak_queued), (2, 8, 2));
}

#[test]
fn a_datagram_machine_deadline_sets_the_poll_timeout_and_fires() {
    let mut r = Reactor::new(Services::default()).unwrap();
    let c = udp_client();
    let start = Instant::now();
    let delay = Duration::from_millis(150);
    let echo = Echo::new(1).with_tick(start + delay, c.local_addr().unwrap());
    udp_echo(&mut r, echo, DatagramLimits::default());
    let mut got = Vec::new();
    let mut turns = 0;
    while got.is_empty() {
        // Nothing but the deadline can end a wait this long (besides the socket's first writable event).
        r.turn(Some(Duration::from_secs(30))).unwrap();
        turns += 1;
        assert!(turns < 10 && start.elapsed() < Duration::from_secs(10), "the deadline did not end the wait");
        recv_all(&c, &mut got);
    }
    assert_eq!(got, [b"tick".to_vec()]);
    assert!(start.elapsed() >= delay, "fired early");
    assert_eq!(r.next_deadline(), None, "nothing left armed");
}

#[test]
fn a_datagram_flood_does_not_starve_connections_or_timers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (mut r, addr) = tracker_loop(Config::default(), &[HASH], 10);
    let witness = udp_client();
    let echo = Echo::new(0).with_tick(Instant::now() + Duration::from_millis(300), witness.local_addr().unwrap());
    let (id, udp_addr) = udp_echo(&mut r, echo, DatagramLimits::default());
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let started = Instant::now();
            let mut sent = 0u64;
            while sent < 10_000 || !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) {
                if s.send_to(&[0x55; 64], udp_addr).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };
    spin_until(&mut r, Duration::from_secs(5), |r| r.datagram_stats(id).received > 0);
    let mut c = client(addr);
    c.write_all(b"GET /scrape HTTP/1.1\r\n\r\n").unwrap();
    let (mut answer, mut tick) = (Vec::new(), Vec::new());
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answer.starts_with(b"HTTP/1.1 200") || tick.is_empty() {
        assert!(Instant::now() < deadline, "starved: answer {}, tick {}", answer.len(), tick.len());
        let before = r.datagram_stats(id).received;
        r.turn(Some(Duration::from_millis(10))).unwrap();
        most = most.max(r.datagram_stats(id).received - before);
        read_some(&mut c, &mut answer);
        recv_all(&witness, &mut tick);
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(sent >= 10_000);
    assert!(most as usize <= DATAGRAM_BUDGET, "one turn read {most} datagrams");
    assert_eq!(tick, [b"tick".to_vec()]);
}

/// A magnet session (no storage needed) for `info_hash`, with the DHT on or off.
fn dht_session(info_hash: [u8; 20], dht: bool, now: Instant) -> crate::torrent::Session {
    use crate::torrent::fetch::{Fetch, Start};
    let mut cfg = crate::torrent::Config::new([1; 20], 7001);
    cfg.dht = dht;
    let fetch = Fetch::new(Start { info_hash, trackers: vec![], peers: vec![] }, cfg, now);
    let never: crate::torrent::Builder = Box::new(|_, _| Err(crate::error::Error::runtime("not built here")));
    crate::torrent::Session::metadata(fetch, never)
}

#[test]
fn a_session_that_uses_the_dht_is_tracked_until_it_stops() {
    let now = Instant::now();
    let mut r = Reactor::new(Services::default()).unwrap();
    let id = r.bind_udp(std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), DatagramKind::Dht).unwrap();
    let node = crate::dht::Node::new(now, crate::dht::Config { id: None, seed: 1 });
    r.services.dht = Some(DhtSocket::new(id, node, 7001));
    r.services.add_session(dht_session([1; 20], true, now));
    r.services.add_session(dht_session([2; 20], false, now));
    let tracking = |r: &Reactor, h: [u8; 20]| r.services.dht.as_ref().unwrap().is_tracking(&h);
    assert!(tracking(&r, [1; 20]), "looked up from the start");
    assert!(!tracking(&r, [2; 20]), "not with the DHT off");
    // The first SIGTERM: the sessions stop, and leave the DHT.
    let mut ctl = Ctl::default();
    assert!(r.services.begin_stop(now, &mut ctl));
    assert!(!tracking(&r, [1; 20]));
}
