//! The tracker's UDP front end (BEP 15): [`UdpFront`] turns datagrams into calls on the same [`Registry`] the HTTP
//! front end uses, with the same rules (listed torrents unless open, the registry's caps, the requester never in its
//! own answer).
//!
//! Connection ids are stateless, like SYN cookies: the first 8 bytes of SHA-1 over a per-process random key, the
//! client's address and a coarse clock (one tick a minute). An id is accepted during the tick it was made in and the
//! two after, so for at least two minutes (BEP 15's rule) and at most three. Nothing is stored per client, so a flood
//! of connects costs one hash each and no memory.
//!
//! What is answered: a connect with the right protocol id, and, with a valid connection id, announces, scrapes and
//! the errors BEP 15 has for them (a refused torrent, a scrape of no hash or of too many). Everything else is dropped
//! without a word: short, long or garbled packets, unknown actions, invalid or expired connection ids. Only a connect
//! is answered without a valid id, and its answer is exactly as long as the request (16 bytes), so the tracker cannot
//! be used to amplify a spoofed flood.
//!
//! A peer is listed at the datagram's source address with the port it announced (the request's `IP address` field is
//! ignored, as HTTP's `ip` is), and an answer lists only peers of the datagram's family: 6-byte records over IPv4,
//! 18-byte ones over IPv6 (at most [`MAX_PEERS_V6`], so the answer fits one Ethernet frame).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::wire::{
    self, ACTION_CONNECT, ACTION_SCRAPE, DecodeError, MAX_REQUEST, MAX_SCRAPE, Peers, Request, RequestHeader, Response,
    ScrapeStats,
};
use crate::tracker::registry::{Announce, NUMWANT_DEFAULT, NUMWANT_MAX, Registry};

/// One tick of the connection-id clock.
pub const CID_TICK: Duration = Duration::from_secs(60);
/// Ticks an id stays valid after the one it was made in.
const CID_GRACE: u64 = 2;
/// Most answers waiting for the socket; past it new ones are dropped (and counted).
pub const MAX_QUEUED: usize = 256;
/// Most IPv6 peers in one answer: 20 + 80 · 18 = 1460 bytes, within one Ethernet frame. IPv4 answers hold up to
/// [`NUMWANT_MAX`] (1220 bytes).
pub const MAX_PEERS_V6: usize = 80;

/// What the front end has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontStats {
    pub connects: u64,
    pub announces: u64,
    pub scrapes: u64,
    /// Error packets sent (refused torrents, bad scrapes, port 0).
    pub errors: u64,
    /// Datagrams dropped without an answer (malformed, unknown, bad connection id).
    pub dropped: u64,
    /// Answers dropped because the queue was full.
    pub overflow: u64,
}

/// The UDP tracker front end: `handle_datagram(now, from, datagram, &mut registry)`, then drain
/// `poll_datagram(now, out)`. It has no deadlines of its own (the registry's expiry is the registry's timer).
#[derive(Debug)]
pub struct UdpFront {
    key: [u8; 16],
    /// The connection-id clock counts ticks from here.
    start: Instant,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    max_queued: usize,
    stats: FrontStats,
}

impl UdpFront {
    /// A front end whose connection-id key comes from the system's random source.
    pub fn new(now: Instant) -> io::Result<UdpFront> {
        let mut key = [0; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(UdpFront::with_key(now, key))
    }

    /// A front end with a chosen key (tests).
    pub fn with_key(now: Instant, key: [u8; 16]) -> UdpFront {
        UdpFront { key, start: now, queue: VecDeque::new(), max_queued: MAX_QUEUED, stats: FrontStats::default() }
    }

    /// Bounds the answer queue at `max` (at least 1).
    pub fn with_max_queued(self, max: usize) -> UdpFront {
        UdpFront { max_queued: max.max(1), ..self }
    }

    pub fn stats(&self) -> FrontStats {
        self.stats
    }

    fn tick(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs() / CID_TICK.as_secs()
    }

    fn cid_at(&self, from: SocketAddr, tick: u64) -> u64 {
        let mut buf = [0u8; 16 + 16 + 2 + 8];
        buf[..16].copy_from_slice(&self.key);
        let ip = match from.ip().to_canonical() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        buf[16..32].copy_from_slice(&ip.octets());
        buf[32..34].copy_from_slice(&from.port().to_be_bytes());
        buf[34..].copy_from_slice(&tick.to_be_bytes());
        let d = crate::sha1::digest(&buf);
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    /// The connection id a connect from `from` is answered with at `now`.
    pub fn connection_id(&self, now: Instant, from: SocketAddr) -> u64 {
        self.cid_at(from, self.tick(now))
    }

    /// Whether `cid` was handed to `from` in this tick or the [`CID_GRACE`] before it.
    pub fn is_valid(&self, now: Instant, from: SocketAddr, cid: u64) -> bool {
        let tick = self.tick(now);
        (0..=CID_GRACE.min(tick)).any(|back| self.cid_at(from, tick - back) == cid)
    }

    /// One datagram from `from`; its answer, if any, waits for [`UdpFront::poll_datagram`].
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], registry: &mut Registry) {
        self.serve(now, from, datagram, registry);
        registry.traffic_mut().udp_front = self.stats;
    }

    fn serve(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], registry: &mut Registry) {
        let head = match RequestHeader::peek(datagram) {
            Some(h) if datagram.len() <= MAX_REQUEST => h,
            _ => return self.drop_it(from, "too short or too long"),
        };
        if head.action == ACTION_CONNECT {
            return match Request::decode(datagram) {
                Ok(Request::Connect { transaction_id }) => {
                    self.stats.connects += 1;
                    let connection_id = self.connection_id(now, from);
                    self.respond(from, |out| Response::Connect { transaction_id, connection_id }.encode(out));
                }
                _ => self.drop_it(from, "bad connect"),
            };
        }
        // Past here every answer may be longer than the request: only for a client that proved its address.
        if !self.is_valid(now, from, head.connection_id) {
            return self.drop_it(from, "invalid or expired connection id");
        }
        let tid = head.transaction_id;
        match Request::decode(datagram) {
            Ok(Request::Announce(a)) => self.announce(now, from, &a, registry),
            Ok(Request::Scrape { info_hashes: [], .. }) => self.error(from, tid, "no info hash to scrape"),
            Ok(Request::Scrape { info_hashes, .. }) => {
                self.stats.scrapes += 1;
                registry.traffic_mut().udp.scrapes += 1;
                self.respond(from, |out| {
                    Response::Scrape { transaction_id: tid, stats: &[] }.encode(out);
                    for h in wire::hashes(info_hashes) {
                        let c = registry.counts(&h);
                        let stats = c.map_or(ScrapeStats::default(), |c| ScrapeStats {
                            seeders: clamp32(c.complete as u64),
                            completed: clamp32(c.downloaded),
                            leechers: clamp32(c.incomplete as u64),
                        });
                        wire::encode_scrape_stats(out, stats);
                    }
                });
            }
            Err(DecodeError::TooManyHashes) if head.action == ACTION_SCRAPE => {
                self.error(from, tid, &format!("at most {MAX_SCRAPE} info hashes per scrape"))
            }
            Ok(Request::Connect { .. }) | Err(_) => self.drop_it(from, "malformed request"),
        }
    }

    fn announce(&mut self, now: Instant, from: SocketAddr, a: &wire::AnnounceRequest, registry: &mut Registry) {
        let tid = a.transaction_id;
        if a.port == 0 {
            return self.error(from, tid, "port must be 1 to 65535");
        }
        // The peer-list format follows the family of the packet, so only that family's peers are listed.
        let v6 = from.ip().to_canonical().is_ipv6();
        let cap = if v6 { MAX_PEERS_V6 } else { NUMWANT_MAX };
        let numwant = if a.num_want < 0 { NUMWANT_DEFAULT } else { (a.num_want as usize).min(cap) };
        let announce = Announce {
            info_hash: a.info_hash,
            peer_id: a.peer_id,
            port: a.port,
            uploaded: a.uploaded,
            downloaded: a.downloaded,
            left: Some(a.left),
            event: a.event,
            numwant,
        };
        let mut out = Vec::with_capacity(20 + numwant * Peers::stride(v6));
        match registry.announce(now, &announce, from.ip()) {
            Ok(answer) => {
                let interval = clamp32(answer.interval.as_secs());
                let (leechers, seeders) = (clamp32(answer.incomplete as u64), clamp32(answer.complete as u64));
                wire::encode_announce_head(&mut out, tid, interval, leechers, seeders);
                let listed: Box<dyn Iterator<Item = _>> =
                    if v6 { Box::new(answer.v6()) } else { Box::new(answer.v4()) };
                for p in listed.take(numwant) {
                    Peers::push(&mut out, p.addr, v6);
                }
            }
            Err(refusal) => {
                registry.traffic_mut().udp.refused += 1;
                return self.error(from, tid, refusal.reason());
            }
        }
        registry.traffic_mut().udp.count_announce(now);
        self.stats.announces += 1;
        self.push(from, out);
    }

    fn error(&mut self, from: SocketAddr, transaction_id: u32, message: &str) {
        self.stats.errors += 1;
        self.respond(from, |out| Response::Error { transaction_id, message: message.as_bytes() }.encode(out));
    }

    fn drop_it(&mut self, from: SocketAddr, why: &str) {
        self.stats.dropped += 1;
        log::trace!("udp tracker: dropped a datagram from {from}: {why}");
    }

    fn respond(&mut self, to: SocketAddr, write: impl FnOnce(&mut Vec<u8>)) {
        if self.queue.len() >= self.max_queued {
            self.stats.overflow += 1;
            return;
        }
        let mut out = Vec::new();
        write(&mut out);
        self.push(to, out);
    }

    fn push(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        if self.queue.len() >= self.max_queued {
            self.stats.overflow += 1;
        } else {
            self.queue.push_back((to, datagram));
        }
    }

    /// Writes the next answer into `out` and says where it goes.
    pub fn poll_datagram(&mut self, _now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
        let (to, datagram) = self.queue.pop_front()?;
        out.extend_from_slice(&datagram);
        Some(to)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    pub fn handle_timeout(&mut self, _now: Instant) {}
}

fn clamp32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
