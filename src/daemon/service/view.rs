//! The RPC's view of the daemon's torrents: what `torrent-get`, the page and `/metrics` show of each, read from its
//! session when it runs and from its record when it is stopped.

use std::path::PathBuf;
use std::time::Instant;

use super::{Daemon, Entry, unix_now};
use crate::bitfield::Bitfield;
use crate::daemon::rpc::{FileView, Status, TorrentView, TrackerView};
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::reactor::Services;
use crate::torrent::Session;

impl Daemon {
    /// The RPC's view of one torrent.
    pub fn view(&self, e: &Entry, svc: &Services, now: Instant) -> TorrentView {
        let session = svc.torrents.get(&e.hash()).filter(|_| !self.leaving.contains(&e.hash()));
        let torrent = session.and_then(Session::torrent);
        let meta = e.meta.as_ref().or(torrent.map(|t| t.meta()));
        let check = self.checks.iter().position(|c| c.hash == e.hash());
        let have = self.have(e, svc);
        let have_bytes = match (meta, have) {
            (Some(m), Some(h)) => h.iter_ones().map(|i| u64::from(m.piece_size(i))).sum(),
            _ => 0,
        };
        let total = meta.map_or(0, |m| m.total_length);
        // With files deselected, "done" is the pieces that hold their bytes: what the session fetches.
        let wanted = meta.filter(|_| !e.record.unwanted.is_empty()).and_then(|m| wanted_pieces(m, &e.record.unwanted));
        let (size_when_done, have_wanted) = match (meta, &wanted) {
            (Some(m), Some(w)) => {
                let size = w.iter_ones().map(|i| u64::from(m.piece_size(i))).sum();
                let held =
                    have.map_or(0, |h| w.iter_ones().filter(|&i| h.get(i)).map(|i| u64::from(m.piece_size(i))).sum());
                (size, held)
            }
            _ => (total, have_bytes),
        };
        let snap = torrent.map(|t| t.snapshot());
        let (down, up) = snap.as_ref().map_or((0, 0), |s| (s.down_rate, s.up_rate));
        let left = size_when_done.saturating_sub(have_wanted);
        let status = match session {
            _ if check == Some(0) => Status::Check,
            _ if check.is_some() => Status::CheckWait,
            _ if e.record.stopped || session.is_none() => Status::Stopped,
            Some(_) if torrent.is_some_and(|t| t.is_complete()) => Status::Seed,
            Some(_) => Status::Download,
            None => Status::Stopped,
        };
        let (sending, getting) = torrent.map_or((0, 0), |t| t.peers_trading());
        let peers = match session {
            Some(Session::Data(t)) => t.peer_count(),
            _ => 0,
        };
        let error_string = match (&e.error, session.and_then(Session::failure)) {
            (e, _) if !e.is_empty() => e.clone(),
            (_, Some(why)) => why.to_string(),
            _ => torrent.and_then(|t| t.disk_error()).unwrap_or_default().to_string(),
        };
        let magnet_link = match (meta, &e.record.magnet) {
            (Some(m), _) => Magnet::from_meta(m).to_uri(),
            (None, Some(link)) => link.clone(),
            (None, None) => String::new(),
        };
        let files = match meta {
            Some(m) => file_views(m, have, &e.record.unwanted),
            None => Vec::new(),
        };
        let trackers = meta
            .map(|m| {
                m.tracker_tiers()
                    .into_iter()
                    .enumerate()
                    .flat_map(|(tier, urls)| urls.into_iter().map(move |announce| TrackerView { announce, tier }))
                    .collect()
            })
            .unwrap_or_default();
        let since_start = now.saturating_duration_since(self.started).as_secs();
        TorrentView {
            id: e.id,
            hash: e.hash(),
            name: e.name(),
            status,
            error: if error_string.is_empty() { 0 } else { 3 },
            error_string,
            download_dir: e.record.download_dir.to_string_lossy().into_owned(),
            total_size: total,
            size_when_done,
            left_until_done: left,
            have_valid: have_bytes,
            piece_count: meta.map_or(0, |m| u64::from(m.piece_count())),
            piece_size: meta.map_or(0, |m| u64::from(m.piece_length)),
            rate_download: down,
            rate_upload: up,
            uploaded_ever: torrent.map_or(0, |t| t.uploaded()),
            downloaded_ever: torrent.map_or(0, |t| t.downloaded()),
            corrupt_ever: torrent
                .map_or(0, |t| u64::from(t.hash_failures()) * meta.map_or(0, |m| m.piece_length as u64)),
            peers_connected: peers as u64,
            peers_sending_to_us: sending as u64,
            peers_getting_from_us: getting as u64,
            peer_limit: self.cfg.max_peers as u64,
            // -1: nothing left or not moving; -2: unknown (no metadata yet), as Transmission says.
            eta: match meta {
                None => -2,
                Some(_) if left == 0 || down == 0 => -1,
                Some(_) => (left / down) as i64,
            },
            is_private: meta.is_some_and(|m| m.private),
            // Transmission's "finished" is a seed ratio or idle limit reached; the daemon seeds until stopped.
            is_finished: false,
            metadata_percent_complete: if meta.is_some() { 1.0 } else { 0.0 },
            added_date: e.record.added,
            start_date: e.start_date,
            done_date: e.record.done,
            activity_date: if down + up > 0 { unix_now() } else { e.start_date },
            seconds_downloading: if status == Status::Download { since_start } else { 0 },
            seconds_seeding: if status == Status::Seed { since_start } else { 0 },
            comment: meta.and_then(|m| m.comment.clone()).unwrap_or_default(),
            creator: meta.and_then(|m| m.created_by.clone()).unwrap_or_default(),
            date_created: meta.and_then(|m| m.creation_date).map_or(0, |d| d.max(0) as u64),
            magnet_link,
            download_limit: e.record.download_limit.map(|b| b / 1024),
            upload_limit: e.record.upload_limit.map(|b| b / 1024),
            files,
            trackers,
        }
    }

    /// The pieces a torrent has verified: as its check found so far, its session holds, or its resume record says.
    pub fn have<'a>(&'a self, e: &'a Entry, svc: &'a Services) -> Option<&'a Bitfield> {
        if let Some(c) = self.checks.iter().find(|c| c.hash == e.hash()) {
            return Some(c.have());
        }
        let session = svc.torrents.get(&e.hash()).filter(|_| !self.leaving.contains(&e.hash()));
        session.and_then(Session::torrent).map(|t| t.have()).or(e.have_when_stopped.as_ref())
    }

    /// Is any torrent running (not stopped, with a session)?
    pub fn is_running(&self, e: &Entry, svc: &Services) -> bool {
        svc.torrents.contains_key(&e.hash()) && !self.leaving.contains(&e.hash())
    }
}

/// The pieces that hold bytes of a file (not padding) that is not in `unwanted`, as the session fetches them.
fn wanted_pieces(meta: &Metainfo, unwanted: &[usize]) -> Option<Bitfield> {
    let piece_len = u64::from(meta.piece_length);
    if piece_len == 0 {
        return None;
    }
    let mut bits = Bitfield::new(meta.piece_count());
    for (i, f) in meta.files.iter().enumerate() {
        if f.padding || f.length == 0 || unwanted.contains(&i) {
            continue;
        }
        for p in f.offset / piece_len..(f.offset + f.length).div_ceil(piece_len) {
            if p < u64::from(meta.piece_count()) {
                bits.set(p as u32);
            }
        }
    }
    Some(bits)
}

/// Each file's name (as Transmission gives it: under the torrent's name), length and verified bytes.
fn file_views(meta: &Metainfo, have: Option<&Bitfield>, unwanted: &[usize]) -> Vec<FileView> {
    let piece_len = u64::from(meta.piece_length);
    meta.files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.padding)
        .map(|(i, f)| {
            let mut done = 0;
            if let (Some(have), true) = (have, f.length > 0 && piece_len > 0) {
                let (start, end) = (f.offset, f.offset + f.length);
                for p in (start / piece_len)..end.div_ceil(piece_len) {
                    if have.get(p as u32) {
                        let (ps, pe) = (p * piece_len, (p + 1) * piece_len);
                        done += pe.min(end) - ps.max(start);
                    }
                }
            }
            let mut name = PathBuf::from(&meta.name);
            if meta.multi_file {
                name.extend(&f.path);
            }
            FileView {
                name: name.to_string_lossy().into_owned(),
                length: f.length,
                bytes_completed: done,
                wanted: !unwanted.contains(&i),
            }
        })
        .collect()
}
