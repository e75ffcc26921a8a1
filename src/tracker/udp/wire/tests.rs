use super::*;
use crate::test_data::XorShift;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn announce() -> AnnounceRequest {
    AnnounceRequest {
        connection_id: 0x0102_0304_0506_0708,
        transaction_id: 0xdead_beef,
        info_hash: [0xaa; 20],
        peer_id: *b"-TB0001-abcdefghijkl",
        downloaded: 1,
        left: 0x1_0000_0000,
        uploaded: 3,
        event: Event::Started,
        ip: None,
        key: 0x0a0b_0c0d,
        num_want: -1,
        port: 6881,
        url_data: Vec::new(),
    }
}

#[test]
fn connect_request_has_bep15s_layout() {
    let mut out = Vec::new();
    Request::Connect { transaction_id: 0x1234_5678 }.encode(&mut out);
    assert_eq!(out, hex("0000041727101980 00000000 12345678"));
    assert_eq!(Request::decode(&out), Ok(Request::Connect { transaction_id: 0x1234_5678 }));
    // Bytes past the layout are allowed (future extensions).
    out.extend_from_slice(b"more");
    assert_eq!(Request::decode(&out), Ok(Request::Connect { transaction_id: 0x1234_5678 }));
}

#[test]
fn announce_request_has_bep15s_layout() {
    let a = announce();
    let mut out = Vec::new();
    Request::Announce(a.clone()).encode(&mut out);
    let mut want = hex("0102030405060708 00000001 deadbeef");
    want.extend_from_slice(&[0xaa; 20]);
    want.extend_from_slice(b"-TB0001-abcdefghijkl");
    want.extend(hex("0000000000000001 0000000100000000 0000000000000003 00000002 00000000 0a0b0c0d ffffffff 1ae1"));
    assert_eq!(out.len(), ANNOUNCE_LEN);
    assert_eq!(out, want);
    assert_eq!(Request::decode(&out), Ok(Request::Announce(a)));
}

#[test]
fn announce_ip_field_and_events_decode() {
    for (code, event) in [(0, Event::Update), (1, Event::Completed), (2, Event::Started), (3, Event::Stopped)] {
        let mut b = Vec::new();
        Request::Announce(announce()).encode(&mut b);
        b[80..84].copy_from_slice(&u32::to_be_bytes(code));
        b[84..88].copy_from_slice(&[10, 0, 0, 1]);
        b[92..96].copy_from_slice(&50i32.to_be_bytes());
        let Ok(Request::Announce(a)) = Request::decode(&b) else { panic!() };
        assert_eq!((a.event, a.ip, a.num_want), (event, Some(Ipv4Addr::new(10, 0, 0, 1)), 50));
    }
    let mut b = Vec::new();
    Request::Announce(announce()).encode(&mut b);
    b[80..84].copy_from_slice(&4u32.to_be_bytes());
    assert_eq!(Request::decode(&b), Err(DecodeError::BadEvent(4)));
}

#[test]
fn bep41_url_data_is_split_in_255_byte_options_and_joined_again() {
    let mut a = announce();
    a.url_data = b"/announce?passkey=".iter().copied().chain(std::iter::repeat_n(b'x', 282)).collect();
    let mut out = Vec::new();
    Request::Announce(a.clone()).encode(&mut out);
    assert_eq!(out.len(), ANNOUNCE_LEN + 2 + 255 + 2 + 45);
    assert_eq!(&out[ANNOUNCE_LEN..ANNOUNCE_LEN + 2], &[2, 255]);
    assert_eq!(&out[ANNOUNCE_LEN + 257..ANNOUNCE_LEN + 259], &[2, 45]);
    assert_eq!(Request::decode(&out), Ok(Request::Announce(a)));
}

#[test]
fn bep41_options_nop_end_and_unknown_ones() {
    let mut base = Vec::new();
    Request::Announce(announce()).encode(&mut base);
    let url = |opts: &[u8]| {
        let mut b = base.clone();
        b.extend_from_slice(opts);
        match Request::decode(&b) {
            Ok(Request::Announce(a)) => Ok(a.url_data),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    };
    assert_eq!(url(&[2, 3, b'/', b'a', b'b', 1, 1, 2, 2, b'?', b'x']), Ok(b"/ab?x".to_vec()));
    // End of options: whatever follows is not read.
    assert_eq!(url(&[2, 1, b'/', 0, 2, 200]), Ok(b"/".to_vec()));
    // An unknown option is skipped by its length.
    assert_eq!(url(&[9, 2, 0xff, 0xff, 2, 1, b'/']), Ok(b"/".to_vec()));
    // Cut short: a missing length byte, data shorter than its length.
    assert_eq!(url(&[2]), Err(DecodeError::BadOption));
    assert_eq!(url(&[2, 5, b'/', b'a']), Err(DecodeError::BadOption));
    assert_eq!(url(&[7]), Err(DecodeError::BadOption));
    // Too much URL data in total.
    let mut many = Vec::new();
    for _ in 0..5 {
        many.push(2);
        many.push(255);
        many.extend_from_slice(&[b'a'; 255]);
    }
    assert_eq!(url(&many), Err(DecodeError::BadOption));
}

#[test]
fn scrape_request_has_bep15s_layout_and_bounds() {
    let mut hashes = vec![0x11; 20];
    hashes.extend_from_slice(&[0x22; 20]);
    let mut out = Vec::new();
    Request::Scrape { connection_id: 7, transaction_id: 9, info_hashes: &hashes }.encode(&mut out);
    let mut want = hex("0000000000000007 00000002 00000009");
    want.extend_from_slice(&hashes);
    assert_eq!(out, want);
    let Ok(Request::Scrape { connection_id: 7, transaction_id: 9, info_hashes }) = Request::decode(&out) else {
        panic!()
    };
    assert_eq!(super::hashes(info_hashes).collect::<Vec<_>>(), vec![[0x11; 20], [0x22; 20]]);
    // No hash at all is a valid packet (the tracker decides what to answer).
    assert!(matches!(Request::decode(&out[..16]), Ok(Request::Scrape { info_hashes: [], .. })));
    assert_eq!(Request::decode(&out[..16 + 19]), Err(DecodeError::Ragged));
    let mut max = out[..16].to_vec();
    max.extend_from_slice(&[0x33; 20 * MAX_SCRAPE]);
    assert!(matches!(Request::decode(&max), Ok(Request::Scrape { info_hashes, .. }) if info_hashes.len() == 20 * 74));
    max.extend_from_slice(&[0x44; 20]);
    assert_eq!(Request::decode(&max), Err(DecodeError::TooManyHashes));
    max.resize(16 + 20 * 200, 0);
    assert_eq!(Request::decode(&max), Err(DecodeError::TooLong));
}

#[test]
fn bad_requests_are_errors() {
    assert_eq!(Request::decode(&[]), Err(DecodeError::TooShort));
    assert_eq!(Request::decode(&hex("0000041727101980 00000000 123456")), Err(DecodeError::TooShort));
    assert_eq!(Request::decode(&hex("0000041727101981 00000000 12345678")), Err(DecodeError::BadProtocolId));
    assert_eq!(Request::decode(&hex("0000041727101980 00000003 12345678")), Err(DecodeError::UnknownAction(3)));
    assert_eq!(Request::decode(&hex("0000041727101980 ffffffff 12345678")), Err(DecodeError::UnknownAction(!0)));
    let mut long = hex("0000041727101980 00000000 12345678");
    long.resize(MAX_REQUEST + 1, 0);
    assert_eq!(Request::decode(&long), Err(DecodeError::TooLong));
    let mut a = Vec::new();
    Request::Announce(announce()).encode(&mut a);
    a.resize(MAX_REQUEST + 1, 0);
    assert_eq!(Request::decode(&a), Err(DecodeError::TooLong));
}

#[test]
fn every_truncated_request_is_too_short_not_a_panic() {
    let mut a = announce();
    a.url_data = b"/announce?k=v".to_vec();
    let mut packets = Vec::new();
    for r in [Request::Connect { transaction_id: 5 }, Request::Announce(a)] {
        let mut b = Vec::new();
        r.encode(&mut b);
        packets.push(b);
    }
    for p in &packets {
        let fixed = if p.len() > 16 { ANNOUNCE_LEN } else { 16 };
        for cut in 0..p.len() {
            let got = Request::decode(&p[..cut]);
            if cut < fixed {
                assert_eq!(got, Err(DecodeError::TooShort), "cut {cut}");
            } else if cut > fixed {
                // Inside the options: cut short.
                assert!(matches!(got, Err(DecodeError::BadOption) | Ok(_)), "cut {cut}: {got:?}");
            }
        }
    }
}

#[test]
fn connect_and_error_responses_have_bep15s_layout() {
    let mut out = Vec::new();
    Response::Connect { transaction_id: 0x1234_5678, connection_id: 0x0102_0304_0506_0708 }.encode(&mut out);
    assert_eq!(out, hex("00000000 12345678 0102030405060708"));
    assert_eq!(
        Response::decode(&out, false),
        Ok(Response::Connect { transaction_id: 0x1234_5678, connection_id: 0x0102_0304_0506_0708 })
    );
    out.clear();
    Response::Error { transaction_id: 1, message: b"no" }.encode(&mut out);
    assert_eq!(out, hex("00000003 00000001 6e6f"));
    assert_eq!(Response::decode(&out, true), Ok(Response::Error { transaction_id: 1, message: b"no" }));
    assert_eq!(Response::decode(&out[..8], true), Ok(Response::Error { transaction_id: 1, message: b"" }));
}

#[test]
fn announce_responses_carry_6_or_18_byte_peers() {
    let v4: SocketAddr = "10.1.2.3:6881".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:51413".parse().unwrap();
    let mut peers4 = Vec::new();
    assert!(Peers::push(&mut peers4, v4, false));
    assert!(!Peers::push(&mut peers4, v6, false));
    assert!(Peers::push(&mut peers4, "[::ffff:10.0.0.9]:80".parse().unwrap(), false));
    assert_eq!(peers4, hex("0a010203 1ae1 0a000009 0050"));
    let mut out = Vec::new();
    let peers = Peers::new(&peers4, false).unwrap();
    Response::Announce { transaction_id: 2, interval: 1800, leechers: 3, seeders: 4, peers }.encode(&mut out);
    let mut want = hex("00000001 00000002 00000708 00000003 00000004");
    want.extend_from_slice(&peers4);
    assert_eq!(out, want);
    let Ok(Response::Announce { peers, interval: 1800, leechers: 3, seeders: 4, .. }) = Response::decode(&out, false)
    else {
        panic!()
    };
    assert_eq!(peers.iter().collect::<Vec<_>>(), vec![v4, "10.0.0.9:80".parse().unwrap()]);
    // The same 12 peer bytes are ragged as IPv6 records.
    assert_eq!(Response::decode(&out, true), Err(DecodeError::Ragged));

    let mut peers6 = Vec::new();
    assert!(Peers::push(&mut peers6, v6, true));
    assert!(!Peers::push(&mut peers6, v4, true));
    assert_eq!(peers6, hex("20010db8000000000000000000000001 c8d5"));
    out.clear();
    encode_announce_head(&mut out, 2, 60, 0, 1);
    out.extend_from_slice(&peers6);
    let Ok(Response::Announce { peers, .. }) = Response::decode(&out, true) else { panic!() };
    assert_eq!(peers.iter().collect::<Vec<_>>(), vec![v6]);
    // 18 bytes are also three IPv4 records: the datagram's family, not the packet, says which.
    assert!(matches!(Response::decode(&out, false), Ok(Response::Announce { peers, .. }) if peers.len() == 3));
    assert_eq!(Response::decode(&out[..out.len() - 1], true), Err(DecodeError::Ragged));
    assert_eq!(Response::decode(&out[..19], true), Err(DecodeError::TooShort));
}

#[test]
fn scrape_responses_list_12_byte_records() {
    let mut out = hex("00000002 00000007");
    encode_scrape_stats(&mut out, ScrapeStats { seeders: 1, completed: 2, leechers: 3 });
    encode_scrape_stats(&mut out, ScrapeStats { seeders: 4, completed: 5, leechers: 6 });
    assert_eq!(&out[8..20], &hex("00000001 00000002 00000003")[..]);
    let Ok(Response::Scrape { transaction_id: 7, stats }) = Response::decode(&out, false) else { panic!() };
    let got: Vec<_> = scrape_stats(stats).collect();
    assert_eq!(got[1], ScrapeStats { seeders: 4, completed: 5, leechers: 6 });
    let mut again = Vec::new();
    Response::Scrape { transaction_id: 7, stats }.encode(&mut again);
    assert_eq!(again, out);
    assert_eq!(Response::decode(&out[..out.len() - 1], false), Err(DecodeError::Ragged));
    assert_eq!(Response::decode(&out[..7], false), Err(DecodeError::TooShort));
    assert_eq!(Response::decode(&hex("00000009 00000007"), false), Err(DecodeError::UnknownAction(9)));
}

/// Valid packets of every kind, requests and responses, to mutate.
fn samples() -> Vec<Vec<u8>> {
    let mut a = announce();
    a.url_data = b"/announce?passkey=abc".to_vec();
    let mut out = Vec::new();
    let mut one = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = Vec::new();
        f(&mut b);
        out.push(b);
    };
    one(&|b| Request::Connect { transaction_id: 1 }.encode(b));
    one(&|b| Request::Announce(a.clone()).encode(b));
    one(&|b| Request::Scrape { connection_id: 3, transaction_id: 4, info_hashes: &[7; 60] }.encode(b));
    one(&|b| Response::Connect { transaction_id: 1, connection_id: 2 }.encode(b));
    one(&|b| {
        encode_announce_head(b, 1, 2, 3, 4);
        b.extend_from_slice(&[1; 36]);
    });
    one(&|b| Response::Scrape { transaction_id: 1, stats: &[9; 24] }.encode(b));
    one(&|b| Response::Error { transaction_id: 1, message: b"unregistered torrent" }.encode(b));
    out
}

#[test]
fn never_panics_on_hostile_input() {
    let valid = samples();
    let mut rng = XorShift(42);
    for round in 0..20_000 {
        let mut input: Vec<u8> = if round % 4 == 0 {
            (0..rng.below(200)).map(|_| rng.next() as u8).collect()
        } else {
            let pick = rng.below(valid.len());
            rng.mutated(&valid[pick], 6, |r| r.next() as u8)
        };
        // Small actions and events reach the interesting branches.
        if round % 3 == 0 && input.len() >= 16 {
            input[8..12].copy_from_slice(&(rng.below(5) as u32).to_be_bytes());
            input[..4].copy_from_slice(&(rng.below(5) as u32).to_be_bytes());
        }
        if let Ok(r) = Request::decode(&input) {
            let mut again = Vec::new();
            r.encode(&mut again);
            assert_eq!(Request::decode(&again), Ok(r), "re-encoding decodes to the same request");
        }
        for v6 in [false, true] {
            if let Ok(r) = Response::decode(&input, v6) {
                let mut again = Vec::new();
                r.encode(&mut again);
                assert_eq!(Response::decode(&again, v6), Ok(r));
                if let Response::Announce { peers, .. } = r {
                    assert_eq!(peers.iter().count(), peers.len());
                }
            }
        }
        let _ = RequestHeader::peek(&input);
    }
}
