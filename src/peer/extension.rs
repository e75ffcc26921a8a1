//! The BEP 10 extended handshake: what a peer says about itself and which message ids it wants for each extension,
//! decoded from and encoded to bytes, and the routing of an incoming extended message to one of our extensions.
//!
//! Ids go two ways. The ids in a peer's `m` are the ones WE must use when we send to it ([`ExtIds`]); the messages
//! it sends us carry the ids WE advertised, which are the constants [`UT_METADATA`] and [`UT_PEX`] ([`Incoming`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::bencode::{DecodeError, Encoder, Value, decode};
use crate::wire;

/// The extended message id of the handshake itself.
pub const HANDSHAKE: u8 = 0;
/// The id we advertise for ut_metadata (BEP 9): peers send us metadata messages with it.
pub const UT_METADATA: u8 = 1;
/// The id we advertise for ut_pex (BEP 11).
pub const UT_PEX: u8 = 2;
pub const UT_METADATA_NAME: &str = "ut_metadata";
pub const UT_PEX_NAME: &str = "ut_pex";

/// Entries of a peer's `m` kept; the rest are ignored.
pub const MAX_EXTENSIONS: usize = 64;
/// Extension names longer than this are skipped.
pub const MAX_NAME_LEN: usize = 64;
/// A longer `v` is cut to this many bytes (at a character boundary).
pub const MAX_VERSION_LEN: usize = 64;

/// One extended handshake. Every field is optional on the wire; a field of the wrong type or out of range is read as
/// absent rather than refusing the whole message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// Extension name to the id the sender wants to receive it with; 0 means the sender disables it.
    pub m: Vec<(String, u8)>,
    /// Client name and version.
    pub v: Option<String>,
    /// The sender's TCP listen port.
    pub p: Option<u16>,
    /// How many requests the sender queues before dropping more.
    pub reqq: Option<u32>,
    /// Our address as the sender sees it.
    pub yourip: Option<IpAddr>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// The size of the info dictionary (BEP 9), as given: the caller checks it against its own limit.
    pub metadata_size: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtError {
    Bencode(DecodeError),
    NotADict,
}

impl fmt::Display for ExtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtError::Bencode(e) => write!(f, "extended handshake is not bencode: {e}"),
            ExtError::NotADict => write!(f, "extended handshake is not a dictionary"),
        }
    }
}

impl std::error::Error for ExtError {}

impl ExtHandshake {
    /// Ours: both extensions on with our ids, who we are, and the metadata size when we have the metadata.
    pub fn ours(v: &str, p: Option<u16>, reqq: u32, metadata_size: Option<i64>) -> ExtHandshake {
        ExtHandshake {
            m: vec![(UT_METADATA_NAME.to_string(), UT_METADATA), (UT_PEX_NAME.to_string(), UT_PEX)],
            v: Some(v.to_string()),
            p,
            reqq: Some(reqq),
            metadata_size,
            ..ExtHandshake::default()
        }
    }

    /// The id the sender wants for extension `name`, if it named it (0 included: it disables the extension).
    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.m.iter().find(|(n, _)| n == name).map(|&(_, id)| id)
    }

    /// Decodes the payload after the extended message id byte 0.
    pub fn decode(payload: &[u8]) -> Result<ExtHandshake, ExtError> {
        let dict = decode(payload).map_err(ExtError::Bencode)?;
        if !dict.is_dict() {
            return Err(ExtError::NotADict);
        }
        let mut hs = ExtHandshake::default();
        if let Some(Value::Dict { entries, .. }) = dict.get("m") {
            for (name, id) in entries {
                if hs.m.len() == MAX_EXTENSIONS {
                    break;
                }
                let (Ok(name), Some(id)) = (std::str::from_utf8(name), id.as_int()) else { continue };
                let Ok(id) = u8::try_from(id) else { continue };
                if name.len() <= MAX_NAME_LEN && hs.id_of(name).is_none() {
                    hs.m.push((name.to_string(), id));
                }
            }
        }
        hs.v = dict.get("v").and_then(Value::as_bytes).map(|b| {
            let s = String::from_utf8_lossy(&b[..b.len().min(MAX_VERSION_LEN * 4)]);
            let mut end = s.len().min(MAX_VERSION_LEN);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        });
        let int = |key| dict.get(key).and_then(Value::as_int);
        hs.p = int("p").and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0);
        hs.reqq = int("reqq").and_then(|n| u32::try_from(n).ok());
        hs.metadata_size = int("metadata_size");
        let bytes = |key| dict.get(key).and_then(Value::as_bytes);
        hs.yourip = bytes("yourip").and_then(ip);
        hs.ipv4 = bytes("ipv4").and_then(|b| <[u8; 4]>::try_from(b).ok()).map(Ipv4Addr::from);
        hs.ipv6 = bytes("ipv6").and_then(|b| <[u8; 16]>::try_from(b).ok()).map(Ipv6Addr::from);
        Ok(hs)
    }

    /// Appends the whole wire message: length prefix, id 20, extended id 0, and the dictionary with its keys (and
    /// those of `m`) in sorted order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut payload = vec![HANDSHAKE];
        let mut e = Encoder { out: &mut payload };
        e.begin_dict();
        if let Some(ip) = self.ipv4 {
            e.str("ipv4").bytes(&ip.octets());
        }
        if let Some(ip) = self.ipv6 {
            e.str("ipv6").bytes(&ip.octets());
        }
        let mut m: Vec<&(String, u8)> = self.m.iter().collect();
        m.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        m.dedup_by(|a, b| a.0 == b.0);
        e.str("m").begin_dict();
        for (name, id) in m {
            e.str(name).int(i64::from(*id));
        }
        e.end();
        if let Some(n) = self.metadata_size {
            e.str("metadata_size").int(n);
        }
        if let Some(p) = self.p {
            e.str("p").int(i64::from(p));
        }
        if let Some(n) = self.reqq {
            e.str("reqq").int(i64::from(n));
        }
        if let Some(v) = &self.v {
            e.str("v").str(v);
        }
        match self.yourip {
            Some(IpAddr::V4(ip)) => e.str("yourip").bytes(&ip.octets()),
            Some(IpAddr::V6(ip)) => e.str("yourip").bytes(&ip.octets()),
            None => &mut e,
        }
        .end();
        wire::encode_other(out, wire::id::EXTENDED, &payload);
    }
}

fn ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The ids a peer wants for the extensions we speak; `None` while it has not enabled one (or has disabled it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtIds {
    pub ut_metadata: Option<u8>,
    pub ut_pex: Option<u8>,
}

impl ExtIds {
    /// Applies a handshake. `m` is additive (BEP 10): a name it lists sets or (with 0) clears that id, a name it does
    /// not list keeps what an earlier handshake said.
    pub fn update(&mut self, hs: &ExtHandshake) {
        for (slot, name) in [(&mut self.ut_metadata, UT_METADATA_NAME), (&mut self.ut_pex, UT_PEX_NAME)] {
            if let Some(id) = hs.id_of(name) {
                *slot = (id != 0).then_some(id);
            }
        }
    }
}

/// What an incoming extended message is, by its first payload byte (one of the ids we advertised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    Handshake,
    Metadata,
    Pex,
    /// An id we never advertised: BEP 10 peers should not send it; ignore it.
    Unknown(u8),
}

impl Incoming {
    pub fn of(id: u8) -> Incoming {
        match id {
            HANDSHAKE => Incoming::Handshake,
            UT_METADATA => Incoming::Metadata,
            UT_PEX => Incoming::Pex,
            other => Incoming::Unknown(other),
        }
    }

    /// Splits the payload of a message with id 20 into what it is and the bytes after the extended id; `None` for
    /// an empty payload (a malformed message).
    pub fn split(payload: &[u8]) -> Option<(Incoming, &[u8])> {
        let (&id, rest) = payload.split_first()?;
        Some((Incoming::of(id), rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::XorShift;

    /// The payload after the 4-byte length, id 20 and extended id 0.
    fn body(framed: &[u8]) -> &[u8] {
        let len = u32::from_be_bytes(framed[..4].try_into().unwrap()) as usize;
        assert_eq!(len, framed.len() - 4, "the length prefix covers the message");
        assert_eq!(framed[4..6], [wire::id::EXTENDED, HANDSHAKE]);
        &framed[6..]
    }

    fn full() -> ExtHandshake {
        ExtHandshake {
            m: vec![("ut_pex".into(), 9), ("lt_donthave".into(), 7), ("ut_metadata".into(), 3)],
            v: Some("toybt 0.1 µ".into()),
            p: Some(6881),
            reqq: Some(1024),
            yourip: Some("2001:db8::7".parse().unwrap()),
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ipv6: Some("::1".parse().unwrap()),
            metadata_size: Some(31_235),
        }
    }

    #[test]
    fn encodes_sorted_keys_and_reads_back() {
        let hs = full();
        let mut out = Vec::new();
        hs.encode(&mut out);
        let b = body(&out);
        let mut want = b"d4:ipv44:\x0a\x00\x00\x01".to_vec();
        want.extend_from_slice(b"4:ipv616:");
        want.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        want.extend_from_slice(b"1:md11:lt_donthavei7e11:ut_metadatai3e6:ut_pexi9ee13:metadata_sizei31235e");
        want.extend_from_slice(b"1:pi6881e4:reqqi1024e1:v12:toybt 0.1 \xc2\xb56:yourip16:");
        want.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        want.push(b'e');
        assert_eq!(b, want);
        let back = ExtHandshake::decode(b).unwrap();
        assert_eq!(back.m.len(), 3);
        assert_eq!((back.id_of("ut_metadata"), back.id_of("ut_pex"), back.id_of("x")), (Some(3), Some(9), None));
        let sorted = ExtHandshake { m: back.m.clone(), ..hs };
        assert_eq!(back, sorted);
    }

    #[test]
    fn an_empty_handshake_is_an_empty_m() {
        let mut out = Vec::new();
        ExtHandshake::default().encode(&mut out);
        assert_eq!(body(&out), b"d1:mdee");
        assert_eq!(ExtHandshake::decode(b"de").unwrap(), ExtHandshake::default());
    }

    #[test]
    fn ours_advertises_our_ids() {
        let mut out = Vec::new();
        ExtHandshake::ours("toybt", Some(7000), 1024, Some(5)).encode(&mut out);
        let hs = ExtHandshake::decode(body(&out)).unwrap();
        assert_eq!((hs.id_of(UT_METADATA_NAME), hs.id_of(UT_PEX_NAME)), (Some(UT_METADATA), Some(UT_PEX)));
        assert_eq!(
            (hs.p, hs.reqq, hs.metadata_size, hs.v.as_deref()),
            (Some(7000), Some(1024), Some(5), Some("toybt"))
        );
    }

    #[test]
    fn reads_what_real_clients_send() {
        // BEP 10's own example, with an upper-case name we do not know.
        let hs =
            ExtHandshake::decode(b"d1:md11:LT_metadatai1e6:ut_pexi2ee1:pi6881e1:v13:\xc2\xb5Torrent 1.2e").unwrap();
        assert_eq!(hs.m, [("LT_metadata".to_string(), 1), ("ut_pex".to_string(), 2)]);
        assert_eq!((hs.p, hs.v.as_deref()), (Some(6881), Some("µTorrent 1.2")));
        assert_eq!(hs.yourip, None);
        let hs = ExtHandshake::decode(b"d6:yourip4:\x7f\x00\x00\x01e").unwrap();
        assert_eq!(hs.yourip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn wrong_types_and_ranges_read_as_absent() {
        let hs = ExtHandshake::decode(
            b"d4:ipv43:abc4:ipv64:abcd1:md1:ai256e1:bi-1e1:c3:str1:di0e1:di5ee13:metadata_size1:x\
              1:pi0e4:reqqi-1e1:vi5e6:yourip5:abcdee",
        )
        .unwrap();
        assert_eq!(hs.m, [("d".to_string(), 0)], "out of range ids and non-integers skipped, first duplicate kept");
        assert_eq!(hs, ExtHandshake { m: hs.m.clone(), ..ExtHandshake::default() });
        let hs = ExtHandshake::decode(b"d1:mi5e1:pi65536e4:reqqi4294967296ee").unwrap();
        assert_eq!(hs, ExtHandshake::default());
        let hs = ExtHandshake::decode(b"d13:metadata_sizei-5ee").unwrap();
        assert_eq!(hs.metadata_size, Some(-5), "raw: the caller bounds it");
    }

    #[test]
    fn refuses_what_is_not_a_dictionary() {
        assert_eq!(ExtHandshake::decode(b"le"), Err(ExtError::NotADict));
        for bad in [&b""[..], b"d", b"d1:m", b"dee", b"dei1e", b"\xff"] {
            assert!(matches!(ExtHandshake::decode(bad), Err(ExtError::Bencode(_))), "{bad:?}");
        }
    }

    #[test]
    fn bounds_names_count_and_version() {
        let mut e = Vec::new();
        let mut enc = Encoder { out: &mut e };
        enc.begin_dict().str("m").begin_dict();
        enc.str(&"x".repeat(MAX_NAME_LEN + 1)).int(1);
        for i in 0..200 {
            enc.str(&format!("e{i:03}")).int(i % 256);
        }
        enc.end().str("v").str(&"é".repeat(1000)).end();
        let hs = ExtHandshake::decode(&e).unwrap();
        assert_eq!(hs.m.len(), MAX_EXTENSIONS);
        assert_eq!(hs.m[0].0, "e000", "the long name was skipped");
        let v = hs.v.unwrap();
        assert!(v.len() <= MAX_VERSION_LEN && v.chars().all(|c| c == 'é'), "{v}");
        let v = ExtHandshake::decode(b"d1:v3:\xff\xfeAe").unwrap().v.unwrap();
        assert_eq!(v, "\u{fffd}\u{fffd}A");
    }

    #[test]
    fn ids_are_additive_and_zero_disables() {
        let mut ids = ExtIds::default();
        let hs = |m: &[(&str, u8)]| ExtHandshake {
            m: m.iter().map(|&(n, id)| (n.to_string(), id)).collect(),
            ..ExtHandshake::default()
        };
        ids.update(&hs(&[("ut_metadata", 3), ("ut_pex", 1), ("other", 4)]));
        assert_eq!(ids, ExtIds { ut_metadata: Some(3), ut_pex: Some(1) });
        ids.update(&hs(&[("ut_pex", 0)]));
        assert_eq!(ids, ExtIds { ut_metadata: Some(3), ut_pex: None });
        ids.update(&hs(&[]));
        assert_eq!(ids, ExtIds { ut_metadata: Some(3), ut_pex: None });
        ids.update(&hs(&[("ut_metadata", 9), ("ut_pex", 2)]));
        assert_eq!(ids, ExtIds { ut_metadata: Some(9), ut_pex: Some(2) });
    }

    #[test]
    fn incoming_uses_our_ids() {
        assert_eq!(Incoming::split(&[0, b'd', b'e']), Some((Incoming::Handshake, &b"de"[..])));
        assert_eq!(Incoming::split(&[UT_METADATA]), Some((Incoming::Metadata, &[][..])));
        assert_eq!(Incoming::of(UT_PEX), Incoming::Pex);
        assert_eq!(Incoming::of(3), Incoming::Unknown(3));
        assert_eq!(Incoming::split(&[]), None);
    }

    /// Never panics on random bytes or on mutated handshakes; what decodes respects the bounds and survives an
    /// encode/decode round trip.
    #[test]
    fn never_panics_on_hostile_input() {
        let mut framed = Vec::new();
        full().encode(&mut framed);
        let valid = body(&framed).to_vec();
        let mut rng = XorShift(11);
        for round in 0..20_000 {
            let input: Vec<u8> =
                if round % 4 == 0 {
                    (0..rng.below(80)).map(|_| rng.next() as u8).collect()
                } else {
                    rng.mutated(&valid, 6, |r| {
                        if r.below(2) == 0 { b"de0123456789i:-"[r.below(15)] } else { r.next() as u8 }
                    })
                };
            if let Ok(hs) = ExtHandshake::decode(&input) {
                assert!(hs.m.len() <= MAX_EXTENSIONS && hs.m.iter().all(|(n, _)| n.len() <= MAX_NAME_LEN));
                assert!(hs.v.as_ref().is_none_or(|v| v.len() <= MAX_VERSION_LEN));
                let mut again = Vec::new();
                hs.encode(&mut again);
                let back = ExtHandshake::decode(body(&again)).unwrap();
                let mut sorted = hs.m.clone();
                sorted.sort();
                assert_eq!(back, ExtHandshake { m: sorted, ..hs });
            }
        }
    }
}
