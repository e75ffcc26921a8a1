//! `toybt leech FILE.torrent|MAGNET [-o DIR]`: download into DIR/NAME, verifying every piece, then keep seeding.
//! From a magnet link the metadata is fetched from peers first (BEP 9), and kept as DIR/.HASH.torrent so a restart
//! starts like a .torrent download.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::select::Selection;
use super::swarm::{self, SWARM_OPTIONS_HELP, SessionPlan, SwarmOptions};
use crate::error::{Error, Result};
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::resume;
use crate::storage::{OpenMode, Storage};
use crate::torrent::fetch::{Fetch, Start};
use crate::torrent::{Builder, Session, Torrent};

const HELP: &str = "\
toybt leech - download a torrent, verify every piece, then seed it

Usage:
  toybt leech FILE.torrent [-o DIR] [options]
  toybt leech 'magnet:?xt=urn:btih:HASH[&dn=NAME][&tr=URL]...[&x.pe=HOST:PORT]...' [-o DIR] [options]

The content is written to DIR/NAME. A resume record (DIR/NAME.toybt) lets a restarted download continue
where it stopped without hashing again. From a magnet link, the torrent's metadata is first fetched from
peers (the link's x.pe peers, --peer, its trackers and the DHT), checked against the info hash, and kept as
DIR/.HASH.torrent, so a restart needs no peer for it.

Options:
  -o, --output DIR       folder to download into (default: the current folder)
  --seed-time SECS       after the download, seed this long and exit (0: exit as soon as it is complete
                         and the tracker has been told); default: seed until interrupted
  --select LIST          download only these files, e.g. 1,3-5: numbered from 1 in the order `toybt info`
                         lists them (padding files count), as aria2's --select-file. Other files are not
                         created, except to hold the bytes of pieces they share with a selected file; the
                         download is complete, and the tracker told, once the selected files are. A later
                         run with another list keeps what is there. A bad list or a number past the last
                         file exits 2 (from a magnet link, numbers are checked once the metadata is in, and
                         one past the last file then ends the run with exit 1)
";

pub fn run(mut args: pico_args::Arguments) -> Result<()> {
    if args.contains(["-h", "--help"]) {
        print!("{HELP}{SWARM_OPTIONS_HELP}");
        return Ok(());
    }
    let opts = SwarmOptions::parse(&mut args)?;
    let dir: PathBuf = args.opt_value_from_str(["-o", "--output"])?.unwrap_or_else(|| PathBuf::from("."));
    let seed_time: Option<u64> = args.opt_value_from_str("--seed-time")?;
    let select: Option<String> = args.opt_value_from_str("--select")?;
    let select = select.as_deref().map(Selection::parse).transpose()?;
    let what: String =
        args.free_from_str().map_err(|_| Error::usage("give the .torrent file or magnet link to download"))?;
    super::finish(args)?;
    let seed_time = seed_time.map(Duration::from_secs);

    if what.starts_with("magnet:") {
        let magnet = Magnet::parse(&what).map_err(|e| Error::bad_input(format!("bad magnet link: {e}")))?;
        let kept = kept_torrent(&dir, &magnet.info_hash);
        if let Ok(meta) = Metainfo::load(&kept)
            && meta.info_hash == magnet.info_hash
        {
            log::info!("metadata from {} (kept from an earlier run)", kept.display());
            let mut opts = opts;
            opts.peers.extend(magnet.peer_addrs());
            return swarm::run_session(plan_selected(meta, &dir, opts, seed_time, select.as_ref())?);
        }
        return run_magnet(magnet, dir, opts, seed_time, select);
    }
    let meta = Metainfo::load(Path::new(&what))?;
    swarm::run_session(plan_selected(meta, &dir, opts, seed_time, select.as_ref())?)
}

/// Where the metadata fetched for a magnet link is kept: beside the content, named by the info hash (the name is
/// not known before the metadata), hidden like the resume record's companions.
fn kept_torrent(dir: &Path, info_hash: &[u8; 20]) -> PathBuf {
    let hex: String = info_hash.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!(".{hex}.torrent"))
}

/// A download from a magnet link: fetch the metadata, keep it, then download as from a .torrent file.
fn run_magnet(
    magnet: Magnet,
    dir: PathBuf,
    opts: SwarmOptions,
    seed_time: Option<Duration>,
    select: Option<Selection>,
) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::bad_input(format!("{}: not a folder", dir.display())));
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), &e))?;
    let start_opts = opts.clone();
    let dht_state = opts.dht.state_file();
    swarm::run_loop(dht_state.as_deref(), move || {
        let (reactor, _) = swarm::start_loop(&start_opts, |reactor, port| {
            let cfg = swarm::session_config(&opts, port, seed_time);
            let peer_id = cfg.peer_id;
            let start = Start {
                info_hash: magnet.info_hash,
                trackers: magnet.trackers.clone(),
                peers: magnet.peer_addrs().into_iter().chain(opts.peers.iter().copied()).collect(),
            };
            let fetch = Fetch::new(start, cfg, Instant::now());
            swarm::resolve_trackers(reactor, fetch.tracker_urls());
            let build: Builder = Box::new(move |meta: Metainfo, bytes: Vec<u8>| {
                let kept = kept_torrent(&dir, &meta.info_hash);
                if let Err(e) = resume::write_atomic(&kept, &bytes) {
                    log::warn!("cannot keep the metadata in {}: {e}", kept.display());
                }
                log::info!("downloading {} ({} bytes, {} pieces)", meta.name, meta.total_length, meta.piece_count());
                let plan = plan_selected(meta, &dir, opts.clone(), seed_time, select.as_ref())?;
                let mut cfg = swarm::session_config(&opts, port, seed_time);
                cfg.peer_id = peer_id;
                cfg.resume = plan.resume;
                let mut torrent = Torrent::new(plan.meta, plan.storage, plan.have, cfg, Instant::now())?;
                torrent.add_peer_addrs(opts.peers.iter().copied());
                Ok(torrent)
            });
            reactor.services.add_session(Session::metadata(fetch, build));
            Ok(())
        })?;
        Ok(reactor)
    })
}

/// Opens (creating as needed) DIR/NAME for download and finds what is already verified there.
pub fn plan(meta: Metainfo, dir: &Path, opts: SwarmOptions, seed_time: Option<Duration>) -> Result<SessionPlan> {
    plan_selected(meta, dir, opts, seed_time, None)
}

/// `plan` for the files in `select` only (all with `None`); a file number past the torrent's files is a usage error.
pub fn plan_selected(
    meta: Metainfo,
    dir: &Path,
    opts: SwarmOptions,
    seed_time: Option<Duration>,
    select: Option<&Selection>,
) -> Result<SessionPlan> {
    let wanted = match select {
        Some(s) => s.resolve(meta.files.len())?,
        None => vec![true; meta.files.len()],
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Error::bad_input(format!(
            "{}: not a folder (-o names the folder to download into)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), &e))?;
    let content = swarm::content_in(dir, &meta);
    // Something of the other kind in the way: say so rather than fail on the first file inside it.
    if content.exists() && meta.multi_file != content.is_dir() {
        let want = if meta.multi_file { "a folder" } else { "a file" };
        return Err(Error::bad_input(format!("{}: is in the way, the torrent describes {want}", content.display())));
    }
    let stamps = swarm::file_stamps(&meta, &content);
    let mut storage = Storage::open_selected(&meta, content.clone(), OpenMode::Leech, &wanted)?;
    let record = swarm::record_location(crate::state_dir::state_dir().as_deref(), &meta, &content);
    let (have, keeper) = swarm::check_data(&meta, &mut storage, record, &stamps, opts.recheck);
    Ok(SessionPlan { meta, storage, have, opts, seed_time, resume: Some(keeper), tracker_port: None })
}
