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
            if p.key() != *me && p.addr != me_addr {
                picked.push(p);
                if picked.len() == want {
                    break;
                }
            }
            pos = (pos + step) % n;
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

    /// Answers an announce query from `ip` into `body`: a peer list, or a `failure reason`.
    pub fn announce_query(&mut self, now: Instant, query: &[u8], ip: IpAddr, body: &mut Vec<u8>) {
        let result = Announce::from_query(query).and_then(|a| self.announce(now, &a, ip, body));
        if let Err(reason) = result {
            write_failure(body, &reason);
        }
    }

    /// Answers a scrape query into `body`.
    pub fn scrape_query(&self, query: &[u8], body: &mut Vec<u8>) {
        match scrape_hashes(query) {
            Ok(hashes) => self.scrape(&hashes, body),
            Err(reason) => write_failure(body, &reason),
        }
    }

    /// Registers the announce and writes the answer into `body`; the error is a `failure reason`.
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
            let mut v4 = Vec::with_capacity(picked.len() * 6);
            let mut v6 = Vec::new();
            for p in &picked {
                match p.addr {
                    SocketAddr::V4(s) => v4.extend_from_slice(&s.ip().octets()),
                    SocketAddr::V6(s) => v6.extend_from_slice(&s.ip().octets()),
                }
                let out = if p.addr.is_ipv4() { &mut v4 } else { &mut v6 };
                out.extend_from_slice(&p.addr.port().to_be_bytes());
            }
            e.str("peers").bytes(&v4);
            if !v6.is_empty() {
                e.str("peers6").bytes(&v6);
            }
        } else {
            e.str("peers").begin_list();
            for p in &picked {
                e.begin_dict();
                e.str("ip").str(&p.addr.ip().to_string());
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

/// Half an interval (at least a second): peers then expire between 2 and 2.5 intervals after their last announce.
fn sweep_period(interval: Duration) -> Duration {
    (interval / 2).max(Duration::from_secs(1))
}

/// Replaces `body` with `d14:failure reason<len>:<reason>e`.
pub fn write_failure(body: &mut Vec<u8>, reason: &str) {
    body.clear();
    Encoder { out: body }.begin_dict().str("failure reason").str(reason).end();
}
