//! The picker on its own: rarest first, partial pieces first, endgame, time-outs.

use super::*;
use std::collections::BTreeSet;

const B: u32 = BLOCK_LEN;

fn t0() -> Instant {
    Instant::now()
}

fn picker(pieces: u32, piece_len: u32, have: &[u32], seed: u64) -> Picker {
    let mut bits = Bitfield::new(pieces);
    for &p in have {
        bits.set(p);
    }
    Picker::new(piece_len, pieces as u64 * piece_len as u64, &bits, seed).unwrap()
}

fn bits(pieces: u32, set: impl IntoIterator<Item = u32>) -> Bitfield {
    let mut b = Bitfield::new(pieces);
    for p in set {
        b.set(p);
    }
    b
}

fn new_piece(outcome: BlockOutcome) -> (bool, Vec<(PeerKey, Block)>) {
    match outcome {
        BlockOutcome::New { piece_complete, cancels } => (piece_complete, cancels),
        other => panic!("expected new data, got {other:?}"),
    }
}

impl Picker {
    /// Every structure agrees with every other; called after each step of the randomized test.
    fn check(&self) {
        let n = self.geo.pieces;
        assert_eq!(*self.starts.first().unwrap(), 0);
        assert_eq!(*self.starts.last().unwrap(), n);
        assert!(self.starts.windows(2).all(|w| w[0] <= w[1]));
        for (i, &p) in self.order.iter().enumerate() {
            assert_eq!(self.pos[p as usize] as usize, i);
            let k = self.key(p);
            assert!(self.starts[k] as usize <= i && (i as u32) < self.starts[k + 1], "piece {p} key {k} at {i}");
        }
        for p in 0..n {
            let counted = self.peers.values().filter(|b| b.get(p)).count() as u32;
            assert_eq!(self.avail[p as usize], counted, "availability of {p}");
            let in_flight = self.partials.contains_key(&p);
            assert_eq!(self.pickable.get(p), !self.have.get(p) && !in_flight && self.wanted.get(p), "pickable {p}");
            assert!(!(self.have.get(p) && in_flight));
        }
        for partial in self.partials.values() {
            let missing = partial.slots.iter().filter(|s| matches!(s, Slot::Missing { .. })).count();
            let received = partial.slots.iter().filter(|s| matches!(s, Slot::Received)).count();
            assert_eq!((partial.missing as usize, partial.received as usize), (missing, received));
        }
        for d in &self.dups {
            let slot = self.partials[&d.index].slots[d.slot as usize];
            assert!(matches!(slot, Slot::Requested { peer, .. } if peer != d.peer), "dup {d:?} over {slot:?}");
        }
    }
}

#[test]
fn geometry_and_construction_errors() {
    let p = Picker::new(3 * B, 7 * B as u64 + 100, &Bitfield::new(3), 1).unwrap();
    assert_eq!(p.piece_count(), 3);
    assert_eq!(p.piece_len(2), B + 100);
    assert_eq!(p.geo.blocks(2), 2);
    assert_eq!(p.geo.block(2, 1), Block { index: 2, begin: B, length: 100 });
    assert!(Picker::new(3 * B, 7 * B as u64, &Bitfield::new(2), 1).is_err());
    assert!(Picker::new(0, 1, &Bitfield::new(1), 1).is_err());
    assert!(Picker::new(1, 0, &Bitfield::new(0), 1).is_err());
    assert!(Picker::new(1, 1 << 40, &Bitfield::new(0), 1).is_err());
}

#[test]
fn short_last_block_is_requested_with_its_length() {
    let mut bf = Bitfield::new(2);
    bf.set(0);
    let mut p = Picker::new(2 * B, 3 * B as u64 + 5, &bf, 3).unwrap();
    p.peer_joined(1, &Bitfield::full(2));
    let got = p.pick(1, 10, t0());
    assert_eq!(got, vec![Block { index: 1, begin: 0, length: B }, Block { index: 1, begin: B, length: 5 }]);
    assert_eq!(p.block_received(1, Block { index: 1, begin: B, length: B }), BlockOutcome::Unrequested);
    assert_eq!(new_piece(p.block_received(1, got[1])), (false, vec![]));
    assert_eq!(new_piece(p.block_received(1, got[0])), (true, vec![]));
    p.piece_verified(1);
    assert!(p.is_complete());
    p.check();
}

#[test]
fn rarest_piece_first_random_among_equals() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        // Pieces of a whole extent each, so the choice among equals is per piece (see the extent test below).
        let mut p = picker(10, EXTENT_BYTES as u32, &[9], seed);
        p.peer_joined(1, &bits(10, 0..9));
        p.peer_joined(2, &bits(10, 0..=4));
        p.peer_joined(3, &bits(10, 0..=2));
        let got = p.pick(1, 1, t0());
        assert_eq!(got.len(), 1);
        assert!((5..9).contains(&got[0].index), "{got:?} is not among the rarest");
        seen.insert(got[0].index);
        // Peer 2 lacks the rarest pieces: its rarest are 3 and 4.
        let got = p.pick(2, 1, t0());
        assert!((3..5).contains(&got[0].index), "{got:?}");
        p.check();
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![5, 6, 7, 8], "every equally rare piece gets chosen");
}

#[test]
fn started_pieces_are_finished_before_new_ones() {
    let mut p = picker(4, 4 * B, &[3], 7);
    p.peer_joined(1, &bits(4, 0..3));
    p.peer_joined(2, &bits(4, 0..3));
    let first = p.pick(1, 2, t0());
    let index = first[0].index;
    assert_eq!(first.iter().map(|b| (b.index, b.begin)).collect::<Vec<_>>(), vec![(index, 0), (index, B)]);
    // Make another piece rarer; peer 2 must still finish `index` first.
    p.peer_have(3, (index + 1) % 3);
    let second = p.pick(2, 3, t0());
    assert_eq!(second[0], Block { index, begin: 2 * B, length: B });
    assert_eq!(second[1], Block { index, begin: 3 * B, length: B });
    assert_ne!(second[2].index, index);
    p.check();
}

#[test]
fn first_piece_is_random_not_rarest() {
    let mut firsts = std::collections::BTreeSet::new();
    let blocks_per_piece = (EXTENT_BYTES / B as u64) as usize;
    for seed in 0..100 {
        let mut p = picker(64, EXTENT_BYTES as u32, &[], seed);
        p.peer_joined(1, &Bitfield::full(64));
        p.peer_joined(2, &bits(64, 1..64));
        // Piece 0 is the one rarest piece; rarest-first would always take it.
        let got = p.pick(1, blocks_per_piece, t0());
        assert!(got.iter().all(|b| b.index == got[0].index), "{got:?}");
        firsts.insert(got[0].index);
        // After the first piece is verified, rarity rules.
        let outcomes: Vec<_> = got.iter().map(|&b| new_piece(p.block_received(1, b))).collect();
        assert_eq!(outcomes.last(), Some(&(true, vec![])));
        p.piece_verified(got[0].index);
        if got[0].index != 0 {
            assert_eq!(p.pick(1, 1, t0())[0].index, 0);
        }
        p.check();
    }
    assert!(firsts.len() > 20, "first pieces {firsts:?}");
}

#[test]
fn endgame_duplicates_and_cancels() {
    let mut p = picker(2, 2 * B, &[0], 5);
    p.peer_joined(1, &Bitfield::full(2));
    p.peer_joined(2, &Bitfield::full(2));
    p.peer_joined(3, &bits(2, [0]));
    assert!(!p.in_endgame());
    let a = p.pick(1, 10, t0());
    assert_eq!(a.len(), 2);
    assert!(p.in_endgame());
    let b = p.pick(2, 10, t0());
    assert_eq!(b, a, "peer 2 duplicates both outstanding blocks");
    assert!(p.pick(2, 10, t0()).is_empty(), "never the same block twice to one peer");
    assert!(p.pick(1, 10, t0()).is_empty());
    assert!(p.pick(3, 10, t0()).is_empty(), "peer 3 lacks the piece");
    assert_eq!(p.requested_from(2), a);
    p.check();

    assert_eq!(new_piece(p.block_received(2, a[0])), (false, vec![(1, a[0])]));
    assert_eq!(p.block_received(1, a[0]), BlockOutcome::Duplicate);
    assert_eq!(new_piece(p.block_received(1, a[1])), (true, vec![(2, a[1])]));
    assert!(p.requested_from(2).is_empty());
    p.piece_verified(1);
    assert!(p.is_complete());
    assert_eq!(p.block_received(1, a[1]), BlockOutcome::Duplicate);
    p.check();
}

#[test]
fn endgame_ignores_pieces_nobody_has() {
    let mut p = picker(3, B, &[0], 5);
    p.peer_joined(1, &bits(3, [1]));
    p.peer_joined(2, &bits(3, [1]));
    assert_eq!(p.pick(1, 4, t0()).len(), 1);
    assert!(p.in_endgame(), "piece 2 has no source, so it cannot hold endgame back");
    assert_eq!(p.pick(2, 4, t0()).len(), 1);
    p.check();
}

#[test]
fn timed_out_requests_go_to_another_peer() {
    let start = t0();
    let timeout = Duration::from_secs(30);
    let mut p = picker(2, 2 * B, &[0], 9);
    p.peer_joined(1, &Bitfield::full(2));
    let asked = p.pick(1, 10, start);
    assert_eq!(asked.len(), 2);
    assert!(p.requests_timed_out(start + Duration::from_secs(29), timeout).is_empty());
    let later = start + timeout;
    let expired = p.requests_timed_out(later, timeout);
    assert_eq!(expired, asked.iter().map(|&b| (1, b)).collect::<Vec<_>>());
    // Only peer 1 has the piece, so it gets the blocks back at once.
    assert_eq!(p.pick(1, 10, later), asked);
    p.check();

    // With a second source, the slow peer is passed over for one time-out period.
    p.peer_joined(2, &Bitfield::full(2));
    let later = later + timeout;
    assert_eq!(p.requests_timed_out(later, timeout).len(), 2);
    assert!(p.pick(1, 10, later).is_empty());
    assert_eq!(p.pick(2, 1, later), asked[..1]);
    // Later peer 1 may have it again, and endgame adds a duplicate of the block peer 2 holds.
    assert_eq!(p.pick(1, 10, later + timeout), vec![asked[1], asked[0]]);
    // A late answer to a timed-out request is still good data, and the re-request is cancelled.
    assert_eq!(new_piece(p.block_received(1, asked[0])), (false, vec![(2, asked[0])]));
    p.check();
}

#[test]
fn failed_piece_is_requested_again_first() {
    let mut p = picker(4, 2 * B, &[3], 2);
    p.peer_joined(1, &Bitfield::full(4));
    let got = p.pick(1, 2, t0());
    let index = got[0].index;
    for b in &got {
        p.block_received(1, *b);
    }
    p.piece_failed(index);
    p.check();
    assert_eq!(p.pick(1, 2, t0()), got, "the failed piece's blocks come before any new piece");
    assert_eq!(new_piece(p.block_received(1, got[0])), (false, vec![]));
}

#[test]
fn peer_left_releases_requests_and_availability() {
    let mut p = picker(8, B, &[7], 4);
    p.peer_joined(1, &bits(8, 0..4));
    p.peer_joined(2, &bits(8, 0..7));
    let asked = p.pick(1, 3, t0());
    assert_eq!(p.availability(0), 2);
    p.peer_left(1);
    assert_eq!(p.availability(0), 1);
    assert!(p.requested_from(1).is_empty());
    assert!(p.pick(1, 3, t0()).is_empty(), "a departed peer gets nothing");
    let mut again = p.pick(2, 3, t0());
    again.sort();
    let mut asked = asked;
    asked.sort();
    assert_eq!(again, asked, "partial pieces first: the released blocks go to peer 2");
    p.check();
    p.peer_left(2);
    assert!((0..8).all(|i| p.availability(i) == 0));
    p.check();
}

#[test]
fn choke_and_release_free_blocks() {
    let mut p = picker(2, 2 * B, &[0], 4);
    p.peer_joined(1, &Bitfield::full(2));
    let asked = p.pick(1, 2, t0());
    p.release(1, asked[1]);
    assert_eq!(p.requested_from(1), asked[..1]);
    p.peer_choked(1);
    assert!(p.requested_from(1).is_empty());
    assert_eq!(p.pick(1, 2, t0()), asked);
    p.check();
}

#[test]
fn seeds_join_and_leave_without_disturbing_rarity() {
    for have in [vec![], vec![0, 5], (0..10).collect()] {
        let mut p = picker(10, B, &have, 6);
        p.peer_joined(1, &bits(10, [1, 2, 3]));
        p.peer_joined(2, &Bitfield::full(10));
        p.check();
        p.peer_have(3, 2);
        p.peer_joined(4, &Bitfield::full(10));
        p.check();
        assert_eq!(p.availability(2), 4);
        p.peer_left(2);
        p.check();
        p.peer_joined(1, &Bitfield::full(10));
        p.peer_left(4);
        p.check();
        p.peer_left(1);
        p.peer_left(3);
        p.check();
        assert!((0..10).all(|i| p.availability(i) == 0));
    }
}

#[test]
fn haves_counted_once_and_bitfields_replaced() {
    let mut p = picker(4, B, &[], 4);
    p.peer_have(1, 2);
    p.peer_have(1, 2);
    p.peer_have(1, 99);
    assert_eq!(p.availability(2), 1);
    p.peer_joined(1, &bits(4, [0, 1]));
    assert_eq!((p.availability(0), p.availability(2)), (1, 0));
    assert!(p.is_interesting(1));
    p.check();
    let mut done = picker(4, B, &[0, 1], 4);
    done.peer_joined(1, &bits(4, [0, 1]));
    assert!(!done.is_interesting(1));
    assert!(done.pick(1, 4, t0()).is_empty());
}

#[test]
fn unrequested_blocks_are_refused() {
    let mut p = picker(4, 2 * B, &[3], 4);
    p.peer_joined(1, &Bitfield::full(4));
    let got = p.pick(1, 1, t0());
    let index = got[0].index;
    let other = (index + 1) % 3;
    assert_eq!(p.block_received(1, Block { index: other, begin: 0, length: B }), BlockOutcome::Unrequested);
    assert_eq!(p.block_received(1, Block { index, begin: 1, length: B }), BlockOutcome::Unrequested);
    assert_eq!(p.block_received(1, Block { index, begin: 0, length: B - 1 }), BlockOutcome::Unrequested);
    assert_eq!(p.block_received(1, Block { index: 9, begin: 0, length: B }), BlockOutcome::Unrequested);
    assert_eq!(p.block_received(1, Block { index: 3, begin: 0, length: B }), BlockOutcome::Duplicate);
    p.check();
}

#[test]
fn sparse_peer_still_gets_its_rarest_piece() {
    // 5,000 pieces, 20 peers hold most of them, so the ordered scan runs out of budget before it meets one of
    // the few pieces peer 0 has, and the bitfield sweep must find its rarest.
    let pieces = 5000;
    for seed in 1..8 {
        let mut p = picker(pieces, B, &[0], seed);
        let mut rng = seed;
        for peer in 1..=20 {
            p.peer_joined(peer, &bits(pieces, (0..pieces).filter(|_| below(&mut rng, 10) < 8)));
        }
        let mut sparse: Vec<u32> = (0..6).map(|_| 1 + below(&mut rng, pieces - 1)).collect();
        sparse.sort_unstable();
        sparse.dedup();
        p.peer_joined(0, &bits(pieces, sparse.iter().copied()));
        let rarest = sparse.iter().map(|&i| p.availability(i)).min();
        let got = p.pick(0, 1, t0());
        assert_eq!(got.len(), 1);
        assert_eq!(Some(p.availability(got[0].index)), rarest);
        let all = p.pick(0, 100, t0());
        assert_eq!(all.len(), sparse.len() - 1, "then every other piece it has");
        p.check();
    }
}

/// Random swarms driven to completion. Every new piece started must be among the rarest the peer could give,
/// and the structures must stay consistent throughout. Sparse peers exercise the bitfield sweep.
#[test]
fn random_swarms_complete_and_stay_rarest_first() {
    for seed in 1..13u64 {
        let mut rng = seed * 0x9E37_79B9;
        let pieces = 1 + below(&mut rng, 900);
        let piece_len = B * (1 + below(&mut rng, 3));
        let total = pieces as u64 * piece_len as u64 - below(&mut rng, piece_len) as u64;
        let have = bits(pieces, (0..pieces).filter(|_| below(&mut rng, 4) == 0));
        let mut p = Picker::new(piece_len, total, &have, seed).unwrap();
        let mut now = t0();
        let mut inflight: Vec<(PeerKey, Block)> = Vec::new();
        for step in 0..6_000 {
            let peer = below(&mut rng, 6) as usize;
            if below(&mut rng, 300) == 0 {
                // The user changes the selection: about one piece in three unwanted, or everything wanted again.
                let all = below(&mut rng, 3) == 0;
                p.set_wanted(&bits(pieces, (0..pieces).filter(|_| all || below(&mut rng, 3) != 0)));
            }
            match below(&mut rng, 20) {
                0 => {
                    let density = 1 + below(&mut rng, 100);
                    p.peer_joined(peer, &bits(pieces, (0..pieces).filter(|_| below(&mut rng, 100) < density)));
                }
                1..=3 => p.peer_have(peer, below(&mut rng, pieces)),
                4 if below(&mut rng, 10) == 0 => {
                    p.peer_left(peer);
                    inflight.retain(|r| r.0 != peer);
                }
                5 => {
                    now += Duration::from_secs(10);
                    let expired: std::collections::HashSet<_> =
                        p.requests_timed_out(now, Duration::from_secs(25)).into_iter().collect();
                    inflight.retain(|x| !expired.contains(x));
                }
                6..=10 => {
                    let before = p.pickable.clone();
                    let empty = Bitfield::new(pieces);
                    let theirs = p.peer_pieces(peer).unwrap_or(&empty);
                    let rarest = before.iter_ones().filter(|&i| theirs.get(i)).map(|i| p.availability(i)).min();
                    let had_any = !p.have.none();
                    let mut started = Vec::new();
                    for b in p.pick(peer, 1 + below(&mut rng, 40) as usize, now) {
                        assert!(p.peer_pieces(peer).unwrap().get(b.index));
                        if before.get(b.index) && !started.contains(&b.index) {
                            assert!(p.wanted.get(b.index), "seed {seed} step {step}: started unwanted {}", b.index);
                            started.push(b.index);
                        }
                        inflight.push((peer, b));
                    }
                    if had_any && let Some(&first) = started.first() {
                        assert_eq!(Some(p.availability(first)), rarest, "seed {seed} step {step}");
                    }
                }
                _ if !inflight.is_empty() => {
                    let (from, block) = inflight.swap_remove(below(&mut rng, inflight.len() as u32) as usize);
                    if let BlockOutcome::New { piece_complete: true, cancels } = p.block_received(from, block) {
                        inflight.retain(|r| !cancels.contains(r));
                        if below(&mut rng, 8) == 0 {
                            p.piece_failed(block.index);
                        } else {
                            p.piece_verified(block.index);
                        }
                    }
                }
                _ => {}
            }
            if step % 97 == 0 {
                p.check();
            }
            if p.is_complete() {
                break;
            }
        }
        p.check();
        // Finish: one seed delivers everything it is asked for.
        p.peer_joined(99, &Bitfield::full(pieces));
        while !p.is_complete() {
            let asked = p.pick(99, 64, now);
            assert!(!asked.is_empty(), "seed {seed}: stuck at {} of {pieces}", p.have.count());
            for b in asked {
                if let BlockOutcome::New { piece_complete: true, .. } = p.block_received(99, b) {
                    p.piece_verified(b.index);
                }
            }
            now += Duration::from_secs(60);
            p.requests_timed_out(now, Duration::from_secs(30));
        }
        p.check();
    }
}

/// Pieces 0..3 of 6 wanted: only they are ever asked for, interest follows the wanted pieces, and the download
/// completes without the rest; wanting the rest again resumes it.
#[test]
fn unwanted_pieces_are_never_picked_and_completion_counts_only_wanted_ones() {
    let mut p = picker(6, B, &[], 5);
    p.set_wanted(&bits(6, 0..3));
    p.check();
    assert_eq!(p.wanted_left(), 3 * B as u64);
    assert_eq!(p.wanted_bytes(), 3 * B as u64);
    p.peer_joined(1, &bits(6, 3..6));
    assert!(!p.is_interesting(1), "it has only pieces we do not want");
    assert!(p.pick(1, 10, t0()).is_empty());
    p.peer_joined(2, &Bitfield::full(6));
    assert!(p.is_interesting(2));
    let asked = p.pick(2, 100, t0());
    assert_eq!(asked.iter().map(|b| b.index).collect::<BTreeSet<_>>(), BTreeSet::from([0, 1, 2]));
    assert!(!p.in_endgame() || asked.len() == 3);
    for b in asked {
        assert!(new_piece(p.block_received(2, b)).0);
        p.piece_verified(b.index);
    }
    p.check();
    assert!(p.is_complete());
    assert_eq!(p.wanted_left(), 0);
    assert!(!p.is_interesting(2));
    assert!(p.pick(2, 100, t0()).is_empty(), "endgame does not reach for unwanted pieces either");

    // Everything wanted again: the download resumes where it was.
    p.set_wanted(&Bitfield::full(6));
    p.check();
    assert!(!p.is_complete());
    assert_eq!(p.wanted_left(), 3 * B as u64);
    assert!(p.is_interesting(1) && p.is_interesting(2));
    let asked: BTreeSet<u32> = p.pick(2, 100, t0()).iter().map(|b| b.index).collect();
    assert_eq!(asked, BTreeSet::from([3, 4, 5]));
}

/// A piece unwanted while in flight is finished from the blocks already asked for, but not asked for again; one that
/// was never started is left alone.
#[test]
fn a_piece_unwanted_in_flight_may_finish() {
    let mut p = picker(3, 2 * B, &[], 9);
    p.peer_joined(1, &Bitfield::full(3));
    let first = p.pick(1, 1, t0());
    let index = first[0].index;
    p.set_wanted(&bits(3, (0..3).filter(|&i| i != index)));
    p.check();
    assert!(!new_piece(p.block_received(1, first[0])).0);
    let rest = p.pick(1, 1, t0());
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].index, index, "the piece in flight is finished first");
    assert!(new_piece(p.block_received(1, rest[0])).0);
    p.piece_verified(index);
    p.check();
    assert_eq!(p.wanted_left(), 4 * B as u64, "a verified unwanted piece changes nothing left to fetch");
    let others: BTreeSet<u32> = p.pick(1, 100, t0()).iter().map(|b| b.index).collect();
    assert_eq!(others.len(), 2);
    assert!(!others.contains(&index));
}

/// Pieces as rare as each other are started extent by extent, so they complete in runs the disk worker writes
/// together; a rarer piece still comes first.
#[test]
fn equally_rare_pieces_are_started_next_to_pieces_in_flight() {
    let piece_len = 256 * 1024;
    let per_extent = (EXTENT_BYTES / piece_len as u64) as u32;
    let pieces = 16 * per_extent;
    let mut p = picker(pieces, piece_len, &[0], 7);
    p.peer_joined(1, &Bitfield::full(pieces));
    let now = t0();
    let mut started = Vec::new();
    for _ in 1..pieces {
        let blocks = p.pick(1, (piece_len / B) as usize, now);
        let index = blocks[0].index;
        assert!(blocks.iter().all(|b| b.index == index), "one piece at a time: {blocks:?}");
        started.push(index);
        for b in blocks {
            p.block_received(1, b);
        }
        p.piece_verified(index);
    }
    // Every extent's pieces were started one after another, each extent once, the extents in random order.
    let mut extents: Vec<u32> = started.iter().map(|&i| i / per_extent).collect();
    extents.dedup();
    assert_eq!(extents.len(), 16, "{started:?}");
    assert_eq!(extents.iter().collect::<BTreeSet<_>>().len(), 16, "{started:?}");
    assert!(!extents.is_sorted(), "{extents:?}");

    // A rarer piece outside any extent in flight is still taken first.
    let mut p = picker(pieces, piece_len, &[0], 7);
    p.peer_joined(1, &Bitfield::full(pieces));
    p.peer_joined(2, &bits(pieces, (0..pieces).filter(|&i| i != 5 * per_extent + 2)));
    let first = p.pick(1, (piece_len / B) as usize, now)[0].index;
    assert_eq!(first, 5 * per_extent + 2);
}
