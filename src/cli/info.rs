//! `toybt info FILE.torrent [--json | --magnet]`: what a torrent holds, laid out like `transmission-show`, as one JSON
//! object, or as its magnet link.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::json::Json;
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;

const HELP: &str = "\
Show what a .torrent holds: name, info hash, pieces, size, trackers, files.

Usage: toybt info FILE.torrent [--json | --magnet]

Options:
  --json      print one JSON object instead of text
  --magnet    print only the torrent's magnet link
  -h, --help  print this help
";

pub fn run(mut args: pico_args::Arguments) -> Result<()> {
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return Ok(());
    }
    let json = args.contains("--json");
    let magnet = args.contains("--magnet");
    let path: Option<PathBuf> = args.opt_free_from_os_str(|s| Ok::<_, std::convert::Infallible>(PathBuf::from(s)))?;
    let Some(path) = path else { return Err(Error::usage("info: which torrent? (toybt info FILE.torrent)")) };
    if path.to_string_lossy().starts_with('-') {
        return Err(Error::usage(format!("info: unknown option {}", path.display())));
    }
    super::finish(args)?;
    if json && magnet {
        return Err(Error::usage("info: --json and --magnet are alternatives; give one"));
    }
    let m = Metainfo::load(&path)?;
    let shown = path.display().to_string();
    if magnet {
        println!("{}", Magnet::from_meta(&m).to_uri());
    } else if json {
        println!("{}", to_json(&m, &shown));
    } else {
        print!("{}", to_text(&m, &shown));
    }
    Ok(())
}

/// `n` bytes in binary units, e.g. `1.50 MiB`; plain bytes under 1 KiB.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar).
pub fn utc_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm, with eras of 400 years.
    let z = days as i128 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn display_path(m: &Metainfo, f: &crate::metainfo::FileEntry) -> String {
    let mut parts: Vec<&str> = Vec::with_capacity(f.path.len() + 1);
    if m.multi_file {
        parts.push(&m.name);
    }
    parts.extend(f.path.iter().map(String::as_str));
    parts.join("/")
}

pub fn to_text(m: &Metainfo, file: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "Name: {}\nFile: {file}\n\nGENERAL\n", m.name);
    let _ = writeln!(s, "  Name: {}", m.name);
    let _ = writeln!(s, "  Hash: {}", m.info_hash_hex());
    let _ = writeln!(s, "  Created by: {}", m.created_by.as_deref().unwrap_or("Unknown"));
    let _ = writeln!(s, "  Created on: {}", m.creation_date.map_or("Unknown".to_string(), utc_date));
    if let Some(c) = &m.comment {
        let _ = writeln!(s, "  Comment: {c}");
    }
    let _ = writeln!(s, "  Piece Count: {}", m.piece_count());
    let _ = writeln!(s, "  Piece Size: {} ({} bytes)", human_size(m.piece_length as u64), m.piece_length);
    let _ = writeln!(s, "  Total Size: {} ({} bytes)", human_size(m.total_length), m.total_length);
    let _ = writeln!(s, "  Privacy: {}", if m.private { "Private torrent" } else { "Public torrent" });
    s.push_str("\nTRACKERS\n");
    let tiers = m.tracker_tiers();
    if tiers.is_empty() {
        s.push_str("\n  None (a trackerless torrent)\n");
    }
    for (i, tier) in tiers.iter().enumerate() {
        let _ = writeln!(s, "\n  Tier #{}", i + 1);
        for url in tier {
            let _ = writeln!(s, "  {url}");
        }
    }
    s.push_str("\nFILES\n\n");
    for f in &m.files {
        let padding = if f.padding { " [padding]" } else { "" };
        let _ = writeln!(s, "  {} ({}){padding}", display_path(m, f), human_size(f.length));
    }
    if !m.warnings.is_empty() {
        s.push_str("\nWARNINGS\n\n");
        for w in &m.warnings {
            let _ = writeln!(s, "  {w}");
        }
    }
    s
}

pub fn to_json(m: &Metainfo, file: &str) -> Json {
    let files = m
        .files
        .iter()
        .map(|f| {
            Json::object([
                ("path", Json::str(display_path(m, f))),
                ("length", Json::UInt(f.length)),
                ("offset", Json::UInt(f.offset)),
                ("padding", Json::Bool(f.padding)),
            ])
        })
        .collect();
    let strings = |v: &[String]| Json::Array(v.iter().map(|s| Json::str(s.as_str())).collect());
    Json::object([
        ("file", Json::str(file)),
        ("name", Json::str(m.name.as_str())),
        ("info_hash", Json::str(m.info_hash_hex())),
        ("created_by", Json::opt_str(m.created_by.as_deref())),
        ("creation_date", m.creation_date.map_or(Json::Null, Json::Int)),
        ("comment", Json::opt_str(m.comment.as_deref())),
        ("piece_count", Json::UInt(m.piece_count() as u64)),
        ("piece_length", Json::UInt(m.piece_length as u64)),
        ("total_length", Json::UInt(m.total_length)),
        ("private", Json::Bool(m.private)),
        ("multi_file", Json::Bool(m.multi_file)),
        ("announce", Json::opt_str(m.announce.as_deref())),
        ("trackers", Json::Array(m.tracker_tiers().iter().map(|t| strings(t)).collect())),
        ("files", Json::Array(files)),
        ("warnings", strings(&m.warnings)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.00 KiB");
        assert_eq!(human_size(16385), "16.00 KiB");
        assert_eq!(human_size(3 << 20), "3.00 MiB");
        assert_eq!(human_size(u64::MAX), "16.00 EiB");
    }

    #[test]
    fn dates_in_utc() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_date(-1), "1969-12-31 23:59:59 UTC");
        // Absurd values still print rather than overflow.
        assert!(utc_date(i64::MAX).ends_with("UTC"));
        assert!(utc_date(i64::MIN).ends_with("UTC"));
    }
}
