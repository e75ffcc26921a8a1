//! BEP 6's allowed-fast set: the few pieces a peer may fetch from us while we choke it, so a newcomer with nothing to
//! trade gets its first pieces without waiting for an optimistic unchoke. The set is a pure function of the peer's
//! address (its /24) and the torrent, so every client offering k pieces to the same peer offers the same k.

use std::net::Ipv4Addr;

/// Pieces in the set we offer (BEP 6's suggestion; libtorrent uses the same).
pub const ALLOWED_FAST_COUNT: u32 = 10;

/// The first `k` pieces of the canonical allowed-fast sequence for a peer at `ip` in a torrent of `piece_count`
/// pieces (fewer when the torrent has fewer pieces).
pub fn allowed_fast_set(ip: Ipv4Addr, info_hash: &[u8; 20], piece_count: u32, k: u32) -> Vec<u32> {
    let k = k.min(piece_count) as usize;
    let mut set = Vec::with_capacity(k);
    let mut x = Vec::with_capacity(24);
    x.extend_from_slice(&(u32::from(ip) & 0xFFFF_FF00).to_be_bytes());
    x.extend_from_slice(info_hash);
    while set.len() < k {
        let digest = crate::sha1::digest(&x);
        for chunk in digest.chunks_exact(4) {
            if set.len() == k {
                break;
            }
            let y = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let index = y % piece_count;
            if !set.contains(&index) {
                set.push(index);
            }
        }
        x.clear();
        x.extend_from_slice(&digest);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_examples_of_bep_6() {
        let ip = Ipv4Addr::new(80, 4, 4, 200);
        let hash = [0xAA; 20];
        assert_eq!(allowed_fast_set(ip, &hash, 1313, 7), [1059, 431, 808, 1217, 287, 376, 1188]);
        assert_eq!(allowed_fast_set(ip, &hash, 1313, 9), [1059, 431, 808, 1217, 287, 376, 1188, 353, 508]);
        assert_eq!(allowed_fast_set(Ipv4Addr::new(80, 4, 4, 1), &hash, 1313, 7)[..2], [1059, 431], "same /24");
    }

    #[test]
    fn a_small_torrent_gets_every_piece_and_never_loops() {
        let mut set = allowed_fast_set(Ipv4Addr::LOCALHOST, &[1; 20], 3, ALLOWED_FAST_COUNT);
        set.sort_unstable();
        assert_eq!(set, [0, 1, 2]);
        assert!(allowed_fast_set(Ipv4Addr::LOCALHOST, &[1; 20], 0, ALLOWED_FAST_COUNT).is_empty());
    }
}
