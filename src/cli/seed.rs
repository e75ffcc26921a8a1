//! `toybt seed FILE.torrent PATH`: check the data at PATH against the torrent, then serve it to the swarm.

use std::path::PathBuf;

use log::{info, warn};

use super::swarm::{self, SWARM_OPTIONS_HELP, SessionPlan, SwarmOptions};
use crate::error::{Error, Result};
use crate::metainfo::Metainfo;
use crate::storage::{FileProblem, OpenMode, Storage};

const HELP: &str = "\
toybt seed - check local data against a torrent, then serve it

Usage:
  toybt seed FILE.torrent PATH [options]

PATH is the content itself: the file of a single-file torrent, or the top folder of a multi-file one.
Missing or damaged pieces are reported and the rest is served. A resume record beside PATH (PATH.toybt)
lets a restart skip the check when the files have not changed.

Options:
  --tracker-port N       also run the tracker for this torrent in this process, HTTP and UDP (BEP 15) on
                         port N (0: any free ports)
";

pub fn run(mut args: pico_args::Arguments) -> Result<()> {
    if args.contains(["-h", "--help"]) {
        print!("{HELP}{SWARM_OPTIONS_HELP}");
        return Ok(());
    }
    let opts = SwarmOptions::parse(&mut args)?;
    let tracker_port: Option<u16> = args.opt_value_from_str("--tracker-port")?;
    let torrent: PathBuf =
        args.free_from_str().map_err(|_| Error::usage("give the .torrent file and the data path"))?;
    let content: PathBuf = args.free_from_str().map_err(|_| Error::usage("give the data path after the .torrent"))?;
    super::finish(args)?;

    let meta = Metainfo::load(&torrent)?;
    swarm::run_session(plan(meta, content, opts, tracker_port)?)
}

/// Checks the content at `content` against the torrent (trusting a valid resume record) and reports what is missing.
pub fn plan(meta: Metainfo, content: PathBuf, opts: SwarmOptions, tracker_port: Option<u16>) -> Result<SessionPlan> {
    if !content.exists() {
        // A wrong path on the command line, as with a missing .torrent: the user's input, exit 2.
        return Err(Error::bad_input(format!("{}: no such file or folder", content.display())));
    }
    if meta.multi_file != content.is_dir() {
        let want = if meta.multi_file { "a folder" } else { "a file" };
        return Err(Error::bad_input(format!("{}: the torrent describes {want}", content.display())));
    }
    let stamps = swarm::file_stamps(&meta, &content);
    let mut storage = Storage::open(&meta, content.clone(), OpenMode::Seed)?;
    for issue in storage.issues() {
        match &issue.problem {
            FileProblem::Missing => warn!("{}: missing", issue.path.display()),
            FileProblem::Short { actual, expected } => {
                warn!("{}: {actual} bytes where the torrent has {expected}", issue.path.display())
            }
            FileProblem::Unusable(e) => warn!("{}: {e}", issue.path.display()),
        }
    }
    let record = swarm::record_location(crate::state_dir::state_dir().as_deref(), &meta, &content);
    let (have, keeper) = swarm::check_data(&meta, &mut storage, record, &stamps, opts.recheck);
    let missing = meta.piece_count() - have.count();
    if missing > 0 {
        warn!("{missing} of {} pieces are missing or damaged; serving the rest", meta.piece_count());
    } else {
        info!("all {} pieces verified", meta.piece_count());
    }
    Ok(SessionPlan { meta, storage, have, opts, seed_time: None, resume: Some(keeper), tracker_port })
}
