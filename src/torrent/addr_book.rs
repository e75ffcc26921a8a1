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
    /// overrides the wait after an earlier failure. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is kept as the IPv4
    /// address it is, so one peer is one entry whichever way it was heard of.
    pub fn add(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        for addr in addrs {
            let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
            if self.is_ours(addr)
                || addr.port() == 0
                || (self.addrs.len() >= MAX_KNOWN_ADDRS && !self.addrs.contains_key(&addr))
            {
                continue;
            }
            self.addrs.entry(addr).or_default().retry_at = None;
        }
    }

    /// Whether `addr` (canonical) is our own listener: our port on a loopback address (127.0.0.0/8, `::1`) or on an
    /// unspecified one (`0.0.0.0`, `::`), which a tracker or PEX may hand back to us. Our listener, on `::`, takes
    /// both families, and on `::1` or `127.0.0.1` only that one; either way the address leads back to us.
    fn is_ours(&self, addr: SocketAddr) -> bool {
        addr.port() == self.listen_port && (addr.ip().is_loopback() || addr.ip().is_unspecified())
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

    /// When the next address may be dialled: the earliest end of a wait after a failure or a close, or `at_once` (a
    /// moment already past) for an address never tried. `None` when there is none to dial.
    pub fn next_dial(&self, complete: bool, at_once: Instant) -> Option<Instant> {
        self.addrs
            .values()
            .filter(|s| !(s.connected || s.banned || (complete && s.seed)))
            .map(|s| s.retry_at.unwrap_or(at_once))
            .min()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn due(book: &mut AddrBook) -> Vec<SocketAddr> {
        let mut got = book.take_due(Instant::now(), 100, false);
        got.sort();
        got
    }

    #[test]
    fn our_own_address_is_never_dialled_in_either_family() {
        let mut book = AddrBook::new(6881);
        book.add([
            "127.0.0.1:6881".parse().unwrap(),
            "127.0.1.1:6881".parse().unwrap(),
            "0.0.0.0:6881".parse().unwrap(),
            "[::1]:6881".parse().unwrap(),
            "[::]:6881".parse().unwrap(),
            "[::ffff:127.0.0.1]:6881".parse().unwrap(),
            "[::ffff:0.0.0.0]:6881".parse().unwrap(),
        ]);
        assert_eq!(due(&mut book), Vec::<SocketAddr>::new());
    }

    #[test]
    fn other_ports_on_this_machine_and_other_hosts_are_peers() {
        let mut book = AddrBook::new(6881);
        let peers: Vec<SocketAddr> = vec![
            "127.0.0.1:6882".parse().unwrap(),
            "192.0.2.7:6881".parse().unwrap(),
            "[::1]:6882".parse().unwrap(),
            "[2001:db8::7]:6881".parse().unwrap(),
        ];
        book.add(peers.iter().copied());
        let mut want = peers;
        want.sort();
        assert_eq!(due(&mut book), want);
    }

    #[test]
    fn a_mapped_address_is_the_ipv4_peer() {
        let mut book = AddrBook::new(6881);
        let v4 = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 51413));
        let mapped = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped(), 51413));
        book.add([mapped, v4]);
        assert_eq!(due(&mut book), vec![v4]);
        // A real IPv6 address is not folded into anything.
        let v6 = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7), 51413));
        book.add([v6]);
        assert_eq!(due(&mut book), vec![v6]);
    }

    #[test]
    fn port_zero_is_skipped() {
        let mut book = AddrBook::new(6881);
        book.add(["[::1]:0".parse().unwrap(), "10.0.0.1:0".parse().unwrap()]);
        assert!(due(&mut book).is_empty());
    }
}
