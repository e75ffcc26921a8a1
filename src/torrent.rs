//! One torrent's session: the swarm-wide half of the peer logic. It owns the picker, the storage, the choker, the
//! announce schedule and every peer's protocol state, and answers the reactor's inputs (bytes from a peer, a
//! connection opened or closed, a tracker reply, the time) with actions (connect, close, announce) and with bytes
//! queued in each peer's output buffer.
//!
//! Data path: a `piece` message's block is copied once from the socket buffer into its piece's assembly buffer; when
//! the last block arrives the piece is hashed once and written with one pwrite per file span. Serving reads a block
//! with pread straight into the peer's output buffer behind the message header. Only pieces in flight are in memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::bitfield::Bitfield;
use crate::choker::{self, Candidate, Choker};
use crate::metainfo::Metainfo;
use crate::peer::{MAX_QUEUED_REQUESTS, Peer, UPLOAD_LOW_WATER};
use crate::picker::{BLOCK_LEN, Block, BlockOutcome, Picker};
use crate::progress::{self, Rate, Snapshot};
use crate::resume;
use crate::storage::{OpenMode, Storage};
use crate::tracker::announce::{self, AnnounceParams, AnnounceResponse, Event, Schedule, TrackerUrl};
use crate::wire::{self, Handshake, Limits, Message};

/// Housekeeping runs this often: rates, time-outs, keep-alives, connection attempts, the progress line.
const TICK: Duration = Duration::from_secs(1);
/// A request unanswered this long goes to another peer (and back to the same one later if nobody else has it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a log line reports progress when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// How often the resume record is brought up to date while pieces arrive (and files are checked for changes made
/// under us when none arrive).
const RESUME_EVERY: Duration = Duration::from_secs(5);
/// Files whose size and mtime are looked at per `RESUME_EVERY` when no record is due, so thousands of files cost little.
const AUDIT_FILES: usize = 1000;
/// The most a stop waits for trackers to take our `stopped` (an announce already in flight to a silent tracker would
/// otherwise hold the exit for its whole time-out).
const STOP_GRACE: Duration = Duration::from_secs(6);
/// Wait before dialling an address again after it failed or closed.
const REDIAL_AFTER: Duration = Duration::from_secs(30);
/// Requests outstanding at all peers together, in 16 KiB blocks (a peer may still have `REQUESTS_ALWAYS_ALLOWED`
/// whatever the total). Blocks of pieces being filled are held in memory until the piece is whole, so this bounds a
/// download's memory with many peers (each peer's own depth is up to 250 blocks). 4 MiB per round trip is a full
/// loopback transfer (one peer alone reaches this depth), ~40 MB/s at 100 ms, far more on a LAN; at 512 blocks a
/// leech trading with 8 peers peaked at 16 MiB of memory, at 256 at 11 MiB, with the same swarm time.
const MAX_REQUESTS_IN_FLIGHT: usize = 256;
/// Requests a peer may always have outstanding whatever the total, so a newcomer is never starved by fast peers
/// that hold the whole budget.
const REQUESTS_ALWAYS_ALLOWED: usize = 8;
/// Piece buffers kept for reuse, so a busy download does not allocate and free a piece per piece.
const SPARE_PIECE_BUFFERS: usize = 4;
/// Pieces that failed their hash with several senders, remembered until a good copy shows which block was bad.
const MAX_SUSPECT_PIECES: usize = 64;
/// Failed attempts remembered per suspect piece.
const MAX_SUSPECT_ATTEMPTS: usize = 4;
/// An address that failed this many times in a row is forgotten until a tracker mentions it again.
const MAX_DIAL_FAILURES: u32 = 5;
/// Cap on addresses remembered from trackers, so a hostile tracker cannot grow our memory.
const MAX_KNOWN_ADDRS: usize = 2000;
/// Who we are in the BEP 10 extended handshake.
const CLIENT_VERSION: &str = concat!("toybt ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub struct Config {
    pub peer_id: [u8; 20],
    /// The port peers can reach us on (announced, and used to avoid dialling ourselves).
    pub listen_port: u16,
    pub max_peers: usize,
    pub max_connecting: usize,
    pub unchoke_slots: usize,
    /// After the download completes: `None` seeds until stopped, `Some(d)` stops `d` later.
    pub seed_time: Option<Duration>,
    /// Writes the resume record; `None` for no record.
    pub resume: Option<resume::Keeper>,
    /// Serve at most this many payload bytes per second to all peers together (`--max-upload-rate`).
    pub max_upload_rate: Option<u64>,
    /// Show a live line on the terminal rather than log lines.
    pub live_progress: bool,
    /// Trackers tried before the torrent's own, e.g. the tracker this process runs itself.
    pub extra_trackers: Vec<String>,
}

impl Config {
    pub fn new(peer_id: [u8; 20], listen_port: u16) -> Config {
        Config {
            peer_id,
            listen_port,
            max_peers: 50,
            max_connecting: 8,
            unchoke_slots: choker::DEFAULT_SLOTS,
            seed_time: None,
            resume: None,
            max_upload_rate: None,
            live_progress: std::io::stderr().is_terminal(),
            extra_trackers: Vec::new(),
        }
    }
}

/// What the reactor must do for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to a peer; report with `peer_connected` or `connect_failed`.
    Connect(SocketAddr),
    /// Close this connection, named by its key and generation (the session already forgot it).
    Close(usize, u64),
    /// Announce `params` to the tracker at `url` and report the reply (or failure) with `announce_done`.
    Announce { url: TrackerUrl, params: AnnounceParams, timeout: Duration },
}

/// A piece being assembled from blocks.
struct PieceBuf {
    data: Vec<u8>,
    /// Who sent each block, by block slot, to blame if the piece fails its hash.
    senders: Vec<Option<Sender>>,
}

/// One connection, told apart from later ones with the same slab key by its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sender {
    generation: u64,
    addr: SocketAddr,
}

/// A block of a piece that failed its hash while several peers had sent blocks of it. When a good copy of the piece
/// arrives, a block whose digest differs from the good one convicts its sender.
struct Suspect {
    slot: u32,
    sender: Sender,
    digest: [u8; 20],
}

#[derive(Debug, Default)]
struct AddrState {
    connected: bool,
    /// The peer there had every piece: no use dialling it once we have them too.
    seed: bool,
    retry_at: Option<Instant>,
    failures: u32,
    banned: bool,
}

pub struct Torrent {
    meta: Metainfo,
    storage: Storage,
    picker: Picker,
    limits: Limits,
    cfg: Config,
    peers: HashMap<usize, Peer>,
    /// Peers with new output since the reactor last asked, by key.
    dirty: Vec<usize>,
    actions: VecDeque<Action>,
    pieces: HashMap<u32, PieceBuf>,
    /// Blocks of pieces that failed with several senders, by piece.
    suspects: HashMap<u32, Vec<Suspect>>,
    spare_buffers: Vec<Vec<u8>>,
    addrs: HashMap<SocketAddr, AddrState>,
    connecting: usize,
    choker: Choker,
    schedule: Schedule,
    have_bytes: u64,
    downloaded: Rate,
    uploaded: Rate,
    hash_failures: u32,
    /// Why we stopped downloading, e.g. the disk is full; we keep serving what we have.
    disk_error: Option<String>,
    resume: Option<resume::Keeper>,
    /// Pieces we have but could not read back (a file truncated under us): no longer served or vouched for.
    unreadable: HashSet<u32>,
    /// Files whose read errors were already logged, so a broken file is reported once rather than per block.
    read_errors_reported: HashSet<PathBuf>,
    throttle: Option<Throttle>,
    /// When the throttle has earned enough to serve again; peers waiting on it are woken then.
    throttle_wake: Option<Instant>,
    started_at: Instant,
    completed_at: Option<Instant>,
    next_tick: Instant,
    next_choke: Instant,
    next_log: Instant,
    next_resume: Instant,
    /// Pieces verified since the resume record was last written.
    unrecorded_pieces: u32,
    stopping: bool,
    /// When a stop gives up waiting for the trackers.
    stop_deadline: Option<Instant>,
    /// Set when the session may end: stopped and the tracker told, or seed time over.
    finished: bool,
    /// True if this run downloaded anything, so the summary is worth printing.
    was_leeching: bool,
}

impl Torrent {
    pub fn new(
        meta: Metainfo,
        storage: Storage,
        have: Bitfield,
        mut cfg: Config,
        now: Instant,
    ) -> crate::error::Result<Torrent> {
        let seed = u64::from_le_bytes(cfg.peer_id[12..20].try_into().unwrap_or([7; 8]));
        let picker = Picker::new(meta.piece_length, meta.total_length, &have, seed)?;
        let have_bytes = have.iter_ones().map(|i| meta.piece_size(i) as u64).sum();
        let mut tier_urls = meta.tracker_tiers();
        let extra: Vec<String> =
            cfg.extra_trackers.iter().filter(|u| !tier_urls.iter().flatten().any(|t| t == *u)).cloned().collect();
        if !extra.is_empty() {
            tier_urls.insert(0, extra);
        }
        let tiers: Vec<Vec<TrackerUrl>> = tier_urls
            .iter()
            .map(|tier| {
                tier.iter()
                    .filter_map(|u| match TrackerUrl::parse(u) {
                        Ok(url) => Some(url),
                        Err(e) => {
                            warn!("skipping tracker: {e}");
                            None
                        }
                    })
                    .collect()
            })
            .collect();
        let complete = picker.is_complete();
        let limits = Limits::new(meta.piece_count());
        Ok(Torrent {
            storage,
            picker,
            limits,
            peers: HashMap::new(),
            dirty: Vec::new(),
            actions: VecDeque::new(),
            pieces: HashMap::new(),
            suspects: HashMap::new(),
            spare_buffers: Vec::new(),
            addrs: HashMap::new(),
            connecting: 0,
            choker: Choker::new(cfg.unchoke_slots, seed ^ 0x5bd1e995),
            schedule: Schedule::new(tiers, now, seed),
            have_bytes,
            downloaded: Rate::default(),
            uploaded: Rate::default(),
            hash_failures: 0,
            disk_error: None,
            resume: cfg.resume.take(),
            unreadable: HashSet::new(),
            read_errors_reported: HashSet::new(),
            throttle: cfg.max_upload_rate.map(|rate| Throttle::new(rate, now)),
            throttle_wake: None,
            started_at: now,
            completed_at: complete.then_some(now),
            next_tick: now,
            next_choke: now + choker::ROUND,
            next_log: now + LOG_EVERY,
            next_resume: now + RESUME_EVERY,
            unrecorded_pieces: 0,
            stopping: false,
            stop_deadline: None,
            finished: false,
            was_leeching: !complete,
            meta,
            cfg,
        })
    }

    pub fn meta(&self) -> &Metainfo {
        &self.meta
    }

    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// True once the session has nothing left to do: the reactor may exit.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn peer_count(&self) -> usize {
        self.peers.values().filter(|p| p.is_active()).count()
    }

    pub fn uploaded(&self) -> u64 {
        self.uploaded.total()
    }

    pub fn downloaded(&self) -> u64 {
        self.downloaded.total()
    }

    /// Whether an incoming connection may be accepted.
    pub fn accepts_peers(&self) -> bool {
        !self.stopping && self.peers.len() < self.cfg.max_peers
    }

    /// Addresses to try (from `--peer` or a tracker). Ourselves, duplicates and banned addresses are skipped.
    pub fn add_peer_addrs(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        for addr in addrs {
            let ours = addr.port() == self.cfg.listen_port && (addr.ip().is_loopback() || addr.ip().is_unspecified());
            if ours || addr.port() == 0 || (self.addrs.len() >= MAX_KNOWN_ADDRS && !self.addrs.contains_key(&addr)) {
                continue;
            }
            let state = self.addrs.entry(addr).or_default();
            // Fresh news of a peer overrides the wait after an earlier failure.
            state.retry_at = None;
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The connections (key, generation) that have bytes to send; the reactor writes them out.
    pub fn take_dirty(&mut self) -> Vec<(usize, u64)> {
        let mut keys = std::mem::take(&mut self.dirty);
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter().filter_map(|k| self.peers.get(&k).map(|p| (k, p.generation))).collect()
    }

    /// Everything the peer's socket should send now: queued messages, then uploads read from disk straight into
    /// `out` while it holds less than the low-water mark.
    pub fn peer_transmit(&mut self, key: usize, out: &mut Vec<u8>, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        peer.take_output(out, now);
        while out.len() < UPLOAD_LOW_WATER {
            let Some(&b) = peer.requests_in.front() else { break };
            if let Some(t) = &mut self.throttle
                && let Err(wake) = t.take(now, b.length)
            {
                self.throttle_wake = Some(self.throttle_wake.map_or(wake, |w| w.min(wake)));
                break;
            }
            peer.requests_in.pop_front();
            let mark = out.len();
            wire::encode_piece_header(out, b.index, b.begin, b.length);
            if let Err(e) = self.storage.read_block(b.index, b.begin, b.length, out) {
                out.truncate(mark);
                // A file truncated or broken under us: stop offering what it held, say so once per file.
                self.unreadable.insert(b.index);
                let path = match &e {
                    crate::storage::StorageError::Io { path, .. } => Some(path.clone()),
                    _ => None,
                };
                if path.is_none_or(|p| self.read_errors_reported.insert(p)) {
                    log::error!("cannot serve piece {}: {e}; pieces that cannot be read are no longer served", b.index);
                }
                continue;
            }
            peer.last_send = now;
            peer.up.add(b.length as u64);
            self.uploaded.add(b.length as u64);
        }
    }

    /// A connection is up: inbound ones wait for the peer's handshake, outbound ones send ours first.
    pub fn peer_connected(&mut self, key: usize, generation: u64, addr: SocketAddr, outbound: bool, now: Instant) {
        if outbound {
            self.connecting = self.connecting.saturating_sub(1);
        }
        if let Some(state) = self.addrs.get_mut(&addr) {
            state.connected = true;
            state.failures = 0;
        }
        let mut peer = Peer::new(addr, outbound, self.meta.piece_count(), now);
        peer.generation = generation;
        if outbound {
            Handshake::ours(self.meta.info_hash, self.cfg.peer_id).encode(peer.out());
            peer.handshake_sent = true;
            self.dirty.push(key);
        }
        debug!("{addr}: connected ({})", if outbound { "outgoing" } else { "incoming" });
        self.peers.insert(key, peer);
    }

    pub fn connect_failed(&mut self, addr: SocketAddr, now: Instant, why: &str) {
        self.connecting = self.connecting.saturating_sub(1);
        debug!("{addr}: connect failed: {why}");
        if let Some(state) = self.addrs.get_mut(&addr) {
            state.connected = false;
            state.failures += 1;
            state.retry_at = Some(now + REDIAL_AFTER * state.failures);
            if state.failures >= MAX_DIAL_FAILURES {
                self.addrs.remove(&addr);
            }
        }
    }

    /// The connection is gone (closed by either side): its requests go back to the pool.
    pub fn peer_closed(&mut self, key: usize, why: &str, now: Instant) {
        let Some(peer) = self.peers.remove(&key) else { return };
        self.picker.peer_left(key);
        if peer.holds_upload_slot() {
            self.slot_freed(now);
        }
        if peer.is_active() {
            info!("{}: disconnected ({why})", peer.addr);
        } else {
            debug!("{}: closed before the handshake ({why})", peer.addr);
        }
        if let Some(state) = self.addrs.get_mut(&peer.addr) {
            state.connected = false;
            state.seed = peer.has.all();
            state.retry_at = Some(now + REDIAL_AFTER);
        }
    }

    fn close(&mut self, key: usize, why: &str, now: Instant) {
        let Some(generation) = self.peers.get(&key).map(|p| p.generation) else { return };
        self.peer_closed(key, why, now);
        self.actions.push_back(Action::Close(key, generation));
    }

    /// Bytes read from a peer. Returns how many were consumed (a partial message stays for the next read), or the
    /// reason to close the connection.
    pub fn peer_input(&mut self, key: usize, buf: &[u8], now: Instant) -> Result<usize, String> {
        let Some(peer) = self.peers.get_mut(&key) else { return Err("unknown connection".into()) };
        peer.last_recv = now;
        let mut used = 0;
        if !peer.is_active() {
            match Handshake::decode(buf) {
                Ok(None) => return Ok(0),
                Ok(Some(h)) => {
                    self.accept_handshake(key, &h, now)?;
                    used = wire::HANDSHAKE_LEN;
                }
                Err(e) => return Err(format!("bad handshake: {e}")),
            }
        }
        while let Some((msg, n)) = wire::decode(&buf[used..], &self.limits).map_err(|e| e.to_string())? {
            self.handle_message(key, msg, now)?;
            used += n;
            if !self.peers.contains_key(&key) {
                break;
            }
        }
        Ok(used)
    }

    fn accept_handshake(&mut self, key: usize, h: &Handshake, now: Instant) -> Result<(), String> {
        if h.info_hash != self.meta.info_hash {
            return Err("handshake for another torrent".into());
        }
        if h.peer_id == self.cfg.peer_id {
            let addr = self.peers[&key].addr;
            self.addrs.entry(addr).or_default().banned = true;
            return Err("connected to ourselves".into());
        }
        if self.peers.values().any(|p| p.peer_id == Some(h.peer_id)) {
            return Err("already connected to this peer".into());
        }
        let complete = self.is_complete();
        let bits = self.picker.have().as_wire().to_vec();
        let have_any = self.have_bytes > 0;
        let peer = self.peers.get_mut(&key).expect("checked by caller");
        if !peer.handshake_sent {
            Handshake::ours(self.meta.info_hash, self.cfg.peer_id).encode(peer.out());
            peer.handshake_sent = true;
        }
        peer.peer_id = Some(h.peer_id);
        if have_any {
            wire::encode_bitfield(peer.out(), &bits);
        }
        // After the bitfield, which some clients accept only as the first message.
        if h.supports_extensions() {
            wire::encode_extended_handshake(peer.out(), MAX_QUEUED_REQUESTS as u32, CLIENT_VERSION);
        }
        peer.last_block = now;
        info!("{}: peer {} ({})", peer.addr, client_name(&h.peer_id), if complete { "we seed" } else { "we leech" });
        self.picker.peer_joined(key, &Bitfield::new(self.meta.piece_count()));
        self.dirty.push(key);
        Ok(())
    }

    fn handle_message(&mut self, key: usize, msg: Message, now: Instant) -> Result<(), String> {
        // Keep-alives and messages we skip do not count: a bitfield is legal after them.
        let counts = !matches!(msg, Message::KeepAlive | Message::Port(_) | Message::Unknown { .. });
        let first = {
            let peer = self.peers.get_mut(&key).expect("caller checked");
            let first = !peer.said_anything;
            peer.said_anything |= counts;
            first
        };
        match msg {
            Message::KeepAlive | Message::Port(_) | Message::Unknown { .. } => {}
            Message::Choke => {
                let peer = self.peer(key);
                peer.peer_choking = true;
                peer.requested.clear();
                self.picker.peer_choked(key);
            }
            Message::Unchoke => {
                let peer = self.peer(key);
                peer.peer_choking = false;
                peer.last_block = now;
                self.request_more(key, now);
            }
            Message::Interested => {
                self.peer(key).peer_interested = true;
                // Do not make a newcomer wait for the next round while upload slots are free.
                let taken = self.peers.values().filter(|p| p.holds_upload_slot()).count();
                if taken < self.cfg.unchoke_slots + 1 {
                    self.peer(key).unchoke();
                    self.dirty.push(key);
                }
            }
            Message::NotInterested => {
                let peer = self.peer(key);
                let freed = peer.holds_upload_slot();
                peer.peer_interested = false;
                if freed {
                    self.slot_freed(now);
                }
            }
            Message::Have(index) => {
                self.peer(key).has.set(index);
                self.picker.peer_have(key, index);
                self.update_interest(key, now);
            }
            Message::Bitfield(bits) => {
                let has = Bitfield::from_wire(bits, self.meta.piece_count()).map_err(|e| e.to_string())?;
                if first {
                    if has.all() && self.is_complete() {
                        // The normal end of a seed meeting a seed, not a fault of the peer's.
                        self.close(key, "both sides are seeds", now);
                        return Ok(());
                    }
                    self.picker.peer_joined(key, &has);
                    self.peer(key).has = has;
                } else {
                    // aria2 starts with nothing, says nothing, and sends a bitfield once it has a piece; a late
                    // bitfield can only add pieces, so it counts as haves.
                    for index in has.iter_ones() {
                        if !self.peer(key).has.get(index) {
                            self.peer(key).has.set(index);
                            self.picker.peer_have(key, index);
                        }
                    }
                    if self.peer(key).has.all() && self.is_complete() {
                        self.close(key, "both sides are seeds", now);
                        return Ok(());
                    }
                }
                self.update_interest(key, now);
            }
            Message::Request { index, begin, length } => {
                let size = self.meta.piece_size(index);
                if begin.checked_add(length).is_none_or(|end| end > size) {
                    return Err(format!("request past the end of piece {index}"));
                }
                if self.picker.have().get(index) && !self.unreadable.contains(&index) {
                    let block = Block { index, begin, length };
                    self.peer(key).queue_request(block);
                }
            }
            Message::Cancel { index, begin, length } => self.peer(key).cancel_request(Block { index, begin, length }),
            Message::Piece { index, begin, data } => self.on_block(key, index, begin, data, now)?,
        }
        Ok(())
    }

    fn peer(&mut self, key: usize) -> &mut Peer {
        self.peers.get_mut(&key).expect("a message is handled only for a known peer")
    }

    /// Whether this session fetches pieces at all: not after a disk error, and never into a seed's data, which is
    /// opened read-only (a seed with damaged pieces serves the rest; it does not repair the user's files).
    fn downloads(&self) -> bool {
        self.disk_error.is_none() && self.storage.mode() == OpenMode::Leech
    }

    /// Interested in a peer exactly while it has a piece we lack; ask for blocks as soon as we may.
    fn update_interest(&mut self, key: usize, now: Instant) {
        let interesting = self.downloads() && self.picker.is_interesting(key);
        let peer = self.peer(key);
        if peer.am_interested != interesting {
            peer.set_interested(interesting);
            self.dirty.push(key);
        }
        self.request_more(key, now);
    }

    /// Tops up the peer's pipeline of our requests to its current depth.
    fn request_more(&mut self, key: usize, now: Instant) {
        if !self.downloads() || self.stopping {
            return;
        }
        let Some(peer) = self.peers.get(&key) else { return };
        if peer.peer_choking || !peer.am_interested {
            return;
        }
        let in_flight: usize = self.peers.values().map(|p| p.requested.len()).sum();
        let want = requests_to_add(peer.request_depth(now), peer.requested.len(), in_flight);
        if want == 0 {
            return;
        }
        let blocks = self.picker.pick(key, want, now);
        if blocks.is_empty() {
            return;
        }
        let peer = self.peer(key);
        for b in &blocks {
            wire::encode_request(peer.out(), b.index, b.begin, b.length);
            peer.requested.push_back((*b, now));
        }
        self.dirty.push(key);
    }

    fn on_block(&mut self, key: usize, index: u32, begin: u32, data: &[u8], now: Instant) -> Result<(), String> {
        let block = Block { index, begin, length: data.len() as u32 };
        // Only a block we asked this peer for (and have not withdrawn) is taken: otherwise any peer could write into
        // pieces other peers are filling, and their hash failure would be blamed on the honest senders too.
        let Some(requested_at) = self.peer(key).request_done(block) else {
            debug!("{}: block {index}+{begin} we did not ask it for", self.peers[&key].addr);
            return Ok(());
        };
        match self.picker.block_received(key, block) {
            BlockOutcome::Unrequested => {
                debug!("{}: unrequested block {index}+{begin}", self.peers[&key].addr);
                return Ok(());
            }
            BlockOutcome::Duplicate => return Ok(()),
            BlockOutcome::New { piece_complete, cancels } => {
                let peer = self.peer(key);
                peer.down.add(data.len() as u64);
                peer.last_block = now;
                peer.sample_rtt(now.saturating_duration_since(requested_at));
                let sender = Sender { generation: peer.generation, addr: peer.addr };
                self.downloaded.add(data.len() as u64);
                let piece_len = self.meta.piece_size(index) as usize;
                let spare = &mut self.spare_buffers;
                let buf = self.pieces.entry(index).or_insert_with(|| {
                    let mut data = spare.pop().unwrap_or_default();
                    data.resize(piece_len, 0);
                    PieceBuf { data, senders: vec![None; piece_len.div_ceil(BLOCK_LEN as usize)] }
                });
                buf.data[begin as usize..begin as usize + data.len()].copy_from_slice(data);
                buf.senders[(begin / BLOCK_LEN) as usize] = Some(sender);
                for (other, b) in cancels {
                    if let Some(p) = self.peers.get_mut(&other) {
                        p.request_done(b);
                        wire::encode_cancel(p.out(), b.index, b.begin, b.length);
                        self.dirty.push(other);
                    }
                }
                if piece_complete {
                    self.finish_piece(index, now);
                }
            }
        }
        self.request_more(key, now);
        Ok(())
    }

    /// All blocks of a piece are in: hash it, store it, and tell everyone; or throw it away and blame its senders.
    fn finish_piece(&mut self, index: u32, now: Instant) {
        let Some(buf) = self.pieces.remove(&index) else { return };
        if self.storage.piece_matches(index, &buf.data) {
            self.convict(index, &buf.data, now);
            match self.storage.write_piece(index, &buf.data) {
                Ok(()) => self.piece_done(index, now),
                Err(e) => {
                    self.picker.piece_failed(index);
                    self.stop_downloading(format!("cannot store piece {index}: {e}"));
                }
            }
        } else {
            self.hash_failures += 1;
            self.picker.piece_failed(index);
            let mut senders: Vec<Sender> = buf.senders.iter().flatten().copied().collect();
            senders.sort_unstable_by_key(|s| s.generation);
            senders.dedup();
            warn!("piece {index} failed its hash check (from {} peer(s)); fetching it again", senders.len());
            for s in &senders {
                if let Some(p) = self.peers.values_mut().find(|p| p.generation == s.generation) {
                    p.hash_failures += 1;
                }
            }
            // A sole sender is the liar. With several, blaming them all would ban honest peers alongside a liar
            // (and a fast liar spoils many pieces before it is caught): remember who sent what until a good copy
            // of the piece tells.
            match senders[..] {
                [liar] => self.ban(liar, "sent data that failed the hash check", now),
                _ => self.suspect(index, &buf),
            }
        }
        if self.spare_buffers.len() < SPARE_PIECE_BUFFERS {
            // Kept as it is, not zeroed: a piece is hashed only once all its blocks have overwritten every byte, and
            // zeroing a piece per piece was 4% of a download's instructions.
            self.spare_buffers.push(buf.data);
        }
    }

    /// The disk refused (full, read-only, failing): keep what is verified, keep seeding, stop asking for what we
    /// cannot store. Said once, at error level; a later run resumes once the cause is fixed.
    fn stop_downloading(&mut self, why: String) {
        if self.disk_error.is_some() {
            debug!("{why}");
            return;
        }
        log::error!("{why}; downloading stops, seeding goes on");
        self.disk_error = Some(why);
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for k in keys {
            self.picker.peer_choked(k);
            if let Some(p) = self.peers.get_mut(&k) {
                p.requested.clear();
                p.set_interested(false);
            }
            self.dirty.push(k);
        }
    }

    /// Remembers the digest of every block of a failed piece with its sender, within bounds.
    fn suspect(&mut self, index: u32, buf: &PieceBuf) {
        if self.suspects.len() >= MAX_SUSPECT_PIECES && !self.suspects.contains_key(&index) {
            return;
        }
        let list = self.suspects.entry(index).or_default();
        if list.len() >= MAX_SUSPECT_ATTEMPTS * buf.senders.len() {
            return;
        }
        for (slot, sender) in buf.senders.iter().enumerate() {
            if let Some(sender) = *sender {
                let digest = crate::sha1::digest(block_of(&buf.data, slot));
                list.push(Suspect { slot: slot as u32, sender, digest });
            }
        }
    }

    /// A good copy of piece `index` is in: whoever sent a block of an earlier, failed copy that differs from it lied.
    fn convict(&mut self, index: u32, good: &[u8], now: Instant) {
        let Some(list) = self.suspects.remove(&index) else { return };
        let mut liars: Vec<Sender> = list
            .iter()
            .filter(|s| crate::sha1::digest(block_of(good, s.slot as usize)) != s.digest)
            .map(|s| s.sender)
            .collect();
        liars.sort_unstable_by_key(|s| s.generation);
        liars.dedup();
        for liar in liars {
            warn!("{}: sent a bad block of piece {index} (found once a good copy came in)", liar.addr);
            self.ban(liar, "sent a block that failed the hash check", now);
        }
    }

    /// Never again: the address is banned and its connection, if still open, closed.
    fn ban(&mut self, sender: Sender, why: &str, now: Instant) {
        self.addrs.entry(sender.addr).or_default().banned = true;
        if let Some(key) = self.peers.iter().find(|(_, p)| p.generation == sender.generation).map(|(k, _)| *k) {
            self.close(key, why, now);
        }
    }

    fn piece_done(&mut self, index: u32, now: Instant) {
        self.picker.piece_verified(index);
        self.have_bytes += self.meta.piece_size(index) as u64;
        self.unrecorded_pieces += 1;
        let complete = self.is_complete();
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for k in keys {
            let Some(p) = self.peers.get_mut(&k) else { continue };
            if !p.is_active() {
                continue;
            }
            if complete && p.has.all() {
                self.close(k, "both sides are seeds", now);
                continue;
            }
            if !p.has.get(index) {
                wire::encode_have(p.out(), index);
            }
            if p.am_interested && !self.picker.is_interesting(k) {
                p.set_interested(false);
            }
            self.dirty.push(k);
        }
        if complete {
            self.on_complete(now);
        }
    }

    fn on_complete(&mut self, now: Instant) {
        self.completed_at = Some(now);
        // Slots were held by the rate peers gave us; a seed ranks by the rate they take.
        self.slot_freed(now);
        // Said before the flush: the last piece is verified now, and flushing GiBs just written can take seconds.
        info!("download complete: {}", self.meta.name);
        info!(
            "{}",
            progress::summary(
                self.downloaded.total(),
                self.uploaded.total(),
                now - self.started_at,
                self.hash_failures
            )
        );
        self.save_resume();
        self.schedule.completed(now);
    }

    pub fn announce_done(&mut self, now: Instant, result: Result<AnnounceResponse, String>) {
        match result {
            Ok(resp) => {
                if let Some(w) = &resp.warning {
                    warn!("tracker warning: {w}");
                }
                info!(
                    "tracker: {} peer(s), {} seed(s), {} leecher(s)",
                    resp.peers.len(),
                    resp.complete.map_or("?".into(), |n| n.to_string()),
                    resp.incomplete.map_or("?".into(), |n| n.to_string())
                );
                self.schedule.on_success(now, &resp);
                if !self.stopping {
                    self.add_peer_addrs(resp.peers);
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

    /// Every tracker URL the session may announce to, for the caller to resolve before the loop starts.
    pub fn tracker_urls(&self) -> Vec<TrackerUrl> {
        self.schedule.urls()
    }

    /// Begin a clean stop: tell the tracker, close peers, end once the tracker answered (or failed).
    pub fn stop(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.stop_deadline = Some(now + STOP_GRACE);
        self.save_resume();
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for k in keys {
            self.close(k, "shutting down", now);
        }
        self.schedule.stop(now);
        self.poll_announce(now);
        self.check_finished(now);
    }

    fn check_finished(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let tracker_done = !self.schedule.has_trackers() || self.schedule.is_stopped();
        if self.stopping && tracker_done {
            self.finished = true;
            return;
        }
        if self.stop_deadline.is_some_and(|d| now >= d) {
            warn!("the tracker did not take our `stopped` within {}s; stopping anyway", STOP_GRACE.as_secs());
            self.finished = true;
            return;
        }
        if let (Some(done_at), Some(seed_time)) = (self.completed_at, self.cfg.seed_time)
            && !self.stopping
            && now.saturating_duration_since(done_at) >= seed_time
            && (!self.schedule.has_trackers() || !self.was_leeching || self.schedule.completed_reported())
        {
            info!("seed time over");
            self.stop(now);
        }
    }

    /// The next moment `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.throttle_wake.map_or(self.next_tick, |w| w.min(self.next_tick));
        if let Some(a) = self.schedule.poll_timeout() {
            t = t.min(a);
        }
        Some(t)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.poll_announce(now);
        if self.throttle_wake.is_some_and(|w| now >= w) {
            self.throttle_wake = None;
            let waiting = self.peers.iter().filter(|(_, p)| !p.requests_in.is_empty()).map(|(&k, _)| k);
            self.dirty.extend(waiting);
        }
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        self.downloaded.sample(now);
        self.uploaded.sample(now);
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for &k in &keys {
            let Some(p) = self.peers.get_mut(&k) else { continue };
            p.down.sample(now);
            p.up.sample(now);
            if let Some(why) = p.timed_out(now) {
                self.close(k, why, now);
                continue;
            }
            p.keepalive_due(now);
            if p.has_output() {
                self.dirty.push(k);
            }
        }
        for (k, b) in self.picker.requests_timed_out(now, REQUEST_TIMEOUT) {
            if let Some(p) = self.peers.get_mut(&k) {
                debug!("{}: request {}+{} timed out", p.addr, b.index, b.begin);
                p.request_done(b);
                wire::encode_cancel(p.out(), b.index, b.begin, b.length);
                self.dirty.push(k);
            }
        }
        for &k in &keys {
            self.request_more(k, now);
        }
        if now >= self.next_choke {
            self.next_choke = now + choker::ROUND;
            self.rechoke(now);
        }
        if now >= self.next_resume {
            self.next_resume = now + RESUME_EVERY;
            if self.unrecorded_pieces > 0 {
                self.save_resume();
            } else if let Some(keeper) = &mut self.resume {
                keeper.audit(&self.storage, AUDIT_FILES);
            }
        }
        self.dial(now);
        self.report(now);
        self.check_finished(now);
    }

    fn poll_announce(&mut self, now: Instant) {
        let Some(due) = self.schedule.poll_due(now) else { return };
        let params = AnnounceParams {
            info_hash: self.meta.info_hash,
            peer_id: self.cfg.peer_id,
            port: self.cfg.listen_port,
            uploaded: self.uploaded.total(),
            downloaded: self.downloaded.total(),
            left: self.meta.total_length - self.have_bytes,
            event: due.event,
            numwant: if due.event == Some(Event::Stopped) { 0 } else { 50 },
            key: u32::from_le_bytes(self.cfg.peer_id[8..12].try_into().unwrap_or([0; 4])),
        };
        debug!("announcing to {}:{} ({:?})", due.url.host, due.url.port, due.event);
        let timeout = if self.stopping { Duration::from_secs(5) } else { announce::REQUEST_TIMEOUT };
        self.actions.push_back(Action::Announce { url: due.url, params, timeout });
    }

    /// An upload slot was given up (its peer left, lost interest, or we changed from leeching to seeding): choose
    /// again at the next tick rather than leave the slot empty until the round ends, which in a fast swarm is long
    /// enough for a whole download, and is what kept late joiners waiting on peers that had finished.
    fn slot_freed(&mut self, now: Instant) {
        self.next_choke = self.next_choke.min(now);
    }

    fn rechoke(&mut self, now: Instant) {
        let seeding = self.is_complete();
        let candidates: Vec<Candidate> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_active())
            .map(|(&key, p)| Candidate {
                key,
                interested: p.peer_interested,
                rate: match (seeding, p.is_snubbing(now)) {
                    (true, _) => p.up.per_sec(),
                    (false, true) => 0,
                    (false, false) => p.down.per_sec(),
                },
            })
            .collect();
        let unchoke: HashSet<usize> = self.choker.rechoke(now, &candidates).into_iter().collect();
        for c in candidates {
            let p = self.peer(c.key);
            if unchoke.contains(&c.key) {
                p.unchoke();
            } else {
                p.choke();
            }
            if p.has_output() {
                self.dirty.push(c.key);
            }
        }
    }

    /// Starts connections while below the limits.
    fn dial(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        let room = self
            .cfg
            .max_connecting
            .saturating_sub(self.connecting)
            .min(self.cfg.max_peers.saturating_sub(self.peers.len() + self.connecting));
        let complete = self.is_complete();
        let due: Vec<SocketAddr> = self
            .addrs
            .iter()
            .filter(|(_, s)| {
                let waiting = s.retry_at.is_some_and(|t| t > now);
                !(s.connected || s.banned || waiting || (complete && s.seed))
            })
            .map(|(a, _)| *a)
            .take(room)
            .collect();
        for addr in due {
            if let Some(state) = self.addrs.get_mut(&addr) {
                state.connected = true;
            }
            self.connecting += 1;
            self.actions.push_back(Action::Connect(addr));
        }
    }

    /// Brings the resume record up to date (data fsynced first, see `resume::Keeper`). Pieces that could not be read
    /// back are left out. A failed fsync is a disk error like a failed write.
    fn save_resume(&mut self) {
        let Some(keeper) = &mut self.resume else { return };
        let mut pieces = self.picker.have().clone();
        for &i in &self.unreadable {
            pieces.clear(i);
        }
        match keeper.save(&mut self.storage, pieces.as_wire()) {
            Ok(()) => self.unrecorded_pieces = 0,
            Err(e @ resume::SaveError::Sync(_)) => self.stop_downloading(e.to_string()),
            Err(e) => warn!("{e}"),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            have_bytes: self.have_bytes,
            total_bytes: self.meta.total_length,
            down_rate: self.downloaded.per_sec(),
            up_rate: self.uploaded.per_sec(),
            uploaded: self.uploaded.total(),
            peers: self.peer_count(),
            seeding: self.is_complete(),
        }
    }

    fn report(&mut self, now: Instant) {
        let line = progress::readout(&self.snapshot());
        if self.cfg.live_progress {
            eprint!("\r{line}\x1b[K");
        } else if now >= self.next_log {
            self.next_log = now + LOG_EVERY;
            info!("{line}");
        }
    }

    /// The closing summary of this run, for the command to print.
    pub fn summary(&self, now: Instant) -> String {
        progress::summary(
            self.downloaded.total(),
            self.uploaded.total(),
            now.saturating_duration_since(self.started_at),
            self.hash_failures,
        )
    }

    /// How many pieces we hold verified now.
    pub fn verified_pieces(&self) -> u32 {
        self.picker.have().count()
    }

    pub fn hash_failures(&self) -> u32 {
        self.hash_failures
    }

    pub fn was_leeching(&self) -> bool {
        self.was_leeching
    }

    pub fn disk_error(&self) -> Option<&str> {
        self.disk_error.as_deref()
    }
}

/// The token bucket behind `Config::max_upload_rate`: at most `rate` bytes a second, in bursts of a twentieth of it.
struct Throttle {
    rate: u64,
    tokens: u64,
    at: Instant,
}

impl Throttle {
    fn new(rate: u64, now: Instant) -> Throttle {
        Throttle { rate: rate.max(1), tokens: 0, at: now }
    }

    /// Spends `n` bytes if earned; otherwise says when they will be.
    fn take(&mut self, now: Instant, n: u32) -> Result<(), Instant> {
        let n = u64::from(n);
        let burst = (self.rate / 20).max(n);
        let earned = self.rate as u128 * now.saturating_duration_since(self.at).as_micros() / 1_000_000;
        if earned > 0 {
            self.tokens = (self.tokens + earned.min(u128::from(burst)) as u64).min(burst);
            self.at = now;
        }
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        let wait_us = ((n - self.tokens) as u128 * 1_000_000).div_ceil(self.rate as u128);
        Err(now + Duration::from_micros(wait_us as u64))
    }
}

/// Block `slot` of a piece's bytes.
fn block_of(piece: &[u8], slot: usize) -> &[u8] {
    let begin = (slot * BLOCK_LEN as usize).min(piece.len());
    &piece[begin..(begin + BLOCK_LEN as usize).min(piece.len())]
}

/// A readable client name from an Azureus-style peer id (`-TR3000-...` is Transmission 3.00).
pub fn client_name(peer_id: &[u8; 20]) -> String {
    if peer_id[0] == b'-' && peer_id[7] == b'-' && peer_id[1..7].iter().all(u8::is_ascii_alphanumeric) {
        let code = String::from_utf8_lossy(&peer_id[1..3]);
        let name = match &*code {
            "TB" => "toybt",
            "TR" => "Transmission",
            "LT" | "lt" => "libtorrent",
            "qB" => "qBittorrent",
            "DE" => "Deluge",
            "AR" => "aria2",
            "UT" => "uTorrent",
            "RT" => "rTorrent",
            _ => return String::from_utf8_lossy(&peer_id[..8]).into_owned(),
        };
        format!("{name} {}", String::from_utf8_lossy(&peer_id[3..7]))
    } else if peer_id.starts_with(b"A2-") {
        "aria2".into()
    } else {
        String::from_utf8_lossy(&peer_id[..8]).chars().filter(|c| !c.is_control()).collect()
    }
}

/// How many requests to add at a peer that has `outstanding` of them, wants `depth`, while all peers together have
/// `in_flight`: its depth, within what is left of the shared budget, but never fewer than the always-allowed few.
fn requests_to_add(depth: usize, outstanding: usize, in_flight: usize) -> usize {
    let budget_left = MAX_REQUESTS_IN_FLIGHT.saturating_sub(in_flight);
    let allowed = depth.min(REQUESTS_ALWAYS_ALLOWED.max(outstanding + budget_left));
    allowed.saturating_sub(outstanding)
}

#[cfg(test)]
mod tests;
