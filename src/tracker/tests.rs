//! The tracker's announce and scrape, end to end without sockets: a query string in, the bencoded body out, through
//! the query decoder, the registry and the response writer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::registry::{Counts, NUMWANT_DEFAULT, NUMWANT_MAX};
use super::{Config, Registry, announce_query, scrape_query};
use crate::bencode::{Value, decode};

pub(super) const HASH: [u8; 20] = [0xAB; 20];

pub(super) fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

pub(super) fn peer_id(n: u32) -> [u8; 20] {
    let mut id = *b"-TB0001-000000000000";
    id[16..].copy_from_slice(&n.to_be_bytes());
    id
}

pub(super) fn query(id: [u8; 20], port: u16, extra: &str) -> String {
    format!("info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0{extra}", pct(&HASH), pct(&id))
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

fn tracker(cfg: Config) -> (Registry, Instant) {
    let now = Instant::now();
    (Registry::new(cfg, [HASH], 7, now), now)
}

/// Announces and returns the raw body.
fn announce(t: &mut Registry, now: Instant, q: &str, from: IpAddr) -> Vec<u8> {
    let mut body = Vec::new();
    announce_query(t, now, q.as_bytes(), from, &mut body);
    body
}

fn failure(body: &[u8]) -> Option<String> {
    let v = decode(body).unwrap();
    v.get("failure reason").map(|r| r.as_str().unwrap().to_string())
}

/// The (ip, port) pairs of a compact answer.
fn compact_peers(body: &[u8]) -> Vec<SocketAddr> {
    let v = decode(body).unwrap();
    assert_eq!(failure(body), None);
    let raw = v.get("peers").unwrap().as_bytes().unwrap();
    assert_eq!(raw.len() % 6, 0);
    raw.chunks(6)
        .map(|c| SocketAddr::new(Ipv4Addr::new(c[0], c[1], c[2], c[3]).into(), u16::from_be_bytes([c[4], c[5]])))
        .collect()
}

fn int(body: &[u8], key: &str) -> i64 {
    decode(body).unwrap().get(key).unwrap().as_int().unwrap()
}

#[test]
fn bad_parameters_get_a_failure_reason() {
    let id = pct(&peer_id(1));
    let hash = pct(&HASH);
    let cases = [
        (format!("peer_id={id}&port=1"), "missing info_hash"),
        (format!("info_hash={}&peer_id={id}&port=1", pct(&HASH[..19])), "info_hash must be 20 bytes"),
        (format!("info_hash={hash}%00&peer_id={id}&port=1"), "info_hash must be 20 bytes"),
        (format!("info_hash={hash}&port=1"), "missing peer_id"),
        (format!("info_hash={hash}&peer_id={id}"), "missing port"),
        (format!("info_hash={hash}&peer_id={id}&port=0"), "port must be 1 to 65535"),
        (format!("info_hash={hash}&peer_id={id}&port=70000"), "port must be 1 to 65535"),
        (format!("info_hash={hash}&peer_id={id}&port=-1"), "port must be a non-negative integer"),
        (format!("info_hash={hash}&peer_id={id}&port=1&left=-5"), "left must be a non-negative integer"),
        (format!("info_hash={hash}&peer_id={id}&port=1&uploaded=18446744073709551616"), "uploaded is too large"),
        (format!("info_hash={hash}&peer_id={id}&port=1&downloaded=99999999999999999999999"), "downloaded is too large"),
        (format!("info_hash={hash}&peer_id={id}&port=1&event=bogus"), "unknown event"),
        (format!("info_hash={hash}&peer_id={id}&port=1&compact=2"), "compact must be 0 or 1"),
        (format!("info_hash=%ZZ{hash}&peer_id={id}&port=1"), "invalid percent-encoding in info_hash"),
        (format!("info_hash={hash}&peer_id={id}&port=1%"), "port must be a non-negative integer"),
    ];
    let (mut t, now) = tracker(Config::default());
    for (q, want) in cases {
        let reason = failure(&announce(&mut t, now, &q, ip(1))).unwrap_or_default();
        assert!(reason.starts_with(want), "{q}: got {reason:?}, want {want:?}");
    }
    assert_eq!(t.peer_count(), 0);
}

#[test]
fn unregistered_torrents_are_refused_unless_open() {
    let other = pct(&[1; 20]);
    let q = format!("info_hash={other}&peer_id={}&port=1", pct(&peer_id(1)));
    let (mut t, now) = tracker(Config::default());
    assert_eq!(failure(&announce(&mut t, now, &q, ip(1))).as_deref(), Some("unregistered torrent"));
    let (mut t, now) = tracker(Config { open: true, max_swarms: 2, ..Config::default() });
    assert_eq!(failure(&announce(&mut t, now, &q, ip(1))), None);
    assert_eq!(t.swarm_count(), 2);
    let third = format!("info_hash={}&peer_id={}&port=1", pct(&[2; 20]), pct(&peer_id(1)));
    assert!(failure(&announce(&mut t, now, &third, ip(1))).unwrap().contains("full"));
}

#[test]
fn compact_answer_lists_others_never_the_requester() {
    let (mut t, now) = tracker(Config::default());
    for n in 1..=3 {
        announce(&mut t, now, &query(peer_id(n), 6880 + n as u16, "&left=10&compact=1"), ip(n as u8));
    }
    let body = announce(&mut t, now, &query(peer_id(4), 6884, "&left=0&compact=1"), ip(4));
    let mut peers = compact_peers(&body);
    peers.sort();
    let want: Vec<SocketAddr> = (1..=3).map(|n| SocketAddr::new(ip(n), 6880 + n as u16)).collect();
    assert_eq!(peers, want);
    assert_eq!((int(&body, "complete"), int(&body, "incomplete")), (1, 3));
    assert_eq!(int(&body, "interval"), 1800);
    assert_eq!(int(&body, "min interval"), 900);
    // Same address, another peer id (a restarted client): still never handed itself.
    let body = announce(&mut t, now, &query(peer_id(9), 6881, "&left=10&compact=1"), ip(1));
    assert!(!compact_peers(&body).contains(&SocketAddr::new(ip(1), 6881)));
}

#[test]
fn dictionary_answer_with_and_without_peer_ids() {
    let (mut t, now) = tracker(Config::default());
    announce(&mut t, now, &query(peer_id(1), 7001, "&left=1"), ip(1));
    for (flag, with_id) in [("", true), ("&no_peer_id=1", false)] {
        let body = announce(&mut t, now, &query(peer_id(2), 7002, &format!("&left=1&compact=0{flag}")), ip(2));
        let v = decode(&body).unwrap();
        let list = v.get("peers").unwrap().as_list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].get("ip").unwrap().as_str(), Some("10.0.0.1"));
        assert_eq!(list[0].get("port").unwrap().as_int(), Some(7001));
        assert_eq!(list[0].get("peer id").map(|p| p.as_bytes().unwrap()), with_id.then_some(&peer_id(1)[..]));
    }
}

#[test]
fn seeds_get_no_seeds_and_leechers_get_both() {
    let (mut t, now) = tracker(Config::default());
    announce(&mut t, now, &query(peer_id(1), 1001, "&left=0"), ip(1));
    announce(&mut t, now, &query(peer_id(2), 1002, "&left=0"), ip(2));
    announce(&mut t, now, &query(peer_id(3), 1003, "&left=5"), ip(3));
    let seed = compact_peers(&announce(&mut t, now, &query(peer_id(1), 1001, "&left=0&compact=1"), ip(1)));
    assert_eq!(seed, [SocketAddr::new(ip(3), 1003)]);
    let leech = compact_peers(&announce(&mut t, now, &query(peer_id(3), 1003, "&left=5&compact=1"), ip(3)));
    assert_eq!(leech.len(), 2);
}

#[test]
fn a_seed_in_a_swarm_of_seeds_gets_the_other_seeds() {
    // aria2 fetching a magnet link's metadata announces left=0; the only other peer is the real seed.
    let (mut t, now) = tracker(Config::default());
    announce(&mut t, now, &query(peer_id(1), 1001, "&left=0"), ip(1));
    let metadata_fetcher = compact_peers(&announce(&mut t, now, &query(peer_id(2), 1002, "&left=0&compact=1"), ip(2)));
    assert_eq!(metadata_fetcher, [SocketAddr::new(ip(1), 1001)]);
}

#[test]
fn stopped_removes_and_completed_counts_once() {
    let (mut t, now) = tracker(Config::default());
    announce(&mut t, now, &query(peer_id(1), 1, "&left=5&event=started"), ip(1));
    announce(&mut t, now, &query(peer_id(1), 1, "&left=0&event=completed"), ip(1));
    announce(&mut t, now, &query(peer_id(1), 1, "&left=0&event=completed"), ip(1));
    let c = t.counts(&HASH).unwrap();
    assert_eq!(c, Counts { complete: 1, incomplete: 0, downloaded: 1 });
    // A stop from another address does not remove the peer.
    announce(&mut t, now, &query(peer_id(1), 1, "&left=0&event=stopped"), ip(2));
    assert_eq!(t.peer_count(), 1);
    let body = announce(&mut t, now, &query(peer_id(1), 1, "&left=0&event=stopped&compact=1"), ip(1));
    assert!(compact_peers(&body).is_empty());
    assert_eq!(t.peer_count(), 0);
    assert_eq!(t.counts(&HASH).unwrap(), Counts { complete: 0, incomplete: 0, downloaded: 1 });
}

/// aria2 announces `left=0` while it fetches a magnet link's metadata; its `completed` later is still a download,
/// and so is its `stopped` with left=0 after downloading when it runs with --seed-time=0.
#[test]
fn a_completion_counts_even_after_announcing_left_zero_before() {
    let (mut t, now) = tracker(Config::default());
    announce(&mut t, now, &query(peer_id(3), 3, "&left=0&event=started"), ip(3));
    announce(&mut t, now, &query(peer_id(3), 3, "&left=0&event=completed"), ip(3));
    announce(&mut t, now, &query(peer_id(3), 3, "&left=0"), ip(3));
    announce(&mut t, now, &query(peer_id(3), 3, "&left=0&event=completed"), ip(3));
    assert_eq!(t.counts(&HASH).unwrap(), Counts { complete: 1, incomplete: 0, downloaded: 1 });
    // aria2 with --seed-time=0 fetched the metadata (left=0), downloaded (left>0) and quit: `stopped` with left=0.
    announce(&mut t, now, &query(peer_id(4), 4, "&left=0&event=started"), ip(4));
    announce(&mut t, now, &query(peer_id(4), 4, "&left=500"), ip(4));
    announce(&mut t, now, &query(peer_id(4), 4, "&left=0&event=stopped"), ip(4));
    // A seed that only ever seeded and stops is no download.
    announce(&mut t, now, &query(peer_id(5), 5, "&left=0&event=started"), ip(5));
    announce(&mut t, now, &query(peer_id(5), 5, "&left=0&event=stopped"), ip(5));
    // A leecher that re-announces left=0 without the event, then says `completed` anyway: one download.
    announce(&mut t, now, &query(peer_id(6), 6, "&left=9&event=started"), ip(6));
    announce(&mut t, now, &query(peer_id(6), 6, "&left=0"), ip(6));
    announce(&mut t, now, &query(peer_id(6), 6, "&left=0&event=completed"), ip(6));
    assert_eq!(t.counts(&HASH).unwrap(), Counts { complete: 2, incomplete: 0, downloaded: 3 });
}

#[test]
fn numwant_default_cap_and_random_distinct_samples() {
    let (mut t, now) = tracker(Config::default());
    for n in 0..300u32 {
        let addr = Ipv4Addr::from(0x0A00_0000 + n);
        announce(&mut t, now, &query(peer_id(n), 2000, "&left=1"), addr.into());
    }
    let me = ip(250);
    let default = compact_peers(&announce(&mut t, now, &query(peer_id(999), 1, "&left=1&compact=1"), me));
    assert_eq!(default.len(), NUMWANT_DEFAULT);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5 {
        let q = query(peer_id(999), 1, "&left=1&compact=1&numwant=1000000000");
        let peers = compact_peers(&announce(&mut t, now, &q, me));
        assert_eq!(peers.len(), NUMWANT_MAX);
        let distinct: std::collections::HashSet<_> = peers.iter().collect();
        assert_eq!(distinct.len(), peers.len(), "a peer listed twice");
        seen.extend(peers);
    }
    assert!(seen.len() > NUMWANT_MAX, "samples are not random: {} distinct peers", seen.len());
    let none = compact_peers(&announce(&mut t, now, &query(peer_id(999), 1, "&left=1&compact=1&numwant=0"), me));
    assert!(none.is_empty());
}

#[test]
fn ipv6_peers_go_to_peers6_and_mapped_v4_is_v4() {
    let (mut t, now) = tracker(Config::default());
    let v6: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into();
    let mapped: IpAddr = Ipv4Addr::new(10, 0, 0, 9).to_ipv6_mapped().into();
    announce(&mut t, now, &query(peer_id(1), 5000, "&left=1"), v6);
    announce(&mut t, now, &query(peer_id(2), 5001, "&left=1"), mapped);
    let body = announce(&mut t, now, &query(peer_id(3), 5002, "&left=1&compact=1"), ip(3));
    assert_eq!(compact_peers(&body), [SocketAddr::new(ip(9), 5001)]);
    let v = decode(&body).unwrap();
    let p6 = v.get("peers6").unwrap().as_bytes().unwrap();
    let mut want = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets().to_vec();
    want.extend_from_slice(&5000u16.to_be_bytes());
    assert_eq!(p6, &want[..]);
}

#[test]
fn silent_peers_expire_on_the_timer_and_refreshed_ones_stay() {
    let interval = Duration::from_secs(100);
    let (mut t, t0) = tracker(Config { interval, ..Config::default() });
    announce(&mut t, t0, &query(peer_id(1), 1, "&left=1"), ip(1));
    announce(&mut t, t0, &query(peer_id(2), 2, "&left=1"), ip(2));
    let due = t.poll_timeout().unwrap();
    assert_eq!(due, t0 + interval / 2);
    t.handle_timeout(due - Duration::from_millis(1));
    assert_eq!(t.poll_timeout(), Some(due), "an early call must change nothing");
    announce(&mut t, t0 + interval, &query(peer_id(2), 2, "&left=1"), ip(2));
    let mut now = due;
    while now < t0 + 2 * interval + interval / 2 {
        t.handle_timeout(now);
        now = t.poll_timeout().unwrap();
    }
    assert_eq!(t.peer_count(), 1);
    let body = announce(&mut t, now, &query(peer_id(3), 3, "&left=1&compact=1"), ip(3));
    assert_eq!(compact_peers(&body), [SocketAddr::new(ip(2), 2)]);
    assert_eq!(t.swarm_count(), 1, "a registered swarm stays when empty");
}

#[test]
fn open_swarms_vanish_when_their_last_peer_expires() {
    let interval = Duration::from_secs(10);
    let (mut t, t0) = tracker(Config { interval, open: true, ..Config::default() });
    let q = format!("info_hash={}&peer_id={}&port=1", pct(&[3; 20]), pct(&peer_id(1)));
    announce(&mut t, t0, &q, ip(1));
    assert_eq!(t.swarm_count(), 2);
    t.handle_timeout(t0 + 3 * interval);
    assert_eq!((t.swarm_count(), t.peer_count()), (1, 0));
}

#[test]
fn full_swarm_and_full_tracker_still_answer_without_storing() {
    let (mut t, now) = tracker(Config { max_peers_per_swarm: 2, ..Config::default() });
    for n in 1..=3 {
        let body = announce(&mut t, now, &query(peer_id(n), 1, "&left=1&compact=1"), ip(n as u8));
        assert_eq!(compact_peers(&body).len(), (n as usize - 1).min(2));
    }
    assert_eq!(t.peer_count(), 2);
    // A known peer can still update itself.
    announce(&mut t, now, &query(peer_id(1), 1, "&left=0"), ip(1));
    assert_eq!(t.counts(&HASH).unwrap().complete, 1);

    let (mut t, now) = tracker(Config { max_peers_total: 1, open: true, ..Config::default() });
    announce(&mut t, now, &query(peer_id(1), 1, ""), ip(1));
    let q = format!("info_hash={}&peer_id={}&port=1", pct(&[5; 20]), pct(&peer_id(2)));
    assert_eq!(failure(&announce(&mut t, now, &q, ip(2))), None);
    assert_eq!(t.peer_count(), 1);
}

#[test]
fn scrape_one_several_and_all() {
    let other = [0x11; 20];
    let now = Instant::now();
    let mut t = Registry::new(Config::default(), [HASH, other], 1, now);
    announce(&mut t, now, &query(peer_id(1), 1, "&left=0"), ip(1));
    announce(&mut t, now, &query(peer_id(2), 1, "&left=9"), ip(2));
    let scrape = |q: String| {
        let mut body = Vec::new();
        scrape_query(&t, q.as_bytes(), &mut body);
        body
    };
    let body = scrape(format!("info_hash={}", pct(&HASH)));
    let v = decode(&body).unwrap();
    let Some(Value::Dict { entries, .. }) = v.get("files") else { panic!("no files") };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, HASH);
    let f = &entries[0].1;
    assert_eq!(f.get("complete").unwrap().as_int(), Some(1));
    assert_eq!(f.get("incomplete").unwrap().as_int(), Some(1));
    assert_eq!(f.get("downloaded").unwrap().as_int(), Some(0));
    // Several, one twice, one unknown (left out), in any order: keys come out sorted and once.
    let q = format!(
        "info_hash={}&info_hash={}&info_hash={}&info_hash={}",
        pct(&HASH),
        pct(&other),
        pct(&HASH),
        pct(&[0x77; 20])
    );
    let body = scrape(q);
    let v = decode(&body).unwrap();
    let Some(Value::Dict { entries, .. }) = v.get("files") else { panic!("no files") };
    let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| &k[..]).collect();
    assert_eq!(keys, [&other[..], &HASH[..]]);
    assert_eq!(scrape(String::new()), body, "a full scrape lists every served torrent");
    assert_eq!(failure(&scrape("info_hash=abc".into())).as_deref(), Some("info_hash must be 20 bytes"));
}
