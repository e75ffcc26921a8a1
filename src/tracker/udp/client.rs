//! The announce client's UDP transport (BEP 15): [`UdpAnnounce`] is one announce (connect, then announce), and
//! [`UdpAnnouncer`] multiplexes every announce in flight over one socket, matching answers by tracker address and
//! transaction id, and keeps each tracker's connection id for the minute BEP 15 lets a client use it.
//!
//! A request not answered is sent again after 15 · 2^n seconds (n from 0, at most 8), and the whole announce fails
//! at the deadline the session gave (short when stopping, so a `stopped` announce never holds the exit).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::wire::{AnnounceRequest, Request, Response};
use crate::tracker::announce::{AnnounceParams, AnnounceResponse, Event, TrackerUrl};
use crate::tracker::registry;

/// A connection id is used for this long after it was received.
pub const CID_LIFETIME: Duration = Duration::from_secs(60);
/// The first retransmission delay; it doubles after each, up to 2^[`MAX_BACKOFF`] times this.
pub const RETRANSMIT: Duration = Duration::from_secs(15);
const MAX_BACKOFF: u32 = 8;
/// The deadline of an announce to a UDP tracker that has a fallback (another tracker in its tier or a later tier):
/// the request is sent, sent once more after [`RETRANSMIT`], and given up 5 s later, so a dead first tier costs
/// 20 s rather than the full announce timeout before the next tracker is tried.
pub const FALLBACK_TIMEOUT: Duration = Duration::from_secs(RETRANSMIT.as_secs() + 5);
/// Peers kept from one answer. A datagram holds up to (65507 - 20) / 6 = 10914 IPv4 peers whatever `num_want` said;
/// the session asks for 50 and dials a few dozen, so a flood of addresses from a hostile or careless tracker is cut
/// here rather than carried into the session's address book.
pub const MAX_PEERS: usize = 200;

type Outcome = Result<AnnounceResponse, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Announcing { connection_id: u64, since: Instant },
}

/// One announce to one UDP tracker: `handle_datagram(now, from, datagram) -> bool` (true: it was this one's),
/// `poll_datagram(now, out)`, `handle_timeout(now)`, `poll_timeout()`, then [`UdpAnnounce::take_result`].
#[derive(Debug)]
pub struct UdpAnnounce {
    tracker: SocketAddr,
    request: AnnounceRequest,
    state: State,
    transaction_id: u32,
    rng: u64,
    /// Retransmissions of the current request so far (the n of 15 · 2^n).
    attempt: u32,
    /// The connection id came from an earlier announce: if it goes unanswered, the tracker may have forgotten it
    /// (a restart changes its key), so the first retransmission asks for a new one.
    cached: bool,
    send_now: bool,
    resend_at: Option<Instant>,
    deadline: Instant,
    result: Option<Outcome>,
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

impl UdpAnnounce {
    /// An announce of `params` to the tracker at `tracker` (the resolved address of `url`, whose path and query go
    /// along as BEP 41 URL data), failing at `now + timeout`. `cached` is a connection id from this tracker and when
    /// it was received: used if still fresh. `seed` makes the transaction ids.
    pub fn new(
        now: Instant,
        tracker: SocketAddr,
        url: &TrackerUrl,
        params: &AnnounceParams,
        timeout: Duration,
        cached: Option<(u64, Instant)>,
        seed: u64,
    ) -> UdpAnnounce {
        let event = match params.event {
            None => registry::Event::Update,
            Some(Event::Started) => registry::Event::Started,
            Some(Event::Completed) => registry::Event::Completed,
            Some(Event::Stopped) => registry::Event::Stopped,
        };
        let request = AnnounceRequest {
            connection_id: 0,
            transaction_id: 0,
            info_hash: params.info_hash,
            peer_id: params.peer_id,
            downloaded: params.downloaded,
            left: params.left,
            uploaded: params.uploaded,
            event,
            ip: None,
            key: params.key,
            num_want: i32::try_from(params.numwant).unwrap_or(i32::MAX),
            port: params.port,
            url_data: url.path.as_bytes().to_vec(),
        };
        let state = match cached {
            Some((connection_id, since)) if now < since + CID_LIFETIME => State::Announcing { connection_id, since },
            _ => State::Connecting,
        };
        let cached = state != State::Connecting;
        let mut rng = seed | 1;
        let transaction_id = xorshift(&mut rng) as u32;
        UdpAnnounce {
            tracker,
            request,
            state,
            transaction_id,
            rng,
            attempt: 0,
            cached,
            send_now: true,
            resend_at: None,
            deadline: now + timeout,
            result: None,
        }
    }

    pub fn tracker(&self) -> SocketAddr {
        self.tracker
    }

    /// The connection id in use and when it was received, once there is one.
    pub fn connection(&self) -> Option<(u64, Instant)> {
        match self.state {
            State::Announcing { connection_id, since } => Some((connection_id, since)),
            State::Connecting => None,
        }
    }

    fn next_request(&mut self, state: State) {
        self.state = state;
        self.cached = false;
        self.transaction_id = xorshift(&mut self.rng) as u32;
        self.attempt = 0;
        self.send_now = true;
        self.resend_at = None;
    }

    /// A datagram from `from`; true if it answered this announce (right tracker, right transaction id).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> bool {
        if self.result.is_some() || !same_addr(from, self.tracker) {
            return false;
        }
        let v6 = self.tracker.ip().to_canonical().is_ipv6();
        let Ok(resp) = Response::decode(datagram, v6) else { return false };
        if resp.transaction_id() != self.transaction_id {
            return false;
        }
        match (resp, self.state) {
            (Response::Connect { connection_id, .. }, State::Connecting) => {
                self.next_request(State::Announcing { connection_id, since: now });
            }
            (Response::Announce { interval, leechers, seeders, peers, .. }, State::Announcing { .. }) => {
                self.result = Some(Ok(AnnounceResponse {
                    interval: Some(Duration::from_secs(interval.into())),
                    min_interval: None,
                    complete: Some(seeders.into()),
                    incomplete: Some(leechers.into()),
                    peers: peers.iter().filter(|p| p.port() != 0 && !p.ip().is_unspecified()).take(MAX_PEERS).collect(),
                    warning: None,
                }));
            }
            (Response::Error { message, .. }, _) => {
                let text = String::from_utf8_lossy(&message[..message.len().min(200)]).into_owned();
                self.result = Some(Err(format!("tracker failure: {text}")));
            }
            _ => return false,
        }
        true
    }

    /// Writes the request due, if one is, and says where it goes.
    pub fn poll_datagram(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
        if self.result.is_some() || !self.send_now {
            return None;
        }
        self.send_now = false;
        self.resend_at = Some(now + RETRANSMIT * (1 << self.attempt.min(MAX_BACKOFF)));
        let transaction_id = self.transaction_id;
        match self.state {
            State::Connecting => Request::Connect { transaction_id }.encode(out),
            State::Announcing { connection_id, .. } => {
                self.request.connection_id = connection_id;
                self.request.transaction_id = transaction_id;
                // The request is moved out and back so it is encoded without a copy.
                let r = Request::Announce(std::mem::replace(&mut self.request, empty_request()));
                r.encode(out);
                if let Request::Announce(a) = r {
                    self.request = a;
                }
            }
        }
        Some(self.tracker)
    }

    /// Retransmits an unanswered request, or fails at the deadline; an early call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        if now >= self.deadline {
            self.result = Some(Err(format!("udp tracker {} did not answer", self.tracker)));
            return;
        }
        if self.resend_at.is_some_and(|at| now >= at) {
            match self.state {
                // BEP 15: a connection id past its minute is asked for again; so is a reused one that went unanswered.
                State::Announcing { since, .. } if self.cached || now >= since + CID_LIFETIME => {
                    self.next_request(State::Connecting)
                }
                _ => {
                    self.attempt += 1;
                    self.send_now = true;
                    self.resend_at = None;
                }
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        Some(self.resend_at.map_or(self.deadline, |at| at.min(self.deadline)))
    }

    /// The outcome, once: the tracker's answer, its error, or the time-out.
    pub fn take_result(&mut self) -> Option<Outcome> {
        self.result.take()
    }
}

fn empty_request() -> AnnounceRequest {
    AnnounceRequest {
        connection_id: 0,
        transaction_id: 0,
        info_hash: [0; 20],
        peer_id: [0; 20],
        downloaded: 0,
        left: 0,
        uploaded: 0,
        event: registry::Event::Update,
        ip: None,
        key: 0,
        num_want: 0,
        port: 0,
        url_data: Vec::new(),
    }
}

/// Every UDP announce in flight, for any session, over one socket. `map_v4`: the socket is IPv6 (dual stack), so
/// IPv4 trackers are written to as IPv4-mapped addresses.
#[derive(Debug)]
pub struct UdpAnnouncer {
    inflight: Vec<([u8; 20], UdpAnnounce)>,
    /// Connection ids by tracker, with when they were received.
    cids: HashMap<SocketAddr, (u64, Instant)>,
    rng: u64,
    done: VecDeque<([u8; 20], Outcome)>,
    map_v4: bool,
}

impl UdpAnnouncer {
    pub fn new(seed: u64, map_v4: bool) -> UdpAnnouncer {
        UdpAnnouncer { inflight: Vec::new(), cids: HashMap::new(), rng: seed | 1, done: VecDeque::new(), map_v4 }
    }

    /// Starts an announce for the session `info_hash`; its outcome comes out of [`UdpAnnouncer::poll_done`].
    pub fn start(
        &mut self,
        now: Instant,
        info_hash: [u8; 20],
        tracker: SocketAddr,
        url: &TrackerUrl,
        params: &AnnounceParams,
        timeout: Duration,
    ) {
        let tracker = SocketAddr::new(tracker.ip().to_canonical(), tracker.port());
        if !self.map_v4 && tracker.is_ipv6() {
            let e = format!("udp tracker {tracker} is IPv6 and this host has no IPv6 socket");
            self.done.push_back((info_hash, Err(e)));
            return;
        }
        let cached = self.cids.get(&tracker).copied();
        let seed = xorshift(&mut self.rng);
        self.inflight.push((info_hash, UdpAnnounce::new(now, tracker, url, params, timeout, cached, seed)));
    }

    /// True when the socket is IPv6 (dual stack) and IPv4 trackers are reached by mapped addresses.
    pub fn maps_v4(&self) -> bool {
        self.map_v4
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        for (_, a) in &mut self.inflight {
            if a.handle_datagram(now, from, datagram) {
                break;
            }
        }
        self.reap();
    }

    pub fn poll_datagram(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
        let to = self.inflight.iter_mut().find_map(|(_, a)| a.poll_datagram(now, out))?;
        Some(match to.ip() {
            IpAddr::V4(ip) if self.map_v4 => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), to.port()),
            _ => to,
        })
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for (_, a) in &mut self.inflight {
            a.handle_timeout(now);
        }
        self.reap();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.inflight.iter().filter_map(|(_, a)| a.poll_timeout()).min()
    }

    /// The next finished announce: which session, and its outcome.
    pub fn poll_done(&mut self) -> Option<([u8; 20], Outcome)> {
        self.done.pop_front()
    }

    /// Moves finished announces to `done`, remembering the connection ids they got.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.inflight.len() {
            let a = &mut self.inflight[i].1;
            if let Some(c) = a.connection() {
                self.cids.insert(a.tracker(), c);
            }
            match a.take_result() {
                Some(outcome) => {
                    let (hash, _) = self.inflight.swap_remove(i);
                    self.done.push_back((hash, outcome));
                }
                None => i += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests;
