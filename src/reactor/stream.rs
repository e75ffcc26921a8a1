//! One TCP connection in the loop: its socket, buffers and flags, and the pump that moves bytes between the socket and
//! its machine (feed, write, read, for as long as any of them moves). The rules are in the module doc of `reactor`.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::buffer::{ReadEnd, SocketBuf};
use super::{Close, Conn, ConnId, Ctl, FLUSH_AT, READ_BUDGET, Services, os};
use crate::timer::TimerId;

pub(super) struct Entry {
    pub(super) generation: u64,
    pub(super) sock: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) buf: SocketBuf,
    pub(super) conn: Conn,
    /// Outgoing connect not finished yet.
    pub(super) connecting: bool,
    /// Not read to `WouldBlock` since the last readable event: there may be more to read without a new event.
    pub(super) readable: bool,
    pub(super) eof: bool,
    /// A readiness event said the peer closed its side: read until end of stream (see `SocketBuf::fill`).
    pub(super) peer_closed: bool,
    /// Closing: discarding input until the peer closes or this deadline.
    pub(super) linger_until: Option<Instant>,
    pub(super) listener: Option<usize>,
    pub(super) timer: Option<(Instant, TimerId)>,
    /// Last time bytes arrived (or the connection opened): the eviction order.
    pub(super) last_active: Instant,
    /// The turn `read_in_turn` counts for, and the bytes read from the socket in it (see `READ_BUDGET`).
    pub(super) read_turn: u64,
    pub(super) read_in_turn: usize,
    /// Waiting in `Reactor::yielded` for the next turn.
    pub(super) queued: bool,
}

impl Entry {
    pub(super) fn id(&self, key: usize) -> ConnId {
        ConnId { key, generation: self.generation }
    }
}

/// How a `pump_entry` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pumped {
    /// Nothing more can move until the next event or deadline.
    Stuck,
    /// The read budget of this turn ran out with data perhaps still waiting: pump again next turn.
    Yielded,
}

/// The body of `Reactor::pump` for one entry: feed the machine, write, read, for as long as any of them moves.
pub(super) fn pump_entry(
    e: &mut Entry,
    key: usize,
    now: Instant,
    turn: u64,
    svc: &mut Services,
    ctl: &mut Ctl,
) -> Result<Pumped, Close> {
    let id = e.id(key);
    if e.read_turn != turn {
        e.read_turn = turn;
        e.read_in_turn = 0;
    }
    loop {
        let mut progress = false;
        let mut used = 0;
        while used < e.buf.input().len()
            && !e.buf.backed_up()
            && !e.conn.wants_close(id, svc)
            && !e.conn.input_paused(id, svc)
        {
            let n = e.conn.handle_bytes(id, now, &e.buf.input()[used..], svc, ctl)?;
            e.conn.poll_transmit(id, now, e.buf.out(), svc);
            if n == 0 {
                break;
            }
            used += n;
        }
        if used > 0 {
            e.buf.consume(used);
            progress = true;
        }
        e.conn.poll_transmit(id, now, e.buf.out(), svc);
        // Paused for the disk: what is read and buffered waits; the session wakes the connection when it resumes.
        let paused = e.conn.input_paused(id, svc);
        if e.buf.input_full() && !e.conn.wants_close(id, svc) && !e.buf.backed_up() && !paused {
            return Err(Close::Protocol("message larger than the input buffer".into()));
        }
        let may_read = e.readable
            && !e.eof
            && !e.buf.backed_up()
            && !e.conn.wants_close(id, svc)
            && !e.buf.input_full()
            && !paused;
        let reading = may_read && e.read_in_turn < READ_BUDGET;
        // Small output waits while this pump goes on reading, so what a burst of input provokes (a leech's requests
        // for more blocks) leaves in one write rather than one per read.
        if !reading || e.buf.pending_out() >= FLUSH_AT {
            progress |= flush(e, id, svc)?;
        }
        if may_read && !reading {
            return Ok(Pumped::Yielded);
        }
        if reading {
            let (got, end) = e.buf.fill(&mut e.sock, e.peer_closed).map_err(Close::Io)?;
            match end {
                ReadEnd::WouldBlock => e.readable = false,
                ReadEnd::Eof => e.eof = true,
                ReadEnd::Full => {}
            }
            if got > 0 {
                e.last_active = now;
                e.read_in_turn += got;
                progress = true;
            }
        }
        // Output held back for a read that brought nothing goes now.
        let flushed = !progress && e.buf.pending_out() > 0 && flush(e, id, svc)?;
        if !progress && !flushed {
            return Ok(Pumped::Stuck);
        }
    }
}

/// Requests are small and answered at once; Nagle would only delay them.
pub(super) fn nodelay(sock: &TcpStream) {
    let _ = sock.set_nodelay(true);
}

/// Writes what the socket takes; true if it took anything. A machine that wants to close has written its last bytes:
/// they may wait for the FIN and leave with it (see `os::LastWrite`), because the loop closes or shuts down the socket
/// as soon as they are written.
fn flush(e: &mut Entry, id: ConnId, svc: &Services) -> Result<bool, Close> {
    let queued = e.buf.pending_out();
    if e.conn.wants_close(id, svc) {
        e.buf.flush(&mut os::LastWrite(&e.sock)).map_err(Close::Io)?;
    } else {
        e.buf.flush(&mut e.sock).map_err(Close::Io)?;
    }
    Ok(e.buf.pending_out() < queued)
}

/// Whether an outgoing connect has finished: `Ok(true)` connected, `Ok(false)` still in progress.
pub(super) fn connect_result(sock: &TcpStream) -> io::Result<bool> {
    if let Some(err) = sock.take_error()? {
        return Err(err);
    }
    match sock.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}
