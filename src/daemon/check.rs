//! `torrent-verify` without stalling the loop: every piece of a torrent is hashed again a slice at a time, between
//! the loop's other work, while the RPC shows the torrent as checking. At the end the resume record is rewritten
//! and the torrent's session is built from what the check found.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bitfield::Bitfield;
use crate::cli::swarm;
use crate::metainfo::Metainfo;
use crate::resume;
use crate::storage::{OpenMode, Storage};
use crate::torrent::{Config, Torrent};

/// Bytes hashed per turn of the loop: a few milliseconds of work, so peers and the RPC are served between slices.
pub const SLICE: u64 = 4 << 20;

pub struct Check {
    pub hash: [u8; 20],
    meta: Metainfo,
    storage: Storage,
    record: PathBuf,
    have: Bitfield,
    next: u32,
    /// Files a piece of which was read, so they are fsynced before the record vouches for them.
    read_files: Vec<bool>,
    scratch: Vec<u8>,
    started: Instant,
}

impl Check {
    /// Opens the torrent's data in `dir` for a full check, with the files in `unwanted` deselected (not created);
    /// its resume record goes to `record` at the end.
    pub fn new(meta: Metainfo, dir: &Path, record: PathBuf, unwanted: &[usize], now: Instant) -> Result<Check, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let wanted = super::open::wanted_files(&meta, unwanted);
        let storage = Storage::open_selected(&meta, swarm::content_in(dir, &meta), OpenMode::Leech, &wanted)
            .map_err(|e| e.to_string())?;
        Ok(Check {
            hash: meta.info_hash,
            have: Bitfield::new(meta.piece_count()),
            read_files: vec![false; meta.files.len()],
            meta,
            storage,
            record,
            next: 0,
            scratch: Vec::new(),
            started: now,
        })
    }

    /// Hashes pieces until about `budget` bytes were read; true once every piece is checked.
    pub fn step(&mut self, budget: u64) -> bool {
        let mut read = 0;
        while self.next < self.meta.piece_count() && read < budget {
            let index = self.next;
            match self.storage.verify_piece(index, &mut self.scratch) {
                Ok(true) => {
                    self.have.set(index);
                }
                Ok(false) => {}
                Err(e) => log::debug!("{} piece {index}: {e}", self.meta.name),
            }
            for span in self.storage.layout().piece_spans(index).into_iter().flatten().filter(|s| !s.padding) {
                self.read_files[span.file] = true;
            }
            read += u64::from(self.meta.piece_size(index));
            self.next += 1;
        }
        self.next == self.meta.piece_count()
    }

    /// Share of the pieces checked so far (0.0–1.0).
    pub fn progress(&self) -> f64 {
        match self.meta.piece_count() {
            0 => 1.0,
            n => f64::from(self.next) / f64::from(n),
        }
    }

    /// The pieces found good so far.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Writes the resume record for what was found and builds the torrent on it.
    pub fn finish(mut self, mut cfg: Config, now: Instant) -> Result<Torrent, String> {
        log::info!(
            "re-hashed {} piece(s) in {:.1}s; {} of {} verified ({})",
            self.next,
            now.saturating_duration_since(self.started).as_secs_f64(),
            self.have.count(),
            self.meta.piece_count(),
            self.meta.name
        );
        // What was read may be in the page cache only: durable before the record vouches for it.
        for (file, read) in self.read_files.iter().enumerate() {
            if *read && matches!(resume::stamp(self.storage.path(file)), Ok(Some(_))) {
                self.storage.mark_unsynced(file);
            }
        }
        let mut keeper = resume::Keeper::new(self.record, &self.meta, &self.storage);
        if let Err(e) = keeper.save(&mut self.storage, self.have.as_wire()) {
            log::warn!("{e}");
        }
        cfg.resume = Some(keeper);
        Torrent::new(self.meta, self.storage, self.have, cfg, now).map_err(|e| e.to_string())
    }
}
