//! The swarm registry: who is in which swarm, and what to tell a peer that announces. Plain data in and out, with
//! `now` passed in: no HTTP and no bencode here, so every front end (HTTP now, UDP later) shares it.
//!
//! Protocol rules kept here: BEP 3 (announce, intervals), BEP 48 (scrape counts).
//!
//! A peer is known by its peer id *and* IP address, so one host cannot remove or move another host's entry by
//! replaying its peer id. A client-supplied address is never taken: trusting it would let anyone list a victim's
//! address in every swarm and turn the swarm's clients into a flood aimed at it; the address is always the
//! connection's source, which the front end passes in.
//!
//! Memory is bounded by [`Config`]: peers per swarm, peers in total, and (with `open`) swarms. A peer that cannot be
//! stored because a bound is reached still gets a normal answer with peers, so a full tracker still helps it.
//! Expiry runs as a timer ([`Registry::poll_timeout`]): every half interval, peers silent for two intervals go.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Config;
use super::traffic::Traffic;

pub const NUMWANT_DEFAULT: usize = 50;
pub const NUMWANT_MAX: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// No event (a regular re-announce), or BEP 21's `paused`, which changes nothing here.
    Update,
    Started,
    Completed,
    Stopped,
}

/// One announce, whatever carried it.
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
    /// Already capped at [`NUMWANT_MAX`].
    pub numwant: usize,
}

/// Why an announce is not served; the front end words it (`failure reason`, or a UDP error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not one of the served torrents, and the registry is not open.
    Unregistered,
    /// Open, but at its bound of swarms.
    Full,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unregistered => "unregistered torrent",
            Refusal::Full => "tracker is full, try again later",
        }
    }
}

/// One peer handed out: its address, and its id for the BEP 3 dictionary model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub id: [u8; 20],
    pub addr: SocketAddr,
}

/// What an announce is answered with: counts, intervals, and the sampled peers, read through [`Answer::v4`] and
/// [`Answer::v6`]. It borrows the registry, which keeps the sample in a reused list: answering allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub interval: Duration,
    pub min_interval: Duration,
    /// Seeds in the swarm.
    pub complete: usize,
    /// Leechers in the swarm.
    pub incomplete: usize,
    pub warning: Option<&'a str>,
    swarm: &'a Swarm,
    picked: &'a Picked,
}

impl<'a> Answer<'a> {
    /// The sampled peers with IPv4 addresses.
    pub fn v4(&self) -> impl ExactSizeIterator<Item = &'a Listed> + 'a {
        let swarm = self.swarm;
        self.picked.v4().iter().map(move |&pos| swarm.listed(pos))
    }

    /// The sampled peers with IPv6 addresses (never a v4-mapped one: those are stored as IPv4).
    pub fn v6(&self) -> impl ExactSizeIterator<Item = &'a Listed> + 'a {
        let swarm = self.swarm;
        self.picked.v6().iter().map(move |&pos| swarm.listed(pos))
    }
}

/// A sample of one swarm's peers by position (leechers first, then seeds): IPv4 ones from the front of `pos`, IPv6
/// ones from the back. A fixed array, so picking is plain stores with no capacity checks and no heap.
#[derive(Debug)]
struct Picked {
    pos: [u32; NUMWANT_MAX],
    v4: usize,
    v6: usize,
}

impl Picked {
    const EMPTY: Picked = Picked { pos: [0; NUMWANT_MAX], v4: 0, v6: 0 };

    fn v4(&self) -> &[u32] {
        &self.pos[..self.v4]
    }

    fn v6(&self) -> &[u32] {
        &self.pos[NUMWANT_MAX - self.v6..]
    }
}

/// Scrape figures for one torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapeEntry {
    pub info_hash: [u8; 20],
    pub counts: Counts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PeerKey {
    id: [u8; 20],
    ip: IpAddr,
}

#[derive(Debug, Clone)]
struct Peer {
    /// As handed out, so an answer lends it rather than copies it.
    listed: Listed,
    last_seen: Instant,
    /// Its `completed` announce has been counted: a client that says it twice (to the HTTP and the UDP front end, or
    /// after a restart) is one download.
    completed: bool,
}

impl Peer {
    fn key(&self) -> PeerKey {
        PeerKey { id: self.listed.id, ip: self.listed.addr.ip() }
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
    Updated,
    Added,
    Full,
}

impl Swarm {
    fn counts(&self) -> Counts {
        Counts { complete: self.seeds.len(), incomplete: self.leeches.len(), downloaded: self.downloaded }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn list(&mut self, seed: bool) -> &mut Vec<Peer> {
        if seed { &mut self.seeds } else { &mut self.leeches }
    }

    /// Takes a peer out; returns it and whether it was a seed.
    fn remove(&mut self, key: &PeerKey) -> Option<(Peer, bool)> {
        let slot = self.index.remove(key)?;
        let list = self.list(slot.seed);
        let peer = list.swap_remove(slot.pos);
        if let Some(moved) = list.get(slot.pos) {
            let moved = moved.key();
            self.index.insert(moved, slot);
        }
        Some((peer, slot.seed))
    }

    /// Whether a stored peer is a seed, and whether its download was counted.
    fn state_of(&self, key: &PeerKey) -> Option<(bool, bool)> {
        let slot = self.index.get(key)?;
        let list = if slot.seed { &self.seeds } else { &self.leeches };
        Some((slot.seed, list[slot.pos].completed))
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
            return Stored::Updated;
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

    /// The peer at `pos`, counting leechers first, then seeds.
    fn listed(&self, pos: u32) -> &Listed {
        let pos = pos as usize;
        let n_leech = self.leeches.len();
        if pos < n_leech { &self.leeches[pos].listed } else { &self.seeds[pos - n_leech].listed }
    }

    /// Up to `want` (at most [`NUMWANT_MAX`]) peers at random into `picked`, never `me` (by key or by address), and no
    /// seeds when `to_seed` unless there is no leecher.
    ///
    /// The candidates (leechers, then seeds unless `to_seed`) are walked from a random start with a random step
    /// coprime to their count, which visits each once: a different sample every time, O(want), no allocation.
    fn pick(&self, me: &PeerKey, me_addr: SocketAddr, to_seed: bool, want: usize, rng: &mut Rng, picked: &mut Picked) {
        let n_leech = self.leeches.len();
        // A seed is answered from the leechers alone; with none, from the seeds, since a client that cannot know
        // what it has announces `left=0` too (aria2 fetching a magnet link's metadata) and needs someone to ask.
        let n = if to_seed && n_leech > 0 { n_leech } else { n_leech + self.seeds.len() };
        let want = want.min(NUMWANT_MAX);
        if n == 0 || want == 0 {
            return;
        }
        let mut count = 0;
        let mut pos = rng.below(n);
        let step = coprime_step(n, rng);
        for _ in 0..n {
            let p = if pos < n_leech { &self.leeches[pos] } else { &self.seeds[pos - n_leech] };
            let p = &p.listed;
            let is_me = p.addr == me_addr || (p.addr.ip() == me.ip && p.id == me.id);
            if !is_me {
                // Positions fit: a swarm is bounded by `max_peers_per_swarm`, far below 2^32.
                if p.addr.is_ipv4() {
                    picked.pos[picked.v4] = pos as u32;
                    picked.v4 += 1;
                } else {
                    picked.v6 += 1;
                    picked.pos[NUMWANT_MAX - picked.v6] = pos as u32;
                }
                count += 1;
                if count == want {
                    break;
                }
            }
            // `step < n`, so one subtraction does what `%` would, without a division per peer.
            pos += step;
            if pos >= n {
                pos -= n;
            }
        }
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
pub struct Registry {
    cfg: Config,
    swarms: HashMap<[u8; 20], Swarm>,
    peers: usize,
    rng: Rng,
    next_sweep: Instant,
    /// The last announce's sample, which its [`Answer`] lends out.
    picked: Picked,
    /// What the front ends have served, counted by them.
    traffic: Traffic,
}

impl Registry {
    /// A registry serving `torrents` (info hashes), or any hash with `cfg.open`. `seed` drives the peer shuffling.
    pub fn new(cfg: Config, torrents: impl IntoIterator<Item = [u8; 20]>, seed: u64, now: Instant) -> Registry {
        let swarms = torrents.into_iter().map(|h| (h, Swarm { registered: true, ..Swarm::default() })).collect();
        let next_sweep = now + sweep_period(cfg.interval);
        Registry {
            cfg,
            swarms,
            peers: 0,
            rng: Rng(seed | 1),
            next_sweep,
            picked: Picked::EMPTY,
            traffic: Traffic::default(),
        }
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
        self.swarms.get(info_hash).map(Swarm::counts)
    }

    /// Every swarm with its counts, in no order.
    pub fn swarms(&self) -> impl Iterator<Item = ([u8; 20], Counts)> + '_ {
        self.swarms.iter().map(|(h, s)| (*h, s.counts()))
    }

    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// For the front ends, which count what they serve.
    pub fn traffic_mut(&mut self) -> &mut Traffic {
        &mut self.traffic
    }

    /// Registers the announce of the peer at `ip` and answers it: counts, intervals and a random sample of other
    /// peers.
    pub fn announce(&mut self, now: Instant, a: &Announce, ip: IpAddr) -> Result<Answer<'_>, Refusal> {
        let ip = ip.to_canonical();
        let swarm_count = self.swarms.len();
        let swarm = match self.swarms.entry(a.info_hash) {
            Entry::Occupied(s) => s.into_mut(),
            Entry::Vacant(_) if !self.cfg.open => return Err(Refusal::Unregistered),
            Entry::Vacant(_) if swarm_count >= self.cfg.max_swarms => return Err(Refusal::Full),
            Entry::Vacant(v) => v.insert(Swarm::default()),
        };
        self.picked.v4 = 0;
        self.picked.v6 = 0;
        let me = PeerKey { id: a.peer_id, ip };
        let me_addr = SocketAddr::new(ip, a.port);
        let seed = a.left == Some(0);
        // A download is counted once per peer, when it says `completed` or when a peer we knew as a leecher says it
        // has everything (aria2 with --seed-time=0 never says `completed`, only `stopped` with left=0). Having
        // been a seed before proves nothing: aria2 says `left=0` while it fetches a magnet link's metadata.
        let before = swarm.state_of(&me);
        let finished = a.event == Event::Completed || (seed && before.is_some_and(|(was_seed, _)| !was_seed));
        let count = finished && !before.is_some_and(|(_, counted)| counted);
        if a.event == Event::Stopped {
            if swarm.remove(&me).is_some() {
                self.peers -= 1;
            }
        } else {
            let room = swarm.len() < self.cfg.max_peers_per_swarm && self.peers < self.cfg.max_peers_total;
            let listed = Listed { id: a.peer_id, addr: me_addr };
            let peer = Peer { listed, last_seen: now, completed: count || before.is_some_and(|(_, c)| c) };
            match swarm.store(peer, seed, room) {
                Stored::Added => self.peers += 1,
                Stored::Updated => {}
                Stored::Full => log::debug!("swarm or tracker full, not storing a peer from {me_addr}"),
            }
            swarm.pick(&me, me_addr, seed, a.numwant, &mut self.rng, &mut self.picked);
        }
        if count {
            swarm.downloaded += 1;
        }
        let interval = self.cfg.interval.as_secs().max(1);
        Ok(Answer {
            interval: Duration::from_secs(interval),
            min_interval: Duration::from_secs((interval / 2).max(1)),
            complete: swarm.seeds.len(),
            incomplete: swarm.leeches.len(),
            warning: None,
            swarm,
            picked: &self.picked,
        })
    }

    /// BEP 48 scrape of `hashes`, or of every served torrent when empty: sorted by info hash, each once, and hashes
    /// the registry does not know left out.
    pub fn scrape(&self, hashes: &[[u8; 20]]) -> Vec<ScrapeEntry> {
        let mut listed: Vec<&[u8; 20]> =
            if hashes.is_empty() { self.swarms.keys().collect() } else { hashes.iter().collect() };
        listed.sort_unstable();
        listed.dedup();
        listed.into_iter().filter_map(|h| Some(ScrapeEntry { info_hash: *h, counts: self.counts(h)? })).collect()
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
