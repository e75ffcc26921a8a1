//! Verified pieces a disk worker thread holds back so that neighbours are written with one call.
//!
//! Why. On this VM each write is a request to the virtual device and an exit to the hypervisor: 1 GiB written by
//! `dd oflag=direct` 256 KiB at a time cost 0.22–0.33 s of system time, 4 MiB at a time 0.05–0.09 s. The picker
//! starts neighbouring pieces together (`Picker::with_neighbours`), each peer its own extent, so a torrent's pieces
//! come to the worker as a few interleaved runs of neighbours; each is held until it is `RUN_BYTES` long or its
//! next piece is not being received, and then written with one `pwritev` (`Storage::write_run`).
//!
//! Bounds. At most `MAX_RUNS` runs and `MAX_HELD_BYTES` are held (the oldest run is written to make room), and no
//! run waits longer than `RUN_WAIT`. The session counts held pieces as unwritten, so they also count against its
//! bound on data waiting for the disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DiskDone, Owner, send_reports};
use crate::storage::PieceBytes;

/// The most piece data written with one call: an extent of neighbouring pieces the picker starts together.
const RUN_BYTES: usize = crate::picker::EXTENT_BYTES as usize;
/// Runs held at once, over every torrent of the thread: about one per peer sending neighbours.
const MAX_RUNS: usize = 8;
/// Bytes held at once, over every run: half the bound a session puts on its data waiting for the disk, so holding
/// never stops a session reading from its peers.
const MAX_HELD_BYTES: usize = 2 << 20;
/// How long a run waits for its next piece: pieces of a fast download come a fraction of a millisecond apart; a
/// slow one's pieces are written at most this much later than they would be one by one.
const RUN_WAIT: Duration = Duration::from_millis(5);

/// A verified piece that `Storage::write_run` may write together with its neighbours.
pub struct Verified {
    pub index: u32,
    pub data: PieceBytes,
    /// Where its bytes go (`Storage::direct_span`).
    pub file: usize,
    pub offset: u64,
    /// The next piece is being received, so it may join this one's run.
    pub next_coming: bool,
}

/// Neighbouring verified pieces of one torrent, in index order, waiting to be written together.
struct Run {
    owner: Owner,
    pieces: Vec<(u32, PieceBytes)>,
    bytes: usize,
    /// The piece that may join next, and where its bytes must go (file, offset).
    next: (u32, usize, u64),
    since: Instant,
}

/// The runs a worker thread holds, oldest first.
#[derive(Default)]
pub struct Runs {
    runs: Vec<Run>,
    bytes: usize,
}

impl Runs {
    /// Holds a verified piece, joined to the run it follows if there is one, and writes whatever must not wait any
    /// longer.
    pub fn hold(&mut self, now: Instant, owner: &Owner, piece: Verified) {
        let Verified { index, data, file, offset, next_coming } = piece;
        let len = data.len();
        let next = (index + 1, file, offset + len as u64);
        let joins = |r: &Run| {
            Arc::ptr_eq(&r.owner.desk, &owner.desk) && r.next == (index, file, offset) && r.bytes + len <= RUN_BYTES
        };
        let at = match self.runs.iter().position(joins) {
            Some(at) => at,
            None => {
                if self.runs.len() == MAX_RUNS {
                    self.write_at(0);
                }
                self.runs.push(Run { owner: owner.clone(), pieces: Vec::new(), bytes: 0, next, since: now });
                self.runs.len() - 1
            }
        };
        let run = &mut self.runs[at];
        run.pieces.push((index, data));
        run.bytes += len;
        run.next = next;
        self.bytes += len;
        if !next_coming || run.bytes + len > RUN_BYTES {
            self.write_at(at);
        }
        while self.bytes > MAX_HELD_BYTES && !self.runs.is_empty() {
            self.write_at(0);
        }
    }

    /// How long until the oldest run must be written; `None` when nothing is held.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        self.runs.first().map(|r| (r.since + RUN_WAIT).saturating_duration_since(now))
    }

    /// Writes the runs that have waited `RUN_WAIT`.
    pub fn write_stale(&mut self, now: Instant) {
        while self.runs.first().is_some_and(|r| now.saturating_duration_since(r.since) >= RUN_WAIT) {
            self.write_at(0);
        }
    }

    /// Writes the runs of `owner`'s torrent: before its other jobs, so that a record's fsync covers them.
    pub fn write_torrent(&mut self, owner: &Owner) {
        while let Some(at) = self.runs.iter().position(|r| Arc::ptr_eq(&r.owner.desk, &owner.desk)) {
            self.write_at(at);
        }
    }

    pub fn write_all(&mut self) {
        while !self.runs.is_empty() {
            self.write_at(0);
        }
    }

    /// Writes run `at` and reports each of its pieces.
    fn write_at(&mut self, at: usize) {
        let Run { owner, pieces, bytes, .. } = self.runs.remove(at);
        self.bytes -= bytes;
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut desk = owner.desk.lock().ok()?;
            let slices: Vec<&[u8]> = pieces.iter().map(|(_, data)| &data[..]).collect();
            Some(desk.storage.write_run(pieces[0].0, &slices))
        }));
        match written {
            Ok(Some(results)) => {
                let reports = pieces.into_iter().zip(results).map(|((index, data), result)| DiskDone::Written {
                    index,
                    data,
                    result,
                });
                send_reports(&owner, reports);
            }
            // The desk is poisoned (a job panicked) or this write did: nothing more of this torrent is written.
            _ => send_reports(&owner, [DiskDone::Lost]),
        }
    }
}
