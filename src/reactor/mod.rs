//! The readiness loop: the only code that touches sockets or reads the clock.
//!
//! One thread, one `mio::Poll`, one [`Slab`] of connections. Every connection pairs a non-blocking socket with a
//! sans-IO state machine ([`Conn`]); every long-lived piece of state shared by connections (the tracker's swarm
//! registry, later a torrent session) is a service in [`Services`]. Datagram (UDP) sockets are first-class too: each
//! pairs a socket with the one machine that serves every remote address on it ([`DatagramKind`]: later the DHT node
//! and the UDP tracker front end). `conn.rs` and `datagram.rs` are the only places that know the kinds; this file
//! only moves bytes and time.
//!
//! # Tokens
//! A connection's token is its slab key. Listeners take `LISTENER_BASE + index`, datagram sockets `UDP_BASE + index`
//! (just below the listeners), the signal pipe takes `usize::MAX` and the waker of helper threads (disk workers, the
//! tracker name resolver) `usize::MAX - 1`, all far above any slab key. Listeners and datagram sockets live as long as the loop, so their
//! tokens are never reused. A closed connection's socket is closed (which takes it out of the poll set) and its entry
//! removed from the slab in the same step, so events for it that are still queued find no entry and are ignored. Should a new connection reuse the key within the same batch, it gets a
//! spurious readiness event, which is harmless: reads and writes then just return `WouldBlock`, and a connecting socket
//! is checked with `take_error` *and* `peer_addr` before it counts as connected. Timers carry the key and a generation
//! number that is never reused ([`ConnId`]), so a deadline armed for a closed connection never reaches its successor.
//!
//! # Buffers and backpressure
//! Registration is edge-triggered for both directions, once, with no re-registration. An accepted connection is
//! pumped once before it is registered, so one that is answered and closed at once never costs a registration. On
//! readable: read until `WouldBlock` (or until the input buffer is full), hand the buffered bytes to the machine until
//! it consumes no more, drain its output, write until `WouldBlock`. While a connection's unsent output is above its
//! high-water mark the loop neither reads its socket nor feeds its machine; when a writable event drains it, the loop
//! resumes by itself, because it remembers that the socket was not read to `WouldBlock` (an edge-triggered readable
//! event would not come again). See `buffer.rs` for the bounds.
//!
//! # Datagrams
//! A datagram socket is registered edge-triggered for reading, and for writing only while its queue is blocked. On
//! any event the loop
//! reads in batches (`recvmmsg` on Linux, see `udp.rs`) until the socket is drained (retrying `Interrupted`), at most
//! `DATAGRAM_BUDGET` datagrams per turn: a socket with datagrams left over is read again next turn, after the other
//! events, without waiting (so a flood is read at a steady pace while connections and timers keep being served). Each
//! datagram goes to the machine as `handle_datagram(now, from, bytes)`; right after, its `poll_datagram` is drained
//! into the socket's send queue, which is written in batches (`sendmmsg`) once a batch's worth waits and after each
//! read batch, until empty or `WouldBlock` (the rest waits for a writable event). The queue
//! is bounded in datagrams and bytes ([`DatagramLimits`]); what a machine produces past the bounds is dropped and
//! counted ([`DatagramStats`]), never queued, so it also bounds what one call may produce. A send that fails for
//! another reason drops that datagram and tells the machine (`on_send_failed`).
//!
//! # Time
//! The clock is read once per wake-up, and that `now` is handed to everything in the batch. Each connection has at
//! most one armed deadline in the [`Timers`] heap: its machine's `poll_timeout()`, re-armed after every call into the
//! machine, but only when it moved earlier; a deadline that fires early is harmless because `handle_timeout` ignores
//! an early call, and the timer is then re-armed at the machine's current deadline. Services are few, so their
//! `poll_timeout()` is asked directly, and so are the datagram machines'. The poll timeout is the earliest of all of
//! them.
//!
//! # Closing
//! A machine that wants to close (`wants_close`) is closed once its output is written. If the peer may still be
//! sending (we stopped reading mid-request, say after answering "431"), closing at once would make the kernel send a
//! reset that can destroy the answer before the peer reads it; so the loop shuts down the sending side, discards
//! input for up to [`LINGER`] and then closes.
//!
//! # Extending
//! - A new kind of connection: a variant of [`Conn`] and its arm in each verb in `conn.rs` (the compiler lists them).
//!   If it is accepted, a [`ListenKind`] variant whose `accept` builds it, and [`Reactor::listen`] on a bound socket.
//! - A new datagram service (DHT, UDP tracker): a variant of [`DatagramKind`] and its arm in each verb in
//!   `datagram.rs`, then [`Reactor::bind_udp`] on a bound `std::net::UdpSocket` (or [`Reactor::bind_udp_limited`]
//!   for other queue bounds). Its machine may live in the variant or in a service the arms ask. From outside its verbs,
//!   [`Ctl::wake_datagram`] or [`Reactor::wake_datagram`] has its output drained and sent.
//! - A new service: a field of [`Services`], and its arms in `Services::poll_timeout` / `Services::handle_timeout`.
//!   A service sets timers by returning its earliest deadline from `poll_timeout` (asked after every wake-up).
//! - Asking the loop for something from inside a verb: every verb in `conn.rs` gets a [`Ctl`]; `ctl.connect(addr,
//!   conn)` dials (non-blocking; `on_connected` or `on_closed(Close::ConnectFailed)` follows), `ctl.wake(id)` has
//!   another connection's output and deadline re-read (a service changed what it should send), `ctl.close(id)` and
//!   `ctl.stop()` do what they say. Requests run after the verb returns, never inside it. Outside the loop,
//!   [`Reactor::connect`], [`Reactor::wake`] and [`Reactor::close`] do the same.
//! - Every verb also gets the [`Services`], so a connection's machine may live in its variant or inside a service
//!   (then the variant holds only a handle and its arms ask the service).

mod buffer;
mod conn;
mod ctl;
mod datagram;
mod os;
pub mod resolver;
mod signal;
mod stream;
mod udp;

pub use buffer::BufLimits;
pub use conn::{Conn, DhtSocket, ListenKind, Progress, Services, UdpAnnounceSocket};
use ctl::Request;
pub use ctl::{Close, ConnId, Ctl};
pub use datagram::{DatagramKind, DatagramLimits, DatagramStats};
pub(crate) use os::ipv6_unavailable;
pub use os::{bind_listener, defer_accept, raise_fd_limit};
pub use signal::{Signal, SignalPipe, install as install_signals};
pub use udp::UdpId;

use stream::{Entry, Pumped, connect_result, nodelay, pump_entry};
use udp::UdpEntry;

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::timer::{TimerId, Timers};
use buffer::SocketBuf;

const SIGNAL: Token = Token(usize::MAX);
/// Helper threads (the disk workers) wake the loop through this; the turn then asks every session for reports.
const WAKER: Token = Token(usize::MAX - 1);
const LISTENER_BASE: usize = usize::MAX - 1 - MAX_LISTENERS;
const MAX_LISTENERS: usize = 1024;
const UDP_BASE: usize = LISTENER_BASE - MAX_UDP;
const MAX_UDP: usize = 64;
/// Room for the largest UDP payload (65,507 bytes over IPv4, 65,527 over IPv6), so no datagram is cut short.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Datagrams read from one socket per turn before the rest of the loop gets its turn (see `READ_BUDGET`): a flood
/// is read at this pace, with connections, timers and other sockets served between.
const DATAGRAM_BUDGET: usize = 256;
/// How long a closing connection keeps discarding input so the peer can read our last answer.
pub const LINGER: Duration = Duration::from_secs(2);
/// While a listener cannot accept for lack of file descriptors, retry this often.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Where a closing connection's unread input is discarded (connections read into their own buffers).
const SCRATCH: usize = 16 * 1024;
/// Bytes read from one connection per turn before the others get theirs. Per turn, not per pump: a machine that
/// wakes its own connection (a torrent session asking for more blocks after each one arrives) would otherwise pump
/// it again from inside the turn, and a fast sender could keep the loop in one turn for the whole transfer, with
/// `now` frozen and no timer firing.
const READ_BUDGET: usize = 256 * 1024;
/// Output at least this large is written at once; smaller output waits until the pump stops reading.
const FLUSH_AT: usize = 16 * 1024;

/// What one readiness event said about a connection.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    readable: bool,
    read_closed: bool,
}

struct Listener {
    sock: TcpListener,
    kind: ListenKind,
    max_conns: usize,
    open: usize,
    /// Accepting failed for lack of file descriptors; retry at this time.
    retry_at: Option<Instant>,
    /// Accepted sockets come with `TCP_NODELAY` already set (see `os::nodelay_for_accepted`).
    nodelay_inherited: bool,
}

/// The loop. See the module documentation for its rules.
pub struct Reactor {
    poll: Poll,
    events: Events,
    /// This batch's readiness, copied out of `events` so handlers may borrow the reactor.
    batch: Vec<(Token, Readiness)>,
    conns: Slab<Entry>,
    listeners: Vec<Listener>,
    udp: Vec<UdpEntry>,
    /// Where datagrams are received (allocated with the first datagram socket), and where a machine writes one.
    udp_in: Vec<u8>,
    udp_out: Vec<u8>,
    timers: Timers<(usize, u64)>,
    pub services: Services,
    signal: Option<SignalPipe>,
    scratch: Vec<u8>,
    next_gen: u64,
    ctl: Ctl,
    /// Connections that used up their read budget and must be pumped again without waiting for an event.
    yielded: Vec<ConnId>,
    /// Counts `turn`s, so read budgets are per connection per turn.
    turn_no: u64,
    stopping: bool,
    stopped_by: Option<Signal>,
    waker: std::sync::Arc<mio::Waker>,
}

impl Reactor {
    pub fn new(services: Services) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        Ok(Reactor {
            poll,
            waker,
            events: Events::with_capacity(1024),
            batch: Vec::with_capacity(1024),
            conns: Slab::new(),
            listeners: Vec::new(),
            udp: Vec::new(),
            udp_in: Vec::new(),
            udp_out: Vec::new(),
            timers: Timers::new(),
            services,
            signal: None,
            scratch: vec![0; SCRATCH],
            next_gen: 0,
            ctl: Ctl::default(),
            yielded: Vec::new(),
            turn_no: 0,
            stopping: false,
            stopped_by: None,
        })
    }

    /// Stops the loop cleanly when SIGINT or SIGTERM arrives.
    pub fn watch_signals(&mut self, mut pipe: SignalPipe) -> io::Result<()> {
        self.poll.registry().register(pipe.source(), SIGNAL, Interest::READABLE)?;
        self.signal = Some(pipe);
        Ok(())
    }

    /// Accepts connections on `listener` (already bound) as `kind`, at most `max_conns` at once: past that, the
    /// connection of this listener that has been silent longest is closed to make room.
    pub fn listen(&mut self, listener: std::net::TcpListener, kind: ListenKind, max_conns: usize) -> io::Result<()> {
        if self.listeners.len() == MAX_LISTENERS {
            return Err(io::Error::other("too many listeners"));
        }
        listener.set_nonblocking(true)?;
        os::widen_backlog(&listener)?;
        let nodelay_inherited = os::nodelay_for_accepted(&listener);
        let mut sock = TcpListener::from_std(listener);
        self.poll.registry().register(&mut sock, Token(LISTENER_BASE + self.listeners.len()), Interest::READABLE)?;
        let max_conns = max_conns.max(1);
        self.listeners.push(Listener { sock, kind, max_conns, open: 0, retry_at: None, nodelay_inherited });
        Ok(())
    }

    /// Starts a non-blocking connect to `addr` driven by `conn` (see [`Ctl::connect`]).
    pub fn connect(&mut self, addr: SocketAddr, conn: Conn) -> io::Result<ConnId> {
        let mut sock = TcpStream::connect(addr)?;
        let key = self.register(&mut sock)?;
        Ok(self.insert(key, sock, addr, conn, None, true, Instant::now()))
    }

    /// Starts a connect for a machine; a failure at once reaches its `on_closed` like a later one would, under an id
    /// whose key names no slot.
    fn connect_or_report(&mut self, addr: SocketAddr, conn: Conn, now: Instant) {
        let registered = TcpStream::connect(addr).and_then(|mut sock| Ok((self.register(&mut sock)?, sock)));
        match registered {
            Ok((key, sock)) => {
                self.insert(key, sock, addr, conn, None, true, now);
            }
            Err(e) => {
                let id = ConnId { key: usize::MAX, generation: self.next_gen };
                self.next_gen += 1;
                conn.on_closed(id, now, &Close::ConnectFailed(e), &mut self.services, &mut self.ctl);
            }
        }
    }

    /// Closes a connection now, if it is still open.
    pub fn close(&mut self, id: ConnId) {
        let now = Instant::now();
        if self.conns.get(id.key).is_some_and(|e| e.generation == id.generation) {
            self.close_key(id.key, now, Close::Requested);
        }
        self.run_requests(now);
    }

    /// Pumps the connection `id` (see [`Ctl::wake`]).
    pub fn wake(&mut self, id: ConnId) {
        let now = Instant::now();
        self.wake_now(id, now);
        self.run_requests(now);
    }

    fn wake_now(&mut self, id: ConnId, now: Instant) {
        let live = self
            .conns
            .get(id.key)
            .is_some_and(|e| e.generation == id.generation && !e.connecting && e.linger_until.is_none());
        if live {
            self.pump(id.key, now);
        }
    }

    /// Makes `run` return after the current batch.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// The signal that stopped the loop, if one did.
    pub fn stopped_by(&self) -> Option<Signal> {
        self.stopped_by
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Runs until stopped (a signal, [`Ctl::stop`], [`Reactor::stop`]), then closes every connection.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.stopping {
            self.turn(None)?;
        }
        self.close_all();
        Ok(())
    }

    /// One wake-up: wait for readiness or the next deadline (at most `max_wait`), then handle everything due.
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        let timeout = if self.yielded.is_empty() && !self.udp.iter().any(|u| u.readable) {
            self.next_deadline().map(|d| d.saturating_duration_since(now))
        } else {
            Some(Duration::ZERO)
        };
        let timeout = match (timeout, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        self.turn_no += 1;
        // Taken before the events: a connection that yields during this turn waits for the next one.
        let carried = std::mem::take(&mut self.yielded);
        self.batch.clear();
        self.batch.extend(
            self.events
                .iter()
                .map(|e| (e.token(), Readiness { readable: e.is_readable(), read_closed: e.is_read_closed() })),
        );
        for i in 0..self.batch.len() {
            let (token, ready) = self.batch[i];
            match token {
                SIGNAL => self.on_signal(now),
                // Reports of helper threads are taken below, every turn.
                WAKER => {}
                Token(t) if t >= LISTENER_BASE => self.accept_all(t - LISTENER_BASE, now),
                // Any event may mean either direction: read until `WouldBlock` and retry a blocked queue (a spurious
                // try costs one system call that says `WouldBlock`).
                Token(t) if t >= UDP_BASE => {
                    if let Some(u) = self.udp.get_mut(t - UDP_BASE) {
                        u.readable = true;
                        u.blocked = false;
                        self.pump_udp(t - UDP_BASE, now);
                    }
                }
                Token(key) => self.on_conn_event(key, ready, now),
            }
            self.run_requests(now);
        }
        for id in carried {
            if let Some(e) = self.conns.get_mut(id.key).filter(|e| e.generation == id.generation) {
                e.queued = false;
                self.pump(id.key, now);
                self.run_requests(now);
            }
        }
        // Datagram sockets whose budget ran out in an earlier turn (one that had an event this turn has already
        // spent this turn's budget, so this reads nothing more from it).
        for i in 0..self.udp.len() {
            if self.udp[i].readable {
                self.pump_udp(i, now);
                self.run_requests(now);
            }
        }
        // Collected first: a handler that re-arms at a time already past must not keep this loop going.
        let mut due = Vec::new();
        while let Some(t) = self.timers.pop_due(now) {
            due.push(t);
        }
        for (timer, (key, generation)) in due {
            self.on_conn_timer(key, generation, timer, now);
            self.run_requests(now);
        }
        if self.services.poll_timeout().is_some_and(|t| t <= now) {
            self.services.handle_timeout(now, &mut self.ctl);
            self.run_requests(now);
        }
        for i in 0..self.udp.len() {
            let u = &mut self.udp[i];
            if u.kind.poll_timeout(&self.services).is_some_and(|t| t <= now) {
                u.kind.handle_timeout(now, &mut self.services, &mut self.ctl);
                self.pump_udp(i, now);
                self.run_requests(now);
            }
        }
        self.services.disk_turn(now, &self.waker, &mut self.ctl);
        self.run_requests(now);
        if self.services.is_done() {
            self.stopping = true;
        }
        for i in 0..self.listeners.len() {
            if self.listeners[i].retry_at.is_some_and(|t| t <= now) {
                self.listeners[i].retry_at = None;
                self.accept_all(i, now);
                self.run_requests(now);
            }
        }
        Ok(())
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let retry = self.listeners.iter().filter_map(|l| l.retry_at).min();
        let udp = self.udp.iter().filter_map(|u| u.kind.poll_timeout(&self.services)).min();
        [self.timers.next_deadline(), self.services.poll_timeout(), retry, udp].into_iter().flatten().min()
    }

    /// The first signal asks the services to finish (a torrent tells its tracker it stops); a second one, or a
    /// loop whose services need no goodbye, stops at once.
    fn on_signal(&mut self, now: Instant) {
        if let Some(sig) = self.signal.as_mut().and_then(|p| p.drain()) {
            let name = if sig == Signal::Interrupt { "SIGINT" } else { "SIGTERM" };
            let first = self.stopped_by.is_none();
            self.stopped_by = Some(sig);
            if first && self.services.begin_stop(now, &mut self.ctl) {
                log::info!("stopping on {name} (again to stop at once)");
                self.run_requests(now);
            } else {
                log::info!("stopping on {name}");
                self.stopping = true;
            }
        }
    }

    fn accept_all(&mut self, index: usize, now: Instant) {
        let Some(l) = self.listeners.get(index) else { return };
        if l.retry_at.is_some() {
            return;
        }
        loop {
            let l = &mut self.listeners[index];
            let (sock, from) = match l.sock.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(23 | 24)) => {
                    // ENFILE/EMFILE: the pending connection stays queued; an edge-triggered listener would not say so
                    // again, so come back on a timer rather than spin.
                    log::warn!("cannot accept: {e}; retrying in {ACCEPT_RETRY:?}");
                    l.retry_at = Some(now + ACCEPT_RETRY);
                    return;
                }
                Err(e) => {
                    // ECONNABORTED and the like concern one connection only.
                    log::debug!("accept failed: {e}");
                    continue;
                }
            };
            // On a dual-stack listener an IPv4 peer comes as ::ffff:a.b.c.d: everything past here sees it as IPv4.
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            let (kind, full, nodelay_inherited) = (l.kind, l.open >= l.max_conns, l.nodelay_inherited);
            if full && !self.evict_one(index, now) {
                continue;
            }
            let Some(conn) = kind.accept(from, now, &self.services) else { continue };
            if !nodelay_inherited {
                nodelay(&sock);
            }
            // Served before it is registered: a request that is already here (always, on a deferred listener) is
            // read, answered and, with `Connection: close`, closed without the poller ever hearing of the socket.
            let id = self.insert(self.conns.vacant_key(), sock, from, conn, Some(index), false, now);
            self.register_accepted(id, now);
        }
    }

    /// Registers an accepted connection that is still open after its first pump. Readiness that arose before (more of
    /// the request arrived, the socket became writable) is not lost: the poller reports the socket's current state
    /// when it is added.
    fn register_accepted(&mut self, id: ConnId, now: Instant) {
        let Some(e) = self.conns.get_mut(id.key).filter(|e| e.generation == id.generation) else { return };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(err) = self.poll.registry().register(&mut e.sock, Token(id.key), interest) {
            log::warn!("cannot register a connection from {}: {err}", e.peer);
            self.close_key(id.key, now, Close::Io(err));
        }
    }

    /// Closes the connection of `listener` that has been silent longest. False if it has none.
    fn evict_one(&mut self, listener: usize, now: Instant) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, e)| e.listener == Some(listener))
            .min_by_key(|(_, e)| e.last_active)
            .map(|(key, _)| key);
        match victim {
            Some(key) => {
                self.close_key(key, now, Close::Evicted);
                true
            }
            None => false,
        }
    }

    /// Registers an outgoing `sock` under the slab key the next `insert` will use.
    fn register(&mut self, sock: &mut TcpStream) -> io::Result<usize> {
        nodelay(sock);
        let key = self.conns.vacant_key();
        self.poll.registry().register(sock, Token(key), Interest::READABLE | Interest::WRITABLE)?;
        Ok(key)
    }

    /// Adds a socket under `key`, the slab's next key (an outgoing one registered by `register`, with nothing
    /// inserted since; an accepted one is registered by `register_accepted` after this first pump).
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        key: usize,
        sock: TcpStream,
        peer: SocketAddr,
        conn: Conn,
        listener: Option<usize>,
        connecting: bool,
        now: Instant,
    ) -> ConnId {
        let generation = self.next_gen;
        self.next_gen += 1;
        let slot = self.conns.vacant_entry();
        debug_assert_eq!(slot.key(), key);
        slot.insert(Entry {
            generation,
            sock,
            peer,
            buf: SocketBuf::new(conn.limits(&self.services)),
            conn,
            connecting,
            readable: !connecting,
            eof: false,
            peer_closed: false,
            linger_until: None,
            listener,
            timer: None,
            last_active: now,
            read_turn: 0,
            read_in_turn: 0,
            queued: false,
        });
        if let Some(i) = listener {
            self.listeners[i].open += 1;
        }
        let id = ConnId { key, generation };
        if connecting {
            self.arm_timer(key);
        } else {
            let e = &mut self.conns[key];
            e.conn.on_connected(id, now, &mut self.services, &mut self.ctl);
            // An accepted socket usually holds its first request already: serve it now.
            self.pump(key, now);
        }
        id
    }

    fn on_conn_event(&mut self, key: usize, ready: Readiness, now: Instant) {
        let Some(e) = self.conns.get_mut(key) else { return };
        if e.linger_until.is_some() {
            self.linger_read(key, now);
            return;
        }
        if e.connecting {
            match connect_result(&e.sock) {
                Ok(false) => return,
                Ok(true) => {
                    e.connecting = false;
                    e.readable = true;
                    let id = e.id(key);
                    e.conn.on_connected(id, now, &mut self.services, &mut self.ctl);
                }
                Err(err) => {
                    self.close_key(key, now, Close::ConnectFailed(err));
                    return;
                }
            }
        }
        // A writable edge only means "flush", which `pump` always tries.
        e.readable |= ready.readable;
        e.peer_closed |= ready.read_closed;
        self.pump(key, now);
    }

    fn on_conn_timer(&mut self, key: usize, generation: u64, timer: TimerId, now: Instant) {
        let Some(e) = self.conns.get_mut(key) else { return };
        if e.generation != generation || e.timer.map(|(_, t)| t) != Some(timer) {
            return;
        }
        e.timer = None;
        if e.linger_until.is_some() {
            self.close_key(key, now, Close::Done);
            return;
        }
        let id = e.id(key);
        if let Err(why) = e.conn.handle_timeout(id, now, &mut self.services, &mut self.ctl) {
            self.close_key(key, now, why);
            return;
        }
        if e.connecting {
            self.arm_timer(key);
        } else {
            self.pump(key, now);
        }
    }

    /// Moves bytes between the socket and the machine until neither can make progress, then closes the connection
    /// or re-arms its deadline. What the machine asked of the loop waits in `ctl` for `run_requests`.
    fn pump(&mut self, key: usize, now: Instant) {
        let Some(e) = self.conns.get_mut(key) else { return };
        let result = pump_entry(e, key, now, self.turn_no, &mut self.services, &mut self.ctl);
        match result {
            Err(why) => self.close_key(key, now, why),
            Ok(pumped) => {
                let id = e.id(key);
                let finished = e.buf.pending_out() == 0 && (e.conn.wants_close(id, &self.services) || e.eof);
                if finished {
                    self.finish(key, now);
                } else {
                    if pumped == Pumped::Yielded && !e.queued {
                        e.queued = true;
                        self.yielded.push(id);
                    }
                    self.arm_timer(key);
                }
            }
        }
    }

    /// The machine is done (or the peer closed) and all output is written: close, lingering if the peer may still
    /// be sending.
    fn finish(&mut self, key: usize, now: Instant) {
        let e = &mut self.conns[key];
        let unread = !e.eof && (e.readable || !e.buf.input().is_empty());
        if !unread {
            let why = if e.eof { Close::Eof } else { Close::Done };
            self.close_key(key, now, why);
            return;
        }
        let _ = e.sock.shutdown(Shutdown::Write);
        e.buf.discard_input();
        e.linger_until = Some(now + LINGER);
        if let Some((_, t)) = e.timer.take() {
            self.timers.cancel(t);
        }
        e.timer = Some((now + LINGER, self.timers.insert(now + LINGER, (key, e.generation))));
        self.linger_read(key, now);
    }

    fn linger_read(&mut self, key: usize, now: Instant) {
        let e = &mut self.conns[key];
        loop {
            match io::Read::read(&mut e.sock, &mut self.scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.close_key(key, now, Close::Done);
    }

    /// Arms the connection's deadline if it has one earlier than the armed one (see "Time" in the module doc).
    fn arm_timer(&mut self, key: usize) {
        let Some(e) = self.conns.get_mut(key) else { return };
        let Some(want) = e.conn.poll_timeout(e.id(key), &self.services) else { return };
        match e.timer {
            Some((armed, _)) if armed <= want => {}
            Some((_, old)) => {
                self.timers.cancel(old);
                e.timer = Some((want, self.timers.insert(want, (key, e.generation))));
            }
            None => e.timer = Some((want, self.timers.insert(want, (key, e.generation)))),
        }
    }

    /// Removes the connection and closes its socket in one step (closing the descriptor is what takes it out of the
    /// poll set; an explicit deregister would be one more system call per connection), then tells its machine.
    fn close_key(&mut self, key: usize, now: Instant, why: Close) {
        let Some(e) = self.conns.try_remove(key) else { return };
        if let Some((_, t)) = e.timer {
            self.timers.cancel(t);
        }
        if let Some(i) = e.listener {
            self.listeners[i].open -= 1;
            if self.listeners[i].retry_at.is_some() {
                // A descriptor was just freed.
                self.listeners[i].retry_at = Some(now);
            }
        }
        log::trace!("connection {} ({}) closed: {why}", key, e.peer);
        let id = e.id(key);
        drop(e.sock);
        e.conn.on_closed(id, now, &why, &mut self.services, &mut self.ctl);
    }

    fn close_all(&mut self) {
        let now = Instant::now();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_key(key, now, Close::Shutdown);
        }
        self.ctl.requests.clear();
    }

    fn run_requests(&mut self, now: Instant) {
        while !self.ctl.requests.is_empty() {
            for req in std::mem::take(&mut self.ctl.requests) {
                match req {
                    Request::Stop => self.stopping = true,
                    Request::Close(id) => {
                        if self.conns.get(id.key).is_some_and(|e| e.generation == id.generation) {
                            self.close_key(id.key, now, Close::Requested);
                        }
                    }
                    Request::Connect { addr, conn } => self.connect_or_report(addr, conn, now),
                    Request::Wake(id) => self.wake_now(id, now),
                    Request::WakeDatagram(id) => self.pump_udp(id.0, now),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
