//! The one place that knows every kind of connection and every service the loop hosts.
//!
//! The loop in `mod.rs` moves bytes and time; this file turns them into calls on the state machines' verbs
//! (`handle_bytes`, `handle_timeout`, `poll_transmit`, `poll_timeout`, and events) and turns what the machines say
//! into loop requests through [`Ctl`]. Adding a kind of connection means: a variant of [`Conn`], its arm in each
//! `match` below, and, if it is accepted rather than dialled, a [`ListenKind`]. Adding a service means: a field of
//! [`Services`] and its arms in `Services::poll_timeout` / `Services::handle_timeout`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::buffer::BufLimits;
use super::{Close, ConnId, Ctl};
use crate::peer::UPLOAD_LOW_WATER;
use crate::torrent::{Action, Torrent};
use crate::tracker;
use crate::tracker::announce::Exchange;
use crate::wire::Limits;

/// Every service one loop can host, each a sans-IO machine driven with `now`; `None` when not running here.
#[derive(Default)]
pub struct Services {
    pub tracker: Option<tracker::Registry>,
    /// The torrent session of `seed` or `leech`.
    pub torrent: Option<Torrent>,
    /// Tracker host names resolved at start-up (the loop itself never waits on DNS), by (host, port).
    pub tracker_addrs: HashMap<(String, u16), SocketAddr>,
}

impl Services {
    /// The earliest deadline of any service.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let tracker = self.tracker.as_ref().and_then(|t| t.poll_timeout());
        let torrent = self.torrent.as_ref().and_then(|t| t.poll_timeout());
        tracker.into_iter().chain(torrent).min()
    }

    /// Gives every service the time; each does whatever has come due and ignores an early call.
    pub(super) fn handle_timeout(&mut self, now: Instant, ctl: &mut Ctl) {
        if let Some(t) = &mut self.tracker {
            t.handle_timeout(now);
        }
        if let Some(t) = &mut self.torrent {
            t.handle_timeout(now);
        }
        self.carry_out(now, ctl);
    }

    /// A first Ctrl-C or SIGTERM: services that need to say goodbye (the torrent's `stopped` announce) start doing
    /// so. Returns true if the loop should keep running until `is_done`.
    pub(super) fn begin_stop(&mut self, now: Instant, ctl: &mut Ctl) -> bool {
        let Some(t) = &mut self.torrent else { return false };
        t.stop(now);
        self.carry_out(now, ctl);
        true
    }

    /// True when a service has finished its job and the loop should end (a leech with its seed time over).
    pub(super) fn is_done(&self) -> bool {
        self.torrent.as_ref().is_some_and(|t| t.is_finished())
    }

    /// Turns what the torrent session asked for into loop requests: dials, closes, announces, and wakes for peers
    /// whose output it changed.
    fn carry_out(&mut self, now: Instant, ctl: &mut Ctl) {
        let Some(t) = &mut self.torrent else { return };
        while let Some(action) = t.poll_action() {
            match action {
                Action::Connect(addr) => ctl.connect(addr, Conn::Peer(PeerConn { addr, outbound: true })),
                Action::Close(key, generation) => ctl.close(ConnId { key, generation }),
                Action::Announce { url, params, timeout } => {
                    let addr = self.tracker_addrs.get(&(url.host.clone(), url.port)).copied();
                    match (Exchange::new(now, &url, &params, timeout), addr) {
                        (Ok(x), Some(addr)) => ctl.connect(addr, Conn::Announce(x)),
                        (Ok(_), None) => {
                            t.announce_done(now, Err(format!("tracker host {} was not resolved", url.host)))
                        }
                        (Err(e), _) => t.announce_done(now, Err(e)),
                    }
                }
            }
        }
        for (key, generation) in t.take_dirty() {
            ctl.wake(ConnId { key, generation });
        }
    }
}

/// What a listening socket accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenKind {
    /// HTTP clients of [`Services::tracker`].
    Tracker,
    /// BitTorrent peers of [`Services::torrent`].
    Peer,
}

impl ListenKind {
    /// The machine for a newly accepted connection from `from`, or `None` to refuse it (its service is not running).
    pub(super) fn accept(self, from: SocketAddr, now: Instant, svc: &Services) -> Option<Conn> {
        match self {
            ListenKind::Tracker => {
                svc.tracker.as_ref().map(|t| Conn::TrackerClient(tracker::Client::new(from, now, t.config())))
            }
            ListenKind::Peer => svc
                .torrent
                .as_ref()
                .filter(|t| t.accepts_peers())
                .map(|_| Conn::Peer(PeerConn { addr: from, outbound: false })),
        }
    }
}

/// A peer connection's handle: its state lives in the torrent session, keyed by the connection's slab key.
#[derive(Debug)]
pub struct PeerConn {
    addr: SocketAddr,
    outbound: bool,
}

/// One connection's state machine. The variant says which protocol the socket speaks.
#[derive(Debug)]
pub enum Conn {
    /// An HTTP client of our tracker.
    TrackerClient(tracker::Client),
    /// A BitTorrent peer (the protocol state is in [`Services::torrent`]).
    Peer(PeerConn),
    /// Our announce to a tracker.
    Announce(Exchange),
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
                let pieces = svc.torrent.as_ref().map_or(0, |t| t.meta().piece_count());
                // Room for the largest message plus a few blocks, so one read brings several messages. A peer that
                // streams keeps its input buffer rather than allocate one per read; at most `max_peers` of these.
                let max_in = Limits::new(pieces).max_frame_len() + 64 * 1024;
                BufLimits { max_in, out_high: 2 * UPLOAD_LOW_WATER, keep: max_in }
            }
            Conn::Announce(_) => BufLimits { max_in: 64 * 1024, out_high: 64 * 1024, keep: 4096 },
            #[cfg(test)]
            Conn::Probe(_) => BufLimits { max_in: 64 * 1024, out_high: 64 * 1024, keep: 4096 },
        }
    }

    /// The connection is established: an outgoing connect finished, or a listener accepted it.
    pub(super) fn on_connected(&mut self, id: ConnId, now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        match self {
            Conn::TrackerClient(_) | Conn::Announce(_) => {}
            Conn::Peer(p) => {
                if let Some(t) = &mut svc.torrent {
                    t.peer_connected(id.key, id.generation, p.addr, p.outbound, now);
                    svc.carry_out(now, ctl);
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
            Conn::Peer(_) => {
                let t = svc.torrent.as_mut().ok_or(Close::Protocol("no torrent is running".into()))?;
                let used = t.peer_input(id.key, input, now).map_err(Close::Protocol);
                svc.carry_out(now, ctl);
                used
            }
            Conn::Announce(x) => Ok(x.handle_bytes(now, input)),
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
            Conn::Peer(_) => Ok(()),
            Conn::Announce(x) => x.handle_timeout(now).map_err(|_| Close::TimedOut),
            #[cfg(test)]
            Conn::Probe(_) => Ok(()),
        }
    }

    /// Appends whatever the machine wants written.
    pub(super) fn poll_transmit(&mut self, id: ConnId, now: Instant, out: &mut Vec<u8>, svc: &mut Services) {
        match self {
            Conn::TrackerClient(c) => c.poll_transmit(now, out),
            Conn::Peer(_) => {
                if let Some(t) = &mut svc.torrent {
                    t.peer_transmit(id.key, out, now);
                }
            }
            Conn::Announce(x) => x.poll_transmit(now, out),
            #[cfg(test)]
            Conn::Probe(p) => p.poll_transmit(out),
        }
    }

    pub(super) fn poll_timeout(&self, _id: ConnId, _svc: &Services) -> Option<Instant> {
        match self {
            Conn::TrackerClient(c) => c.poll_timeout(),
            // Peer deadlines (keep-alives, idle peers, request time-outs) are the session's, on its own timer.
            Conn::Peer(_) => None,
            Conn::Announce(x) => x.poll_timeout(),
            #[cfg(test)]
            Conn::Probe(_) => None,
        }
    }

    /// The machine is done: close once its output is written, and feed it no more input.
    pub(super) fn wants_close(&self, _id: ConnId, _svc: &Services) -> bool {
        match self {
            Conn::TrackerClient(c) => c.wants_close(),
            Conn::Peer(_) => false,
            Conn::Announce(x) => x.wants_close(),
            #[cfg(test)]
            Conn::Probe(_) => false,
        }
    }

    /// The connection is gone (already deregistered); tell whoever cares.
    #[cfg_attr(not(test), allow(unused_variables))]
    pub(super) fn on_closed(self, id: ConnId, now: Instant, why: &Close, svc: &mut Services, ctl: &mut Ctl) {
        match self {
            Conn::TrackerClient(c) => log::debug!("tracker client closed after {} requests: {why}", c.requests()),
            Conn::Peer(p) => {
                if let Some(t) = &mut svc.torrent {
                    match why {
                        Close::ConnectFailed(e) => t.connect_failed(p.addr, now, &e.to_string()),
                        _ => t.peer_closed(id.key, &why.to_string(), now),
                    }
                    svc.carry_out(now, ctl);
                }
            }
            Conn::Announce(x) => {
                let clean = matches!(why, Close::Eof | Close::Done);
                let result = x.finish(clean, &why.to_string());
                if let Some(t) = &mut svc.torrent {
                    t.announce_done(now, result);
                    svc.carry_out(now, ctl);
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
