//! The node against hand-made datagrams on a virtual clock: answers, matching of answers to queries, bad input, the
//! bounds under a flood, save and restart.

use super::*;

const OWN: Id = [0x80; 20];

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn node(now: Instant) -> Node {
    Node::new(now, Config { id: Some(OWN), seed: 42 })
}

fn query(tid: &[u8], id: Id, query: Query<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    Message { tid, body: Body::Query { id, read_only: false, query } }.encode(&mut out);
    out
}

fn response(tid: &[u8], id: Id, nodes: Vec<Contact>, values: Vec<SocketAddrV4>, token: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    Message { tid, body: Body::Response { response: Response { id, nodes, values, token }, ip: None } }
        .encode(&mut out);
    out
}

fn drain(n: &mut Node, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut sent = Vec::new();
    let mut out = Vec::new();
    while let Some(to) = n.poll_datagram(now, &mut out) {
        sent.push((to, std::mem::take(&mut out)));
    }
    sent
}

/// The one datagram `n` sends after `from` sent `datagram`.
fn ask(n: &mut Node, now: Instant, from: &str, datagram: &[u8]) -> Vec<u8> {
    n.handle_datagram(now, a(from), datagram);
    let mut sent = drain(n, now);
    let i = sent.iter().position(|(to, _)| *to == a(from)).expect("an answer to the asker");
    sent.swap_remove(i).1
}

/// An id `n` away from OWN in the last byte (so the node puts it in its table).
fn id_near(n: u8) -> Id {
    let mut id = OWN;
    id[19] ^= n;
    id[0] ^= n & 0x40;
    id
}

/// Makes `n` ping `addr` and answers as `id`: the contact is then in the table.
fn join(n: &mut Node, now: Instant, addr: &str, id: Id) {
    n.add_node(now, a(addr));
    n.handle_timeout(now);
    let sent = drain(n, now);
    let (_, ping) = sent.iter().find(|(to, _)| *to == a(addr)).expect("a ping");
    let m = krpc::decode(ping).unwrap();
    assert!(matches!(m.body, Body::Query { query: Query::Ping, .. }));
    n.handle_datagram(now, a(addr), &response(m.tid, id, vec![], vec![], None));
}

#[test]
fn a_ping_is_answered_with_our_id_the_same_tid_and_the_askers_address() {
    let now = Instant::now();
    let mut n = node(now);
    let answer = ask(&mut n, now, "127.0.0.5:7000", &query(b"\x00\xfe", [1; 20], Query::Ping));
    let m = krpc::decode(&answer).unwrap();
    assert_eq!(m.tid, b"\x00\xfe");
    let Body::Response { response, ip } = m.body else { panic!("{m:?}") };
    assert_eq!((response.id, ip), (OWN, Some(v4("127.0.0.5:7000"))));
    assert_eq!(n.stats().queries_in, 1);
}

#[test]
fn find_node_answers_the_8_closest_without_the_asker() {
    let now = Instant::now();
    let mut n = node(now);
    for i in 1..=12u8 {
        join(&mut n, now, &format!("10.0.0.{i}:6881"), id_near(i));
    }
    assert_eq!(n.stats().nodes, 12);
    let answer = ask(&mut n, now, "10.0.0.1:6881", &query(b"aa", id_near(1), Query::FindNode { target: OWN }));
    let Body::Response { response, .. } = krpc::decode(&answer).unwrap().body else { panic!() };
    assert_eq!(response.nodes.len(), 8);
    assert!(response.nodes.iter().all(|c| c.addr != v4("10.0.0.1:6881")));
    let mut ids: Vec<Id> = (2..=12u8).map(id_near).collect();
    ids.sort_by_key(|id| id::distance(id, &OWN));
    assert_eq!(response.nodes.iter().map(|c| c.id).collect::<Vec<_>>(), ids[..8].to_vec());
    assert!(answer.len() < 8 * 26 + 100, "{} bytes", answer.len());
}

#[test]
fn get_peers_token_lets_announce_peer_in_and_the_peer_is_served() {
    let now = Instant::now();
    let mut n = node(now);
    let hash = [7; 20];
    let asker = "127.0.0.9:4000";
    let answer = ask(&mut n, now, asker, &query(b"g1", [1; 20], Query::GetPeers { info_hash: hash }));
    let Body::Response { response, .. } = krpc::decode(&answer).unwrap().body else { panic!() };
    assert!(response.values.is_empty());
    let token = response.token.expect("a token").to_vec();

    let ann = Query::AnnouncePeer { info_hash: hash, port: 6000, implied_port: false, token: &token };
    let answer = ask(&mut n, now, asker, &query(b"a1", [1; 20], ann));
    assert!(matches!(krpc::decode(&answer).unwrap().body, Body::Response { .. }));
    // implied_port: the source port counts, whatever `port` says; the token is per IP, not per port.
    let ann = Query::AnnouncePeer { info_hash: hash, port: 1, implied_port: true, token: &token };
    ask(&mut n, now, "127.0.0.9:4001", &query(b"a2", [1; 20], ann));
    assert_eq!(n.stats().peers_stored, 2);

    let answer = ask(&mut n, now, "127.0.0.10:1", &query(b"g2", [2; 20], Query::GetPeers { info_hash: hash }));
    let Body::Response { response, .. } = krpc::decode(&answer).unwrap().body else { panic!() };
    let mut values = response.values.clone();
    values.sort();
    assert_eq!(values, vec![v4("127.0.0.9:4001"), v4("127.0.0.9:6000")]);
}

#[test]
fn a_bad_or_old_token_is_refused_with_203() {
    let now = Instant::now();
    let mut n = node(now);
    let hash = [7; 20];
    let answer = ask(&mut n, now, "127.0.0.9:4000", &query(b"g1", [1; 20], Query::GetPeers { info_hash: hash }));
    let Body::Response { response, .. } = krpc::decode(&answer).unwrap().body else { panic!() };
    let token = response.token.unwrap().to_vec();
    let refused = |n: &mut Node, at: Instant, from: &str, token: &[u8]| {
        let ann = Query::AnnouncePeer { info_hash: hash, port: 6000, implied_port: false, token };
        let answer = ask(n, at, from, &query(b"a1", [1; 20], ann));
        matches!(krpc::decode(&answer).unwrap().body, Body::Error { code: 203, .. })
    };
    assert!(refused(&mut n, now, "127.0.0.9:4000", b"forged!!"));
    assert!(refused(&mut n, now, "127.0.0.8:4000", &token), "a token is only good for the address it was given to");
    let later = now + token::ROTATE_EVERY;
    n.handle_timeout(later);
    assert!(!refused(&mut n, later, "127.0.0.9:4000", &token), "the previous secret still counts");
    let much_later = later + token::ROTATE_EVERY;
    n.handle_timeout(much_later);
    assert!(refused(&mut n, much_later, "127.0.0.9:4000", &token), "ten minutes old: refused");
    assert_eq!(n.stats().peers_stored, 1);
}

#[test]
fn bad_queries_get_errors_and_garbage_gets_nothing() {
    let now = Instant::now();
    let mut n = node(now);
    let unknown = b"d1:ad2:id20:abcdefghij0123456789e1:q4:vote1:t2:xy1:y1:qe";
    let m = ask(&mut n, now, "127.0.0.2:1", unknown);
    assert_eq!(
        krpc::decode(&m).unwrap(),
        Message { tid: b"xy", body: Body::Error { code: 204, message: b"method unknown" } }
    );
    let short_hash = b"d1:ad2:id20:abcdefghij01234567899:info_hash19:mnopqrstuvwxyz12345e1:q9:get_peers1:t2:aa1:y1:qe";
    let m = ask(&mut n, now, "127.0.0.2:1", short_hash);
    assert!(matches!(krpc::decode(&m).unwrap().body, Body::Error { code: 203, .. }));

    let mut huge = b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id".to_vec();
    huge.extend(b"4000000000:");
    let garbage: [&[u8]; 6] = [
        b"\x00\x01\x02",
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:q",
        &huge,
        b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re",
        b"d1:eli201e1:xe1:t2:aa1:y1:ee",
        &[b'l'; 5000],
    ];
    let dropped = n.stats().dropped;
    for g in garbage {
        n.handle_datagram(now, a("127.0.0.3:1"), g);
    }
    assert!(drain(&mut n, now).is_empty(), "no answer to garbage, responses or errors we did not ask for");
    assert_eq!(n.stats().dropped, dropped + 6);
}

#[test]
fn answers_from_another_address_or_to_no_query_are_dropped() {
    let now = Instant::now();
    let mut n = node(now);
    n.add_node(now, a("10.0.0.1:6881"));
    n.handle_timeout(now);
    let sent = drain(&mut n, now);
    assert_eq!(sent.len(), 1);
    let tid = krpc::decode(&sent[0].1).unwrap().tid.to_vec();
    n.handle_datagram(now, a("10.0.0.2:6881"), &response(&tid, [1; 20], vec![], vec![], None));
    n.handle_datagram(now, a("10.0.0.1:6882"), &response(&tid, [1; 20], vec![], vec![], None));
    n.handle_datagram(now, a("10.0.0.1:6881"), &response(b"zz", [1; 20], vec![], vec![], None));
    assert_eq!((n.stats().nodes, n.stats().dropped), (0, 3));
    n.handle_datagram(now, a("10.0.0.1:6881"), &response(&tid, [1; 20], vec![], vec![], None));
    assert_eq!(n.stats().nodes, 1, "the real answer still counts");
    n.handle_datagram(now, a("10.0.0.1:6881"), &response(&tid, [1; 20], vec![], vec![], None));
    assert_eq!(n.stats().dropped, 4, "a transaction id is good once");
}

#[test]
fn nodes_not_a_multiple_of_26_is_dropped_and_the_query_times_out() {
    let now = Instant::now();
    let mut n = node(now);
    join(&mut n, now, "10.0.0.1:6881", id_near(1));
    n.track(now, [9; 20], None);
    n.handle_timeout(now);
    let sent = drain(&mut n, now);
    let get_peers =
        |d: &[u8]| matches!(krpc::decode(d).unwrap().body, Body::Query { query: Query::GetPeers { .. }, .. });
    let (_, get) = sent.iter().find(|(_, d)| get_peers(d)).expect("a get_peers");
    let m = krpc::decode(get).unwrap();
    let mut bad = b"d1:rd2:id20:".to_vec();
    bad.extend_from_slice(&id_near(1));
    bad.extend_from_slice(b"5:nodes25:aaaaaaaaaaaaaaaaaaaaaaaaae1:t2:");
    bad.extend_from_slice(m.tid);
    bad.extend_from_slice(b"1:y1:re");
    n.handle_datagram(now, a("10.0.0.1:6881"), &bad);
    assert_eq!(n.stats().dropped, 1);
    assert!(n.poll_event().is_none());
    assert_eq!(n.poll_timeout(), Some(now + SLOW_AFTER));
    let deadline = now + QUERY_TIMEOUT;
    n.handle_timeout(deadline);
    assert_eq!(n.tracked[&[9; 20]].next_lookup, deadline + RETRY_EMPTY, "nobody answered: retried soon");
    assert_eq!(n.poll_event(), Some(Event::LookupDone { info_hash: [9; 20], peers: 0, announced: 0 }));
}

#[test]
fn never_sends_to_port_0_or_to_our_own_address() {
    let now = Instant::now();
    let mut n = node(now);
    n.add_node(now, a("10.0.0.1:0"));
    n.add_node(now, a("0.0.0.0:6881"));
    n.handle_timeout(now);
    assert!(drain(&mut n, now).is_empty());
    // A node tells us where we are (BEP 42 `ip`), then lists us, a port-0 node and a real one.
    n.add_node(now, a("10.0.0.1:6881"));
    n.handle_timeout(now);
    let sent = drain(&mut n, now);
    let tid = krpc::decode(&sent[0].1).unwrap().tid.to_vec();
    let mut pong = Vec::new();
    let me = v4("10.9.9.9:7000");
    let body = Body::Response {
        response: Response { id: id_near(1), nodes: vec![], values: vec![], token: None },
        ip: Some(me),
    };
    Message { tid: &tid, body }.encode(&mut pong);
    n.handle_datagram(now, a("10.0.0.1:6881"), &pong);
    let sent = drain(&mut n, now);
    let (to, find) = &sent[0];
    assert_eq!(*to, a("10.0.0.1:6881"), "the first node starts the bootstrap lookup");
    let tid = krpc::decode(find).unwrap().tid.to_vec();
    let listed = vec![
        Contact { id: id_near(2), addr: me },
        Contact { id: id_near(3), addr: v4("10.0.0.3:0") },
        Contact { id: OWN, addr: v4("10.0.0.4:6881") },
        Contact { id: id_near(5), addr: v4("10.0.0.5:6881") },
    ];
    n.handle_datagram(now, a("10.0.0.1:6881"), &response(&tid, id_near(1), listed, vec![], None));
    let sent: Vec<SocketAddr> = drain(&mut n, now).into_iter().map(|(to, _)| to).collect();
    assert_eq!(sent, vec![a("10.0.0.5:6881")]);
}

#[test]
fn ipv6_sources_are_dropped_and_v4_mapped_ones_are_ipv4() {
    let now = Instant::now();
    let mut n = node(now);
    n.handle_datagram(now, a("[::1]:6881"), &query(b"aa", [1; 20], Query::Ping));
    assert!(drain(&mut n, now).is_empty());
    n.handle_datagram(now, a("[::ffff:127.0.0.7]:6881"), &query(b"aa", [1; 20], Query::Ping));
    let sent = drain(&mut n, now);
    assert_eq!(sent[0].0, a("127.0.0.7:6881"));
}

#[test]
fn a_flooding_address_is_banned_while_others_are_served() {
    let now = Instant::now();
    let mut n = node(now);
    for i in 0..100 {
        n.handle_datagram(now, a("127.0.0.2:1"), &query(&[i], [1; 20], Query::Ping));
    }
    let is_answer = |d: &[u8]| matches!(krpc::decode(d).unwrap().body, Body::Response { .. });
    let answered = drain(&mut n, now).iter().filter(|(to, d)| *to == a("127.0.0.2:1") && is_answer(d)).count();
    assert_eq!(answered, limit::BURST as usize);
    let later = now + Duration::from_secs(60);
    n.handle_datagram(later, a("127.0.0.2:1"), &query(b"x", [1; 20], Query::Ping));
    assert!(drain(&mut n, later).iter().all(|(to, _)| *to != a("127.0.0.2:1")), "still banned");
    ask(&mut n, later, "127.0.0.3:1", &query(b"y", [1; 20], Query::Ping));
}

/// 10,000 packets from 254 addresses of 127.0.0.x and many ports, valid and not, without the socket draining
/// the answers: every internal table stays bounded, and a correct ping afterwards is answered.
#[test]
fn a_flood_of_10000_packets_keeps_memory_bounded_and_a_ping_is_still_answered() {
    let now = Instant::now();
    let mut n = node(now);
    let mut rng = Rng::new(99);
    for i in 0..10_000u32 {
        let at = now + Duration::from_millis(u64::from(i / 10));
        let from = SocketAddr::from(([127, 0, 0, 1 + (i % 254) as u8], 1000 + (rng.below(5000) as u16)));
        let id = rng.id();
        let tid = (i as u16).to_be_bytes();
        let datagram = match i % 6 {
            0 => query(&tid, id, Query::Ping),
            1 => query(&tid, id, Query::FindNode { target: rng.id() }),
            2 => query(&tid, id, Query::GetPeers { info_hash: rng.id() }),
            3 => query(&tid, id, Query::AnnouncePeer { info_hash: id, port: 1, implied_port: false, token: b"nope" }),
            4 => response(&tid, id, vec![Contact { id, addr: v4("10.1.1.1:1") }], vec![], None),
            _ => (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect(),
        };
        n.handle_datagram(at, from, &datagram);
        if i % 1000 == 999 {
            n.handle_timeout(at);
        }
    }
    assert!(n.answers.len() <= MAX_ANSWERS_QUEUED);
    assert!(n.outstanding.len() <= MAX_OUTSTANDING);
    assert!(n.pings.len() <= MAX_PENDING_PINGS);
    assert!(n.limiter.len() <= limit::MAX_SENDERS);
    assert!(n.events.is_empty() && n.lookups.is_empty());
    assert_eq!(n.store.len(), 0, "no announce without a token");
    assert!(n.table.capacity_used() <= 160 * (table::K + table::REPLACEMENTS));
    // The socket drains; pings the node sent to flooders go unanswered and time out.
    let end = now + Duration::from_secs(2);
    let sent = drain(&mut n, end);
    assert!(sent.len() <= MAX_ANSWERS_QUEUED + MAX_OUTSTANDING + MAX_PENDING_PINGS);
    assert!(sent.iter().all(|(_, d)| d.len() <= 1000));
    let answer = ask(&mut n, end, "127.0.1.1:6881", &query(b"ok", [3; 20], Query::Ping));
    assert!(matches!(krpc::decode(&answer).unwrap(), Message { tid: b"ok", body: Body::Response { .. } }));
    n.handle_timeout(end + QUERY_TIMEOUT);
    assert!(n.outstanding.is_empty());
}

#[test]
fn a_get_peers_answer_is_never_larger_than_needed() {
    let now = Instant::now();
    let mut n = node(now);
    for i in 1..=20u8 {
        join(&mut n, now, &format!("10.0.0.{i}:6881"), id_near(i));
    }
    for i in 0..200u16 {
        n.store.add(now, [7; 20], SocketAddrV4::new([10, 1, (i >> 8) as u8, i as u8].into(), 1));
    }
    let answer = ask(&mut n, now, "127.0.0.9:1", &query(b"g", [1; 20], Query::GetPeers { info_hash: [7; 20] }));
    let Body::Response { response, .. } = krpc::decode(&answer).unwrap().body else { panic!() };
    assert_eq!((response.values.len(), response.nodes.len()), (MAX_VALUES, K));
    assert!(answer.len() <= 600, "{} bytes", answer.len());
}

#[test]
fn track_before_any_node_starts_when_the_first_node_answers_and_announces() {
    let now = Instant::now();
    let mut n = node(now);
    let hash = [0x81; 20];
    n.track(now, hash, Some(6000));
    n.handle_timeout(now);
    assert!(drain(&mut n, now).is_empty(), "nobody to ask yet");
    assert!(n.poll_timeout().unwrap() > now, "no busy loop while waiting");
    join(&mut n, now, "10.0.0.1:6881", id_near(1));
    let sent = drain(&mut n, now);
    let get = sent
        .iter()
        .find(|(_, d)| matches!(krpc::decode(d).unwrap().body, Body::Query { query: Query::GetPeers { .. }, .. }));
    let tid = krpc::decode(&get.expect("a get_peers").1).unwrap().tid.to_vec();
    let peer = v4("10.5.5.5:5555");
    n.handle_datagram(
        now,
        a("10.0.0.1:6881"),
        &response(&tid, id_near(1), vec![], vec![peer, v4("10.5.5.6:0")], Some(b"tk")),
    );
    assert_eq!(n.poll_event(), Some(Event::Peers { info_hash: hash, peers: vec![SocketAddr::V4(peer)] }));
    let sent = drain(&mut n, now);
    let announce = sent
        .iter()
        .filter_map(|(to, d)| match krpc::decode(d).unwrap() {
            Message { tid, body: Body::Query { query: Query::AnnouncePeer { port, token, info_hash, .. }, .. } } => {
                assert_eq!((*to, port, token, info_hash), (a("10.0.0.1:6881"), 6000, &b"tk"[..], hash));
                Some(tid.to_vec())
            }
            _ => None,
        })
        .next()
        .expect("an announce to the node that gave a token");
    n.handle_datagram(now, a("10.0.0.1:6881"), &response(&announce, id_near(1), vec![], vec![], None));
    assert_eq!(n.poll_event(), Some(Event::LookupDone { info_hash: hash, peers: 1, announced: 1 }));
    let next = n.poll_timeout().unwrap();
    assert!(next <= now + MAINTENANCE_EVERY);
    assert!(n.tracked[&hash].next_lookup >= now + RELOOKUP_MIN);
    assert!(n.tracked[&hash].next_lookup <= now + RELOOKUP_MIN + RELOOKUP_SPREAD);
    n.untrack(hash);
    assert!(n.tracked.is_empty() && n.lookups.iter().all(|a| a.purpose != Purpose::Track(hash)));
}

#[test]
fn a_saved_table_restarts_without_routers() {
    let now = Instant::now();
    let mut n = node(now);
    for i in 1..=5u8 {
        join(&mut n, now, &format!("10.0.0.{i}:6881"), id_near(i));
    }
    let saved = n.save();
    let mut again = Node::from_saved(now, Config { id: None, seed: 1 }, &saved).unwrap();
    assert_eq!(again.id(), OWN, "the saved id comes back");
    assert_eq!(again.poll_timeout(), Some(now));
    again.handle_timeout(now);
    let sent = drain(&mut again, now);
    assert_eq!(sent.len(), lookup::ALPHA);
    assert!(sent.iter().all(|(_, d)| matches!(
        krpc::decode(d).unwrap().body,
        Body::Query { query: Query::FindNode { target: OWN }, .. }
    )));
    let err = Node::from_saved(now, Config { id: None, seed: 1 }, b"d2:id3:abce").err().unwrap();
    assert!(err.contains("saved DHT table"), "{err}");
}

#[test]
fn unanswered_queries_fail_the_node_and_free_their_slot() {
    let now = Instant::now();
    let mut n = node(now);
    join(&mut n, now, "10.0.0.1:6881", id_near(1));
    let find = drain(&mut n, now);
    assert_eq!(find.len(), 1, "the bootstrap find_node");
    assert_eq!(n.poll_timeout(), Some(now + SLOW_AFTER));
    n.handle_timeout(now + SLOW_AFTER);
    assert_eq!(n.poll_timeout(), Some(now + QUERY_TIMEOUT));
    n.handle_timeout(now + QUERY_TIMEOUT);
    assert!(n.outstanding.is_empty());
    assert_eq!(n.table.get(v4("10.0.0.1:6881")).unwrap().failures, 1);
    assert!(n.poll_timeout().unwrap() > now + QUERY_TIMEOUT);
}

#[test]
fn routers_that_do_not_answer_are_pinged_again_while_the_table_is_empty() {
    let now = Instant::now();
    let mut n = node(now);
    n.add_node(now, a("10.0.0.1:6881"));
    n.handle_timeout(now);
    assert_eq!(drain(&mut n, now).len(), 1);
    n.handle_timeout(now + QUERY_TIMEOUT);
    let retry = now + RETRY_EMPTY;
    assert_eq!(n.poll_timeout(), Some(retry));
    n.handle_timeout(retry);
    let sent = drain(&mut n, retry);
    assert_eq!(sent.iter().map(|(to, _)| *to).collect::<Vec<_>>(), vec![a("10.0.0.1:6881")]);
    let tid = krpc::decode(&sent[0].1).unwrap().tid.to_vec();
    n.handle_datagram(retry, a("10.0.0.1:6881"), &response(&tid, id_near(1), vec![], vec![], None));
    assert_eq!(n.stats().nodes, 1);
    let later = retry + RETRY_EMPTY;
    n.handle_timeout(later);
    assert!(
        drain(&mut n, later)
            .iter()
            .all(|(_, d)| !matches!(krpc::decode(d).unwrap().body, Body::Query { query: Query::Ping, .. })),
        "no more pings once the table has a node"
    );
    assert!(format!("{n:?}").contains("nodes: 1"));
}

#[test]
fn a_slow_node_does_not_hold_up_a_lookup() {
    let now = Instant::now();
    let mut n = node(now);
    for i in 1..=4u8 {
        join(&mut n, now, &format!("10.0.0.{i}:6881"), id_near(i));
    }
    drain(&mut n, now);
    let get_peers = |sent: Vec<(SocketAddr, Vec<u8>)>| {
        let is_get =
            |d: &[u8]| matches!(krpc::decode(d).unwrap().body, Body::Query { query: Query::GetPeers { .. }, .. });
        sent.into_iter().filter(|(_, d)| is_get(d)).count()
    };
    n.track(now, [0x80; 20], None);
    n.handle_timeout(now);
    assert_eq!(get_peers(drain(&mut n, now)), lookup::ALPHA);
    let slow = now + SLOW_AFTER;
    assert!(n.poll_timeout().unwrap() <= slow);
    n.handle_timeout(slow);
    assert_eq!(get_peers(drain(&mut n, slow)), 1, "a slot opened for the fourth node");
}

/// Mutated valid messages (queries, and answers carrying live transaction ids) and random bytes from a handful of
/// addresses, with the clock moving: the node never panics, never sends to port 0, and stays within its bounds.
#[test]
fn never_panics_on_mutated_datagrams() {
    let start = Instant::now();
    let mut n = node(start);
    for i in 1..=10u8 {
        join(&mut n, start, &format!("10.0.0.{i}:6881"), id_near(i));
    }
    n.track(start, [0x81; 20], Some(0));
    let mut rng = crate::test_data::XorShift(0xd47_5eed);
    let mut now = start;
    let mut live_tids: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    for round in 0..20_000u32 {
        now += Duration::from_millis(rng.below(50) as u64);
        let from = SocketAddr::from(([10, 0, 0, 1 + rng.below(12) as u8], 6881));
        let tid = live_tids.get(rng.below(live_tids.len().max(1))).map_or(b"aa".to_vec(), |(_, t)| t.clone());
        let nodes = vec![Contact { id: id_near(rng.below(250) as u8 + 1), addr: v4("10.0.0.3:6881") }];
        let valid = match round % 5 {
            0 => query(&tid, id_near(3), Query::GetPeers { info_hash: [0x81; 20] }),
            1 => query(
                &tid,
                id_near(4),
                Query::AnnouncePeer { info_hash: [1; 20], port: 9, implied_port: true, token: b"x" },
            ),
            2 => response(&tid, id_near(5), nodes, vec![v4("10.9.9.9:9")], Some(b"tk")),
            3 => b"d1:eli201e5:oopsie1:t2:aa1:y1:ee".to_vec(),
            _ => (0..rng.below(100)).map(|_| rng.next() as u8).collect(),
        };
        let input = if round % 3 == 0 { valid } else { rng.mutated(&valid, 3, |r| r.next() as u8) };
        n.handle_datagram(now, from, &input);
        if round % 7 == 0 {
            n.handle_timeout(now);
        }
        let mut out = Vec::new();
        while let Some(to) = n.poll_datagram(now, &mut out) {
            assert_ne!(to.port(), 0);
            if let Ok(Message { tid, body: Body::Query { .. } }) = krpc::decode(&out) {
                live_tids.push((to, tid.to_vec()));
                if live_tids.len() > 64 {
                    live_tids.remove(0);
                }
            }
            out.clear();
        }
        while n.poll_event().is_some() {}
        assert!(n.outstanding.len() <= MAX_OUTSTANDING && n.lookups.len() <= MAX_LOOKUPS + 1);
    }
    assert!(n.stats().queries_in > 1000 && n.stats().dropped > 1000, "{:?}", n.stats());
}

#[test]
fn a_bootstrap_address_that_is_ourselves_is_asked_once_and_never_again() {
    let now = Instant::now();
    let mut n = node(now);
    let me = a("127.0.0.1:6881");
    n.add_node(now, me);
    n.handle_timeout(now);
    let sent = drain(&mut n, now);
    assert_eq!(sent.len(), 1);
    // The socket delivers our own ping to us.
    n.handle_datagram(now, me, &sent[0].1);
    assert!(drain(&mut n, now).is_empty(), "no answer to ourselves");
    n.handle_timeout(now + QUERY_TIMEOUT);
    n.handle_timeout(now + RETRY_EMPTY);
    assert!(drain(&mut n, now + RETRY_EMPTY).is_empty(), "our own address is not pinged again");
}

#[test]
fn tracking_again_with_a_new_port_looks_up_now_and_the_same_port_does_not() {
    let now = Instant::now();
    let mut n = node(now);
    join(&mut n, now, "10.0.0.1:6881", id_near(1));
    drain(&mut n, now);
    let hash = [0x81; 20];
    n.track(now, hash, None);
    n.handle_timeout(now);
    let sent = drain(&mut n, now);
    let get_peers =
        |d: &[u8]| matches!(krpc::decode(d).unwrap().body, Body::Query { query: Query::GetPeers { .. }, .. });
    assert_eq!(sent.iter().filter(|(_, d)| get_peers(d)).count(), 1);
    n.track(now, hash, None);
    n.handle_timeout(now);
    assert!(drain(&mut n, now).is_empty(), "no second lookup while one runs");
    // The node answers the lookup: it ends, and the next one is due in 15 to 30 minutes.
    let (_, get) = sent.iter().find(|(_, d)| get_peers(d)).unwrap();
    let tid = krpc::decode(get).unwrap().tid.to_vec();
    n.handle_datagram(now, a("10.0.0.1:6881"), &response(&tid, id_near(1), vec![], vec![], Some(b"t")));
    assert!(matches!(n.poll_event(), Some(Event::LookupDone { .. })));
    let later = now + Duration::from_secs(1);
    n.track(later, hash, None);
    n.handle_timeout(later);
    assert!(!drain(&mut n, later).iter().any(|(_, d)| get_peers(d)), "the same port: no new lookup");
    n.track(later, hash, Some(6000));
    n.handle_timeout(later);
    assert!(drain(&mut n, later).iter().any(|(_, d)| get_peers(d)), "a new port to announce: a lookup now");
}

/// Runs `n`'s due work at `now` with one node, 10.0.0.1, answering every query at once (get_peers with `values` and a
/// token); returns the LookupDone event of the lookup for `hash`.
fn lookup_answered_by_one_node(n: &mut Node, now: Instant, hash: Id, values: &[SocketAddrV4]) -> Event {
    n.handle_timeout(now);
    for _ in 0..16 {
        for (to, d) in drain(n, now) {
            let Ok(Message { tid, body: Body::Query { query, .. } }) = krpc::decode(&d) else { continue };
            let answer = match query {
                Query::GetPeers { .. } => response(tid, id_near(1), vec![], values.to_vec(), Some(b"tk")),
                _ => response(tid, id_near(1), vec![], vec![], None),
            };
            n.handle_datagram(now, to, &answer);
        }
        while let Some(e) = n.poll_event() {
            if matches!(e, Event::LookupDone { info_hash, .. } if info_hash == hash) {
                return e;
            }
        }
    }
    panic!("the lookup for {} did not finish", hex(&hash));
}

#[test]
fn a_lookup_that_finds_no_peer_is_repeated_after_a_minute_backing_off_and_one_that_finds_peers_waits_long() {
    let start = Instant::now();
    let mut n = node(start);
    join(&mut n, start, "10.0.0.1:6881", id_near(1));
    let hash = [0x81; 20];
    n.track(start, hash, Some(6000));
    let mut now = start;
    let mut waits = Vec::new();
    for _ in 0..7 {
        let done = lookup_answered_by_one_node(&mut n, now, hash, &[]);
        assert_eq!(done, Event::LookupDone { info_hash: hash, peers: 0, announced: 1 });
        let next = n.tracked[&hash].next_lookup;
        waits.push((next - now).as_secs());
        assert!(n.poll_timeout().unwrap() <= next, "the node wakes up for it");
        // Nothing is looked up before it is due.
        n.handle_timeout(next - Duration::from_secs(1));
        assert!(n.lookups.iter().all(|a| a.purpose != Purpose::Track(hash)), "not before it is due");
        now = next;
    }
    assert_eq!(&waits[..5], &[60, 120, 240, 480, 960], "a minute, then twice as long each time");
    assert!(
        waits[5..].iter().all(|&w| w >= RELOOKUP_MIN.as_secs() && w <= 1920),
        "{waits:?}: never past the ordinary wait"
    );
    let done = lookup_answered_by_one_node(&mut n, now, hash, &[v4("10.5.5.5:5555")]);
    assert_eq!(done, Event::LookupDone { info_hash: hash, peers: 1, announced: 1 });
    let next = n.tracked[&hash].next_lookup;
    assert!(
        next >= now + RELOOKUP_MIN && next <= now + RELOOKUP_MIN + RELOOKUP_SPREAD,
        "peers found: the ordinary wait"
    );
    // The backoff starts over once peers were found.
    now = next;
    lookup_answered_by_one_node(&mut n, now, hash, &[]);
    assert_eq!(n.tracked[&hash].next_lookup, now + RETRY_NO_PEERS);
}
