//! The Mainline DHT (BEP 5) as a sans-IO machine: [`Node`] takes datagrams and the time, and hands back datagrams to
//! send, a deadline and events (peers found). It never does IO and never reads the clock.
//!
//! One job per file: `krpc` (the messages), `id` (ids, XOR distance, the seeded random source), `table` (the routing
//! table), `lookup` (one iterative lookup), `token` (write tokens), `store` (peers announced to us), `limit` (the
//! per-address packet budget). This file ties them together: it answers queries, matches answers to the queries it
//! sent (by transaction id and address), runs lookups for the info hashes it tracks and announces to the nodes
//! closest to them, and keeps the table fresh.
//!
//! Bounded everywhere a stranger can push: datagram size, queries in flight ([`MAX_OUTSTANDING`]), answers queued
//! ([`MAX_ANSWERS_QUEUED`], the oldest gives way), pings waiting, lookups, events, the peer store, the packet budget
//! table. Only IPv4 (BEP 5): v4-mapped IPv6 sources count as IPv4, other IPv6 datagrams are dropped. No query is
//! ever sent to port 0, to an unspecified or multicast address, or to an address known to be our own.

pub mod id;
pub mod krpc;
pub mod limit;
pub mod lookup;
pub mod store;
pub mod table;
pub mod token;

mod running;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use id::{Id, Rng};
use krpc::{Body, Contact, DecodeError, Message, Query, Response};
use lookup::Lookup;
use table::{Insert, K, Table};

pub const DEFAULT_ROUTERS: [&str; 3] =
    ["router.bittorrent.com:6881", "dht.transmissionbt.com:6881", "router.utorrent.com:6881"];

/// A query without an answer after this counts as failed.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// A lookup query without an answer after this stops holding up its lookup (its answer still counts until
/// [`QUERY_TIMEOUT`]).
pub const SLOW_AFTER: Duration = Duration::from_millis(700);
/// Queries in flight at most; past it nothing new is sent until answers or timeouts free a slot.
pub const MAX_OUTSTANDING: usize = 256;
/// Answers waiting for the socket; past it the oldest is dropped (its asker has likely given up).
pub const MAX_ANSWERS_QUEUED: usize = 256;
/// Pings waiting to be sent (to nodes that would fit the table, to questionable nodes, to added nodes).
pub const MAX_PENDING_PINGS: usize = 64;
/// Lookups running at once; tracked info hashes beyond it wait their turn.
pub const MAX_LOOKUPS: usize = 16;
pub const MAX_EVENTS: usize = 1024;
/// Peers in one `get_peers` answer: 32 · 8 bytes keeps the answer near 600 bytes with the nodes.
pub const MAX_VALUES: usize = 32;
/// Distinct peers a lookup remembers (to report each once).
const MAX_PEERS_PER_LOOKUP: usize = 2000;
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
/// A tracked info hash is looked up again (and re-announced) after 15 minutes plus up to 15 more.
pub const RELOOKUP_MIN: Duration = Duration::from_secs(15 * 60);
pub const RELOOKUP_SPREAD: Duration = Duration::from_secs(15 * 60);
/// A lookup that reached nobody is retried this soon.
pub const RETRY_EMPTY: Duration = Duration::from_secs(15);
/// A lookup that reached nodes but found no peer is repeated after this, then twice as long each time it finds none
/// again, up to the ordinary re-lookup: a leech whose torrent has no peer yet (a seed not announced yet, or joining
/// later) finds it within minutes instead of half an hour, and a torrent nobody has costs a few lookups an hour.
pub const RETRY_NO_PEERS: Duration = Duration::from_secs(60);
/// Addresses given to `add_node` that are pinged again while the table is empty (the routers that did not answer).
const MAX_RETRY_ADDRS: usize = 16;
/// Our own addresses as others reported them (BEP 42 `ip`) or as found by reaching ourselves.
const MAX_OWN_ADDRS: usize = 4;

#[derive(Debug, Clone)]
pub struct Config {
    /// Our node id; None → random (seeded from `seed`). A saved table brings its id back.
    pub id: Option<[u8; 20]>,
    /// Seed for ids, transaction ids and token secrets (tests pass fixed seeds; processes pass OS randomness).
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Peers a lookup (get_peers) found for `info_hash`; may come many times per lookup, addresses never port 0.
    Peers { info_hash: [u8; 20], peers: Vec<SocketAddr> },
    /// A lookup for `info_hash` finished (the k closest answered or nothing left to ask); `announced` = how many
    /// nodes took our announce_peer.
    LookupDone { info_hash: [u8; 20], peers: usize, announced: usize },
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub nodes: usize,
    pub queries_in: u64,
    pub queries_out: u64,
    pub dropped: u64,
    pub peers_stored: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// find_node for our own id: joining, and again while the table is small.
    Bootstrap,
    /// find_node for a random id in a stale bucket.
    Refresh,
    /// get_peers for a tracked info hash, then announce.
    Track(Id),
}

#[derive(Debug)]
enum Phase {
    Searching,
    /// announce_peer to the closest nodes that gave tokens: `queue` still to send, `pending` in flight.
    Announcing {
        queue: Vec<(Contact, Vec<u8>)>,
        pending: usize,
        acked: usize,
    },
}

#[derive(Debug)]
struct Active {
    key: u64,
    purpose: Purpose,
    lookup: Lookup,
    phase: Phase,
    /// The port to announce (Some(0): implied port); None: only find peers.
    port: Option<u16>,
    peers: HashSet<SocketAddrV4>,
}

#[derive(Debug, Clone, Copy)]
enum Sent {
    Ping,
    Lookup(u64),
    Announce(u64),
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    to: SocketAddrV4,
    deadline: Instant,
    /// For lookup queries not yet marked slow: when to mark them.
    slow_at: Option<Instant>,
    sent: Sent,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    port: Option<u16>,
    next_lookup: Instant,
    active: bool,
    /// Lookups in a row that found no peer (the retry backs off with it).
    without_peers: u32,
}

/// What a finished lookup found: tests compare it with the true closest nodes; logs print it.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub target: Id,
    pub closest: Vec<Id>,
    pub queries: usize,
}

/// The DHT node: see the module documentation. Its Debug shows the id and the counters, not the token secrets.
pub struct Node {
    id: Id,
    rng: Rng,
    table: Table,
    tokens: token::Tokens,
    store: store::PeerStore,
    limiter: limit::Limiter,
    outstanding: HashMap<[u8; 2], Outstanding>,
    answers: VecDeque<(SocketAddrV4, Vec<u8>)>,
    pings: VecDeque<SocketAddrV4>,
    lookups: Vec<Active>,
    next_key: u64,
    /// Lookups are served in turn, from this index.
    next_turn: usize,
    tracked: HashMap<Id, Tracked>,
    events: VecDeque<Event>,
    own_addrs: VecDeque<SocketAddrV4>,
    /// Recent `add_node` addresses, pinged again every [`RETRY_EMPTY`] while the table is empty.
    retry_addrs: VecDeque<SocketAddrV4>,
    retry_at: Option<Instant>,
    /// Refresh lookups waiting to run one after the other (the sparse buckets after a bootstrap).
    refresh_queue: Vec<Id>,
    /// Whether a bootstrap lookup ever started; the first node in the table starts one.
    bootstrapped: bool,
    bootstrap_due: Option<Instant>,
    next_maintenance: Instant,
    /// Set by commands: work is waiting for the next `handle_timeout`/`poll_datagram`.
    kick: Option<Instant>,
    queries_in: u64,
    queries_out: u64,
    dropped: u64,
    #[cfg(test)]
    finished: Vec<Finished>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &hex(&self.id))
            .field("stats", &self.stats())
            .field("outstanding", &self.outstanding.len())
            .field("lookups", &self.lookups.len())
            .field("tracked", &self.tracked.len())
            .finish()
    }
}

impl Node {
    pub fn new(now: Instant, config: Config) -> Node {
        let mut rng = Rng::new(config.seed);
        let id = config.id.unwrap_or_else(|| rng.id());
        let tokens = token::Tokens::new(now, &mut rng);
        Node {
            id,
            rng,
            table: Table::new(now, id),
            tokens,
            store: store::PeerStore::default(),
            limiter: limit::Limiter::default(),
            outstanding: HashMap::new(),
            answers: VecDeque::new(),
            pings: VecDeque::new(),
            lookups: Vec::new(),
            next_key: 0,
            next_turn: 0,
            tracked: HashMap::new(),
            events: VecDeque::new(),
            own_addrs: VecDeque::new(),
            retry_addrs: VecDeque::new(),
            retry_at: None,
            refresh_queue: Vec::new(),
            bootstrapped: false,
            bootstrap_due: None,
            next_maintenance: now + MAINTENANCE_EVERY,
            kick: None,
            queries_in: 0,
            queries_out: 0,
            dropped: 0,
            #[cfg(test)]
            finished: Vec::new(),
        }
    }

    /// A node started from a saved table (`save()`'s bytes); a table that does not decode is an Err with context.
    /// The saved nodes are asked for the nodes closest to us, and enter the table as they answer.
    pub fn from_saved(now: Instant, config: Config, saved: &[u8]) -> Result<Node, String> {
        let (saved_id, nodes) = table::decode_saved(saved)?;
        let mut node = Node::new(now, Config { id: Some(config.id.unwrap_or(saved_id)), ..config });
        let seeds: Vec<Contact> = nodes.into_iter().filter(|c| c.id != node.id && node.sendable(c.addr)).collect();
        node.bootstrapped = true;
        node.start(Purpose::Bootstrap, node.id, None, &seeds);
        node.kick = Some(now);
        Ok(node)
    }

    pub fn id(&self) -> [u8; 20] {
        self.id
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(from) = ipv4(from) else {
            self.dropped += 1;
            return;
        };
        if !self.sendable(from) || !self.limiter.allow(now, from) {
            self.dropped += 1;
            return;
        }
        match krpc::decode(datagram) {
            Err(DecodeError::Drop(why)) => {
                self.dropped += 1;
                log::trace!("dht: dropped a datagram from {from}: {why}");
            }
            Err(DecodeError::Reply { tid, code, why }) => {
                self.queries_in += 1;
                log::trace!("dht: error {code} to {from}: {why}");
                self.answer(from, &Message { tid, body: Body::Error { code, message: why.as_bytes() } });
            }
            Ok(Message { tid, body: Body::Query { id, read_only, query } }) => {
                self.on_query(now, from, tid, id, read_only, query)
            }
            Ok(Message { tid, body: Body::Response { response, ip } }) => {
                self.on_response(now, from, tid, response, ip)
            }
            Ok(Message { tid, body: Body::Error { code, .. } }) => self.on_error(now, from, tid, code),
        }
    }

    fn on_query(&mut self, now: Instant, from: SocketAddrV4, tid: &[u8], id: Id, read_only: bool, query: Query<'_>) {
        if id == self.id {
            // Our own query come back (a bootstrap address that is us): that address is ours, never to be asked
            // again. A node faking our id only makes us ignore it.
            self.note_own(from);
            self.dropped += 1;
            return;
        }
        self.queries_in += 1;
        let mut response = Response { id: self.id, nodes: Vec::new(), values: Vec::new(), token: None };
        let token;
        match query {
            Query::Ping => {}
            Query::FindNode { target } => response.nodes = self.closest_for(&target, from),
            Query::GetPeers { info_hash } => {
                token = self.tokens.make(*from.ip());
                response.token = Some(&token);
                response.values = self.store.peers(&info_hash, MAX_VALUES);
                response.nodes = self.closest_for(&info_hash, from);
            }
            Query::AnnouncePeer { info_hash, port, implied_port, token } => {
                let port = if implied_port { from.port() } else { port };
                let refusal = if !self.tokens.check(*from.ip(), token) {
                    Some((krpc::ERROR_PROTOCOL, "bad token"))
                } else if port == 0 {
                    Some((krpc::ERROR_PROTOCOL, "port must be 1 to 65535"))
                } else if !self.store.add(now, info_hash, SocketAddrV4::new(*from.ip(), port)) {
                    Some((krpc::ERROR_SERVER, "peer store full"))
                } else {
                    None
                };
                if let Some((code, why)) = refusal {
                    let message = why.as_bytes();
                    return self.answer(from, &Message { tid, body: Body::Error { code, message } });
                }
            }
        }
        self.answer(from, &Message { tid, body: Body::Response { response, ip: Some(from) } });
        // BEP 43: a read-only node does not answer queries, so it does not belong in anyone's table.
        if !read_only {
            let c = Contact { id, addr: from };
            if !self.table.heard_query(now, c) && self.table.has_room_for(now, &id) {
                self.queue_ping(from);
            }
        }
    }

    /// The K nodes closest to `target`, without the asker itself.
    fn closest_for(&self, target: &Id, asker: SocketAddrV4) -> Vec<Contact> {
        let mut nodes = self.table.closest(target, K + 1);
        nodes.retain(|c| c.addr != asker);
        nodes.truncate(K);
        nodes
    }

    /// Takes the outstanding query `tid` if it went to `from`; anything else is counted and dropped.
    fn take_outstanding(&mut self, from: SocketAddrV4, tid: &[u8]) -> Option<Outstanding> {
        let key: Option<[u8; 2]> = tid.try_into().ok();
        match key.and_then(|k| self.outstanding.get(&k).map(|o| (k, o.to))) {
            Some((k, to)) if to == from => self.outstanding.remove(&k),
            _ => {
                self.dropped += 1;
                log::trace!("dht: an answer from {from} to no query of ours to it");
                None
            }
        }
    }

    fn on_response(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        tid: &[u8],
        response: Response<'_>,
        ip: Option<SocketAddrV4>,
    ) {
        let Some(o) = self.take_outstanding(from, tid) else { return };
        if response.id == self.id {
            self.note_own(from);
            self.failed(now, o, false);
            return;
        }
        if let Some(ip) = ip {
            self.note_own(ip);
        }
        match self.table.heard_reply(now, Contact { id: response.id, addr: from }) {
            Insert::Added => {
                if !self.bootstrapped {
                    self.bootstrap_due = Some(now);
                }
                if self.table.len() == 1 {
                    // The first node: tracked info hashes waiting for one start now.
                    for t in self.tracked.values_mut().filter(|t| !t.active) {
                        t.next_lookup = t.next_lookup.min(now);
                    }
                }
            }
            Insert::Full { ping: Some(addr) } => self.queue_ping(addr),
            _ => {}
        }
        match o.sent {
            Sent::Ping => {}
            Sent::Lookup(key) => {
                let nodes: Vec<Contact> =
                    response.nodes.iter().filter(|c| c.id != self.id && self.sendable(c.addr)).copied().collect();
                let Some(a) = self.lookups.iter_mut().find(|a| a.key == key) else { return };
                if a.lookup.answered(from, response.id, response.token, &nodes)
                    && let Purpose::Track(info_hash) = a.purpose
                {
                    let mut fresh = Vec::new();
                    for p in response.values.iter().filter(|p| p.port() != 0 && !p.ip().is_unspecified()) {
                        if a.peers.len() < MAX_PEERS_PER_LOOKUP && a.peers.insert(*p) {
                            fresh.push(SocketAddr::V4(*p));
                        }
                    }
                    if !fresh.is_empty() {
                        self.push_event(Event::Peers { info_hash, peers: fresh });
                    }
                }
            }
            Sent::Announce(key) => {
                if let Some(Active { phase: Phase::Announcing { pending, acked, .. }, .. }) =
                    self.lookups.iter_mut().find(|a| a.key == key)
                {
                    *pending = pending.saturating_sub(1);
                    *acked += 1;
                }
            }
        }
        self.progress(now);
    }

    fn on_error(&mut self, now: Instant, from: SocketAddrV4, tid: &[u8], code: i64) {
        let Some(o) = self.take_outstanding(from, tid) else { return };
        log::trace!("dht: error {code} from {from}");
        // It answered, so it is there: the table keeps it as it is; the lookup or announce counts it as a refusal.
        self.failed(now, o, false);
    }

    /// A query of ours failed: unanswered (`timed_out`, which the table counts against the node) or refused.
    fn failed(&mut self, now: Instant, o: Outstanding, timed_out: bool) {
        if timed_out {
            self.table.failed(now, o.to);
        }
        match o.sent {
            Sent::Ping => {}
            Sent::Lookup(key) => {
                if let Some(a) = self.lookups.iter_mut().find(|a| a.key == key) {
                    a.lookup.failed(o.to);
                }
            }
            Sent::Announce(key) => {
                if let Some(Active { phase: Phase::Announcing { pending, .. }, .. }) =
                    self.lookups.iter_mut().find(|a| a.key == key)
                {
                    *pending = pending.saturating_sub(1);
                }
            }
        }
        self.progress(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for o in self.outstanding.values_mut() {
            if let (Some(at), Sent::Lookup(key)) = (o.slow_at, o.sent)
                && at <= now
            {
                o.slow_at = None;
                if let Some(a) = self.lookups.iter_mut().find(|a| a.key == key) {
                    a.lookup.slow(o.to);
                }
            }
        }
        let expired: Vec<[u8; 2]> =
            self.outstanding.iter().filter(|(_, o)| o.deadline <= now).map(|(k, _)| *k).collect();
        for k in expired {
            if let Some(o) = self.outstanding.remove(&k) {
                self.failed(now, o, true);
            }
        }
        self.tokens.rotate(now, &mut self.rng);
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            if self.table.is_empty() {
                for addr in self.retry_addrs.clone() {
                    self.queue_ping(addr);
                }
                self.retry_at = Some(now + RETRY_EMPTY);
            }
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + MAINTENANCE_EVERY;
            self.store.expire(now);
            self.limiter.forget_idle(now);
            for addr in self.table.to_ping(now) {
                self.queue_ping(addr);
            }
            let refreshing = self.lookups.iter().any(|a| a.purpose == Purpose::Refresh);
            if !refreshing
                && !self.table.is_empty()
                && self.lookups.len() < MAX_LOOKUPS
                && let Some(target) = self.table.stale_target(now, &mut self.rng)
            {
                let seeds = self.table.closest(&target, K);
                self.start(Purpose::Refresh, target, None, &seeds);
            }
        }
        self.kick = None;
        self.progress(now);
    }

    /// Writes one datagram into `out` (empty on entry) and returns where it goes; None when nothing to send.
    pub fn poll_datagram(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
        if let Some((to, bytes)) = self.answers.pop_front() {
            out.extend_from_slice(&bytes);
            return Some(SocketAddr::V4(to));
        }
        loop {
            if self.outstanding.len() >= MAX_OUTSTANDING {
                return None;
            }
            if let Some(to) = self.next_query(now, out) {
                return Some(SocketAddr::V4(to));
            }
            if !self.progress(now) {
                return None;
            }
        }
    }

    /// Sends the next waiting ping, announce or lookup query, lookups in turn.
    fn next_query(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<SocketAddrV4> {
        while let Some(to) = self.pings.pop_front() {
            if self.sendable(to) && !self.outstanding.values().any(|o| o.to == to) {
                self.send_query(now, to, Sent::Ping, &Query::Ping, out);
                return Some(to);
            }
        }
        let n = self.lookups.len();
        for turn in 0..n {
            let i = (self.next_turn + turn) % n;
            loop {
                let a = &mut self.lookups[i];
                let (to, ask) = match (&mut a.phase, a.purpose) {
                    (Phase::Searching, purpose) => {
                        let Some(c) = a.lookup.next_query() else { break };
                        let ask = match purpose {
                            Purpose::Track(info_hash) => Ask::GetPeers(info_hash),
                            Purpose::Bootstrap | Purpose::Refresh => Ask::FindNode(a.lookup.target()),
                        };
                        (c.addr, ask)
                    }
                    (Phase::Announcing { queue, pending, .. }, Purpose::Track(info_hash)) => {
                        let Some((c, token)) = queue.pop() else { break };
                        *pending += 1;
                        (c.addr, Ask::Announce { info_hash, port: a.port.unwrap_or(0), token })
                    }
                    (Phase::Announcing { .. }, _) => break,
                };
                let key = a.key;
                if !self.sendable(to) {
                    let a = &mut self.lookups[i];
                    match &mut a.phase {
                        Phase::Searching => a.lookup.failed(to),
                        Phase::Announcing { pending, .. } => *pending = pending.saturating_sub(1),
                    }
                    continue;
                }
                let (sent, query) = match &ask {
                    Ask::FindNode(target) => (Sent::Lookup(key), Query::FindNode { target: *target }),
                    Ask::GetPeers(info_hash) => (Sent::Lookup(key), Query::GetPeers { info_hash: *info_hash }),
                    Ask::Announce { info_hash, port, token } => (
                        Sent::Announce(key),
                        // Port 0 asks for the implied port: the datagram's source port.
                        Query::AnnouncePeer { info_hash: *info_hash, port: *port, implied_port: *port == 0, token },
                    ),
                };
                self.send_query(now, to, sent, &query, out);
                self.next_turn = i + 1;
                return Some(to);
            }
        }
        None
    }

    fn fresh_tid(&mut self) -> [u8; 2] {
        loop {
            let tid = (self.rng.next_u64() as u16).to_be_bytes();
            if !self.outstanding.contains_key(&tid) {
                return tid;
            }
        }
    }

    fn send_query(&mut self, now: Instant, to: SocketAddrV4, sent: Sent, query: &Query<'_>, out: &mut Vec<u8>) {
        let tid = self.fresh_tid();
        Message { tid: &tid, body: Body::Query { id: self.id, read_only: false, query: query.clone() } }.encode(out);
        self.register(now, tid, to, sent);
    }

    fn register(&mut self, now: Instant, tid: [u8; 2], to: SocketAddrV4, sent: Sent) {
        self.queries_out += 1;
        let slow_at = matches!(sent, Sent::Lookup(_)).then_some(now + SLOW_AFTER);
        self.outstanding.insert(tid, Outstanding { to, deadline: now + QUERY_TIMEOUT, slow_at, sent });
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.next_maintenance.min(self.tokens.next_rotation());
        let tracked = self.tracked.values().filter(|t| !t.active).map(|t| t.next_lookup);
        let deadlines = self.outstanding.values().map(|o| o.slow_at.map_or(o.deadline, |s| s.min(o.deadline)));
        let others = [self.kick, self.bootstrap_due, self.retry_at];
        for t in tracked.chain(deadlines).chain(others.into_iter().flatten()) {
            at = at.min(t);
        }
        Some(at)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A node to try: a bootstrap router (resolved), or a peer's BEP 5 `port` message (peer ip + that port).
    /// Pings it; it enters the table only when it answers.
    pub fn add_node(&mut self, now: Instant, addr: SocketAddr) {
        if let Some(addr) = ipv4(addr) {
            self.queue_ping(addr);
            self.kick = Some(now);
            if !self.retry_addrs.contains(&addr) {
                if self.retry_addrs.len() >= MAX_RETRY_ADDRS {
                    self.retry_addrs.pop_front();
                }
                self.retry_addrs.push_back(addr);
            }
            self.retry_at.get_or_insert(now + RETRY_EMPTY);
        }
    }

    /// Find peers for `info_hash` now and every 15–30 min after (sooner while it finds none: [`RETRY_NO_PEERS`]); when `port` is Some, announce_peer to the 8
    /// closest nodes that gave tokens (Some(0) = implied_port). Calling it again updates the port; no duplicate
    /// lookups.
    pub fn track(&mut self, now: Instant, info_hash: [u8; 20], port: Option<u16>) {
        let t = self.tracked.entry(info_hash).or_insert(Tracked {
            port,
            next_lookup: now,
            active: false,
            without_peers: 0,
        });
        if t.port != port && !t.active {
            // A new port to announce (the torrent now serves data): announce it now, not in half an hour.
            t.next_lookup = now;
        }
        t.port = port;
        for a in self.lookups.iter_mut().filter(|a| a.purpose == Purpose::Track(info_hash)) {
            a.port = port;
        }
        self.kick = Some(now);
    }

    /// Stop looking up / announcing `info_hash`.
    pub fn untrack(&mut self, info_hash: [u8; 20]) {
        self.tracked.remove(&info_hash);
        self.lookups.retain(|a| a.purpose != Purpose::Track(info_hash));
    }

    pub fn stats(&self) -> Stats {
        Stats {
            nodes: self.table.len(),
            queries_in: self.queries_in,
            queries_out: self.queries_out,
            dropped: self.dropped,
            peers_stored: self.store.len(),
        }
    }

    /// The routing table (our id and the good nodes) as bytes for `from_saved`.
    pub fn save(&self) -> Vec<u8> {
        table::encode_saved(&self.id, &self.table.contacts())
    }

    fn answer(&mut self, to: SocketAddrV4, message: &Message<'_>) {
        let mut out = Vec::new();
        message.encode(&mut out);
        if self.answers.len() >= MAX_ANSWERS_QUEUED {
            self.answers.pop_front();
            self.dropped += 1;
        }
        self.answers.push_back((to, out));
    }

    fn queue_ping(&mut self, addr: SocketAddrV4) {
        if self.pings.len() < MAX_PENDING_PINGS && !self.pings.contains(&addr) && self.sendable(addr) {
            self.pings.push_back(addr);
        }
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn note_own(&mut self, addr: SocketAddrV4) {
        if !self.own_addrs.contains(&addr) {
            if self.own_addrs.len() >= MAX_OWN_ADDRS {
                self.own_addrs.pop_front();
            }
            self.own_addrs.push_back(addr);
        }
    }

    /// Whether we may send to `addr` (and take datagrams from it).
    fn sendable(&self, addr: SocketAddrV4) -> bool {
        let ip = addr.ip();
        addr.port() != 0
            && !ip.is_unspecified()
            && !ip.is_multicast()
            && !ip.is_broadcast()
            && !self.own_addrs.contains(&addr)
    }
}

/// A query a lookup wants sent.
enum Ask {
    FindNode(Id),
    GetPeers(Id),
    Announce { info_hash: Id, port: u16, token: Vec<u8> },
}

fn hex(id: &Id) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// IPv4 addresses, v4-mapped IPv6 ones as IPv4; None for real IPv6 (BEP 5 is IPv4 only).
fn ipv4(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => Some(SocketAddrV4::new(ip, addr.port())),
        IpAddr::V6(_) => None,
    }
}
