//! `toybt leech FILE.torrent [-o DIR]`: download into DIR/NAME, verifying every piece, then keep seeding.

use std::path::{Path, PathBuf};
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
  -o, --output DIR       folder to download into (default: the current folder)
  --seed-time SECS       after the download, seed this long and exit (0: exit as soon as it is complete
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
    swarm::run_session(plan(meta, &dir, opts, seed_time.map(Duration::from_secs))?)
}

/// Opens (creating as needed) DIR/NAME for download and finds what is already verified there.
pub fn plan(meta: Metainfo, dir: &Path, opts: SwarmOptions, seed_time: Option<Duration>) -> Result<SessionPlan> {
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
    let mut storage = Storage::open(&meta, content.clone(), OpenMode::Leech)?;
    let record = resume::record_path(&content);
    let (have, keeper) = swarm::check_data(&meta, &mut storage, record, &stamps, opts.recheck);
    Ok(SessionPlan { meta, storage, have, opts, seed_time, resume: Some(keeper), tracker_port: None })
}
