//! Bencodes the registry's answers for HTTP clients: the announce answer with compact (BEP 23, BEP 7 `peers6`) or
//! dictionary (BEP 3) peers, the scrape answer (BEP 48), and the `failure reason` of a refused request. Everything is
//! appended straight to the caller's buffer, usually the connection's output, with no buffer of its own.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use super::registry::{Answer, Listed, ScrapeEntry};
use crate::bencode::Encoder;

/// Appends the answer to an announce. `compact` and `no_peer_id` are the client's choices of peer list.
pub fn write_announce(out: &mut Vec<u8>, a: &Answer<'_>, compact: bool, no_peer_id: bool) {
    let mut e = Encoder { out };
    e.begin_dict();
    e.str("complete").int(a.complete as i64);
    e.str("incomplete").int(a.incomplete as i64);
    e.str("interval").int(a.interval.as_secs() as i64);
    e.str("min interval").int(a.min_interval.as_secs() as i64);
    if compact {
        e.str("peers");
        compact_peers(e.out, a.v4(), 6);
        if a.v6().len() > 0 {
            e.str("peers6");
            compact_peers(e.out, a.v6(), 18);
        }
    } else {
        e.str("peers").begin_list();
        // One family after the other: a chained iterator costs a branch per peer on this, the slowest path.
        for p in a.v4() {
            dict_peer(&mut e, p, no_peer_id);
        }
        for p in a.v6() {
            dict_peer(&mut e, p, no_peer_id);
        }
        e.end();
    }
    if let Some(w) = a.warning {
        e.str("warning message").str(w);
    }
    e.end();
}

/// One peer of the BEP 3 dictionary model.
fn dict_peer(e: &mut Encoder<'_>, p: &Listed, no_peer_id: bool) {
    e.begin_dict();
    e.str("ip").bytes(IpText::new(p.addr.ip()).as_bytes());
    if !no_peer_id {
        e.str("peer id").bytes(&p.id);
    }
    e.str("port").int(i64::from(p.addr.port()));
    e.end();
}

/// Appends the BEP 48 answer listing `entries` (already sorted by info hash, as bencode wants).
pub fn write_scrape(out: &mut Vec<u8>, entries: &[ScrapeEntry]) {
    let mut e = Encoder { out };
    e.begin_dict().str("files").begin_dict();
    for s in entries {
        e.bytes(&s.info_hash).begin_dict();
        e.str("complete").int(s.counts.complete as i64);
        e.str("downloaded").int(s.counts.downloaded as i64);
        e.str("incomplete").int(s.counts.incomplete as i64);
        e.end();
    }
    e.end().end();
}

/// Appends `d14:failure reason<len>:<reason>e`.
pub fn write_failure(out: &mut Vec<u8>, reason: &str) {
    Encoder { out }.begin_dict().str("failure reason").str(reason).end();
}

/// Appends the bencoded string of compact entries (BEP 23: address then port, big-endian) of `peers`, all of one
/// family, `size` bytes each. Written straight into the body: the string's length is known from the count.
fn compact_peers<'a>(out: &mut Vec<u8>, peers: impl ExactSizeIterator<Item = &'a Listed>, size: usize) {
    let _ = write!(out, "{}:", peers.len() * size);
    for p in peers {
        match p.addr {
            SocketAddr::V4(s) => out.extend_from_slice(&s.ip().octets()),
            SocketAddr::V6(s) => out.extend_from_slice(&s.ip().octets()),
        }
        out.extend_from_slice(&p.addr.port().to_be_bytes());
    }
}

/// An address's text form (the dictionary model's `ip`), written on the stack rather than into a new `String`.
struct IpText {
    /// The longest IPv6 text is 45 bytes.
    buf: [u8; 64],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut t = IpText { buf: [0u8; 64], len: 0 };
        match ip {
            // Dotted decimal by hand: the formatter's padding support makes `Display` several times slower.
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if octet >= 100 {
                        t.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        t.push(b'0' + octet / 10 % 10);
                    }
                    t.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(_) => {
                let mut rest = &mut t.buf[..];
                let _ = write!(rest, "{ip}");
                t.len = 64 - rest.len();
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn address_text_matches_display() {
        let v4 = [[0, 0, 0, 0], [10, 0, 0, 1], [255, 255, 255, 255], [1, 20, 100, 9], [199, 99, 9, 250]];
        let mut ips: Vec<IpAddr> = v4.iter().map(|&o| Ipv4Addr::from(o).into()).collect();
        ips.push(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into());
        ips.push(Ipv6Addr::new(0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff).into());
        for ip in ips {
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }
}
