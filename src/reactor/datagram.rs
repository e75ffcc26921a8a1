//! The one place that knows every kind of machine behind a datagram (UDP) socket.
//!
//! A datagram socket talks to many remote addresses at once, so the machine behind it is a service (the DHT node, the
//! UDP tracker front end) rather than a connection. The loop in `mod.rs` reads datagrams, keeps the bounded send
//! queue and reads the clock; this file turns that into calls on the machine's verbs, `now` first:
//! `handle_datagram(now, from, datagram)`, `poll_datagram(now, out) -> Option<SocketAddr>` (drained after every
//! `handle_*` and on a wake), `poll_timeout()` and `handle_timeout(now)`.
//!
//! Adding a kind: a variant of [`DatagramKind`] and its arm in each `match` below (the compiler lists them). Every
//! verb also gets the [`Services`] and the [`Ctl`], so a kind's machine may live in its variant or in a service (then
//! the variant holds nothing and its arms ask the service).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use super::{Ctl, Services};
use crate::tracker::udp::UdpFront;

/// The machine behind one datagram socket; each kind is one line here plus its arm in each verb.
#[derive(Debug)]
pub enum DatagramKind {
    /// The UDP tracker front end (BEP 15), answering from [`Services::tracker`]; without a tracker running,
    /// datagrams are dropped.
    UdpTracker(Box<UdpFront>),
    /// The sessions' announces to `udp://` trackers: the machine is [`Services::udp_announce`], which multiplexes
    /// them by tracker and transaction id.
    UdpAnnounce,
    /// The Mainline DHT node (BEP 5): the machine is [`Services::dht`]'s node, bound on the peer port's number.
    Dht,
    /// Answers every datagram (see [`echo::Echo`]); the reactor's own tests.
    #[cfg(test)]
    Echo(echo::Echo),
}

// Each arm uses the arguments its kind needs (the services and `ctl` are for kinds that live in a service).
#[allow(unused_variables, clippy::ptr_arg)]
impl DatagramKind {
    pub(super) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        svc: &mut Services,
        ctl: &mut Ctl,
    ) {
        match *self {
            DatagramKind::UdpTracker(ref mut m) => {
                if let Some(registry) = svc.tracker.as_mut() {
                    m.handle_datagram(now, from, datagram, registry);
                }
            }
            DatagramKind::UdpAnnounce => {
                if let Some(u) = svc.udp_announce.as_mut() {
                    u.announcer.handle_datagram(now, from, datagram);
                    svc.deliver_udp_announces(now, ctl);
                }
            }
            DatagramKind::Dht => {
                if let Some(d) = svc.dht.as_mut() {
                    d.node.handle_datagram(now, from, datagram);
                    svc.deliver_dht_events(now, ctl);
                }
            }
            #[cfg(test)]
            DatagramKind::Echo(ref mut m) => m.handle_datagram(now, from, datagram),
        }
    }

    /// Writes one datagram into `out` (empty on entry) and says where it goes; `None` when there is nothing to send.
    pub(super) fn poll_datagram(&mut self, now: Instant, out: &mut Vec<u8>, svc: &mut Services) -> Option<SocketAddr> {
        match *self {
            DatagramKind::UdpTracker(ref mut m) => m.poll_datagram(now, out),
            DatagramKind::UdpAnnounce => svc.udp_announce.as_mut()?.announcer.poll_datagram(now, out),
            DatagramKind::Dht => svc.dht.as_mut()?.node.poll_datagram(now, out),
            #[cfg(test)]
            DatagramKind::Echo(ref mut m) => m.poll_datagram(now, out),
        }
    }

    pub(super) fn poll_timeout(&self, svc: &Services) -> Option<Instant> {
        match *self {
            DatagramKind::UdpTracker(ref m) => m.poll_timeout(),
            DatagramKind::UdpAnnounce => svc.udp_announce.as_ref()?.announcer.poll_timeout(),
            DatagramKind::Dht => svc.dht.as_ref()?.node.poll_timeout(),
            #[cfg(test)]
            DatagramKind::Echo(ref m) => m.poll_timeout(),
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant, svc: &mut Services, ctl: &mut Ctl) {
        match *self {
            DatagramKind::UdpTracker(ref mut m) => m.handle_timeout(now),
            DatagramKind::UdpAnnounce => {
                if let Some(u) = svc.udp_announce.as_mut() {
                    u.announcer.handle_timeout(now);
                    svc.deliver_udp_announces(now, ctl);
                }
            }
            DatagramKind::Dht => {
                if let Some(d) = svc.dht.as_mut() {
                    d.node.handle_timeout(now);
                    svc.deliver_dht_events(now, ctl);
                }
            }
            #[cfg(test)]
            DatagramKind::Echo(ref mut m) => m.handle_timeout(now),
        }
    }

    /// A datagram could not be sent (not "the queue was full": a socket error such as an unreachable network or a
    /// datagram over the path's size). Machines that track requests may treat it as a lost answer.
    pub(super) fn on_send_failed(&mut self, to: SocketAddr, err: &io::Error, svc: &mut Services) {
        match *self {
            // A lost request is retransmitted on its timer; a DHT query unanswered times out like a lost one.
            DatagramKind::UdpTracker(_) | DatagramKind::UdpAnnounce | DatagramKind::Dht => {}
            #[cfg(test)]
            DatagramKind::Echo(_) => {}
        }
    }
}

/// Bounds of one datagram socket's send queue: past either, new datagrams are dropped (and counted), never queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramLimits {
    /// Most datagrams waiting for the socket.
    pub max_queued: usize,
    /// Most bytes (payloads) waiting for the socket.
    pub max_queued_bytes: usize,
}

impl Default for DatagramLimits {
    fn default() -> Self {
        DatagramLimits { max_queued: 1024, max_queued_bytes: 1 << 20 }
    }
}

/// What one datagram socket has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatagramStats {
    /// Datagrams handed to the machine.
    pub received: u64,
    /// Datagrams the socket took.
    pub sent: u64,
    /// Datagrams the machine produced while the send queue was full: dropped.
    pub dropped: u64,
    /// Datagrams the socket refused with an error other than `WouldBlock`: dropped.
    pub failed: u64,
    /// Datagrams waiting in the send queue now, and the most that ever waited.
    pub queued: usize,
    pub peak_queued: usize,
    /// Payload bytes waiting in the send queue now.
    pub queued_bytes: usize,
}

#[cfg(test)]
pub mod echo {
    //! A datagram machine for the reactor's tests: it answers each datagram to its sender `copies` times, and when
    //! its deadline passes it sends `tick` to a chosen address.

    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::time::Instant;

    #[derive(Debug, Default)]
    pub struct Echo {
        /// Answers per datagram received.
        pub copies: usize,
        pending: VecDeque<(SocketAddr, Vec<u8>)>,
        /// When to send `b"tick"`, and to whom.
        pub tick: Option<(Instant, SocketAddr)>,
        /// How many datagrams it was given.
        pub handled: u64,
    }

    impl Echo {
        pub fn new(copies: usize) -> Echo {
            Echo { copies, ..Echo::default() }
        }

        /// Also sends `b"tick"` to `to` once `at` has passed.
        pub fn with_tick(self, at: Instant, to: SocketAddr) -> Echo {
            Echo { tick: Some((at, to)), ..self }
        }

        pub fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, datagram: &[u8]) {
            self.handled += 1;
            for _ in 0..self.copies {
                self.pending.push_back((from, datagram.to_vec()));
            }
        }

        pub fn poll_datagram(&mut self, _now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
            let (to, bytes) = self.pending.pop_front()?;
            out.extend_from_slice(&bytes);
            Some(to)
        }

        pub fn poll_timeout(&self) -> Option<Instant> {
            self.tick.map(|(at, _)| at)
        }

        pub fn handle_timeout(&mut self, now: Instant) {
            if let Some((at, to)) = self.tick
                && at <= now
            {
                self.tick = None;
                self.pending.push_back((to, b"tick".to_vec()));
            }
        }
    }
}
