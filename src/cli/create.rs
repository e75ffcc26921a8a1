//! `toybt create PATH -t URL...`: make a .torrent of a file or folder (same info hash as `mktorrent`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::info::human_size;
use crate::create::{self, Options};
use crate::error::{Error, Result};

const HELP: &str = "\
Make a .torrent of a file or a folder. For the same content, piece length and
private flag the info hash equals mktorrent's.

Usage: toybt create PATH [-t URL]... [options]

Options:
  -t, --tracker URL        tracker announce URL; repeat for backup tiers, or
                           give URL,URL for several trackers in one tier.
                           Without any, the torrent is trackerless
  -l, --piece-length N     piece length in bytes (suffix K or M for KiB, MiB),
                           16K to 256M; default: a power of two giving
                           1000 to 2000 pieces (16 KiB to 16 MiB)
  -o, --output FILE        where to write (default: NAME.torrent here)
  -f, --force              overwrite FILE if it exists
  -p, --private            set the private flag (no DHT or peer exchange)
  -c, --comment TEXT       add a comment
  -d, --no-date            leave out the creation date (reproducible output)
  -h, --help               print this help
";

/// Inputs at least this big get a progress line (on a terminal only).
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

/// `262144`, `256K`, `256KiB`, `4M`, `4MiB` (binary units).
pub fn parse_size(s: &str) -> std::result::Result<u32, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        _ => return Err(format!("`{s}` is not a size (bytes, or a number with K or M)")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("`{s}` is not a size (bytes, or a number with K or M)"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub fn run(mut args: pico_args::Arguments) -> Result<()> {
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return Ok(());
    }
    let trackers: Vec<String> = args.values_from_str(["-t", "--tracker"])?;
    let piece_length = args.opt_value_from_fn(["-l", "--piece-length"], parse_size)?;
    let output: Option<PathBuf> = args.opt_value_from_os_str(["-o", "--output"], |s| Ok::<_, String>(s.into()))?;
    let force = args.contains(["-f", "--force"]);
    let private = args.contains(["-p", "--private"]);
    let comment: Option<String> = args.opt_value_from_str(["-c", "--comment"])?;
    let no_date = args.contains(["-d", "--no-date"]);
    let path: Option<PathBuf> = args.opt_free_from_os_str(|s| Ok::<_, String>(s.into()))?;
    let Some(path) = path else {
        return Err(Error::usage("create: what should the torrent hold? (toybt create PATH)"));
    };
    if path.to_string_lossy().starts_with('-') {
        return Err(Error::usage(format!("create: unknown option {}", path.display())));
    }
    super::finish(args)?;

    let mut tiers = Vec::new();
    for t in &trackers {
        let tier: Vec<String> = t.split(',').map(str::trim).map(String::from).collect();
        if tier.iter().any(String::is_empty) {
            return Err(Error::usage(format!("create: empty tracker URL in `-t {t}`")));
        }
        tiers.push(tier);
    }
    let creation_date = if no_date {
        None
    } else {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        Some(now.as_secs() as i64)
    };
    let opts = Options { trackers: tiers, piece_length, private, comment, creation_date, ..Options::default() };

    let content = create::scan(&path)?;
    let out = output.unwrap_or_else(|| PathBuf::from(format!("{}.torrent", content.name)));
    // Refuse before hashing for minutes, and again at the write (create_new) in case it appeared meanwhile.
    if !force && out.exists() {
        return Err(Error::usage(format!("{}: already exists (use --force to overwrite it)", out.display())));
    }
    for s in &content.skipped {
        eprintln!("toybt: warning: {}: not a regular file or folder, left out", s.display());
    }
    if opts.trackers.is_empty() {
        eprintln!("toybt: warning: no tracker (-t URL): peers of this torrent must be given by hand");
    }
    let mut progress = Progress::new(content.total_length);
    let (bytes, meta) = create::create_from(&content, &opts, &mut |done, total| progress.update(done, total))?;
    progress.finish();
    write_output(&out, &bytes, force)?;
    println!(
        "wrote {}: \"{}\", {} in {} file(s), {} pieces of {}, info hash {}",
        out.display(),
        meta.name,
        human_size(meta.total_length),
        meta.files.len(),
        meta.piece_count(),
        human_size(meta.piece_length as u64),
        meta.info_hash_hex()
    );
    Ok(())
}

fn write_output(out: &Path, bytes: &[u8], force: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(out).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            Error::usage(format!("{}: already exists (use --force to overwrite it)", out.display()))
        }
        _ => Error::io(out.display(), &e),
    })?;
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        // Leave no half-written torrent behind.
        let _ = std::fs::remove_file(out);
        return Err(Error::io(out.display(), &e));
    }
    Ok(())
}

/// A `hashing: 42% ...` line redrawn in place, only when stderr is a terminal and the input is big.
struct Progress {
    enabled: bool,
    start: Instant,
    last: Option<Instant>,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            enabled: total >= PROGRESS_MIN_BYTES && std::io::stderr().is_terminal(),
            start: Instant::now(),
            last: None,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self.last.is_some_and(|l| now - l < Duration::from_millis(200)) && done < total {
            return;
        }
        self.last = Some(now);
        let secs = (now - self.start).as_secs_f64().max(1e-3);
        let rate = done as f64 / secs / 1e6;
        eprint!(
            "\rhashing: {:3}% ({} of {}) {rate:.0} MB/s   ",
            done * 100 / total.max(1),
            human_size(done),
            human_size(total)
        );
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("262144"), Ok(262_144));
        assert_eq!(parse_size("256K"), Ok(262_144));
        assert_eq!(parse_size("256kib"), Ok(262_144));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert!(parse_size("4G").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("5000M").is_err());
        assert!(parse_size("99999999999999999999").is_err());
    }
}
