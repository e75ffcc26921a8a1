//! BEP 9 ut_metadata: the codec of its three messages, and two pure holders of state: [`MetadataFetch`], which
//! assembles a torrent's info dictionary from 16 KiB pieces asked of peers and checks it against the info hash, and
//! [`MetadataServe`], which answers peers' requests from an info dictionary we hold.
//!
//! A message is a bencoded dictionary (`msg_type`, `piece`, and for data `total_size`) followed, for data only, by
//! the piece's raw bytes.

use std::fmt;

use crate::bencode::{DecodeError, Encoder, decode_prefix};
use crate::wire;

/// Metadata travels in pieces of this size; only the last may be shorter.
pub const METADATA_PIECE_LEN: usize = 16 * 1024;
/// Info dictionaries larger than this are neither fetched nor served (a torrent of about a million pieces).
pub const MAX_METADATA_SIZE: usize = 32 << 20;
/// Pieces of the largest metadata we handle; a piece index at or past it is refused by the decoder.
pub const MAX_METADATA_PIECES: u32 = (MAX_METADATA_SIZE / METADATA_PIECE_LEN) as u32;

/// The `msg_type` values.
pub mod msg_type {
    pub const REQUEST: i64 = 0;
    pub const DATA: i64 = 1;
    pub const REJECT: i64 = 2;
}

/// How the torrent session names a peer connection (its slab key).
pub type PeerKey = usize;

/// Pieces of metadata of `size` bytes.
pub fn piece_count(size: usize) -> u32 {
    size.div_ceil(METADATA_PIECE_LEN) as u32
}

/// The length of piece `piece` of metadata of `size` bytes; `None` past the end.
pub fn piece_len(size: usize, piece: u32) -> Option<usize> {
    let start = (piece as usize).checked_mul(METADATA_PIECE_LEN).filter(|&s| s < size)?;
    Some((size - start).min(METADATA_PIECE_LEN))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMsg<'a> {
    Request {
        piece: u32,
    },
    /// `data` borrows from the decoded payload; its length matches `piece` of `total_size`.
    Data {
        piece: u32,
        total_size: i64,
        data: &'a [u8],
    },
    Reject {
        piece: u32,
    },
    /// A `msg_type` BEP 9 does not define: it must be ignored, not treated as an error.
    Unknown {
        msg_type: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataError {
    Bencode(DecodeError),
    NotADict,
    NoMsgType,
    /// `piece` missing, negative, or past the end of the metadata.
    BadPiece,
    /// `total_size` missing, not positive, or over [`MAX_METADATA_SIZE`].
    BadTotalSize,
    /// A data message whose bytes are not the length of its piece.
    WrongDataLength {
        piece: u32,
        len: usize,
    },
    /// Bytes after the dictionary of a request or reject.
    TrailingBytes,
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::Bencode(e) => write!(f, "ut_metadata message is not bencode: {e}"),
            MetadataError::NotADict => write!(f, "ut_metadata message is not a dictionary"),
            MetadataError::NoMsgType => write!(f, "ut_metadata message has no integer msg_type"),
            MetadataError::BadPiece => write!(f, "ut_metadata message has a missing or impossible piece"),
            MetadataError::BadTotalSize => {
                write!(f, "ut_metadata data has a total_size that is missing, not positive or over the limit")
            }
            MetadataError::WrongDataLength { piece, len } => {
                write!(f, "ut_metadata data for piece {piece} has {len} bytes, not the piece's length")
            }
            MetadataError::TrailingBytes => write!(f, "ut_metadata request or reject has bytes after its dictionary"),
        }
    }
}

impl std::error::Error for MetadataError {}

impl<'a> MetadataMsg<'a> {
    /// Decodes the payload after the extended message id byte.
    pub fn decode(payload: &'a [u8]) -> Result<MetadataMsg<'a>, MetadataError> {
        let (dict, used) = decode_prefix(payload).map_err(MetadataError::Bencode)?;
        if !dict.is_dict() {
            return Err(MetadataError::NotADict);
        }
        let rest = &payload[used..];
        let kind = dict.get("msg_type").and_then(|v| v.as_int()).ok_or(MetadataError::NoMsgType)?;
        if !(msg_type::REQUEST..=msg_type::REJECT).contains(&kind) {
            return Ok(MetadataMsg::Unknown { msg_type: kind });
        }
        let piece = dict
            .get("piece")
            .and_then(|v| v.as_int())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p < MAX_METADATA_PIECES)
            .ok_or(MetadataError::BadPiece)?;
        if kind != msg_type::DATA {
            if !rest.is_empty() {
                return Err(MetadataError::TrailingBytes);
            }
            return Ok(if kind == msg_type::REQUEST {
                MetadataMsg::Request { piece }
            } else {
                MetadataMsg::Reject { piece }
            });
        }
        let total_size = dict
            .get("total_size")
            .and_then(|v| v.as_int())
            .filter(|&t| t > 0 && t as u64 <= MAX_METADATA_SIZE as u64)
            .ok_or(MetadataError::BadTotalSize)?;
        let expected = piece_len(total_size as usize, piece).ok_or(MetadataError::BadPiece)?;
        if rest.len() != expected {
            return Err(MetadataError::WrongDataLength { piece, len: rest.len() });
        }
        Ok(MetadataMsg::Data { piece, total_size, data: rest })
    }

    /// Appends the whole wire message (length prefix, id 20, the peer's id for ut_metadata, dictionary, data).
    pub fn encode(&self, peer_ut_metadata: u8, out: &mut Vec<u8>) {
        let mut payload = vec![peer_ut_metadata];
        let mut e = Encoder { out: &mut payload };
        e.begin_dict();
        match *self {
            MetadataMsg::Request { piece } => e.str("msg_type").int(msg_type::REQUEST).str("piece").int(piece.into()),
            MetadataMsg::Reject { piece } => e.str("msg_type").int(msg_type::REJECT).str("piece").int(piece.into()),
            MetadataMsg::Data { piece, total_size, .. } => {
                e.str("msg_type").int(msg_type::DATA).str("piece").int(piece.into()).str("total_size").int(total_size)
            }
            MetadataMsg::Unknown { msg_type } => e.str("msg_type").int(msg_type),
        };
        e.end();
        if let MetadataMsg::Data { data, .. } = self {
            payload.extend_from_slice(data);
        }
        wire::encode_other(out, wire::id::EXTENDED, &payload);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// A `metadata_size` of 0, negative, or over [`MAX_METADATA_SIZE`].
    BadSize(i64),
    /// Data for a piece past the end, already received, or not asked of this peer.
    NotRequested {
        piece: u32,
    },
    WrongLength {
        piece: u32,
        len: usize,
    },
    /// Every piece came in but the whole does not hash to the info hash. Everything was dropped; these peers sent
    /// pieces of it (one or more of them lied or has other metadata).
    HashMismatch {
        peers: Vec<PeerKey>,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::BadSize(n) => {
                write!(f, "metadata size {n} is not between 1 byte and the {} MiB limit", MAX_METADATA_SIZE >> 20)
            }
            FetchError::NotRequested { piece } => write!(f, "metadata piece {piece} was not asked of this peer"),
            FetchError::WrongLength { piece, len } => write!(f, "metadata piece {piece} has a wrong length ({len})"),
            FetchError::HashMismatch { peers } => {
                write!(f, "metadata from {} peer(s) does not match the info hash", peers.len())
            }
        }
    }
}

impl std::error::Error for FetchError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Missing,
    Asked(PeerKey),
    Have(Vec<u8>, PeerKey),
}

/// A leecher assembling the info dictionary. The caller asks [`next_piece_to_request`](Self::next_piece_to_request)
/// for each peer that has ut_metadata, feeds data in, and [`released`](Self::released) a piece whose request was
/// rejected or timed out (or [`peer_gone`](Self::peer_gone) for every piece asked of a closed connection).
#[derive(Debug, Clone)]
pub struct MetadataFetch {
    info_hash: [u8; 20],
    size: usize,
    slots: Vec<Slot>,
    have: u32,
    done: bool,
}

impl MetadataFetch {
    /// `size` is the `metadata_size` a peer announced.
    pub fn new(info_hash: [u8; 20], size: i64) -> Result<MetadataFetch, FetchError> {
        let ok = usize::try_from(size).ok().filter(|&s| s > 0 && s <= MAX_METADATA_SIZE);
        let size = ok.ok_or(FetchError::BadSize(size))?;
        Ok(MetadataFetch {
            info_hash,
            size,
            slots: vec![Slot::Missing; piece_count(size) as usize],
            have: 0,
            done: false,
        })
    }

    /// A piece neither received nor in flight, now marked as asked of `peer`; `None` when there is none.
    pub fn next_piece_to_request(&mut self, peer: PeerKey) -> Option<u32> {
        if self.done {
            return None;
        }
        let i = self.slots.iter().position(|s| *s == Slot::Missing)?;
        self.slots[i] = Slot::Asked(peer);
        Some(i as u32)
    }

    /// The request for `piece` was rejected or timed out: it may be asked again, of anyone.
    pub fn released(&mut self, piece: u32) {
        if let Some(slot @ Slot::Asked(_)) = self.slots.get_mut(piece as usize) {
            *slot = Slot::Missing;
        }
    }

    /// Releases every piece in flight to `peer` (its connection closed).
    pub fn peer_gone(&mut self, peer: PeerKey) {
        for slot in &mut self.slots {
            if *slot == Slot::Asked(peer) {
                *slot = Slot::Missing;
            }
        }
    }

    /// Takes piece `piece` from `peer`. When it was the last one and the whole hashes to the info hash, returns the
    /// info dictionary's bytes (and asks for nothing more); on a mismatch, drops every piece and names who sent them.
    pub fn on_data(&mut self, peer: PeerKey, piece: u32, data: &[u8]) -> Result<Option<Vec<u8>>, FetchError> {
        let expected = piece_len(self.size, piece);
        let slot = self.slots.get_mut(piece as usize).filter(|s| **s == Slot::Asked(peer));
        let (Some(slot), Some(expected)) = (slot, expected) else { return Err(FetchError::NotRequested { piece }) };
        if data.len() != expected {
            *slot = Slot::Missing;
            return Err(FetchError::WrongLength { piece, len: data.len() });
        }
        *slot = Slot::Have(data.to_vec(), peer);
        self.have += 1;
        if self.have < self.pieces_total() {
            return Ok(None);
        }
        let mut whole = Vec::with_capacity(self.size);
        let mut peers = Vec::new();
        for slot in std::mem::replace(&mut self.slots, vec![Slot::Missing; piece_count(self.size) as usize]) {
            if let Slot::Have(bytes, from) = slot {
                whole.extend_from_slice(&bytes);
                peers.push(from);
            }
        }
        self.have = 0;
        if crate::sha1::digest(&whole) == self.info_hash {
            self.done = true;
            return Ok(Some(whole));
        }
        peers.sort_unstable();
        peers.dedup();
        Err(FetchError::HashMismatch { peers })
    }

    pub fn pieces_have(&self) -> u32 {
        if self.done { self.pieces_total() } else { self.have }
    }

    pub fn pieces_total(&self) -> u32 {
        piece_count(self.size)
    }

    /// Distinct peers that sent a piece we hold or have one in flight.
    pub fn peers_involved(&self) -> usize {
        let mut keys: Vec<PeerKey> = self
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Missing => None,
                Slot::Asked(k) | Slot::Have(_, k) => Some(*k),
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.len()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// Answers peers' metadata requests from the info dictionary we hold, if we hold one.
/// It borrows the dictionary from whoever keeps it (the torrent's metainfo), so serving costs no copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetadataServe<'a> {
    info: Option<&'a [u8]>,
}

impl<'a> MetadataServe<'a> {
    /// `info` is the raw info dictionary, already known to match the info hash; one over [`MAX_METADATA_SIZE`] is not
    /// served (peers could not fetch it anyway).
    pub fn new(info: Option<&'a [u8]>) -> MetadataServe<'a> {
        MetadataServe { info: info.filter(|i| !i.is_empty() && i.len() <= MAX_METADATA_SIZE) }
    }

    /// What to announce as `metadata_size` in our extended handshake.
    pub fn size(&self) -> Option<i64> {
        self.info.map(|i| i.len() as i64)
    }

    /// Appends the answer to a request for `piece`: its data, or a reject when we have no metadata or no such piece.
    pub fn answer(&self, piece: u32, peer_ut_metadata: u8, out: &mut Vec<u8>) {
        let slice = self.info.and_then(|info| {
            let len = piece_len(info.len(), piece)?;
            let start = piece as usize * METADATA_PIECE_LEN;
            Some((info, &info[start..start + len]))
        });
        let msg = match slice {
            Some((info, data)) => MetadataMsg::Data { piece, total_size: info.len() as i64, data },
            None => MetadataMsg::Reject { piece },
        };
        msg.encode(peer_ut_metadata, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::XorShift;
    use crate::wire::{Limits, Message};

    /// The payload after the length prefix, id 20 and the extended id, checking the frame on the way.
    fn unframe(framed: &[u8], ext_id: u8) -> &[u8] {
        let (msg, used) = wire::decode(framed, &Limits::new(1)).unwrap().unwrap();
        assert_eq!(used, framed.len());
        let Message::Extended { ext_id: got, .. } = msg else { panic!("{msg:?}") };
        assert_eq!(got, ext_id);
        &framed[6..]
    }

    fn encoded(msg: MetadataMsg<'_>, ext_id: u8) -> Vec<u8> {
        let mut out = Vec::new();
        msg.encode(ext_id, &mut out);
        out
    }

    #[test]
    fn pieces_of_16_kib() {
        assert_eq!((piece_count(1), piece_count(16384), piece_count(16385)), (1, 1, 2));
        assert_eq!(piece_count(MAX_METADATA_SIZE), MAX_METADATA_PIECES);
        assert_eq!((piece_len(16385, 0), piece_len(16385, 1), piece_len(16385, 2)), (Some(16384), Some(1), None));
        assert_eq!(piece_len(16384, 1), None);
        assert_eq!(piece_len(10, u32::MAX), None);
    }

    #[test]
    fn encodes_bep_9_examples() {
        assert_eq!(unframe(&encoded(MetadataMsg::Request { piece: 0 }, 3), 3), b"d8:msg_typei0e5:piecei0ee");
        assert_eq!(unframe(&encoded(MetadataMsg::Reject { piece: 7 }, 3), 3), b"d8:msg_typei2e5:piecei7ee");
        let data = MetadataMsg::Data { piece: 1, total_size: 16386, data: b"xy" };
        assert_eq!(unframe(&encoded(data, 9), 9), b"d8:msg_typei1e5:piecei1e10:total_sizei16386eexy");
    }

    #[test]
    fn every_message_reads_back_and_frames_at_every_split() {
        let big = vec![0xabu8; METADATA_PIECE_LEN];
        let msgs = [
            MetadataMsg::Request { piece: 0 },
            MetadataMsg::Request { piece: MAX_METADATA_PIECES - 1 },
            MetadataMsg::Reject { piece: 5 },
            MetadataMsg::Data { piece: 0, total_size: 16384 * 2 + 1, data: &big },
            MetadataMsg::Data { piece: 2, total_size: 16384 * 2 + 1, data: &[1] },
            MetadataMsg::Data { piece: 0, total_size: 1, data: &[0] },
            MetadataMsg::Unknown { msg_type: 3 },
            MetadataMsg::Unknown { msg_type: -1 },
        ];
        let limits = Limits::new(1);
        for msg in msgs {
            let framed = encoded(msg, 4);
            assert_eq!(MetadataMsg::decode(unframe(&framed, 4)), Ok(msg));
            for cut in 0..framed.len() {
                assert_eq!(wire::decode(&framed[..cut], &limits), Ok(None), "{msg:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn reads_keys_in_any_order_and_ignores_unknown_ones() {
        let msg = MetadataMsg::decode(b"d5:piecei2e1:xi1e8:msg_typei2ee").unwrap();
        assert_eq!(msg, MetadataMsg::Reject { piece: 2 });
        assert_eq!(MetadataMsg::decode(b"d8:msg_typei9ee"), Ok(MetadataMsg::Unknown { msg_type: 9 }));
    }

    #[test]
    fn refuses_hostile_fields() {
        let long = format!("d8:msg_typei1e5:piecei0e10:total_sizei{}ee", MAX_METADATA_SIZE + 1);
        let cases: &[(&[u8], MetadataError)] = &[
            (b"le", MetadataError::NotADict),
            (b"de", MetadataError::NoMsgType),
            (b"d8:msg_type1:0e", MetadataError::NoMsgType),
            (b"d8:msg_typei0ee", MetadataError::BadPiece),
            (b"d8:msg_typei0e5:piecei-1ee", MetadataError::BadPiece),
            (b"d8:msg_typei0e5:piecei2048ee", MetadataError::BadPiece),
            (b"d8:msg_typei0e5:piecei4294967296ee", MetadataError::BadPiece),
            (b"d8:msg_typei0e5:piecei0eex", MetadataError::TrailingBytes),
            (b"d8:msg_typei2e5:piecei0eex", MetadataError::TrailingBytes),
            (b"d8:msg_typei1e5:piecei0eex", MetadataError::BadTotalSize),
            (b"d8:msg_typei1e5:piecei0e10:total_sizei0eex", MetadataError::BadTotalSize),
            (b"d8:msg_typei1e5:piecei0e10:total_sizei-9eex", MetadataError::BadTotalSize),
            (long.as_bytes(), MetadataError::BadTotalSize),
            (b"d8:msg_typei1e5:piecei1e10:total_sizei5eexxxxx", MetadataError::BadPiece),
            (b"d8:msg_typei1e5:piecei0e10:total_sizei5eexxxx", MetadataError::WrongDataLength { piece: 0, len: 4 }),
            (b"d8:msg_typei1e5:piecei0e10:total_sizei5eexxxxxx", MetadataError::WrongDataLength { piece: 0, len: 6 }),
        ];
        for (input, want) in cases {
            assert_eq!(MetadataMsg::decode(input).as_ref(), Err(want), "{}", String::from_utf8_lossy(input));
            assert!(!want.to_string().contains('\n'));
        }
        for bad in [&b""[..], b"d", b"d8:msg_typei0e5:piecei0e", b"i1e"] {
            assert!(MetadataMsg::decode(bad).is_err());
        }
    }

    /// An info dictionary of `len` bytes (not real bencode: only its hash matters here) and its hash.
    fn info(len: usize) -> (Vec<u8>, [u8; 20]) {
        let bytes = crate::test_data::bytes(len, len as u64);
        let hash = crate::sha1::digest(&bytes);
        (bytes, hash)
    }

    fn piece(info: &[u8], i: u32) -> &[u8] {
        let start = i as usize * METADATA_PIECE_LEN;
        &info[start..start + piece_len(info.len(), i).unwrap()]
    }

    #[test]
    fn fetch_refuses_impossible_sizes() {
        for n in [0, -1, i64::MIN, MAX_METADATA_SIZE as i64 + 1, i64::MAX] {
            assert_eq!(MetadataFetch::new([0; 20], n).unwrap_err(), FetchError::BadSize(n));
        }
        assert_eq!(MetadataFetch::new([0; 20], MAX_METADATA_SIZE as i64).unwrap().pieces_total(), 2048);
    }

    #[test]
    fn fetch_assembles_from_several_peers_and_verifies() {
        let (bytes, hash) = info(3 * METADATA_PIECE_LEN + 100);
        let mut f = MetadataFetch::new(hash, bytes.len() as i64).unwrap();
        assert_eq!((f.pieces_have(), f.pieces_total(), f.peers_involved()), (0, 4, 0));
        assert_eq!(f.next_piece_to_request(1), Some(0));
        assert_eq!(f.next_piece_to_request(2), Some(1));
        assert_eq!(f.next_piece_to_request(2), Some(2));
        assert_eq!(f.next_piece_to_request(3), Some(3));
        assert_eq!(f.next_piece_to_request(4), None, "all in flight");
        assert_eq!(f.peers_involved(), 3);
        // Peer 3 rejects: piece 3 goes to peer 4.
        f.released(3);
        assert_eq!(f.next_piece_to_request(4), Some(3));
        // Data not asked of that peer, past the end, of the wrong length.
        assert_eq!(f.on_data(1, 1, piece(&bytes, 1)), Err(FetchError::NotRequested { piece: 1 }));
        assert_eq!(f.on_data(3, 3, piece(&bytes, 3)), Err(FetchError::NotRequested { piece: 3 }));
        assert_eq!(f.on_data(1, 4, &[0; 100]), Err(FetchError::NotRequested { piece: 4 }));
        assert_eq!(f.on_data(1, u32::MAX, &[]), Err(FetchError::NotRequested { piece: u32::MAX }));
        assert_eq!(f.on_data(1, 0, &[0; 10]), Err(FetchError::WrongLength { piece: 0, len: 10 }));
        assert_eq!(f.next_piece_to_request(1), Some(0), "a wrong-length piece is asked again");
        for (peer, i) in [(1, 0), (2, 1), (4, 3)] {
            assert_eq!(f.on_data(peer, i, piece(&bytes, i)), Ok(None));
        }
        assert_eq!(f.on_data(2, 1, piece(&bytes, 1)), Err(FetchError::NotRequested { piece: 1 }), "twice");
        assert_eq!((f.pieces_have(), f.peers_involved()), (3, 3));
        assert_eq!(f.on_data(2, 2, piece(&bytes, 2)), Ok(Some(bytes.clone())));
        assert!(f.is_done());
        assert_eq!((f.pieces_have(), f.next_piece_to_request(1)), (4, None));
        assert_eq!(f.on_data(2, 2, piece(&bytes, 2)), Err(FetchError::NotRequested { piece: 2 }));
    }

    #[test]
    fn fetch_names_the_senders_of_a_bad_whole_and_starts_over() {
        let (bytes, hash) = info(METADATA_PIECE_LEN + 1);
        let mut f = MetadataFetch::new(hash, bytes.len() as i64).unwrap();
        assert_eq!((f.next_piece_to_request(7), f.next_piece_to_request(5)), (Some(0), Some(1)));
        assert_eq!(f.on_data(7, 0, piece(&bytes, 0)), Ok(None));
        assert_eq!(f.on_data(5, 1, &[!bytes[METADATA_PIECE_LEN]]), Err(FetchError::HashMismatch { peers: vec![5, 7] }));
        assert_eq!((f.pieces_have(), f.peers_involved(), f.is_done()), (0, 0, false));
        assert_eq!((f.next_piece_to_request(8), f.next_piece_to_request(8)), (Some(0), Some(1)));
        assert_eq!(f.on_data(8, 1, piece(&bytes, 1)), Ok(None));
        assert_eq!(f.on_data(8, 0, piece(&bytes, 0)), Ok(Some(bytes)));
    }

    #[test]
    fn fetch_releases_a_closed_peers_pieces() {
        let (bytes, hash) = info(3 * METADATA_PIECE_LEN);
        let mut f = MetadataFetch::new(hash, bytes.len() as i64).unwrap();
        let asked: Vec<_> = [1, 2, 1].iter().map(|&p| f.next_piece_to_request(p)).collect();
        assert_eq!(asked, [Some(0), Some(1), Some(2)]);
        f.peer_gone(1);
        f.released(1);
        f.released(99);
        assert_eq!(f.peers_involved(), 0);
        assert_eq!(f.on_data(1, 0, piece(&bytes, 0)), Err(FetchError::NotRequested { piece: 0 }));
        assert_eq!((f.next_piece_to_request(3), f.next_piece_to_request(3)), (Some(0), Some(1)));
    }

    #[test]
    fn serve_answers_data_or_reject() {
        let (bytes, _) = info(METADATA_PIECE_LEN + 5);
        let serve = MetadataServe::new(Some(&bytes));
        assert_eq!(serve.size(), Some(bytes.len() as i64));
        for (i, want) in
            [(0, Some(piece(&bytes, 0))), (1, Some(piece(&bytes, 1))), (2, None), (MAX_METADATA_PIECES - 1, None)]
        {
            let mut out = Vec::new();
            serve.answer(i, 6, &mut out);
            let msg = MetadataMsg::decode(unframe(&out, 6)).unwrap();
            match want {
                Some(data) => assert_eq!(msg, MetadataMsg::Data { piece: i, total_size: bytes.len() as i64, data }),
                None => assert_eq!(msg, MetadataMsg::Reject { piece: i }),
            }
        }
        for none in [MetadataServe::new(None), MetadataServe::new(Some(&[])), MetadataServe::default()] {
            let mut out = Vec::new();
            none.answer(0, 6, &mut out);
            assert_eq!(MetadataMsg::decode(unframe(&out, 6)), Ok(MetadataMsg::Reject { piece: 0 }));
            assert_eq!(none.size(), None);
        }
        assert_eq!(MetadataServe::new(Some(&vec![0; MAX_METADATA_SIZE + 1])).size(), None);
    }

    #[test]
    fn serve_and_fetch_agree() {
        let (bytes, hash) = info(5 * METADATA_PIECE_LEN - 3);
        let serve = MetadataServe::new(Some(&bytes));
        let mut f = MetadataFetch::new(hash, serve.size().unwrap()).unwrap();
        let mut result = None;
        while let Some(i) = f.next_piece_to_request(0) {
            let mut out = Vec::new();
            serve.answer(i, 1, &mut out);
            let MetadataMsg::Data { piece, data, .. } = MetadataMsg::decode(&out[6..]).unwrap() else { panic!() };
            result = f.on_data(0, piece, data).unwrap();
        }
        assert_eq!(result, Some(bytes));
    }

    /// Never panics on random bytes or mutated messages; whatever decodes keeps its promises (piece in range, data of
    /// exactly its piece's length, total size within the limit).
    #[test]
    fn never_panics_on_hostile_input() {
        let data = vec![7u8; 300];
        let valid: Vec<Vec<u8>> = [
            MetadataMsg::Request { piece: 3 },
            MetadataMsg::Reject { piece: 0 },
            MetadataMsg::Data { piece: 1, total_size: 16384 + 300, data: &data },
            MetadataMsg::Unknown { msg_type: 5 },
        ]
        .iter()
        .map(|m| encoded(*m, 1)[6..].to_vec())
        .collect();
        let mut rng = XorShift(5);
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 4 == 0 {
                (0..rng.below(60)).map(|_| rng.next() as u8).collect()
            } else {
                let pick = rng.below(valid.len());
                rng.mutated(&valid[pick], 4, |r| b"de0123456789i:-"[r.below(15)])
            };
            match MetadataMsg::decode(&input) {
                Ok(MetadataMsg::Data { piece, total_size, data }) => {
                    assert!(total_size > 0 && total_size as usize <= MAX_METADATA_SIZE);
                    assert_eq!(Some(data.len()), piece_len(total_size as usize, piece));
                }
                Ok(MetadataMsg::Request { piece } | MetadataMsg::Reject { piece }) => {
                    assert!(piece < MAX_METADATA_PIECES)
                }
                _ => {}
            }
        }
    }
}
