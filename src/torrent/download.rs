//! The download half of a session: interest, asking peers for blocks within one shared budget, taking blocks in,
//! handing whole pieces to the disk worker to verify and store, taking its verdicts and reports, blaming the peers behind a bad
//! piece, and giving up on the disk when it refuses.

use std::time::Instant;

use log::{debug, info, warn};

use super::Torrent;
use super::assembly::{Blame, Sender};
use crate::picker::{Block, BlockOutcome};
use crate::progress;
use crate::resume;
use crate::storage::{DiskDone, OpenMode};

/// Requests outstanding at all peers together, in 16 KiB blocks (a peer may still have `REQUESTS_ALWAYS_ALLOWED`
/// whatever the total). Blocks of pieces being filled are held in memory until the piece is whole, so this bounds a
/// download's memory with many peers (each peer's own depth is up to 250 blocks). 4 MiB per round trip is a full
/// loopback transfer (one peer alone reaches this depth), ~40 MB/s at 100 ms, far more on a LAN; at 512 blocks a
/// leech trading with 8 peers peaked at 16 MiB of memory, at 256 at 11 MiB, with the same swarm time.
pub(super) const MAX_REQUESTS_IN_FLIGHT: usize = 256;
/// Requests a peer may always have outstanding whatever the total, so a newcomer is never starved by fast peers
/// that hold the whole budget.
pub(super) const REQUESTS_ALWAYS_ALLOWED: usize = 8;
/// Verified piece data waiting for the disk worker past which the loop stops reading from peers until it catches up
/// (a read in progress may add a few pieces more). It bounds memory when the disk is slower than the network, and
/// is deep enough that a fast disk never makes the loop wait: see the README's Performance section.
pub(super) const MAX_UNWRITTEN: usize = 4 << 20;

impl Torrent {
    /// Whether this session fetches pieces at all: not after a disk error, and never into a seed's data, which is
    /// opened read-only (a seed with damaged pieces serves the rest; it does not repair the user's files).
    pub(super) fn downloads(&self) -> bool {
        self.disk_error.is_none() && self.storage.mode() == OpenMode::Leech
    }

    /// Interested in a peer exactly while it has a piece we lack; ask for blocks as soon as we may.
    pub(super) fn update_interest(&mut self, now: Instant, key: usize) {
        let interesting = self.downloads() && self.picker.is_interesting(key);
        let Some(peer) = self.peers.get_mut(&key) else { return };
        if peer.am_interested() != interesting {
            peer.set_interested(interesting);
            self.dirty.push(key);
        }
        self.request_more(now, key);
    }

    /// Tops up the peer's pipeline of our requests to its current depth.
    pub(super) fn request_more(&mut self, now: Instant, key: usize) {
        if !self.downloads() || self.stopping {
            return;
        }
        let Some(peer) = self.peers.get(&key) else { return };
        if peer.is_choking_us() || !peer.am_interested() {
            return;
        }
        let in_flight: usize = self.peers.values().map(|p| p.requests_out()).sum();
        let want = requests_to_add(peer.request_depth(now), peer.requests_out(), in_flight);
        let want = self.affordable_requests(now, want);
        if want == 0 {
            return;
        }
        let blocks = self.picker.pick(key, want, now);
        let Some(peer) = self.peers.get_mut(&key).filter(|_| !blocks.is_empty()) else { return };
        for b in blocks {
            peer.send_request(now, b);
        }
        self.dirty.push(key);
    }

    /// A block we asked `key` for arrived (the peer machine checked that much).
    pub(super) fn on_block(&mut self, now: Instant, key: usize, block: Block, data: &[u8], requested_at: Instant) {
        match self.picker.block_received(key, block) {
            BlockOutcome::Unrequested => {
                if let Some(p) = self.peers.get(&key) {
                    debug!("{}: unrequested block {}+{}", p.addr(), block.index, block.begin);
                }
                return;
            }
            BlockOutcome::Duplicate => return,
            BlockOutcome::New { piece_complete, cancels } => {
                let Some(peer) = self.peers.get_mut(&key) else { return };
                peer.block_accepted(now, block.length, requested_at);
                let sender = Sender { generation: peer.generation(), addr: peer.addr() };
                self.downloaded.add(u64::from(block.length));
                let piece_len = self.meta.piece_size(block.index) as usize;
                self.assembly.add_block(block.index, piece_len, block.begin, data, sender);
                for (other, b) in cancels {
                    if let Some(p) = self.peers.get_mut(&other) {
                        p.cancel_request(b);
                        self.dirty.push(other);
                    }
                }
                if piece_complete {
                    self.finish_piece(now, block.index);
                }
            }
        }
        self.request_more(now, key);
    }

    /// All blocks of a piece are in: hand it to the disk worker, which hashes it and writes it only if it matches
    /// (the verdict comes back in `disk_done`, which acts on it: the piece is ours once written, or its senders are
    /// blamed and it is fetched again). Until then the picker keeps the piece as fully received: nobody is asked for
    /// it again.
    pub(super) fn finish_piece(&mut self, now: Instant, index: u32) {
        let Some(buf) = self.assembly.take(index) else { return };
        let data = self.assembly.hand_over(index, buf);
        let next_coming = self.picker.is_receiving(index + 1);
        self.disk.write(index, data, next_coming);
        if self.paused_since.is_none() && self.input_paused() {
            self.paused_since = Some(now);
        }
    }

    /// The disk worker found piece `index` good: whoever sent a different block of an earlier, failed copy lied.
    fn piece_verified(&mut self, now: Instant, index: u32, good: &[u8]) {
        for liar in self.assembly.convict(index, good) {
            warn!("{}: sent a bad block of piece {index} (found once a good copy came in)", liar.addr);
            self.ban(now, liar, "sent a block that failed the hash check");
        }
    }

    /// The disk worker found piece `index` bad (and did not write it): blame its senders and fetch it again.
    fn piece_mismatched(&mut self, now: Instant, index: u32, buf: super::assembly::PieceBuf) {
        self.hash_failures += 1;
        self.picker.piece_failed(index);
        let blame = self.assembly.failed(index, &buf);
        let senders = match blame {
            Blame::Liar(_) => 1,
            Blame::Suspected(n) => n,
        };
        warn!("piece {index} failed its hash check (from {senders} peer(s)); fetching it again");
        if let Blame::Liar(liar) = blame {
            self.ban(now, liar, "sent data that failed the hash check");
        }
        self.assembly.recycle(buf);
    }

    /// Whether the loop should stop reading from peers: too much verified data waits for the disk.
    pub fn input_paused(&self) -> bool {
        self.disk.unwritten_bytes() >= MAX_UNWRITTEN
    }

    /// Has the disk worker wake the loop when it reports.
    pub fn set_disk_waker(&self, waker: &std::sync::Arc<mio::Waker>) {
        self.disk.set_waker(waker);
    }

    /// Takes the disk worker's reports; true if there were any. Peers whose reading was paused are woken once the
    /// backlog is below the bound again.
    pub fn disk_turn(&mut self, now: Instant) -> bool {
        let paused = self.input_paused();
        let mut any = false;
        while let Some(done) = self.disk.poll_done() {
            self.disk_done(now, done);
            any = true;
        }
        if any {
            self.after_disk_reports(now, paused);
        }
        any
    }

    /// Waits for every queued disk job and takes its report: on stopping, and in tests (which step sessions on a
    /// virtual clock and check the files afterwards), as if the worker were instant.
    pub(super) fn drain_disk(&mut self, now: Instant) -> bool {
        let paused = self.input_paused();
        let mut any = false;
        while let Some(done) = self.disk.wait_done() {
            self.disk_done(now, done);
            any = true;
        }
        if any {
            self.after_disk_reports(now, paused);
        }
        any
    }

    fn after_disk_reports(&mut self, now: Instant, was_paused: bool) {
        if was_paused && !self.input_paused() {
            self.dirty.extend(self.peers.keys().copied());
            if let Some(since) = self.paused_since.take() {
                self.disk_waits.0 += 1;
                self.disk_waits.1 += now.saturating_duration_since(since);
            }
        }
        self.check_finished(now);
    }

    /// One report of the disk worker: a piece written (ours now) or refused, or a resume record written.
    fn disk_done(&mut self, now: Instant, done: DiskDone) {
        match done {
            DiskDone::Written { index, data, result } => {
                let buf = self.assembly.returned(index, data);
                // A piece is written only once it matched its hash, so even a failed write vouches for the bytes.
                self.piece_verified(now, index, &buf.data);
                match result {
                    Ok(()) => {
                        let lacked = self.peers.values().any(|p| p.is_active() && !p.pieces().get(index));
                        self.assembly.keep_written(index, buf.data, lacked);
                        self.piece_done(now, index);
                    }
                    Err(e) => {
                        self.assembly.recycle(buf);
                        self.picker.piece_failed(index);
                        self.stop_downloading(format!("cannot store piece {index}: {e}"));
                    }
                }
            }
            DiskDone::Mismatch { index, data } => {
                let buf = self.assembly.returned(index, data);
                self.piece_mismatched(now, index, buf);
            }
            DiskDone::Saved(result) => {
                let recorded = self.saves_in_flight.pop_front().unwrap_or(0);
                match result {
                    Ok(()) => self.unrecorded_pieces = self.unrecorded_pieces.saturating_sub(recorded),
                    Err(e @ resume::SaveError::Sync(_)) => self.stop_downloading(e.to_string()),
                    Err(e) => warn!("{e}"),
                }
            }
            DiskDone::Lost => {
                self.saves_in_flight.clear();
                self.assembly.forget_handed_over();
                self.stop_downloading("the disk worker stopped; pieces queued for writing are lost".into());
            }
        }
    }

    fn piece_done(&mut self, now: Instant, index: u32) {
        self.fetched_pieces += 1;
        if self.fetched_pieces == 1 {
            // For whoever times a download's start (benches/magnet_compare.sh): the first piece fetched this run.
            info!("first piece verified ({index})");
        }
        self.picker.piece_verified(index);
        self.have_bytes += self.meta.piece_size(index) as u64;
        self.unrecorded_pieces += 1;
        let complete = self.is_complete();
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for k in keys {
            let Some(p) = self.peers.get_mut(&k) else { continue };
            if !p.is_active() {
                continue;
            }
            if complete && p.pieces().all() {
                self.close(now, k, "both sides are seeds");
                continue;
            }
            if !p.pieces().get(index) {
                p.send_have(index);
            }
            if p.am_interested() && !self.picker.is_interesting(k) {
                p.set_interested(false);
            }
            self.dirty.push(k);
        }
        if complete {
            self.on_complete(now);
        }
    }

    pub(super) fn on_complete(&mut self, now: Instant) {
        self.completed_at = Some(now);
        // A seed needs no piece buffers: a daemon's finished torrents hold none.
        self.assembly.drop_spares();
        // Slots were held by the rate peers gave us; a seed ranks by the rate they take.
        self.slot_freed(now);
        // Said before the flush: the last piece is verified now, and flushing GiBs just written can take seconds.
        info!("download complete: {}", self.meta.name);
        // Whether the disk worker kept up (README, Performance): how often, and how long, reading waited for it.
        let (pauses, waited) = self.disk_waits;
        info!("reading from peers waited for the disk {pauses} time(s), {:.2} s in all", waited.as_secs_f64());
        info!(
            "{}",
            progress::summary(
                self.downloaded.total(),
                self.uploaded.total(),
                now - self.started_at,
                self.hash_failures
            )
        );
        self.save_resume();
        self.schedule.completed(now);
        // With no seed time and no tracker to tell, the session ends now rather than at the next tick.
        self.check_finished(now);
    }

    /// The disk refused (full, read-only, failing): keep what is verified, keep seeding, stop asking for what we
    /// cannot store. Said once, at error level; a later run resumes once the cause is fixed.
    pub(super) fn stop_downloading(&mut self, why: String) {
        if self.disk_error.is_some() {
            debug!("{why}");
            return;
        }
        log::error!("{why}; downloading stops, seeding goes on");
        self.disk_error = Some(why);
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for k in keys {
            self.picker.peer_choked(k);
            if let Some(p) = self.peers.get_mut(&k) {
                p.drop_requests();
                p.set_interested(false);
            }
            self.dirty.push(k);
        }
    }

    /// Never again: the address is banned and its connection, if still open, closed.
    fn ban(&mut self, now: Instant, sender: Sender, why: &str) {
        self.addrs.ban(sender.addr);
        if let Some(key) = self.peers.iter().find(|(_, p)| p.generation() == sender.generation).map(|(k, _)| *k) {
            self.close(now, key, why);
        }
    }
}

/// How many requests to add at a peer that has `outstanding` of them, wants `depth`, while all peers together have
/// `in_flight`: its depth, within what is left of the shared budget, but never fewer than the always-allowed few.
pub(super) fn requests_to_add(depth: usize, outstanding: usize, in_flight: usize) -> usize {
    let budget_left = MAX_REQUESTS_IN_FLIGHT.saturating_sub(in_flight);
    let allowed = depth.min(REQUESTS_ALWAYS_ALLOWED.max(outstanding + budget_left));
    allowed.saturating_sub(outstanding)
}
