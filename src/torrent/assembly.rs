//! Pieces being put together from blocks, and who to blame when one fails its hash.
//!
//! A block is copied once, from the socket buffer into its piece's buffer; a whole piece is handed back to the
//! session, which gives its bytes to the disk worker to hash and store while its senders wait here for the verdict. When a piece that several peers contributed to fails, blaming them all would ban honest
//! peers alongside a liar, so the digest of each block is remembered with its sender until a good copy of the piece
//! shows which block was wrong.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::picker::BLOCK_LEN;
use crate::storage::PieceBytes;

/// Bytes of piece buffers kept for reuse, so a busy download does not allocate and free a piece per piece: as many as
/// can wait for the disk worker (`MAX_UNWRITTEN`) and a few more, since a batch of them comes back at once (freed
/// buffers go back to the OS, and on a VM the first touch of fresh memory is slow).
const SPARE_PIECE_BYTES: usize = 6 << 20;
/// Bytes of pieces just written kept to serve to the peers that lack them (see `Assembly::keep_written`). Written
/// past the page cache, a piece would otherwise be read back from the device by each peer that asks for it, and in
/// a swarm the pieces asked for are mostly the ones just announced. In the 8-leecher swarm of 256 MiB on this VM the
/// leeches read 200–800 MiB back from the device without it, 60–70 MiB with 4 MiB kept (17–36 MiB with 8 MiB, at
/// 4 MiB more of peak memory each).
const SERVED_PIECE_BYTES: usize = 4 << 20;
/// Spares kept whatever the piece size, so large pieces still reuse buffers.
const MIN_SPARE_PIECE_BUFFERS: usize = 2;
/// Pieces that failed their hash with several senders, remembered until a good copy shows which block was bad.
const MAX_SUSPECT_PIECES: usize = 64;
/// Failed attempts remembered per suspect piece.
const MAX_SUSPECT_ATTEMPTS: usize = 4;

/// One connection, told apart from later ones with the same slab key by its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    pub generation: u64,
    pub addr: SocketAddr,
}

/// A piece being assembled from blocks.
pub struct PieceBuf {
    pub data: PieceBytes,
    /// Who sent each block, by block slot, to blame if the piece fails its hash.
    senders: Vec<Option<Sender>>,
}

impl PieceBuf {
    /// Every connection that sent a block of this piece, once each.
    pub fn senders(&self) -> Vec<Sender> {
        let mut senders: Vec<Sender> = self.senders.iter().flatten().copied().collect();
        senders.sort_unstable_by_key(|s| s.generation);
        senders.dedup();
        senders
    }
}

/// A block of a piece that failed its hash while several peers had sent blocks of it.
struct Suspect {
    slot: u32,
    sender: Sender,
    digest: [u8; 20],
}

/// What a failed piece says about its senders.
#[derive(Debug, PartialEq, Eq)]
pub enum Blame {
    /// One peer sent the whole piece: it lied.
    Liar(Sender),
    /// Several did: their blocks are remembered until a good copy arrives (see [`Assembly::convict`]).
    Suspected(usize),
}

#[derive(Default)]
pub struct Assembly {
    pieces: HashMap<u32, PieceBuf>,
    /// Senders of the pieces whose bytes are with the disk worker, by piece, until its verdict.
    verifying: HashMap<u32, Vec<Option<Sender>>>,
    /// Blocks of pieces that failed with several senders, by piece.
    suspects: HashMap<u32, Vec<Suspect>>,
    /// Oldest first.
    spare_buffers: VecDeque<Spare>,
}

/// A piece buffer not in use.
struct Spare {
    /// The piece it holds as written, if it holds one.
    piece: Option<u32>,
    /// Peers lacked that piece when it was written: keep it to serve them (within `SERVED_PIECE_BYTES`).
    served: bool,
    data: PieceBytes,
}

impl Assembly {
    /// Copies a block into piece `index` (`piece_len` bytes long); it must lie inside the piece.
    pub fn add_block(&mut self, index: u32, piece_len: usize, begin: u32, data: &[u8], sender: Sender) {
        let spare = &mut self.spare_buffers;
        let buf = self.pieces.entry(index).or_insert_with(|| {
            let mut data = take_spare(spare, piece_len).unwrap_or_default();
            data.set_len(piece_len);
            PieceBuf { data, senders: vec![None; piece_len.div_ceil(BLOCK_LEN as usize)] }
        });
        buf.data.put(begin as usize, data);
        buf.senders[(begin / BLOCK_LEN) as usize] = Some(sender);
    }

    /// A whole piece as if its blocks had arrived from `senders`, one per block slot.
    #[cfg(test)]
    pub fn insert(&mut self, index: u32, data: Vec<u8>, senders: Vec<Option<Sender>>) {
        self.pieces.insert(index, PieceBuf { data: data.into(), senders });
    }

    /// No piece is being assembled.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The piece, once all its blocks are in.
    pub fn take(&mut self, index: u32) -> Option<PieceBuf> {
        self.pieces.remove(&index)
    }

    /// A whole piece goes to be verified: its senders stay here, its bytes are returned to be handed over.
    pub fn hand_over(&mut self, index: u32, buf: PieceBuf) -> PieceBytes {
        self.verifying.insert(index, buf.senders);
        buf.data
    }

    /// The bytes of piece `index` are back with a verdict: the piece as it was handed over, with its senders.
    pub fn returned(&mut self, index: u32, data: PieceBytes) -> PieceBuf {
        let senders = self.verifying.remove(&index).unwrap_or_default();
        PieceBuf { data, senders }
    }

    /// The disk worker is gone with every piece it held: their senders are forgotten.
    pub fn forget_handed_over(&mut self) {
        self.verifying.clear();
    }

    /// A piece is done with (thrown away): keep its buffer for the next one.
    pub fn recycle(&mut self, buf: PieceBuf) {
        self.recycle_data(buf.data);
    }

    /// A piece's buffer is back from the disk worker (or thrown away): keep it for the next one.
    pub fn recycle_data(&mut self, data: PieceBytes) {
        self.keep_spare(Spare { piece: None, served: false, data });
    }

    /// Piece `index` is written: keep its buffer for the next piece, and its bytes to serve until then. `served`:
    /// peers lack the piece, so its bytes are worth keeping a while (new pieces get new buffers rather than this one,
    /// within `SERVED_PIECE_BYTES`).
    pub fn keep_written(&mut self, index: u32, data: PieceBytes, served: bool) {
        self.keep_spare(Spare { piece: Some(index), served, data });
    }

    fn keep_spare(&mut self, spare: Spare) {
        // Kept as it is, not zeroed: a piece is hashed only once all its blocks have overwritten every byte, and
        // zeroing a piece per piece was 4% of a download's instructions.
        self.spare_buffers.push_back(spare);
        let bytes = |served: bool| -> usize {
            self.spare_buffers.iter().filter(|s| s.served == served).map(|s| s.data.len()).sum()
        };
        let (mut idle, mut kept) = (bytes(false), bytes(true));
        while self.spare_buffers.len() > MIN_SPARE_PIECE_BUFFERS
            && (idle > SPARE_PIECE_BYTES || kept > SERVED_PIECE_BYTES)
        {
            // The oldest of the kind over its bound goes.
            let over_served = kept > SERVED_PIECE_BYTES;
            let Some(at) = self.spare_buffers.iter().position(|s| s.served == over_served) else { break };
            let gone = self.spare_buffers.remove(at).map_or(0, |s| s.data.len());
            if over_served {
                kept -= gone;
            } else {
                idle -= gone;
            }
        }
    }

    /// Frees the spare buffers (the download is complete).
    pub fn drop_spares(&mut self) {
        self.spare_buffers = VecDeque::new();
    }

    /// `length` bytes at `begin` of piece `index`, if a spare buffer still holds that piece as written (and the range
    /// is one `Storage::read_block` would serve; otherwise that call says what is wrong with it).
    pub fn written_block(&self, index: u32, begin: u32, length: u32) -> Option<&[u8]> {
        if length == 0 || length > crate::storage::MAX_BLOCK {
            return None;
        }
        let spare = self.spare_buffers.iter().rev().find(|s| s.piece == Some(index))?;
        spare.data.get(begin as usize..begin as usize + length as usize)
    }

    /// Piece `index` failed its hash: a sole sender is the liar; with several, their blocks are remembered, within
    /// bounds.
    pub fn failed(&mut self, index: u32, buf: &PieceBuf) -> Blame {
        let senders = buf.senders();
        if let [liar] = senders[..] {
            return Blame::Liar(liar);
        }
        if self.suspects.len() >= MAX_SUSPECT_PIECES && !self.suspects.contains_key(&index) {
            return Blame::Suspected(senders.len());
        }
        let list = self.suspects.entry(index).or_default();
        if list.len() < MAX_SUSPECT_ATTEMPTS * buf.senders.len() {
            for (slot, sender) in buf.senders.iter().enumerate() {
                if let Some(sender) = *sender {
                    let digest = crate::sha1::digest(block_of(&buf.data, slot));
                    list.push(Suspect { slot: slot as u32, sender, digest });
                }
            }
        }
        Blame::Suspected(senders.len())
    }

    /// A good copy of piece `index` is in: whoever sent a block of an earlier, failed copy that differs from it lied.
    pub fn convict(&mut self, index: u32, good: &[u8]) -> Vec<Sender> {
        let Some(list) = self.suspects.remove(&index) else { return Vec::new() };
        let mut liars: Vec<Sender> = list
            .iter()
            .filter(|s| crate::sha1::digest(block_of(good, s.slot as usize)) != s.digest)
            .map(|s| s.sender)
            .collect();
        liars.sort_unstable_by_key(|s| s.generation);
        liars.dedup();
        liars
    }
}

/// A buffer for a new piece of `len` bytes: the oldest spare that holds nothing worth serving; else none (a new one)
/// while the pieces kept to serve are within `SERVED_PIECE_BYTES` with room for one more; else the oldest.
fn take_spare(spares: &mut VecDeque<Spare>, len: usize) -> Option<PieceBytes> {
    if let Some(at) = spares.iter().position(|s| !s.served) {
        return spares.remove(at).map(|s| s.data);
    }
    let kept: usize = spares.iter().map(|s| s.data.len()).sum();
    if kept + len <= SERVED_PIECE_BYTES {
        return None;
    }
    spares.pop_front().map(|s| s.data)
}

/// Block `slot` of a piece's bytes.
fn block_of(piece: &[u8], slot: usize) -> &[u8] {
    let begin = (slot * BLOCK_LEN as usize).min(piece.len());
    &piece[begin..(begin + BLOCK_LEN as usize).min(piece.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u8) -> PieceBytes {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
    }

    #[test]
    fn a_written_piece_serves_its_blocks_until_its_buffer_is_reused() {
        let mut a = Assembly::default();
        let len = 256 * 1024;
        a.keep_written(7, bytes(len, 1), false);
        a.recycle_data(bytes(len, 2));
        assert_eq!(a.written_block(7, 16384, 16384), Some(&bytes(len, 1)[16384..32768]));
        assert_eq!(a.written_block(7, len as u32 - 100, 200), None, "past the end");
        assert_eq!(a.written_block(7, 0, 0), None, "empty");
        assert_eq!(a.written_block(7, 0, crate::storage::MAX_BLOCK + 1), None, "too long");
        assert_eq!(a.written_block(8, 0, 16384), None, "a piece never held");
        // Buffers are reused oldest first: piece 7's goes to the next piece, and with it the bytes it served.
        let sender = Sender { generation: 1, addr: "127.0.0.1:1".parse().unwrap() };
        a.add_block(9, len, 0, &[5; 16384], sender);
        assert_eq!(a.written_block(7, 0, 16384), None);
        // Spares are bounded: the oldest go first.
        for i in 0..100 {
            a.keep_written(100 + i, bytes(len, 3), i % 2 == 0);
        }
        let kept = |served: bool| a.spare_buffers.iter().filter(|s| s.served == served).count() * len;
        assert!(kept(false) <= SPARE_PIECE_BYTES && kept(true) <= SERVED_PIECE_BYTES);
        assert!(a.written_block(199, 0, 16384).is_some());
        assert!(a.written_block(198, 0, 16384).is_some());
        assert!(a.written_block(100, 0, 16384).is_none());
        // Kept: the newest served (even) pieces and the newest idle (odd) ones, each within its bound.
        let oldest_served = 200 - 2 * (SERVED_PIECE_BYTES / len) as u32;
        let oldest_idle = 201 - 2 * (SPARE_PIECE_BYTES / len) as u32;
        for (oldest, step) in [(oldest_served, 2), (oldest_idle, 2)] {
            assert!(a.written_block(oldest, 0, 16384).is_some() && a.written_block(oldest - step, 0, 16384).is_none());
        }
        // A new piece takes the oldest buffer nobody needs, not one kept to serve, even an older one.
        let mut b = Assembly::default();
        b.keep_written(1, bytes(len, 1), true);
        b.keep_written(2, bytes(len, 2), false);
        b.add_block(3, len, 0, &[5; 16384], sender);
        assert!(b.written_block(1, 0, 16384).is_some() && b.written_block(2, 0, 16384).is_none());
        a.drop_spares();
        assert!(a.spare_buffers.is_empty() && a.written_block(199, 0, 16384).is_none());
    }
}
