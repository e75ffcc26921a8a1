//! BEP 15 packets: every request and response, encoded and decoded in both directions. Decoding borrows the datagram
//! and never panics: each field is read only after the length has been checked, and a packet that is too short, too
//! long, ragged (a peer or scrape list that is not a whole number of records) or of an unknown action is an error.
//!
//! Integers are big-endian. Bytes past a fixed layout are allowed where BEP 15 allows growth (a connect request or
//! response, an announce response's header) and read as BEP 41 options after an announce request.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::tracker::registry::Event;

/// The magic constant that opens a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;
pub const ACTION_ERROR: u32 = 3;

/// Most info hashes in one scrape request ("up to about 74", which keeps it within one Ethernet frame).
pub const MAX_SCRAPE: usize = 74;
/// The fixed part of an announce request; BEP 41 options may follow.
pub const ANNOUNCE_LEN: usize = 98;
/// Longest request accepted: room for an over-long scrape to be recognised as one, and for BEP 41 options.
pub const MAX_REQUEST: usize = 2048;
/// Most URL data (BEP 41) carried or accepted in one announce.
pub const MAX_URL_DATA: usize = 1024;

const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;
const OPTION_URL_DATA: u8 = 2;

/// Why a packet was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    TooShort,
    TooLong,
    UnknownAction(u32),
    /// A connect request without [`PROTOCOL_ID`].
    BadProtocolId,
    /// An announce event other than 0 to 3.
    BadEvent(u32),
    /// A list that is not a whole number of records (info hashes, peers, scrape entries).
    Ragged,
    /// A scrape of more than [`MAX_SCRAPE`] hashes.
    TooManyHashes,
    /// A BEP 41 option cut short, or too much URL data.
    BadOption,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooShort => write!(f, "packet too short"),
            DecodeError::TooLong => write!(f, "packet too long"),
            DecodeError::UnknownAction(a) => write!(f, "unknown action {a}"),
            DecodeError::BadProtocolId => write!(f, "wrong protocol id"),
            DecodeError::BadEvent(e) => write!(f, "unknown event {e}"),
            DecodeError::Ragged => write!(f, "list not a whole number of records"),
            DecodeError::TooManyHashes => write!(f, "more than {MAX_SCRAPE} info hashes"),
            DecodeError::BadOption => write!(f, "malformed BEP 41 option"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Reads big-endian integers at fixed offsets of a slice whose length the caller has checked.
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    (u64::from(u32_at(b, at)) << 32) | u64::from(u32_at(b, at + 4))
}

fn bytes20_at(b: &[u8], at: usize) -> [u8; 20] {
    let mut out = [0; 20];
    out.copy_from_slice(&b[at..at + 20]);
    out
}

/// The first 16 bytes every request shares: connection id (or protocol id), action, transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub connection_id: u64,
    pub action: u32,
    pub transaction_id: u32,
}

impl RequestHeader {
    /// The header of any datagram of at least 16 bytes, whatever follows.
    pub fn peek(datagram: &[u8]) -> Option<RequestHeader> {
        (datagram.len() >= 16).then(|| RequestHeader {
            connection_id: u64_at(datagram, 0),
            action: u32_at(datagram, 8),
            transaction_id: u32_at(datagram, 12),
        })
    }
}

/// BEP 15's event numbers: 0 none, 1 completed, 2 started, 3 stopped.
pub fn event_code(e: Event) -> u32 {
    match e {
        Event::Update => 0,
        Event::Completed => 1,
        Event::Started => 2,
        Event::Stopped => 3,
    }
}

fn event_from_code(code: u32) -> Result<Event, DecodeError> {
    Ok(match code {
        0 => Event::Update,
        1 => Event::Completed,
        2 => Event::Started,
        3 => Event::Stopped,
        _ => return Err(DecodeError::BadEvent(code)),
    })
}

/// An announce request. Its `ip` field is 32 bits wide, so it only ever names an IPv4 address; which peer-list
/// format the answer uses follows the family of the datagram's source address, not anything in here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: Event,
    /// The `IP address` field: `None` for 0 (the default, and the only value an IPv6 announce may carry).
    pub ip: Option<Ipv4Addr>,
    pub key: u32,
    /// -1 (or any negative number) asks for the tracker's default.
    pub num_want: i32,
    pub port: u16,
    /// BEP 41 URL data: the announce URL's path and query (`/announce?passkey=...`), the pieces concatenated.
    pub url_data: Vec<u8>,
}

/// One request, as the tracker reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Connect {
        transaction_id: u32,
    },
    Announce(AnnounceRequest),
    /// `info_hashes` is a whole number (0 to [`MAX_SCRAPE`]) of 20-byte hashes; see [`hashes`].
    Scrape {
        connection_id: u64,
        transaction_id: u32,
        info_hashes: &'a [u8],
    },
}

/// The 20-byte hashes of a scrape request's list (whole ones only).
pub fn hashes(list: &[u8]) -> impl ExactSizeIterator<Item = [u8; 20]> + '_ {
    list.chunks_exact(20).map(|c| bytes20_at(c, 0))
}

impl<'a> Request<'a> {
    pub fn transaction_id(&self) -> u32 {
        match self {
            Request::Connect { transaction_id } | Request::Scrape { transaction_id, .. } => *transaction_id,
            Request::Announce(a) => a.transaction_id,
        }
    }

    pub fn decode(datagram: &'a [u8]) -> Result<Request<'a>, DecodeError> {
        let head = RequestHeader::peek(datagram).ok_or(DecodeError::TooShort)?;
        let (connection_id, transaction_id) = (head.connection_id, head.transaction_id);
        match head.action {
            ACTION_CONNECT if datagram.len() > MAX_REQUEST => Err(DecodeError::TooLong),
            ACTION_CONNECT if connection_id != PROTOCOL_ID => Err(DecodeError::BadProtocolId),
            ACTION_CONNECT => Ok(Request::Connect { transaction_id }),
            ACTION_ANNOUNCE => {
                let b = datagram;
                if b.len() < ANNOUNCE_LEN {
                    return Err(DecodeError::TooShort);
                }
                if b.len() > MAX_REQUEST {
                    return Err(DecodeError::TooLong);
                }
                let ip = u32_at(b, 84);
                Ok(Request::Announce(AnnounceRequest {
                    connection_id,
                    transaction_id,
                    info_hash: bytes20_at(b, 16),
                    peer_id: bytes20_at(b, 36),
                    downloaded: u64_at(b, 56),
                    left: u64_at(b, 64),
                    uploaded: u64_at(b, 72),
                    event: event_from_code(u32_at(b, 80))?,
                    ip: (ip != 0).then(|| Ipv4Addr::from(ip)),
                    key: u32_at(b, 88),
                    num_want: u32_at(b, 92) as i32,
                    port: u16_at(b, 96),
                    url_data: decode_options(&b[ANNOUNCE_LEN..])?,
                }))
            }
            ACTION_SCRAPE => {
                let list = &datagram[16..];
                if datagram.len() > MAX_REQUEST {
                    return Err(DecodeError::TooLong);
                }
                if !list.len().is_multiple_of(20) {
                    return Err(DecodeError::Ragged);
                }
                if list.len() / 20 > MAX_SCRAPE {
                    return Err(DecodeError::TooManyHashes);
                }
                Ok(Request::Scrape { connection_id, transaction_id, info_hashes: list })
            }
            other => Err(DecodeError::UnknownAction(other)),
        }
    }

    /// Appends the request's bytes to `out`. URL data past [`MAX_URL_DATA`] and hashes past [`MAX_SCRAPE`] are left
    /// out, so whatever is encoded decodes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::Connect { transaction_id } => {
                out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
                out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
            }
            Request::Announce(a) => {
                out.extend_from_slice(&a.connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&a.transaction_id.to_be_bytes());
                out.extend_from_slice(&a.info_hash);
                out.extend_from_slice(&a.peer_id);
                out.extend_from_slice(&a.downloaded.to_be_bytes());
                out.extend_from_slice(&a.left.to_be_bytes());
                out.extend_from_slice(&a.uploaded.to_be_bytes());
                out.extend_from_slice(&event_code(a.event).to_be_bytes());
                out.extend_from_slice(&a.ip.map_or(0, u32::from).to_be_bytes());
                out.extend_from_slice(&a.key.to_be_bytes());
                out.extend_from_slice(&a.num_want.to_be_bytes());
                out.extend_from_slice(&a.port.to_be_bytes());
                let url = &a.url_data[..a.url_data.len().min(MAX_URL_DATA)];
                for piece in url.chunks(255) {
                    out.push(OPTION_URL_DATA);
                    out.push(piece.len() as u8);
                    out.extend_from_slice(piece);
                }
            }
            Request::Scrape { connection_id, transaction_id, info_hashes } => {
                out.extend_from_slice(&connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                let whole = info_hashes.len() / 20 * 20;
                out.extend_from_slice(&info_hashes[..whole.min(MAX_SCRAPE * 20)]);
            }
        }
    }
}

/// BEP 41 options after an announce request: `0` ends them, `1` is a no-op byte, any other type has a length byte
/// and that many bytes of data; the data of each URL data option (`2`) is concatenated. Unknown types are skipped.
fn decode_options(mut b: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut url = Vec::new();
    while let Some((&kind, rest)) = b.split_first() {
        match kind {
            OPTION_END => break,
            OPTION_NOP => b = rest,
            _ => {
                let (&len, rest) = rest.split_first().ok_or(DecodeError::BadOption)?;
                let len = usize::from(len);
                if rest.len() < len {
                    return Err(DecodeError::BadOption);
                }
                if kind == OPTION_URL_DATA {
                    if url.len() + len > MAX_URL_DATA {
                        return Err(DecodeError::BadOption);
                    }
                    url.extend_from_slice(&rest[..len]);
                }
                b = &rest[len..];
            }
        }
    }
    Ok(url)
}

/// The peers of an announce response: 6-byte (IPv4 address, port) records, or 18-byte (IPv6) ones when the request
/// came over IPv6. A whole number of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peers<'a> {
    bytes: &'a [u8],
    v6: bool,
}

impl<'a> Peers<'a> {
    pub fn stride(v6: bool) -> usize {
        if v6 { 18 } else { 6 }
    }

    /// The records in `bytes`, or [`DecodeError::Ragged`].
    pub fn new(bytes: &'a [u8], v6: bool) -> Result<Peers<'a>, DecodeError> {
        if !bytes.len().is_multiple_of(Peers::stride(v6)) {
            return Err(DecodeError::Ragged);
        }
        Ok(Peers { bytes, v6 })
    }

    pub fn is_v6(&self) -> bool {
        self.v6
    }

    pub fn len(&self) -> usize {
        self.bytes.len() / Peers::stride(self.v6)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = SocketAddr> + 'a {
        let v6 = self.v6;
        self.bytes.chunks_exact(Peers::stride(v6)).map(move |c| {
            if v6 {
                let mut ip = [0; 16];
                ip.copy_from_slice(&c[..16]);
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), u16_at(c, 16))
            } else {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])), u16_at(c, 4))
            }
        })
    }

    /// Appends `addr` as one record of the given family; false (nothing written) when it is of the other one. An
    /// IPv4-mapped IPv6 address counts as IPv4.
    pub fn push(out: &mut Vec<u8>, addr: SocketAddr, v6: bool) -> bool {
        match (addr.ip().to_canonical(), v6) {
            (IpAddr::V4(ip), false) => out.extend_from_slice(&ip.octets()),
            (IpAddr::V6(ip), true) => out.extend_from_slice(&ip.octets()),
            _ => return false,
        }
        out.extend_from_slice(&addr.port().to_be_bytes());
        true
    }
}

/// One scrape figure set, in BEP 15's order (seeders, completed, leechers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

/// One response, as the client reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    Connect {
        transaction_id: u32,
        connection_id: u64,
    },
    Announce {
        transaction_id: u32,
        interval: u32,
        leechers: u32,
        seeders: u32,
        peers: Peers<'a>,
    },
    /// 12-byte records; see [`scrape_stats`].
    Scrape {
        transaction_id: u32,
        stats: &'a [u8],
    },
    /// The message as sent (meant to be text, not checked).
    Error {
        transaction_id: u32,
        message: &'a [u8],
    },
}

/// The records of a scrape response's list (whole ones only).
pub fn scrape_stats(list: &[u8]) -> impl ExactSizeIterator<Item = ScrapeStats> + '_ {
    list.chunks_exact(12).map(|c| ScrapeStats {
        seeders: u32_at(c, 0),
        completed: u32_at(c, 4),
        leechers: u32_at(c, 8),
    })
}

impl<'a> Response<'a> {
    pub fn transaction_id(&self) -> u32 {
        match *self {
            Response::Connect { transaction_id, .. }
            | Response::Announce { transaction_id, .. }
            | Response::Scrape { transaction_id, .. }
            | Response::Error { transaction_id, .. } => transaction_id,
        }
    }

    /// Decodes a response that came over IPv6 (`v6`: 18-byte peers) or IPv4 (6-byte peers).
    pub fn decode(datagram: &'a [u8], v6: bool) -> Result<Response<'a>, DecodeError> {
        let b = datagram;
        if b.len() < 8 {
            return Err(DecodeError::TooShort);
        }
        let transaction_id = u32_at(b, 4);
        match u32_at(b, 0) {
            ACTION_CONNECT if b.len() < 16 => Err(DecodeError::TooShort),
            ACTION_CONNECT => Ok(Response::Connect { transaction_id, connection_id: u64_at(b, 8) }),
            ACTION_ANNOUNCE if b.len() < 20 => Err(DecodeError::TooShort),
            ACTION_ANNOUNCE => Ok(Response::Announce {
                transaction_id,
                interval: u32_at(b, 8),
                leechers: u32_at(b, 12),
                seeders: u32_at(b, 16),
                peers: Peers::new(&b[20..], v6)?,
            }),
            ACTION_SCRAPE if !(b.len() - 8).is_multiple_of(12) => Err(DecodeError::Ragged),
            ACTION_SCRAPE => Ok(Response::Scrape { transaction_id, stats: &b[8..] }),
            ACTION_ERROR => Ok(Response::Error { transaction_id, message: &b[8..] }),
            other => Err(DecodeError::UnknownAction(other)),
        }
    }

    /// Appends the response's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Response::Connect { transaction_id, connection_id } => {
                out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(&connection_id.to_be_bytes());
            }
            Response::Announce { transaction_id, interval, leechers, seeders, peers } => {
                encode_announce_head(out, transaction_id, interval, leechers, seeders);
                out.extend_from_slice(peers.as_bytes());
            }
            Response::Scrape { transaction_id, stats } => {
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(&stats[..stats.len() / 12 * 12]);
            }
            Response::Error { transaction_id, message } => {
                out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(message);
            }
        }
    }
}

/// The 20-byte head of an announce response; the peers ([`Peers::push`]) follow it.
pub fn encode_announce_head(out: &mut Vec<u8>, transaction_id: u32, interval: u32, leechers: u32, seeders: u32) {
    for v in [ACTION_ANNOUNCE, transaction_id, interval, leechers, seeders] {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends one scrape record to a scrape response being built after its 8-byte head.
pub fn encode_scrape_stats(out: &mut Vec<u8>, s: ScrapeStats) {
    for v in [s.seeders, s.completed, s.leechers] {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
