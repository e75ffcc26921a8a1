//! `toybt leech FILE.torrent [-o DIR]`: download into DIR/NAME, verifying every piece, then keep seeding.

use std::path::PathBuf;
use std::time::Duration;

use super::swarm::{self, SWARM_OPTIONS_HELP, SessionPlan, SwarmOptions};
use crate::error::{Error, Result};
use crate::metainfo::Metainfo;
use crate::resume;
use crate::storage::{OpenMode, Storage};

const HELP: &str = "\
toybt leech - download a torrent, verify every piece, then seed it

Usage:
  toybt leech FILE.torrent [-o DIR] [options]

The content is written to DIR/NAME. A resume record (DIR/NAME.toybt) lets a restarted download continue
where it stopped without hashing again.

Options:
  -o, --output DIR   folder to download into (default: the current folder)
  --seed-time SECS   after the download, seed this long and exit (0: exit as soon as it is complete
                     and the tracker has been told); default: seed until interrupted
";

pub fn run(mut args: pico_args::Arguments) -> Result<()> {
    if args.contains(["-h", "--help"]) {
        print!("{HELP}{SWARM_OPTIONS_HELP}");
        return Ok(());
    }
    let opts = SwarmOptions::parse(&mut args)?;
    let dir: PathBuf = args.opt_value_from_str(["-o", "--output"])?.unwrap_or_else(|| PathBuf::from("."));
    let seed_time: Option<u64> = args.opt_value_from_str("--seed-time")?;
    let torrent: PathBuf = args.free_from_str().map_err(|_| Error::usage("give the .torrent file to download"))?;
    super::finish(args)?;

    let meta = Metainfo::load(&torrent)?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), &e))?;
    let content = swarm::content_in(&dir, &meta);
    let stamps = swarm::file_stamps(&meta, &content);
    let mut storage = Storage::open(&meta, content.clone(), OpenMode::Leech)?;
    let record = resume::record_path(&content);
    let (have, keeper) = swarm::check_data(&meta, &mut storage, record, &stamps, opts.recheck);
    swarm::run_session(SessionPlan {
        meta,
        storage,
        have,
        opts,
        seed_time: seed_time.map(Duration::from_secs),
        resume: Some(keeper),
        tracker_port: None,
    })
}
