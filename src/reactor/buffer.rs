//! The per-connection byte buffers between a socket and its state machine.
//!
//! Input: bytes read but not yet consumed by the machine (a partial message), at most `max_in`. A machine that has
//! not consumed anything from a full input buffer is waiting for a message larger than it allows: the reactor closes
//! it. Output: bytes the machine produced that the socket has not taken yet. Past `out_high` the reactor stops feeding
//! input to the machine and stops reading the socket, so a peer that does not read cannot make us queue without end.
//!
//! Generic over `Read`/`Write` so the read-until-`WouldBlock` and write-until-`WouldBlock` rules are unit-tested
//! without sockets.

use std::io::{self, Read, Write};

/// Bounds for one connection's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufLimits {
    /// Most unconsumed input held: at least the largest message the machine accepts.
    pub max_in: usize,
    /// Output above which input is no longer read or handled (backpressure).
    pub out_high: usize,
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

/// Keep at most this much spare capacity on an idle connection, so thousands of them cost little memory.
const IDLE_CAPACITY: usize = 4096;

#[derive(Debug)]
pub struct SocketBuf {
    input: Vec<u8>,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
    limits: BufLimits,
}

impl SocketBuf {
    pub fn new(limits: BufLimits) -> SocketBuf {
        SocketBuf { input: Vec::new(), out: Vec::new(), sent: 0, limits }
    }

    pub fn input(&self) -> &[u8] {
        &self.input
    }

    /// Drops the first `n` input bytes (the machine consumed them).
    pub fn consume(&mut self, n: usize) {
        self.input.drain(..n.min(self.input.len()));
        if self.input.is_empty() && self.input.capacity() > IDLE_CAPACITY {
            self.input = Vec::new();
        }
    }

    pub fn discard_input(&mut self) {
        self.input = Vec::new();
    }

    pub fn input_full(&self) -> bool {
        self.input.len() >= self.limits.max_in
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
    /// stopped. `scratch` is a loop-wide read buffer, so idle connections hold no read buffer of their own.
    ///
    /// A stream socket returns less than asked only when its queue is empty, and data arriving later raises a new
    /// edge, so a short read counts as drained without spending a read on hearing `WouldBlock`. Not so for the end
    /// of stream: a FIN that came with the data raised its edge already. So when the last readiness event said the
    /// peer closed (`peer_closed`), reads go on until they return 0.
    pub fn fill(&mut self, src: &mut impl Read, scratch: &mut [u8], peer_closed: bool) -> io::Result<(usize, ReadEnd)> {
        let mut total = 0;
        loop {
            let room = self.limits.max_in.saturating_sub(self.input.len()).min(scratch.len());
            if room == 0 {
                return Ok((total, ReadEnd::Full));
            }
            match src.read(&mut scratch[..room]) {
                Ok(0) => return Ok((total, ReadEnd::Eof)),
                Ok(n) => {
                    self.input.extend_from_slice(&scratch[..n]);
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
            if self.out.capacity() > IDLE_CAPACITY {
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

    const LIMITS: BufLimits = BufLimits { max_in: 10, out_high: 8 };

    #[test]
    fn reads_until_drained() {
        let mut b = SocketBuf::new(LIMITS);
        let mut s = fake(b"hello", false);
        assert_eq!(b.fill(&mut s, &mut [0; 3], false).unwrap(), (5, ReadEnd::WouldBlock));
        assert_eq!(b.input(), b"hello");
        b.consume(2);
        assert_eq!(b.input(), b"llo");
        assert_eq!(b.fill(&mut s, &mut [0; 3], false).unwrap(), (0, ReadEnd::WouldBlock));
    }

    #[test]
    fn a_short_read_is_drained_unless_the_peer_closed() {
        let mut b = SocketBuf::new(LIMITS);
        assert_eq!(b.fill(&mut fake(b"abc", true), &mut [0; 64], false).unwrap(), (3, ReadEnd::WouldBlock));
        let mut b = SocketBuf::new(LIMITS);
        assert_eq!(b.fill(&mut fake(b"abc", true), &mut [0; 64], true).unwrap(), (3, ReadEnd::Eof));
    }

    #[test]
    fn reads_stop_at_the_input_limit_and_resume_after_consuming() {
        let mut b = SocketBuf::new(LIMITS);
        let mut s = fake(b"0123456789abcdef", true);
        assert_eq!(b.fill(&mut s, &mut [0; 64], true).unwrap(), (10, ReadEnd::Full));
        assert!(b.input_full());
        b.consume(10);
        assert_eq!(b.fill(&mut s, &mut [0; 64], true).unwrap(), (6, ReadEnd::Eof));
        assert_eq!(b.input(), b"abcdef");
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
        assert_eq!(b.fill(&mut Broken, &mut [0; 8], false).unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    }
}
