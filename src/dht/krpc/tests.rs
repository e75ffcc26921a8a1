use super::*;
use crate::test_data::XorShift;

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn encoded(m: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

#[test]
fn decodes_the_bep5_examples() {
    let ping = decode(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe").unwrap();
    assert_eq!(ping.tid, b"aa");
    assert_eq!(ping.body, Body::Query { id: *b"abcdefghij0123456789", read_only: false, query: Query::Ping });

    let pong = decode(b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re").unwrap();
    let Body::Response { response, ip: None } = pong.body else { panic!("not a response: {pong:?}") };
    assert_eq!((response.id, response.nodes.len(), response.token), (*b"mnopqrstuvwxyz123456", 0, None));

    let find = decode(b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe");
    assert!(
        matches!(find.unwrap().body, Body::Query { query: Query::FindNode { target }, .. } if target == *b"mnopqrstuvwxyz123456")
    );

    let peers = decode(b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re");
    let Body::Response { response, .. } = peers.unwrap().body else { panic!("not a response") };
    assert_eq!(response.token, Some(&b"aoeusnth"[..]));
    assert_eq!(response.values, vec![addr("97.120.106.101:11893"), addr("105.100.104.116:28269")]);

    let error = decode(b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee").unwrap();
    assert_eq!(error.body, Body::Error { code: 201, message: b"A Generic Error Ocurred" });

    let announce = decode(
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
    )
    .unwrap();
    assert_eq!(
        announce.body,
        Body::Query {
            id: *b"abcdefghij0123456789",
            read_only: false,
            query: Query::AnnouncePeer {
                info_hash: *b"mnopqrstuvwxyz123456",
                port: 6881,
                implied_port: true,
                token: b"aoeusnth"
            }
        }
    );
}

#[test]
fn every_kind_of_message_round_trips_and_echoes_binary_transaction_ids() {
    let tid: &[u8] = &[0x00, 0xff, b'e', b':'];
    let nodes =
        vec![Contact { id: [1; 20], addr: addr("10.0.0.1:6881") }, Contact { id: [2; 20], addr: addr("10.0.0.2:1") }];
    let bodies = [
        Body::Query { id: [9; 20], read_only: true, query: Query::Ping },
        Body::Query { id: [9; 20], read_only: false, query: Query::FindNode { target: [3; 20] } },
        Body::Query { id: [9; 20], read_only: false, query: Query::GetPeers { info_hash: [4; 20] } },
        Body::Query {
            id: [9; 20],
            read_only: false,
            query: Query::AnnouncePeer { info_hash: [4; 20], port: 51413, implied_port: false, token: b"tok" },
        },
        Body::Query {
            id: [9; 20],
            read_only: false,
            query: Query::AnnouncePeer { info_hash: [4; 20], port: 0, implied_port: true, token: b"" },
        },
        Body::Response {
            response: Response {
                id: [5; 20],
                nodes: nodes.clone(),
                values: vec![addr("1.2.3.4:5"), addr("6.7.8.9:65535")],
                token: Some(b"12345678"),
            },
            ip: Some(addr("127.0.0.1:40000")),
        },
        Body::Response { response: Response { id: [5; 20], nodes, values: vec![], token: None }, ip: None },
        Body::Error { code: 204, message: b"method unknown" },
    ];
    for body in bodies {
        let m = Message { tid, body };
        let bytes = encoded(&m);
        assert_eq!(decode(&bytes), Ok(m.clone()), "{}", String::from_utf8_lossy(&bytes));
        assert!(bencode::decode(&bytes).unwrap().raw_dict().is_some());
    }
}

#[test]
fn answers_carry_the_requesters_address_as_bep42_ip() {
    let m = Message {
        tid: b"xy",
        body: Body::Response {
            response: Response { id: [5; 20], nodes: vec![], values: vec![], token: None },
            ip: Some(addr("127.0.0.9:6881")),
        },
    };
    let bytes = encoded(&m);
    assert!(bytes.starts_with(b"d2:ip6:\x7f\x00\x00\x09\x1a\xe11:rd2:id20:"), "{bytes:?}");
}

#[test]
fn unknown_methods_get_error_204_with_the_same_transaction_id() {
    let got = decode(b"d1:ad2:id20:abcdefghij0123456789e1:q4:vote1:t3:\x00\x01\x021:y1:qe");
    assert_eq!(got, Err(DecodeError::Reply { tid: b"\x00\x01\x02", code: 204, why: "method unknown" }));
}

#[test]
fn bad_query_arguments_get_error_203() {
    let cases: [&[u8]; 8] = [
        b"d1:ad2:id19:abcdefghij012345678e1:q4:ping1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash19:mnopqrstuvwxyz12345e1:q9:get_peers1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash21:mnopqrstuvwxyz1234567e1:q9:get_peers1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti0e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti70000e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1ee1:q13:announce_peer1:t2:aa1:y1:qe",
        b"d1:q4:ping1:t2:aa1:y1:qe",
    ];
    for bad in cases {
        match decode(bad) {
            Err(DecodeError::Reply { tid: b"aa", code: ERROR_PROTOCOL, .. }) => {}
            other => panic!("{}: {other:?}", String::from_utf8_lossy(bad)),
        }
    }
}

#[test]
fn broken_packets_and_broken_responses_are_dropped_without_a_word() {
    let long_list = format!("d1:t2:aa1:y1:r1:rd2:id20:abcdefghij01234567896:valuesl{}eee", "6:abcdef".repeat(600));
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"GET / HTTP/1.1\r\n".to_vec(),
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:q".to_vec(),
        b"d1:ad2:id20:abcd".to_vec(),
        b"d1:t99999999999:aa1:y1:qe".to_vec(),
        b"d1:t2:aa1:y1:q1:ad2:id1000000:ee".to_vec(),
        b"li1ei2ee".to_vec(),
        b"d1:y1:qe".to_vec(),
        b"d1:t17:aaaaaaaaaaaaaaaaa1:y1:qe".to_vec(),
        b"d1:t2:aa1:y1:xe".to_vec(),
        b"d1:rd2:id20:abcdefghij01234567895:nodes25:aaaaaaaaaaaaaaaaaaaaaaaaae1:t2:aa1:y1:re".to_vec(),
        b"d1:rd2:id20:abcdefghij01234567895:nodes27:aaaaaaaaaaaaaaaaaaaaaaaaaaae1:t2:aa1:y1:re".to_vec(),
        b"d1:rd2:id3:abce1:t2:aa1:y1:re".to_vec(),
        b"d1:rd2:id20:abcdefghij01234567896:valuesi1ee1:t2:aa1:y1:re".to_vec(),
        b"d1:eli201ee1:t2:aa1:y1:ee".to_vec(),
        b"d1:el3:abci201ee1:t2:aa1:y1:ee".to_vec(),
        long_list.into_bytes(),
        vec![b'l'; 100_000],
        vec![b'l'; 4000],
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe1:x".to_vec(),
    ];
    for bad in &cases {
        assert!(
            matches!(decode(bad), Err(DecodeError::Drop(_))),
            "{}: {:?}",
            String::from_utf8_lossy(&bad[..bad.len().min(80)]),
            decode(bad)
        );
    }
}

#[test]
fn values_of_other_lengths_are_skipped_and_a_v6_ip_is_ignored() {
    let msg = b"d2:ip18:abcdefghijklmnopqr1:rd2:id20:abcdefghij01234567896:valuesl18:abcdefghijklmnopqr6:abcdefee1:t2:aa1:y1:re";
    let Body::Response { response, ip } = decode(msg).unwrap().body else { panic!("not a response") };
    assert_eq!((response.values.len(), ip), (1, None));
}

#[test]
fn compact_nodes_are_26_bytes_each() {
    let nodes = [Contact { id: [7; 20], addr: addr("192.168.1.2:258") }];
    let bytes = compact_nodes(&nodes);
    assert_eq!(bytes.len(), 26);
    assert_eq!(&bytes[20..], &[192, 168, 1, 2, 1, 2]);
    assert_eq!(nodes_from(&bytes), nodes);
}

/// Mutated valid messages and random bytes: never a panic, and whatever decodes re-encodes to the same message.
#[test]
fn never_panics_and_what_decodes_round_trips() {
    let valid: [&[u8]; 5] = [
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        b"d2:ip6:\x7f\x00\x00\x01\x1a\xe11:rd2:id20:abcdefghij01234567895:nodes26:mnopqrstuvwxyz123456\x0a\x00\x00\x01\x1a\xe15:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
        b"d1:eli203e14:Protocol Errore1:t2:aa1:y1:ee",
    ];
    let mut rng = XorShift(0x05ee_dd47);
    let mut decoded = 0;
    for round in 0..40_000 {
        let input = if round % 5 == 0 {
            let len = rng.below(200);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let base = valid[rng.below(valid.len())];
            let digits = b"0123456789:deil";
            rng.mutated(base, 4, |r| if r.below(2) == 0 { digits[r.below(digits.len())] } else { r.next() as u8 })
        };
        if let Ok(m) = decode(&input) {
            decoded += 1;
            let again = encoded(&m);
            assert_eq!(decode(&again), Ok(m), "{:?}", String::from_utf8_lossy(&input));
        }
    }
    assert!(decoded > 1000, "the mutations should keep many messages valid, got {decoded}");
}
