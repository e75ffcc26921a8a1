//! Datagram sockets in the loop: binding, reading until `WouldBlock` within a per-turn budget, handing each datagram
//! to its machine, and sending from a bounded queue. Which machines exist is `datagram.rs`'s business.
//!
//! Reads and sends go in batches of up to [`BATCH`] datagrams per system call (`mmsg.rs`: `recvmmsg` / `sendmmsg`
//! on Linux, one datagram per call elsewhere), so a loaded UDP tracker pays a system call's fixed cost once per batch
//! rather than twice per announce. A batch's answers are queued as each datagram is handled and sent together after
//! the batch (or as soon as a batch's worth waits, or half the queue's bounds), so one `sendmmsg` answers what one
//! `recvmmsg` read.

mod mmsg;

pub(super) use mmsg::BATCH;

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
    /// Registered for writable events too. Only while `blocked`: otherwise every answer the peer reads would free send
    /// buffer space and wake the loop for nothing (on a tracker under light load, one spurious wake-up per answer).
    writable_interest: bool,
    pub(super) received: u64,
    /// The turn `read_in_turn` counts for, and the datagrams read in it (see `DATAGRAM_BUDGET`).
    pub(super) read_turn: u64,
    pub(super) read_in_turn: usize,
    /// Where the last batch's datagrams are in the reactor's receive buffer, and who sent them.
    got: Vec<mmsg::Received>,
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
        self.poll.registry().register(&mut sock, Token(UDP_BASE + index), Interest::READABLE)?;
        if self.udp_in.is_empty() {
            // One slot of the largest datagram per datagram of a batch, so none is cut short. Allocated zeroed, the
            // pages come from the kernel as they are first written: a slot costs the memory of what it received.
            self.udp_in = vec![0; BATCH * MAX_DATAGRAM];
        }
        self.udp.push(UdpEntry {
            sock,
            kind,
            queue: DatagramQueue::new(limits),
            readable: false,
            blocked: false,
            writable_interest: false,
            received: 0,
            read_turn: 0,
            read_in_turn: 0,
            got: Vec::with_capacity(BATCH),
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

    /// Reads datagrams from socket `index` in batches (while it may have some and this turn's budget lasts), hands
    /// each to the machine and drains what the machine has to send into the queue after each, sending whenever a
    /// batch's worth waits; then sends from the queue until it is empty or the socket would block.
    pub(super) fn pump_udp(&mut self, index: usize, now: Instant) {
        let Reactor { poll, udp, udp_in, udp_out, services, ctl, turn_no, .. } = self;
        let Some(u) = udp.get_mut(index) else { return };
        if u.read_turn != *turn_no {
            u.read_turn = *turn_no;
            u.read_in_turn = 0;
        }
        while u.readable && u.read_in_turn < DATAGRAM_BUDGET {
            let asked = (DATAGRAM_BUDGET - u.read_in_turn).min(BATCH);
            match mmsg::recv_batch(&u.sock, udp_in, MAX_DATAGRAM, asked, &mut u.got) {
                Ok(n) => {
                    u.read_in_turn += n;
                    // Fewer than asked: the socket's queue is empty (a datagram arriving later raises a new edge), so
                    // the call that would only say `WouldBlock` is saved.
                    if n < asked {
                        u.readable = false;
                    }
                    let got = std::mem::take(&mut u.got);
                    for r in &got {
                        if r.truncated {
                            // Cannot happen with slots of the largest datagram; a cut datagram is never handed on.
                            log::debug!(
                                "datagram socket {index}: datagram from {} longer than its buffer: dropped",
                                r.from
                            );
                            continue;
                        }
                        u.received += 1;
                        u.kind.handle_datagram(now, r.from, &udp_in[r.offset..r.offset + r.len], services, ctl);
                        drain_datagrams(u, now, udp_out, services);
                        // Sent once a batch's worth waits, or before the next datagram's answers could overflow the
                        // queue (so a datagram's output of up to half the bounds is never dropped while the socket
                        // takes datagrams, as when each answer was sent at once).
                        if u.queue.len() >= BATCH || u.queue.half_full() {
                            flush_datagrams(u, services);
                        }
                    }
                    u.got = got;
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
        if u.blocked != u.writable_interest {
            // Re-registering reports the socket's current state, so room that appeared since the `WouldBlock` is not
            // missed.
            let interest = if u.blocked { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            match poll.registry().reregister(&mut u.sock, Token(UDP_BASE + index), interest) {
                Ok(()) => u.writable_interest = u.blocked,
                Err(e) => log::warn!("datagram socket {index}: cannot change its registration: {e}"),
            }
        }
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
        |batch| mmsg::send_batch(sock, batch),
        |to, err| {
            log::debug!("datagram to {to} not sent: {err}");
            kind.on_send_failed(to, &err, svc);
        },
    );
    u.blocked = !done;
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::super::datagram::echo::Echo;
    use super::super::{DatagramKind, DatagramLimits, Reactor, Services};
    use super::{BATCH, UdpId};

    fn echo_loop(copies: usize) -> (Reactor, UdpId, SocketAddr) {
        let mut r = Reactor::new(Services::default()).unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let id = r.bind_udp_limited(sock, DatagramKind::Echo(Echo::new(copies)), DatagramLimits::default()).unwrap();
        (r, id, addr)
    }

    /// Turns the loop and collects what `c` receives until `want` datagrams came; fails the test after 5 s.
    fn collect(r: &mut Reactor, c: &std::net::UdpSocket, want: usize) -> Vec<Vec<u8>> {
        c.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < want {
            assert!(Instant::now() < deadline, "{} of {want} datagrams came back", got.len());
            r.turn(Some(Duration::from_millis(10))).unwrap();
            while let Ok((n, _)) = c.recv_from(&mut buf) {
                got.push(buf[..n].to_vec());
            }
        }
        got
    }

    #[test]
    fn a_burst_of_several_batches_is_answered_whole_and_in_order() {
        let (mut r, id, addr) = echo_loop(1);
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let total = 3 * BATCH + 5;
        for i in 0..total {
            c.send_to(format!("n{i}").as_bytes(), addr).unwrap();
        }
        let got = collect(&mut r, &c, total);
        let want: Vec<Vec<u8>> = (0..total).map(|i| format!("n{i}").into_bytes()).collect();
        assert_eq!(got, want);
        let stats = r.datagram_stats(id);
        assert_eq!(
            (stats.received, stats.sent, stats.dropped, stats.failed, stats.queued),
            (total as u64, total as u64, 0, 0, 0)
        );
    }

    #[test]
    fn answers_beyond_a_batch_per_datagram_all_go() {
        // One datagram, 3 batches of answers (under the queue's bounds): the queue is sent in several batches.
        let copies = 3 * BATCH;
        let (mut r, id, addr) = echo_loop(copies);
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"many", addr).unwrap();
        let got = collect(&mut r, &c, copies);
        assert!(got.iter().all(|d| d == b"many"));
        assert_eq!(r.datagram_stats(id).sent, copies as u64);
    }

    #[test]
    fn the_largest_ipv4_datagram_arrives_whole() {
        let (mut r, id, addr) = echo_loop(1);
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let big: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
        c.send_to(b"before", addr).unwrap();
        c.send_to(&big, addr).unwrap();
        c.send_to(b"after", addr).unwrap();
        let got = collect(&mut r, &c, 3);
        assert_eq!(got, [b"before".to_vec(), big, b"after".to_vec()]);
        assert_eq!(r.datagram_stats(id).received, 3);
    }
}
