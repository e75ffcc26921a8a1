//! The swarm registry: announce and scrape queries in, bencoded bodies out, with `now` passed in.
//!
//! Protocol: BEP 3 (announce, dictionary peer list), BEP 23 (compact peers), BEP 7 (`peers6`), BEP 48 (scrape).
//! A query the tracker cannot serve gets a `failure reason` body (HTTP 200), which every client shows to its user.
//!
//! A peer is known by its peer id *and* IP address, so one host cannot remove or move another host's entry by
//! replaying its peer id. The `ip` query parameter is ignored: trusting it would let anyone list a victim's address in
//! every swarm and turn the swarm's clients into a flood aimed at it; the address is always the connection's source.
//!
//! Memory is bounded by [`Config`]: peers per swarm, peers in total, and (with `open`) swarms. A peer that cannot be
//! stored because a bound is reached still gets a normal answer with peers, so a full tracker still helps it.
//! Expiry runs as a timer ([`Tracker::poll_timeout`]): every half interval, peers silent for two intervals go.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::http::{PercentError, percent_decode_into, query_pairs};
use crate::bencode::Encoder;

pub const NUMWANT_DEFAULT: usize = 50;
pub const NUMWANT_MAX: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The `interval` clients are told; peers expire after two of them.
    pub interval: Duration,
    /// Serve any info hash, not only the registered ones.
    pub open: bool,
    pub max_peers_per_swarm: usize,
    pub max_peers_total: usize,
    /// With `open`, how many swarms may exist at once (registered ones always exist).
    pub max_swarms: usize,
    /// A keep-alive connection may stay silent this long between requests.
    pub idle_timeout: Duration,
    /// Once a request has begun, its head must be complete within this time (slowloris).
    pub head_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            interval: Duration::from_secs(1800),
            open: false,
            max_peers_per_swarm: 50_000,
            max_peers_total: 500_000,
            max_swarms: 10_000,
            idle_timeout: Duration::from_secs(30),
            head_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// No event (a regular re-announce), or BEP 21's `paused`, which changes nothing here.
    Update,
    Started,
    Completed,
    Stopped,
}

/// One decoded announce query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes still missing; `None` when the client did not say (then it is counted as a leecher).
    pub left: Option<u64>,
    pub event: Event,
    /// BEP 23 compact peer list; without the parameter we answer with the BEP 3 dictionary model.
    pub compact: bool,
    pub no_peer_id: bool,
    /// Already capped at [`NUMWANT_MAX`].
    pub numwant: usize,
}

impl Announce {
    /// Decodes an announce query. The error is the `failure reason` to answer with.
    /// Unknown parameters (`key`, `supportcrypto`, `corrupt`, `trackerid`, ...) are ignored.
    pub fn from_query(query: &[u8]) -> Result<Announce, String> {
        let mut info_hash = None;
        let mut peer_id = None;
        let mut port = None;
        let mut a = Announce {
            info_hash: [0; 20],
            peer_id: [0; 20],
            port: 0,
            uploaded: 0,
            downloaded: 0,
            left: None,
            event: Event::Update,
            compact: false,
            no_peer_id: false,
            numwant: NUMWANT_DEFAULT,
        };
        for (key, value) in query_pairs(query) {
            match key {
                b"info_hash" => info_hash = Some(decode_20("info_hash", value)?),
                b"peer_id" => peer_id = Some(decode_20("peer_id", value)?),
                b"port" => {
                    let n = decode_u64("port", value)?;
                    port = Some(u16::try_from(n).ok().filter(|&p| p != 0).ok_or("port must be 1 to 65535")?);
                }
                b"uploaded" => a.uploaded = decode_u64("uploaded", value)?,
                b"downloaded" => a.downloaded = decode_u64("downloaded", value)?,
                b"left" => a.left = Some(decode_u64("left", value)?),
                b"numwant" => {
                    // A huge count only means "as many as you will give", so it saturates instead of failing.
                    a.numwant = match decode_u64("numwant", value) {
                        Ok(n) => n.min(NUMWANT_MAX as u64) as usize,
                        Err(_) if is_digits(value) => NUMWANT_MAX,
                        Err(e) => return Err(e),
                    };
                }
                b"event" => {
                    a.event = match decode_word("event", value)?.as_slice() {
                        b"" | b"paused" => Event::Update,
                        b"started" => Event::Started,
                        b"completed" => Event::Completed,
                        b"stopped" => Event::Stopped,
                        _ => return Err("unknown event (expected started, completed or stopped)".into()),
                    }
                }
                b"compact" => {
                    a.compact = match decode_word("compact", value)?.as_slice() {
                        b"1" => true,
                        b"0" => false,
                        _ => return Err("compact must be 0 or 1".into()),
                    }
                }
                b"no_peer_id" => a.no_peer_id = decode_word("no_peer_id", value)?.as_slice() != b"0",
                _ => {}
            }
        }
        a.info_hash = info_hash.ok_or("missing info_hash")?;
        a.peer_id = peer_id.ok_or("missing peer_id")?;
        a.port = port.ok_or("missing port")?;
        Ok(a)
    }
}

/// The `info_hash` values of a scrape query; empty means a full scrape.
pub fn scrape_hashes(query: &[u8]) -> Result<Vec<[u8; 20]>, String> {
    let mut hashes = Vec::new();
    for (key, value) in query_pairs(query) {
        if key == b"info_hash" {
            hashes.push(decode_20("info_hash", value)?);
        }
    }
    Ok(hashes)
}

fn decode_20(name: &str, raw: &[u8]) -> Result<[u8; 20], String> {
    let mut out = [0u8; 20];
    match percent_decode_into(raw, &mut out) {
        Ok(20) => Ok(out),
        Ok(_) | Err(PercentError::TooLong) => Err(format!("{name} must be 20 bytes")),
        Err(PercentError::BadEscape) => Err(format!("invalid percent-encoding in {name}")),
    }
}

/// A short decoded value (an event name, a flag), held without allocating.
struct Word {
    buf: [u8; 16],
    len: usize,
}

impl Word {
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn decode_word(name: &str, raw: &[u8]) -> Result<Word, String> {
    let mut buf = [0u8; 16];
    match percent_decode_into(raw, &mut buf) {
        Ok(len) => Ok(Word { buf, len }),
        Err(PercentError::TooLong) => Err(format!("{name} is too long")),
        Err(PercentError::BadEscape) => Err(format!("invalid percent-encoding in {name}")),
    }
}

fn is_digits(raw: &[u8]) -> bool {
    !raw.is_empty() && raw.iter().all(u8::is_ascii_digit)
}

/// A non-negative decimal integer; negative, empty, non-numeric and overflowing values are errors.
fn decode_u64(name: &str, raw: &[u8]) -> Result<u64, String> {
    let word = match decode_word(name, raw) {
        Ok(word) => word,
        Err(_) if is_digits(raw) => return Err(format!("{name} is too large")),
        Err(_) => return Err(format!("{name} must be a non-negative integer")),
    };
    let digits = word.as_slice();
    if !is_digits(digits) {
        return Err(format!("{name} must be a non-negative integer"));
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        .ok_or_else(|| format!("{name} is too large"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PeerKey {
    id: [u8; 20],
    ip: IpAddr,
}

#[derive(Debug, Clone)]
struct Peer {
    id: [u8; 20],
    addr: SocketAddr,
    last_seen: Instant,
}

impl Peer {
    fn key(&self) -> PeerKey {
        PeerKey { id: self.id, ip: self.addr.ip() }
    }
}

/// Where a peer sits: which list, and its position in it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seed: bool,
    pos: usize,
}

/// One torrent's peers, seeds and leechers apart so that a seed is answered from the leechers alone in O(numwant).
#[derive(Debug, Default)]
struct Swarm {
    leeches: Vec<Peer>,
    seeds: Vec<Peer>,
    index: HashMap<PeerKey, Slot>,
    /// Completed downloads seen (`event=completed`), for scrape.
    downloaded: u64,
    /// Listed on the command line: kept while empty and included in a full scrape.
    registered: bool,
}

enum Stored {
    Updated { was_seed: bool },
    Added,
    Full,
}

impl Swarm {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn list(&mut self, seed: bool) -> &mut Vec<Peer> {
        if seed { &mut self.seeds } else { &mut self.leeches }
    }

    fn remove(&mut self, key: &PeerKey) -> Option<Peer> {
        let slot = self.index.remove(key)?;
        let list = self.list(slot.seed);
        let peer = list.swap_remove(slot.pos);
        if let Some(moved) = list.get(slot.pos) {
            let moved = moved.key();
            self.index.insert(moved, slot);
        }
        Some(peer)
    }

    /// Inserts or refreshes a peer; `room` says whether a new one may be added.
    fn store(&mut self, peer: Peer, seed: bool, room: bool) -> Stored {
        let key = peer.key();
        if let Some(&slot) = self.index.get(&key) {
            if slot.seed == seed {
                self.list(seed)[slot.pos] = peer;
            } else {
                self.remove(&key);
                self.push(key, peer, seed);
            }
            return Stored::Updated { was_seed: slot.seed };
        }
        if !room {
            return Stored::Full;
        }
        self.push(key, peer, seed);
        Stored::Added
    }

    fn push(&mut self, key: PeerKey, peer: Peer, seed: bool) {
        let list = self.list(seed);
        list.push(peer);
        let pos = list.len() - 1;
        self.index.insert(key, Slot { seed, pos });
    }

    /// Drops peers last seen `ttl` or longer ago; returns how many went.
    fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let before = self.len();
        let alive = |p: &Peer| now.saturating_duration_since(p.last_seen) < ttl;
        self.leeches.retain(alive);
        self.seeds.retain(alive);
        let removed = before - self.leeches.len() - self.seeds.len();
        if removed > 0 {
            self.index.clear();
            for (seed, list) in [(false, &self.leeches), (true, &self.seeds)] {
                for (pos, p) in list.iter().enumerate() {
                    self.index.insert(p.key(), Slot { seed, pos });
                }
            }
        }
        removed
    }

    /// Up to `want` peers at random, never `me` (by key or by address), and no seeds when `to_seed`.
    ///
    /// The candidates (leechers, then seeds unless `to_seed`) are walked from a random start with a random step
    /// coprime to their count, which visits each once: a different sample every time, O(want), no allocation but the
    /// result.
    fn pick(&self, me: &PeerKey, me_addr: SocketAddr, to_seed: bool, want: usize, rng: &mut Rng) -> Vec<&Peer> {
        let n_leech = self.leeches.len();
        let n = if to_seed { n_leech } else { n_leech + self.seeds.len() };
        let mut picked = Vec::with_capacity(want.min(n));
        if n == 0 || want == 0 {
            return picked;
        }
        let mut pos = rng.below(n);
        let step = coprime_step(n, rng);
        for _ in 0..n {
            let p = if pos < n_leech { &self.leeches[pos] } else { &self.seeds[pos - n_leech] };
            let is_me = p.addr == me_addr || (p.addr.ip() == me.ip && p.id == me.id);
            if !is_me {
                picked.push(p);
                if picked.len() == want {
                    break;
                }
            }
            // `step < n`, so one subtraction does what `%` would, without a division per peer.
            pos += step;
            if pos >= n {
                pos -= n;
            }
        }
        picked
    }
}

fn coprime_step(n: usize, rng: &mut Rng) -> usize {
    if n <= 2 {
        return 1;
    }
    // More than a fifth of the numbers below any n we can hold are coprime to it, so this ends in a few tries.
    for _ in 0..64 {
        let step = 1 + rng.below(n - 1);
        if gcd(step, n) == 1 {
            return step;
        }
    }
    1
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// xorshift64*: plenty for shuffling peer lists, and seeded by the caller so tests are repeatable.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Scrape figures for one torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub complete: usize,
    pub incomplete: usize,
    pub downloaded: u64,
}

/// The registry of swarms.
#[derive(Debug)]
pub struct Tracker {
    cfg: Config,
    swarms: HashMap<[u8; 20], Swarm>,
    peers: usize,
    rng: Rng,
    next_sweep: Instant,
}

impl Tracker {
    /// A tracker serving `torrents` (info hashes), or any hash with `cfg.open`. `seed` drives the peer shuffling.
    pub fn new(cfg: Config, torrents: impl IntoIterator<Item = [u8; 20]>, seed: u64, now: Instant) -> Tracker {
        let swarms = torrents.into_iter().map(|h| (h, Swarm { registered: true, ..Swarm::default() })).collect();
        let next_sweep = now + sweep_period(cfg.interval);
        Tracker { cfg, swarms, peers: 0, rng: Rng(seed | 1), next_sweep }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Peers stored, over all swarms.
    pub fn peer_count(&self) -> usize {
        self.peers
    }

    pub fn swarm_count(&self) -> usize {
        self.swarms.len()
    }

    pub fn counts(&self, info_hash: &[u8; 20]) -> Option<Counts> {
        self.swarms.get(info_hash).map(|s| Counts {
            complete: s.seeds.len(),
            incomplete: s.leeches.len(),
            downloaded: s.downloaded,
        })
    }

    /// Answers an announce query from `ip`, appending to `body`: a peer list, or a `failure reason`.
    pub fn announce_query(&mut self, now: Instant, query: &[u8], ip: IpAddr, body: &mut Vec<u8>) {
        let start = body.len();
        let result = Announce::from_query(query).and_then(|a| self.announce(now, &a, ip, body));
        if let Err(reason) = result {
            body.truncate(start);
            write_failure(body, &reason);
        }
    }

    /// Answers a scrape query, appending to `body`.
    pub fn scrape_query(&self, query: &[u8], body: &mut Vec<u8>) {
        match scrape_hashes(query) {
            Ok(hashes) => self.scrape(&hashes, body),
            Err(reason) => write_failure(body, &reason),
        }
    }

    /// Registers the announce and appends the answer to `body`; the error is a `failure reason`.
    pub fn announce(&mut self, now: Instant, a: &Announce, ip: IpAddr, body: &mut Vec<u8>) -> Result<(), String> {
        let ip = ip.to_canonical();
        let swarm_count = self.swarms.len();
        let swarm = match self.swarms.get_mut(&a.info_hash) {
            Some(s) => s,
            None if !self.cfg.open => return Err("unregistered torrent".into()),
            None if swarm_count >= self.cfg.max_swarms => return Err("tracker is full, try again later".into()),
            None => self.swarms.entry(a.info_hash).or_default(),
        };
        let me = PeerKey { id: a.peer_id, ip };
        let me_addr = SocketAddr::new(ip, a.port);
        let seed = a.left == Some(0);
        let mut picked = Vec::new();
        if a.event == Event::Stopped {
            if swarm.remove(&me).is_some() {
                self.peers -= 1;
            }
        } else {
            let room = swarm.len() < self.cfg.max_peers_per_swarm && self.peers < self.cfg.max_peers_total;
            let peer = Peer { id: a.peer_id, addr: me_addr, last_seen: now };
            let was_seed = match swarm.store(peer, seed, room) {
                Stored::Added => {
                    self.peers += 1;
                    false
                }
                Stored::Updated { was_seed } => was_seed,
                Stored::Full => {
                    log::debug!("swarm or tracker full, not storing a peer from {me_addr}");
                    false
                }
            };
            if a.event == Event::Completed && !was_seed {
                swarm.downloaded += 1;
            }
            picked = swarm.pick(&me, me_addr, seed, a.numwant, &mut self.rng);
        }
        let interval = self.cfg.interval.as_secs().max(1) as i64;
        let mut e = Encoder { out: body };
        e.begin_dict();
        e.str("complete").int(swarm.seeds.len() as i64);
        e.str("incomplete").int(swarm.leeches.len() as i64);
        e.str("interval").int(interval);
        e.str("min interval").int((interval / 2).max(1));
        if a.compact {
            // Written straight into the body: the string lengths are known from the counts.
            let v4 = picked.iter().filter(|p| p.addr.is_ipv4()).count();
            let v6 = picked.len() - v4;
            e.str("peers");
            compact_peers(e.out, &picked, v4, true);
            if v6 > 0 {
                e.str("peers6");
                compact_peers(e.out, &picked, v6, false);
            }
        } else {
            e.str("peers").begin_list();
            for p in &picked {
                e.begin_dict();
                e.str("ip").bytes(IpText::new(p.addr.ip()).as_bytes());
                if !a.no_peer_id {
                    e.str("peer id").bytes(&p.id);
                }
                e.str("port").int(i64::from(p.addr.port()));
                e.end();
            }
            e.end();
        }
        e.end();
        Ok(())
    }

    /// BEP 48 scrape of `hashes`, or of every served torrent when empty. Hashes the tracker does not know are left
    /// out.
    pub fn scrape(&self, hashes: &[[u8; 20]], body: &mut Vec<u8>) {
        // Bencode wants the keys sorted, and a hash asked twice must appear once.
        let mut listed: Vec<&[u8; 20]> =
            if hashes.is_empty() { self.swarms.keys().collect() } else { hashes.iter().collect() };
        listed.sort_unstable();
        listed.dedup();
        let mut e = Encoder { out: body };
        e.begin_dict().str("files").begin_dict();
        for h in listed {
            if let Some(c) = self.counts(h) {
                e.bytes(h).begin_dict();
                e.str("complete").int(c.complete as i64);
                e.str("downloaded").int(c.downloaded as i64);
                e.str("incomplete").int(c.incomplete as i64);
                e.end();
            }
        }
        e.end().end();
    }

    /// When the expiry sweep is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_sweep)
    }

    /// Runs the expiry sweep if it is due; calling it early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        let ttl = 2 * self.cfg.interval;
        let mut removed = 0;
        for swarm in self.swarms.values_mut() {
            removed += swarm.expire(now, ttl);
        }
        self.peers -= removed;
        self.swarms.retain(|_, s| s.registered || s.len() > 0);
        if removed > 0 {
            log::debug!("expired {removed} peers; {} remain", self.peers);
        }
        self.next_sweep = now + sweep_period(self.cfg.interval);
    }
}

/// Appends the bencoded string of the `count` compact entries (BEP 23: address then port, big-endian) of the IPv4
/// peers (`v4`) or the IPv6 ones of `picked`.
fn compact_peers(out: &mut Vec<u8>, picked: &[&Peer], count: usize, v4: bool) {
    let len = count * if v4 { 6 } else { 18 };
    let _ = write!(out, "{len}:");
    for p in picked.iter().filter(|p| p.addr.is_ipv4() == v4) {
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

/// Half an interval (at least a second): peers then expire between 2 and 2.5 intervals after their last announce.
fn sweep_period(interval: Duration) -> Duration {
    (interval / 2).max(Duration::from_secs(1))
}

/// Appends `d14:failure reason<len>:<reason>e` to `body`.
pub fn write_failure(body: &mut Vec<u8>, reason: &str) {
    Encoder { out: body }.begin_dict().str("failure reason").str(reason).end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::{Value, decode};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const HASH: [u8; 20] = [0xAB; 20];

    fn pct(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("%{b:02X}")).collect()
    }

    fn peer_id(n: u32) -> [u8; 20] {
        let mut id = *b"-TB0001-000000000000";
        id[16..].copy_from_slice(&n.to_be_bytes());
        id
    }

    fn query(id: [u8; 20], port: u16, extra: &str) -> String {
        format!("info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0{extra}", pct(&HASH), pct(&id))
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    fn tracker(cfg: Config) -> (Tracker, Instant) {
        let now = Instant::now();
        (Tracker::new(cfg, [HASH], 7, now), now)
    }

    /// Announces and returns the raw body.
    fn announce(t: &mut Tracker, now: Instant, q: &str, from: IpAddr) -> Vec<u8> {
        let mut body = Vec::new();
        t.announce_query(now, q.as_bytes(), from, &mut body);
        body
    }

    fn failure(body: &[u8]) -> Option<String> {
        let v = decode(body).unwrap();
        v.get("failure reason").map(|r| r.as_str().unwrap().to_string())
    }

    /// The (ip, port) pairs of a compact answer.
    fn compact_peers(body: &[u8]) -> Vec<SocketAddr> {
        let v = decode(body).unwrap();
        assert_eq!(failure(body), None);
        let raw = v.get("peers").unwrap().as_bytes().unwrap();
        assert_eq!(raw.len() % 6, 0);
        raw.chunks(6)
            .map(|c| SocketAddr::new(Ipv4Addr::new(c[0], c[1], c[2], c[3]).into(), u16::from_be_bytes([c[4], c[5]])))
            .collect()
    }

    fn int(body: &[u8], key: &str) -> i64 {
        decode(body).unwrap().get(key).unwrap().as_int().unwrap()
    }

    #[test]
    fn decodes_every_announce_parameter_and_ignores_unknown_ones() {
        let q = format!(
            "{}&left=5&event=started&compact=1&no_peer_id=1&numwant=7&key=abc&supportcrypto=1&requirecrypto=0\
             &corrupt=0&ip=1.2.3.4&trackerid=x",
            query(peer_id(1), 6881, "")
        );
        let a = Announce::from_query(q.as_bytes()).unwrap();
        assert_eq!(a.info_hash, HASH);
        assert_eq!(a.peer_id, peer_id(1));
        assert_eq!(
            (a.port, a.left, a.event, a.compact, a.no_peer_id, a.numwant),
            (6881, Some(5), Event::Started, true, true, 7)
        );
        let a = Announce::from_query(query(peer_id(1), 1, "&event=paused").as_bytes()).unwrap();
        assert_eq!((a.event, a.compact, a.numwant, a.left), (Event::Update, false, NUMWANT_DEFAULT, None));
    }

    #[test]
    fn bad_parameters_get_a_failure_reason() {
        let id = pct(&peer_id(1));
        let hash = pct(&HASH);
        let cases = [
            (format!("peer_id={id}&port=1"), "missing info_hash"),
            (format!("info_hash={}&peer_id={id}&port=1", pct(&HASH[..19])), "info_hash must be 20 bytes"),
            (format!("info_hash={hash}%00&peer_id={id}&port=1"), "info_hash must be 20 bytes"),
            (format!("info_hash={hash}&port=1"), "missing peer_id"),
            (format!("info_hash={hash}&peer_id={id}"), "missing port"),
            (format!("info_hash={hash}&peer_id={id}&port=0"), "port must be 1 to 65535"),
            (format!("info_hash={hash}&peer_id={id}&port=70000"), "port must be 1 to 65535"),
            (format!("info_hash={hash}&peer_id={id}&port=-1"), "port must be a non-negative integer"),
            (format!("info_hash={hash}&peer_id={id}&port=1&left=-5"), "left must be a non-negative integer"),
            (format!("info_hash={hash}&peer_id={id}&port=1&uploaded=18446744073709551616"), "uploaded is too large"),
            (
                format!("info_hash={hash}&peer_id={id}&port=1&downloaded=99999999999999999999999"),
                "downloaded is too large",
            ),
            (format!("info_hash={hash}&peer_id={id}&port=1&event=bogus"), "unknown event"),
            (format!("info_hash={hash}&peer_id={id}&port=1&compact=2"), "compact must be 0 or 1"),
            (format!("info_hash=%ZZ{hash}&peer_id={id}&port=1"), "invalid percent-encoding in info_hash"),
            (format!("info_hash={hash}&peer_id={id}&port=1%"), "port must be a non-negative integer"),
        ];
        let (mut t, now) = tracker(Config::default());
        for (q, want) in cases {
            let reason = failure(&announce(&mut t, now, &q, ip(1))).unwrap_or_default();
            assert!(reason.starts_with(want), "{q}: got {reason:?}, want {want:?}");
        }
        assert_eq!(t.peer_count(), 0);
    }

    #[test]
    fn numwant_is_capped_and_saturates() {
        for (raw, want) in
            [("1000000000", NUMWANT_MAX), ("99999999999999999999999999", NUMWANT_MAX), ("0", 0), ("3", 3)]
        {
            let a = Announce::from_query(query(peer_id(1), 1, &format!("&numwant={raw}")).as_bytes()).unwrap();
            assert_eq!(a.numwant, want, "{raw}");
        }
        assert!(Announce::from_query(query(peer_id(1), 1, "&numwant=-1").as_bytes()).is_err());
    }

    #[test]
    fn unregistered_torrents_are_refused_unless_open() {
        let other = pct(&[1; 20]);
        let q = format!("info_hash={other}&peer_id={}&port=1", pct(&peer_id(1)));
        let (mut t, now) = tracker(Config::default());
        assert_eq!(failure(&announce(&mut t, now, &q, ip(1))).as_deref(), Some("unregistered torrent"));
        let (mut t, now) = tracker(Config { open: true, max_swarms: 2, ..Config::default() });
        assert_eq!(failure(&announce(&mut t, now, &q, ip(1))), None);
        assert_eq!(t.swarm_count(), 2);
        let third = format!("info_hash={}&peer_id={}&port=1", pct(&[2; 20]), pct(&peer_id(1)));
        assert!(failure(&announce(&mut t, now, &third, ip(1))).unwrap().contains("full"));
    }

    #[test]
    fn compact_answer_lists_others_never_the_requester() {
        let (mut t, now) = tracker(Config::default());
        for n in 1..=3 {
            announce(&mut t, now, &query(peer_id(n), 6880 + n as u16, "&left=10&compact=1"), ip(n as u8));
        }
        let body = announce(&mut t, now, &query(peer_id(4), 6884, "&left=0&compact=1"), ip(4));
        let mut peers = compact_peers(&body);
        peers.sort();
        let want: Vec<SocketAddr> = (1..=3).map(|n| SocketAddr::new(ip(n), 6880 + n as u16)).collect();
        assert_eq!(peers, want);
        assert_eq!((int(&body, "complete"), int(&body, "incomplete")), (1, 3));
        assert_eq!(int(&body, "interval"), 1800);
        assert_eq!(int(&body, "min interval"), 900);
        // Same address, another peer id (a restarted client): still never handed itself.
        let body = announce(&mut t, now, &query(peer_id(9), 6881, "&left=10&compact=1"), ip(1));
        assert!(!compact_peers(&body).contains(&SocketAddr::new(ip(1), 6881)));
    }

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

    #[test]
    fn dictionary_answer_with_and_without_peer_ids() {
        let (mut t, now) = tracker(Config::default());
        announce(&mut t, now, &query(peer_id(1), 7001, "&left=1"), ip(1));
        for (flag, with_id) in [("", true), ("&no_peer_id=1", false)] {
            let body = announce(&mut t, now, &query(peer_id(2), 7002, &format!("&left=1&compact=0{flag}")), ip(2));
            let v = decode(&body).unwrap();
            let list = v.get("peers").unwrap().as_list().unwrap();
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].get("ip").unwrap().as_str(), Some("10.0.0.1"));
            assert_eq!(list[0].get("port").unwrap().as_int(), Some(7001));
            assert_eq!(list[0].get("peer id").map(|p| p.as_bytes().unwrap()), with_id.then_some(&peer_id(1)[..]));
        }
    }

    #[test]
    fn seeds_get_no_seeds_and_leechers_get_both() {
        let (mut t, now) = tracker(Config::default());
        announce(&mut t, now, &query(peer_id(1), 1001, "&left=0"), ip(1));
        announce(&mut t, now, &query(peer_id(2), 1002, "&left=0"), ip(2));
        announce(&mut t, now, &query(peer_id(3), 1003, "&left=5"), ip(3));
        let seed = compact_peers(&announce(&mut t, now, &query(peer_id(1), 1001, "&left=0&compact=1"), ip(1)));
        assert_eq!(seed, [SocketAddr::new(ip(3), 1003)]);
        let leech = compact_peers(&announce(&mut t, now, &query(peer_id(3), 1003, "&left=5&compact=1"), ip(3)));
        assert_eq!(leech.len(), 2);
    }

    #[test]
    fn stopped_removes_and_completed_counts_once() {
        let (mut t, now) = tracker(Config::default());
        announce(&mut t, now, &query(peer_id(1), 1, "&left=5&event=started"), ip(1));
        announce(&mut t, now, &query(peer_id(1), 1, "&left=0&event=completed"), ip(1));
        announce(&mut t, now, &query(peer_id(1), 1, "&left=0&event=completed"), ip(1));
        let c = t.counts(&HASH).unwrap();
        assert_eq!(c, Counts { complete: 1, incomplete: 0, downloaded: 1 });
        // A stop from another address does not remove the peer.
        announce(&mut t, now, &query(peer_id(1), 1, "&left=0&event=stopped"), ip(2));
        assert_eq!(t.peer_count(), 1);
        let body = announce(&mut t, now, &query(peer_id(1), 1, "&left=0&event=stopped&compact=1"), ip(1));
        assert!(compact_peers(&body).is_empty());
        assert_eq!(t.peer_count(), 0);
        assert_eq!(t.counts(&HASH).unwrap(), Counts { complete: 0, incomplete: 0, downloaded: 1 });
    }

    #[test]
    fn numwant_default_cap_and_random_distinct_samples() {
        let (mut t, now) = tracker(Config::default());
        for n in 0..300u32 {
            let addr = Ipv4Addr::from(0x0A00_0000 + n);
            announce(&mut t, now, &query(peer_id(n), 2000, "&left=1"), addr.into());
        }
        let me = ip(250);
        let default = compact_peers(&announce(&mut t, now, &query(peer_id(999), 1, "&left=1&compact=1"), me));
        assert_eq!(default.len(), NUMWANT_DEFAULT);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5 {
            let q = query(peer_id(999), 1, "&left=1&compact=1&numwant=1000000000");
            let peers = compact_peers(&announce(&mut t, now, &q, me));
            assert_eq!(peers.len(), NUMWANT_MAX);
            let distinct: std::collections::HashSet<_> = peers.iter().collect();
            assert_eq!(distinct.len(), peers.len(), "a peer listed twice");
            seen.extend(peers);
        }
        assert!(seen.len() > NUMWANT_MAX, "samples are not random: {} distinct peers", seen.len());
        let none = compact_peers(&announce(&mut t, now, &query(peer_id(999), 1, "&left=1&compact=1&numwant=0"), me));
        assert!(none.is_empty());
    }

    #[test]
    fn ipv6_peers_go_to_peers6_and_mapped_v4_is_v4() {
        let (mut t, now) = tracker(Config::default());
        let v6: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into();
        let mapped: IpAddr = Ipv4Addr::new(10, 0, 0, 9).to_ipv6_mapped().into();
        announce(&mut t, now, &query(peer_id(1), 5000, "&left=1"), v6);
        announce(&mut t, now, &query(peer_id(2), 5001, "&left=1"), mapped);
        let body = announce(&mut t, now, &query(peer_id(3), 5002, "&left=1&compact=1"), ip(3));
        assert_eq!(compact_peers(&body), [SocketAddr::new(ip(9), 5001)]);
        let v = decode(&body).unwrap();
        let p6 = v.get("peers6").unwrap().as_bytes().unwrap();
        let mut want = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets().to_vec();
        want.extend_from_slice(&5000u16.to_be_bytes());
        assert_eq!(p6, &want[..]);
    }

    #[test]
    fn silent_peers_expire_on_the_timer_and_refreshed_ones_stay() {
        let interval = Duration::from_secs(100);
        let (mut t, t0) = tracker(Config { interval, ..Config::default() });
        announce(&mut t, t0, &query(peer_id(1), 1, "&left=1"), ip(1));
        announce(&mut t, t0, &query(peer_id(2), 2, "&left=1"), ip(2));
        let due = t.poll_timeout().unwrap();
        assert_eq!(due, t0 + interval / 2);
        t.handle_timeout(due - Duration::from_millis(1));
        assert_eq!(t.poll_timeout(), Some(due), "an early call must change nothing");
        announce(&mut t, t0 + interval, &query(peer_id(2), 2, "&left=1"), ip(2));
        let mut now = due;
        while now < t0 + 2 * interval + interval / 2 {
            t.handle_timeout(now);
            now = t.poll_timeout().unwrap();
        }
        assert_eq!(t.peer_count(), 1);
        let body = announce(&mut t, now, &query(peer_id(3), 3, "&left=1&compact=1"), ip(3));
        assert_eq!(compact_peers(&body), [SocketAddr::new(ip(2), 2)]);
        assert_eq!(t.swarm_count(), 1, "a registered swarm stays when empty");
    }

    #[test]
    fn open_swarms_vanish_when_their_last_peer_expires() {
        let interval = Duration::from_secs(10);
        let (mut t, t0) = tracker(Config { interval, open: true, ..Config::default() });
        let q = format!("info_hash={}&peer_id={}&port=1", pct(&[3; 20]), pct(&peer_id(1)));
        announce(&mut t, t0, &q, ip(1));
        assert_eq!(t.swarm_count(), 2);
        t.handle_timeout(t0 + 3 * interval);
        assert_eq!((t.swarm_count(), t.peer_count()), (1, 0));
    }

    #[test]
    fn full_swarm_and_full_tracker_still_answer_without_storing() {
        let (mut t, now) = tracker(Config { max_peers_per_swarm: 2, ..Config::default() });
        for n in 1..=3 {
            let body = announce(&mut t, now, &query(peer_id(n), 1, "&left=1&compact=1"), ip(n as u8));
            assert_eq!(compact_peers(&body).len(), (n as usize - 1).min(2));
        }
        assert_eq!(t.peer_count(), 2);
        // A known peer can still update itself.
        announce(&mut t, now, &query(peer_id(1), 1, "&left=0"), ip(1));
        assert_eq!(t.counts(&HASH).unwrap().complete, 1);

        let (mut t, now) = tracker(Config { max_peers_total: 1, open: true, ..Config::default() });
        announce(&mut t, now, &query(peer_id(1), 1, ""), ip(1));
        let q = format!("info_hash={}&peer_id={}&port=1", pct(&[5; 20]), pct(&peer_id(2)));
        assert_eq!(failure(&announce(&mut t, now, &q, ip(2))), None);
        assert_eq!(t.peer_count(), 1);
    }

    #[test]
    fn scrape_one_several_and_all() {
        let other = [0x11; 20];
        let now = Instant::now();
        let mut t = Tracker::new(Config::default(), [HASH, other], 1, now);
        announce(&mut t, now, &query(peer_id(1), 1, "&left=0"), ip(1));
        announce(&mut t, now, &query(peer_id(2), 1, "&left=9"), ip(2));
        let scrape = |q: String| {
            let mut body = Vec::new();
            t.scrape_query(q.as_bytes(), &mut body);
            body
        };
        let body = scrape(format!("info_hash={}", pct(&HASH)));
        let v = decode(&body).unwrap();
        let Some(Value::Dict { entries, .. }) = v.get("files") else { panic!("no files") };
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, HASH);
        let f = &entries[0].1;
        assert_eq!(f.get("complete").unwrap().as_int(), Some(1));
        assert_eq!(f.get("incomplete").unwrap().as_int(), Some(1));
        assert_eq!(f.get("downloaded").unwrap().as_int(), Some(0));
        // Several, one twice, one unknown (left out), in any order: keys come out sorted and once.
        let q = format!(
            "info_hash={}&info_hash={}&info_hash={}&info_hash={}",
            pct(&HASH),
            pct(&other),
            pct(&HASH),
            pct(&[0x77; 20])
        );
        let body = scrape(q);
        let v = decode(&body).unwrap();
        let Some(Value::Dict { entries, .. }) = v.get("files") else { panic!("no files") };
        let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(keys, [&other[..], &HASH[..]]);
        assert_eq!(scrape(String::new()), body, "a full scrape lists every served torrent");
        assert_eq!(failure(&scrape("info_hash=abc".into())).as_deref(), Some("info_hash must be 20 bytes"));
    }
}
