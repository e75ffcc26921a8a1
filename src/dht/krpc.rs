//! KRPC (BEP 5): the bencoded dictionaries DHT nodes exchange over UDP, decoded from and encoded to bytes.
//!
//! A message is a query (`y` = `q`: `ping`, `find_node`, `get_peers`, `announce_peer`), a response (`r`) or an error
//! (`e`). The transaction id `t` is echoed byte for byte. Answers carry the BEP 42 `ip` key: the requester's address
//! as we saw it. A read-only sender (BEP 43 `ro` = 1) is answered but not put in routing tables.
//!
//! Decoding says what the sender deserves: [`DecodeError::Reply`] for a query we understood enough to answer with an
//! error (203 bad arguments, 204 unknown method), [`DecodeError::Drop`] for everything else (not KRPC, or a broken
//! response or error: those are never answered, so two nodes cannot ping-pong errors).

use std::net::{Ipv4Addr, SocketAddrV4};

use super::id::Id;
use crate::bencode::{self, Encoder, Value};

/// Datagrams longer than this are dropped before decoding: the largest real answers (many `values`) stay well below.
pub const MAX_DATAGRAM: usize = 4096;
/// Transaction ids longer than this are dropped: we echo them, so they would make our answers larger.
pub const MAX_TID_LEN: usize = 16;
/// Tokens longer than this are refused (ours are 8 bytes; other clients' 4 to 20).
pub const MAX_TOKEN_LEN: usize = 64;
/// A compact node: 20-byte id, 4-byte IPv4 address, 2-byte port.
pub const NODE_LEN: usize = 26;
/// A compact peer: 4-byte IPv4 address, 2-byte port.
pub const PEER_LEN: usize = 6;

pub const ERROR_GENERIC: i64 = 201;
pub const ERROR_SERVER: i64 = 202;
pub const ERROR_PROTOCOL: i64 = 203;
pub const ERROR_METHOD_UNKNOWN: i64 = 204;

/// A node as other nodes describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    pub id: Id,
    pub addr: SocketAddrV4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query<'a> {
    Ping,
    FindNode {
        target: Id,
    },
    GetPeers {
        info_hash: Id,
    },
    /// `implied_port`: the peer is at the datagram's source port and `port` means nothing.
    AnnouncePeer {
        info_hash: Id,
        port: u16,
        implied_port: bool,
        token: &'a [u8],
    },
}

impl Query<'_> {
    pub fn method(&self) -> &'static str {
        match self {
            Query::Ping => "ping",
            Query::FindNode { .. } => "find_node",
            Query::GetPeers { .. } => "get_peers",
            Query::AnnouncePeer { .. } => "announce_peer",
        }
    }
}

/// The named values of a response; absent keys are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    pub id: Id,
    pub nodes: Vec<Contact>,
    /// Only the 6-byte (IPv4) entries of `values`; others are skipped.
    pub values: Vec<SocketAddrV4>,
    pub token: Option<&'a [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    Query {
        id: Id,
        read_only: bool,
        query: Query<'a>,
    },
    /// `ip`: BEP 42, where the responder saw us.
    Response {
        response: Response<'a>,
        ip: Option<SocketAddrV4>,
    },
    Error {
        code: i64,
        message: &'a [u8],
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub tid: &'a [u8],
    pub body: Body<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError<'a> {
    /// Not worth a word.
    Drop(&'static str),
    /// A query we cannot serve: answer error `code` with transaction id `tid`.
    Reply { tid: &'a [u8], code: i64, why: &'static str },
}

impl std::fmt::Display for DecodeError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Drop(why) => write!(f, "dropped: {why}"),
            DecodeError::Reply { code, why, .. } => write!(f, "error {code}: {why}"),
        }
    }
}

pub fn decode(datagram: &[u8]) -> Result<Message<'_>, DecodeError<'_>> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(DecodeError::Drop("datagram too long"));
    }
    let v = bencode::decode(datagram).map_err(|_| DecodeError::Drop("not bencode"))?;
    if !v.is_dict() {
        return Err(DecodeError::Drop("not a dictionary"));
    }
    let tid = v.get("t").and_then(Value::as_bytes).ok_or(DecodeError::Drop("no transaction id"))?;
    if tid.len() > MAX_TID_LEN {
        return Err(DecodeError::Drop("transaction id too long"));
    }
    let body = match v.get("y").and_then(Value::as_bytes) {
        Some(b"q") => decode_query(&v).map_err(|(code, why)| DecodeError::Reply { tid, code, why })?,
        Some(b"r") => decode_response(&v).map_err(DecodeError::Drop)?,
        Some(b"e") => decode_error(&v).map_err(DecodeError::Drop)?,
        _ => return Err(DecodeError::Drop("no message type")),
    };
    Ok(Message { tid, body })
}

fn id_at(dict: &Value<'_>, key: &str) -> Option<Id> {
    dict.get(key).and_then(Value::as_bytes).and_then(|b| b.try_into().ok())
}

fn decode_query<'a>(v: &Value<'a>) -> Result<Body<'a>, (i64, &'static str)> {
    let protocol = |why| (ERROR_PROTOCOL, why);
    let method = v.get("q").and_then(Value::as_bytes).ok_or(protocol("no method"))?;
    let args = v.get("a").filter(|a| a.is_dict()).ok_or(protocol("no arguments"))?;
    let id = id_at(args, "id").ok_or(protocol("id must be 20 bytes"))?;
    let read_only = v.get("ro").and_then(Value::as_int) == Some(1);
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode { target: id_at(args, "target").ok_or(protocol("target must be 20 bytes"))? },
        b"get_peers" => {
            Query::GetPeers { info_hash: id_at(args, "info_hash").ok_or(protocol("info_hash must be 20 bytes"))? }
        }
        b"announce_peer" => {
            let info_hash = id_at(args, "info_hash").ok_or(protocol("info_hash must be 20 bytes"))?;
            let token = args.get("token").and_then(Value::as_bytes).ok_or(protocol("no token"))?;
            if token.len() > MAX_TOKEN_LEN {
                return Err(protocol("token too long"));
            }
            let implied_port = args.get("implied_port").and_then(Value::as_int).is_some_and(|i| i != 0);
            let port = args.get("port").and_then(Value::as_int).and_then(|p| u16::try_from(p).ok());
            let port = match (port, implied_port) {
                (_, true) => port.unwrap_or(0),
                (Some(p), false) if p != 0 => p,
                _ => return Err(protocol("port must be 1 to 65535")),
            };
            Query::AnnouncePeer { info_hash, port, implied_port, token }
        }
        _ => return Err((ERROR_METHOD_UNKNOWN, "method unknown")),
    };
    Ok(Body::Query { id, read_only, query })
}

fn decode_response<'a>(v: &Value<'a>) -> Result<Body<'a>, &'static str> {
    let r = v.get("r").filter(|r| r.is_dict()).ok_or("no return values")?;
    let id = id_at(r, "id").ok_or("id must be 20 bytes")?;
    let nodes = match r.get("nodes") {
        None => Vec::new(),
        Some(n) => {
            let n = n.as_bytes().ok_or("nodes is not a string")?;
            if n.len() % NODE_LEN != 0 {
                return Err("nodes is not a multiple of 26 bytes");
            }
            n.chunks_exact(NODE_LEN).map(contact_from).collect()
        }
    };
    let values = match r.get("values") {
        None => Vec::new(),
        Some(list) => {
            let list = list.as_list().ok_or("values is not a list")?;
            let mut peers = Vec::new();
            for item in list {
                let b = item.as_bytes().ok_or("a value is not a string")?;
                if let Ok(b) = <[u8; PEER_LEN]>::try_from(b) {
                    peers.push(peer_from(&b));
                }
            }
            peers
        }
    };
    let token = match r.get("token") {
        None => None,
        Some(t) => Some(t.as_bytes().filter(|t| t.len() <= MAX_TOKEN_LEN).ok_or("bad token")?),
    };
    let ip = v.get("ip").and_then(Value::as_bytes).and_then(|b| <[u8; PEER_LEN]>::try_from(b).ok());
    Ok(Body::Response { response: Response { id, nodes, values, token }, ip: ip.map(|b| peer_from(&b)) })
}

fn decode_error<'a>(v: &Value<'a>) -> Result<Body<'a>, &'static str> {
    let e = v.get("e").and_then(Value::as_list).ok_or("no error list")?;
    match e {
        [code, message, ..] => Ok(Body::Error {
            code: code.as_int().ok_or("error code is not an integer")?,
            message: message.as_bytes().ok_or("error message is not a string")?,
        }),
        _ => Err("error list too short"),
    }
}

fn contact_from(b: &[u8]) -> Contact {
    let mut id = [0; 20];
    id.copy_from_slice(&b[..20]);
    Contact { id, addr: peer_from(&[b[20], b[21], b[22], b[23], b[24], b[25]]) }
}

fn peer_from(b: &[u8; PEER_LEN]) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(b[0], b[1], b[2], b[3]), u16::from_be_bytes([b[4], b[5]]))
}

/// The 6-byte compact form of an IPv4 address and port.
pub fn compact_peer(addr: &SocketAddrV4) -> [u8; PEER_LEN] {
    let ip = addr.ip().octets();
    let port = addr.port().to_be_bytes();
    [ip[0], ip[1], ip[2], ip[3], port[0], port[1]]
}

/// The 26-byte compact forms of `nodes`, one after the other.
pub fn compact_nodes(nodes: &[Contact]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len() * NODE_LEN);
    for n in nodes {
        out.extend_from_slice(&n.id);
        out.extend_from_slice(&compact_peer(&n.addr));
    }
    out
}

/// Every 26-byte node in `bytes` (a trailing partial record is ignored: callers check the length first).
pub fn nodes_from(bytes: &[u8]) -> Vec<Contact> {
    bytes.chunks_exact(NODE_LEN).map(contact_from).collect()
}

impl Message<'_> {
    /// Appends the bencoded message; keys in sorted order, empty `nodes`/`values` left out.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Encoder { out };
        e.begin_dict();
        match &self.body {
            Body::Query { id, read_only, query } => {
                e.str("a").begin_dict().str("id").bytes(id);
                match query {
                    Query::Ping => {}
                    Query::FindNode { target } => {
                        e.str("target").bytes(target);
                    }
                    Query::GetPeers { info_hash } => {
                        e.str("info_hash").bytes(info_hash);
                    }
                    Query::AnnouncePeer { info_hash, port, implied_port, token } => {
                        if *implied_port {
                            e.str("implied_port").int(1);
                        }
                        e.str("info_hash").bytes(info_hash).str("port").int(i64::from(*port)).str("token").bytes(token);
                    }
                }
                e.end().str("q").str(query.method());
                if *read_only {
                    e.str("ro").int(1);
                }
                e.str("t").bytes(self.tid).str("y").str("q");
            }
            Body::Response { response, ip } => {
                if let Some(ip) = ip {
                    e.str("ip").bytes(&compact_peer(ip));
                }
                e.str("r").begin_dict().str("id").bytes(&response.id);
                if !response.nodes.is_empty() {
                    e.str("nodes").bytes(&compact_nodes(&response.nodes));
                }
                if let Some(token) = response.token {
                    e.str("token").bytes(token);
                }
                if !response.values.is_empty() {
                    e.str("values").begin_list();
                    for v in &response.values {
                        e.bytes(&compact_peer(v));
                    }
                    e.end();
                }
                e.end().str("t").bytes(self.tid).str("y").str("r");
            }
            Body::Error { code, message } => {
                e.str("e").begin_list().int(*code).bytes(message).end().str("t").bytes(self.tid).str("y").str("e");
            }
        }
        e.end();
    }
}

#[cfg(test)]
mod tests;
