//! Where peers may be found, and whether to dial them: every address heard of (from `--peer`, a tracker, later PEX
//! and the DHT), its failures and back-off, and the bans. Bounded, so a hostile tracker cannot grow our memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Wait before dialling an address again after it failed or closed.
const REDIAL_AFTER: Duration = Duration::from_secs(30);
/// An address that failed this many times in a row is forgotten until a tracker mentions it again.
const MAX_DIAL_FAILURES: u32 = 5;
/// Cap on addresses remembered, so a hostile tracker cannot grow our memory.
const MAX_KNOWN_ADDRS: usize = 2000;

#[derive(Debug, Default)]
struct AddrState {
    connected: bool,
    /// The peer there had every piece: no use dialling it once we have them too.
    seed: bool,
    retry_at: Option<Instant>,
    failures: u32,
    banned: bool,
}

#[derive(Debug)]
pub struct AddrBook {
    addrs: HashMap<SocketAddr, AddrState>,
    /// Our own listening port: an address on this machine with it is us.
    listen_port: u16,
    /// Outgoing connects started and not yet finished.
    connecting: usize,
}

impl AddrBook {
    pub fn new(listen_port: u16) -> AddrBook {
        AddrBook { addrs: HashMap::new(), listen_port, connecting: 0 }
    }

    /// Addresses to try. Ourselves, port 0 and new addresses past the cap are skipped; fresh news of a known peer
    /// overrides the wait after an earlier failure.
    pub fn add(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        for addr in addrs {
            let ours = addr.port() == self.listen_port && (addr.ip().is_loopback() || addr.ip().is_unspecified());
            if ours || addr.port() == 0 || (self.addrs.len() >= MAX_KNOWN_ADDRS && !self.addrs.contains_key(&addr)) {
                continue;
            }
            self.addrs.entry(addr).or_default().retry_at = None;
        }
    }

    pub fn connecting(&self) -> usize {
        self.connecting
    }

    /// Up to `room` addresses to dial now, each marked as connecting. Once we are a seed (`complete`), addresses that
    /// were seeds are not worth a connection.
    pub fn take_due(&mut self, now: Instant, room: usize, complete: bool) -> Vec<SocketAddr> {
        let due: Vec<SocketAddr> = self
            .addrs
            .iter()
            .filter(|(_, s)| {
                let waiting = s.retry_at.is_some_and(|t| t > now);
                !(s.connected || s.banned || waiting || (complete && s.seed))
            })
            .map(|(a, _)| *a)
            .take(room)
            .collect();
        for addr in &due {
            if let Some(state) = self.addrs.get_mut(addr) {
                state.connected = true;
            }
        }
        self.connecting += due.len();
        due
    }

    /// A connection to or from `addr` is up.
    pub fn connected(&mut self, addr: SocketAddr, outbound: bool) {
        if outbound {
            self.connecting = self.connecting.saturating_sub(1);
        }
        if let Some(state) = self.addrs.get_mut(&addr) {
            state.connected = true;
            state.failures = 0;
        }
    }

    /// Our connect to `addr` failed: wait longer after each failure, forget the address after a few.
    pub fn connect_failed(&mut self, now: Instant, addr: SocketAddr) {
        self.connecting = self.connecting.saturating_sub(1);
        if let Some(state) = self.addrs.get_mut(&addr) {
            state.connected = false;
            state.failures += 1;
            state.retry_at = Some(now + REDIAL_AFTER * state.failures);
            if state.failures >= MAX_DIAL_FAILURES {
                self.addrs.remove(&addr);
            }
        }
    }

    /// The connection with `addr` closed; `was_seed` if the peer had every piece.
    pub fn closed(&mut self, now: Instant, addr: SocketAddr, was_seed: bool) {
        if let Some(state) = self.addrs.get_mut(&addr) {
            state.connected = false;
            state.seed = was_seed;
            state.retry_at = Some(now + REDIAL_AFTER);
        }
    }

    /// Every address not banned.
    pub fn known(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs.iter().filter(|(_, s)| !s.banned).map(|(a, _)| *a)
    }

    #[cfg(test)]
    pub fn is_banned(&self, addr: SocketAddr) -> bool {
        self.addrs.get(&addr).is_some_and(|s| s.banned)
    }

    /// Never dial `addr` again.
    pub fn ban(&mut self, addr: SocketAddr) {
        self.addrs.entry(addr).or_default().banned = true;
    }
}
