//! The block picker on a large torrent: 100,000 pieces of 256 KiB (16 blocks each) and 50 connected peers.
//! Run: `cargo bench --bench picker`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use toybt::bitfield::Bitfield;
use toybt::picker::{BlockOutcome, Picker};

const PIECES: u32 = 100_000;
const PIECE_LEN: u32 = 256 * 1024;
const PEERS: usize = 50;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as u32
    }
}

/// Peers 0..50 hold between 10% and 100% of the pieces; we hold one, so rarest-first (not the random first
/// piece) applies. Peer 50 is a sparse leecher with 100 pieces.
fn swarm() -> Picker {
    let mut rng = Rng(0x5EED);
    let mut have = Bitfield::new(PIECES);
    have.set(0);
    let mut p = Picker::new(PIECE_LEN, PIECES as u64 * PIECE_LEN as u64, &have, 7).unwrap();
    for peer in 0..PEERS {
        let density = 10 + rng.below(91);
        let mut bits = Bitfield::new(PIECES);
        for i in 0..PIECES {
            if rng.below(100) < density {
                bits.set(i);
            }
        }
        p.peer_joined(peer, &bits);
    }
    let mut sparse = Bitfield::new(PIECES);
    for _ in 0..100 {
        sparse.set(rng.below(PIECES));
    }
    p.peer_joined(PEERS, &sparse);
    p
}

/// Times only `pick` (16 blocks, one new piece) for peers chosen by `peer_of`; between picks, untimed, the blocks
/// arrive and the piece is verified, as in a download. A fresh swarm replaces one that is nearly done.
fn timed_picks(iters: u64, peer_of: impl Fn(u64) -> usize) -> Duration {
    let mut p = swarm();
    let mut total = Duration::ZERO;
    let now = Instant::now();
    for i in 0..iters {
        if p.have().count() > PIECES / 2 {
            p = swarm();
        }
        let peer = peer_of(i);
        let start = Instant::now();
        let blocks = p.pick(peer, 16, now);
        total += start.elapsed();
        if blocks.is_empty() {
            p = swarm();
            continue;
        }
        for b in black_box(blocks) {
            if let BlockOutcome::New { piece_complete: true, .. } = p.block_received(peer, b) {
                p.piece_verified(b.index);
            }
        }
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("picker_100k_pieces_50_peers");
    g.bench_function("pick_16_blocks", |b| b.iter_custom(|iters| timed_picks(iters, |i| i as usize % PEERS)));
    g.bench_function("pick_16_blocks_sparse_peer", |b| b.iter_custom(|iters| timed_picks(iters, |_| PEERS)));

    let mut p = swarm();
    let mut rng = Rng(99);
    g.bench_function("peer_have", |b| {
        b.iter(|| {
            let peer = PEERS + 1 + rng.below(1000) as usize;
            p.peer_have(peer, rng.below(PIECES));
        })
    });
    let mut p = swarm();
    let seed = Bitfield::full(PIECES);
    g.bench_function("seed_joins_and_leaves", |b| {
        b.iter(|| {
            p.peer_joined(1000, black_box(&seed));
            p.peer_left(1000);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
