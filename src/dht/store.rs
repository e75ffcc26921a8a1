//! The peers other nodes announced to us (`announce_peer`), served to `get_peers`. Bounded every way a stranger can
//! push on it: peers per info hash (the oldest gives way), number of info hashes (new ones are refused when full),
//! and age (a peer not re-announced for 30 minutes is forgotten).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::id::Id;

pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);
pub const MAX_PEERS_PER_HASH: usize = 100;
pub const MAX_HASHES: usize = 2000;

#[derive(Debug, Default)]
pub struct PeerStore {
    /// Per info hash, peers with the time of their last announce, oldest first.
    by_hash: HashMap<Id, Vec<(SocketAddrV4, Instant)>>,
    peers: usize,
}

impl PeerStore {
    /// Records `peer` for `info_hash`; false when the store holds too many info hashes to take a new one.
    pub fn add(&mut self, now: Instant, info_hash: Id, peer: SocketAddrV4) -> bool {
        if !self.by_hash.contains_key(&info_hash) && self.by_hash.len() >= MAX_HASHES {
            return false;
        }
        let list = self.by_hash.entry(info_hash).or_default();
        if let Some(i) = list.iter().position(|(p, _)| *p == peer) {
            list.remove(i);
            self.peers -= 1;
        } else if list.len() >= MAX_PEERS_PER_HASH {
            list.remove(0);
            self.peers -= 1;
        }
        list.push((peer, now));
        self.peers += 1;
        true
    }

    /// Up to `max` peers of `info_hash`, the most recently announced first.
    pub fn peers(&self, info_hash: &Id, max: usize) -> Vec<SocketAddrV4> {
        self.by_hash.get(info_hash).map_or_else(Vec::new, |l| l.iter().rev().take(max).map(|(p, _)| *p).collect())
    }

    /// Forgets peers older than [`PEER_TTL`] and info hashes left without peers.
    pub fn expire(&mut self, now: Instant) {
        let mut removed = 0;
        self.by_hash.retain(|_, list| {
            let before = list.len();
            list.retain(|(_, at)| now.saturating_duration_since(*at) < PEER_TTL);
            removed += before - list.len();
            !list.is_empty()
        });
        self.peers -= removed;
    }

    /// Peers stored, over all info hashes.
    pub fn len(&self) -> usize {
        self.peers
    }

    pub fn is_empty(&self) -> bool {
        self.peers == 0
    }

    pub fn hashes(&self) -> usize {
        self.by_hash.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u32) -> SocketAddrV4 {
        SocketAddrV4::new((0x0a00_0000 + n).into(), 6881)
    }

    #[test]
    fn announced_peers_come_back_newest_first_without_duplicates() {
        let now = Instant::now();
        let mut s = PeerStore::default();
        assert!(s.add(now, [1; 20], peer(1)));
        assert!(s.add(now, [1; 20], peer(2)));
        assert!(s.add(now, [1; 20], peer(1)));
        assert_eq!(s.peers(&[1; 20], 10), vec![peer(1), peer(2)]);
        assert_eq!(s.peers(&[1; 20], 1), vec![peer(1)]);
        assert_eq!(s.peers(&[2; 20], 10), vec![]);
        assert_eq!((s.len(), s.hashes()), (2, 1));
    }

    #[test]
    fn a_full_hash_drops_its_oldest_peer() {
        let now = Instant::now();
        let mut s = PeerStore::default();
        for n in 0..MAX_PEERS_PER_HASH as u32 + 5 {
            assert!(s.add(now, [1; 20], peer(n)));
        }
        assert_eq!(s.len(), MAX_PEERS_PER_HASH);
        let all = s.peers(&[1; 20], usize::MAX);
        assert!(!all.contains(&peer(4)) && all.contains(&peer(5)));
    }

    #[test]
    fn new_hashes_are_refused_when_the_store_is_full() {
        let now = Instant::now();
        let mut s = PeerStore::default();
        for n in 0..MAX_HASHES as u32 {
            let mut h = [0; 20];
            h[..4].copy_from_slice(&n.to_be_bytes());
            assert!(s.add(now, h, peer(n)));
        }
        assert!(!s.add(now, [0xff; 20], peer(1)));
        assert!(s.add(now, [0; 20], peer(7)), "a known hash still takes peers");
        assert_eq!(s.hashes(), MAX_HASHES);
    }

    #[test]
    fn peers_expire_after_30_minutes() {
        let now = Instant::now();
        let mut s = PeerStore::default();
        s.add(now, [1; 20], peer(1));
        s.add(now + Duration::from_secs(600), [1; 20], peer(2));
        s.add(now, [2; 20], peer(3));
        s.expire(now + PEER_TTL);
        assert_eq!(s.peers(&[1; 20], 10), vec![peer(2)]);
        assert_eq!((s.len(), s.hashes()), (1, 1));
        s.expire(now + PEER_TTL + Duration::from_secs(600));
        assert!(s.is_empty());
    }
}
