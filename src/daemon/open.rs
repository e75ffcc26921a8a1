//! Builds a torrent's session from what the daemon knows of it: the metainfo and its download folder (a data
//! session whose resume record lives in the state folder), or a magnet link (a metadata session that saves the
//! .torrent to the store once fetched and then becomes a data session).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::store::Store;
use crate::cli::swarm;
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::storage::{OpenMode, Storage};
use crate::torrent::fetch::{Fetch, Start};
use crate::torrent::{Builder, Config, Session, Torrent};

/// Per file of `meta` (`Metainfo::files` order): selected for download, every file but those in `unwanted`.
pub fn wanted_files(meta: &Metainfo, unwanted: &[usize]) -> Vec<bool> {
    (0..meta.files.len()).map(|i| !unwanted.contains(&i)).collect()
}

/// Opens (creating as needed) DIR/NAME and finds what is verified there: the resume record at `record` is trusted
/// where the files still match it, unless `recheck` asks for every piece to be hashed again. Files in `unwanted`
/// (indices into `Metainfo::files`) are not created and their pieces not fetched.
#[allow(clippy::too_many_arguments)]
pub fn data_torrent(
    meta: Metainfo,
    dir: &Path,
    record: PathBuf,
    unwanted: &[usize],
    recheck: bool,
    mut cfg: Config,
    now: Instant,
) -> Result<Torrent, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let content = swarm::content_in(dir, &meta);
    if content.exists() && meta.multi_file != content.is_dir() {
        let want = if meta.multi_file { "a folder" } else { "a file" };
        return Err(format!("{}: is in the way, the torrent describes {want}", content.display()));
    }
    let stamps = swarm::file_stamps(&meta, &content);
    let wanted = wanted_files(&meta, unwanted);
    let mut storage = Storage::open_selected(&meta, content, OpenMode::Leech, &wanted).map_err(|e| e.to_string())?;
    let (have, keeper) = swarm::check_data(&meta, &mut storage, record, &stamps, recheck);
    cfg.resume = Some(keeper);
    Torrent::new(meta, storage, have, cfg, now).map_err(|e| e.to_string())
}

/// A torrent's share of the daemon's global limits: connections, and bytes per second up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    pub peers: usize,
    pub up: Option<u64>,
    pub down: Option<u64>,
}

/// A session that first fetches the metadata of `magnet` from peers, keeps it in `store`, then downloads into `dir`
/// within `shares` from its first request.
pub fn magnet_session(
    magnet: &Magnet,
    dir: PathBuf,
    store: Store,
    cfg: Config,
    shares: Shares,
    now: Instant,
) -> Session {
    let start = Start { info_hash: magnet.info_hash, trackers: magnet.trackers.clone(), peers: magnet.peer_addrs() };
    let fetch = Fetch::new(start, cfg.clone(), now);
    let build: Builder = Box::new(move |meta: Metainfo, bytes: Vec<u8>| {
        let hash = meta.info_hash;
        if let Err(e) = store.save_metainfo(&hash, &bytes) {
            log::warn!("cannot keep the metadata of {} in the state folder: {e}", meta.name);
        }
        log::info!("metadata of {} arrived ({} bytes, {} pieces)", meta.name, meta.total_length, meta.piece_count());
        let now = Instant::now();
        // Files deselected before a restart (the record is kept in the store as the RPC changes it).
        let unwanted = store.load_record(&hash).map(|r| r.unwanted).unwrap_or_default();
        let mut t = data_torrent(meta, &dir, store.resume_path(&hash), &unwanted, false, cfg, now)
            .map_err(crate::error::Error::runtime)?;
        t.set_shares(now, shares.peers, shares.up, shares.down);
        Ok(t)
    });
    Session::metadata(fetch, build)
}
