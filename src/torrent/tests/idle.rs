//! An idle session sleeps until what it truly waits for: no tick without peers, dials or rates to settle.

use super::*;

/// A seed with one tracker that answered its first announce (interval 30 min) at the returned time.
fn announced_seed() -> (Node, Metainfo, Instant) {
    let content = data(100_000, 9);
    let mut meta = meta_for(&content, 16 * 1024);
    meta.announce = Some("http://127.0.0.1:6969/announce".into());
    let mut node = seed_node(&meta, &content, 1);
    let now = Instant::now();
    node.t.handle_timeout(now);
    assert!(matches!(node.t.poll_action(), Some(Action::Announce { .. })), "the first announce goes out at once");
    let answer = AnnounceResponse {
        interval: Some(Duration::from_secs(1800)),
        min_interval: None,
        complete: Some(1),
        incomplete: Some(0),
        peers: vec![],
        warning: None,
    };
    node.t.announce_done(now, Ok(answer));
    (node, meta, now)
}

#[test]
fn an_idle_seed_sleeps_until_its_next_announce() {
    let (mut node, _, start) = announced_seed();
    let next_announce = start + Duration::from_secs(1800);
    assert_eq!(node.t.poll_timeout(), Some(next_announce));
    // Waking it anyway (another torrent's deadline) changes nothing: no tick of its own appears.
    for s in [1, 5, 10, 61] {
        node.t.handle_timeout(start + Duration::from_secs(s));
        assert_eq!(node.t.poll_timeout(), Some(next_announce), "after a wake at {s}s");
    }
    assert!(node.t.poll_action().is_none());
}

#[test]
fn a_seed_ticks_while_it_has_a_peer_and_sleeps_again_once_it_left_and_rates_settled() {
    let (node, meta, start) = announced_seed();
    let mut nodes = vec![node, leech_node(&meta, 2)];
    let mut links = Vec::new();
    connect(&mut nodes, &mut links, 1, 0, start);
    let seed_tick = |n: &Node, now: Instant| n.t.poll_timeout().is_some_and(|t| t <= now + TICK);
    assert!(seed_tick(&nodes[0], start), "a peer: the tick is back");
    let done = run(&mut nodes, &mut links, Duration::from_secs(30), |n| n[1].t.is_complete());
    assert!(seed_tick(&nodes[0], done), "still ticking while the peer is connected");
    nodes[0].t.peer_closed(done, 1, "gone");
    // Rates come down to zero first (a few ticks), then the seed has nothing to wake for but its announce.
    let mut now = done;
    for _ in 0..60 {
        now += TICK;
        if nodes[0].t.poll_timeout().is_some_and(|t| t <= now) {
            nodes[0].t.handle_timeout(now);
        }
    }
    assert_eq!(nodes[0].t.snapshot().up_rate, 0);
    assert_eq!(nodes[0].t.poll_timeout(), Some(start + Duration::from_secs(1800)));
}

#[test]
fn an_idle_session_wakes_at_once_for_a_new_address_and_later_for_a_redial() {
    let (mut node, _, start) = announced_seed();
    let far = SocketAddr::from(([127, 0, 0, 1], 9999));
    node.t.add_peer_addrs([far]);
    let at = node.t.poll_timeout().unwrap();
    assert!(at <= start, "a new address is dialled at once, {:?} late", at - start);
    node.t.handle_timeout(start + Duration::from_secs(1));
    assert_eq!(node.t.poll_action(), Some(Action::Connect(far)));
    let failed_at = start + Duration::from_secs(2);
    node.t.connect_failed(failed_at, far, "refused");
    let redial = node.t.poll_timeout().unwrap();
    assert!(redial > failed_at && redial < start + Duration::from_secs(1800), "{:?}", redial - start);
    node.t.handle_timeout(redial);
    assert_eq!(node.t.poll_action(), Some(Action::Connect(far)));
}
