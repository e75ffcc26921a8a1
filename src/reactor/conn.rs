//! The one place that knows every kind of connection and every service the loop hosts.
//!
//! The loop in `mod.rs` moves bytes and time; this file turns them into calls on the state machines' verbs
//! (`handle_bytes`, `handle_timeout`, `poll_transmit`, `poll_timeout`, and events) and turns what the machines say
//! into loop requests through [`Ctl`]. Adding a kind of connection means: a variant of [`Conn`], its arm in each
//! `match` below, and, if it is accepted rather than dialled, a [`ListenKind`]. Adding a service means: a field of
//! [`Services`] and its arms in `Services::poll_timeout` / `Services::handle_timeout`.

use std::net::SocketAddr;
use std::time::Instant;

use super::buffer::BufLimits;
use super::{Close, ConnId, Ctl};
use crate::tracker;

/// Every service one loop can host, each a sans-IO machine driven with `now`; `None` when not running here.
#[derive(Debug, Default)]
pub struct Services {
    pub tracker: Option<tracker::Tracker>,
}

impl Services {
    /// The earliest deadline of any service.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.tracker.as_ref().and_then(|t| t.poll_timeout())
    }

    /// Gives every service the time; each does whatever has come due and ignores an early call.
    pub(super) fn handle_timeout(&mut self, now: Instant, _ctl: &mut Ctl) {
        if let Some(t) = &mut self.tracker {
            t.handle_timeout(now);
        }
    }
}

/// What a listening socket accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenKind {
    /// HTTP clients of [`Services::tracker`].
    Tracker,
}

impl ListenKind {
    /// The machine for a newly accepted connection from `from`, or `None` to refuse it (its service is not running).
    pub(super) fn accept(self, from: SocketAddr, now: Instant, svc: &Services) -> Option<Conn> {
        match self {
            ListenKind::Tracker => {
                svc.tracker.as_ref().map(|t| Conn::TrackerClient(tracker::Client::new(from, now, t.config())))
            }
        }
    }
}

/// One connection's state machine. The variant says which protocol the socket speaks.
#[derive(Debug)]
pub enum Conn {
    /// An HTTP client of our tracker.
    TrackerClient(tracker::Client),
    /// A scripted client for the reactor's own tests.
    #[cfg(test)]
    Probe(probe::Probe),
}

impl Conn {
    /// Buffer bounds: input must hold the largest message the protocol accepts.
    pub(super) fn limits(&self) -> BufLimits {
        match self {
            Conn::TrackerClient(_) => BufLimits { max_in: 2 * tracker::http::MAX_HEAD, out_high: 64 * 1024 },
            #[cfg(test)]
            Conn::Probe(_) => BufLimits { max_in: 64 * 1024, out_high: 64 * 1024 },
        }
    }

    /// An outgoing connection is established.
    pub(super) fn on_connected(&mut self, _id: ConnId, _now: Instant, _svc: &mut Services, _ctl: &mut Ctl) {
        match self {
            Conn::TrackerClient(_) => {}
            #[cfg(test)]
            Conn::Probe(p) => p.log.borrow_mut().connected = true,
        }
    }

    /// Bytes from the socket; returns how many were consumed (0: the next message is not complete yet).
    #[cfg_attr(not(test), allow(unused_variables))]
    pub(super) fn handle_bytes(
        &mut self,
        _id: ConnId,
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
            #[cfg(test)]
            Conn::Probe(_) => Ok(()),
        }
    }

    /// Appends whatever the machine wants written.
    pub(super) fn poll_transmit(&mut self, out: &mut Vec<u8>, _svc: &mut Services) {
        match self {
            Conn::TrackerClient(c) => c.poll_transmit(out),
            #[cfg(test)]
            Conn::Probe(p) => p.poll_transmit(out),
        }
    }

    pub(super) fn poll_timeout(&self, _svc: &Services) -> Option<Instant> {
        match self {
            Conn::TrackerClient(c) => c.poll_timeout(),
            #[cfg(test)]
            Conn::Probe(_) => None,
        }
    }

    /// The machine is done: close once its output is written, and feed it no more input.
    pub(super) fn wants_close(&self, _svc: &Services) -> bool {
        match self {
            Conn::TrackerClient(c) => c.wants_close(),
            #[cfg(test)]
            Conn::Probe(_) => false,
        }
    }

    /// The connection is gone (already deregistered); tell whoever cares.
    #[cfg_attr(not(test), allow(unused_variables))]
    pub(super) fn on_closed(self, _id: ConnId, _now: Instant, why: &Close, _svc: &mut Services, ctl: &mut Ctl) {
        match self {
            Conn::TrackerClient(c) => log::debug!("tracker client closed after {} requests: {why}", c.requests()),
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
