//! One torrent's session: the swarm policy. It owns the picker, the storage, the choker, the announce schedule and the
//! address book, hosts one [`Peer`] machine per connection, and reacts to what those machines report (a handshake, a
//! have, a block, a request). It answers the reactor's inputs (bytes from a peer, a connection opened or closed, a
//! tracker reply, the time) with actions (connect, close, announce) and with bytes queued in each peer's machine.
//!
//! - `mod.rs` (this file): the session's state, peers coming and going, and their events.
//! - `download.rs`: asking for blocks, assembling and verifying pieces, blaming liars, disk errors.
//! - `routine.rs`: the once-a-second tick, the choker round, announces, stopping, the resume record.
//! - `assembly.rs`, `addr_book.rs`, `throttle.rs`: piece buffers and liar detection, where peers are, the upload cap.
//!
//! Data path: a `piece` message's block is copied once from the socket buffer into its piece's assembly buffer; when
//! the last block arrives the piece is hashed once on the loop, and a good piece's buffer is moved to the disk worker
//! (`storage::worker`), which writes it with one pwrite per file span and reports back; the piece is ours from that
//! report on. Serving reads a block with pread straight into the peer's output buffer behind the message header.
//! Only pieces in flight are in memory, and at most `MAX_UNWRITTEN` bytes of them wait for the disk: past that the
//! loop stops reading from peers (`input_paused`) until the worker catches up.

mod addr_book;
mod assembly;
mod download;
mod exchange;
pub mod fetch;
mod routine;
mod session;
mod throttle;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, info};

use crate::bitfield::Bitfield;
use crate::choker::{self, Choker};
use crate::metainfo::Metainfo;
use crate::peer::metadata::MetadataServe;
use crate::peer::{self, Event, ExtOffer, Extension, MetadataEvent, Peer, UPLOAD_LOW_WATER, client_name};
use crate::picker::Picker;
use crate::progress::{self, Rate, Snapshot};
use crate::resume;
use crate::storage::{DiskWorker, Storage};
use crate::tracker::announce::{AnnounceParams, Schedule, TrackerUrl};
use crate::wire;

use crate::peer::pex::PexState;
use addr_book::AddrBook;
use assembly::Assembly;
use throttle::Throttle;

pub use session::{Builder, Session};

/// Housekeeping runs this often: rates, time-outs, keep-alives, connection attempts.
const TICK: Duration = Duration::from_secs(1);

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
    /// Trackers tried before the torrent's own, e.g. the tracker this process runs itself.
    pub extra_trackers: Vec<String>,
    /// Exchange peers (BEP 11) unless the torrent is private.
    pub pex: bool,
    /// Find peers through the Mainline DHT (BEP 5) and tell peers our DHT port, whose number is `listen_port` over
    /// UDP; never for a private torrent (BEP 27), whatever this says.
    pub dht: bool,
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
            extra_trackers: Vec::new(),
            pex: true,
            dht: false,
        }
    }
}

/// What a session does with the peer machine `key`'s events.
type OnEvent<S> = fn(&mut S, Instant, usize, Event, &[u8]) -> Result<(), String>;

/// Bytes read from peer `key` of a session: its machine takes them a message at a time, and each event goes to
/// `on_event` with the message it came from (a block's data is in it). Returns how many bytes were consumed (a
/// partial message stays for the next read), or the reason to close the connection.
fn feed_peer<S>(
    s: &mut S,
    now: Instant,
    key: usize,
    input: &[u8],
    peers: fn(&mut S) -> &mut HashMap<usize, Peer>,
    on_event: OnEvent<S>,
) -> Result<usize, String> {
    let mut used = 0;
    loop {
        let Some(peer) = peers(s).get_mut(&key) else {
            return if used == 0 { Err("unknown connection".into()) } else { Ok(used) };
        };
        let n = peer.handle_bytes(now, &input[used..])?;
        if n == 0 {
            return Ok(used);
        }
        let message = &input[used..used + n];
        while let Some(event) = peers(s).get_mut(&key).and_then(Peer::poll_event) {
            on_event(s, now, key, event, message)?;
        }
        used += n;
    }
}

/// The connections (key, generation) among `peers` that `dirty` names, once each.
fn dirty_ids(dirty: &mut Vec<usize>, peers: &HashMap<usize, Peer>) -> Vec<(usize, u64)> {
    let mut keys = std::mem::take(dirty);
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().filter_map(|k| peers.get(&k).map(|p| (k, p.generation()))).collect()
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
    /// A peer's DHT node (its address, the port from its BEP 5 `port` message): a node for our DHT to try.
    DhtNode(SocketAddr),
}

pub struct Torrent {
    meta: Metainfo,
    storage: Storage,
    picker: Picker,
    cfg: Config,
    peers: HashMap<usize, Peer>,
    /// Peers with new output since the reactor last asked, by key.
    dirty: Vec<usize>,
    actions: VecDeque<Action>,
    assembly: Assembly,
    addrs: AddrBook,
    /// What each peer has heard from us of the swarm (BEP 11), by key, and when PEX is next sent.
    pex: HashMap<usize, PexState>,
    next_pex: Instant,
    choker: Choker,
    schedule: Schedule,
    have_bytes: u64,
    /// Bytes of the pieces selected for download (all of them unless files were deselected).
    wanted_bytes: u64,
    downloaded: Rate,
    uploaded: Rate,
    hash_failures: u32,
    /// Why we stopped downloading, e.g. the disk is full; we keep serving what we have.
    disk_error: Option<String>,
    /// Writes verified pieces and the resume record off the loop; `storage` is only read from here.
    disk: DiskWorker,
    /// A resume record is kept (the worker holds its keeper).
    records: bool,
    /// Per resume record queued and not yet reported: the pieces it will make recorded.
    saves_in_flight: VecDeque<u32>,

    /// Pieces we have but could not read back (a file truncated under us): no longer served or vouched for.
    unreadable: HashSet<u32>,
    /// Files whose read errors were already logged, so a broken file is reported once rather than per block.
    read_errors_reported: HashSet<PathBuf>,
    throttle: Option<Throttle>,
    /// When the throttle has earned enough to serve again; peers waiting on it are woken then.
    throttle_wake: Option<Instant>,
    /// The daemon's download cap: requests are sent only as fast as it allows; when it ran dry, peers are asked
    /// for more at `request_wake`.
    request_throttle: Option<Throttle>,
    request_wake: Option<Instant>,
    started_at: Instant,
    completed_at: Option<Instant>,
    next_tick: Instant,
    next_choke: Instant,
    next_resume: Instant,
    /// Pieces verified since the resume record was last written.
    unrecorded_pieces: u32,
    /// Pieces fetched and verified in this run.
    fetched_pieces: u32,
    /// Since when reading from peers is paused for the disk, and how often and how long it was in this run.
    paused_since: Option<Instant>,
    disk_waits: (u32, Duration),
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
        let mut picker = Picker::new(meta.piece_length, meta.total_length, &have, seed)?;
        // The files the storage was opened with: only their pieces are fetched, and done means they are.
        if storage.wanted_files().iter().any(|w| !w) {
            picker.set_wanted(&storage.layout().wanted_pieces(storage.wanted_files()));
        }
        let wanted_bytes = picker.wanted_bytes();
        let have_bytes = have.iter_ones().map(|i| meta.piece_size(i) as u64).sum();
        let complete = picker.is_complete();
        let records = cfg.resume.is_some();
        let disk = DiskWorker::start(storage.twin(), cfg.resume.take())
            .map_err(|e| crate::error::Error::runtime(format!("cannot start the disk worker: {e}")))?;
        Ok(Torrent {
            storage,
            picker,
            peers: HashMap::new(),
            dirty: Vec::new(),
            actions: VecDeque::new(),
            assembly: Assembly::default(),
            addrs: AddrBook::new(cfg.listen_port),
            pex: HashMap::new(),
            next_pex: now + exchange::FIRST_PEX,
            choker: Choker::new(cfg.unchoke_slots, seed ^ 0x5bd1e995),
            schedule: Schedule::new(routine::tracker_tiers(&meta, &cfg.extra_trackers), now, seed),
            have_bytes,
            wanted_bytes,
            downloaded: Rate::default(),
            uploaded: Rate::default(),
            hash_failures: 0,
            disk_error: None,
            disk,
            records,
            saves_in_flight: VecDeque::new(),
            unreadable: HashSet::new(),
            read_errors_reported: HashSet::new(),
            throttle: cfg.max_upload_rate.map(|rate| Throttle::new(rate, now)),
            throttle_wake: None,
            request_throttle: None,
            request_wake: None,
            started_at: now,
            completed_at: complete.then_some(now),
            next_tick: now,
            next_choke: now + choker::ROUND,
            next_resume: now + routine::RESUME_EVERY,
            unrecorded_pieces: 0,
            fetched_pieces: 0,
            paused_since: None,
            disk_waits: (0, Duration::ZERO),
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

    pub fn info_hash(&self) -> [u8; 20] {
        self.meta.info_hash
    }

    /// Every wanted piece is verified (every piece, unless files were deselected).
    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// Per file of the torrent (`Metainfo::files` order): selected for download.
    pub fn wanted_files(&self) -> &[bool] {
        self.storage.wanted_files()
    }

    /// Changes which files are downloaded (one entry per file of the torrent): only pieces holding bytes of a wanted
    /// file (other than padding) are fetched from now on, and the download is complete once those are verified. A
    /// file wanted again resumes its pieces; a piece no longer wanted that is in flight may still finish. Unwanted
    /// files are not created except by a piece they share with a wanted file. Pieces we have are served whatever
    /// the selection. A selection of the wrong length is refused and changes nothing.
    pub fn set_wanted_files(&mut self, now: Instant, wanted: &[bool]) -> Result<(), String> {
        if wanted.len() != self.meta.files.len() {
            return Err(format!("{} entries for a torrent of {} files", wanted.len(), self.meta.files.len()));
        }
        self.storage.set_wanted_files(wanted).map_err(|e| e.to_string())?;
        let was_complete = self.is_complete();
        self.picker.set_wanted(&self.storage.layout().wanted_pieces(wanted));
        self.wanted_bytes = self.picker.wanted_bytes();
        let complete = self.is_complete();
        if was_complete && !complete {
            info!("downloading again: {} of newly selected data", progress::bytes(self.picker.wanted_left()));
            self.completed_at = None;
            self.was_leeching = true;
        }
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for k in keys {
            if self.peers.get(&k).is_some_and(Peer::is_active) {
                self.update_interest(now, k);
            }
        }
        if !was_complete && complete {
            self.on_complete(now);
        }
        Ok(())
    }

    /// True once the session has nothing left to do and everything queued for the disk is written: the reactor may
    /// exit.
    pub fn is_finished(&self) -> bool {
        self.finished && self.disk.is_idle()
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

    /// Whether an incoming connection may join this session.
    pub fn accepts_peers(&self) -> bool {
        !self.stopping && self.peers.len() < self.cfg.max_peers
    }

    /// Addresses to try (from `--peer` or a tracker). Ourselves, duplicates and banned addresses are skipped.
    pub fn add_peer_addrs(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.addrs.add(addrs);
    }

    /// Peers the DHT found: into the address book and dialled at once, as a tracker's are.
    pub fn found_peers(&mut self, now: Instant, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.addrs.add(addrs);
        self.dial(now);
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The connections (key, generation) that have bytes to send; the reactor writes them out.
    pub fn take_dirty(&mut self) -> Vec<(usize, u64)> {
        dirty_ids(&mut self.dirty, &self.peers)
    }

    /// What a peer connection needs to know of this torrent.
    fn peer_torrent(&self) -> peer::Torrent {
        peer::Torrent {
            info_hash: self.meta.info_hash,
            our_id: self.cfg.peer_id,
            piece_length: self.meta.piece_length,
            total_length: self.meta.total_length,
            piece_count: self.meta.piece_count(),
            ext: ExtOffer {
                metadata_size: self.metadata().size().and_then(|n| u32::try_from(n).ok()),
                pex: self.pex_allowed(),
                port: Some(self.cfg.listen_port),
                dht_port: self.uses_dht().then_some(self.cfg.listen_port),
            },
        }
    }

    /// A connection is up: inbound ones wait for the peer's handshake, outbound ones send ours first.
    pub fn peer_connected(&mut self, now: Instant, key: usize, generation: u64, addr: SocketAddr, outbound: bool) {
        self.addrs.connected(addr, outbound);
        let peer = Peer::new(now, &self.peer_torrent(), addr, outbound, generation);
        if peer.has_output() {
            self.dirty.push(key);
        }
        debug!("{addr}: connected ({})", if outbound { "outgoing" } else { "incoming" });
        self.peers.insert(key, peer);
    }

    pub fn connect_failed(&mut self, now: Instant, addr: SocketAddr, why: &str) {
        debug!("{addr}: connect failed: {why}");
        self.addrs.connect_failed(now, addr);
    }

    /// The connection is gone (closed by either side): its requests go back to the pool.
    pub fn peer_closed(&mut self, now: Instant, key: usize, why: &str) {
        let Some(peer) = self.peers.remove(&key) else { return };
        self.picker.peer_left(key);
        self.pex.remove(&key);
        if peer.holds_upload_slot() {
            self.slot_freed(now);
        }
        if peer.is_active() {
            info!("{}: disconnected ({why})", peer.addr());
        } else {
            debug!("{}: closed before the handshake ({why})", peer.addr());
        }
        self.addrs.closed(now, peer.addr(), peer.pieces().all());
    }

    fn close(&mut self, now: Instant, key: usize, why: &str) {
        let Some(generation) = self.peers.get(&key).map(|p| p.generation()) else { return };
        self.peer_closed(now, key, why);
        self.actions.push_back(Action::Close(key, generation));
    }

    /// Bytes read from a peer. Returns how many were consumed (a partial message stays for the next read), or the
    /// reason to close the connection.
    pub fn peer_input(&mut self, now: Instant, key: usize, input: &[u8]) -> Result<usize, String> {
        feed_peer(self, now, key, input, |t| &mut t.peers, Torrent::on_peer_event)
    }

    /// Everything the peer's socket should send now: queued messages, then uploads read from disk straight into
    /// `out` while it holds less than the low-water mark.
    pub fn peer_transmit(&mut self, now: Instant, key: usize, out: &mut Vec<u8>) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        peer.poll_transmit(now, out);
        while out.len() < UPLOAD_LOW_WATER {
            let Some(b) = peer.next_upload() else { break };
            if let Some(t) = &mut self.throttle
                && let Err(wake) = t.take(now, b.length)
            {
                self.throttle_wake = Some(self.throttle_wake.map_or(wake, |w| w.min(wake)));
                break;
            }
            let mark = out.len();
            wire::encode_piece_header(out, b.index, b.begin, b.length);
            if let Some(bytes) = self.assembly.written_block(b.index, b.begin, b.length) {
                out.extend_from_slice(bytes);
            } else if let Err(e) = self.storage.read_block(b.index, b.begin, b.length, out) {
                out.truncate(mark);
                peer.upload_done(now, None);
                // A file truncated or broken under us: stop offering what it held, say so once per file.
                self.unreadable.insert(b.index);
                let path = match &e {
                    crate::storage::StorageError::Io { path, .. } => Some(path.clone()),
                    _ => None,
                };
                if path.is_none_or(|p| self.read_errors_reported.insert(p)) {
                    log::error!("cannot serve piece {}: {e}; pieces that cannot be read are no longer served", b.index);
                    // Look at the files now: the peer that asked may leave at once, and an idle seed audits nothing
                    // until peers come back.
                    if self.records {
                        self.disk.audit(routine::AUDIT_FILES);
                    }
                }
                continue;
            }
            peer.upload_done(now, Some(b.length));
            self.uploaded.add(u64::from(b.length));
        }
    }

    /// The peer with `key` is known here (it is, whenever one of its events is being handled).
    fn peer(&mut self, key: usize) -> Option<&mut Peer> {
        self.peers.get_mut(&key)
    }

    /// What a peer machine reported. `message` is the input its `handle_bytes` consumed (a block's data is in it).
    fn on_peer_event(&mut self, now: Instant, key: usize, event: Event, message: &[u8]) -> Result<(), String> {
        match event {
            Event::Handshake { peer_id } => self.on_handshake(now, key, peer_id)?,
            Event::Choked { void_requests } => {
                if void_requests {
                    self.picker.peer_choked(key);
                }
            }
            Event::Rejected(block) => {
                // Asked elsewhere at once: every other peer that may take more requests gets the chance first.
                self.picker.release(key, block);
                let others: Vec<usize> = self.peers.keys().copied().filter(|&k| k != key).collect();
                for k in others {
                    self.request_more(now, k);
                }
                self.request_more(now, key);
            }
            Event::Unchoked => self.request_more(now, key),
            Event::Interested => {
                // Do not make a newcomer wait for the next round while upload slots are free.
                let taken = self.peers.values().filter(|p| p.holds_upload_slot()).count();
                if taken < self.cfg.unchoke_slots + 1
                    && let Some(p) = self.peer(key)
                {
                    p.unchoke();
                    self.dirty.push(key);
                }
            }
            Event::NotInterested { held_slot } => {
                if held_slot {
                    self.slot_freed(now);
                }
            }
            Event::Have(index) => {
                self.picker.peer_have(key, index);
                self.update_interest(now, key);
            }
            Event::Bitfield => {
                let Some(p) = self.peers.get(&key) else { return Ok(()) };
                if p.pieces().all() && self.is_complete() {
                    // The normal end of a seed meeting a seed, not a fault of the peer's.
                    self.close(now, key, "both sides are seeds");
                    return Ok(());
                }
                self.picker.peer_joined(key, p.pieces());
                self.offer_allowed_fast(key);
                self.update_interest(now, key);
            }
            Event::LateBitfield(added) => {
                for index in added {
                    self.picker.peer_have(key, index);
                }
                if self.peers.get(&key).is_some_and(|p| p.pieces().all()) && self.is_complete() {
                    self.close(now, key, "both sides are seeds");
                    return Ok(());
                }
                self.update_interest(now, key);
            }
            Event::Request(block) => {
                let servable = self.picker.have().get(block.index) && !self.unreadable.contains(&block.index);
                if let Some(p) = self.peer(key) {
                    if servable {
                        p.queue_request(block);
                    } else {
                        p.reject_request(block);
                    }
                }
            }
            Event::Block { block, data, requested_at } => {
                self.on_block(now, key, block, &message[data], requested_at);
            }
            Event::Metadata(MetadataEvent::Request(piece)) => {
                let serve = MetadataServe::new(Some(&self.meta.info));
                if let Some(p) = self.peers.get_mut(&key)
                    && p.send_extension(Extension::Metadata, |id, out| serve.answer(piece, id, out))
                {
                    self.dirty.push(key);
                }
            }
            // We have the metadata: what others offer of it is of no use.
            Event::MetadataSize(_) | Event::Metadata(_) => {}
            Event::Pex(pex) => self.on_pex(now, key, pex),
            Event::DhtPort(port) => {
                if let Some(p) = self.peers.get(&key) {
                    self.actions.push_back(Action::DhtNode(SocketAddr::new(p.addr().ip(), port)));
                }
            }
        }
        Ok(())
    }

    fn on_handshake(&mut self, now: Instant, key: usize, peer_id: [u8; 20]) -> Result<(), String> {
        let Some(addr) = self.peers.get(&key).map(Peer::addr) else { return Ok(()) };
        if peer_id == self.cfg.peer_id {
            self.addrs.ban(addr);
            return Err("connected to ourselves".into());
        }
        if self.peers.iter().any(|(&k, p)| k != key && p.is_active() && p.peer_id() == Some(peer_id)) {
            return Err("already connected to this peer".into());
        }
        let complete = self.is_complete();
        let empty = Bitfield::new(self.meta.piece_count());
        let have = if self.have_bytes > 0 { self.picker.have() } else { &empty };
        let mut exts = "";
        if let Some(p) = self.peers.get_mut(&key) {
            p.accept(now, have);
            exts = match (p.is_fast(), p.speaks_extensions()) {
                (true, true) => " [fast ext]",
                (true, false) => " [fast]",
                (false, true) => " [ext]",
                (false, false) => "",
            };
        }
        let role = if complete { "we seed" } else { "we leech" };
        info!("{addr}: peer {} ({role}){exts}", client_name(&peer_id));
        self.picker.peer_joined(key, &empty);
        self.dirty.push(key);
        Ok(())
    }

    /// The info dictionary, served to peers that start from a magnet link (BEP 9).
    fn metadata(&self) -> MetadataServe<'_> {
        MetadataServe::new(Some(&self.meta.info))
    }

    /// PEX is on: not a private torrent (BEP 27), and not turned off.
    fn pex_allowed(&self) -> bool {
        self.cfg.pex && !self.meta.private
    }

    /// The DHT is on: not a private torrent (BEP 27), and not turned off. A stopping session no longer uses it.
    pub fn uses_dht(&self) -> bool {
        self.cfg.dht && !self.meta.private && !self.stopping && !self.finished
    }

    /// A newcomer with few pieces (BEP 6): the pieces of its allowed-fast set that we have, to fetch while choked.
    fn offer_allowed_fast(&mut self, key: usize) {
        let Some(p) = self.peers.get(&key) else { return };
        let std::net::IpAddr::V4(ip) = p.addr().ip() else { return };
        if !p.is_fast() || p.pieces().count() >= peer::ALLOWED_FAST_COUNT {
            return;
        }
        let set = peer::allowed_fast_set(ip, &self.meta.info_hash, self.meta.piece_count(), peer::ALLOWED_FAST_COUNT);
        let ours: Vec<u32> = set.into_iter().filter(|&i| self.picker.have().get(i)).collect();
        if let Some(p) = self.peers.get_mut(&key)
            && !ours.is_empty()
        {
            p.send_allowed_fast(&ours);
            self.dirty.push(key);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            // What the user asked for: the wanted pieces, and how much of them we hold.
            have_bytes: self.wanted_bytes - self.picker.wanted_left(),
            total_bytes: self.wanted_bytes,
            down_rate: self.downloaded.per_sec(),
            up_rate: self.uploaded.per_sec(),
            uploaded: self.uploaded.total(),
            peers: self.peer_count(),
            seeding: self.is_complete(),
        }
    }

    /// The one-line readout of where the session stands; the caller shows it (live on a terminal, logged otherwise).
    pub fn progress_line(&self) -> String {
        progress::readout(&self.snapshot())
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

    /// The verified pieces (the daemon reports per-file progress from them).
    pub fn have(&self) -> &Bitfield {
        self.picker.have()
    }

    /// Peers that unchoke us while we want their pieces, and peers we serve: Transmission's "sending to us" and
    /// "getting from us".
    pub fn peers_trading(&self) -> (usize, usize) {
        let active = || self.peers.values().filter(|p| p.is_active());
        let sending = active().filter(|p| p.am_interested() && !p.is_choking_us()).count();
        (sending, active().filter(|p| p.holds_upload_slot()).count())
    }

    /// The daemon's share of its global limits for this torrent (connections, bytes per second each way), changed
    /// as torrents come and go.
    pub fn set_shares(&mut self, now: Instant, max_peers: usize, up: Option<u64>, down: Option<u64>) {
        self.cfg.max_peers = max_peers.max(1);
        if self.cfg.max_upload_rate != up {
            self.cfg.max_upload_rate = up;
            self.throttle = up.map(|rate| Throttle::new(rate, now));
        }
        if self.request_throttle.as_ref().map(Throttle::rate) != down {
            self.request_throttle = down.map(|rate| Throttle::new(rate, now));
            self.request_wake = None;
            if down.is_none() {
                self.dirty.extend(self.peers.keys().copied());
                self.request_wake = Some(now);
            }
        }
    }

    /// How many of `want` block requests the download cap allows now; when it allows fewer, the time to ask again.
    pub(super) fn affordable_requests(&mut self, now: Instant, want: usize) -> usize {
        let Some(t) = &mut self.request_throttle else { return want };
        for granted in 0..want {
            if let Err(wake) = t.take(now, crate::picker::BLOCK_LEN) {
                self.request_wake = Some(self.request_wake.map_or(wake, |w| w.min(wake)));
                return granted;
            }
        }
        want
    }

    /// The download cap has earned more requests: every peer gets its pipeline topped up.
    pub(super) fn on_request_wake(&mut self, now: Instant) {
        if self.request_wake.is_some_and(|w| now >= w) {
            self.request_wake = None;
            let keys: Vec<usize> = self.peers.keys().copied().collect();
            for k in keys {
                self.request_more(now, k);
            }
        }
    }
}

#[cfg(test)]
mod fetch_tests;
#[cfg(test)]
mod tests;
