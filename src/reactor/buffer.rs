//! The per-connection byte buffers between a socket and its state machine.
//!
//! Input: bytes read but not yet consumed by the machine (a partial message), at most `max_in`. A machine that has
//! not consumed anything from a full input buffer is waiting for a message larger than it allows: the reactor closes
//! it. Output: bytes the machine produced that the socket has not taken yet. Past `out_high` the reactor stops feeding
//! input to the machine and stops reading the socket, so a peer that does not read cannot make us queue without end.
//!
//! The socket reads straight into the input buffer: it is a window `start..end` over a zero-initialised `Vec` whose
//! length is its size, so no read goes through a second buffer, consuming only moves `start`, and the unconsumed tail
//! (a partial message) is moved to the front only when the room behind it runs short. The buffer starts small and
//! doubles, up to `max_in`, while reads fill it; an emptied buffer larger than `keep` is freed, so idle connections
//! cost little while a busy peer does not allocate per read.
//!
//! Generic over `Read`/`Write` so the read-until-`WouldBlock` and write-until-`WouldBlock` rules are unit-tested
//! without sockets.
//!
//! A datagram socket has no byte stream, only whole datagrams to many addresses: its output waits in a
//! [`DatagramQueue`], bounded in count and bytes, whose overflow is dropped rather than queued.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};

use super::datagram::DatagramLimits;
use super::udp::BATCH as SEND_BATCH;

/// Bounds for one connection's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufLimits {
    /// Most unconsumed input held: at least the largest message the machine accepts.
    pub max_in: usize,
    /// Output above which input is no longer read or handled (backpressure).
    pub out_high: usize,
    /// Size an emptied buffer (input or output) may keep rather than be freed: small for kinds that are mostly idle
    /// and many, up to `max_in` for a kind that streams, so it neither allocates per read nor holds memory idle.
    pub keep: usize,
}

/// Why a read loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// The socket has nothing more now (a short read or `WouldBlock`); an edge-triggered readable event will come
    /// with new data.
    WouldBlock,
    /// The peer closed its sending side.
    Eof,
    /// The input buffer reached `max_in`; the socket may still hold data, so read again after consuming.
    Full,
}

/// The first input buffer's size (an HTTP request or a handshake fits); it doubles while reads fill it.
const FIRST_INPUT: usize = 1024;

#[derive(Debug)]
pub struct SocketBuf {
    /// `input[start..end]` is unconsumed; `input[end..]` is room for the next read.
    input: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
    limits: BufLimits,
}

impl SocketBuf {
    pub fn new(limits: BufLimits) -> SocketBuf {
        SocketBuf { input: Vec::new(), start: 0, end: 0, out: Vec::new(), sent: 0, limits }
    }

    pub fn input(&self) -> &[u8] {
        &self.input[self.start..self.end]
    }

    /// Drops the first `n` input bytes (the machine consumed them).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.input.len() > self.limits.keep {
                self.input = Vec::new();
            }
        }
    }

    pub fn discard_input(&mut self) {
        self.input = Vec::new();
        self.start = 0;
        self.end = 0;
    }

    pub fn input_full(&self) -> bool {
        self.end - self.start >= self.limits.max_in
    }

    /// Room behind the unconsumed input for the next read (0: the buffer holds `max_in`). When less than a quarter
    /// of the buffer is left, the unconsumed tail moves to the front, and if that does not help the buffer grows.
    fn room(&mut self) -> usize {
        let size = self.input.len();
        if size - self.end < size / 4 || size == 0 {
            if self.start > 0 {
                self.input.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if size - self.end < size / 4 || size == 0 {
                let grown = (size * 2).max(FIRST_INPUT).min(self.limits.max_in);
                if grown > size {
                    self.input.resize(grown, 0);
                }
            }
        }
        (self.input.len() - self.end).min(self.limits.max_in - (self.end - self.start).min(self.limits.max_in))
    }

    /// Where the machine appends output. When it `is_empty()` nothing is pending (written bytes are cleared), so a
    /// machine may swap its own buffer in instead of copying.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    pub fn pending_out(&self) -> usize {
        self.out.len() - self.sent
    }

    /// True when output is over the high-water mark: stop reading and handling input until it drains.
    pub fn backed_up(&self) -> bool {
        self.pending_out() >= self.limits.out_high
    }

    /// Reads until the socket is drained, end of stream, or a full input buffer; returns the bytes read and why it
    /// stopped.
    ///
    /// A stream socket returns less than asked only when its queue is empty, and data arriving later raises a new
    /// edge, so a short read counts as drained without spending a read on hearing `WouldBlock`. Not so for the end
    /// of stream: a FIN that came with the data raised its edge already. So when the last readiness event said the
    /// peer closed (`peer_closed`), reads go on until they return 0.
    pub fn fill(&mut self, src: &mut impl Read, peer_closed: bool) -> io::Result<(usize, ReadEnd)> {
        let mut total = 0;
        loop {
            let room = self.room();
            if room == 0 {
                return Ok((total, ReadEnd::Full));
            }
            match src.read(&mut self.input[self.end..self.end + room]) {
                Ok(0) => return Ok((total, ReadEnd::Eof)),
                Ok(n) => {
                    self.end += n;
                    total += n;
                    if n < room && !peer_closed {
                        return Ok((total, ReadEnd::WouldBlock));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((total, ReadEnd::WouldBlock)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes pending output until it is all written or the socket says `WouldBlock` (then the rest waits for the
    /// next writable event). A short write is normal, not an error.
    pub fn flush(&mut self, dst: &mut impl Write) -> io::Result<()> {
        while self.sent < self.out.len() {
            match dst.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes")),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.len() {
            self.sent = 0;
            if self.out.capacity() > self.limits.keep {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
        } else if self.sent > self.out.len() / 2 {
            // Move the unsent tail forward so appends do not grow the buffer while the peer reads slowly.
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}

/// One datagram socket's outgoing datagrams, waiting for the socket: at most `max_queued` of them and
/// `max_queued_bytes` of payload. A datagram pushed past either bound is dropped and counted, so a machine that
/// produces faster than the socket takes (or a socket that stays blocked) costs a bounded amount of memory.
#[derive(Debug)]
pub struct DatagramQueue {
    items: VecDeque<(SocketAddr, Vec<u8>)>,
    bytes: usize,
    limits: DatagramLimits,
    pub peak: usize,
    pub sent: u64,
    pub dropped: u64,
    pub failed: u64,
}

impl DatagramQueue {
    pub fn new(limits: DatagramLimits) -> DatagramQueue {
        DatagramQueue { items: VecDeque::new(), bytes: 0, limits, peak: 0, sent: 0, dropped: 0, failed: 0 }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// At least half of either bound is taken: the next datagram's output might not fit, so send before making more.
    pub fn half_full(&self) -> bool {
        self.items.len() * 2 >= self.limits.max_queued || self.bytes * 2 >= self.limits.max_queued_bytes
    }

    /// Queues a copy of `datagram` for `to`; false (and counted as dropped) if the queue is full.
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        if self.items.len() >= self.limits.max_queued || self.bytes + datagram.len() > self.limits.max_queued_bytes {
            self.dropped += 1;
            return false;
        }
        self.bytes += datagram.len();
        self.items.push_back((to, datagram.to_vec()));
        self.peak = self.peak.max(self.items.len());
        true
    }

    /// Sends queued datagrams in order until the queue is empty (true) or the socket says `WouldBlock` (false: the
    /// rest waits for the socket to be writable). `send` is given up to `SEND_BATCH` datagrams from the front and says
    /// how many the socket took; when it took none, its error is the first one's. `Interrupted` is retried; any other
    /// error drops that datagram, counts it as failed and hands it to `failed`.
    pub fn flush(
        &mut self,
        mut send: impl FnMut(&[(SocketAddr, &[u8])]) -> io::Result<usize>,
        mut failed: impl FnMut(SocketAddr, io::Error),
    ) -> bool {
        const NOWHERE: (SocketAddr, &[u8]) =
            (SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)), &[]);
        while !self.items.is_empty() {
            let mut batch = [NOWHERE; SEND_BATCH];
            let mut count = 0;
            for ((to, datagram), slot) in self.items.iter().zip(&mut batch) {
                *slot = (*to, datagram.as_slice());
                count += 1;
            }
            let taken = match send(&batch[..count]) {
                // Nothing taken without an error would loop forever: wait for the socket instead.
                Ok(0) => return false,
                Ok(n) => {
                    let n = n.min(count);
                    self.sent += n as u64;
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.failed += 1;
                    failed(batch[0].0, e);
                    1
                }
            };
            for (_, datagram) in self.items.drain(..taken) {
                self.bytes -= datagram.len();
            }
        }
        if self.items.capacity() > self.limits.max_queued.min(64) {
            self.items.shrink_to(64);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake socket: reads hand out what `data` holds (as a socket hands out its queue), then `WouldBlock` (or EOF
    /// when `eof`); writes accept up to `room` bytes in chunks of at most `chunk`, then `WouldBlock`.
    struct Fake {
        data: Vec<u8>,
        eof: bool,
        chunk: usize,
        room: usize,
        written: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return if self.eof { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
            }
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Ok(n)
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.chunk).min(self.room);
            self.written.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn fake(data: &[u8], eof: bool) -> Fake {
        Fake { data: data.to_vec(), eof, chunk: 3, room: 0, written: Vec::new() }
    }

    const LIMITS: BufLimits = BufLimits { max_in: 10, out_high: 8, keep: 4 };

    #[test]
    fn reads_until_drained() {
        let mut b = SocketBuf::new(LIMITS);
        let mut s = fake(b"hello", false);
        assert_eq!(b.fill(&mut s, false).unwrap(), (5, ReadEnd::WouldBlock));
        assert_eq!(b.input(), b"hello");
        b.consume(2);
        assert_eq!(b.input(), b"llo");
        assert_eq!(b.fill(&mut s, false).unwrap(), (0, ReadEnd::WouldBlock));
    }

    #[test]
    fn a_short_read_is_drained_unless_the_peer_closed() {
        let mut b = SocketBuf::new(LIMITS);
        assert_eq!(b.fill(&mut fake(b"abc", true), false).unwrap(), (3, ReadEnd::WouldBlock));
        let mut b = SocketBuf::new(LIMITS);
        assert_eq!(b.fill(&mut fake(b"abc", true), true).unwrap(), (3, ReadEnd::Eof));
    }

    #[test]
    fn reads_stop_at_the_input_limit_and_resume_after_consuming() {
        let mut b = SocketBuf::new(LIMITS);
        let mut s = fake(b"0123456789abcdef", true);
        assert_eq!(b.fill(&mut s, true).unwrap(), (10, ReadEnd::Full));
        assert!(b.input_full());
        b.consume(10);
        assert_eq!(b.fill(&mut s, true).unwrap(), (6, ReadEnd::Eof));
        assert_eq!(b.input(), b"abcdef");
    }

    #[test]
    fn a_partial_message_moves_to_the_front_when_room_runs_short() {
        let mut b = SocketBuf::new(LIMITS);
        let mut s = fake(b"0123456789", false);
        assert_eq!(b.fill(&mut s, false).unwrap(), (10, ReadEnd::Full));
        b.consume(7);
        s.data.extend_from_slice(b"abcdefg");
        // The three unconsumed bytes move to the front, then seven more fit behind them.
        assert_eq!(b.fill(&mut s, false).unwrap(), (7, ReadEnd::Full));
        assert_eq!(b.input(), b"789abcdefg");
        b.consume(4);
        assert_eq!(b.input(), b"bcdefg");
    }

    #[test]
    fn the_buffer_grows_while_reads_fill_it_and_is_freed_when_empty_past_keep() {
        let limits = BufLimits { max_in: 64 << 10, out_high: 8, keep: FIRST_INPUT };
        let mut b = SocketBuf::new(limits);
        let mut s = fake(&[7; 5000], false);
        assert_eq!(b.fill(&mut s, false).unwrap(), (5000, ReadEnd::WouldBlock));
        assert_eq!(b.input.len(), 8 * FIRST_INPUT, "doubled while reads filled it: 1, 2, 4, 8 KiB");
        b.consume(5000);
        assert!(b.input.is_empty(), "freed: larger than keep");
        s.data = vec![1; 100];
        b.fill(&mut s, false).unwrap();
        b.consume(100);
        assert_eq!(b.input.len(), FIRST_INPUT, "kept: not larger than keep");
        let mut s = fake(&[9; 200 << 10], false);
        assert_eq!(b.fill(&mut s, false).unwrap(), (64 << 10, ReadEnd::Full));
        assert_eq!(b.input.len(), 64 << 10, "never past max_in");
    }

    #[test]
    fn writes_until_would_block_and_keeps_the_rest() {
        let mut b = SocketBuf::new(LIMITS);
        b.out().extend_from_slice(b"0123456789");
        assert!(b.backed_up());
        let mut s = fake(b"", false);
        s.room = 7;
        b.flush(&mut s).unwrap();
        assert_eq!(s.written, b"0123456");
        assert_eq!(b.pending_out(), 3);
        assert!(!b.backed_up());
        b.out().extend_from_slice(b"XY");
        s.room = 100;
        b.flush(&mut s).unwrap();
        assert_eq!(s.written, b"0123456789XY");
        assert_eq!(b.pending_out(), 0);
        assert!(b.out().is_empty());
    }

    #[test]
    fn read_errors_other_than_would_block_are_returned() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
        }
        let mut b = SocketBuf::new(LIMITS);
        assert_eq!(b.fill(&mut Broken, false).unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn the_datagram_queue_drops_past_its_bounds_and_keeps_what_would_block() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut q = DatagramQueue::new(DatagramLimits { max_queued: 3, max_queued_bytes: 10 });
        assert!(q.push(to, b"aaaa") && q.push(to, b"bbbb"));
        assert!(!q.push(to, b"ccc"), "11 bytes would be over the byte bound");
        assert!(q.push(to, b"cc"));
        assert!(!q.push(to, b""), "a fourth datagram is over the count bound");
        assert_eq!((q.len(), q.bytes(), q.dropped, q.peak), (3, 10, 2, 3));
        // The socket takes one of three, is interrupted, fails the next, then would block: the third waits.
        let mut calls = 0;
        let mut sent = Vec::new();
        let mut failures = Vec::new();
        let done = q.flush(
            |batch| {
                calls += 1;
                match calls {
                    1 => {
                        assert_eq!(batch.len(), 3);
                        sent.push(batch[0].1.to_vec());
                        Ok(1)
                    }
                    2 => Err(io::ErrorKind::Interrupted.into()),
                    3 => {
                        assert_eq!(batch[0].1, b"bbbb", "a partial send resumes at the first datagram not taken");
                        Err(io::ErrorKind::ConnectionRefused.into())
                    }
                    _ => Err(io::ErrorKind::WouldBlock.into()),
                }
            },
            |to, e| failures.push((to, e.kind())),
        );
        assert!(!done);
        assert_eq!(sent, [b"aaaa".to_vec()]);
        assert_eq!(failures, [(to, io::ErrorKind::ConnectionRefused)]);
        assert_eq!((q.len(), q.bytes(), q.sent, q.failed), (1, 2, 1, 1));
        assert!(!q.flush(|_| Ok(0), |_, _| panic!("no failure")), "a socket that takes nothing waits");
        assert!(q.flush(|batch| Ok(batch.len()), |_, _| panic!("no failure")));
        assert_eq!((q.len(), q.bytes(), q.sent), (0, 0, 2));
    }

    #[test]
    fn the_datagram_queue_hands_the_socket_at_most_a_batch_and_resumes_after_a_partial_send() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let total = 2 * SEND_BATCH + 3;
        let mut q = DatagramQueue::new(DatagramLimits { max_queued: total, max_queued_bytes: 1 << 20 });
        for i in 0..total {
            assert!(q.push(to, &(i as u32).to_be_bytes()));
        }
        // The socket takes at most five per call: every datagram goes once, in order.
        let mut order = Vec::new();
        let done = q.flush(
            |batch| {
                assert!(!batch.is_empty() && batch.len() <= SEND_BATCH);
                let n = batch.len().min(5);
                order.extend(batch[..n].iter().map(|(_, d)| u32::from_be_bytes([d[0], d[1], d[2], d[3]])));
                Ok(n)
            },
            |_, _| panic!("no failure"),
        );
        assert!(done);
        assert_eq!(order, (0..total as u32).collect::<Vec<_>>());
        assert_eq!((q.len(), q.bytes(), q.sent), (0, 0, total as u64));
    }
}
