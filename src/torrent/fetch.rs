//! A download started from a magnet link, before it knows what it downloads: find peers (the link's `x.pe`,
//! `--peer`, its trackers), ask those that speak BEP 9 for the info dictionary 16 KiB at a time, several at once,
//! check it against the info hash, and hand it over. The session that then downloads the data is built from it by
//! the caller (see `Session`); these connections are closed and the addresses carried over, so every peer is
//! dialled again by a session that knows the torrent's pieces.
//!
//! Hostile peers cannot hold the download: a size over the cap or different from the first one heard is not
//! fetched from that peer, a wrong piece is dropped, metadata that fails its hash bans the peers that sent it and
//! starts over, a peer that only rejects is asked less and less often, and an unanswered request goes elsewhere.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::addr_book::AddrBook;
use super::{Action, Config, TICK, client_name};
use crate::bitfield::Bitfield;
use crate::peer::metadata::{FetchError, MetadataFetch, MetadataMsg, MetadataServe};
use crate::peer::{self, Event, ExtOffer, Extension, MetadataEvent, Peer};
use crate::tracker::announce::{AnnounceResponse, Schedule, TrackerUrl};

/// A metadata request unanswered this long goes to another peer.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// After a reject, the peer is asked again only after this times the rejects it sent.
const REJECT_BACKOFF: Duration = Duration::from_secs(2);
/// What we tell trackers we have left before we know the size.
const LEFT_UNKNOWN: u64 = 16 * 1024;
/// The most a stop waits for trackers to take our `stopped`.
const STOP_GRACE: Duration = Duration::from_secs(6);

/// What a magnet link gives a download to start with.
#[derive(Debug, Clone)]
pub struct Start {
    pub info_hash: [u8; 20],
    /// Tracker URLs, each its own tier, in the link's order.
    pub trackers: Vec<String>,
    pub peers: Vec<SocketAddr>,
}

/// Per connection: where the metadata exchange with it stands.
#[derive(Debug, Default)]
struct Asking {
    in_flight: Option<(u32, Instant)>,
    rejects: u32,
    next_ask: Option<Instant>,
    /// Its size differs from the one being fetched, or is impossible: never asked.
    unusable: bool,
}

impl Asking {
    /// The request in flight was rejected or timed out: the peer is asked again later, the later the more often it
    /// failed. Returns the piece, for someone else to fetch.
    fn failed(&mut self, now: Instant) -> Option<u32> {
        let (piece, _) = self.in_flight.take()?;
        self.rejects += 1;
        self.next_ask = Some(now + REJECT_BACKOFF * self.rejects);
        Some(piece)
    }
}

pub struct Fetch {
    start: Start,
    cfg: Config,
    peers: HashMap<usize, Peer>,
    asking: HashMap<usize, Asking>,
    fetch: Option<MetadataFetch>,
    /// The verified info dictionary, once complete.
    info: Option<Vec<u8>>,
    addrs: AddrBook,
    schedule: Schedule,
    actions: VecDeque<Action>,
    dirty: Vec<usize>,
    next_tick: Instant,
    stopping: bool,
    stop_deadline: Option<Instant>,
    finished: bool,
}

impl Fetch {
    pub fn new(start: Start, cfg: Config, now: Instant) -> Fetch {
        let seed = u64::from_le_bytes(cfg.peer_id[12..20].try_into().unwrap_or([7; 8]));
        let tiers = start
            .trackers
            .iter()
            .filter_map(|u| match TrackerUrl::parse(u) {
                Ok(url) => Some(vec![url]),
                Err(e) => {
                    warn!("skipping tracker: {e}");
                    None
                }
            })
            .collect();
        let mut addrs = AddrBook::new(cfg.listen_port);
        addrs.add(start.peers.iter().copied());
        Fetch {
            schedule: Schedule::new(tiers, now, seed),
            addrs,
            start,
            cfg,
            peers: HashMap::new(),
            asking: HashMap::new(),
            fetch: None,
            info: None,
            actions: VecDeque::new(),
            dirty: Vec::new(),
            next_tick: now,
            stopping: false,
            stop_deadline: None,
            finished: false,
        }
    }

    pub fn info_hash(&self) -> [u8; 20] {
        self.start.info_hash
    }

    pub fn start(&self) -> &Start {
        &self.start
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn tracker_urls(&self) -> Vec<TrackerUrl> {
        self.schedule.urls()
    }

    pub fn add_peer_addrs(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.addrs.add(addrs);
    }

    /// Peers the DHT found: into the address book and dialled at once, as a tracker's are.
    pub fn found_peers(&mut self, now: Instant, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.addrs.add(addrs);
        self.dial(now);
    }

    pub fn accepts_peers(&self) -> bool {
        !self.stopping && self.info.is_none() && self.peers.len() < self.cfg.max_peers
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn peer_count(&self) -> usize {
        self.peers.values().filter(|p| p.is_active()).count()
    }

    /// The verified info dictionary, and every address worth dialling again, once the metadata is complete: the
    /// session's connections are closed (the loop is asked to) and it has nothing more to do.
    pub fn take_metadata(&mut self) -> Option<(Vec<u8>, Vec<SocketAddr>)> {
        let info = self.info.take()?;
        let mut again: Vec<SocketAddr> = self.addrs.known().collect();
        for (&key, p) in &self.peers {
            again.extend(p.listen_addr());
            self.actions.push_back(Action::Close(key, p.generation()));
        }
        self.peers.clear();
        self.finished = true;
        Some((info, again))
    }

    /// Peers are looked for in the DHT (`Config::dht`) until the metadata is here or the fetch stops.
    pub fn uses_dht(&self) -> bool {
        self.cfg.dht && !self.stopping && !self.finished
    }

    pub fn has_metadata(&self) -> bool {
        self.info.is_some()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn take_dirty(&mut self) -> Vec<(usize, u64)> {
        super::dirty_ids(&mut self.dirty, &self.peers)
    }

    fn peer_torrent(&self) -> peer::Torrent {
        peer::Torrent {
            info_hash: self.start.info_hash,
            our_id: self.cfg.peer_id,
            piece_length: 0,
            total_length: 0,
            piece_count: 0,
            // PEX waits for the metadata: a private torrent must never use it (BEP 27), and we cannot tell yet.
            // The DHT, unlike PEX, is how a magnet without trackers finds anyone at all, so it is on before we know.
            ext: ExtOffer {
                metadata_size: None,
                pex: false,
                port: Some(self.cfg.listen_port),
                dht_port: self.uses_dht().then_some(self.cfg.listen_port),
            },
        }
    }

    pub fn peer_connected(&mut self, now: Instant, key: usize, generation: u64, addr: SocketAddr, outbound: bool) {
        self.addrs.connected(addr, outbound);
        let peer = Peer::new(now, &self.peer_torrent(), addr, outbound, generation);
        if peer.has_output() {
            self.dirty.push(key);
        }
        self.peers.insert(key, peer);
        self.asking.insert(key, Asking::default());
    }

    pub fn connect_failed(&mut self, now: Instant, addr: SocketAddr, why: &str) {
        debug!("{addr}: connect failed: {why}");
        self.addrs.connect_failed(now, addr);
    }

    pub fn peer_closed(&mut self, now: Instant, key: usize, why: &str) {
        let Some(peer) = self.peers.remove(&key) else { return };
        self.asking.remove(&key);
        if let Some(f) = &mut self.fetch {
            f.peer_gone(key);
        }
        debug!("{}: closed ({why})", peer.addr());
        self.addrs.closed(now, peer.addr(), false);
        self.ask_all(now);
    }

    fn close(&mut self, now: Instant, key: usize, why: &str) {
        let Some(generation) = self.peers.get(&key).map(|p| p.generation()) else { return };
        self.peer_closed(now, key, why);
        self.actions.push_back(Action::Close(key, generation));
    }

    pub fn peer_input(&mut self, now: Instant, key: usize, input: &[u8]) -> Result<usize, String> {
        super::feed_peer(self, now, key, input, |f| &mut f.peers, Fetch::on_peer_event)
    }

    pub fn peer_transmit(&mut self, now: Instant, key: usize, out: &mut Vec<u8>) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.poll_transmit(now, out);
        }
    }

    fn on_peer_event(&mut self, now: Instant, key: usize, event: Event, _message: &[u8]) -> Result<(), String> {
        match event {
            Event::Handshake { peer_id } => {
                if peer_id == self.cfg.peer_id {
                    if let Some(p) = self.peers.get(&key) {
                        self.addrs.ban(p.addr());
                    }
                    return Err("connected to ourselves".into());
                }
                if self.peers.iter().any(|(&k, p)| k != key && p.is_active() && p.peer_id() == Some(peer_id)) {
                    return Err("already connected to this peer".into());
                }
                if let Some(p) = self.peers.get_mut(&key) {
                    p.accept(now, &Bitfield::new(0));
                    info!("{}: peer {} (we fetch the metadata)", p.addr(), client_name(&peer_id));
                    self.dirty.push(key);
                }
            }
            Event::MetadataSize(size) => self.on_size(now, key, size),
            Event::DhtPort(port) => {
                if let Some(p) = self.peers.get(&key) {
                    self.actions.push_back(Action::DhtNode(SocketAddr::new(p.addr().ip(), port)));
                }
            }
            Event::Metadata(MetadataEvent::Data { piece, data, .. }) => self.on_data(now, key, piece, &data),
            Event::Metadata(MetadataEvent::Reject(piece)) => {
                if let Some(a) = self.asking.get_mut(&key).filter(|a| a.in_flight.is_some_and(|(p, _)| p == piece))
                    && let (Some(piece), Some(f)) = (a.failed(now), &mut self.fetch)
                {
                    f.released(piece);
                }
                self.ask_all(now);
            }
            // We have none of it yet.
            Event::Metadata(MetadataEvent::Request(piece)) => {
                if let Some(p) = self.peers.get_mut(&key)
                    && p.send_extension(Extension::Metadata, |id, out| MetadataServe::new(None).answer(piece, id, out))
                {
                    self.dirty.push(key);
                }
            }
            Event::Request(block) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.reject_request(block);
                    self.dirty.push(key);
                }
            }
            Event::Choked { .. }
            | Event::Unchoked
            | Event::Interested
            | Event::NotInterested { .. }
            | Event::Have(_)
            | Event::Bitfield
            | Event::LateBitfield(_)
            | Event::Block { .. }
            | Event::Rejected(_)
            | Event::Pex(_) => {}
        }
        Ok(())
    }

    /// A peer can send the metadata and says how big it is: start fetching with the first sane size heard.
    fn on_size(&mut self, now: Instant, key: usize, size: i64) {
        let usable = match &self.fetch {
            Some(f) => f.size() as i64 == size,
            None => match MetadataFetch::new(self.start.info_hash, size) {
                Ok(f) => {
                    self.fetch = Some(f);
                    true
                }
                Err(e) => {
                    debug!("metadata size from connection {key}: {e}");
                    false
                }
            },
        };
        if let Some(a) = self.asking.get_mut(&key) {
            a.unusable = !usable;
        }
        self.ask(now, key);
    }

    fn on_data(&mut self, now: Instant, key: usize, piece: u32, data: &[u8]) {
        let Some(f) = &mut self.fetch else { return };
        if let Some(a) = self.asking.get_mut(&key)
            && a.in_flight.is_some_and(|(p, _)| p == piece)
        {
            a.in_flight = None;
            a.rejects = 0;
        }
        let involved = f.peers_involved();
        match f.on_data(key, piece, data) {
            Ok(Some(info)) => {
                info!("metadata complete: {} bytes from {involved} peer(s)", info.len());
                self.info = Some(info);
                return;
            }
            Ok(None) => {}
            Err(FetchError::HashMismatch { peers }) => {
                warn!("the metadata failed its hash check; fetching it again from other peers");
                for bad in peers {
                    if let Some(addr) = self.peers.get(&bad).map(Peer::addr) {
                        self.addrs.ban(addr);
                    }
                    self.close(now, bad, "sent metadata that failed the hash check");
                }
            }
            Err(e) => debug!("connection {key}: metadata piece dropped: {e}"),
        }
        self.ask_all(now);
    }

    /// Asks `key` for the next missing piece if it may be asked now.
    fn ask(&mut self, now: Instant, key: usize) {
        let (Some(f), Some(a), Some(p)) = (&mut self.fetch, self.asking.get_mut(&key), self.peers.get_mut(&key)) else {
            return;
        };
        let waiting = a.next_ask.is_some_and(|t| now < t);
        if a.unusable || a.in_flight.is_some() || waiting || !p.speaks(Extension::Metadata) || self.info.is_some() {
            return;
        }
        let Some(piece) = f.next_piece_to_request(key) else { return };
        if p.send_extension(Extension::Metadata, |id, out| MetadataMsg::Request { piece }.encode(id, out)) {
            a.in_flight = Some((piece, now));
            self.dirty.push(key);
        } else {
            f.released(piece);
        }
    }

    fn ask_all(&mut self, now: Instant) {
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for k in keys {
            self.ask(now, k);
        }
    }

    pub fn progress_line(&self) -> String {
        let connected = self.peer_count();
        match &self.fetch {
            Some(f) => format!(
                "[metadata {}/{} pieces from {} peers][CN:{connected}]",
                f.pieces_have(),
                f.pieces_total(),
                f.peers_involved()
            ),
            None => format!("[metadata: waiting for a peer that has it][CN:{connected}]"),
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.schedule.poll_timeout().map_or(self.next_tick, |a| a.min(self.next_tick)))
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.poll_announce(now);
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for &k in &keys {
            let Some(p) = self.peers.get_mut(&k) else { continue };
            if let Err(why) = p.handle_timeout(now) {
                self.close(now, k, why);
                continue;
            }
            if p.has_output() {
                self.dirty.push(k);
            }
            let late = |a: &&mut Asking| {
                a.in_flight.is_some_and(|(_, at)| now.saturating_duration_since(at) >= METADATA_TIMEOUT)
            };
            if let Some(a) = self.asking.get_mut(&k).filter(late)
                && let (Some(piece), Some(f)) = (a.failed(now), &mut self.fetch)
            {
                f.released(piece);
            }
        }
        self.ask_all(now);
        self.dial(now);
        self.check_finished(now);
    }

    fn dial(&mut self, now: Instant) {
        if !self.stopping && self.info.is_none() {
            let dials = self.cfg.dial(&mut self.addrs, now, self.peers.len(), false);
            self.actions.extend(dials);
        }
    }

    fn poll_announce(&mut self, now: Instant) {
        let Some(due) = self.schedule.poll_due(now) else { return };
        let action = self.cfg.announce(due, self.start.info_hash, (0, 0, LEFT_UNKNOWN), self.stopping);
        self.actions.push_back(action);
    }

    pub fn announce_done(&mut self, now: Instant, result: Result<AnnounceResponse, String>) {
        match result {
            Ok(resp) => {
                info!("tracker: {} peer(s)", resp.peers.len());
                self.schedule.on_success(now, &resp);
                if !self.stopping {
                    self.addrs.add(resp.peers);
                    self.dial(now);
                }
            }
            Err(e) => {
                warn!("announce failed: {e}");
                self.schedule.on_failure(now);
            }
        }
        self.check_finished(now);
        self.poll_announce(now);
    }

    pub fn stop(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.stop_deadline = Some(now + STOP_GRACE);
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for k in keys {
            self.close(now, k, "shutting down");
        }
        self.schedule.stop(now);
        self.poll_announce(now);
        self.check_finished(now);
    }

    fn check_finished(&mut self, now: Instant) {
        let tracker_done = !self.schedule.has_trackers() || self.schedule.is_stopped();
        if self.stopping && (tracker_done || self.stop_deadline.is_some_and(|d| now >= d)) {
            self.finished = true;
        }
    }
}

/// A .torrent file for a verified info dictionary and the link's trackers (each its own tier): what a restart loads
/// instead of fetching the metadata again.
pub fn torrent_file(info: &[u8], trackers: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(info.len() + 64);
    let mut e = crate::bencode::Encoder { out: &mut out };
    e.begin_dict();
    if let Some(first) = trackers.first() {
        e.str("announce").str(first);
        e.str("announce-list").begin_list();
        for t in trackers {
            e.begin_list().str(t).end();
        }
        e.end();
    }
    e.str("info").raw(info).end();
    out
}
