//! Datagram sockets in the loop: binding, reading until `WouldBlock` within a per-turn budget, handing each datagram
//! to its machine, and sending from a bounded queue. Which machines exist is `datagram.rs`'s business.

use std::io;
use std::time::Instant;

use mio::{Interest, Token};

use super::buffer::DatagramQueue;
use super::{
    DATAGRAM_BUDGET, DatagramKind, DatagramLimits, DatagramStats, MAX_DATAGRAM, MAX_UDP, Reactor, Services, UDP_BASE,
};

/// Names one datagram socket of a [`Reactor`] (see [`Reactor::bind_udp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpId(pub(super) usize);

/// A datagram socket and the machine behind it.
pub(super) struct UdpEntry {
    pub(super) sock: mio::net::UdpSocket,
    pub(super) kind: DatagramKind,
    pub(super) queue: DatagramQueue,
    /// Not read to `WouldBlock` since the last event: the read budget ran out with datagrams perhaps waiting.
    pub(super) readable: bool,
    /// The last send said `WouldBlock`: the queue waits for a writable event.
    pub(super) blocked: bool,
    pub(super) received: u64,
    /// The turn `read_in_turn` counts for, and the datagrams read in it (see `DATAGRAM_BUDGET`).
    pub(super) read_turn: u64,
    pub(super) read_in_turn: usize,
}

impl Reactor {
    /// Serves datagrams on `sock` (already bound) with the machine `kind`, with the default send queue bounds.
    pub fn bind_udp(&mut self, sock: std::net::UdpSocket, kind: DatagramKind) -> io::Result<UdpId> {
        self.bind_udp_limited(sock, kind, DatagramLimits::default())
    }

    /// [`Reactor::bind_udp`] with the send queue bounded by `limits`: datagrams the machine produces past them are
    /// dropped and counted (see [`DatagramStats::dropped`]).
    pub fn bind_udp_limited(
        &mut self,
        sock: std::net::UdpSocket,
        kind: DatagramKind,
        limits: DatagramLimits,
    ) -> io::Result<UdpId> {
        if self.udp.len() == MAX_UDP {
            return Err(io::Error::other("too many datagram sockets"));
        }
        sock.set_nonblocking(true)?;
        let mut sock = mio::net::UdpSocket::from_std(sock);
        let index = self.udp.len();
        self.poll.registry().register(&mut sock, Token(UDP_BASE + index), Interest::READABLE | Interest::WRITABLE)?;
        if self.udp_in.is_empty() {
            self.udp_in = vec![0; MAX_DATAGRAM];
        }
        self.udp.push(UdpEntry {
            sock,
            kind,
            queue: DatagramQueue::new(limits),
            readable: false,
            blocked: false,
            received: 0,
            read_turn: 0,
            read_in_turn: 0,
        });
        // What the machine has to say from the start (a DHT node's bootstrap queries) goes now.
        let now = Instant::now();
        self.pump_udp(index, now);
        self.run_requests(now);
        Ok(UdpId(index))
    }

    /// What datagram socket `id` has done so far.
    pub fn datagram_stats(&self, id: UdpId) -> DatagramStats {
        let u = &self.udp[id.0];
        DatagramStats {
            received: u.received,
            sent: u.queue.sent,
            dropped: u.queue.dropped,
            failed: u.queue.failed,
            queued: u.queue.len(),
            peak_queued: u.queue.peak,
            queued_bytes: u.queue.bytes(),
        }
    }

    /// The machine behind datagram socket `id`, to give it work from outside the loop; follow with
    /// [`Reactor::wake_datagram`] so its output is sent.
    pub fn datagram_machine(&mut self, id: UdpId) -> &mut DatagramKind {
        &mut self.udp[id.0].kind
    }

    /// Drains the machine behind `id` and sends (see [`Ctl::wake_datagram`]).
    pub fn wake_datagram(&mut self, id: UdpId) {
        let now = Instant::now();
        self.pump_udp(id.0, now);
        self.run_requests(now);
    }

    /// Reads datagrams from socket `index` (while it may have some and this turn's budget lasts), hands each to the
    /// machine and drains what the machine has to send into the queue after each; then sends from the queue until it
    /// is empty or the socket would block.
    pub(super) fn pump_udp(&mut self, index: usize, now: Instant) {
        let Reactor { udp, udp_in, udp_out, services, ctl, turn_no, .. } = self;
        let Some(u) = udp.get_mut(index) else { return };
        if u.read_turn != *turn_no {
            u.read_turn = *turn_no;
            u.read_in_turn = 0;
        }
        while u.readable && u.read_in_turn < DATAGRAM_BUDGET {
            match u.sock.recv_from(udp_in) {
                Ok((n, from)) => {
                    u.read_in_turn += 1;
                    u.received += 1;
                    u.kind.handle_datagram(now, from, &udp_in[..n], services, ctl);
                    drain_datagrams(u, now, udp_out, services);
                    flush_datagrams(u, services);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // An ICMP error for an earlier send (port unreachable...) or a failing socket: counted against
                    // the budget, so a socket that keeps failing cannot hold the loop.
                    u.read_in_turn += 1;
                    log::debug!("datagram socket {index}: receive failed: {e}");
                }
            }
        }
        drain_datagrams(u, now, udp_out, services);
        flush_datagrams(u, services);
    }
}

/// Moves everything the machine has to send into the queue (past its bounds, dropped and counted).
pub(super) fn drain_datagrams(u: &mut UdpEntry, now: Instant, out: &mut Vec<u8>, svc: &mut Services) {
    loop {
        out.clear();
        let Some(to) = u.kind.poll_datagram(now, out, svc) else { break };
        u.queue.push(to, out);
    }
}

/// Sends from the queue until it is empty or the socket would block (then wait for a writable event).
pub(super) fn flush_datagrams(u: &mut UdpEntry, svc: &mut Services) {
    if u.blocked || u.queue.is_empty() {
        return;
    }
    let UdpEntry { sock, kind, queue, .. } = u;
    let done = queue.flush(
        |datagram, to| sock.send_to(datagram, to),
        |to, err| {
            log::debug!("datagram to {to} not sent: {err}");
            kind.on_send_failed(to, &err, svc);
        },
    );
    u.blocked = !done;
}
