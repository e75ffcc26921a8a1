//! How machines and the loop talk about connections: a connection's name ([`ConnId`]), why it closed ([`Close`]),
//! and what a machine may ask of the loop from inside a verb ([`Ctl`]), carried out once the verb returns.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use super::{Conn, UdpId};

/// Names one connection for its whole life: the slab key plus a generation that is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub key: usize,
    pub generation: u64,
}

/// Why a connection was closed; handed to the machine's `on_closed`.
#[derive(Debug)]
pub enum Close {
    /// The peer closed its side, and everything owed to it was written.
    Eof,
    /// The machine was done and its output was written.
    Done,
    Io(io::Error),
    ConnectFailed(io::Error),
    /// The machine's deadline passed.
    TimedOut,
    /// The peer broke a protocol rule; the text says which.
    Protocol(String),
    /// Closed to make room on a listener at its connection limit (the longest-silent one goes).
    Evicted,
    /// A service asked for it.
    Requested,
    /// The loop is stopping.
    Shutdown,
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::Eof => f.write_str("closed by the peer"),
            Close::Done => f.write_str("done"),
            Close::Io(e) => write!(f, "socket error: {e}"),
            Close::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            Close::TimedOut => f.write_str("timed out"),
            Close::Protocol(why) => write!(f, "protocol error: {why}"),
            Close::Evicted => f.write_str("evicted at the connection limit"),
            Close::Requested => f.write_str("closed on request"),
            Close::Shutdown => f.write_str("shutting down"),
        }
    }
}

/// What machines and services may ask of the loop while it is calling them. `conn.rs` passes it to every verb; the
/// loop carries the requests out right after the call returns.
#[derive(Debug, Default)]
pub struct Ctl {
    pub(super) requests: Vec<Request>,
}

#[derive(Debug)]
pub(super) enum Request {
    Connect { addr: SocketAddr, conn: Conn },
    Close(ConnId),
    Wake(ConnId),
    WakeDatagram(UdpId),
    Stop,
}

impl Ctl {
    /// Opens a non-blocking connection to `addr` driven by `conn`. Failure, at once or later, reaches
    /// `conn.on_closed` as [`Close::ConnectFailed`]; success reaches `on_connected`.
    pub fn connect(&mut self, addr: SocketAddr, conn: Conn) {
        self.requests.push(Request::Connect { addr, conn });
    }

    pub fn close(&mut self, id: ConnId) {
        self.requests.push(Request::Close(id));
    }

    /// The machine behind `id` has new output or a new deadline, changed from outside its own verbs (say a service
    /// decided to send it something): the loop pumps it, which drains `poll_transmit` and re-reads `poll_timeout`.
    pub fn wake(&mut self, id: ConnId) {
        self.requests.push(Request::Wake(id));
    }

    /// The machine behind datagram socket `id` has new output (a service gave it work): the loop drains its
    /// `poll_datagram` and sends. Its deadline is asked for at every turn anyway.
    pub fn wake_datagram(&mut self, id: UdpId) {
        self.requests.push(Request::WakeDatagram(id));
    }

    /// Ends `Reactor::run` after the current batch.
    pub fn stop(&mut self) {
        self.requests.push(Request::Stop);
    }
}
