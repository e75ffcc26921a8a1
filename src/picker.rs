//! Which block to ask which peer for next. No IO and no clock: callers pass `now`.
//!
//! Policy, in order: finish pieces already started (a piece is worth nothing until all its blocks are in), then start
//! the rarest piece the peer has (random among equally rare ones), except that a downloader with no piece yet starts
//! a random one, which has more sources and so completes sooner and gives it something to trade. When every block
//! that connected peers could give us is requested, endgame lets a block be asked of several peers and reports which
//! duplicates to cancel once it arrives.
//!
//! Cost. Availability counts change incrementally (bitfield, have, peer gone). Pieces live in one array ordered by
//! rarity bucket, and a count change moves a piece across one bucket boundary with a single swap, so the rarest
//! pieces are found without sorting. A peer that has few of the pieces we need would make that ordered scan long, so
//! the scan has a budget; past it we sweep the peer's bitfield 64 pieces per step instead. Only pieces in flight hold
//! per-block state; everything else is a few bytes per piece.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::bitfield::Bitfield;
use crate::error::Error;

/// The request size every client uses.
pub const BLOCK_LEN: u32 = 16 * 1024;

/// A connection, named by the reactor's slab key.
pub type PeerKey = usize;

/// A block of a piece, the unit of `request`, `piece` and `cancel` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block {
    pub index: u32,
    pub begin: u32,
    pub length: u32,
}

/// What `block_received` makes of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOutcome {
    /// New data: store it. `piece_complete` means every block is in and the piece can be hashed; `cancels` are
    /// the other requests for the same block (endgame, or a request re-issued after a time-out) to cancel.
    New { piece_complete: bool, cancels: Vec<(PeerKey, Block)> },
    /// We hold this block already (an endgame race or a late arrival): drop the data.
    Duplicate,
    /// Not a block of a piece we are downloading, or not on a block boundary: the peer sent something unasked.
    Unrequested,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// `avoid` holds a peer whose request for this block timed out and until when it should not be asked again,
    /// so a stalled peer does not get the same block straight back while another peer could serve it.
    Missing {
        avoid: Option<(PeerKey, Instant)>,
    },
    Requested {
        peer: PeerKey,
        at: Instant,
    },
    Received,
}

/// Per-block state of a piece in flight.
#[derive(Debug)]
struct Partial {
    slots: Vec<Slot>,
    missing: u32,
    received: u32,
}

/// An endgame request for a block that is also requested from another peer. Endgame covers only the last few
/// blocks, so a flat list is enough.
#[derive(Debug, Clone, Copy)]
struct Dup {
    index: u32,
    slot: u32,
    peer: PeerKey,
    at: Instant,
}

/// The piece and block sizes of a torrent.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    piece_length: u32,
    total_length: u64,
    pieces: u32,
}

impl Geometry {
    fn piece_len(&self, index: u32) -> u32 {
        let start = index as u64 * self.piece_length as u64;
        self.total_length.saturating_sub(start).min(self.piece_length as u64) as u32
    }

    fn blocks(&self, index: u32) -> u32 {
        self.piece_len(index).div_ceil(BLOCK_LEN)
    }

    fn block(&self, index: u32, slot: u32) -> Block {
        let begin = slot * BLOCK_LEN;
        Block { index, begin, length: (self.piece_len(index) - begin).min(BLOCK_LEN) }
    }
}

pub struct Picker {
    geo: Geometry,
    have: Bitfield,
    /// Pieces neither verified nor in flight: the candidates for a new piece.
    pickable: Bitfield,
    /// How many connected peers have each piece.
    avail: Vec<u32>,
    /// Every piece, ordered by key (0 for verified pieces, else availability + 1); `pos` is its inverse.
    order: Vec<u32>,
    pos: Vec<u32>,
    /// `starts[k]` is where key `k` begins in `order`; the last entry is the piece count. Grows with availability.
    starts: Vec<u32>,
    partials: BTreeMap<u32, Partial>,
    dups: Vec<Dup>,
    peers: HashMap<PeerKey, Bitfield>,
    rng: u64,
}

fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn below(state: &mut u64, n: u32) -> u32 {
    (next_random(state) % n as u64) as u32
}

impl Picker {
    /// A picker for a torrent of `total_length` bytes in pieces of `piece_length`, of which `have` are verified.
    /// `seed` drives the random choices; give each run a different one (e.g. from the peer id).
    pub fn new(piece_length: u32, total_length: u64, have: &Bitfield, seed: u64) -> Result<Picker, Error> {
        if piece_length == 0 || total_length == 0 {
            return Err(Error::bad_input("a torrent with an empty piece length or no data"));
        }
        let pieces = u32::try_from(total_length.div_ceil(piece_length as u64))
            .map_err(|_| Error::bad_input(format!("a torrent of {total_length} bytes has too many pieces")))?;
        if have.len() != pieces {
            return Err(Error::bad_input(format!(
                "a have-set of {} pieces for a torrent of {pieces} pieces",
                have.len()
            )));
        }
        let mut rng = seed | 1;
        // Shuffled once, so scanning a bucket from a random point is close to a uniform choice among equals.
        let mut order: Vec<u32> = (0..pieces).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, below(&mut rng, i as u32 + 1) as usize);
        }
        order.sort_by_key(|&p| !have.get(p));
        let mut pos = vec![0; pieces as usize];
        for (i, &p) in order.iter().enumerate() {
            pos[p as usize] = i as u32;
        }
        let mut pickable = Bitfield::full(pieces);
        for p in have.iter_ones() {
            pickable.clear(p);
        }
        Ok(Picker {
            geo: Geometry { piece_length, total_length, pieces },
            have: have.clone(),
            pickable,
            avail: vec![0; pieces as usize],
            order,
            pos,
            starts: vec![0, have.count(), pieces],
            partials: BTreeMap::new(),
            dups: Vec::new(),
            peers: HashMap::new(),
            rng,
        })
    }

    pub fn piece_count(&self) -> u32 {
        self.geo.pieces
    }

    /// Length of piece `index` (the last one may be shorter).
    pub fn piece_len(&self, index: u32) -> u32 {
        self.geo.piece_len(index)
    }

    /// Verified pieces.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    pub fn is_complete(&self) -> bool {
        self.have.all()
    }

    /// How many connected peers have piece `index`.
    pub fn availability(&self, index: u32) -> u32 {
        self.avail.get(index as usize).copied().unwrap_or(0)
    }

    /// The pieces a peer has, as the picker has counted them.
    pub fn peer_pieces(&self, peer: PeerKey) -> Option<&Bitfield> {
        self.peers.get(&peer)
    }

    /// Whether the peer has a piece we lack, i.e. whether to be interested in it.
    pub fn is_interesting(&self, peer: PeerKey) -> bool {
        self.peers.get(&peer).is_some_and(|bits| bits.has_any_missing_from(&self.have))
    }

    fn key(&self, p: u32) -> usize {
        if self.have.get(p) { 0 } else { self.avail[p as usize] as usize + 1 }
    }

    fn swap(&mut self, i: u32, j: u32) {
        self.order.swap(i as usize, j as usize);
        self.pos[self.order[i as usize] as usize] = i;
        self.pos[self.order[j as usize] as usize] = j;
    }

    /// Moves `p` from key `k` to `k + 1`: it swaps with the last piece of its bucket, which then becomes the first
    /// of the next bucket.
    fn move_up(&mut self, p: u32, k: usize) {
        if self.starts.len() < k + 3 {
            self.starts.push(self.geo.pieces);
        }
        let last = self.starts[k + 1] - 1;
        self.swap(self.pos[p as usize], last);
        self.starts[k + 1] -= 1;
    }

    /// Moves `p` from key `k` to `k - 1` by swapping it with the first piece of its bucket.
    fn move_down(&mut self, p: u32, k: usize) {
        let first = self.starts[k];
        self.swap(self.pos[p as usize], first);
        self.starts[k] += 1;
    }

    fn add_avail(&mut self, p: u32) {
        let k = self.key(p);
        self.avail[p as usize] += 1;
        if k > 0 {
            self.move_up(p, k);
        }
    }

    fn remove_avail(&mut self, p: u32) {
        let k = self.key(p);
        self.avail[p as usize] -= 1;
        if k > 0 {
            self.move_down(p, k);
        }
    }

    /// A peer's full bitfield (or an empty one for a peer that sent none). Calling it again for the same peer
    /// replaces what was counted for it.
    pub fn peer_joined(&mut self, peer: PeerKey, bits: &Bitfield) {
        if self.peers.contains_key(&peer) {
            self.forget_pieces(peer);
        }
        let pieces = self.geo.pieces;
        if bits.all() && bits.len() == pieces {
            // A seed raises every piece by one, which keeps the rarity order: shifting the bucket boundaries is
            // enough, instead of moving each of possibly 100,000 pieces.
            self.avail.iter_mut().for_each(|a| *a += 1);
            self.starts.insert(1, self.starts[1]);
            self.peers.insert(peer, bits.clone());
            return;
        }
        let mut own = Bitfield::new(pieces);
        for p in bits.iter_ones().take_while(|&p| p < pieces) {
            own.set(p);
            self.add_avail(p);
        }
        self.peers.insert(peer, own);
    }

    /// A `have` from a peer. Repeats and out-of-range indices count nothing; a peer without a bitfield is added.
    pub fn peer_have(&mut self, peer: PeerKey, index: u32) {
        let pieces = self.geo.pieces;
        let bits = self.peers.entry(peer).or_insert_with(|| Bitfield::new(pieces));
        if bits.set(index) {
            self.add_avail(index);
        }
    }

    /// The peer is gone: its pieces no longer count and its requests go back to the pool.
    pub fn peer_left(&mut self, peer: PeerKey) {
        self.peer_choked(peer);
        self.forget_pieces(peer);
    }

    fn forget_pieces(&mut self, peer: PeerKey) {
        let Some(bits) = self.peers.remove(&peer) else { return };
        // The reverse of a seed joining: every missing piece has availability one or more, so key 1 is empty.
        if bits.all() && self.starts.len() > 3 && self.starts[1] == self.starts[2] {
            self.avail.iter_mut().for_each(|a| *a -= 1);
            self.starts.remove(1);
            return;
        }
        for p in bits.iter_ones() {
            self.remove_avail(p);
        }
    }

    /// The peer choked us: BEP 3 peers drop our queued requests, so they go back to the pool for other peers.
    pub fn peer_choked(&mut self, peer: PeerKey) {
        self.dups.retain(|d| d.peer != peer);
        for (&index, partial) in self.partials.iter_mut() {
            for slot in 0..partial.slots.len() {
                if matches!(partial.slots[slot], Slot::Requested { peer: q, .. } if q == peer) {
                    vacate(partial, &mut self.dups, index, slot as u32, None);
                }
            }
        }
    }

    /// One request will not be answered (rejected by the peer, or cancelled by us): the block is free again.
    pub fn release(&mut self, peer: PeerKey, block: Block) {
        let Some(slot) = self.slot_of(block) else { return };
        self.dups.retain(|d| !(d.peer == peer && d.index == block.index && d.slot == slot));
        if let Some(partial) = self.partials.get_mut(&block.index)
            && matches!(partial.slots[slot as usize], Slot::Requested { peer: q, .. } if q == peer)
        {
            vacate(partial, &mut self.dups, block.index, slot, None);
        }
    }

    /// The slot number of a block that lies exactly on this torrent's block grid.
    fn slot_of(&self, block: Block) -> Option<u32> {
        let slot = block.begin / BLOCK_LEN;
        let exact = block.index < self.geo.pieces
            && block.begin.is_multiple_of(BLOCK_LEN)
            && slot < self.geo.blocks(block.index)
            && self.geo.block(block.index, slot).length == block.length;
        exact.then_some(slot)
    }

    /// Up to `max` blocks to request from `peer` now; each is recorded as requested by it at `now`.
    pub fn pick(&mut self, peer: PeerKey, max: usize, now: Instant) -> Vec<Block> {
        let mut out = Vec::new();
        let Some(bits) = self.peers.get(&peer) else { return out };
        let geo = self.geo;

        for (&index, partial) in self.partials.iter_mut() {
            if out.len() == max {
                return out;
            }
            if partial.missing > 0 && bits.get(index) {
                let others_have_it = self.avail[index as usize] > 1;
                take_missing(geo, index, partial, peer, now, others_have_it, max, &mut out);
            }
        }

        while out.len() < max {
            let want = (max - out.len()).div_ceil(geo.blocks(0) as usize);
            let pieces = self.choose_new(peer, want);
            if pieces.is_empty() {
                break;
            }
            for index in pieces {
                if out.len() == max {
                    break;
                }
                self.pickable.clear(index);
                let n = geo.blocks(index);
                let mut partial =
                    Partial { slots: vec![Slot::Missing { avoid: None }; n as usize], missing: n, received: 0 };
                take_missing(geo, index, &mut partial, peer, now, false, max, &mut out);
                self.partials.insert(index, partial);
            }
        }

        if out.len() < max && self.in_endgame() {
            self.pick_duplicates(peer, max, now, &mut out);
        }
        out
    }

    /// Up to `want` pieces to start for `peer`, best first.
    fn choose_new(&mut self, peer: PeerKey, want: usize) -> Vec<u32> {
        let Some(bits) = self.peers.get(&peer) else { return Vec::new() };
        if self.have.none() {
            return sweep_random(bits, &self.pickable, &mut self.rng, want);
        }
        // About as many visits as a full sweep takes steps (it tests 64 pieces per step), so a long ordered scan
        // costs at most about twice the sweep; measured in benches/picker.rs.
        let budget = 64 + self.geo.pieces as usize / 64;
        let mut found = Vec::with_capacity(want);
        let mut visited = 0;
        for k in 2..self.starts.len() - 1 {
            let (start, end) = (self.starts[k], self.starts[k + 1]);
            if start == end {
                continue;
            }
            let len = end - start;
            let offset = below(&mut self.rng, len);
            for i in 0..len {
                let p = self.order[(start + (offset + i) % len) as usize];
                if bits.get(p) && self.pickable.get(p) {
                    found.push(p);
                    if found.len() == want {
                        return found;
                    }
                }
                visited += 1;
                if visited == budget {
                    let rest = sweep_rarest(bits, &self.pickable, &self.avail, &mut self.rng, want, &found);
                    found.extend(rest);
                    return found;
                }
            }
        }
        found
    }

    /// True when every block some connected peer could give us is requested or received.
    pub fn in_endgame(&self) -> bool {
        let available_not_have = self.geo.pieces - self.starts.get(2).copied().unwrap_or(self.geo.pieces);
        let mut started_available = 0;
        for (&index, partial) in &self.partials {
            if self.avail[index as usize] > 0 {
                if partial.missing > 0 {
                    return false;
                }
                started_available += 1;
            }
        }
        available_not_have == started_available
    }

    fn pick_duplicates(&mut self, peer: PeerKey, max: usize, now: Instant, out: &mut Vec<Block>) {
        let Some(bits) = self.peers.get(&peer) else { return };
        for (&index, partial) in &self.partials {
            if !bits.get(index) {
                continue;
            }
            for (slot, state) in partial.slots.iter().enumerate() {
                if out.len() == max {
                    return;
                }
                let slot = slot as u32;
                let Slot::Requested { peer: owner, .. } = *state else { continue };
                let asked =
                    owner == peer || self.dups.iter().any(|d| d.peer == peer && d.index == index && d.slot == slot);
                if !asked {
                    self.dups.push(Dup { index, slot, peer, at: now });
                    out.push(self.geo.block(index, slot));
                }
            }
        }
    }

    /// A block arrived from `peer`. Accepted even when its request had timed out or gone to another peer, since
    /// the data is as good.
    pub fn block_received(&mut self, peer: PeerKey, block: Block) -> BlockOutcome {
        let Some(slot) = self.slot_of(block) else { return BlockOutcome::Unrequested };
        if self.have.get(block.index) {
            return BlockOutcome::Duplicate;
        }
        let Some(partial) = self.partials.get_mut(&block.index) else { return BlockOutcome::Unrequested };
        let mut cancels = Vec::new();
        match partial.slots[slot as usize] {
            Slot::Received => return BlockOutcome::Duplicate,
            Slot::Missing { .. } => partial.missing -= 1,
            Slot::Requested { peer: owner, .. } => {
                if owner != peer {
                    cancels.push((owner, block));
                }
            }
        }
        partial.slots[slot as usize] = Slot::Received;
        partial.received += 1;
        let piece_complete = partial.received as usize == partial.slots.len();
        self.dups.retain(|d| {
            let same = d.index == block.index && d.slot == slot;
            if same && d.peer != peer {
                cancels.push((d.peer, block));
            }
            !same
        });
        BlockOutcome::New { piece_complete, cancels }
    }

    /// The piece's hash matched and it is stored: it leaves the in-flight set for good.
    pub fn piece_verified(&mut self, index: u32) {
        if index >= self.geo.pieces || self.have.get(index) {
            return;
        }
        self.partials.remove(&index);
        self.dups.retain(|d| d.index != index);
        self.pickable.clear(index);
        for k in (1..=self.key(index)).rev() {
            self.move_down(index, k);
        }
        self.have.set(index);
    }

    /// The piece's hash did not match: all its blocks are wanted again, ahead of new pieces.
    pub fn piece_failed(&mut self, index: u32) {
        self.dups.retain(|d| d.index != index);
        if let Some(partial) = self.partials.get_mut(&index) {
            partial.slots.fill(Slot::Missing { avoid: None });
            partial.missing = partial.slots.len() as u32;
            partial.received = 0;
        }
    }

    /// Requests older than `timeout`: each is forgotten and its block is free for another peer (the same peer gets
    /// it back only after another `timeout`, or if no other peer has the piece). The caller may cancel them.
    pub fn requests_timed_out(&mut self, now: Instant, timeout: Duration) -> Vec<(PeerKey, Block)> {
        let mut expired = Vec::new();
        let late = |at: Instant| now.saturating_duration_since(at) >= timeout;
        let geo = self.geo;
        self.dups.retain(|d| {
            if late(d.at) {
                expired.push((d.peer, geo.block(d.index, d.slot)));
            }
            !late(d.at)
        });
        let until = now.checked_add(timeout).unwrap_or(now);
        for (&index, partial) in self.partials.iter_mut() {
            for slot in 0..partial.slots.len() {
                if let Slot::Requested { peer, at } = partial.slots[slot]
                    && late(at)
                {
                    vacate(partial, &mut self.dups, index, slot as u32, Some((peer, until)));
                    expired.push((peer, geo.block(index, slot as u32)));
                }
            }
        }
        expired
    }

    /// Blocks currently requested from `peer`, e.g. to cancel them or to count its pipeline.
    pub fn requested_from(&self, peer: PeerKey) -> Vec<Block> {
        let mut out = Vec::new();
        for (&index, partial) in &self.partials {
            for (slot, state) in partial.slots.iter().enumerate() {
                if matches!(*state, Slot::Requested { peer: q, .. } if q == peer) {
                    out.push(self.geo.block(index, slot as u32));
                }
            }
        }
        out.extend(self.dups.iter().filter(|d| d.peer == peer).map(|d| self.geo.block(d.index, d.slot)));
        out
    }
}

/// The request holding `slot` is gone. An endgame duplicate, if there is one, takes its place so the block stays
/// requested; otherwise the block is missing again.
fn vacate(partial: &mut Partial, dups: &mut Vec<Dup>, index: u32, slot: u32, avoid: Option<(PeerKey, Instant)>) {
    if let Some(i) = dups.iter().position(|d| d.index == index && d.slot == slot) {
        let d = dups.swap_remove(i);
        partial.slots[slot as usize] = Slot::Requested { peer: d.peer, at: d.at };
    } else {
        partial.slots[slot as usize] = Slot::Missing { avoid };
        partial.missing += 1;
    }
}

/// Requests the missing blocks of one piece in order, skipping a block whose request from this peer just timed out
/// while another peer could serve it.
#[allow(clippy::too_many_arguments)]
fn take_missing(
    geo: Geometry,
    index: u32,
    partial: &mut Partial,
    peer: PeerKey,
    now: Instant,
    others_have_it: bool,
    max: usize,
    out: &mut Vec<Block>,
) {
    for (slot, state) in partial.slots.iter_mut().enumerate() {
        if out.len() == max || partial.missing == 0 {
            return;
        }
        let Slot::Missing { avoid } = *state else { continue };
        if others_have_it && avoid.is_some_and(|(p, until)| p == peer && now < until) {
            continue;
        }
        *state = Slot::Requested { peer, at: now };
        partial.missing -= 1;
        out.push(geo.block(index, slot as u32));
    }
}

/// The candidates (pieces the peer has and we may start) in one 64-piece word.
fn candidates(bits: &Bitfield, pickable: &Bitfield, w: usize) -> u64 {
    bits.word(w) & pickable.word(w)
}

/// Up to `want` candidates, taken in index order from a random starting piece and wrapping around. Used before we
/// have any piece, when rarity does not matter yet.
fn sweep_random(bits: &Bitfield, pickable: &Bitfield, rng: &mut u64, want: usize) -> Vec<u32> {
    let words = bits.word_count();
    let mut found = Vec::new();
    if words == 0 {
        return found;
    }
    let start = below(rng, bits.len());
    let (first, shift) = ((start / 64) as usize, start % 64);
    // One extra turn revisits the first word for the bits before `start`.
    for i in 0..=words {
        let w = (first + i) % words;
        let mut m = candidates(bits, pickable, w);
        if i == 0 {
            m &= u64::MAX >> shift;
        } else if i == words {
            m &= !(u64::MAX >> shift);
        }
        while m != 0 && found.len() < want {
            let bit = m.leading_zeros();
            m &= !(1u64 << 63 >> bit);
            found.push(w as u32 * 64 + bit);
        }
        if found.len() == want {
            break;
        }
    }
    found
}

/// The `want` rarest candidates over the whole bitfield, random among equals, leaving out `skip`.
fn sweep_rarest(
    bits: &Bitfield,
    pickable: &Bitfield,
    avail: &[u32],
    rng: &mut u64,
    want: usize,
    skip: &[u32],
) -> Vec<u32> {
    let want = want - skip.len();
    // (availability, random tie-break, piece), sorted, at most `want` long.
    let mut best: Vec<(u32, u64, u32)> = Vec::with_capacity(want + 1);
    for w in 0..bits.word_count() {
        let mut m = candidates(bits, pickable, w);
        while m != 0 {
            let bit = m.leading_zeros();
            m &= !(1u64 << 63 >> bit);
            let p = w as u32 * 64 + bit;
            let a = avail[p as usize];
            if best.len() == want && best.last().is_some_and(|worst| a > worst.0) {
                continue;
            }
            if skip.contains(&p) {
                continue;
            }
            let entry = (a, next_random(rng), p);
            let at = best.partition_point(|e| *e < entry);
            best.insert(at, entry);
            best.truncate(want);
        }
    }
    best.into_iter().map(|(_, _, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
                assert_eq!(self.pickable.get(p), !self.have.get(p) && !in_flight, "pickable {p}");
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
            let mut p = picker(10, B, &[9], seed);
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
        for seed in 0..100 {
            let mut p = picker(64, B, &[], seed);
            p.peer_joined(1, &Bitfield::full(64));
            p.peer_joined(2, &bits(64, 1..64));
            // Piece 0 is the one rarest piece; rarest-first would always take it.
            let got = p.pick(1, 1, t0());
            firsts.insert(got[0].index);
            // After the first piece is verified, rarity rules.
            assert_eq!(new_piece(p.block_received(1, got[0])), (true, vec![]));
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
}
