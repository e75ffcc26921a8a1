//! The peer wire protocol (BEP 3, plus the BEP 5 `port` message): the handshake and the length-prefixed messages.
//!
//! Pure functions over byte slices. `decode` answers `Ok(None)` when more bytes are needed and `Err` when the bytes can
//! never become a valid message, so the caller closes the connection. Every length prefix is judged against `Limits`
//! as soon as its message id is known, before the body is awaited, so a peer cannot make us buffer more than
//! `Limits::max_frame_len` bytes. Decoded messages borrow from the input: a 16 KiB block is never copied here.

use std::fmt;

use crate::bitfield;

/// The protocol string every BitTorrent handshake starts with, after its length byte.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// Length of a handshake: 1 + 19 + 8 reserved + 20 info hash + 20 peer id.
pub const HANDSHAKE_LEN: usize = 68;
/// Length prefix + id + index + begin: the bytes in front of a block's data in a `piece` message.
pub const PIECE_HEADER_LEN: usize = 13;
/// The block size every client requests; BEP 3 peers may close on larger requests.
pub const DEFAULT_MAX_BLOCK_LEN: u32 = 16 * 1024;
/// Bound on the payload of a message id we do not implement. The largest known extension messages are BEP 9
/// metadata pieces and BEP 52 hash replies, a 16 KiB block plus a small bencoded header; 64 KiB leaves room for
/// unusual extension handshakes while keeping a connection's receive buffer small.
pub const DEFAULT_MAX_UNKNOWN_LEN: u32 = 64 * 1024;

/// Message ids (BEP 3, BEP 5 for `port`, BEP 6 fast 13..=17, BEP 10 for `extended`).
pub mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 13;
    pub const HAVE_ALL: u8 = 14;
    pub const HAVE_NONE: u8 = 15;
    pub const REJECT: u8 = 16;
    pub const ALLOWED_FAST: u8 = 17;
    pub const EXTENDED: u8 = 20;
}

/// The 68-byte greeting both sides send first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// A handshake that claims no extensions.
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Handshake {
        Handshake { reserved: [0; 8], info_hash, peer_id }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(HANDSHAKE_LEN);
        out.push(PROTOCOL.len() as u8);
        out.extend_from_slice(PROTOCOL);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.info_hash);
        out.extend_from_slice(&self.peer_id);
    }

    /// `Ok(None)` until 68 bytes are there. A wrong length byte or protocol string is refused as soon as its first
    /// wrong byte arrives, so an HTTP request or garbage on the peer port is dropped without waiting.
    pub fn decode(buf: &[u8]) -> Result<Option<Handshake>, WireError> {
        let seen = buf.len().min(20);
        if let Some(&n) = buf.first()
            && n as usize != PROTOCOL.len()
        {
            return Err(WireError::BadHandshake);
        }
        if seen > 1 && buf[1..seen] != PROTOCOL[..seen - 1] {
            return Err(WireError::BadHandshake);
        }
        let Some(rest) = buf.get(20..HANDSHAKE_LEN) else { return Ok(None) };
        let mut h = Handshake::new([0; 20], [0; 20]);
        h.reserved.copy_from_slice(&rest[..8]);
        h.info_hash.copy_from_slice(&rest[8..28]);
        h.peer_id.copy_from_slice(&rest[28..48]);
        Ok(Some(h))
    }

    /// The handshake toybt sends: it claims the BEP 10 extension protocol, whose only use here is the extended
    /// handshake's `reqq` (see [`encode_extended_handshake`]).
    pub fn ours(info_hash: [u8; 20], peer_id: [u8; 20]) -> Handshake {
        let mut h = Handshake::new(info_hash, peer_id);
        h.reserved[5] |= 0x10;
        h.reserved[7] |= 0x04;
        h
    }

    /// BEP 10 extension protocol bit.
    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// BEP 6 fast extension bit.
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    /// BEP 5 DHT bit (the peer may send `port`).
    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }
}

/// What the decoder accepts from one peer. `num_pieces` comes from the torrent; the rest bound memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub num_pieces: u32,
    /// Largest block a `piece` message may carry and a `request` or `cancel` may ask for.
    pub max_block_len: u32,
    /// Largest payload of a message id this codec does not know (skipped, not parsed).
    pub max_unknown_len: u32,
}

impl Limits {
    pub fn new(num_pieces: u32) -> Limits {
        Limits { num_pieces, max_block_len: DEFAULT_MAX_BLOCK_LEN, max_unknown_len: DEFAULT_MAX_UNKNOWN_LEN }
    }

    /// Before the metadata is known (a download started from a magnet link): piece indices cannot be checked and a
    /// bitfield has no known length, so both are taken within the bound of an unknown message.
    pub fn unknown_pieces() -> Limits {
        Limits::new(0)
    }

    fn pieces_known(&self) -> bool {
        self.num_pieces > 0
    }

    /// Body length (id included) of this torrent's `bitfield` message.
    pub fn bitfield_body_len(&self) -> u32 {
        1 + bitfield::wire_len(self.num_pieces) as u32
    }

    /// The largest body any acceptable message has: a length prefix above it is refused before its id is read.
    fn max_body_len(&self) -> u32 {
        let block = 9u32.saturating_add(self.max_block_len);
        let unknown = 1u32.saturating_add(self.max_unknown_len);
        block.max(unknown).max(self.bitfield_body_len())
    }

    /// The most bytes one message can occupy, length prefix included: size a receive buffer with this.
    pub fn max_frame_len(&self) -> usize {
        4 + self.max_body_len() as usize
    }
}

/// A message whose bytes can never be valid; the connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The first bytes are not `\x13BitTorrent protocol`.
    BadHandshake,
    /// A length prefix beyond what any message with this id (or any message, when `id` is unknown yet) may have.
    TooLong { id: Option<u8>, len: u32, max: u32 },
    /// A length prefix other than the exact length this message id has.
    WrongLength { id: u8, len: u32, expected: u32 },
    /// A `piece` message too short to hold its index and offset.
    TooShort { id: u8, len: u32, min: u32 },
    /// A `bitfield` with bits set past the last piece.
    BitfieldSpareBits,
    /// A piece index not in the torrent.
    PieceOutOfRange { id: u8, index: u32, num_pieces: u32 },
    /// A `request` or `cancel` for zero bytes or more than the block limit.
    BadBlockLength { id: u8, length: u32, max: u32 },
}

/// A human name for a message id, for error messages and logs.
pub fn name(id: u8) -> &'static str {
    match id {
        id::CHOKE => "choke",
        id::UNCHOKE => "unchoke",
        id::INTERESTED => "interested",
        id::NOT_INTERESTED => "not interested",
        id::HAVE => "have",
        id::BITFIELD => "bitfield",
        id::REQUEST => "request",
        id::PIECE => "piece",
        id::CANCEL => "cancel",
        id::PORT => "port",
        id::SUGGEST => "suggest piece",
        id::HAVE_ALL => "have all",
        id::HAVE_NONE => "have none",
        id::REJECT => "reject request",
        id::ALLOWED_FAST => "allowed fast",
        id::EXTENDED => "extended",
        _ => "unknown",
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::BadHandshake => f.write_str("the handshake does not start with \\x13BitTorrent protocol"),
            WireError::TooLong { id: None, len, max } => {
                write!(f, "a message length of {len} bytes, over the limit of {max}")
            }
            WireError::TooLong { id: Some(id), len, max } => {
                write!(f, "a {} message (id {id}) of {len} bytes, over the limit of {max}", name(id))
            }
            WireError::WrongLength { id, len, expected } => {
                write!(f, "a {} message of {len} bytes where it must be {expected}", name(id))
            }
            WireError::TooShort { id, len, min } => {
                write!(f, "a {} message of {len} bytes where it needs at least {min}", name(id))
            }
            WireError::BitfieldSpareBits => f.write_str("a bitfield with bits set past the last piece"),
            WireError::PieceOutOfRange { id, index, num_pieces } => {
                write!(f, "a {} message for piece {index} of a torrent with {num_pieces} pieces", name(id))
            }
            WireError::BadBlockLength { id, length, max } => {
                write!(f, "a {} message for a block of {length} bytes; blocks are 1 to {max} bytes", name(id))
            }
        }
    }
}

impl std::error::Error for WireError {}

/// One decoded message; the variable parts borrow from the decoder's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    /// Length and spare bits already checked; adopt with `Bitfield::from_wire`.
    Bitfield(&'a [u8]),
    Request {
        index: u32,
        begin: u32,
        length: u32,
    },
    Piece {
        index: u32,
        begin: u32,
        data: &'a [u8],
    },
    Cancel {
        index: u32,
        begin: u32,
        length: u32,
    },
    Port(u16),
    /// BEP 6: a piece the sender suggests we fetch.
    Suggest(u32),
    HaveAll,
    HaveNone,
    /// BEP 6: our request for this block will not be served.
    Reject {
        index: u32,
        begin: u32,
        length: u32,
    },
    /// BEP 6: the sender will serve this piece even while it chokes us.
    AllowedFast(u32),
    /// BEP 10: an extension message; `ext_id` 0 is the extended handshake, others are the ids the receiver chose.
    Extended {
        ext_id: u8,
        payload: &'a [u8],
    },
    /// An id we do not implement; the caller may ignore it.
    Unknown {
        id: u8,
        payload: &'a [u8],
    },
}

/// Why a frame gave no message yet: its body has not all arrived, or it never will be valid.
enum Stop {
    More,
    Bad(WireError),
}

impl From<WireError> for Stop {
    fn from(e: WireError) -> Stop {
        Stop::Bad(e)
    }
}

/// One message whose length prefix and id have arrived: `len` counts the id and the body, `after_id` is what has
/// arrived after the id (perhaps less than the body, perhaps more). The body is reached only through a length rule
/// (`exact`, `sized`, `head_and_tail`, `at_most`), each of which judges `len` before it waits for the bytes and
/// hands out exactly the body's bytes, sized by type where the rule fixes them: a decoder cannot read a byte its rule
/// did not promise, so a message id added without a rule does not compile, and one with a wrong rule cannot panic.
struct Frame<'a> {
    id: u8,
    len: u32,
    after_id: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A body of exactly `N` bytes.
    #[inline]
    fn exact<const N: usize>(&self) -> Result<&'a [u8; N], Stop> {
        let expected = 1 + N as u32;
        if self.len != expected {
            return Err(WireError::WrongLength { id: self.id, len: self.len, expected }.into());
        }
        self.after_id.first_chunk::<N>().ok_or(Stop::More)
    }

    /// A body whose exact length comes from the torrent (`len` counts the id).
    #[inline]
    fn sized(&self, expected: u32) -> Result<&'a [u8], Stop> {
        if self.len != expected {
            return Err(WireError::WrongLength { id: self.id, len: self.len, expected }.into());
        }
        self.body()
    }

    /// A fixed `N`-byte head followed by at most `max_tail` bytes.
    #[inline]
    fn head_and_tail<const N: usize>(&self, max_tail: u32) -> Result<(&'a [u8; N], &'a [u8]), Stop> {
        let min = 1 + N as u32;
        let max = min.saturating_add(max_tail);
        if self.len > max {
            return Err(WireError::TooLong { id: Some(self.id), len: self.len, max }.into());
        }
        if self.len < min {
            return Err(WireError::TooShort { id: self.id, len: self.len, min }.into());
        }
        self.body()?.split_first_chunk::<N>().ok_or(Stop::Bad(WireError::TooShort { id: self.id, len: self.len, min }))
    }

    /// A body of at most `max` bytes.
    #[inline]
    fn at_most(&self, max: u32) -> Result<&'a [u8], Stop> {
        let max = max.saturating_add(1);
        if self.len > max {
            return Err(WireError::TooLong { id: Some(self.id), len: self.len, max }.into());
        }
        self.body()
    }

    /// The whole body once it has arrived; only for the rules above, after they judged `len`.
    #[inline]
    fn body(&self) -> Result<&'a [u8], Stop> {
        self.after_id.get(..(self.len as usize).saturating_sub(1)).ok_or(Stop::More)
    }
}

fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// Splits a 12-byte `request`/`cancel` body into index, begin and length.
fn block_ref(b: &[u8; 12]) -> (u32, u32, u32) {
    let [i0, i1, i2, i3, b0, b1, b2, b3, l0, l1, l2, l3] = *b;
    (be32([i0, i1, i2, i3]), be32([b0, b1, b2, b3]), be32([l0, l1, l2, l3]))
}

fn check_index(id: u8, index: u32, limits: &Limits) -> Result<u32, WireError> {
    if index < limits.num_pieces || !limits.pieces_known() {
        Ok(index)
    } else {
        Err(WireError::PieceOutOfRange { id, index, num_pieces: limits.num_pieces })
    }
}

fn check_block_len(id: u8, length: u32, limits: &Limits) -> Result<u32, WireError> {
    if length == 0 || length > limits.max_block_len {
        Err(WireError::BadBlockLength { id, length, max: limits.max_block_len })
    } else {
        Ok(length)
    }
}

/// Every message id's length rule and its decoder, side by side: the one place a message id is added.
#[inline]
fn decode_frame<'a>(f: &Frame<'a>, limits: &Limits) -> Result<Message<'a>, Stop> {
    let id = f.id;
    Ok(match id {
        id::CHOKE => f.exact::<0>().map(|_| Message::Choke)?,
        id::UNCHOKE => f.exact::<0>().map(|_| Message::Unchoke)?,
        id::INTERESTED => f.exact::<0>().map(|_| Message::Interested)?,
        id::NOT_INTERESTED => f.exact::<0>().map(|_| Message::NotInterested)?,
        id::HAVE => Message::Have(check_index(id, be32(*f.exact::<4>()?), limits)?),
        id::BITFIELD if !limits.pieces_known() => Message::Bitfield(f.at_most(limits.max_unknown_len)?),
        id::BITFIELD => {
            let bits = f.sized(limits.bitfield_body_len())?;
            if !bitfield::spare_bits_clear(bits, limits.num_pieces) {
                return Err(WireError::BitfieldSpareBits.into());
            }
            Message::Bitfield(bits)
        }
        id::REQUEST | id::CANCEL | id::REJECT => {
            let (index, begin, length) = block_ref(f.exact::<12>()?);
            let index = check_index(id, index, limits)?;
            let length = check_block_len(id, length, limits)?;
            match id {
                id::REQUEST => Message::Request { index, begin, length },
                id::CANCEL => Message::Cancel { index, begin, length },
                _ => Message::Reject { index, begin, length },
            }
        }
        id::PIECE => {
            let (&[i0, i1, i2, i3, b0, b1, b2, b3], data) = f.head_and_tail::<8>(limits.max_block_len)?;
            let index = check_index(id, be32([i0, i1, i2, i3]), limits)?;
            Message::Piece { index, begin: be32([b0, b1, b2, b3]), data }
        }
        id::PORT => Message::Port(u16::from_be_bytes(*f.exact::<2>()?)),
        id::SUGGEST => Message::Suggest(check_index(id, be32(*f.exact::<4>()?), limits)?),
        id::HAVE_ALL => f.exact::<0>().map(|_| Message::HaveAll)?,
        id::HAVE_NONE => f.exact::<0>().map(|_| Message::HaveNone)?,
        id::ALLOWED_FAST => Message::AllowedFast(check_index(id, be32(*f.exact::<4>()?), limits)?),
        id::EXTENDED => {
            let (&[ext_id], payload) = f.head_and_tail::<1>(limits.max_unknown_len.saturating_sub(1))?;
            Message::Extended { ext_id, payload }
        }
        _ => Message::Unknown { id, payload: f.at_most(limits.max_unknown_len)? },
    })
}

/// Decodes the first message in `buf`: `Ok(Some((message, bytes consumed)))`, `Ok(None)` if the message is not
/// complete yet, or `Err` if it never will be valid. Piece indices are checked against `limits.num_pieces`; whether a
/// block lies inside its piece and was asked for is the peer state machine's question.
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Result<Option<(Message<'a>, usize)>, WireError> {
    let &[a, b, c, d, ref rest @ ..] = buf else { return Ok(None) };
    let len = u32::from_be_bytes([a, b, c, d]);
    if len == 0 {
        return Ok(Some((Message::KeepAlive, 4)));
    }
    let max = limits.max_body_len();
    if len > max {
        return Err(WireError::TooLong { id: None, len, max });
    }
    let &[id, ref after_id @ ..] = rest else { return Ok(None) };
    match decode_frame(&Frame { id, len, after_id }, limits) {
        Ok(msg) => Ok(Some((msg, 4 + len as usize))),
        Err(Stop::More) => Ok(None),
        Err(Stop::Bad(e)) => Err(e),
    }
}

/// Message lengths we produce come from our own data (blocks, our bitfield), never from a peer.
fn body_len(n: usize) -> u32 {
    u32::try_from(n).expect("an outgoing wire message over 4 GiB")
}

fn header(out: &mut Vec<u8>, len: u32, id: u8) {
    out.extend_from_slice(&len.to_be_bytes());
    out.push(id);
}

pub fn encode_keep_alive(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; 4]);
}

/// Choke, unchoke, interested and not interested: a bare id.
pub fn encode_bare(out: &mut Vec<u8>, id: u8) {
    header(out, 1, id);
}

pub fn encode_have(out: &mut Vec<u8>, index: u32) {
    header(out, 5, id::HAVE);
    out.extend_from_slice(&index.to_be_bytes());
}

pub fn encode_bitfield(out: &mut Vec<u8>, bits: &[u8]) {
    header(out, 1 + body_len(bits.len()), id::BITFIELD);
    out.extend_from_slice(bits);
}

fn encode_block_ref(out: &mut Vec<u8>, id: u8, index: u32, begin: u32, length: u32) {
    header(out, 13, id);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&begin.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
}

pub fn encode_request(out: &mut Vec<u8>, index: u32, begin: u32, length: u32) {
    encode_block_ref(out, id::REQUEST, index, begin, length);
}

pub fn encode_cancel(out: &mut Vec<u8>, index: u32, begin: u32, length: u32) {
    encode_block_ref(out, id::CANCEL, index, begin, length);
}

/// The 13 bytes in front of a block: the caller appends exactly `data_len` bytes next, e.g. by reading the block
/// from disk straight into `out`'s spare capacity, so the block is copied once.
pub fn encode_piece_header(out: &mut Vec<u8>, index: u32, begin: u32, data_len: u32) {
    header(out, 9 + data_len, id::PIECE);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&begin.to_be_bytes());
}

pub fn encode_piece(out: &mut Vec<u8>, index: u32, begin: u32, data: &[u8]) {
    out.reserve(PIECE_HEADER_LEN + data.len());
    encode_piece_header(out, index, begin, body_len(data.len()));
    out.extend_from_slice(data);
}

pub fn encode_reject(out: &mut Vec<u8>, index: u32, begin: u32, length: u32) {
    encode_block_ref(out, id::REJECT, index, begin, length);
}

/// `suggest piece` and `allowed fast`: an id and a piece index.
pub fn encode_index(out: &mut Vec<u8>, id: u8, index: u32) {
    header(out, 5, id);
    out.extend_from_slice(&index.to_be_bytes());
}

/// A BEP 10 extension message to the peer's `ext_id` (0: the extended handshake).
pub fn encode_extended(out: &mut Vec<u8>, ext_id: u8, payload: &[u8]) {
    header(out, 2 + body_len(payload.len()), id::EXTENDED);
    out.push(ext_id);
    out.extend_from_slice(payload);
}

pub fn encode_port(out: &mut Vec<u8>, port: u16) {
    header(out, 3, id::PORT);
    out.extend_from_slice(&port.to_be_bytes());
}

/// Any other id, e.g. a BEP 10 extended message (id 20) whose payload the extension built.
/// A BEP 10 extended handshake that offers no extension messages (an empty `m`) and says how many requests we queue
/// before dropping more (`reqq`) and who we are (`v`). Without `reqq`, Transmission keeps ten seconds' worth of
/// requests outstanding, thousands of them on a fast link, and waits for ever on those a peer dropped.
pub fn encode_extended_handshake(out: &mut Vec<u8>, reqq: u32, version: &str) {
    let mut payload = vec![0u8]; // extended message id 0: the handshake
    crate::bencode::Encoder { out: &mut payload }
        .begin_dict()
        .str("m")
        .begin_dict()
        .end()
        .str("reqq")
        .int(i64::from(reqq))
        .str("v")
        .str(version)
        .end();
    encode_other(out, id::EXTENDED, &payload);
}

pub fn encode_other(out: &mut Vec<u8>, id: u8, payload: &[u8]) {
    header(out, 1 + body_len(payload.len()), id);
    out.extend_from_slice(payload);
}

impl Message<'_> {
    /// Appends the message's wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Message::KeepAlive => encode_keep_alive(out),
            Message::Choke => encode_bare(out, id::CHOKE),
            Message::Unchoke => encode_bare(out, id::UNCHOKE),
            Message::Interested => encode_bare(out, id::INTERESTED),
            Message::NotInterested => encode_bare(out, id::NOT_INTERESTED),
            Message::Have(index) => encode_have(out, index),
            Message::Bitfield(bits) => encode_bitfield(out, bits),
            Message::Request { index, begin, length } => encode_request(out, index, begin, length),
            Message::Piece { index, begin, data } => encode_piece(out, index, begin, data),
            Message::Cancel { index, begin, length } => encode_cancel(out, index, begin, length),
            Message::Port(port) => encode_port(out, port),
            Message::Suggest(index) => encode_index(out, id::SUGGEST, index),
            Message::HaveAll => encode_bare(out, id::HAVE_ALL),
            Message::HaveNone => encode_bare(out, id::HAVE_NONE),
            Message::Reject { index, begin, length } => encode_reject(out, index, begin, length),
            Message::AllowedFast(index) => encode_index(out, id::ALLOWED_FAST, index),
            Message::Extended { ext_id, payload } => encode_extended(out, ext_id, payload),
            Message::Unknown { id, payload } => encode_other(out, id, payload),
        }
    }
}

#[cfg(test)]
mod tests;
