//! Magnet links (BEP 9): read `magnet:?xt=urn:btih:…` into an info hash, a display name, trackers and peer
//! addresses, and write one for a torrent. Text in, data out: no resolving, no IO.
//!
//! Reading is lenient where the web is sloppy (parameters in any order, unknown ones ignored, `xt.1`/`tr.2` numbered
//! forms, an upper-case or base32 hash, `+` for a space in the name) and strict where a guess would be wrong (a link
//! with no usable v1 info hash is refused, a broken `%` escape is refused). Everything kept is bounded.

use std::fmt;
use std::net::SocketAddr;

use crate::metainfo::Metainfo;

/// A longer link is refused before it is looked at.
pub const MAX_LINK_LEN: usize = 64 * 1024;
/// Trackers kept from one link; the rest are ignored.
pub const MAX_TRACKERS: usize = 100;
/// `x.pe` peer addresses kept from one link; the rest are ignored.
pub const MAX_PEERS: usize = 200;

const SCHEME: &str = "magnet:?";
const BTIH: &str = "urn:btih:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: [u8; 20],
    /// `dn`: what to show while the metadata is fetched; the real name comes with the metadata.
    pub name: Option<String>,
    /// `tr`, in the order given, without duplicates.
    pub trackers: Vec<String>,
    /// `x.pe`, as given (`host:port`, `1.2.3.4:port` or `[v6]:port`), without duplicates; see [`parse_peer`].
    pub peers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MagnetError {
    TooLong,
    NotMagnet,
    NoExactTopic,
    /// There were `xt` parameters, but none was `urn:btih:` (e.g. only a v2 `urn:btmh:` hash).
    NotBtih,
    BadInfoHash,
    /// A `%` not followed by two hex digits in the named parameter.
    BadEscape(&'static str),
}

impl fmt::Display for MagnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MagnetError::TooLong => write!(f, "magnet link is longer than {MAX_LINK_LEN} bytes"),
            MagnetError::NotMagnet => write!(f, "not a magnet link (it must start with {SCHEME})"),
            MagnetError::NoExactTopic => write!(f, "magnet link has no xt parameter (the info hash)"),
            MagnetError::NotBtih => {
                write!(f, "magnet link has no xt=urn:btih: parameter (v2-only links are not supported)")
            }
            MagnetError::BadInfoHash => write!(f, "magnet link's btih is neither 40 hex nor 32 base32 characters"),
            MagnetError::BadEscape(p) => write!(f, "magnet link has a broken %-escape in its {p} parameter"),
        }
    }
}

impl std::error::Error for MagnetError {}

impl Magnet {
    pub fn parse(link: &str) -> Result<Magnet, MagnetError> {
        if link.len() > MAX_LINK_LEN {
            return Err(MagnetError::TooLong);
        }
        let query = match link.get(..SCHEME.len()) {
            Some(head) if head.eq_ignore_ascii_case(SCHEME) => &link[SCHEME.len()..],
            _ => return Err(MagnetError::NotMagnet),
        };
        let mut info_hash = None;
        let mut saw_xt = false;
        let mut m = Magnet { info_hash: [0; 20], name: None, trackers: Vec::new(), peers: Vec::new() };
        for pair in query.split('&') {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            match base_key(key) {
                "xt" => {
                    saw_xt = true;
                    if info_hash.is_some() {
                        continue;
                    }
                    let topic = decoded(raw, false, "xt")?;
                    if let Some(hash) = strip_prefix_ignore_case(&topic, BTIH) {
                        info_hash = Some(parse_info_hash(hash).ok_or(MagnetError::BadInfoHash)?);
                    }
                }
                "dn" if m.name.is_none() => {
                    let name = decoded(raw, true, "dn")?;
                    m.name = (!name.is_empty()).then_some(name);
                }
                "tr" => push_bounded(&mut m.trackers, decoded(raw, false, "tr")?, MAX_TRACKERS),
                "x.pe" => push_bounded(&mut m.peers, decoded(raw, false, "x.pe")?, MAX_PEERS),
                _ => {}
            }
        }
        m.info_hash = info_hash.ok_or(if saw_xt { MagnetError::NotBtih } else { MagnetError::NoExactTopic })?;
        Ok(m)
    }

    /// The link for a torrent we hold: its hash, its name, and every tracker of every tier (at most
    /// [`MAX_TRACKERS`], so the link parses back whole).
    pub fn from_meta(meta: &Metainfo) -> Magnet {
        let mut trackers = Vec::new();
        for url in meta.tracker_tiers().into_iter().flatten() {
            push_bounded(&mut trackers, url, MAX_TRACKERS);
        }
        Magnet { info_hash: meta.info_hash, name: Some(meta.name.clone()), trackers, peers: Vec::new() }
    }

    /// `magnet:?xt=urn:btih:<40 lower-case hex>&dn=…&tr=…&x.pe=…`, every value percent-encoded.
    pub fn to_uri(&self) -> String {
        let mut s = format!("{SCHEME}xt={BTIH}{}", crate::metainfo::hex(&self.info_hash));
        if let Some(name) = &self.name {
            s.push_str("&dn=");
            percent_encode(name.as_bytes(), &mut s);
        }
        for (key, values) in [("tr", &self.trackers), ("x.pe", &self.peers)] {
            for v in values {
                s.push('&');
                s.push_str(key);
                s.push('=');
                percent_encode(v.as_bytes(), &mut s);
            }
        }
        s
    }

    /// The `x.pe` peers that are numeric addresses; host names are left for the caller to resolve.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.peers.iter().filter_map(|p| parse_peer(p)).collect()
    }
}

/// `1.2.3.4:6881` or `[2001:db8::1]:6881` as an address; `None` for a host name, a missing or zero port, or junk.
pub fn parse_peer(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().filter(|a| a.port() != 0)
}

/// `xt.1` and `tr.2` are the numbered forms of `xt` and `tr`; `x.pe` keeps its dot.
fn base_key(key: &str) -> &str {
    match key.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => key,
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Adds a non-empty value not yet present, while there is room.
fn push_bounded(list: &mut Vec<String>, value: String, max: usize) {
    if !value.is_empty() && list.len() < max && !list.contains(&value) {
        list.push(value);
    }
}

/// A parameter's value, percent-decoded (and `+` as a space when `plus_is_space`); bytes that are not UTF-8 become
/// U+FFFD rather than failing the whole link.
fn decoded(raw: &str, plus_is_space: bool, param: &'static str) -> Result<String, MagnetError> {
    let spaced;
    let raw = if plus_is_space && raw.contains('+') {
        spaced = raw.replace('+', " ");
        &spaced
    } else {
        raw
    };
    let bytes = percent_decode(raw.as_bytes()).ok_or(MagnetError::BadEscape(param))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// 40 hex digits or 32 base32 letters (RFC 4648 alphabet, no padding), either case.
fn parse_info_hash(s: &str) -> Option<[u8; 20]> {
    let mut hash = [0u8; 20];
    match s.len() {
        40 => {
            for (i, pair) in s.as_bytes().chunks(2).enumerate() {
                hash[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
            }
        }
        32 => {
            // 32 letters of 5 bits are exactly 160 bits: no padding and no leftover bits to check.
            let mut acc: u64 = 0;
            let mut bits = 0;
            let mut at = 0;
            for &c in s.as_bytes() {
                acc = acc << 5 | u64::from(base32_digit(c)?);
                bits += 5;
                if bits >= 8 {
                    bits -= 8;
                    hash[at] = (acc >> bits) as u8;
                    at += 1;
                }
            }
        }
        _ => return None,
    }
    Some(hash)
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn base32_digit(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a'),
        b'2'..=b'7' => Some(c - b'2' + 26),
        _ => None,
    }
}

// The percent codecs live with the tracker today; these two wrappers are the only lines that name where.
fn percent_decode(src: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0; src.len()];
    let n = crate::http::percent_decode_into(src, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

fn percent_encode(bytes: &[u8], out: &mut String) {
    crate::tracker::announce::percent_encode(bytes, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::XorShift;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    fn hash() -> [u8; 20] {
        parse_info_hash(HEX).unwrap()
    }

    #[test]
    fn reads_every_field() {
        let link = format!(
            "magnet:?xt=urn:btih:{HEX}&dn=Some+name%20%C3%A9&tr=http%3A%2F%2Ft.example%2Fann&tr=udp://u.example:80\
             &x.pe=10.0.0.1:6881&x.pe=%5B2001%3Adb8%3A%3A1%5D%3A51413&x.pe=peer.example:7000"
        );
        let m = Magnet::parse(&link).unwrap();
        assert_eq!(m.info_hash, hash());
        assert_eq!(m.name.as_deref(), Some("Some name é"));
        assert_eq!(m.trackers, ["http://t.example/ann", "udp://u.example:80"]);
        assert_eq!(m.peers, ["10.0.0.1:6881", "[2001:db8::1]:51413", "peer.example:7000"]);
        assert_eq!(m.peer_addrs(), ["10.0.0.1:6881".parse().unwrap(), "[2001:db8::1]:51413".parse().unwrap()]);
    }

    #[test]
    fn only_xt_is_needed() {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
        assert_eq!((m.info_hash, m.name, m.trackers.len(), m.peers.len()), (hash(), None, 0, 0));
    }

    #[test]
    fn hash_in_any_case_hex_or_base32() {
        // The same 20 bytes, in base32: RFC 4648 of c12fe1c0… .
        let b32 = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";
        for h in [HEX.to_string(), HEX.to_uppercase(), b32.to_string(), b32.to_lowercase()] {
            let m = Magnet::parse(&format!("MAGNET:?xt=URN:BTIH:{h}")).unwrap();
            assert_eq!(m.info_hash, hash(), "{h}");
        }
        // RFC 4648's own vector: "foobar" is MZXW6YTBOI.
        let mut acc = String::from("MZXW6YTBOI");
        acc.push_str(&"A".repeat(22));
        assert_eq!(&parse_info_hash(&acc).unwrap()[..6], b"foobar");
    }

    #[test]
    fn refuses_with_one_line_each() {
        let cases: &[(&str, MagnetError)] = &[
            ("http://x/?xt=urn:btih:{HEX}", MagnetError::NotMagnet),
            ("magnet:xt=urn:btih:{HEX}", MagnetError::NotMagnet),
            ("", MagnetError::NotMagnet),
            ("magnet:?", MagnetError::NoExactTopic),
            ("magnet:?dn=x&tr=y", MagnetError::NoExactTopic),
            ("magnet:?xt=urn:sha1:{HEX}", MagnetError::NotBtih),
            ("magnet:?xt=urn:btmh:1220{HEX}", MagnetError::NotBtih),
            ("magnet:?xt=urn:btih:abc", MagnetError::BadInfoHash),
            ("magnet:?xt=urn:btih:{HEX}0", MagnetError::BadInfoHash),
            ("magnet:?xt=urn:btih:g12fe1c06bba254a9dc9f519b335aa7c1367a88a", MagnetError::BadInfoHash),
            ("magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE1", MagnetError::BadInfoHash),
            ("magnet:?xt=urn:btih:{HEX}&dn=%zz", MagnetError::BadEscape("dn")),
            ("magnet:?xt=urn:btih:{HEX}&tr=%4", MagnetError::BadEscape("tr")),
            ("magnet:?xt=urn:btih:{HEX}&x.pe=%", MagnetError::BadEscape("x.pe")),
        ];
        for (link, want) in cases {
            let link = link.replace("{HEX}", HEX);
            let err = Magnet::parse(&link).unwrap_err();
            assert_eq!(&err, want, "{link}");
            assert!(!err.to_string().contains('\n'));
        }
        let long = format!("magnet:?xt=urn:btih:{HEX}&dn={}", "a".repeat(MAX_LINK_LEN));
        assert_eq!(Magnet::parse(&long), Err(MagnetError::TooLong));
    }

    #[test]
    fn first_btih_wins_and_v2_and_unknown_params_are_ignored() {
        let other = "0".repeat(40);
        let link = format!(
            "magnet:?xt=urn:btmh:1220{other}{other}&as=http://x&xt.1=urn:btih:{HEX}&xt.2=urn:btih:{other}&ws=y&&=&tr.1=a"
        );
        let m = Magnet::parse(&link).unwrap();
        assert_eq!((m.info_hash, m.trackers), (hash(), vec!["a".to_string()]));
        // An xt given percent-encoded is still read.
        let m = Magnet::parse(&format!("magnet:?xt=urn%3Abtih%3A{HEX}")).unwrap();
        assert_eq!(m.info_hash, hash());
    }

    #[test]
    fn plus_is_a_space_only_in_the_name() {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=a+b%2Bc&tr=http://h/a+b")).unwrap();
        assert_eq!(m.name.as_deref(), Some("a b+c"));
        assert_eq!(m.trackers, ["http://h/a+b"]);
    }

    #[test]
    fn keeps_a_bounded_deduplicated_list() {
        let mut link = format!("magnet:?xt=urn:btih:{HEX}&tr=dup&tr=dup&tr=&x.pe=");
        for i in 0..500 {
            link.push_str(&format!("&tr=t{i}&x.pe=10.0.{}.{}:1", i / 256, i % 256));
        }
        let m = Magnet::parse(&link).unwrap();
        assert_eq!((m.trackers.len(), m.peers.len()), (MAX_TRACKERS, MAX_PEERS));
        assert_eq!(m.trackers[..2], ["dup", "t0"]);
        assert_eq!(m.peers[0], "10.0.0.0:1");
    }

    #[test]
    fn peer_addresses_numeric_only() {
        assert_eq!(parse_peer("1.2.3.4:5"), Some("1.2.3.4:5".parse().unwrap()));
        assert_eq!(parse_peer("[::1]:80"), Some("[::1]:80".parse().unwrap()));
        for bad in ["host:80", "1.2.3.4", "1.2.3.4:0", "1.2.3.4:70000", "::1:80", "[::1]", ""] {
            assert_eq!(parse_peer(bad), None, "{bad}");
        }
    }

    #[test]
    fn writes_a_link_that_reads_back() {
        let m = Magnet {
            info_hash: hash(),
            name: Some("a name & more/ü+?".into()),
            trackers: vec!["http://t.example:6969/announce?x=1&y=2".into(), "udp://u.example:1337".into()],
            peers: vec!["[2001:db8::1]:51413".into(), "10.0.0.1:1".into()],
        };
        let uri = m.to_uri();
        assert!(uri.starts_with(&format!("magnet:?xt=urn:btih:{HEX}&dn=a%20name%20%26")), "{uri}");
        assert!(!uri[SCHEME.len()..].contains(['?', ' ', '/']), "{uri}");
        assert_eq!(Magnet::parse(&uri).unwrap(), m);
        let bare = Magnet { name: None, trackers: vec![], peers: vec![], ..m };
        assert_eq!(bare.to_uri(), format!("magnet:?xt=urn:btih:{HEX}"));
        assert_eq!(Magnet::parse(&bare.to_uri()).unwrap(), bare);
    }

    #[test]
    fn from_a_torrent_with_every_tier() {
        let raw = torrent_with_tiers(&[&["http://a/ann", "http://b/ann"], &["http://a/ann"]]);
        let meta = Metainfo::from_bytes(&raw).unwrap();
        let m = Magnet::from_meta(&meta);
        assert_eq!(m.info_hash, meta.info_hash);
        assert_eq!(m.name.as_deref(), Some(meta.name.as_str()));
        assert_eq!(m.trackers, ["http://a/ann", "http://b/ann"]);
        assert_eq!(Magnet::parse(&m.to_uri()).unwrap(), m);
    }

    /// A one-piece single-file torrent with `announce` and `announce-list`.
    fn torrent_with_tiers(tiers: &[&[&str]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = crate::bencode::Encoder { out: &mut out };
        e.begin_dict().str("announce").str(tiers[0][0]).str("announce-list").begin_list();
        for tier in tiers {
            e.begin_list();
            for url in *tier {
                e.str(url);
            }
            e.end();
        }
        e.end().str("info").begin_dict().str("length").int(5).str("name").str("file.bin");
        e.str("piece length").int(16384).str("pieces").bytes(&[7; 20]).end().end();
        out
    }

    /// Never panics on random text or on valid links with characters flipped, cut and inserted; whatever parses
    /// respects the bounds and writes a link that parses to the same thing.
    #[test]
    fn never_panics_on_hostile_input() {
        let valid = format!(
            "magnet:?xt=urn:btih:{HEX}&dn=n%C3%A9+x&tr=http%3A%2F%2Fa&x.pe=[::1]:5&xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK"
        );
        let alphabet = b"magnet:?xt=urn:btih&dn.pe%+[]:0123456789abcdefABCXYZ/\xc3\xa9";
        let mut rng = XorShift(7);
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                (0..rng.below(120)).map(|_| alphabet[rng.below(alphabet.len())]).collect()
            } else {
                rng.mutated(valid.as_bytes(), 6, |r| alphabet[r.below(alphabet.len())])
            };
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(m) = Magnet::parse(&text) {
                assert!(m.trackers.len() <= MAX_TRACKERS && m.peers.len() <= MAX_PEERS);
                assert_eq!(Magnet::parse(&m.to_uri()).as_ref(), Ok(&m), "{text}");
            }
        }
    }
}
