//! Peers of our own for process tests, built on `toybt::wire`: a [`WirePeer`] that speaks (or abuses) the protocol
//! from the test thread, a [`FakeSeed`] that serves a torrent honestly, corruptly or not at all, and a [`Throttle`]
//! that relays a peer's upload slowly so a swarm has to trade. Every read has a deadline; every thread they start
//! ends when its owner is dropped.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use toybt::wire::{self, Handshake, Limits, Message};

/// Threads of fake peers wake this often to see whether they should stop.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// A fake peer gives up on a daemon that has not read what it was sent for this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How late a [`Behaviour::CorruptShared`] peer answers.
const SNEAKY_DELAY: Duration = Duration::from_millis(100);
/// Block size every client asks for.
pub const BLOCK: u32 = 16 * 1024;

/// What a test knows about a torrent: its hash and the bytes of its content in torrent order.
#[derive(Clone)]
pub struct Content {
    pub info_hash: [u8; 20],
    pub piece_len: u32,
    pub data: Arc<Vec<u8>>,
}

impl Content {
    pub fn num_pieces(&self) -> u32 {
        self.data.len().div_ceil(self.piece_len as usize) as u32
    }

    pub fn piece_size(&self, index: u32) -> u32 {
        let start = index as usize * self.piece_len as usize;
        (self.data.len() - start).min(self.piece_len as usize) as u32
    }

    pub fn block(&self, index: u32, begin: u32, length: u32) -> &[u8] {
        let start = index as usize * self.piece_len as usize + begin as usize;
        &self.data[start..start + length as usize]
    }

    /// Blocks of piece `index` as (begin, length).
    pub fn blocks(&self, index: u32) -> Vec<(u32, u32)> {
        let size = self.piece_size(index);
        (0..size.div_ceil(BLOCK)).map(|i| (i * BLOCK, BLOCK.min(size - i * BLOCK))).collect()
    }

    pub fn limits(&self) -> Limits {
        Limits::new(self.num_pieces())
    }
}

/// A bitfield in wire form with the given pieces set.
pub fn wire_bits(num_pieces: u32, has: impl Fn(u32) -> bool) -> Vec<u8> {
    let mut bits = vec![0u8; num_pieces.div_ceil(8) as usize];
    for i in (0..num_pieces).filter(|&i| has(i)) {
        bits[i as usize / 8] |= 0x80 >> (i % 8);
    }
    bits
}

/// A peer id for a test peer: Azureus style, so the daemon's logs name it, with `n` to tell them apart.
pub fn test_peer_id(n: u32) -> [u8; 20] {
    let mut id = *b"-XX0001-000000000000";
    id[12..16].copy_from_slice(&n.to_be_bytes());
    id[16..].copy_from_slice(&std::process::id().to_be_bytes());
    id
}

/// One decoded message, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Vec<u8>),
    Request { index: u32, begin: u32, length: u32 },
    Piece { index: u32, begin: u32, data: Vec<u8> },
    Cancel { index: u32, begin: u32, length: u32 },
    Other(u8),
}

impl From<Message<'_>> for Msg {
    fn from(m: Message<'_>) -> Msg {
        match m {
            Message::KeepAlive => Msg::KeepAlive,
            Message::Choke => Msg::Choke,
            Message::Unchoke => Msg::Unchoke,
            Message::Interested => Msg::Interested,
            Message::NotInterested => Msg::NotInterested,
            Message::Have(i) => Msg::Have(i),
            Message::Bitfield(b) => Msg::Bitfield(b.to_vec()),
            Message::Request { index, begin, length } => Msg::Request { index, begin, length },
            Message::Piece { index, begin, data } => Msg::Piece { index, begin, data: data.to_vec() },
            Message::Cancel { index, begin, length } => Msg::Cancel { index, begin, length },
            Message::Port(_) => Msg::Other(wire::id::PORT),
            Message::Suggest(_) => Msg::Other(wire::id::SUGGEST),
            Message::HaveAll => Msg::Other(wire::id::HAVE_ALL),
            Message::HaveNone => Msg::Other(wire::id::HAVE_NONE),
            Message::Reject { .. } => Msg::Other(wire::id::REJECT),
            Message::AllowedFast(_) => Msg::Other(wire::id::ALLOWED_FAST),
            Message::Extended { .. } => Msg::Other(wire::id::EXTENDED),
            Message::Unknown { id, .. } => Msg::Other(id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvError {
    /// The other side closed (or reset) the connection.
    Closed,
    Timeout,
    Malformed(String),
}

/// Reads from `s` into `buf` until `deadline`. Ok(false): the stream ended.
fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<bool, RecvError> {
    let now = Instant::now();
    if now >= deadline {
        return Err(RecvError::Timeout);
    }
    s.set_read_timeout(Some(deadline - now)).unwrap();
    let mut chunk = [0u8; 64 * 1024];
    match s.read(&mut chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(RecvError::Timeout),
        Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
        Err(_) => Err(RecvError::Closed),
    }
}

/// Waits until the other side closes `s`, discarding whatever it sends first. True if it closed in time.
pub fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut sink = Vec::new();
    loop {
        sink.clear();
        match read_more(s, &mut sink, deadline) {
            Ok(true) => {}
            Ok(false) | Err(RecvError::Closed) => return true,
            Err(_) => return false,
        }
    }
}

/// A connection to a peer, driven step by step from the test.
pub struct WirePeer {
    pub stream: TcpStream,
    buf: Vec<u8>,
    limits: Limits,
    /// The other side's handshake, once `handshake` has read it.
    pub theirs: Option<Handshake>,
}

impl WirePeer {
    /// A plain TCP connection, nothing sent yet.
    pub fn connect(addr: SocketAddr, limits: Limits) -> WirePeer {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        WirePeer { stream, buf: Vec::new(), limits, theirs: None }
    }

    /// Connects and exchanges handshakes for `content`'s torrent; panics if the other side refuses.
    pub fn open(addr: SocketAddr, content: &Content, n: u32) -> WirePeer {
        let mut p = WirePeer::connect(addr, content.limits());
        p.handshake(content.info_hash, test_peer_id(n), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("handshake with {addr}: {e:?}"));
        p
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Builds a message with one of the `wire::encode_*` functions and sends it.
    pub fn send_with(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
        let mut out = Vec::new();
        f(&mut out);
        self.send(&out)
    }

    /// Sends our handshake and reads theirs.
    pub fn handshake(&mut self, info_hash: [u8; 20], peer_id: [u8; 20], timeout: Duration) -> Result<(), RecvError> {
        let mut out = Vec::new();
        Handshake::new(info_hash, peer_id).encode(&mut out);
        self.send(&out).map_err(|_| RecvError::Closed)?;
        let deadline = Instant::now() + timeout;
        loop {
            match Handshake::decode(&self.buf) {
                Ok(Some(h)) => {
                    self.buf.drain(..wire::HANDSHAKE_LEN);
                    self.theirs = Some(h);
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => return Err(RecvError::Malformed(e.to_string())),
            }
            if !read_more(&mut self.stream, &mut self.buf, deadline)? {
                return Err(RecvError::Closed);
            }
        }
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Msg, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            match wire::decode(&self.buf, &self.limits) {
                Ok(Some((m, n))) => {
                    let m = Msg::from(m);
                    self.buf.drain(..n);
                    return Ok(m);
                }
                Ok(None) => {}
                Err(e) => return Err(RecvError::Malformed(e.to_string())),
            }
            if !read_more(&mut self.stream, &mut self.buf, deadline)? {
                return Err(RecvError::Closed);
            }
        }
    }

    /// Reads messages until one satisfies `want` (returned) or the deadline passes.
    pub fn recv_until(&mut self, timeout: Duration, mut want: impl FnMut(&Msg) -> bool) -> Result<Msg, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.recv(left)?;
            if want(&m) {
                return Ok(m);
            }
        }
    }

    /// Says interested and waits for the unchoke.
    pub fn interested_until_unchoked(&mut self, timeout: Duration) -> Result<(), RecvError> {
        self.send_with(|o| wire::encode_bare(o, wire::id::INTERESTED)).map_err(|_| RecvError::Closed)?;
        self.recv_until(timeout, |m| *m == Msg::Unchoke).map(|_| ())
    }

    /// Requests one block (already unchoked) and returns its data.
    pub fn request_block(
        &mut self,
        index: u32,
        begin: u32,
        length: u32,
        timeout: Duration,
    ) -> Result<Vec<u8>, RecvError> {
        self.send_with(|o| wire::encode_request(o, index, begin, length)).map_err(|_| RecvError::Closed)?;
        let got = self.recv_until(
            timeout,
            |m| matches!(m, Msg::Piece { index: i, begin: b, .. } if *i == index && *b == begin),
        )?;
        match got {
            Msg::Piece { data, .. } => Ok(data),
            _ => unreachable!("recv_until returned a matching piece"),
        }
    }

    /// Whether the other side closes the connection within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        closed_within(&mut self.stream, timeout)
    }
}

/// A correct peer asks `addr` for one block of `index` (its last block, which is short when the piece is) and checks
/// the bytes: the daemon still serves after whatever the test did to it. Panics with the reason otherwise.
pub fn assert_serves_block(addr: SocketAddr, content: &Content, index: u32, n: u32) {
    let timeout = Duration::from_secs(10);
    let mut p = WirePeer::open(addr, content, n);
    p.interested_until_unchoked(timeout).unwrap_or_else(|e| panic!("{addr}: no unchoke for a correct peer: {e:?}"));
    let (begin, length) = *content.blocks(index).last().unwrap();
    let data = p.request_block(index, begin, length, timeout).unwrap_or_else(|e| {
        panic!("{addr}: no block {index}+{begin} for a correct peer: {e:?}");
    });
    assert!(data == content.block(index, begin, length), "{addr}: block {index}+{begin} has the wrong bytes");
}

/// How a [`FakeSeed`] answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// The right bytes.
    Honest,
    /// Every block with its bytes flipped: hashes fail.
    Corrupt,
    /// Answers a little late, with flipped bytes only in pieces it was not asked for whole: the pieces it alone sent
    /// pass and every bad piece also holds blocks from other peers. It hides behind shared blame.
    CorruptShared,
    /// The first request gets half a `piece` message, then nothing more, ever; the connection stays open.
    StallMidBlock,
    /// Sends garbage `piece` messages for every block of the torrent, unasked and over and over, whatever it claims;
    /// it reads nothing and answers no request.
    Spray,
}

/// What a fake seed did, for tests to check that the abuse really happened.
#[derive(Debug, Default)]
pub struct FakeStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub blocks_sent: AtomicU64,
}

/// A listening peer with some pieces of `content` that treats every leecher per its [`Behaviour`].
pub struct FakeSeed {
    pub addr: SocketAddr,
    pub stats: Arc<FakeStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeSeed {
    /// Starts serving `content`, claiming the pieces for which `has` is true.
    pub fn start(content: &Content, has: impl Fn(u32) -> bool, behaviour: Behaviour) -> FakeSeed {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FakeStats::default());
        let bits = wire_bits(content.num_pieces(), has);
        let (content, stop2, stats2) = (content.clone(), stop.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            accept_until_stopped(&listener, &stop2, |s| {
                stats2.connections.fetch_add(1, Ordering::Relaxed);
                let (c, st, sx, b) = (content.clone(), stop2.clone(), stats2.clone(), bits.clone());
                conns.push(std::thread::spawn(move || fake_conn(s, &c, &b, behaviour, &st, &sx)));
            });
            for c in conns {
                let _ = c.join();
            }
        });
        FakeSeed { addr, stats, stop, thread: Some(thread) }
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    pub fn blocks_sent(&self) -> u64 {
        self.stats.blocks_sent.load(Ordering::Relaxed)
    }
}

impl Drop for FakeSeed {
    fn drop(&mut self) {
        stop_acceptor(self.addr, &self.stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hands every connection `listener` accepts to `on_conn` until `stop` is set. The accept blocks: `stop_acceptor`
/// wakes it with a connection of its own, so nothing polls.
fn accept_until_stopped(listener: &TcpListener, stop: &AtomicBool, mut on_conn: impl FnMut(TcpStream)) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(s) => on_conn(s),
            // The client gave up before we took its connection: nothing to serve, keep listening.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::Interrupted) => {}
            // Anything else (out of descriptors) would repeat at once: stop serving rather than spin.
            Err(_) => return,
        }
    }
}

/// Sets `stop` and wakes the `accept_until_stopped` loop listening on `addr`.
fn stop_acceptor(addr: SocketAddr, stop: &AtomicBool) {
    stop.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect(addr);
}

/// One connection of a fake seed; returns when the other side closes or the seed stops.
fn fake_conn(
    mut s: TcpStream,
    content: &Content,
    bits: &[u8],
    behaviour: Behaviour,
    stop: &AtomicBool,
    stats: &FakeStats,
) {
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut buf = Vec::new();
    // Their handshake first: we answer only a peer of this torrent.
    loop {
        match Handshake::decode(&buf) {
            Ok(Some(h)) if h.info_hash == content.info_hash => break,
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => {}
        }
        if stop.load(Ordering::Relaxed)
            || !matches!(read_more(&mut s, &mut buf, Instant::now() + STOP_CHECK), Ok(true) | Err(RecvError::Timeout))
        {
            return;
        }
    }
    buf.drain(..wire::HANDSHAKE_LEN);
    let mut out = Vec::new();
    Handshake::new(content.info_hash, test_peer_id(0xFA4E)).encode(&mut out);
    wire::encode_bitfield(&mut out, bits);
    wire::encode_bare(&mut out, wire::id::UNCHOKE);
    if s.write_all(&out).is_err() {
        return;
    }
    let claimed = |i: u32| bits[i as usize / 8] & (0x80 >> (i % 8)) != 0;
    if behaviour == Behaviour::Spray {
        // Round after round over every block of the torrent, claimed or not, until the other side hangs up.
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for index in 0..content.num_pieces() {
                for (begin, length) in content.blocks(index) {
                    out.clear();
                    let junk: Vec<u8> = content.block(index, begin, length).iter().map(|b| b ^ 0xA5).collect();
                    wire::encode_piece(&mut out, index, begin, &junk);
                    if s.write_all(&out).is_err() {
                        return;
                    }
                    stats.blocks_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        return;
    }
    let limits = content.limits();
    let mut stalled = false;
    // A sneaky liar answers late, so that it knows by then whether a piece was asked of it whole.
    let delay = if behaviour == Behaviour::CorruptShared { SNEAKY_DELAY } else { Duration::ZERO };
    let mut pending: VecDeque<(Instant, u32, u32, u32)> = VecDeque::new();
    let mut asked: HashMap<u32, usize> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        loop {
            match wire::decode(&buf, &limits) {
                Ok(Some((Message::Request { index, begin, length }, n))) => {
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    pending.push_back((Instant::now(), index, begin, length));
                    *asked.entry(index).or_default() += 1;
                    buf.drain(..n);
                }
                Ok(Some((_, n))) => drop(buf.drain(..n)),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let now = Instant::now();
        while let Some(&(at, index, begin, length)) = pending.front() {
            if now < at + delay {
                break;
            }
            pending.pop_front();
            if !claimed(index) || begin as u64 + length as u64 > content.piece_size(index) as u64 {
                continue;
            }
            let data = content.block(index, begin, length);
            let whole_piece = asked[&index] >= content.blocks(index).len();
            let flipped = || data.iter().map(|b| !b).collect::<Vec<u8>>();
            out.clear();
            match behaviour {
                Behaviour::Honest => wire::encode_piece(&mut out, index, begin, data),
                Behaviour::CorruptShared if whole_piece => wire::encode_piece(&mut out, index, begin, data),
                Behaviour::Corrupt | Behaviour::CorruptShared => wire::encode_piece(&mut out, index, begin, &flipped()),
                Behaviour::StallMidBlock if !stalled => {
                    stalled = true;
                    wire::encode_piece(&mut out, index, begin, data);
                    out.truncate(wire::PIECE_HEADER_LEN + data.len() / 2);
                }
                Behaviour::StallMidBlock | Behaviour::Spray => continue,
            }
            if s.write_all(&out).is_err() {
                return;
            }
            stats.blocks_sent.fetch_add(1, Ordering::Relaxed);
        }
        let wait = pending.front().map_or(STOP_CHECK, |&(at, ..)| (at + delay).saturating_duration_since(now));
        match read_more(&mut s, &mut buf, now + wait.clamp(Duration::from_millis(1), STOP_CHECK)) {
            Ok(true) | Err(RecvError::Timeout) => {}
            Ok(false) | Err(_) => return,
        }
    }
}

/// A relay to `target` that passes what `target` sends at most `rate` bytes a second (all connections together) and
/// what is sent to `target` at full speed: a seed behind it has a slow uplink.
pub struct Throttle {
    pub addr: SocketAddr,
    /// Bytes relayed from `target` so far.
    pub relayed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    link: Arc<Link>,
    thread: Option<JoinHandle<()>>,
}

/// The slow link every relayed connection shares: when it is next free to send, and a signal for the pacing waits
/// that a stop cuts short.
#[derive(Default)]
struct Link {
    next_free: Mutex<Option<Instant>>,
    stopped: Condvar,
}

impl Throttle {
    pub fn start(target: SocketAddr, rate: u64) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicU64::new(0));
        let link = Arc::new(Link::default());
        let (stop2, relayed2, link2) = (stop.clone(), relayed.clone(), link.clone());
        let thread = std::thread::spawn(move || {
            let mut threads = Vec::new();
            accept_until_stopped(&listener, &stop2, |client| {
                let Ok(server) = TcpStream::connect(target) else { return };
                // A side that stops reading must not wedge a relay thread past the test.
                let _ = client.set_write_timeout(Some(WRITE_TIMEOUT));
                let _ = server.set_write_timeout(Some(WRITE_TIMEOUT));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let st = stop2.clone();
                threads.push(std::thread::spawn(move || relay(c2, s2, &st, None)));
                let (st, pace) = (stop2.clone(), Some((link2.clone(), rate, relayed2.clone())));
                threads.push(std::thread::spawn(move || relay(server, client, &st, pace)));
            });
            for t in threads {
                let _ = t.join();
            }
        });
        Throttle { addr, relayed, stop, link, thread: Some(thread) }
    }

    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        stop_acceptor(self.addr, &self.stop);
        // Taken so a relay between its check of `stop` and its wait cannot miss the wake-up.
        drop(self.link.next_free.lock().unwrap());
        self.link.stopped.notify_all();
        // Taken so a relay between its check of `stop` and its wait cannot miss the wake-up.
        drop(self.link.next_free.lock().unwrap());
        self.link.stopped.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Pace = (Arc<Link>, u64, Arc<AtomicU64>);

/// Copies `from` to `to` until either ends or `stop` is set; with `pace`, no faster than its rate.
fn relay(mut from: TcpStream, mut to: TcpStream, stop: &AtomicBool, pace: Option<Pace>) {
    let mut chunk = vec![0u8; 4096];
    from.set_read_timeout(Some(STOP_CHECK)).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let n = match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                continue;
            }
            Err(_) => break,
        };
        if let Some((link, rate, relayed)) = &pace {
            // The chunk goes when the link is free (its rate), or not at all once the throttle stops.
            let mut next = link.next_free.lock().unwrap();
            let at = next.map_or(Instant::now(), |t| t.max(Instant::now()));
            *next = Some(at + Duration::from_secs_f64(n as f64 / *rate as f64));
            let wait = at.saturating_duration_since(Instant::now());
            let (_next, _) = link
                .stopped
                .wait_timeout_while(next, wait, |_| !stop.load(Ordering::SeqCst) && Instant::now() < at)
                .unwrap();
            if stop.load(Ordering::SeqCst) {
                break;
            }
            relayed.fetch_add(n as u64, Ordering::Relaxed);
        }
        if to.write_all(&chunk[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
