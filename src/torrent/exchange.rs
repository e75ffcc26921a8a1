//! Peer exchange (BEP 11): telling each peer, about once a minute, which peers joined and left the swarm since we
//! last told it, and taking in what peers tell us, within the address book's bounds. Never for a private torrent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;

use super::Torrent;
use crate::peer::Extension;
use crate::peer::pex::{Pex, flags};

/// The first PEX round comes this long after the session starts (peers have handshaken by then).
pub(super) const FIRST_PEX: Duration = Duration::from_secs(5);
/// Then one round a minute, as BEP 11 asks.
const PEX_EVERY: Duration = Duration::from_secs(60);

impl Torrent {
    /// Addresses a peer told us of: into the address book (which skips ourselves, port 0 and repeats, and is
    /// bounded), then dial within the usual limits.
    pub(super) fn on_pex(&mut self, now: Instant, key: usize, pex: Pex) {
        if !self.pex_allowed() || self.stopping {
            return;
        }
        if let Some(p) = self.peers.get(&key) {
            debug!("{}: PEX: {} added, {} dropped", p.addr(), pex.added.len(), pex.dropped.len());
        }
        self.addrs.add(pex.added.into_iter().map(|(addr, _)| addr));
        self.dial(now);
    }

    /// A PEX round, when due: every peer that speaks it hears what changed since it last heard from us.
    pub(super) fn exchange_peers(&mut self, now: Instant) {
        if now < self.next_pex || !self.pex_allowed() {
            return;
        }
        self.next_pex = now + PEX_EVERY;
        let swarm: Vec<(usize, SocketAddr, u8)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_active())
            .filter_map(|(&k, p)| {
                let flags = if p.pieces().all() { flags::SEED } else { 0 } | flags::REACHABLE;
                p.listen_addr().map(|a| (k, a, flags))
            })
            .collect();
        let keys: Vec<usize> = self.peers.iter().filter(|(_, p)| p.speaks(Extension::Pex)).map(|(&k, _)| k).collect();
        for key in keys {
            let others: Vec<(SocketAddr, u8)> =
                swarm.iter().filter(|(k, ..)| *k != key).map(|&(_, a, f)| (a, f)).collect();
            let Some(msg) = self.pex.entry(key).or_default().diff(&others) else { continue };
            if let Some(p) = self.peers.get_mut(&key)
                && p.send_extension(Extension::Pex, |id, out| msg.encode(id, out))
            {
                self.dirty.push(key);
            }
        }
    }
}
