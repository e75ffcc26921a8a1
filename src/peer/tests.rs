//! The peer machine alone: byte slices in, bytes and events out, on a virtual clock. No session, no socket.

use super::*;
use extension::ExtHandshake;

const HASH: [u8; 20] = [0xAB; 20];
const US: [u8; 20] = [1; 20];
const THEM: [u8; 20] = [2; 20];

/// Ten pieces of 32 KiB, the last one 10,000 bytes.
fn torrent() -> Torrent {
    Torrent {
        info_hash: HASH,
        our_id: US,
        piece_length: 32768,
        total_length: 9 * 32768 + 10_000,
        piece_count: 10,
        ext: ExtOffer { metadata_size: Some(20_000), pex: true, port: Some(6881), dht_port: None },
    }
}

fn addr() -> SocketAddr {
    "127.0.0.1:6881".parse().unwrap()
}

fn handshake(info_hash: [u8; 20], extensions: bool) -> Vec<u8> {
    let mut h = Handshake::new(info_hash, THEM);
    if extensions {
        h.reserved[5] |= 0x10;
    }
    encode_handshake(h)
}

fn fast_handshake() -> Vec<u8> {
    let mut h = Handshake::new(HASH, THEM);
    h.reserved[7] |= 0x04;
    encode_handshake(h)
}

fn encode_handshake(h: Handshake) -> Vec<u8> {
    let mut out = Vec::new();
    h.encode(&mut out);
    out
}

/// Feeds `input` to the peer whole, message by message, as the session does; returns every event.
fn feed(p: &mut Peer, now: Instant, input: &[u8]) -> Result<Vec<Event>, String> {
    let mut used = 0;
    let mut events = Vec::new();
    loop {
        let n = p.handle_bytes(now, &input[used..])?;
        while let Some(e) = p.poll_event() {
            events.push(e);
        }
        if n == 0 {
            return Ok(events);
        }
        used += n;
    }
}

fn output(p: &mut Peer, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    p.poll_transmit(now, &mut out);
    out
}

/// A connection past its handshake, accepted by the session, our handshake already taken.
fn active(now: Instant) -> Peer {
    let mut p = Peer::new(now, &torrent(), addr(), true, 7);
    let events = feed(&mut p, now, &handshake(HASH, false)).unwrap();
    assert_eq!(events, vec![Event::Handshake { peer_id: THEM }]);
    p.accept(now, &Bitfield::new(10));
    output(&mut p, now);
    p
}

fn msg(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

#[test]
fn an_outgoing_connection_sends_its_handshake_first_and_an_incoming_one_answers() {
    let t0 = Instant::now();
    let mut out = Peer::new(t0, &torrent(), addr(), true, 1);
    let sent = output(&mut out, t0);
    assert_eq!(Handshake::decode(&sent).unwrap(), Some(Handshake::ours(HASH, US)));

    let mut inc = Peer::new(t0, &torrent(), addr(), false, 2);
    assert!(output(&mut inc, t0).is_empty(), "an incoming connection waits for the peer");
    let hs = handshake(HASH, true);
    // Split anywhere, the handshake is taken only once whole.
    assert_eq!(inc.handle_bytes(t0, &hs[..67]), Ok(0));
    assert_eq!(feed(&mut inc, t0, &hs).unwrap(), vec![Event::Handshake { peer_id: THEM }]);
    assert_eq!(Handshake::decode(&output(&mut inc, t0)).unwrap(), Some(Handshake::ours(HASH, US)));
    assert!(!inc.is_active(), "not before the session accepts it");
    assert_eq!(inc.handle_bytes(t0, &msg(|o| wire::encode_have(o, 1))), Ok(0), "nothing is read until then");
    let mut have = Bitfield::new(10);
    have.set(3);
    inc.accept(t0, &have);
    assert!(inc.is_active());
    let after = output(&mut inc, t0);
    let (first, n) = wire::decode(&after, &Limits::new(10)).unwrap().unwrap();
    assert_eq!(first, Message::Bitfield(have.as_wire()));
    let (second, _) = wire::decode(&after[n..], &Limits::new(10)).unwrap().unwrap();
    assert!(matches!(second, Message::Extended { ext_id: 0, .. }), "extended handshake after it");
}

#[test]
fn a_handshake_for_another_torrent_or_garbage_closes() {
    let t0 = Instant::now();
    let mut p = Peer::new(t0, &torrent(), addr(), false, 1);
    assert!(p.handle_bytes(t0, &handshake([9; 20], false)).unwrap_err().contains("another torrent"));
    let mut p = Peer::new(t0, &torrent(), addr(), false, 1);
    assert!(p.handle_bytes(t0, b"GET / HTTP/1.1\r\n").unwrap_err().contains("bad handshake"));
}

#[test]
fn nothing_is_said_to_a_peer_when_we_have_nothing() {
    let t0 = Instant::now();
    let mut p = Peer::new(t0, &torrent(), addr(), false, 1);
    feed(&mut p, t0, &handshake(HASH, false)).unwrap();
    p.accept(t0, &Bitfield::new(10));
    assert_eq!(output(&mut p, t0).len(), wire::HANDSHAKE_LEN, "our handshake only: no empty bitfield, no BEP 10");
}

#[test]
fn each_message_changes_state_and_reports_what_the_session_needs() {
    let t0 = Instant::now();
    let mut p = active(t0);
    let all = Bitfield::full(10);
    let cases: Vec<(Vec<u8>, Vec<Event>)> = vec![
        (msg(|o| wire::encode_bare(o, wire::id::INTERESTED)), vec![Event::Interested]),
        (msg(|o| wire::encode_bare(o, wire::id::UNCHOKE)), vec![Event::Unchoked]),
        (msg(|o| wire::encode_have(o, 4)), vec![Event::Have(4)]),
        (msg(wire::encode_keep_alive), vec![]),
        (msg(|o| wire::encode_port(o, 6881)), vec![]),
        (msg(|o| wire::encode_other(o, 99, b"whatever")), vec![]),
        (
            msg(|o| wire::encode_bitfield(o, all.as_wire())),
            vec![Event::LateBitfield((0..10).filter(|&i| i != 4).collect())],
        ),
        (
            msg(|o| wire::encode_request(o, 9, 0, 10_000)),
            vec![Event::Request(Block { index: 9, begin: 0, length: 10_000 })],
        ),
        (msg(|o| wire::encode_bare(o, wire::id::NOT_INTERESTED)), vec![Event::NotInterested { held_slot: false }]),
        (msg(|o| wire::encode_bare(o, wire::id::CHOKE)), vec![Event::Choked { void_requests: true }]),
    ];
    for (input, want) in cases {
        assert_eq!(feed(&mut p, t0, &input).unwrap(), want, "{input:?}");
    }
    assert!(p.pieces().all());
    assert!(p.is_choking_us());
    assert!(!p.is_interested());
}

#[test]
fn a_first_bitfield_replaces_and_a_bad_one_closes() {
    let t0 = Instant::now();
    let mut p = active(t0);
    assert_eq!(feed(&mut p, t0, &msg(|o| wire::encode_bitfield(o, &[0b1000_0000, 0]))).unwrap(), vec![Event::Bitfield]);
    assert_eq!(p.pieces().iter_ones().collect::<Vec<_>>(), vec![0]);
    let mut q = active(t0);
    assert!(feed(&mut q, t0, &msg(|o| wire::encode_bitfield(o, &[0, 0b0000_0001]))).is_err(), "spare bits set");
}

#[test]
fn a_request_past_the_end_of_its_piece_closes() {
    let t0 = Instant::now();
    let mut p = active(t0);
    let last = msg(|o| wire::encode_request(o, 9, 0, 10_001));
    assert!(feed(&mut p, t0, &last).unwrap_err().contains("past the end"));
    let mut p = active(t0);
    assert!(feed(&mut p, t0, &msg(|o| wire::encode_request(o, 0, 32768 - 100, 16384))).is_err());
}

#[test]
fn a_block_is_reported_where_it_lies_in_the_input_only_if_we_asked_for_it() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(30);
    let mut p = active(t0);
    let asked = Block { index: 2, begin: 16384, length: 16384 };
    p.send_request(t0, asked);
    let request = output(&mut p, t0);
    assert_eq!(request, msg(|o| wire::encode_request(o, 2, 16384, 16384)));
    let data = vec![0x5A; 16384];
    let unasked = msg(|o| wire::encode_piece(o, 2, 0, &data));
    assert_eq!(feed(&mut p, t1, &unasked).unwrap(), vec![], "a block we did not ask for is dropped");
    let piece = msg(|o| wire::encode_piece(o, 2, 16384, &data));
    let events = feed(&mut p, t1, &piece).unwrap();
    let [Event::Block { block, data: range, requested_at }] = &events[..] else { panic!("{events:?}") };
    assert_eq!((*block, *requested_at), (asked, t0));
    assert_eq!(range.clone(), wire::PIECE_HEADER_LEN..wire::PIECE_HEADER_LEN + 16384);
    assert_eq!(&piece[range.clone()], &data[..]);
    assert_eq!(p.requests_out(), 0);
    assert_eq!(feed(&mut p, t1, &piece).unwrap(), vec![], "the same block twice counts once");
}

#[test]
fn a_choke_with_requests_in_flight_voids_them_and_our_choke_drops_theirs() {
    let t0 = Instant::now();
    let mut p = active(t0);
    for begin in [0, 16384] {
        p.send_request(t0, Block { index: 1, begin, length: 16384 });
    }
    output(&mut p, t0);
    assert_eq!(
        feed(&mut p, t0, &msg(|o| wire::encode_bare(o, wire::id::CHOKE))).unwrap(),
        vec![Event::Choked { void_requests: true }]
    );
    assert_eq!(p.requests_out(), 0, "BEP 3: a choke voids every request");
    let late = msg(|o| wire::encode_piece(o, 1, 0, &[1; 16384]));
    assert_eq!(feed(&mut p, t0, &late).unwrap(), vec![], "a block after the choke is no longer ours");

    // Our side: requests queued while unchoked are dropped by our choke, and refused while choked.
    let b = Block { index: 1, begin: 0, length: 16384 };
    assert!(!p.queue_request(b), "requests while choked are dropped");
    p.unchoke();
    assert!(p.queue_request(b));
    assert_eq!(p.next_upload(), Some(b));
    p.choke();
    assert_eq!(p.next_upload(), None);
    assert_eq!(output(&mut p, t0), [0, 0, 0, 1, 1, 0, 0, 0, 1, 0]);
}

#[test]
fn a_cancel_takes_a_queued_request_back_and_our_cancel_is_sent_once() {
    let t0 = Instant::now();
    let mut p = active(t0);
    p.unchoke();
    let a = Block { index: 0, begin: 0, length: 16384 };
    let b = Block { index: 0, begin: 16384, length: 16384 };
    p.queue_request(a);
    p.queue_request(b);
    feed(&mut p, t0, &msg(|o| wire::encode_cancel(o, 0, 0, 16384))).unwrap();
    assert_eq!(p.next_upload(), Some(b));
    output(&mut p, t0);
    p.send_request(t0, a);
    p.cancel_request(a);
    p.cancel_request(a);
    let out = output(&mut p, t0);
    assert_eq!(
        out,
        msg(|o| {
            wire::encode_request(o, 0, 0, 16384);
            wire::encode_cancel(o, 0, 0, 16384);
        })
    );
}

#[test]
fn request_queue_is_bounded() {
    let t0 = Instant::now();
    let mut p = active(t0);
    p.unchoke();
    for i in 0..MAX_QUEUED_REQUESTS as u32 {
        assert!(p.queue_request(Block { index: 0, begin: i * 16384, length: 16384 }));
    }
    assert!(!p.queue_request(Block { index: 1, begin: 0, length: 16384 }));
}

#[test]
fn output_moves_without_copy_when_the_socket_buffer_is_empty() {
    let t0 = Instant::now();
    let mut p = active(t0);
    p.send_have(1);
    let ptr = p.out.as_ptr();
    let mut sock = Vec::new();
    p.poll_transmit(t0, &mut sock);
    assert_eq!(sock.as_ptr(), ptr);
    p.send_have(2);
    p.poll_transmit(t0, &mut sock);
    assert_eq!(
        sock,
        msg(|o| {
            wire::encode_have(o, 1);
            wire::encode_have(o, 2);
        })
    );
    assert!(!p.has_output());
}

#[test]
fn no_handshake_in_time_closes() {
    let t0 = Instant::now();
    let mut p = Peer::new(t0, &torrent(), addr(), false, 1);
    assert_eq!(p.poll_timeout(), Some(t0), "the first rate sample is due at once");
    assert_eq!(p.handle_timeout(t0 + HANDSHAKE_TIMEOUT - Duration::from_millis(1)), Ok(()), "early: nothing");
    assert_eq!(p.handle_timeout(t0 + HANDSHAKE_TIMEOUT), Err("no handshake in time"));
}

#[test]
fn silence_leads_to_keepalive_then_timeout() {
    let t0 = Instant::now();
    let mut p = active(t0);
    assert!(p.poll_timeout().unwrap() <= t0 + KEEPALIVE_AFTER);
    p.handle_timeout(t0 + KEEPALIVE_AFTER).unwrap();
    assert_eq!(output(&mut p, t0 + KEEPALIVE_AFTER), [0, 0, 0, 0]);
    let later = t0 + KEEPALIVE_AFTER + Duration::from_secs(1);
    assert_eq!(p.poll_timeout(), Some(later), "next: the rate sample; the keep-alive waits another 110 s");
    assert_eq!(p.handle_timeout(t0 + IDLE_TIMEOUT - Duration::from_secs(1)), Ok(()));
    assert_eq!(p.handle_timeout(t0 + IDLE_TIMEOUT), Err("idle for too long"));
    // Anything from the peer, even a keep-alive, resets the clock.
    let mut q = active(t0);
    feed(&mut q, t0 + Duration::from_secs(200), &[0, 0, 0, 0]).unwrap();
    assert_eq!(q.handle_timeout(t0 + IDLE_TIMEOUT), Ok(()));
}

#[test]
fn depth_grows_with_rate_and_a_snubbing_peer_gets_one_request() {
    let t0 = Instant::now();
    let mut p = active(t0);
    assert_eq!(p.request_depth(t0), 8);
    p.handle_timeout(t0).unwrap();
    p.block_accepted(t0 + Duration::from_millis(1), 100 << 20, t0);
    p.block_accepted(t0 + Duration::from_millis(1), 100 << 20, t0);
    p.handle_timeout(t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(p.request_depth(t0), 250, "a 100 MiB/s peer gets the full window");
    let snub_from = t0 + Duration::from_millis(1);
    p.send_request(snub_from, Block { index: 0, begin: 0, length: 16384 });
    assert_eq!(p.request_depth(snub_from + SNUB_AFTER), 1, "a peer that stopped delivering gets one request at a time");
}

/// A Fast connection past its handshake, accepted with `have`, everything sent so far taken.
fn fast_active(now: Instant, have: &Bitfield) -> Peer {
    let mut p = Peer::new(now, &torrent(), addr(), false, 7);
    feed(&mut p, now, &fast_handshake()).unwrap();
    p.accept(now, have);
    output(&mut p, now);
    p
}

#[test]
fn we_offer_fast_and_say_have_all_or_have_none_to_a_fast_peer() {
    let t0 = Instant::now();
    let ours = Handshake::decode(&output(&mut Peer::new(t0, &torrent(), addr(), true, 1), t0)).unwrap().unwrap();
    assert!(ours.supports_fast() && ours.supports_extensions());
    for (have, first) in [
        (Bitfield::full(10), msg(|o| wire::encode_bare(o, wire::id::HAVE_ALL))),
        (Bitfield::new(10), msg(|o| wire::encode_bare(o, wire::id::HAVE_NONE))),
    ] {
        let mut p = Peer::new(t0, &torrent(), addr(), false, 1);
        feed(&mut p, t0, &fast_handshake()).unwrap();
        p.accept(t0, &have);
        assert!(p.is_fast());
        assert_eq!(output(&mut p, t0)[wire::HANDSHAKE_LEN..], first[..]);
    }
}

#[test]
fn have_all_and_have_none_stand_for_the_bitfield_and_only_first() {
    let t0 = Instant::now();
    let mut p = fast_active(t0, &Bitfield::new(10));
    assert_eq!(feed(&mut p, t0, &msg(|o| wire::encode_bare(o, wire::id::HAVE_ALL))).unwrap(), vec![Event::Bitfield]);
    assert!(p.pieces().all());
    let mut p = fast_active(t0, &Bitfield::new(10));
    assert_eq!(feed(&mut p, t0, &msg(|o| wire::encode_bare(o, wire::id::HAVE_NONE))).unwrap(), vec![Event::Bitfield]);
    assert!(p.pieces().none());
    let mut p = fast_active(t0, &Bitfield::new(10));
    feed(&mut p, t0, &msg(|o| wire::encode_bitfield(o, &[0x80, 0]))).unwrap();
    let late = feed(&mut p, t0, &msg(|o| wire::encode_bare(o, wire::id::HAVE_ALL)));
    assert!(late.unwrap_err().contains("after other messages"), "have all after a bitfield closes");
}

#[test]
fn fast_messages_from_a_peer_that_did_not_negotiate_fast_close() {
    let t0 = Instant::now();
    let messages = [
        msg(|o| wire::encode_bare(o, wire::id::HAVE_ALL)),
        msg(|o| wire::encode_bare(o, wire::id::HAVE_NONE)),
        msg(|o| wire::encode_reject(o, 0, 0, 16384)),
        msg(|o| wire::encode_index(o, wire::id::ALLOWED_FAST, 1)),
        msg(|o| wire::encode_index(o, wire::id::SUGGEST, 1)),
    ];
    for m in messages {
        let mut p = active(t0);
        assert!(feed(&mut p, t0, &m).unwrap_err().contains("without the fast extension"), "{m:?}");
    }
}

#[test]
fn a_fast_choke_keeps_our_requests_and_a_reject_frees_one() {
    let t0 = Instant::now();
    let mut p = fast_active(t0, &Bitfield::new(10));
    let a = Block { index: 1, begin: 0, length: 16384 };
    let b = Block { index: 1, begin: 16384, length: 16384 };
    p.send_request(t0, a);
    p.send_request(t0, b);
    let choke = msg(|o| wire::encode_bare(o, wire::id::CHOKE));
    assert_eq!(feed(&mut p, t0, &choke).unwrap(), vec![Event::Choked { void_requests: false }]);
    assert_eq!(p.requests_out(), 2, "with Fast a choke does not void requests");
    let reject = msg(|o| wire::encode_reject(o, 1, 0, 16384));
    assert_eq!(feed(&mut p, t0, &reject).unwrap(), vec![Event::Rejected(a)]);
    assert_eq!(feed(&mut p, t0, &reject).unwrap(), vec![], "a reject for a request we no longer have is ignored");
    let data = [7u8; 16384];
    let events = feed(&mut p, t0, &msg(|o| wire::encode_piece(o, 1, 16384, &data))).unwrap();
    assert!(matches!(events[..], [Event::Block { block, .. }] if block == b), "still delivered after the choke");
    // Out of range is malformed, whatever the extension.
    assert!(feed(&mut p, t0, &msg(|o| wire::encode_index(o, wire::id::ALLOWED_FAST, 10))).is_err());
}

#[test]
fn a_peer_that_only_rejects_is_asked_one_block_at_a_time() {
    let t0 = Instant::now();
    let mut p = fast_active(t0, &Bitfield::new(10));
    assert_eq!(p.request_depth(t0), 8);
    for begin in [0, 16384] {
        let b = Block { index: 2, begin, length: 16384 };
        p.send_request(t0, b);
        feed(&mut p, t0, &msg(|o| wire::encode_reject(o, 2, begin, 16384))).unwrap();
    }
    assert_eq!(p.request_depth(t0), 1);
    p.block_accepted(t0, 16384, t0);
    assert_eq!(p.request_depth(t0), 8, "a delivered block restores the depth");
}

#[test]
fn requests_we_will_not_serve_are_rejected_to_a_fast_peer() {
    let t0 = Instant::now();
    let mut p = fast_active(t0, &Bitfield::full(10));
    let a = Block { index: 3, begin: 0, length: 16384 };
    let b = Block { index: 4, begin: 0, length: 16384 };
    // Choked: rejected, unless the piece is in its allowed-fast set.
    assert!(!p.queue_request(a));
    assert_eq!(output(&mut p, t0), msg(|o| wire::encode_reject(o, 3, 0, 16384)));
    p.send_allowed_fast(&[4]);
    assert_eq!(output(&mut p, t0), msg(|o| wire::encode_index(o, wire::id::ALLOWED_FAST, 4)));
    assert!(p.queue_request(b), "allowed fast: served while choked");
    // Unchoked, then choked with requests queued: the choke, then a reject for each but the allowed-fast one.
    p.unchoke();
    assert!(p.queue_request(a));
    output(&mut p, t0);
    p.choke();
    let out = output(&mut p, t0);
    assert_eq!(
        out,
        msg(|o| {
            wire::encode_bare(o, wire::id::CHOKE);
            wire::encode_reject(o, 3, 0, 16384);
        })
    );
    assert_eq!(p.next_upload(), Some(b));
    // A block we cannot read is rejected rather than dropped in silence.
    p.upload_done(t0, None);
    assert_eq!(output(&mut p, t0), msg(|o| wire::encode_reject(o, 4, 0, 16384)));
    p.reject_request(a);
    assert_eq!(output(&mut p, t0), msg(|o| wire::encode_reject(o, 3, 0, 16384)));
}

/// An extended connection (BEP 10 bit on both sides), accepted, our output taken.
fn extended_active(now: Instant, t: &Torrent) -> (Peer, Vec<u8>) {
    let mut p = Peer::new(now, t, addr(), false, 7);
    feed(&mut p, now, &handshake(HASH, true)).unwrap();
    p.accept(now, &Bitfield::new(10));
    let out = output(&mut p, now);
    (p, out)
}

fn their_ext_handshake(m: &[(&str, u8)], reqq: Option<u32>, metadata_size: Option<i64>) -> Vec<u8> {
    let hs = ExtHandshake {
        m: m.iter().map(|&(n, id)| (n.to_string(), id)).collect(),
        reqq,
        metadata_size,
        p: Some(51413),
        ..ExtHandshake::default()
    };
    let mut out = Vec::new();
    hs.encode(&mut out);
    out
}

#[test]
fn our_extended_handshake_offers_metadata_pex_and_our_queue() {
    let t0 = Instant::now();
    let (_, out) = extended_active(t0, &torrent());
    let (msg, _) = wire::decode(&out[wire::HANDSHAKE_LEN..], &Limits::new(10)).unwrap().unwrap();
    let Message::Extended { ext_id: 0, payload } = msg else { panic!("{msg:?}") };
    let hs = ExtHandshake::decode(payload).unwrap();
    assert_eq!(hs.id_of("ut_metadata"), Some(extension::UT_METADATA));
    assert_eq!(hs.id_of("ut_pex"), Some(extension::UT_PEX));
    assert_eq!((hs.metadata_size, hs.reqq, hs.p), (Some(20_000), Some(MAX_QUEUED_REQUESTS as u32), Some(6881)));
    assert_eq!(hs.yourip, Some(addr().ip()));
    // A private torrent offers no PEX (BEP 27).
    let private = Torrent { ext: ExtOffer { pex: false, ..torrent().ext }, ..torrent() };
    let (_, out) = extended_active(t0, &private);
    let (msg, _) = wire::decode(&out[wire::HANDSHAKE_LEN..], &Limits::new(10)).unwrap().unwrap();
    let Message::Extended { payload, .. } = msg else { panic!("{msg:?}") };
    assert_eq!(ExtHandshake::decode(payload).unwrap().id_of("ut_pex"), None);
}

#[test]
fn the_peers_extended_handshake_sets_its_ids_and_caps_our_requests() {
    let t0 = Instant::now();
    let (mut p, _) = extended_active(t0, &torrent());
    assert!(!p.speaks(Extension::Metadata));
    let theirs = their_ext_handshake(&[("ut_metadata", 3), ("ut_pex", 9)], Some(2), Some(30_000));
    assert_eq!(feed(&mut p, t0, &theirs).unwrap(), vec![Event::MetadataSize(30_000)]);
    assert!(p.speaks(Extension::Metadata) && p.speaks(Extension::Pex));
    assert_eq!(p.listen_port(), Some(51413));
    assert_eq!(p.request_depth(t0), 2, "never more requests than the peer queues");
    // Messages go out with the ids the peer chose.
    assert!(p.send_extension(Extension::Pex, |id, out| out.push(id)));
    assert_eq!(output(&mut p, t0), [9]);
    // ut_metadata id 0 turns it off again (BEP 10); the size then means nothing.
    let off = their_ext_handshake(&[("ut_metadata", 0)], None, Some(30_000));
    assert_eq!(feed(&mut p, t0, &off).unwrap(), vec![]);
    assert!(!p.send_extension(Extension::Metadata, |_, _| panic!("not spoken")));
}

#[test]
fn metadata_and_pex_messages_become_events_and_junk_is_skipped() {
    let t0 = Instant::now();
    let (mut p, _) = extended_active(t0, &torrent());
    let request = msg(|o| metadata::MetadataMsg::Request { piece: 1 }.encode(extension::UT_METADATA, o));
    assert_eq!(feed(&mut p, t0, &request).unwrap(), vec![Event::Metadata(MetadataEvent::Request(1))]);
    let data = vec![5u8; 100];
    let piece = msg(|o| {
        metadata::MetadataMsg::Data { piece: 0, total_size: 100, data: &data }.encode(extension::UT_METADATA, o)
    });
    let want = Event::Metadata(MetadataEvent::Data { piece: 0, total_size: 100, data: data.clone() });
    assert_eq!(feed(&mut p, t0, &piece).unwrap(), vec![want]);
    let added: SocketAddr = "10.1.2.3:6881".parse().unwrap();
    let pex = Pex { added: vec![(added, pex::flags::SEED)], dropped: vec![] };
    let events = feed(&mut p, t0, &msg(|o| pex.encode(extension::UT_PEX, o))).unwrap();
    assert_eq!(events, vec![Event::Pex(pex)]);
    // Unreadable extension messages and unknown extensions are skipped, not fatal.
    for junk in
        [msg(|o| wire::encode_extended(o, extension::UT_METADATA, b"xx")), msg(|o| wire::encode_extended(o, 77, b"?"))]
    {
        assert_eq!(feed(&mut p, t0, &junk).unwrap(), vec![]);
    }
    // A broken extended handshake is.
    assert!(feed(&mut p, t0, &msg(|o| wire::encode_extended(o, 0, b"not bencode"))).is_err());
}

#[test]
fn extended_messages_from_a_peer_without_bep_10_close() {
    let t0 = Instant::now();
    let mut p = active(t0);
    let theirs = their_ext_handshake(&[("ut_pex", 1)], None, None);
    assert!(feed(&mut p, t0, &theirs).unwrap_err().contains("extension protocol"));
}

#[test]
fn before_the_metadata_any_index_is_taken_by_the_codec_and_a_request_is_refused() {
    let t0 = Instant::now();
    let unknown = Torrent { piece_length: 0, total_length: 0, piece_count: 0, ..torrent() };
    let mut p = Peer::new(t0, &unknown, addr(), false, 1);
    feed(&mut p, t0, &handshake(HASH, false)).unwrap();
    p.accept(t0, &Bitfield::new(0));
    assert_eq!(feed(&mut p, t0, &msg(|o| wire::encode_have(o, u32::MAX))).unwrap(), vec![], "haves are ignored");
    let ask = msg(|o| wire::encode_request(o, u32::MAX, 0, 16384));
    assert!(feed(&mut p, t0, &ask).unwrap_err().contains("past the end"));
}

/// The torrent as seen by a session that uses the DHT, with its node on UDP port 7777.
fn dht_torrent() -> Torrent {
    Torrent { ext: ExtOffer { dht_port: Some(7777), ..torrent().ext }, ..torrent() }
}

fn dht_handshake() -> Vec<u8> {
    let mut h = Handshake::new(HASH, THEM);
    h.reserved[7] |= 0x01;
    encode_handshake(h)
}

/// Every message in `out`, decoded.
fn messages(out: &[u8]) -> Vec<Message<'_>> {
    let mut at = 0;
    let mut all = Vec::new();
    while let Some((m, n)) = wire::decode(&out[at..], &Limits::new(10)).unwrap() {
        all.push(m);
        at += n;
    }
    all
}

#[test]
fn with_the_dht_our_handshake_sets_its_bit_and_a_dht_peer_hears_our_port_after_the_bitfield() {
    let t0 = Instant::now();
    let mut p = Peer::new(t0, &dht_torrent(), addr(), true, 1);
    let sent = Handshake::decode(&output(&mut p, t0)).unwrap().unwrap();
    assert!(sent.supports_dht() && sent.supports_fast() && sent.supports_extensions());
    assert_eq!(feed(&mut p, t0, &dht_handshake()).unwrap(), vec![Event::Handshake { peer_id: THEM }]);
    let mut have = Bitfield::new(10);
    have.set(1);
    p.accept(t0, &have);
    let out = output(&mut p, t0);
    assert_eq!(messages(&out), vec![Message::Bitfield(have.as_wire()), Message::Port(7777)]);
}

#[test]
fn no_port_message_unless_both_sides_set_the_dht_bit() {
    let t0 = Instant::now();
    // The peer does not set it.
    let mut p = Peer::new(t0, &dht_torrent(), addr(), false, 1);
    feed(&mut p, t0, &handshake(HASH, false)).unwrap();
    p.accept(t0, &Bitfield::full(10));
    let out = output(&mut p, t0);
    assert!(Handshake::decode(&out).unwrap().unwrap().supports_dht());
    assert_eq!(messages(&out[wire::HANDSHAKE_LEN..]), vec![Message::Bitfield(Bitfield::full(10).as_wire())]);
    // We do not use the DHT (a private torrent, or --no-dht).
    let mut p = Peer::new(t0, &torrent(), addr(), false, 1);
    feed(&mut p, t0, &dht_handshake()).unwrap();
    p.accept(t0, &Bitfield::full(10));
    let out = output(&mut p, t0);
    assert!(!Handshake::decode(&out).unwrap().unwrap().supports_dht());
    assert!(!messages(&out[wire::HANDSHAKE_LEN..]).iter().any(|m| matches!(m, Message::Port(_))));
}

#[test]
fn a_port_message_becomes_an_event_only_when_we_use_the_dht() {
    let t0 = Instant::now();
    let port = |n: u16| msg(|o| wire::encode_port(o, n));
    let mut p = Peer::new(t0, &dht_torrent(), addr(), true, 1);
    feed(&mut p, t0, &dht_handshake()).unwrap();
    p.accept(t0, &Bitfield::new(10));
    assert_eq!(feed(&mut p, t0, &port(6882)).unwrap(), vec![Event::DhtPort(6882)]);
    assert_eq!(feed(&mut p, t0, &port(0)).unwrap(), vec![], "port 0 is no node");
    // It does not count as the first message: a bitfield is still legal after it.
    let mut p = Peer::new(t0, &dht_torrent(), addr(), true, 1);
    feed(&mut p, t0, &dht_handshake()).unwrap();
    p.accept(t0, &Bitfield::new(10));
    let mut both = port(6883);
    wire::encode_bitfield(&mut both, Bitfield::full(10).as_wire());
    assert_eq!(feed(&mut p, t0, &both).unwrap(), vec![Event::DhtPort(6883), Event::Bitfield]);
    // Without a DHT of ours, it is ignored.
    let mut p = active(t0);
    assert_eq!(feed(&mut p, t0, &port(6882)).unwrap(), vec![]);
}

#[test]
fn a_port_message_of_the_wrong_length_closes_the_connection() {
    let t0 = Instant::now();
    let mut p = Peer::new(t0, &dht_torrent(), addr(), true, 1);
    feed(&mut p, t0, &dht_handshake()).unwrap();
    p.accept(t0, &Bitfield::new(10));
    assert!(feed(&mut p, t0, &[0, 0, 0, 4, 9, 0x1A, 0xE1, 0]).is_err());
}
