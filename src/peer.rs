//! One peer connection's protocol state: the handshake, who chokes whom and who wants what, the peer's pieces, the
//! blocks it asked of us, the bytes waiting to go out, and the clocks that keep the connection honest.
//!
//! This is the per-connection half of the swarm logic; `torrent` holds the swarm-wide half (picker, storage, choker)
//! and decides what to do with each message. Nothing here touches a socket or reads the clock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::bitfield::Bitfield;
use crate::picker::Block;
use crate::progress::Rate;
use crate::wire;

/// Blocks a peer may have waiting on us. Peers that speak BEP 10 hear this number as `reqq` in our extended
/// handshake and keep within it; requests beyond it are dropped, as libtorrent does.
pub const MAX_QUEUED_REQUESTS: usize = 1024;
/// We send a keep-alive when we have been silent this long (BEP 3 suggests every two minutes).
pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(110);
/// A peer silent this long (not even a keep-alive) is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(240);
/// A peer that has delivered none of our requests for this long is snubbing us: it gets one request at a time, and
/// its rate no longer earns it an upload slot.
pub const SNUB_AFTER: Duration = Duration::from_secs(60);
/// A connection that has not completed its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Upload blocks are read from disk only while less than this is waiting to be sent; the reactor's own high-water
/// mark (backpressure) sits above it. The kernel's socket buffer holds far more, so this only has to last one turn
/// of the loop: at 128 KiB a 1 GiB loopback transfer ran as fast as at 256 KiB, with half the memory per peer.
pub const UPLOAD_LOW_WATER: usize = 128 << 10;

#[derive(Debug)]
pub struct Peer {
    /// Tells this connection from an earlier one that had the same key (the reactor's slab reuses keys).
    pub generation: u64,
    pub addr: SocketAddr,
    pub outbound: bool,
    /// Set once the peer's handshake has been accepted.
    pub peer_id: Option<[u8; 20]>,
    pub handshake_sent: bool,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// The pieces the peer has said it has.
    pub has: Bitfield,
    /// Whether the peer's bitfield or first have has arrived (a bitfield is only legal before anything else).
    pub said_anything: bool,
    /// Blocks the peer asked of us, served in order while it is unchoked.
    pub requests_in: VecDeque<Block>,
    /// Our requests the peer has not answered yet, oldest first, with when they were sent.
    pub requested: VecDeque<(Block, Instant)>,
    /// Smoothed time from sending a request to receiving its block.
    pub srtt: Option<Duration>,
    out: Vec<u8>,
    pub down: Rate,
    pub up: Rate,
    pub connected_at: Instant,
    pub last_recv: Instant,
    pub last_send: Instant,
    /// When the peer last delivered a block we asked for (or when it unchoked us): a snubbing peer stops delivering.
    pub last_block: Instant,
    pub hash_failures: u32,
}

impl Peer {
    pub fn new(addr: SocketAddr, outbound: bool, piece_count: u32, now: Instant) -> Peer {
        Peer {
            generation: 0,
            addr,
            outbound,
            peer_id: None,
            handshake_sent: false,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            has: Bitfield::new(piece_count),
            said_anything: false,
            requests_in: VecDeque::new(),
            requested: VecDeque::new(),
            srtt: None,
            out: Vec::new(),
            down: Rate::default(),
            up: Rate::default(),
            connected_at: now,
            last_recv: now,
            last_send: now,
            last_block: now,
            hash_failures: 0,
        }
    }

    pub fn is_active(&self) -> bool {
        self.peer_id.is_some()
    }

    /// The buffer to append wire messages to.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Moves the queued messages to the socket's buffer: a swap when that is empty (the usual case), so the bytes are
    /// not copied.
    pub fn take_output(&mut self, into: &mut Vec<u8>, now: Instant) {
        if self.out.is_empty() {
            return;
        }
        if into.is_empty() {
            std::mem::swap(into, &mut self.out);
        } else {
            into.extend_from_slice(&self.out);
            self.out.clear();
        }
        self.last_send = now;
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn send_bare(&mut self, id: u8) {
        wire::encode_bare(&mut self.out, id);
    }

    pub fn choke(&mut self) {
        if !self.am_choking {
            self.am_choking = true;
            // BEP 3: a choke discards the peer's pending requests.
            self.requests_in.clear();
            self.send_bare(wire::id::CHOKE);
        }
    }

    pub fn unchoke(&mut self) {
        if self.am_choking {
            self.am_choking = false;
            self.send_bare(wire::id::UNCHOKE);
        }
    }

    pub fn set_interested(&mut self, interested: bool) {
        if interested != self.am_interested {
            self.am_interested = interested;
            self.send_bare(if interested { wire::id::INTERESTED } else { wire::id::NOT_INTERESTED });
        }
    }

    /// Queues a block the peer asked for; `false` if it was refused (choked, or too many queued).
    /// Unchoked and interested: one of the upload slots the choker hands out.
    pub fn holds_upload_slot(&self) -> bool {
        !self.am_choking && self.peer_interested
    }

    pub fn queue_request(&mut self, block: Block) -> bool {
        if self.am_choking || self.requests_in.len() >= MAX_QUEUED_REQUESTS {
            return false;
        }
        self.requests_in.push_back(block);
        true
    }

    pub fn cancel_request(&mut self, block: Block) {
        self.requests_in.retain(|b| *b != block);
    }

    /// A keep-alive if we have been silent too long.
    pub fn keepalive_due(&mut self, now: Instant) {
        if self.out.is_empty() && now.saturating_duration_since(self.last_send) >= KEEPALIVE_AFTER {
            wire::encode_keep_alive(&mut self.out);
        }
    }

    /// Why this connection should be closed now for silence, if it should.
    pub fn timed_out(&self, now: Instant) -> Option<&'static str> {
        if !self.is_active() && now.saturating_duration_since(self.connected_at) >= HANDSHAKE_TIMEOUT {
            Some("no handshake in time")
        } else if now.saturating_duration_since(self.last_recv) >= IDLE_TIMEOUT {
            Some("idle for too long")
        } else {
            None
        }
    }

    /// Our request for `block` was answered (or withdrawn); returns when it was sent. Blocks mostly arrive in the
    /// order asked, so the search ends at the front.
    pub fn request_done(&mut self, block: Block) -> Option<Instant> {
        let i = self.requested.iter().position(|(b, _)| *b == block)?;
        self.requested.remove(i).map(|(_, at)| at)
    }

    /// True while we wait on requests that this peer has not answered for `SNUB_AFTER`.
    pub fn is_snubbing(&self, now: Instant) -> bool {
        !self.requested.is_empty() && now.saturating_duration_since(self.last_block) >= SNUB_AFTER
    }

    /// Folds one request's round trip into the smoothed estimate (as TCP does: 7/8 old, 1/8 new).
    pub fn sample_rtt(&mut self, rtt: Duration) {
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
    }

    /// How many of our requests to keep outstanding at this peer: enough to cover its measured rate over a round
    /// trip with room to spare, so a fast peer is never idle waiting for our next request, and a slow one does not
    /// hold blocks that another peer could deliver sooner.
    pub fn request_depth(&self, now: Instant) -> usize {
        const BLOCK: u64 = 16 << 10;
        if self.is_snubbing(now) {
            return 1;
        }
        let rtt = self.srtt.unwrap_or(Duration::from_millis(100));
        // Two round trips of data at the current rate, plus half a second of it.
        let window = rtt * 2 + Duration::from_millis(500);
        let bytes = self.down.per_sec() as u128 * window.as_micros() / 1_000_000;
        (bytes as u64 / BLOCK).clamp(8, 250) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer::new("127.0.0.1:1".parse().unwrap(), true, 10, Instant::now())
    }

    #[test]
    fn output_moves_without_copy_when_the_socket_buffer_is_empty() {
        let mut p = peer();
        let now = Instant::now();
        p.out().extend_from_slice(b"abc");
        let ptr = p.out.as_ptr();
        let mut sock = Vec::new();
        p.take_output(&mut sock, now);
        assert_eq!((sock.as_ptr(), &sock[..]), (ptr, &b"abc"[..]));
        p.out().extend_from_slice(b"de");
        p.take_output(&mut sock, now);
        assert_eq!(sock, b"abcde");
        assert!(!p.has_output());
    }

    #[test]
    fn choke_discards_queued_requests_and_refuses_new_ones() {
        let mut p = peer();
        let b = Block { index: 1, begin: 0, length: 16384 };
        assert!(!p.queue_request(b), "requests while choked are dropped");
        p.unchoke();
        assert!(p.queue_request(b));
        p.choke();
        assert!(p.requests_in.is_empty());
        assert_eq!(p.out, &[0, 0, 0, 1, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn request_queue_is_bounded() {
        let mut p = peer();
        p.unchoke();
        for i in 0..MAX_QUEUED_REQUESTS as u32 {
            assert!(p.queue_request(Block { index: 0, begin: i * 16384, length: 16384 }));
        }
        assert!(!p.queue_request(Block { index: 1, begin: 0, length: 16384 }));
    }

    #[test]
    fn silence_leads_to_keepalive_then_timeout() {
        let t0 = Instant::now();
        let mut p = Peer::new("127.0.0.1:1".parse().unwrap(), true, 10, t0);
        assert_eq!(p.timed_out(t0 + HANDSHAKE_TIMEOUT), Some("no handshake in time"));
        p.peer_id = Some([1; 20]);
        p.keepalive_due(t0 + KEEPALIVE_AFTER);
        assert_eq!(p.out, &[0, 0, 0, 0]);
        assert_eq!(p.timed_out(t0 + IDLE_TIMEOUT - Duration::from_secs(1)), None);
        assert_eq!(p.timed_out(t0 + IDLE_TIMEOUT), Some("idle for too long"));
    }

    #[test]
    fn depth_grows_with_rate() {
        let t0 = Instant::now();
        let mut p = Peer::new("127.0.0.1:1".parse().unwrap(), true, 10, t0);
        assert_eq!(p.request_depth(t0), 8);
        p.down.sample(t0);
        p.down.add(200 << 20);
        p.down.sample(t0 + Duration::from_secs(1));
        p.sample_rtt(Duration::from_millis(1));
        assert_eq!(p.request_depth(t0), 250, "a 100 MiB/s peer gets the full window");
        p.requested.push_back((Block { index: 0, begin: 0, length: 16384 }, t0));
        assert_eq!(p.request_depth(t0 + SNUB_AFTER), 1, "a peer that stopped delivering gets one request at a time");
    }
}
