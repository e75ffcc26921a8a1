use super::*;

const OWN: Id = [0; 20];

/// An id sharing exactly `prefix` leading bits with [`OWN`] (all zeros), told apart by `n`.
fn id_at(prefix: usize, n: u8) -> Id {
    let mut id = [0u8; 20];
    id[prefix / 8] |= 0x80 >> (prefix % 8);
    id[19] |= n;
    if prefix >= 152 {
        id[18] |= n;
    }
    id
}

fn contact(id: Id, n: u32) -> Contact {
    Contact { id, addr: SocketAddrV4::new((0x0a00_0000 + n).into(), 6881) }
}

#[test]
fn the_last_bucket_splits_and_far_buckets_fill_to_k() {
    let now = Instant::now();
    let mut t = Table::new(now, OWN);
    for n in 0..20u8 {
        // Nodes in the far half (prefix 0): once it is its own bucket, it holds K.
        let r = t.heard_reply(now, contact(id_at(0, n + 1), u32::from(n)));
        assert!(matches!(r, Insert::Added | Insert::Full { .. }), "{r:?}");
    }
    assert_eq!(t.len(), K);
    for n in 0..20u8 {
        t.heard_reply(now, contact(id_at(3, n + 1), 100 + u32::from(n)));
    }
    assert_eq!(t.len(), 2 * K);
    assert!(t.buckets() >= 4, "buckets split down to prefix 3: {}", t.buckets());
    for n in 0..4u8 {
        assert_eq!(t.heard_reply(now, contact(id_at(100, n + 1), 200 + u32::from(n))), Insert::Added);
    }
    assert_eq!(t.len(), 2 * K + 4);
}

#[test]
fn our_own_id_and_a_known_id_at_another_address_are_refused() {
    let now = Instant::now();
    let mut t = Table::new(now, OWN);
    assert_eq!(t.heard_reply(now, contact(OWN, 1)), Insert::Refused);
    assert_eq!(t.heard_reply(now, contact(id_at(0, 1), 1)), Insert::Added);
    assert_eq!(t.heard_reply(now, contact(id_at(0, 1), 2)), Insert::Refused);
    assert_eq!(t.heard_reply(now, contact(id_at(0, 1), 1)), Insert::Updated);
    // The same address with a new id: the node restarted.
    assert_eq!(t.heard_reply(now, contact(id_at(0, 2), 1)), Insert::Added);
    assert_eq!(t.len(), 1);
    assert_eq!(t.get(contact(OWN, 1).addr).unwrap().contact.id, id_at(0, 2));
}

#[test]
fn nodes_turn_questionable_after_15_minutes_and_bad_after_failures() {
    let now = Instant::now();
    let mut t = Table::new(now, OWN);
    let c = contact(id_at(0, 1), 1);
    t.heard_reply(now, c);
    assert_eq!(t.get(c.addr).unwrap().status(now), Status::Good);
    let later = now + GOOD_FOR;
    assert_eq!(t.get(c.addr).unwrap().status(later), Status::Questionable);
    assert!(t.heard_query(later, c));
    assert_eq!(t.get(c.addr).unwrap().status(later), Status::Good, "a query keeps a node that once answered good");
    assert_eq!(t.to_ping(later), vec![]);
    assert_eq!(t.to_ping(later + GOOD_FOR), vec![c.addr]);
    t.failed(later, c.addr);
    assert_eq!(t.get(c.addr).unwrap().status(later), Status::Questionable);
    t.failed(later, c.addr);
    assert_eq!(t.get(c.addr).unwrap().status(later), Status::Bad);
    assert_eq!(t.len(), 0);
    assert_eq!(t.closest(&OWN, 8), vec![]);
    t.heard_reply(later, c);
    assert_eq!(t.get(c.addr).unwrap().status(later), Status::Good, "an answer clears the failures");
}

#[test]
fn a_full_bucket_keeps_newcomers_as_replacements_for_bad_nodes() {
    let now = Instant::now();
    let mut t = Table::new(now, OWN);
    // Fill the far bucket (after the first split, prefix 0 is not the last bucket).
    t.heard_reply(now, contact(id_at(5, 1), 999));
    for n in 0..K as u8 {
        t.heard_reply(now, contact(id_at(0, n + 1), u32::from(n)));
    }
    while t.buckets() < 2 {
        t.heard_reply(now, contact(id_at(1, 1), 998));
    }
    let newcomer = contact(id_at(0, 100), 100);
    let later = now + GOOD_FOR;
    match t.heard_reply(later, newcomer) {
        Insert::Full { ping: Some(addr) } => assert!(t.get(addr).is_some()),
        other => panic!("{other:?}"),
    }
    assert!(t.get(newcomer.addr).is_none());
    let victim = contact(id_at(0, 3), 2);
    t.failed(later, victim.addr);
    assert!(t.get(newcomer.addr).is_none(), "one failure is not yet bad");
    t.failed(later, victim.addr);
    assert!(t.get(victim.addr).is_none(), "the bad node gave its place");
    assert_eq!(t.get(newcomer.addr).unwrap().status(later), Status::Good);
}

#[test]
fn a_bad_node_is_replaced_directly_by_a_node_that_answers() {
    let now = Instant::now();
    let mut t = Table::new(now, OWN);
    t.heard_reply(now, contact(id_at(5, 1), 999));
    for n in 0..K as u8 {
        t.heard_reply(now, contact(id_at(0, n + 1), u32::from(n)));
    }
    t.heard_reply(now, contact(id_at(1, 1), 998));
    assert!(t.buckets() >= 2);
    let dead = contact(id_at(0, 1), 0);
    t.failed(now, dead.addr);
    t.failed(now, dead.addr);
    assert!(t.has_room_for(now, &id_at(0, 50)));
    assert_eq!(t.heard_reply(now, contact(id_at(0, 50), 50)), Insert::Added);
    assert!(t.get(dead.addr).is_none());
    assert!(!t.has_room_for(now, &id_at(0, 51)));
}

#[test]
fn closest_sorts_by_distance_and_puts_failed_nodes_last() {
    let now = Instant::now();
    let mut t = Table::new(now, OWN);
    for (n, prefix) in [10usize, 3, 7, 1].into_iter().enumerate() {
        t.heard_reply(now, contact(id_at(prefix, 1), n as u32));
    }
    let ids: Vec<Id> = t.closest(&OWN, 3).iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![id_at(10, 1), id_at(7, 1), id_at(3, 1)]);
    t.failed(now, contact(OWN, 0).addr);
    let ids: Vec<Id> = t.closest(&OWN, 4).iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![id_at(7, 1), id_at(3, 1), id_at(1, 1), id_at(10, 1)]);
}

#[test]
fn stale_buckets_give_a_target_in_their_range_once() {
    let now = Instant::now();
    let mut t = Table::new(now, OWN);
    let mut rng = Rng::new(5);
    for n in 0..K as u8 + 1 {
        t.heard_reply(now, contact(id_at(0, n + 1), u32::from(n)));
    }
    t.heard_reply(now, contact(id_at(4, 1), 50));
    assert_eq!(t.stale_target(now, &mut rng), None);
    let later = now + GOOD_FOR;
    let target = t.stale_target(later, &mut rng).unwrap();
    assert_eq!(id::common_prefix_len(&OWN, &target), 0, "the first stale bucket is the far half");
    let mut seen = 1;
    while t.stale_target(later, &mut rng).is_some() {
        seen += 1;
    }
    assert_eq!(seen, t.buckets(), "each bucket once");
}

#[test]
fn a_saved_table_loads_back_and_bad_saves_are_errors_with_context() {
    let now = Instant::now();
    let mut t = Table::new(now, OWN);
    for n in 0..5u8 {
        t.heard_reply(now, contact(id_at(usize::from(n) * 7, 1), u32::from(n)));
    }
    let saved = encode_saved(&OWN, &t.contacts());
    let (id, nodes) = decode_saved(&saved).unwrap();
    assert_eq!((id, nodes.len()), (OWN, 5));
    assert_eq!(nodes, t.contacts());
    assert!(decode_saved(b"").unwrap_err().contains("saved DHT table"));
    assert!(decode_saved(b"d2:id3:abc5:nodes0:e").unwrap_err().contains("20-byte id"));
    let bad = b"d2:id20:aaaaaaaaaaaaaaaaaaaa5:nodes3:abce";
    assert!(decode_saved(bad).unwrap_err().contains("multiple of 26"));
}

#[test]
fn sparse_buckets_but_the_last_give_refresh_targets() {
    let now = Instant::now();
    let mut t = Table::new(now, OWN);
    let mut rng = Rng::new(9);
    for n in 0..K as u8 {
        t.heard_reply(now, contact(id_at(0, n + 1), u32::from(n)));
    }
    t.heard_reply(now, contact(id_at(2, 1), 50));
    t.heard_reply(now, contact(id_at(9, 1), 51));
    // Buckets: prefix 0 (full), 1 (empty), 2.. : the last holds prefix >= 1 until it splits.
    let targets = t.sparse_targets(now, &mut rng);
    let prefixes: Vec<usize> = targets.iter().map(|id| id::common_prefix_len(&OWN, id)).collect();
    assert!(prefixes.iter().all(|&p| p > 0 && p < t.buckets() - 1), "{prefixes:?}");
    assert_eq!(prefixes.len(), t.buckets() - 2, "every bucket but the full first and the last");
}
