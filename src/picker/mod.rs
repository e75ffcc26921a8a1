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
//!
//! Selective download. Only wanted pieces (those that hold bytes of a file the user selected) are started; an
//! unwanted piece sits in the bottom bucket with the verified ones, so neither the ordered scan nor the sweeps see it,
//! and the download is complete once every wanted piece is verified. A piece already in flight when it stops being
//! wanted is still finished: its blocks are on their way.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::bitfield::Bitfield;
use crate::error::Error;

use self::sweep::{below, sweep_random, sweep_rarest};

/// The request size every client uses.
pub const BLOCK_LEN: u32 = 16 * 1024;

/// The span within which pieces are preferably started together (see `Picker::with_neighbours`): the disk worker
/// writes up to this much in one call.
pub const EXTENT_BYTES: u64 = 1 << 20;

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
    /// Pieces to download (all unless the caller selected files).
    wanted: Bitfield,
    /// Wanted pieces not verified yet, and their bytes: the download is complete when this reaches zero.
    missing_wanted: u32,
    missing_wanted_bytes: u64,
    /// Pieces wanted, neither verified nor in flight: the candidates for a new piece.
    pickable: Bitfield,
    /// How many connected peers have each piece.
    avail: Vec<u32>,
    /// Every piece, ordered by key (0 for verified or unwanted pieces, else availability + 1); `pos` is its inverse.
    order: Vec<u32>,
    pos: Vec<u32>,
    /// `starts[k]` is where key `k` begins in `order`; the last entry is the piece count. Grows with availability.
    starts: Vec<u32>,
    partials: BTreeMap<u32, Partial>,
    dups: Vec<Dup>,
    peers: HashMap<PeerKey, Bitfield>,
    rng: u64,
    /// The piece each peer was last asked to start (see `with_neighbours`).
    last_started: HashMap<PeerKey, u32>,
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
        let geo = Geometry { piece_length, total_length, pieces };
        let missing_wanted_bytes = (0..pieces).filter(|&p| !have.get(p)).map(|p| geo.piece_len(p) as u64).sum();
        Ok(Picker {
            geo,
            have: have.clone(),
            wanted: Bitfield::full(pieces),
            missing_wanted: pieces - have.count(),
            missing_wanted_bytes,
            pickable,
            avail: vec![0; pieces as usize],
            order,
            pos,
            starts: vec![0, have.count(), pieces],
            partials: BTreeMap::new(),
            dups: Vec::new(),
            peers: HashMap::new(),
            rng,
            last_started: HashMap::new(),
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

    /// Every wanted piece is verified (with nothing unselected: every piece).
    pub fn is_complete(&self) -> bool {
        self.missing_wanted == 0
    }

    /// The pieces to download.
    pub fn wanted(&self) -> &Bitfield {
        &self.wanted
    }

    /// Bytes of wanted pieces not verified yet: what the tracker's `left` reports.
    pub fn wanted_left(&self) -> u64 {
        self.missing_wanted_bytes
    }

    /// Bytes of all wanted pieces.
    pub fn wanted_bytes(&self) -> u64 {
        let have_wanted: u64 =
            self.have.iter_ones().filter(|&p| self.wanted.get(p)).map(|p| self.geo.piece_len(p) as u64).sum();
        have_wanted + self.missing_wanted_bytes
    }

    /// Makes `wanted` (one bit per piece; a set of another length is ignored) the pieces to download from now on.
    /// A piece newly wanted becomes a candidate at once; one no longer wanted is not started again, but if it is in
    /// flight its outstanding blocks are still taken and it is finished.
    pub fn set_wanted(&mut self, wanted: &Bitfield) {
        if wanted.len() != self.geo.pieces {
            return;
        }
        for p in 0..self.geo.pieces {
            let now_wanted = wanted.get(p);
            if now_wanted == self.wanted.get(p) {
                continue;
            }
            let from = self.key(p);
            if now_wanted {
                self.wanted.set(p);
            } else {
                self.wanted.clear(p);
            }
            let to = self.key(p);
            for k in from..to {
                self.move_up(p, k);
            }
            for k in (to + 1..=from).rev() {
                self.move_down(p, k);
            }
            if self.have.get(p) {
                continue;
            }
            let len = self.geo.piece_len(p) as u64;
            if now_wanted {
                self.missing_wanted += 1;
                self.missing_wanted_bytes += len;
                if !self.partials.contains_key(&p) {
                    self.pickable.set(p);
                }
            } else {
                self.missing_wanted -= 1;
                self.missing_wanted_bytes -= len;
                self.pickable.clear(p);
            }
        }
    }

    /// How many connected peers have piece `index`.
    pub fn availability(&self, index: u32) -> u32 {
        self.avail.get(index as usize).copied().unwrap_or(0)
    }

    /// The pieces a peer has, as the picker has counted them.
    pub fn peer_pieces(&self, peer: PeerKey) -> Option<&Bitfield> {
        self.peers.get(&peer)
    }

    /// Whether the peer has a wanted piece we lack, i.e. whether to be interested in it.
    pub fn is_interesting(&self, peer: PeerKey) -> bool {
        let Some(bits) = self.peers.get(&peer) else { return false };
        if self.missing_wanted == self.geo.pieces - self.have.count() {
            return bits.has_any_missing_from(&self.have);
        }
        (0..bits.word_count()).any(|w| bits.word(w) & self.wanted.word(w) & !self.have.word(w) != 0)
    }

    fn key(&self, p: u32) -> usize {
        if self.have.get(p) || !self.wanted.get(p) { 0 } else { self.avail[p as usize] as usize + 1 }
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
        self.last_started.remove(&peer);
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
                self.note_started(peer, index);
            }
        }

        if out.len() < max && self.in_endgame() {
            self.pick_duplicates(peer, max, now, &mut out);
        }
        out
    }

    /// Up to `want` pieces to start for `peer`: the rarest it has (see `choose_rarest`), and next to them or to pieces
    /// already in flight as many as rare, so that pieces complete in runs of neighbours (see `with_neighbours`).
    fn choose_new(&mut self, peer: PeerKey, want: usize) -> Vec<u32> {
        let rarest = self.choose_rarest(peer, want);
        self.with_neighbours(peer, rarest, want)
    }

    /// Extent affinity (libtorrent has it too): a piece as rare as the rarest choice and in the same `EXTENT_BYTES`
    /// as the piece this peer was last asked to start comes first (each peer works through an extent of its own, so
    /// its pieces come in order), then each rarest choice's extent, its pieces as rare as it in index
    /// order (so the choice among equals is random by extent, not by piece). So
    /// rarest-first holds (no piece comes before a rarer one), and neighbouring pieces complete together, which the
    /// disk worker writes with one call instead of one per piece (each write is a request to the device, and on a
    /// VM a costly exit).
    fn with_neighbours(&self, peer: PeerKey, rarest: Vec<u32>, want: usize) -> Vec<u32> {
        let per_extent = (EXTENT_BYTES / self.geo.piece_length as u64) as u32;
        let (Some(bits), Some(&first)) = (self.peers.get(&peer), rarest.first()) else { return rarest };
        if per_extent <= 1 {
            return rarest;
        }
        let fits = |q: u32, limit: u32| bits.get(q) && self.pickable.get(q) && self.avail[q as usize] <= limit;
        // The pieces of `p`'s extent, in index order: the worker joins a piece only to the one before it.
        let extent = |p: u32| p / per_extent * per_extent..((p / per_extent + 1) * per_extent).min(self.geo.pieces);
        let mut out = Vec::with_capacity(want);
        let limit = self.avail[first as usize];
        if let Some(&r) = self.last_started.get(&peer) {
            out.extend(extent(r).filter(|&q| fits(q, limit)));
        }
        for &p in &rarest {
            out.extend(extent(p).filter(|&q| fits(q, self.avail[p as usize])));
            out.push(p);
        }
        let mut seen = std::collections::HashSet::with_capacity(out.len());
        out.retain(|&p| seen.insert(p));
        out.truncate(want);
        out
    }

    /// Whether piece `index` is started and some of its blocks are still to come.
    pub fn is_receiving(&self, index: u32) -> bool {
        self.partials.get(&index).is_some_and(|p| p.received < p.slots.len() as u32)
    }

    /// `peer` was just asked for piece `index`: its neighbours come next from the same peer (see `with_neighbours`).
    fn note_started(&mut self, peer: PeerKey, index: u32) {
        self.last_started.insert(peer, index);
    }

    /// Up to `want` pieces to start for `peer`, rarest first, random among equals.
    fn choose_rarest(&mut self, peer: PeerKey, want: usize) -> Vec<u32> {
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
            // An unwanted piece still in flight is outside the count above: it is finished, not raced for.
            if self.avail[index as usize] > 0 && self.wanted.get(index) {
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
        if self.wanted.get(index) {
            self.missing_wanted -= 1;
            self.missing_wanted_bytes -= self.geo.piece_len(index) as u64;
        }
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

mod sweep;

#[cfg(test)]
mod tests;
