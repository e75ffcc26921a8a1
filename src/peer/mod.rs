//! One peer connection as a state machine: the BEP 3 wire protocol between two clients, with nothing of the swarm in
//! it. It does the handshake, keeps who chokes whom and who wants what, the peer's pieces, the blocks the peer asked
//! of us and the blocks we asked of it, the bytes waiting to go out, and the clocks that keep the connection honest.
//!
//! It is driven by the verbs every machine in toybt has (see the README, "How it is built"): `handle_bytes(now,
//! input)` takes at most one message per call and says how much it used; `handle_timeout(now)`; `poll_transmit(now,
//! out)`; `poll_timeout()`; `poll_event()`, which tells the owner (the torrent session) what happened: a handshake, a
//! have, a block, a request. The session answers with commands (`choke`, `send_request`, `send_have`…) that queue
//! bytes here. Nothing here touches a socket or reads the clock.
//!
//! A block's data is not copied into an event: [`Event::Block`] names where the data lies in the input slice that was
//! handed to `handle_bytes`, so the session copies it once, into its piece.

mod client;
mod extended;
pub mod extension;
mod fast;
pub mod metadata;
pub mod pex;
#[cfg(test)]
mod tests;

pub use client::client_name;
pub use fast::{ALLOWED_FAST_COUNT, allowed_fast_set};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::bitfield::Bitfield;
use crate::picker::Block;
use crate::progress::Rate;
use crate::wire::{self, Handshake, Limits, Message};
use extension::ExtIds;
use pex::Pex;

/// Blocks a peer may have waiting on us. Peers that speak BEP 10 hear this number as `reqq` in our extended
/// handshake and keep within it; requests beyond it are dropped, as libtorrent does.
pub const MAX_QUEUED_REQUESTS: usize = 1024;
/// We send a keep-alive when we have been silent this long (BEP 3 suggests every two minutes).
pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(110);
/// A peer silent this long (not even a keep-alive) is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(240);
/// A peer that has delivered none of our requests for this long is snubbing us: it gets one request at a time, and
/// its rate no longer earns it an upload slot.
pub const SNUB_AFTER: Duration = Duration::from_secs(60);
/// A connection that has not completed its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Upload blocks are read from disk only while less than this is waiting to be sent; the reactor's own high-water
/// mark (backpressure) sits above it. The kernel's socket buffer holds far more, so this only has to last one turn
/// of the loop: at 128 KiB a 1 GiB loopback transfer ran as fast as at 256 KiB, with half the memory per peer.
pub const UPLOAD_LOW_WATER: usize = 128 << 10;
/// Rates are folded this often (the session's tick).
const RATE_SAMPLE: Duration = Duration::from_secs(1);
/// Who we are in the BEP 10 extended handshake.
const CLIENT_VERSION: &str = concat!("toybt ", env!("CARGO_PKG_VERSION"));

/// What the session must hear from a peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer's handshake arrived, for our torrent. The session decides whether to keep the peer (not ourselves,
    /// not a second connection to the same peer) and then calls [`Peer::accept`].
    Handshake {
        peer_id: [u8; 20],
    },
    /// The peer choked us. `void_requests`: every request we had at it is void (BEP 3); with the Fast extension
    /// they stand, and each will be answered with its block or a reject.
    Choked {
        void_requests: bool,
    },
    Unchoked,
    Interested,
    /// `held_slot`: it was unchoked and interested, so an upload slot just came free.
    NotInterested {
        held_slot: bool,
    },
    Have(u32),
    /// The peer's first bitfield (see [`Peer::pieces`]).
    Bitfield,
    /// A bitfield after other messages (aria2 sends one once it has a piece): it can only add pieces, so it counts
    /// as haves of the pieces listed here.
    LateBitfield(Vec<u32>),
    /// The peer asks for a block that lies inside its piece; the session queues it with [`Peer::queue_request`] if
    /// it has the piece.
    Request(Block),
    /// A block we asked this peer for: its data is `input[data]` of the `handle_bytes` call that produced the event.
    Block {
        block: Block,
        data: Range<usize>,
        requested_at: Instant,
    },
    /// The peer will not serve our request for this block (BEP 6): ask someone else.
    Rejected(Block),
    /// The peer's BEP 10 handshake said how big the info dictionary is (BEP 9): it can send us metadata.
    MetadataSize(i64),
    /// A BEP 9 message: a request for a piece of our metadata, a piece of its, or its reject.
    Metadata(MetadataEvent),
    /// Addresses the peer told us of (BEP 11).
    Pex(Pex),
    /// The peer's DHT node listens on this UDP port at the peer's address (a BEP 5 `port` message); only reported
    /// when we use the DHT ourselves, never for port 0.
    DhtPort(u16),
}

/// A ut_metadata message, owning its data (16 KiB at most, a few per download).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataEvent {
    Request(u32),
    Data { piece: u32, total_size: i64, data: Vec<u8> },
    Reject(u32),
}

/// Which of the BEP 10 extensions we speak a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    Metadata,
    Pex,
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the peer's handshake.
    Handshake,
    /// The peer's handshake arrived and the session has not accepted it yet.
    Greeted,
    Active,
}

#[derive(Debug)]
pub struct Peer {
    /// Tells this connection from an earlier one that had the same key (the reactor's slab reuses keys).
    generation: u64,
    addr: SocketAddr,
    info_hash: [u8; 20],
    our_id: [u8; 20],
    limits: Limits,
    piece_length: u32,
    last_piece_length: u32,
    stage: Stage,
    peer_id: Option<[u8; 20]>,
    handshake_sent: bool,
    /// The peer set the BEP 10 bit: it hears our extended handshake.
    extensions: bool,
    /// The ids the peer wants our extension messages sent with, from its extended handshake.
    ext_ids: ExtIds,
    /// How many requests the peer queues before dropping more (its `reqq`).
    peer_reqq: Option<u32>,
    /// The port the peer listens on, from its extended handshake.
    peer_port: Option<u16>,
    outbound: bool,
    /// What our extended handshake says: metadata size, PEX offered, listen port.
    ext: ExtOffer,
    /// Both sides set the BEP 6 bit: have-all/none, rejects, allowed-fast, and a choke that keeps requests.
    fast: bool,
    /// Both sides set the BEP 5 DHT bit: the peer hears our DHT port.
    dht: bool,
    /// Pieces this peer may fetch from us while we choke it (BEP 6), as we told it.
    allowed_fast: Vec<u32>,
    /// Rejects since the peer last delivered a block: a peer that only rejects gets one request at a time.
    rejects: u32,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    peer_interested: bool,
    /// The pieces the peer has said it has.
    has: Bitfield,
    /// Whether the peer has said anything that counts (a bitfield is only legal before the rest).
    said_anything: bool,
    /// Blocks the peer asked of us, served in order while it is unchoked.
    requests_in: VecDeque<Block>,
    /// Our requests the peer has not answered yet, oldest first, with when they were sent.
    requested: VecDeque<(Block, Instant)>,
    /// Smoothed time from sending a request to receiving its block.
    srtt: Option<Duration>,
    out: Vec<u8>,
    events: VecDeque<Event>,
    down: Rate,
    up: Rate,
    next_sample: Instant,
    connected_at: Instant,
    last_recv: Instant,
    last_send: Instant,
    /// When the peer last delivered a block we asked for (or when it unchoked us): a snubbing peer stops delivering.
    last_block: Instant,
}

/// What a connection needs to know of its torrent.
#[derive(Debug, Clone, Copy)]
pub struct Torrent {
    pub info_hash: [u8; 20],
    pub our_id: [u8; 20],
    pub piece_length: u32,
    pub total_length: u64,
    pub piece_count: u32,
    pub ext: ExtOffer,
}

/// What our handshakes offer (the BEP 10 one, and the reserved bits of the first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtOffer {
    /// The size of the info dictionary we can serve (BEP 9), if we have it.
    pub metadata_size: Option<u32>,
    /// PEX is offered (never for a private torrent, BEP 27).
    pub pex: bool,
    /// Our listen port, for peers that reached us by dialling out.
    pub port: Option<u16>,
    /// Our DHT node's UDP port when the torrent uses the DHT (BEP 5): we set the DHT bit and tell a peer that sets
    /// it too this port in a `port` message. `None` for a private torrent (BEP 27) or with the DHT off.
    pub dht_port: Option<u16>,
}

impl Peer {
    /// A new connection. An outgoing one sends our handshake at once; an incoming one waits for the peer's.
    pub fn new(now: Instant, t: &Torrent, addr: SocketAddr, outbound: bool, generation: u64) -> Peer {
        let last_start = u64::from(t.piece_count.saturating_sub(1)) * u64::from(t.piece_length);
        let mut peer = Peer {
            generation,
            addr,
            info_hash: t.info_hash,
            our_id: t.our_id,
            limits: if t.piece_count == 0 { Limits::unknown_pieces() } else { Limits::new(t.piece_count) },
            piece_length: t.piece_length,
            last_piece_length: t.total_length.saturating_sub(last_start).min(u64::from(t.piece_length)) as u32,
            stage: Stage::Handshake,
            peer_id: None,
            handshake_sent: false,
            extensions: false,
            ext_ids: ExtIds::default(),
            peer_reqq: None,
            peer_port: None,
            outbound,
            ext: t.ext,
            fast: false,
            dht: false,
            allowed_fast: Vec::new(),
            rejects: 0,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            has: Bitfield::new(t.piece_count),
            said_anything: false,
            requests_in: VecDeque::new(),
            requested: VecDeque::new(),
            srtt: None,
            out: Vec::new(),
            events: VecDeque::new(),
            down: Rate::default(),
            up: Rate::default(),
            next_sample: now,
            connected_at: now,
            last_recv: now,
            last_send: now,
            last_block: now,
        };
        if outbound {
            peer.send_handshake();
        }
        peer
    }

    fn send_handshake(&mut self) {
        if !self.handshake_sent {
            let mut h = Handshake::ours(self.info_hash, self.our_id);
            if self.ext.dht_port.is_some() {
                h.reserved[7] |= 0x01;
            }
            h.encode(&mut self.out);
            self.handshake_sent = true;
        }
    }

    /// Bytes from the socket: consumes the handshake or one message and returns how many bytes it used (0: the next
    /// one is not complete yet), or why the connection must close.
    pub fn handle_bytes(&mut self, now: Instant, input: &[u8]) -> Result<usize, String> {
        self.last_recv = now;
        match self.stage {
            Stage::Handshake => match Handshake::decode(input) {
                Ok(None) => Ok(0),
                Ok(Some(h)) => {
                    if h.info_hash != self.info_hash {
                        return Err("handshake for another torrent".into());
                    }
                    self.send_handshake();
                    self.extensions = h.supports_extensions();
                    // We always offer it, so it is on when the peer offers it too.
                    self.fast = h.supports_fast();
                    self.dht = h.supports_dht() && self.ext.dht_port.is_some();
                    self.stage = Stage::Greeted;
                    self.peer_id = Some(h.peer_id);
                    self.events.push_back(Event::Handshake { peer_id: h.peer_id });
                    Ok(wire::HANDSHAKE_LEN)
                }
                Err(e) => Err(format!("bad handshake: {e}")),
            },
            // Nothing more is read until the session has decided about the handshake.
            Stage::Greeted => Ok(0),
            Stage::Active => match wire::decode(input, &self.limits).map_err(|e| e.to_string())? {
                None => Ok(0),
                Some((msg, n)) => {
                    let data_at = n - match msg {
                        Message::Piece { data, .. } => data.len(),
                        _ => 0,
                    };
                    self.on_message(now, msg, data_at)?;
                    Ok(n)
                }
            },
        }
    }

    /// The session keeps this peer: say what we have — have-all or have-none to a Fast peer when they fit, else the
    /// bitfield, and to a peer without Fast nothing at all when we have nothing (some clients accept a bitfield only
    /// as the first message) — and, to a peer that speaks BEP 10, our extended handshake after it.
    pub fn accept(&mut self, now: Instant, have: &Bitfield) {
        if self.stage != Stage::Greeted {
            return;
        }
        self.stage = Stage::Active;
        if self.fast && have.none() {
            wire::encode_bare(&mut self.out, wire::id::HAVE_NONE);
        } else if self.fast && have.all() {
            wire::encode_bare(&mut self.out, wire::id::HAVE_ALL);
        } else if !have.none() {
            wire::encode_bitfield(&mut self.out, have.as_wire());
        }
        if self.extensions {
            self.send_ext_handshake();
        }
        if let Some(port) = self.ext.dht_port.filter(|_| self.dht) {
            wire::encode_port(&mut self.out, port);
        }
        self.last_block = now;
    }

    fn on_message(&mut self, now: Instant, msg: Message<'_>, data_at: usize) -> Result<(), String> {
        if let Message::Extended { ext_id, payload } = msg {
            if let Some(event) = self.on_extended(ext_id, payload)? {
                self.events.push_back(event);
            }
            return Ok(());
        }
        let fast_only = matches!(
            msg,
            Message::Suggest(_)
                | Message::HaveAll
                | Message::HaveNone
                | Message::Reject { .. }
                | Message::AllowedFast(_)
        );
        if fast_only && !self.fast {
            return Err(format!("{msg:?} without the fast extension"));
        }
        // Keep-alives and messages we skip do not count: a bitfield is legal after them.
        let counts = !matches!(
            msg,
            Message::KeepAlive
                | Message::Port(_)
                | Message::Unknown { .. }
                | Message::Extended { .. }
                | Message::Suggest(_)
                | Message::AllowedFast(_)
        );
        let first = !self.said_anything;
        self.said_anything |= counts;
        // Before the metadata, what the peer has cannot be checked or used: the connection is for the metadata.
        if self.limits.num_pieces == 0
            && matches!(msg, Message::Have(_) | Message::Bitfield(_) | Message::HaveAll | Message::HaveNone)
        {
            return Ok(());
        }
        let event = match msg {
            // A peer may send it whether or not it set the DHT bit; it is of use only while we run a DHT node.
            Message::Port(port) => {
                if port == 0 || self.ext.dht_port.is_none() {
                    return Ok(());
                }
                Event::DhtPort(port)
            }
            // Suggestions and allowed-fast offers are advice we do without: the picker's rarest-first decides.
            Message::KeepAlive
            | Message::Unknown { .. }
            | Message::Extended { .. }
            | Message::Suggest(_)
            | Message::AllowedFast(_) => return Ok(()),
            Message::Choke => {
                self.peer_choking = true;
                if !self.fast {
                    self.requested.clear();
                }
                Event::Choked { void_requests: !self.fast }
            }
            Message::Unchoke => {
                self.peer_choking = false;
                self.last_block = now;
                Event::Unchoked
            }
            Message::Interested => {
                self.peer_interested = true;
                Event::Interested
            }
            Message::NotInterested => {
                let held_slot = self.holds_upload_slot();
                self.peer_interested = false;
                Event::NotInterested { held_slot }
            }
            Message::Have(index) => {
                self.has.set(index);
                Event::Have(index)
            }
            Message::HaveAll | Message::HaveNone => {
                if !first {
                    return Err("have all/none after other messages".into());
                }
                if msg == Message::HaveAll {
                    self.has = Bitfield::full(self.limits.num_pieces);
                }
                Event::Bitfield
            }
            Message::Reject { index, begin, length } => {
                let block = Block { index, begin, length };
                // A reject of a request we withdrew (BEP 6 answers a cancel with a block or a reject) is no news.
                if self.request_done(block).is_none() {
                    log::debug!("{}: reject of {index}+{begin} we no longer wait for", self.addr);
                    return Ok(());
                }
                self.rejects += 1;
                Event::Rejected(block)
            }
            Message::Bitfield(bits) => {
                let has = Bitfield::from_wire(bits, self.limits.num_pieces).map_err(|e| e.to_string())?;
                if first {
                    self.has = has;
                    Event::Bitfield
                } else {
                    let added: Vec<u32> = has.iter_ones().filter(|&i| self.has.set(i)).collect();
                    Event::LateBitfield(added)
                }
            }
            Message::Request { index, begin, length } => {
                let size = self.piece_size(index);
                if begin.checked_add(length).is_none_or(|end| end > size) {
                    return Err(format!("request past the end of piece {index}"));
                }
                Event::Request(Block { index, begin, length })
            }
            Message::Cancel { index, begin, length } => {
                let block = Block { index, begin, length };
                self.requests_in.retain(|b| *b != block);
                return Ok(());
            }
            Message::Piece { index, begin, data } => {
                let block = Block { index, begin, length: data.len() as u32 };
                // Only a block we asked this peer for (and have not withdrawn) is taken: otherwise any peer could
                // write into pieces other peers are filling, and their hash failure would be blamed on the honest.
                let Some(requested_at) = self.request_done(block) else {
                    log::debug!("{}: block {index}+{begin} we did not ask it for", self.addr);
                    return Ok(());
                };
                Event::Block { block, data: data_at..data_at + data.len(), requested_at }
            }
        };
        self.events.push_back(event);
        Ok(())
    }

    fn piece_size(&self, index: u32) -> u32 {
        // Before the metadata (no pieces known) any index passes the codec: it must not overflow here.
        if Some(index) == self.limits.num_pieces.checked_sub(1) { self.last_piece_length } else { self.piece_length }
    }

    /// Keep-alives, the rates' once-a-second sample, and closing for silence: `Err` says why to close.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), &'static str> {
        if self.stage != Stage::Active && now.saturating_duration_since(self.connected_at) >= HANDSHAKE_TIMEOUT {
            return Err("no handshake in time");
        }
        if now.saturating_duration_since(self.last_recv) >= IDLE_TIMEOUT {
            return Err("idle for too long");
        }
        if now >= self.next_sample {
            self.next_sample = now + RATE_SAMPLE;
            self.down.sample(now);
            self.up.sample(now);
        }
        if self.out.is_empty() && now.saturating_duration_since(self.last_send) >= KEEPALIVE_AFTER {
            wire::encode_keep_alive(&mut self.out);
        }
        Ok(())
    }

    /// Moves the queued messages to the socket's buffer: a swap when that is empty (the usual case), so the bytes are
    /// not copied. Blocks to upload are the session's to add (it owns the disk): see [`Peer::next_upload`].
    pub fn poll_transmit(&mut self, now: Instant, into: &mut Vec<u8>) {
        if self.out.is_empty() {
            return;
        }
        if into.is_empty() {
            std::mem::swap(into, &mut self.out);
        } else {
            into.extend_from_slice(&self.out);
            self.out.clear();
        }
        self.last_send = now;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = (self.last_recv + IDLE_TIMEOUT).min(self.next_sample);
        if self.stage != Stage::Active {
            t = t.min(self.connected_at + HANDSHAKE_TIMEOUT);
        }
        if self.out.is_empty() {
            t = t.min(self.last_send + KEEPALIVE_AFTER);
        }
        Some(t)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- commands from the session -----

    pub fn choke(&mut self) {
        if !self.am_choking {
            self.am_choking = true;
            wire::encode_bare(&mut self.out, wire::id::CHOKE);
            // BEP 3: a choke discards the peer's pending requests. BEP 6: each gets its reject, after the choke, so
            // the peer does not ask again; allowed-fast pieces are still served.
            if self.fast {
                let (keep, drop): (VecDeque<Block>, VecDeque<Block>) =
                    self.requests_in.drain(..).partition(|b| self.allowed_fast.contains(&b.index));
                for b in drop {
                    wire::encode_reject(&mut self.out, b.index, b.begin, b.length);
                }
                self.requests_in = keep;
            } else {
                self.requests_in.clear();
            }
        }
    }

    pub fn unchoke(&mut self) {
        if self.am_choking {
            self.am_choking = false;
            wire::encode_bare(&mut self.out, wire::id::UNCHOKE);
        }
    }

    pub fn set_interested(&mut self, interested: bool) {
        if interested != self.am_interested {
            self.am_interested = interested;
            wire::encode_bare(&mut self.out, if interested { wire::id::INTERESTED } else { wire::id::NOT_INTERESTED });
        }
    }

    pub fn send_have(&mut self, index: u32) {
        wire::encode_have(&mut self.out, index);
    }

    /// Asks the peer for `block`.
    pub fn send_request(&mut self, now: Instant, block: Block) {
        wire::encode_request(&mut self.out, block.index, block.begin, block.length);
        self.requested.push_back((block, now));
    }

    /// Takes back our request for `block` (another peer delivered it, or it timed out) and tells the peer.
    pub fn cancel_request(&mut self, block: Block) {
        if self.request_done(block).is_some() {
            wire::encode_cancel(&mut self.out, block.index, block.begin, block.length);
        }
    }

    /// Forgets every request we have at the peer without a word (we will not store what it sends).
    pub fn drop_requests(&mut self) {
        self.requested.clear();
    }

    /// Queues a block the peer asked for; `false` if it was refused (we choke it and the piece is not allowed-fast,
    /// or too many are queued), which a Fast peer hears as a reject.
    pub fn queue_request(&mut self, block: Block) -> bool {
        let allowed = !self.am_choking || self.allowed_fast.contains(&block.index);
        if !allowed || self.requests_in.len() >= MAX_QUEUED_REQUESTS {
            self.reject_request(block);
            return false;
        }
        self.requests_in.push_back(block);
        true
    }

    /// We will not serve `block` (we lack its piece, say): a Fast peer is told, so it can ask elsewhere at once.
    pub fn reject_request(&mut self, block: Block) {
        if self.fast {
            wire::encode_reject(&mut self.out, block.index, block.begin, block.length);
        }
    }

    /// Offers `pieces` to a Fast peer to fetch while we choke it (BEP 6's allowed-fast set, those we have).
    pub fn send_allowed_fast(&mut self, pieces: &[u32]) {
        if !self.fast {
            return;
        }
        for &index in pieces {
            if !self.allowed_fast.contains(&index) {
                self.allowed_fast.push(index);
                wire::encode_index(&mut self.out, wire::id::ALLOWED_FAST, index);
            }
        }
    }

    /// The next block the peer is owed, if any.
    pub fn next_upload(&self) -> Option<Block> {
        self.requests_in.front().copied()
    }

    /// The block `next_upload` named is on its way (`sent`: its length) or cannot be served (`None`, and a Fast peer
    /// hears a reject): drop it from the queue and count it.
    pub fn upload_done(&mut self, now: Instant, sent: Option<u32>) {
        let Some(block) = self.requests_in.pop_front() else { return };
        match sent {
            Some(n) => {
                self.up.add(u64::from(n));
                self.last_send = now;
            }
            None => self.reject_request(block),
        }
    }

    /// A block from this peer was new to the picker: it counts toward the peer's rate and round trip.
    pub fn block_accepted(&mut self, now: Instant, len: u32, requested_at: Instant) {
        self.rejects = 0;
        self.down.add(u64::from(len));
        self.last_block = now;
        let rtt = now.saturating_duration_since(requested_at);
        // As TCP does: 7/8 old, 1/8 new.
        self.srtt = Some(self.srtt.map_or(rtt, |s| (s * 7 + rtt) / 8));
    }

    /// Our request for `block` was answered (or withdrawn); returns when it was sent. Blocks mostly arrive in the
    /// order asked, so the search ends at the front.
    fn request_done(&mut self, block: Block) -> Option<Instant> {
        let i = self.requested.iter().position(|(b, _)| *b == block)?;
        self.requested.remove(i).map(|(_, at)| at)
    }

    // ----- what the session reads -----

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// We dialled it (so `addr` is where it listens).
    pub fn is_outbound(&self) -> bool {
        self.outbound
    }

    /// Where the peer can be reached: the address we dialled, or for a peer that dialled us its address with the
    /// listen port it gave in its extended handshake (its outgoing port is of no use to anyone).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        if self.outbound { Some(self.addr) } else { self.peer_port.map(|port| SocketAddr::new(self.addr.ip(), port)) }
    }

    /// The listen port the peer gave in its extended handshake.
    pub fn listen_port(&self) -> Option<u16> {
        self.peer_port
    }

    /// Set once the peer's handshake has arrived.
    pub fn peer_id(&self) -> Option<[u8; 20]> {
        self.peer_id
    }

    pub fn is_active(&self) -> bool {
        self.stage == Stage::Active
    }

    /// Both sides speak BEP 6.
    pub fn is_fast(&self) -> bool {
        self.fast
    }

    /// The peer set the BEP 10 bit in its handshake.
    pub fn speaks_extensions(&self) -> bool {
        self.extensions
    }

    pub fn pieces(&self) -> &Bitfield {
        &self.has
    }

    pub fn is_choking_us(&self) -> bool {
        self.peer_choking
    }

    pub fn am_interested(&self) -> bool {
        self.am_interested
    }

    pub fn is_interested(&self) -> bool {
        self.peer_interested
    }

    /// Unchoked and interested: one of the upload slots the choker hands out.
    pub fn holds_upload_slot(&self) -> bool {
        !self.am_choking && self.peer_interested
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn has_uploads_queued(&self) -> bool {
        !self.requests_in.is_empty()
    }

    /// Our requests this peer has not answered yet.
    pub fn requests_out(&self) -> usize {
        self.requested.len()
    }

    /// Our requests this peer has not answered yet, oldest first.
    pub fn requested(&self) -> impl Iterator<Item = Block> + '_ {
        self.requested.iter().map(|(b, _)| *b)
    }

    pub fn download_rate(&self) -> u64 {
        self.down.per_sec()
    }

    pub fn upload_rate(&self) -> u64 {
        self.up.per_sec()
    }

    /// True while we wait on requests that this peer has not answered for `SNUB_AFTER`.
    pub fn is_snubbing(&self, now: Instant) -> bool {
        !self.requested.is_empty() && now.saturating_duration_since(self.last_block) >= SNUB_AFTER
    }

    /// How many of our requests to keep outstanding at this peer: enough to cover its measured rate over a round
    /// trip with room to spare, so a fast peer is never idle waiting for our next request, and a slow one does not
    /// hold blocks that another peer could deliver sooner.
    pub fn request_depth(&self, now: Instant) -> usize {
        const BLOCK: u64 = 16 << 10;
        if self.is_snubbing(now) || self.rejects >= 2 {
            return 1;
        }
        let rtt = self.srtt.unwrap_or(Duration::from_millis(100));
        // Two round trips of data at the current rate, plus half a second of it.
        let window = rtt * 2 + Duration::from_millis(500);
        let bytes = self.down.per_sec() as u128 * window.as_micros() / 1_000_000;
        let depth = (bytes as u64 / BLOCK).clamp(8, 250) as usize;
        // Never more than the peer said it queues: what it drops we would wait on until the request times out.
        self.peer_reqq.map_or(depth, |q| depth.min((q as usize).max(1)))
    }
}
