//! The one place that knows every kind of connection and every service the loop hosts.
//!
//! The loop in `mod.rs` moves bytes and time; this file turns them into calls on the state machines' verbs and turns
//! what the machines say into loop requests through [`Ctl`]. Every machine, whatever its protocol, has the same verbs
//! with the same argument order — `now` first, then the input, then any shared context the machine answers from:
//!
//! | verb | what it does |
//! |---|---|
//! | `handle_bytes(now, input) -> Result<usize, _>` | stream bytes in; how many were consumed (0: need more); `Err` closes |
//! | `handle_datagram(now, from, datagram)` | one datagram in (machines behind a UDP socket) |
//! | `handle_timeout(now)` | a deadline may have passed; an early call does nothing; `Err` closes |
//! | `poll_transmit(now, out)` | append what to write |
//! | `poll_datagram(now, out) -> Option<SocketAddr>` | one datagram to send, and where |
//! | `poll_timeout() -> Option<Instant>` | the next deadline |
//! | `poll_event() -> Option<Event>` | what the owner must hear (a peer's have, block, request…) |
//! | `wants_close() -> bool` | done: close once the output is written |
//!
//! After every `handle_*` the caller drains the `poll_*` verbs. A machine never reads the clock or touches a socket.
//! Peer machines ([`crate::peer::Peer`]) live inside their torrent session, which drains their events and answers
//! with commands; the session itself is a service with the same time verbs and `poll_action` for what the loop must
//! do (dial, close, announce).
//!
//! Adding a kind of connection means: a variant of [`Conn`], its arm in each `match` below, and, if it is accepted
//! rather than dialled, a [`ListenKind`]. Adding a service means: a field of [`Services`] and its arms in
//! `Services::poll_timeout` / `Services::handle_timeout`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::buffer::BufLimits;
use super::{Close, ConnId, Ctl};
use crate::peer::{HANDSHAKE_TIMEOUT, UPLOAD_LOW_WATER};
use crate::torrent::{Action, Session, Torrent};
use crate::tracker;
use crate::tracker::announce::{Exchange, Scheme};
use crate::tracker::udp::UdpAnnouncer;
use crate::wire::{Handshake, Limits};

/// Every service one loop can host, each a sans-IO machine driven with `now`; empty or `None` when not running here.
#[derive(Default)]
pub struct Services {
    pub tracker: Option<tracker::Registry>,
    /// Torrent sessions by info hash: `seed` and `leech` run one, a daemon many. Incoming peers are routed to one by
    /// the info hash in their handshake.
    pub torrents: HashMap<[u8; 20], Session>,
    /// Tracker host names resolved at start-up or by the resolver thread (the loop itself never waits on DNS), by
    /// (host, port).
    pub tracker_addrs: HashMap<(String, u16), SocketAddr>,
    /// Host names being resolved off the loop, and the announces waiting for them.
    pub resolving: super::resolver::Resolving,
    /// Where the sessions' progress lines go, once a `every`: the front end decides (a live terminal line, a log).
    pub progress: Option<Progress>,
    /// The sessions' announces to `udp://` trackers and the socket they share; `None` when no torrent has one.
    pub udp_announce: Option<UdpAnnounceSocket>,
    /// `share --hosts N`: the loop is done once this process's tracker has seen N completed downloads of the
    /// torrent with this info hash.
    pub completions_goal: Option<([u8; 20], u64)>,
    /// The Mainline DHT node (BEP 5) and its socket; `None` with the DHT off.
    pub dht: Option<DhtSocket>,
    /// `toybt daemon`: its torrents' records and RPC state (the sessions themselves are in `torrents`).
    pub daemon: Option<Box<crate::daemon::Daemon>>,
}

/// The datagram socket (a [`super::DatagramKind::Dht`]) of the DHT node, the node, and which sessions it looks up.
#[derive(Debug)]
pub struct DhtSocket {
    pub id: super::UdpId,
    pub node: crate::dht::Node,
    /// The port announced for our torrents (the peer port: the DHT shares its number over UDP).
    pub peer_port: u16,
    /// Info hashes the node is tracking, kept in step with the sessions' `uses_dht` (see `sync_dht`).
    tracked: HashSet<[u8; 20]>,
    /// Queries in and out at the last readout, and when: the readout's rates are over the time since.
    last_readout: Option<(Instant, u64)>,
}

impl DhtSocket {
    pub fn new(id: super::UdpId, node: crate::dht::Node, peer_port: u16) -> DhtSocket {
        DhtSocket { id, node, peer_port, tracked: HashSet::new(), last_readout: None }
    }

    /// The one-line readout of the node (for `toybt dht`'s status line): the routing table's size and the queries
    /// per second, in and out together, since the last readout.
    pub fn readout(&mut self, now: Instant) -> String {
        let s = self.node.stats();
        let queries = s.queries_in + s.queries_out;
        let rate = match self.last_readout {
            Some((at, before)) if now > at => queries.saturating_sub(before) as f64 / (now - at).as_secs_f64(),
            _ => 0.0,
        };
        self.last_readout = Some((now, queries));
        format!(
            "dht: {} nodes, {rate:.1} queries/s ({} in, {} out), {} peers stored, {} dropped",
            s.nodes, s.queries_in, s.queries_out, s.peers_stored, s.dropped
        )
    }

    /// Whether the node is looking up `info_hash` for a session.
    pub fn is_tracking(&self, info_hash: &[u8; 20]) -> bool {
        self.tracked.contains(info_hash)
    }
}

/// The datagram socket (a [`super::DatagramKind::UdpAnnounce`]) that carries every UDP announce, and the machine
/// that multiplexes them.
#[derive(Debug)]
pub struct UdpAnnounceSocket {
    pub id: super::UdpId,
    pub announcer: UdpAnnouncer,
}

/// The front end's view of the sessions' progress: `show` gets each session's line every `every`.
pub struct Progress {
    pub every: Duration,
    pub next: Instant,
    pub show: Box<dyn FnMut(&str) + Send>,
}

impl Services {
    /// Adds a session; an incoming connection whose handshake names its info hash joins it. A session that uses the
    /// DHT has its info hash looked up (and announced) from now on.
    pub fn add_session(&mut self, session: Session) {
        let hash = session.info_hash();
        self.torrents.insert(hash, session);
        if let Some(t) = self.torrents.get(&hash) {
            sync_dht(t, &mut self.dht, Instant::now(), None);
        }
    }

    /// Takes a session out of the loop (the daemon rebuilding or dropping it); the DHT stops tracking its torrent
    /// until a session for it is added again.
    pub fn remove_session(&mut self, hash: &[u8; 20]) -> Option<Session> {
        if let Some(d) = self.dht.as_mut()
            && d.tracked.remove(hash)
        {
            d.node.untrack(*hash);
        }
        self.resolving.forget(hash);
        self.torrents.remove(hash)
    }

    pub fn add_torrent(&mut self, torrent: Torrent) {
        self.add_session(Session::data(torrent));
    }

    /// The session, when the loop runs exactly one (the `seed` and `leech` commands).
    pub fn session(&self) -> Option<&Session> {
        if self.torrents.len() == 1 { self.torrents.values().next() } else { None }
    }

    /// The data session, when the loop runs exactly one and it knows its metadata.
    pub fn torrent(&self) -> Option<&Torrent> {
        self.session().and_then(Session::torrent)
    }

    /// The earliest deadline of any service.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let tracker = self.tracker.as_ref().and_then(|t| t.poll_timeout());
        let torrents = self.torrents.values().filter_map(Session::poll_timeout);
        let progress = self.progress.as_ref().map(|p| p.next);
        let daemon = self.daemon.as_ref().and_then(|d| d.poll_timeout());
        tracker.into_iter().chain(torrents).chain(progress).chain(daemon).min()
    }

    /// Gives every service the time; each does whatever has come due and ignores an early call.
    pub(super) fn handle_timeout(&mut self, now: Instant, ctl: &mut Ctl) {
        if let Some(t) = &mut self.tracker {
            t.handle_timeout(now);
        }
        // Only sessions with something due: with a thousand torrents, one torrent's announce must not wake the rest.
        for t in self.torrents.values_mut().filter(|t| t.poll_timeout().is_some_and(|d| d <= now)) {
            t.handle_timeout(now);
            carry_out(t, &self.tracker_addrs, &mut self.resolving, &mut self.udp_announce, &mut self.dht, now, ctl);
        }
        if let Some(p) = self.progress.as_mut().filter(|p| now >= p.next) {
            p.next = now + p.every;
            for t in self.torrents.values() {
                (p.show)(&t.progress_line());
            }
            // A bare DHT node (`toybt dht`) shows the node instead.
            if let Some(d) = self.dht.as_mut().filter(|_| self.torrents.is_empty()) {
                (p.show)(&d.readout(now));
            }
        }
    }

    /// Takes the disk workers' reports and carries out what the sessions then ask for (`waker` is handed to every
    /// worker, so each report wakes the loop). Asked every turn: a look at an empty channel per session.
    pub(super) fn disk_turn(&mut self, now: Instant, waker: &std::sync::Arc<mio::Waker>, ctl: &mut Ctl) {
        self.resolving.resolver.set_waker(waker);
        self.deliver_resolved(now, ctl);
        for t in self.torrents.values_mut() {
            if t.disk_turn(now, waker) {
                carry_out(t, &self.tracker_addrs, &mut self.resolving, &mut self.udp_announce, &mut self.dht, now, ctl);
            }
        }
        // Taken out for the call so it can change the sessions beside it.
        if let Some(mut d) = self.daemon.take() {
            d.handle_timeout(now, self, ctl);
            self.daemon = Some(d);
        }
    }

    /// Takes the resolver's answers: a name found goes to `tracker_addrs` and the announces waiting for it are made;
    /// one not found fails them with the reason.
    fn deliver_resolved(&mut self, now: Instant, ctl: &mut Ctl) {
        while let Some(r) = self.resolving.resolver.poll_done() {
            match &r.result {
                Ok(addr) => {
                    self.tracker_addrs.insert((r.host.clone(), r.port), *addr);
                }
                Err(why) => log::warn!("cannot resolve tracker host {}: {why}", r.host),
            }
            for p in self.resolving.take_parked(&r.host, r.port) {
                let Some(t) = self.torrents.get_mut(&p.info_hash) else { continue };
                match r.result {
                    Ok(addr) => announce(t, addr, p.url, &p.params, p.timeout, &mut self.udp_announce, now, ctl),
                    Err(ref why) => t.announce_done(now, Err(format!("cannot resolve tracker host {}: {why}", r.host))),
                }
                carry_out(t, &self.tracker_addrs, &mut self.resolving, &mut self.udp_announce, &mut self.dht, now, ctl);
            }
        }
    }

    /// A first Ctrl-C or SIGTERM: services that need to say goodbye (the torrent's `stopped` announce) start doing
    /// so. Returns true if the loop should keep running until `is_done`.
    pub(super) fn begin_stop(&mut self, now: Instant, ctl: &mut Ctl) -> bool {
        if let Some(d) = &mut self.daemon {
            d.stopping = true;
        }
        for t in self.torrents.values_mut() {
            t.stop(now);
            carry_out(t, &self.tracker_addrs, &mut self.resolving, &mut self.udp_announce, &mut self.dht, now, ctl);
        }
        !self.torrents.is_empty()
    }

    /// True when the services have finished their job and the loop should end (a leech with its seed time over).
    pub(super) fn is_done(&self) -> bool {
        if let (Some((hash, goal)), Some(registry)) = (self.completions_goal, &self.tracker)
            && registry.counts(&hash).is_some_and(|c| c.downloaded >= goal)
        {
            return true;
        }
        // A daemon runs until it is told to stop, whatever its torrents do.
        let daemon_stopping = self.daemon.as_ref().is_none_or(|d| d.stopping);
        daemon_stopping && !self.torrents.is_empty() && self.torrents.values().all(Session::is_finished)
    }

    /// Hands finished UDP announces to their sessions and carries out what they then ask for.
    pub(super) fn deliver_udp_announces(&mut self, now: Instant, ctl: &mut Ctl) {
        while let Some((hash, result)) = self.udp_announce.as_mut().and_then(|u| u.announcer.poll_done()) {
            if let Some(t) = self.torrents.get_mut(&hash) {
                t.announce_done(now, result);
                self.carry_out_for(&hash, now, ctl);
            }
        }
    }

    /// Hands what the DHT node found to the sessions (peers go to the address book, as a tracker's do) and carries
    /// out what they then ask for.
    pub(super) fn deliver_dht_events(&mut self, now: Instant, ctl: &mut Ctl) {
        while let Some(event) = self.dht.as_mut().and_then(|d| d.node.poll_event()) {
            match event {
                crate::dht::Event::Peers { info_hash, peers } => {
                    log::debug!("dht: {} peer(s) for {}", peers.len(), hex(&info_hash));
                    if let Some(t) = self.torrents.get_mut(&info_hash) {
                        t.found_peers(now, peers);
                        self.carry_out_for(&info_hash, now, ctl);
                    }
                }
                crate::dht::Event::LookupDone { info_hash, peers, announced } => {
                    log::info!(
                        "dht lookup for {} done: {peers} peer(s), announced to {announced} node(s)",
                        hex(&info_hash)
                    );
                }
            }
        }
    }

    /// Carries out what the session `info_hash` asked for.
    pub(crate) fn carry_out_for(&mut self, info_hash: &[u8; 20], now: Instant, ctl: &mut Ctl) {
        if let Some(t) = self.torrents.get_mut(info_hash) {
            carry_out(t, &self.tracker_addrs, &mut self.resolving, &mut self.udp_announce, &mut self.dht, now, ctl);
        }
    }
}

/// An info hash as the 40 hex digits people and logs use.
fn hex(hash: &[u8; 20]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps the DHT node's lookups in step with the session: tracked (and announced on the peer port) while it uses
/// the DHT, untracked once it does not (it stopped, finished, or turned out to be a private torrent). Wakes the
/// node's socket when that gave it something to send.
fn sync_dht(t: &Session, dht: &mut Option<DhtSocket>, now: Instant, ctl: Option<&mut Ctl>) {
    let Some(d) = dht.as_mut() else { return };
    let hash = t.info_hash();
    let wanted = t.uses_dht();
    if wanted == d.tracked.contains(&hash) {
        return;
    }
    if wanted {
        d.node.track(now, hash, Some(d.peer_port));
        d.tracked.insert(hash);
    } else {
        d.node.untrack(hash);
        d.tracked.remove(&hash);
    }
    if let Some(ctl) = ctl {
        ctl.wake_datagram(d.id);
    }
}

/// Turns what a torrent session asked for into loop requests: dials, closes, announces, nodes for the DHT, and wakes
/// for peers whose output it changed.
#[allow(clippy::too_many_arguments)]
fn carry_out(
    t: &mut Session,
    tracker_addrs: &HashMap<(String, u16), SocketAddr>,
    resolving: &mut super::resolver::Resolving,
    udp: &mut Option<UdpAnnounceSocket>,
    dht: &mut Option<DhtSocket>,
    now: Instant,
    ctl: &mut Ctl,
) {
    // A session that has just fetched its metadata becomes a data session here; the fetch's connections close.
    for action in t.advance() {
        if let Action::Close(key, generation) = action {
            ctl.close(ConnId { key, generation });
        }
    }
    while let Some(action) = t.poll_action() {
        match action {
            Action::Connect(addr) => ctl.connect(addr, Conn::Peer(PeerConn::outbound(addr, t.info_hash(), now))),
            Action::Close(key, generation) => ctl.close(ConnId { key, generation }),
            Action::Announce { url, params, timeout } => {
                match tracker_addrs.get(&(url.host.clone(), url.port)).copied() {
                    Some(addr) => announce(t, addr, url, &params, timeout, udp, now, ctl),
                    // A name not known yet (a tracker of a torrent added at run time, one whose metadata just came,
                    // or one that did not resolve before): asked of the resolver thread, the announce waits for its
                    // answer (see `deliver_resolved`).
                    None => match resolving.resolver.ask(&url.host, url.port) {
                        Ok(()) => {
                            let info_hash = t.info_hash();
                            resolving.parked.push(super::resolver::Parked { info_hash, url, params, timeout });
                        }
                        Err(why) => {
                            t.announce_done(now, Err(format!("cannot resolve tracker host {}: {why}", url.host)))
                        }
                    },
                }
            }
            Action::DhtNode(addr) => {
                if let Some(d) = dht.as_mut() {
                    d.node.add_node(now, addr);
                    ctl.wake_datagram(d.id);
                }
            }
        }
    }
    for (key, generation) in t.take_dirty() {
        ctl.wake(ConnId { key, generation });
    }
    sync_dht(t, dht, now, Some(ctl));
}

/// Starts an announce to the tracker at `addr`: over the shared UDP socket for `udp://`, else an HTTP exchange.
#[allow(clippy::too_many_arguments)]
fn announce(
    t: &mut Session,
    addr: SocketAddr,
    url: crate::tracker::announce::TrackerUrl,
    params: &crate::tracker::announce::AnnounceParams,
    timeout: std::time::Duration,
    udp: &mut Option<UdpAnnounceSocket>,
    now: Instant,
    ctl: &mut Ctl,
) {
    if url.scheme == Scheme::Udp {
        match udp.as_mut() {
            Some(u) => {
                u.announcer.start(now, t.info_hash(), addr, &url, params, timeout);
                ctl.wake_datagram(u.id);
            }
            None => t.announce_done(now, Err("no UDP socket for udp trackers".into())),
        }
        return;
    }
    match Exchange::new(now, &url, params, timeout) {
        Ok(x) => ctl.connect(addr, Conn::Announce(t.info_hash(), Box::new(x))),
        Err(e) => t.announce_done(now, Err(e)),
    }
}

/// What a listening socket accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenKind {
    /// HTTP clients of [`Services::tracker`].
    Tracker,
    /// BitTorrent peers of any of [`Services::torrents`].
    Peer,
    /// HTTP clients of [`Services::daemon`]'s RPC port.
    Rpc,
}

impl ListenKind {
    /// The machine for a newly accepted connection from `from`, or `None` to refuse it (its service is not running).
    pub(super) fn accept(self, from: SocketAddr, now: Instant, svc: &Services) -> Option<Conn> {
        match self {
            ListenKind::Tracker => {
                svc.tracker.as_ref().map(|t| Conn::TrackerClient(tracker::Client::new(from, now, t.config())))
            }
            ListenKind::Peer => svc.torrents.values().any(Session::accepts_peers).then_some(Conn::Peer(PeerConn {
                addr: from,
                info_hash: None,
                outbound: false,
                opened: now,
            })),
            ListenKind::Rpc => svc.daemon.as_ref().map(|_| Conn::Rpc(crate::daemon::front::RpcConn::new(from, now))),
        }
    }
}

/// A peer connection's handle: its machine lives in the torrent session named by `info_hash`, keyed by the
/// connection's slab key. An incoming connection belongs to no session until its handshake names one.
#[derive(Debug)]
pub struct PeerConn {
    addr: SocketAddr,
    info_hash: Option<[u8; 20]>,
    outbound: bool,
    opened: Instant,
}

impl PeerConn {
    fn outbound(addr: SocketAddr, info_hash: [u8; 20], now: Instant) -> PeerConn {
        PeerConn { addr, info_hash: Some(info_hash), outbound: true, opened: now }
    }

    /// The session for an incoming connection, from the info hash of the handshake at the start of `input`:
    /// `Ok(None)` until the handshake is whole. The session then sees the connection as new, handshake unread.
    fn route(&mut self, id: ConnId, now: Instant, input: &[u8], svc: &mut Services) -> Result<Option<[u8; 20]>, Close> {
        if let Some(hash) = self.info_hash {
            return Ok(Some(hash));
        }
        let hash = match Handshake::decode(input) {
            Ok(None) => return Ok(None),
            Ok(Some(h)) => h.info_hash,
            Err(e) => return Err(Close::Protocol(format!("bad handshake: {e}"))),
        };
        let Some(t) = svc.torrents.get_mut(&hash).filter(|t| t.accepts_peers()) else {
            return Err(Close::Protocol("handshake for another torrent".into()));
        };
        t.peer_connected(now, id.key, id.generation, self.addr, false);
        self.info_hash = Some(hash);
        Ok(Some(hash))
    }
}

/// One connection's state machine. The variant says which protocol the socket speaks.
#[derive(Debug)]
pub enum Conn {
    /// An HTTP client of our tracker.
    TrackerClient(tracker::Client),
    /// A BitTorrent peer (the protocol state is in [`Services::torrent`]).
    Peer(PeerConn),
    /// Our announce to a tracker, for the session with this info hash.
    Announce([u8; 20], Box<Exchange>),
    /// A client of the daemon's RPC port (RPC, status page, metrics).
    Rpc(crate::daemon::front::RpcConn),
    /// A scripted client for the reactor's own tests.
    #[cfg(test)]
    Probe(probe::Probe),
}

impl Conn {
    /// Buffer bounds: input must hold the largest message the protocol accepts.
    pub(super) fn limits(&self, svc: &Services) -> BufLimits {
        match self {
            // Thousands may be open and mostly idle: each keeps at most a small buffer between requests.
            Conn::TrackerClient(_) => BufLimits { max_in: 2 * crate::http::MAX_HEAD, out_high: 64 * 1024, keep: 4096 },
            Conn::Peer(_) => {
                // An incoming connection may join any session: room for the largest message of any of them.
                let pieces = svc.torrents.values().map(Session::piece_count).max().unwrap_or(0);
                // Room for the largest message plus a few blocks, so one read brings several messages. A peer that
                // streams keeps its input buffer rather than allocate one per read; at most `max_peers` of these.
                let max_in = Limits::new(pieces).max_frame_len() + 64 * 1024;
                BufLimits { max_in, out_high: 2 * UPLOAD_LOW_WATER, keep: max_in }
            }
            Conn::Announce(..) => BufLimits { max_in: 64 * 1024, out_high: 64 * 1024, keep: 4096 },
            Conn::Rpc(_) => {
                BufLimits { max_in: crate::daemon::front::LIMITS.max_input(), out_high: 256 * 1024, keep: 4096 }
            }
            #[cfg(test)]
            Conn::Probe(_) => BufLimits { max_in: 64 * 1024, out_high: 64 * 1024, keep: 4096 },
        }
    }

    /// The connection is established: an outgoing connect finished, or a listener accepted it.
    pub(super) fn on_connected(&mut self, id: ConnId, now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        match self {
            Conn::TrackerClient(_) | Conn::Announce(..) | Conn::Rpc(_) => {}
            // An incoming connection joins a session once its handshake says which (see `PeerConn::route`).
            Conn::Peer(p) => {
                if let Some(hash) = p.info_hash.filter(|_| p.outbound)
                    && let Some(t) = svc.torrents.get_mut(&hash)
                {
                    t.peer_connected(now, id.key, id.generation, p.addr, true);
                    svc.carry_out_for(&hash, now, ctl);
                }
            }
            #[cfg(test)]
            Conn::Probe(p) => p.log.borrow_mut().connected = true,
        }
    }

    /// Bytes from the socket; returns how many were consumed (0: the next message is not complete yet).
    #[cfg_attr(not(test), allow(unused_variables))]
    pub(super) fn handle_bytes(
        &mut self,
        id: ConnId,
        now: Instant,
        input: &[u8],
        svc: &mut Services,
        ctl: &mut Ctl,
    ) -> Result<usize, Close> {
        match self {
            Conn::TrackerClient(c) => {
                let tracker = svc.tracker.as_mut().ok_or(Close::Protocol("the tracker is not running".into()))?;
                Ok(c.handle_bytes(now, input, tracker))
            }
            Conn::Peer(p) => {
                let Some(hash) = p.route(id, now, input, svc)? else { return Ok(0) };
                let t = svc.torrents.get_mut(&hash).ok_or(Close::Protocol("the torrent is gone".into()))?;
                let used = t.peer_input(now, id.key, input).map_err(Close::Protocol);
                svc.carry_out_for(&hash, now, ctl);
                used
            }
            Conn::Announce(_, x) => Ok(x.handle_bytes(now, input)),
            Conn::Rpc(c) => Ok(c.handle_bytes(now, input, svc, ctl)),
            #[cfg(test)]
            Conn::Probe(p) => Ok(p.handle_bytes(input, ctl)),
        }
    }

    /// The connection's deadline may have passed.
    pub(super) fn handle_timeout(
        &mut self,
        _id: ConnId,
        now: Instant,
        _svc: &mut Services,
        _ctl: &mut Ctl,
    ) -> Result<(), Close> {
        match self {
            Conn::TrackerClient(c) => c.handle_timeout(now).map_err(|_| Close::TimedOut),
            // A routed connection's deadlines are its session's, on the session's tick; an unrouted one has only
            // its handshake time-out.
            Conn::Peer(p) => match p.info_hash {
                None if now >= p.opened + HANDSHAKE_TIMEOUT => Err(Close::TimedOut),
                _ => Ok(()),
            },
            Conn::Announce(_, x) => x.handle_timeout(now).map_err(|_| Close::TimedOut),
            Conn::Rpc(c) => c.handle_timeout(now).map_err(|_| Close::TimedOut),
            #[cfg(test)]
            Conn::Probe(_) => Ok(()),
        }
    }

    /// Appends whatever the machine wants written.
    pub(super) fn poll_transmit(&mut self, id: ConnId, now: Instant, out: &mut Vec<u8>, svc: &mut Services) {
        match self {
            Conn::TrackerClient(c) => c.poll_transmit(now, out),
            Conn::Peer(p) => {
                if let Some(t) = p.info_hash.and_then(|h| svc.torrents.get_mut(&h)) {
                    t.peer_transmit(now, id.key, out);
                }
            }
            Conn::Announce(_, x) => x.poll_transmit(now, out),
            Conn::Rpc(c) => c.poll_transmit(now, out),
            #[cfg(test)]
            Conn::Probe(p) => p.poll_transmit(out),
        }
    }

    pub(super) fn poll_timeout(&self, _id: ConnId, _svc: &Services) -> Option<Instant> {
        match self {
            Conn::TrackerClient(c) => c.poll_timeout(),
            // Peer deadlines (keep-alives, idle peers, request time-outs) are the session's, on its own timer.
            Conn::Peer(p) => p.info_hash.is_none().then_some(p.opened + HANDSHAKE_TIMEOUT),
            Conn::Announce(_, x) => x.poll_timeout(),
            Conn::Rpc(c) => c.poll_timeout(),
            #[cfg(test)]
            Conn::Probe(_) => None,
        }
    }

    /// The machine takes no input for now (its session waits for the disk): neither read nor feed it until it is
    /// woken.
    pub(super) fn input_paused(&self, _id: ConnId, svc: &Services) -> bool {
        match self {
            Conn::Peer(p) => p.info_hash.and_then(|h| svc.torrents.get(&h)).is_some_and(Session::input_paused),
            _ => false,
        }
    }

    /// The machine is done: close once its output is written, and feed it no more input.
    pub(super) fn wants_close(&self, _id: ConnId, _svc: &Services) -> bool {
        match self {
            Conn::TrackerClient(c) => c.wants_close(),
            Conn::Peer(_) => false,
            Conn::Announce(_, x) => x.wants_close(),
            Conn::Rpc(c) => c.wants_close(),
            #[cfg(test)]
            Conn::Probe(_) => false,
        }
    }

    /// The connection is gone (already deregistered); tell whoever cares.
    #[cfg_attr(not(test), allow(unused_variables))]
    pub(super) fn on_closed(self, id: ConnId, now: Instant, why: &Close, svc: &mut Services, ctl: &mut Ctl) {
        match self {
            Conn::TrackerClient(c) => log::debug!("tracker client closed after {} requests: {why}", c.requests()),
            Conn::Rpc(_) => {}
            Conn::Peer(p) => {
                let Some(hash) = p.info_hash else { return };
                if let Some(t) = svc.torrents.get_mut(&hash) {
                    match why {
                        Close::ConnectFailed(e) => t.connect_failed(now, p.addr, &e.to_string()),
                        _ => t.peer_closed(now, id.key, &why.to_string()),
                    }
                    svc.carry_out_for(&hash, now, ctl);
                }
            }
            Conn::Announce(hash, x) => {
                let clean = matches!(why, Close::Eof | Close::Done);
                let result = x.finish(clean, &why.to_string());
                if let Some(t) = svc.torrents.get_mut(&hash) {
                    t.announce_done(now, result);
                    svc.carry_out_for(&hash, now, ctl);
                }
            }
            #[cfg(test)]
            Conn::Probe(p) => p.on_closed(why, ctl),
        }
    }
}

/// A client that writes a script once connected (and later whatever a test puts in its outbox), records what comes
/// back, and stops the loop when it has `stop_after` bytes or is closed.
#[cfg(test)]
pub mod probe {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::{Close, Ctl};

    #[derive(Debug, Default)]
    pub struct Log {
        pub connected: bool,
        /// Bytes the test wants sent later; they go out when the loop is woken for this connection.
        pub outbox: Vec<u8>,
        pub got: Vec<u8>,
        pub closed: Option<String>,
        /// Wake this connection after every input, as a session asking for more after each block does.
        pub wake: Option<super::super::ConnId>,
    }

    #[derive(Debug)]
    pub struct Probe {
        pub send: Vec<u8>,
        pub stop_after: usize,
        pub log: Rc<RefCell<Log>>,
    }

    impl Probe {
        pub fn new(send: &[u8], stop_after: usize) -> (Probe, Rc<RefCell<Log>>) {
            let log = Rc::new(RefCell::new(Log::default()));
            (Probe { send: send.to_vec(), stop_after, log: log.clone() }, log)
        }

        pub(super) fn handle_bytes(&mut self, input: &[u8], ctl: &mut Ctl) -> usize {
            let mut log = self.log.borrow_mut();
            log.got.extend_from_slice(input);
            if log.got.len() >= self.stop_after {
                ctl.stop();
            }
            if let Some(id) = log.wake {
                ctl.wake(id);
            }
            input.len()
        }

        pub(super) fn poll_transmit(&mut self, out: &mut Vec<u8>) {
            let mut log = self.log.borrow_mut();
            if log.connected {
                out.append(&mut self.send);
                out.append(&mut log.outbox);
            }
        }

        pub(super) fn on_closed(self, why: &Close, ctl: &mut Ctl) {
            self.log.borrow_mut().closed = Some(why.to_string());
            ctl.stop();
        }
    }
}
