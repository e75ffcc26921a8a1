use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::tracker::Config;
use crate::tracker::registry::Event;
use crate::tracker::udp::wire::{AnnounceRequest, PROTOCOL_ID};

const HASH: [u8; 20] = [0x42; 20];
const KEY: [u8; 16] = *b"udp-front-test-k";

fn setup() -> (UdpFront, Registry, Instant) {
    let now = Instant::now();
    let cfg = Config { open: false, ..Config::default() };
    (UdpFront::with_key(now, KEY), Registry::new(cfg, [HASH], 7, now), now)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn connect_req(tid: u32) -> Vec<u8> {
    let mut b = Vec::new();
    Request::Connect { transaction_id: tid }.encode(&mut b);
    b
}

fn announce_req(cid: u64, tid: u32, peer: u8, port: u16, left: u64, num_want: i32) -> Vec<u8> {
    let mut b = Vec::new();
    Request::Announce(AnnounceRequest {
        connection_id: cid,
        transaction_id: tid,
        info_hash: HASH,
        peer_id: [peer; 20],
        downloaded: 0,
        left,
        uploaded: 0,
        event: Event::Started,
        ip: None,
        key: 1,
        num_want,
        port,
        url_data: Vec::new(),
    })
    .encode(&mut b);
    b
}

fn scrape_req(cid: u64, tid: u32, hashes: &[[u8; 20]]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&cid.to_be_bytes());
    b.extend_from_slice(&2u32.to_be_bytes());
    b.extend_from_slice(&tid.to_be_bytes());
    for h in hashes {
        b.extend_from_slice(h);
    }
    b
}

/// Feeds one datagram; returns every answer (address, bytes).
fn ask(f: &mut UdpFront, r: &mut Registry, now: Instant, from: SocketAddr, d: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
    f.handle_datagram(now, from, d, r);
    let mut got = Vec::new();
    let mut out = Vec::new();
    while let Some(to) = f.poll_datagram(now, &mut out) {
        got.push((to, std::mem::take(&mut out)));
    }
    got
}

/// Connects from `from` and returns the connection id.
fn connect(f: &mut UdpFront, r: &mut Registry, now: Instant, from: SocketAddr) -> u64 {
    let got = ask(f, r, now, from, &connect_req(77));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, from);
    assert_eq!(got[0].1.len(), 16, "a connect answer is as long as its request");
    match Response::decode(&got[0].1, false) {
        Ok(Response::Connect { transaction_id: 77, connection_id }) => connection_id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn connect_announce_scrape() {
    let (mut f, mut r, now) = setup();
    let a = addr("10.0.0.1:5000");
    let b = addr("10.0.0.2:5000");
    let cid_a = connect(&mut f, &mut r, now, a);
    let cid_b = connect(&mut f, &mut r, now, b);
    assert_ne!(cid_a, cid_b);

    let got = ask(&mut f, &mut r, now, a, &announce_req(cid_a, 1, 1, 6881, 100, -1));
    let Ok(Response::Announce { transaction_id: 1, interval: 1800, leechers: 1, seeders: 0, peers }) =
        Response::decode(&got[0].1, false)
    else {
        panic!("{got:?}")
    };
    assert!(peers.is_empty(), "the requester is never in its own answer");

    let got = ask(&mut f, &mut r, now, b, &announce_req(cid_b, 2, 2, 6882, 0, 10));
    let Ok(Response::Announce { transaction_id: 2, leechers: 1, seeders: 1, peers, .. }) =
        Response::decode(&got[0].1, false)
    else {
        panic!("{got:?}")
    };
    assert_eq!(peers.iter().collect::<Vec<_>>(), vec![addr("10.0.0.1:6881")]);

    let other = [0x99; 20];
    let got = ask(&mut f, &mut r, now, a, &scrape_req(cid_a, 3, &[other, HASH]));
    let Ok(Response::Scrape { transaction_id: 3, stats }) = Response::decode(&got[0].1, false) else { panic!() };
    let stats: Vec<_> = wire::scrape_stats(stats).collect();
    assert_eq!(stats, vec![ScrapeStats::default(), ScrapeStats { seeders: 1, completed: 0, leechers: 1 }]);
    let s = f.stats();
    assert_eq!((s.connects, s.announces, s.scrapes, s.dropped), (2, 2, 1, 0));
    let t = r.traffic();
    assert_eq!((t.udp.announces, t.udp.scrapes, t.http.announces), (2, 1, 0), "counted where /metrics reads");
    assert_eq!(t.udp_front, s);
}

#[test]
fn ipv6_requests_get_18_byte_peers_of_their_family() {
    let (mut f, mut r, now) = setup();
    let v6a = addr("[2001:db8::1]:4000");
    let v6b = addr("[2001:db8::2]:4000");
    let v4 = addr("10.0.0.3:4000");
    for (i, from) in [v6a, v4, v6b].into_iter().enumerate() {
        let cid = connect(&mut f, &mut r, now, from);
        let got = ask(&mut f, &mut r, now, from, &announce_req(cid, 9, i as u8, 7000 + i as u16, 5, 50));
        let v6 = from.is_ipv6();
        let Ok(Response::Announce { peers, .. }) = Response::decode(&got[0].1, v6) else { panic!() };
        let listed: Vec<_> = peers.iter().collect();
        match i {
            0 => assert!(listed.is_empty()),
            // The IPv4 peer sees no IPv6 one: its answer has room for IPv4 records only.
            1 => assert!(listed.is_empty()),
            _ => assert_eq!(listed, vec![addr("[2001:db8::1]:7000")]),
        }
    }
    // A v4-mapped source is IPv4: 6-byte records.
    let mapped = addr("[::ffff:10.0.0.4]:4000");
    let cid = connect(&mut f, &mut r, now, mapped);
    let got = ask(&mut f, &mut r, now, mapped, &announce_req(cid, 9, 9, 7009, 5, 50));
    let Ok(Response::Announce { peers, .. }) = Response::decode(&got[0].1, false) else { panic!() };
    assert_eq!(peers.iter().collect::<Vec<_>>(), vec![addr("10.0.0.3:7001")]);
}

#[test]
fn connection_ids_last_two_minutes_and_belong_to_one_address() {
    let (mut f, mut r, now) = setup();
    let a = addr("10.0.0.1:5000");
    let cid = connect(&mut f, &mut r, now + Duration::from_secs(59), a);
    for later in [59, 60, 120, 179] {
        let got = ask(&mut f, &mut r, now + Duration::from_secs(later), a, &announce_req(cid, 1, 1, 1, 1, 0));
        assert_eq!(got.len(), 1, "still valid {later} s after the start");
    }
    let got = ask(&mut f, &mut r, now + Duration::from_secs(180), a, &announce_req(cid, 1, 1, 1, 1, 0));
    assert!(got.is_empty(), "expired");
    // Another port, another address, another key: not valid.
    for from in [addr("10.0.0.1:5001"), addr("10.0.0.9:5000")] {
        assert!(ask(&mut f, &mut r, now + Duration::from_secs(60), from, &announce_req(cid, 1, 1, 1, 1, 0)).is_empty());
    }
    let other = UdpFront::with_key(now, *b"another-key-----");
    assert_ne!(other.connection_id(now, a), f.connection_id(now, a));
    assert_eq!(f.stats().dropped, 3);
}

#[test]
fn bad_datagrams_are_dropped_without_an_answer() {
    let (mut f, mut r, now) = setup();
    let a = addr("10.0.0.1:5000");
    let cid = connect(&mut f, &mut r, now, a);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("15 bytes", connect_req(1)[..15].to_vec()),
        ("wrong protocol id", {
            let mut b = connect_req(1);
            b[7] ^= 1;
            b
        }),
        ("too long connect", {
            let mut b = connect_req(1);
            b.resize(MAX_REQUEST + 1, 0);
            b
        }),
        ("unknown action, valid cid", {
            let mut b = scrape_req(cid, 1, &[]);
            b[11] = 7;
            b
        }),
        ("error action, valid cid", {
            let mut b = scrape_req(cid, 1, &[]);
            b[11] = 3;
            b
        }),
        ("short announce", announce_req(cid, 1, 1, 1, 1, 1)[..97].to_vec()),
        ("announce, bad event", {
            let mut b = announce_req(cid, 1, 1, 1, 1, 1);
            b[83] = 9;
            b
        }),
        ("announce, broken option", {
            let mut b = announce_req(cid, 1, 1, 1, 1, 1);
            b.extend_from_slice(&[2, 10, b'/']);
            b
        }),
        ("announce, invalid cid", announce_req(cid ^ 1, 1, 1, 1, 1, 1)),
        ("announce, protocol id as cid", announce_req(PROTOCOL_ID, 1, 1, 1, 1, 1)),
        ("ragged scrape", scrape_req(cid, 1, &[[1; 20]])[..35].to_vec()),
        ("scrape, invalid cid", scrape_req(!cid, 1, &[[1; 20]])),
        ("empty scrape, invalid cid", scrape_req(0, 1, &[])),
        ("long scrape, invalid cid", scrape_req(0, 1, &[[1; 20]; 80])),
    ];
    cases.push(("huge", vec![0; 65_000]));
    for (name, d) in &cases {
        assert!(ask(&mut f, &mut r, now, a, d).is_empty(), "{name} must be dropped");
    }
    assert_eq!(f.stats().dropped, cases.len() as u64);
    assert_eq!(r.peer_count(), 0);
}

#[test]
fn scrapes_of_no_hash_or_too_many_are_errors_for_a_valid_client() {
    let (mut f, mut r, now) = setup();
    let a = addr("10.0.0.1:5000");
    let cid = connect(&mut f, &mut r, now, a);
    for (hashes, words) in [(0, "no info hash"), (75, "at most 74")] {
        let got = ask(&mut f, &mut r, now, a, &scrape_req(cid, 5, &vec![[1; 20]; hashes]));
        let Ok(Response::Error { transaction_id: 5, message }) = Response::decode(&got[0].1, false) else { panic!() };
        assert!(String::from_utf8_lossy(message).contains(words));
    }
    let got = ask(&mut f, &mut r, now, a, &scrape_req(cid, 5, &[[1; 20]; 74]));
    assert_eq!(got[0].1.len(), 8 + 74 * 12);
}

#[test]
fn refusals_and_port_zero_are_errors() {
    let (mut f, mut r, now) = setup();
    let a = addr("10.0.0.1:5000");
    let cid = connect(&mut f, &mut r, now, a);
    let mut d = announce_req(cid, 6, 1, 6881, 1, -1);
    d[16..36].copy_from_slice(&[0x77; 20]);
    let got = ask(&mut f, &mut r, now, a, &d);
    assert_eq!(got[0].1, [&[0, 0, 0, 3, 0, 0, 0, 6][..], b"unregistered torrent"].concat());
    let got = ask(&mut f, &mut r, now, a, &announce_req(cid, 6, 1, 0, 1, -1));
    let Ok(Response::Error { message, .. }) = Response::decode(&got[0].1, false) else { panic!() };
    assert_eq!(message, b"port must be 1 to 65535");
    assert_eq!(r.peer_count(), 0);
}

#[test]
fn numwant_is_bounded_whatever_its_sign() {
    let (mut f, mut r, now) = setup();
    for i in 0..300u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i + 10);
        let from = SocketAddr::new(ip.into(), 1000);
        let cid = f.connection_id(now, from);
        let mut id = [0u8; 20];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let mut d = announce_req(cid, 1, 0, 2000, 1, 0);
        d[36..56].copy_from_slice(&id);
        assert_eq!(ask(&mut f, &mut r, now, from, &d).len(), 1);
    }
    let me = addr("10.9.9.9:1");
    let cid = f.connection_id(now, me);
    for (want, listed) in [(-1, NUMWANT_DEFAULT), (i32::MIN, NUMWANT_DEFAULT), (i32::MAX, NUMWANT_MAX), (0, 0), (7, 7)]
    {
        let got = ask(&mut f, &mut r, now, me, &announce_req(cid, 1, 0xee, 9, 1, want));
        let Ok(Response::Announce { peers, .. }) = Response::decode(&got[0].1, false) else { panic!() };
        assert_eq!(peers.len(), listed, "num_want {want}");
    }
}

#[test]
fn the_answer_queue_is_bounded() {
    let (f, mut r, now) = setup();
    let mut f = f.with_max_queued(10);
    for i in 0..100u16 {
        f.handle_datagram(now, SocketAddr::new([10, 0, 0, 1].into(), 1000 + i), &connect_req(1), &mut r);
    }
    let mut n = 0;
    let mut out = Vec::new();
    while f.poll_datagram(now, &mut out).is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
    assert_eq!(f.stats().overflow, 90);
}

/// Random and mutated datagrams: never a panic, and never an answer longer than its request unless the request
/// carried a connection id the sender was given.
#[test]
fn never_amplifies_hostile_input() {
    let (mut f, mut r, now) = setup();
    let a = addr("10.0.0.1:5000");
    let cid = f.connection_id(now, a);
    let valid = [connect_req(1), announce_req(cid, 2, 3, 4, 5, 6), scrape_req(cid, 1, &[HASH, [0; 20]])];
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..20_000 {
        let mut d = if round % 2 == 0 {
            (0..next() % 200).map(|_| next() as u8).collect()
        } else {
            let mut v = valid[(next() % 3) as usize].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % v.len().max(1);
                match next() % 3 {
                    0 if at < v.len() => v[at] = next() as u8,
                    1 => v.truncate(at),
                    _ => v.insert(at.min(v.len()), next() as u8),
                }
            }
            v
        };
        if round % 5 == 0 && d.len() >= 16 {
            d[8..12].copy_from_slice(&((next() % 4) as u32).to_be_bytes());
        }
        let carries_cid = d.len() >= 8 && u64::from_be_bytes(d[..8].try_into().unwrap()) == cid;
        for (_, answer) in ask(&mut f, &mut r, now, a, &d) {
            assert!(carries_cid || answer.len() <= d.len(), "{} bytes answered {} bytes", d.len(), answer.len());
        }
    }
}
