//! BEP 11 ut_pex: the codec of a peer exchange message (peers added and dropped since the last one, IPv4 and IPv6 in
//! compact form, a flags byte per added peer), and [`PexState`], which works out what one peer has not heard yet.
//!
//! What a peer tells us is a hint from a stranger: decoding keeps at most [`MAX_DECODED`] addresses of each list,
//! skips port 0 and unspecified addresses, and ignores a trailing partial entry (a list whose length is not a
//! multiple of 6 or 18 loses only its broken tail, as a missing flags byte reads as 0). Whom to dial, and how many
//! from one source, is the caller's policy.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bencode::{DecodeError, Encoder, Value, decode};
use crate::wire;

/// The flag bits of an added peer.
pub mod flags {
    pub const PREFERS_ENCRYPTION: u8 = 0x01;
    /// A seed, or upload-only.
    pub const SEED: u8 = 0x02;
    pub const SUPPORTS_UTP: u8 = 0x04;
    pub const SUPPORTS_HOLEPUNCH: u8 = 0x08;
    /// We connected to it, so it accepts connections.
    pub const REACHABLE: u8 = 0x10;
}

/// Addresses kept from each of `added`, `added6`, `dropped`, `dropped6` of one message.
pub const MAX_DECODED: usize = 200;
/// Added (and, separately, dropped) peers we put in one message, IPv4 and IPv6 together (BEP 11).
pub const MAX_SEND: usize = 50;

const V4_LEN: usize = 6;
const V6_LEN: usize = 18;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pex {
    /// Each with its flags (0 when the sender gave none).
    pub added: Vec<(SocketAddr, u8)>,
    pub dropped: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PexError {
    Bencode(DecodeError),
    NotADict,
}

impl fmt::Display for PexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PexError::Bencode(e) => write!(f, "ut_pex message is not bencode: {e}"),
            PexError::NotADict => write!(f, "ut_pex message is not a dictionary"),
        }
    }
}

impl std::error::Error for PexError {}

impl Pex {
    /// Decodes the payload after the extended message id byte. A list of the wrong type reads as empty.
    pub fn decode(payload: &[u8]) -> Result<Pex, PexError> {
        let dict = decode(payload).map_err(PexError::Bencode)?;
        if !dict.is_dict() {
            return Err(PexError::NotADict);
        }
        let bytes = |key| dict.get(key).and_then(Value::as_bytes).unwrap_or_default();
        let mut pex = Pex::default();
        for (list, flags, len) in [("added", "added.f", V4_LEN), ("added6", "added6.f", V6_LEN)] {
            let flags = bytes(flags);
            let found = compact(bytes(list), len).enumerate().map(|(i, (a, ok))| (a, ok, flags.get(i).copied()));
            let kept = found.filter(|&(_, ok, _)| ok).take(MAX_DECODED);
            pex.added.extend(kept.map(|(a, _, f)| (a, f.unwrap_or(0))));
        }
        for (list, len) in [("dropped", V4_LEN), ("dropped6", V6_LEN)] {
            pex.dropped.extend(compact(bytes(list), len).filter(|&(_, ok)| ok).map(|(a, _)| a).take(MAX_DECODED));
        }
        Ok(pex)
    }

    /// Appends the whole wire message, with the first [`MAX_SEND`] added and the first [`MAX_SEND`] dropped peers
    /// (the rest is the caller's to send next time). `added` and `dropped` are always present, even empty.
    pub fn encode(&self, peer_ut_pex: u8, out: &mut Vec<u8>) {
        let (mut added, mut added_f, mut added6, mut added6_f) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &(addr, f) in self.added.iter().take(MAX_SEND) {
            let (list, fl) = if addr.is_ipv4() { (&mut added, &mut added_f) } else { (&mut added6, &mut added6_f) };
            push_compact(list, addr);
            fl.push(f);
        }
        let (mut dropped, mut dropped6) = (Vec::new(), Vec::new());
        for &addr in self.dropped.iter().take(MAX_SEND) {
            push_compact(if addr.is_ipv4() { &mut dropped } else { &mut dropped6 }, addr);
        }
        let mut payload = vec![peer_ut_pex];
        let mut e = Encoder { out: &mut payload };
        e.begin_dict().str("added").bytes(&added).str("added.f").bytes(&added_f);
        if !added6.is_empty() {
            e.str("added6").bytes(&added6).str("added6.f").bytes(&added6_f);
        }
        e.str("dropped").bytes(&dropped);
        if !dropped6.is_empty() {
            e.str("dropped6").bytes(&dropped6);
        }
        e.end();
        wire::encode_other(out, wire::id::EXTENDED, &payload);
    }
}

/// Each whole `len`-byte entry as an address, and whether it is one worth keeping (a port, a specified IP). Entries
/// skipped still count for the position of their flags byte.
fn compact(b: &[u8], len: usize) -> impl Iterator<Item = (SocketAddr, bool)> + '_ {
    b.chunks_exact(len).map(move |c| {
        let (ip, port) = c.split_at(len - 2);
        let ip = match <[u8; 4]>::try_from(ip) {
            Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
            Err(_) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).unwrap_or_default())),
        };
        let port = u16::from_be_bytes([port[0], port[1]]);
        (SocketAddr::new(ip, port), port != 0 && !ip.is_unspecified())
    })
}

fn push_compact(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// What one peer has been told. Once a minute the caller hands in the peers connected now (leaving out the peer the
/// message goes to) and gets what changed since the last message to it, at most [`MAX_SEND`] added and [`MAX_SEND`]
/// dropped; what did not fit comes next time. Only peers we told it about are ever dropped.
#[derive(Debug, Clone, Default)]
pub struct PexState {
    told: BTreeSet<SocketAddr>,
}

impl PexState {
    pub fn new() -> PexState {
        PexState::default()
    }

    /// The message to send now, or `None` when nothing changed. `connected` holds each peer with its flags
    /// (e.g. [`flags::SEED`]); an address given twice counts once.
    pub fn diff(&mut self, connected: &[(SocketAddr, u8)]) -> Option<Pex> {
        let now: BTreeSet<SocketAddr> = connected.iter().map(|&(a, _)| a).collect();
        let dropped: Vec<SocketAddr> = self.told.difference(&now).take(MAX_SEND).copied().collect();
        let mut added: Vec<(SocketAddr, u8)> = Vec::new();
        for &(addr, f) in connected {
            if added.len() == MAX_SEND {
                break;
            }
            if !self.told.contains(&addr) && !added.iter().any(|&(a, _)| a == addr) {
                added.push((addr, f));
            }
        }
        for a in &dropped {
            self.told.remove(a);
        }
        self.told.extend(added.iter().map(|&(a, _)| a));
        (!added.is_empty() || !dropped.is_empty()).then_some(Pex { added, dropped })
    }

    /// Peers this peer has heard of from us and not yet heard dropped.
    pub fn told(&self) -> usize {
        self.told.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::XorShift;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The payload after the length prefix, id 20 and the extended id, checking the frame on the way.
    fn unframe(framed: &[u8], ext_id: u8) -> &[u8] {
        let (msg, used) = wire::decode(framed, &wire::Limits::new(1)).unwrap().unwrap();
        assert_eq!(used, framed.len());
        assert!(matches!(msg, wire::Message::Extended { .. }), "{msg:?}");
        assert_eq!(framed[5], ext_id);
        &framed[6..]
    }

    fn sample() -> Pex {
        Pex {
            added: vec![
                (a("10.0.0.1:6881"), flags::SEED | flags::REACHABLE),
                (a("[2001:db8::1]:51413"), flags::SUPPORTS_UTP),
                (a("192.168.1.2:1"), 0),
            ],
            dropped: vec![a("[::1]:80"), a("1.2.3.4:65535")],
        }
    }

    #[test]
    fn encodes_compact_lists_with_sorted_keys() {
        let mut out = Vec::new();
        sample().encode(4, &mut out);
        let mut want = b"d5:added12:\x0a\x00\x00\x01\x1a\xe1\xc0\xa8\x01\x02\x00\x017:added.f2:\x12\x00".to_vec();
        want.extend_from_slice(b"6:added618:");
        want.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        want.extend_from_slice(b"\xc8\xd58:added6.f1:\x047:dropped6:\x01\x02\x03\x04\xff\xff8:dropped618:");
        want.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        want.extend_from_slice(b"\x00\x50e");
        assert_eq!(unframe(&out, 4), want);
        let back = Pex::decode(unframe(&out, 4)).unwrap();
        let mut by_family = sample();
        by_family.added.swap(1, 2);
        by_family.dropped.swap(0, 1);
        assert_eq!(back, by_family, "IPv4 first, then IPv6");
    }

    #[test]
    fn an_empty_message_still_has_its_lists() {
        let mut out = Vec::new();
        Pex::default().encode(1, &mut out);
        assert_eq!(unframe(&out, 1), b"d5:added0:7:added.f0:7:dropped0:e");
        assert_eq!(Pex::decode(b"de").unwrap(), Pex::default());
    }

    #[test]
    fn frames_at_every_split() {
        let mut out = Vec::new();
        sample().encode(2, &mut out);
        for cut in 0..out.len() {
            assert_eq!(wire::decode(&out[..cut], &wire::Limits::new(1)), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn sends_at_most_fifty_of_each() {
        let many: Vec<SocketAddr> =
            (0..120u16).map(|i| SocketAddr::new(IpAddr::from([10, 0, 0, 1]), 1000 + i)).collect();
        let pex = Pex { added: many.iter().map(|&x| (x, 0)).collect(), dropped: many.clone() };
        let mut out = Vec::new();
        pex.encode(2, &mut out);
        let back = Pex::decode(unframe(&out, 2)).unwrap();
        assert_eq!((back.added.len(), back.dropped.len()), (MAX_SEND, MAX_SEND));
        assert_eq!(back.dropped, many[..MAX_SEND]);
    }

    #[test]
    fn decoding_skips_and_bounds() {
        // A port-0 entry, an unspecified address, a partial tail; flags shorter than the list.
        let mut added = Vec::new();
        for e in [a("1.1.1.1:1"), a("2.2.2.2:0"), a("0.0.0.0:5"), a("3.3.3.3:3")] {
            push_compact(&mut added, e);
        }
        added.extend_from_slice(&[9, 9, 9]);
        let mut msg = Vec::new();
        let mut e = Encoder { out: &mut msg };
        e.begin_dict().str("added").bytes(&added).str("added.f").bytes(&[1, 2, 3]);
        e.str("added6").bytes(&[0; 17]).str("dropped").int(5).str("dropped6").bytes(&[0; 18]).str("x").int(1).end();
        let pex = Pex::decode(&msg).unwrap();
        assert_eq!(pex.added, [(a("1.1.1.1:1"), 1), (a("3.3.3.3:3"), 0)], "flags stay with their entry");
        assert!(pex.dropped.is_empty());

        let mut many = Vec::new();
        for i in 0..300u16 {
            push_compact(&mut many, SocketAddr::new(IpAddr::from([10, 0, 0, 1]), i + 1));
        }
        let mut many6 = Vec::new();
        for i in 0..300u16 {
            push_compact(&mut many6, SocketAddr::new(IpAddr::from(Ipv6Addr::LOCALHOST), i + 1));
        }
        let mut msg = Vec::new();
        let mut e = Encoder { out: &mut msg };
        e.begin_dict().str("added").bytes(&many).str("added6").bytes(&many6);
        e.str("dropped").bytes(&many).str("dropped6").bytes(&many6).end();
        let pex = Pex::decode(&msg).unwrap();
        assert_eq!((pex.added.len(), pex.dropped.len()), (2 * MAX_DECODED, 2 * MAX_DECODED));
    }

    #[test]
    fn refuses_what_is_not_a_dictionary() {
        assert_eq!(Pex::decode(b"i1e"), Err(PexError::NotADict));
        for bad in [&b""[..], b"d", b"d5:added", b"dee"] {
            assert!(matches!(Pex::decode(bad), Err(PexError::Bencode(_))));
        }
    }

    #[test]
    fn state_tells_each_change_once() {
        let (p1, p2, p3) = (a("10.0.0.1:1"), a("10.0.0.2:2"), a("[::2]:3"));
        let mut s = PexState::new();
        assert_eq!(s.diff(&[]), None);
        let first = s.diff(&[(p1, flags::SEED), (p2, 0), (p1, 0)]).unwrap();
        assert_eq!(first, Pex { added: vec![(p1, flags::SEED), (p2, 0)], dropped: vec![] });
        assert_eq!(s.diff(&[(p2, 0), (p1, 0)]), None, "nothing changed");
        let second = s.diff(&[(p2, 0), (p3, flags::REACHABLE)]).unwrap();
        assert_eq!(second, Pex { added: vec![(p3, flags::REACHABLE)], dropped: vec![p1] });
        assert_eq!(s.told(), 2);
        assert_eq!(s.diff(&[]).unwrap().dropped, [p2, p3]);
        assert_eq!(s.told(), 0);
    }

    #[test]
    fn state_spreads_a_big_change_over_minutes() {
        let peers: Vec<(SocketAddr, u8)> =
            (0..130u16).map(|i| (SocketAddr::new(IpAddr::from([10, 0, 1, 1]), 100 + i), 0)).collect();
        let mut s = PexState::new();
        let sizes: Vec<usize> = std::iter::from_fn(|| s.diff(&peers)).map(|p| p.added.len()).collect();
        assert_eq!(sizes, [50, 50, 30]);
        let sizes: Vec<usize> = std::iter::from_fn(|| s.diff(&peers[..5])).map(|p| p.dropped.len()).collect();
        assert_eq!(sizes, [50, 50, 25]);
        assert_eq!(s.told(), 5);
    }

    /// Never panics on random bytes or mutated messages; whatever decodes is bounded, has no port 0, and survives
    /// an encode/decode round trip of its first [`MAX_SEND`] entries.
    #[test]
    fn never_panics_on_hostile_input() {
        let mut framed = Vec::new();
        sample().encode(1, &mut framed);
        let valid = framed[6..].to_vec();
        let mut rng = XorShift(3);
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 4 == 0 {
                (0..rng.below(80)).map(|_| rng.next() as u8).collect()
            } else {
                rng.mutated(&valid, 5, |r| if r.below(2) == 0 { b"de0123456789:"[r.below(13)] } else { r.next() as u8 })
            };
            if let Ok(pex) = Pex::decode(&input) {
                assert!(pex.added.len() <= 2 * MAX_DECODED && pex.dropped.len() <= 2 * MAX_DECODED);
                assert!(pex.added.iter().map(|(x, _)| x).chain(&pex.dropped).all(|x| x.port() != 0));
                let mut out = Vec::new();
                pex.encode(1, &mut out);
                let back = Pex::decode(&out[6..]).unwrap();
                assert_eq!(back.added.len(), pex.added.len().min(MAX_SEND));
                assert_eq!(back.dropped.len(), pex.dropped.len().min(MAX_SEND));
            }
        }
    }
}
