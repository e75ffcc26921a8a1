//! The wire codec on byte slices: every message, split at every byte, hostile lengths, mutated input.

use super::*;
use crate::test_data::XorShift;

const PIECES: u32 = 21;

fn limits() -> Limits {
    Limits::new(PIECES)
}

/// One of every message, spare bits of the bitfield clear (21 pieces -> 3 bytes, 3 spare bits).
fn samples(block: &[u8]) -> Vec<Message<'_>> {
    vec![
        Message::KeepAlive,
        Message::Choke,
        Message::Unchoke,
        Message::Interested,
        Message::NotInterested,
        Message::Have(20),
        Message::Bitfield(&[0xFF, 0x0F, 0xF8]),
        Message::Request { index: 3, begin: 16384, length: 16384 },
        Message::Piece { index: 20, begin: 32768, data: block },
        Message::Piece { index: 0, begin: 0, data: &block[..1] },
        Message::Cancel { index: 3, begin: 16384, length: 16384 },
        Message::Port(6881),
        Message::Extended { ext_id: 0, payload: b"d1:md11:ut_metadatai3eee" },
        Message::Suggest(7),
        Message::HaveAll,
        Message::HaveNone,
        Message::Reject { index: 3, begin: 16384, length: 16384 },
        Message::AllowedFast(9),
        Message::Unknown { id: 99, payload: b"" },
    ]
}

fn block() -> Vec<u8> {
    (0..16384u32).map(|i| (i * 7 + 3) as u8).collect()
}

fn encode_all(msgs: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        m.encode(&mut out);
    }
    out
}

/// What a connection does: append what arrived, decode all complete messages, drop what was consumed. Returns
/// the re-encoded messages, so two runs compare as bytes.
fn decode_in_chunks(stream: &[u8], cuts: &[usize]) -> Result<Vec<u8>, WireError> {
    let mut inbuf = Vec::new();
    let mut decoded = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
        inbuf.extend_from_slice(&stream[from..to]);
        from = to;
        let mut at = 0;
        while let Some((msg, used)) = decode(&inbuf[at..], &limits())? {
            msg.encode(&mut decoded);
            at += used;
        }
        inbuf.drain(..at);
    }
    assert!(inbuf.is_empty(), "bytes left over");
    Ok(decoded)
}

#[test]
fn round_trip_every_message() {
    let data = block();
    for msg in samples(&data) {
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        bytes.extend_from_slice(b"next");
        assert_eq!(decode(&bytes, &limits()), Ok(Some((msg, bytes.len() - 4))), "{msg:?}");
    }
}

#[test]
fn known_encodings() {
    let mut out = Vec::new();
    encode_request(&mut out, 1, 2, 16384);
    assert_eq!(out, [0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0x40, 0]);
    out.clear();
    encode_have(&mut out, 0x01020304);
    assert_eq!(out, [0, 0, 0, 5, 4, 1, 2, 3, 4]);
    out.clear();
    encode_port(&mut out, 0x1AE1);
    assert_eq!(out, [0, 0, 0, 3, 9, 0x1A, 0xE1]);
    out.clear();
    encode_piece_header(&mut out, 5, 16384, 3);
    assert_eq!(out.len(), PIECE_HEADER_LEN);
    out.extend_from_slice(b"abc");
    let expected = Message::Piece { index: 5, begin: 16384, data: b"abc" };
    assert_eq!(decode(&out, &limits()), Ok(Some((expected, 16))));
}

#[test]
fn every_prefix_of_a_message_needs_more() {
    let data = block();
    for msg in samples(&data) {
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], &limits()), Ok(None), "{msg:?} cut at {cut}");
        }
    }
}

#[test]
fn stream_split_at_every_position() {
    let data = block();
    let stream = encode_all(&samples(&data));
    for cut in 0..=stream.len() {
        assert_eq!(decode_in_chunks(&stream, &[cut]).as_deref(), Ok(&stream[..]), "cut at {cut}");
    }
}

#[test]
fn stream_in_random_chunks() {
    let data = block();
    let stream = encode_all(&samples(&data).repeat(3));
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let mut cuts: Vec<usize> = (0..rng.below(40)).map(|_| rng.below(stream.len() + 1)).collect();
        cuts.sort_unstable();
        assert_eq!(decode_in_chunks(&stream, &cuts).as_deref(), Ok(&stream[..]), "cuts {cuts:?}");
    }
}

#[test]
fn limits_are_enforced_from_the_header() {
    let l = limits();
    let hdr = |len: u32, id: u8| {
        let mut v = len.to_be_bytes().to_vec();
        v.push(id);
        v
    };
    // Judged from 5 bytes, before any body arrives.
    assert_eq!(decode(&hdr(9 + 16385, 7), &l), Err(WireError::TooLong { id: Some(7), len: 16394, max: 16393 }));
    assert_eq!(decode(&hdr(8, 7), &l), Err(WireError::TooShort { id: 7, len: 8, min: 9 }));
    assert_eq!(decode(&hdr(5, 5), &l), Err(WireError::WrongLength { id: 5, len: 5, expected: 4 }));
    assert_eq!(decode(&hdr(3, 5), &l), Err(WireError::WrongLength { id: 5, len: 3, expected: 4 }));
    assert_eq!(decode(&hdr(2, 0), &l), Err(WireError::WrongLength { id: 0, len: 2, expected: 1 }));
    assert_eq!(decode(&hdr(4, 4), &l), Err(WireError::WrongLength { id: 4, len: 4, expected: 5 }));
    assert_eq!(decode(&hdr(14, 6), &l), Err(WireError::WrongLength { id: 6, len: 14, expected: 13 }));
    assert_eq!(decode(&hdr(12, 8), &l), Err(WireError::WrongLength { id: 8, len: 12, expected: 13 }));
    assert_eq!(decode(&hdr(5, 9), &l), Err(WireError::WrongLength { id: 9, len: 5, expected: 3 }));
    let unknown_max = 1 + DEFAULT_MAX_UNKNOWN_LEN;
    assert_eq!(decode(&hdr(unknown_max, 20), &l), Ok(None), "an extended message at the bound is awaited");
    let tight = Limits { max_unknown_len: 100, ..l };
    assert_eq!(decode(&hdr(102, 20), &tight), Err(WireError::TooLong { id: Some(20), len: 102, max: 101 }));
    assert_eq!(decode(&hdr(101, 99), &tight), Ok(None), "an unknown id at the bound is awaited");
    // Over every bound: refused from the 4-byte prefix alone.
    let any_max = l.max_frame_len() as u32 - 4;
    assert_eq!(decode(&[0xFF; 4], &l), Err(WireError::TooLong { id: None, len: u32::MAX, max: any_max }));
    assert!(matches!(decode(&(any_max + 1).to_be_bytes(), &l), Err(WireError::TooLong { id: None, .. })));

    // A larger block limit is honoured.
    let big = Limits { max_block_len: 32768, ..l };
    let mut msg = Vec::new();
    encode_piece(&mut msg, 1, 0, &vec![1; 32768]);
    assert!(matches!(decode(&msg, &big), Ok(Some((Message::Piece { .. }, 32781)))));
    assert!(decode(&msg, &l).is_err());
}

/// The shortest valid length prefix (id included) of each known id, as the protocol defines it.
fn shortest(id: u8, l: &Limits) -> u32 {
    match id {
        id::CHOKE | id::UNCHOKE | id::INTERESTED | id::NOT_INTERESTED => 1,
        id::HAVE => 5,
        id::BITFIELD => l.bitfield_body_len(),
        id::REQUEST | id::CANCEL => 13,
        id::PIECE => 9,
        id::PORT => 3,
        _ => 1,
    }
}

/// A length prefix one byte short of an id's rule is refused, whole body there or not; and no length at all
/// around the rule panics (the decoder reads the body only through its rule).
#[test]
fn every_known_id_one_byte_short_is_an_error_not_a_panic() {
    for l in [limits(), Limits::new(1), Limits::new(0), Limits { max_block_len: 0, max_unknown_len: 0, ..limits() }] {
        for id in 0..=u8::MAX {
            let min = shortest(id, &l);
            // A bare id one byte short is a keep-alive, not a message of that id.
            if min > 1 && id != id::EXTENDED && id <= id::PORT {
                let short = min - 1;
                let mut frame = short.to_be_bytes().to_vec();
                frame.push(id);
                assert!(decode(&frame, &l).is_err(), "id {id}: the header alone is refused");
                frame.resize(4 + short as usize, 0);
                assert!(decode(&frame, &l).is_err(), "id {id}: the whole short frame is refused");
            }
            for len in 1..min + 40 {
                let mut frame = len.to_be_bytes().to_vec();
                frame.push(id);
                frame.resize(4 + len as usize, 0);
                for cut in 0..=frame.len() {
                    let _ = decode(&frame[..cut], &l);
                }
            }
        }
    }
}

#[test]
fn field_checks() {
    let l = limits();
    let one = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = Vec::new();
        f(&mut v);
        decode(&v, &l).map(|m| m.map(|(_, used)| used))
    };
    assert_eq!(
        one(&|o| encode_have(o, PIECES)),
        Err(WireError::PieceOutOfRange { id: 4, index: PIECES, num_pieces: PIECES })
    );
    assert_eq!(
        one(&|o| encode_request(o, PIECES, 0, 1)).map_err(|e| e.to_string()).unwrap_err(),
        "a request message for piece 21 of a torrent with 21 pieces"
    );
    assert!(matches!(one(&|o| encode_cancel(o, u32::MAX, 0, 1)), Err(WireError::PieceOutOfRange { .. })));
    assert!(matches!(one(&|o| encode_piece(o, PIECES, 0, b"x")), Err(WireError::PieceOutOfRange { .. })));
    assert_eq!(
        one(&|o| encode_request(o, 0, 0, 16385)),
        Err(WireError::BadBlockLength { id: 6, length: 16385, max: 16384 })
    );
    assert_eq!(one(&|o| encode_cancel(o, 0, 0, 0)), Err(WireError::BadBlockLength { id: 8, length: 0, max: 16384 }));
    assert_eq!(one(&|o| encode_bitfield(o, &[0, 0, 0x04])), Err(WireError::BitfieldSpareBits));
    assert_eq!(one(&|o| encode_bitfield(o, &[0, 0, 0x08])), Ok(Some(8)));
    assert_eq!(one(&|o| encode_bitfield(o, &[0, 0, 0, 0])), Err(WireError::WrongLength { id: 5, len: 5, expected: 4 }));
}

#[test]
fn handshake_round_trip_and_early_rejection() {
    let mut h = Handshake::new([7; 20], *b"-TB0001-abcdefghijkl");
    h.reserved[5] = 0x10;
    h.reserved[7] = 0x05;
    let mut bytes = Vec::new();
    h.encode(&mut bytes);
    assert_eq!(bytes.len(), HANDSHAKE_LEN);
    assert_eq!(&bytes[..20], b"\x13BitTorrent protocol");
    for cut in 0..HANDSHAKE_LEN {
        assert_eq!(Handshake::decode(&bytes[..cut]), Ok(None), "cut at {cut}");
    }
    bytes.extend_from_slice(b"trailing message bytes");
    let back = Handshake::decode(&bytes).unwrap().unwrap();
    assert_eq!(back, h);
    assert!(back.supports_extensions() && back.supports_fast() && back.supports_dht());
    assert!(!Handshake::new([0; 20], [0; 20]).supports_fast());

    assert_eq!(Handshake::decode(b"GET / HTTP/1.1\r\n"), Err(WireError::BadHandshake));
    assert_eq!(Handshake::decode(b"\x13BitTorrent"), Ok(None));
    assert_eq!(Handshake::decode(b"\x13BitTorrenx"), Err(WireError::BadHandshake));
    let mut wrong = bytes.clone();
    wrong[19] = b'L';
    assert_eq!(Handshake::decode(&wrong), Err(WireError::BadHandshake));
}

#[test]
fn our_handshake_claims_extensions_and_fast_and_says_reqq() {
    let ours = Handshake::ours([1; 20], [2; 20]);
    assert!(ours.supports_extensions() && ours.supports_fast() && !ours.supports_dht());
    let mut out = Vec::new();
    encode_extended_handshake(&mut out, 1024, "toybt 0.1.0");
    let (msg, n) = decode(&out, &Limits::new(10)).unwrap().unwrap();
    assert_eq!(n, out.len());
    let Message::Extended { ext_id, payload } = msg else { panic!("{msg:?}") };
    assert_eq!(ext_id, 0, "extended message 0 is the handshake");
    let dict = crate::bencode::decode(payload).unwrap();
    assert_eq!(dict.get("reqq").and_then(|v| v.as_int()), Some(1024));
    assert_eq!(dict.get("v").and_then(|v| v.as_str()), Some("toybt 0.1.0"));
    assert!(dict.get("m").is_some_and(|m| m.is_dict()), "an empty `m`: no extension messages offered");
    assert_eq!(payload, b"d1:mde4:reqqi1024e1:v11:toybt 0.1.0e");
}

#[test]
fn max_frame_len_covers_big_bitfields() {
    assert_eq!(Limits::new(10).max_frame_len(), 4 + 1 + DEFAULT_MAX_UNKNOWN_LEN as usize);
    let huge = Limits::new(8_000_000);
    assert_eq!(huge.max_frame_len(), 4 + 1 + 1_000_000);
    let mut msg = Vec::new();
    encode_bitfield(&mut msg, &vec![0xFF; 1_000_000]);
    assert!(
        matches!(decode(&msg, &huge), Ok(Some((Message::Bitfield(b), n))) if b.len() == 1_000_000 && n == msg.len())
    );
}

/// Never panics and never claims more bytes than it was given, on random bytes and on valid streams with random
/// byte flips, truncations and insertions.
#[test]
fn never_panics_on_hostile_input() {
    let data = block();
    let valid = encode_all(&samples(&data));
    let mut rng = XorShift(42);
    let small = Limits { num_pieces: rng.below(100) as u32, max_block_len: 64, max_unknown_len: 32 };
    for round in 0..4000 {
        let mut input: Vec<u8> = if round % 2 == 0 {
            (0..rng.below(300)).map(|_| rng.next() as u8).collect()
        } else {
            rng.mutated(&valid, 8, |r| r.next() as u8)
        };
        // Small values in length fields reach the interesting branches far more often than random u32s.
        if round % 3 == 0 && input.len() >= 5 {
            input[..4].copy_from_slice(&(rng.below(40) as u32).to_be_bytes());
            input[4] = rng.below(22) as u8;
        }
        for l in [limits(), small] {
            let mut at = 0;
            while let Ok(Some((msg, used))) = decode(&input[at..], &l) {
                assert!(used >= 4 && at + used <= input.len());
                let mut again = Vec::new();
                msg.encode(&mut again);
                assert_eq!(again, input[at..at + used], "re-encoding gives the bytes back");
                at += used;
            }
        }
        let _ = Handshake::decode(&input);
    }
}

/// BEP 5 `port`: exactly two bytes of port after the id (a length prefix of 3); any other length is a protocol
/// error, judged from the prefix before the body arrives.
#[test]
fn a_port_message_is_exactly_three_bytes_long() {
    let l = limits();
    assert_eq!(decode(&[0, 0, 0, 3, 9, 0x1A, 0xE1], &l), Ok(Some((Message::Port(6881), 7))));
    assert_eq!(decode(&[0, 0, 0, 3, 9, 0x1A], &l), Ok(None), "the body is not all here yet");
    assert_eq!(decode(&[0, 0, 0, 3, 9, 0, 0, 0, 0, 0, 1], &l), Ok(Some((Message::Port(0), 7))), "the rest waits");
    for bad in [&[0u8, 0, 0, 2, 9, 0x1A][..], &[0, 0, 0, 4, 9, 0x1A, 0xE1, 0], &[0, 0, 0, 4, 9], &[0, 0, 0, 1, 9]] {
        assert!(
            matches!(decode(bad, &l), Err(WireError::WrongLength { id: 9, expected: 3, .. })),
            "{bad:?} must be refused"
        );
    }
}

#[test]
fn the_dht_bit_is_the_last_bit_of_the_reserved_bytes() {
    let mut h = Handshake::new([1; 20], [2; 20]);
    assert!(!h.supports_dht());
    h.reserved[7] = 0x01;
    assert!(h.supports_dht() && !h.supports_fast());
    h.reserved[7] = 0xFE;
    assert!(!h.supports_dht());
}
