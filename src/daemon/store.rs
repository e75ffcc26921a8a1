//! What the daemon keeps across restarts, in its state folder, so a restart brings every torrent back as it was
//! without hashing:
//!
//! ```text
//! daemon/settings.json           what session-set changed (download folder, speed limits, …)
//! daemon/torrents/HASH.torrent   the torrent's metainfo (for a magnet link: once its metadata has arrived)
//! daemon/torrents/HASH.json      its record: where its data lives, stopped or not, unwanted files, limits, …
//! ```
//!
//! Which pieces are verified is the torrent's resume record, kept by `resume::Keeper` beside these. Every file is
//! written atomically (temporary file, fsync, rename), so a kill -9 leaves the old version or the new one. A record
//! that does not parse is reported and renamed `.invalid`, and the daemon goes on with the others.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use super::rpc::{hash_hex, parse_hash};
use crate::resume::write_atomic;

/// One torrent's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentRecord {
    pub info_hash: [u8; 20],
    /// The magnet link it was added by: all there is until its metadata arrives (then saved as its .torrent), and
    /// the peers it names are tried at every start.
    pub magnet: Option<String>,
    pub download_dir: PathBuf,
    pub stopped: bool,
    /// Seconds since the Unix epoch.
    pub added: u64,
    /// Where it comes in add order, so a restart lists (and numbers) torrents as before.
    pub position: u64,
    pub done: u64,
    /// File indices not to download.
    pub unwanted: Vec<usize>,
    /// Bytes per second.
    pub download_limit: Option<u64>,
    pub upload_limit: Option<u64>,
}

/// The session settings RPC clients may change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub download_dir: Option<PathBuf>,
    /// Bytes per second, for all torrents together.
    pub download_limit: Option<u64>,
    pub upload_limit: Option<u64>,
    /// Whether added torrents start (transmission-remote's `--start-paused` turns it off).
    pub start_added: Option<bool>,
}

/// A torrent found in the state folder at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub record: TorrentRecord,
    /// The .torrent's bytes; `None` for a magnet link still waiting for its metadata.
    pub metainfo: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store under `state_dir`, creating its folders.
    pub fn open(state_dir: &Path) -> io::Result<Store> {
        let dir = state_dir.join("daemon");
        fs::create_dir_all(dir.join("torrents"))?;
        Ok(Store { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn torrent_path(&self, hash: &[u8; 20], ext: &str) -> PathBuf {
        self.dir.join("torrents").join(format!("{}.{ext}", hash_hex(hash)))
    }

    /// Where a torrent's resume record goes.
    pub fn resume_path(&self, hash: &[u8; 20]) -> PathBuf {
        self.torrent_path(hash, "resume")
    }

    pub fn save_metainfo(&self, hash: &[u8; 20], metainfo: &[u8]) -> io::Result<()> {
        write_atomic(&self.torrent_path(hash, "torrent"), metainfo)
    }

    pub fn save_record(&self, r: &TorrentRecord) -> io::Result<()> {
        let v = json!({
            "info_hash": hash_hex(&r.info_hash),
            "magnet": r.magnet,
            "download_dir": r.download_dir.to_string_lossy(),
            "stopped": r.stopped,
            "added": r.added,
            "position": r.position,
            "done": r.done,
            "unwanted": r.unwanted,
            "download_limit": r.download_limit,
            "upload_limit": r.upload_limit,
        });
        write_atomic(&self.torrent_path(&r.info_hash, "json"), &serde_json::to_vec_pretty(&v).unwrap_or_default())
    }

    /// Forgets a torrent: its record, metainfo and resume record. Files already gone are fine.
    pub fn remove(&self, hash: &[u8; 20]) -> io::Result<()> {
        for ext in ["json", "torrent", "resume"] {
            match fs::remove_file(self.torrent_path(hash, ext)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Every torrent recorded, and a line for each record that could not be read (renamed `.invalid`).
    pub fn load_all(&self) -> (Vec<Loaded>, Vec<String>) {
        let (mut loaded, mut problems) = (Vec::new(), Vec::new());
        let entries = match fs::read_dir(self.dir.join("torrents")) {
            Ok(e) => e,
            Err(e) => return (loaded, vec![format!("{}: {e}", self.dir.display())]),
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
            match self.load_one(&path) {
                Ok(l) => loaded.push(l),
                Err(why) => {
                    problems.push(format!("{}: {why}; renamed .invalid", path.display()));
                    let _ = fs::rename(&path, path.with_extension("json.invalid"));
                }
            }
        }
        (loaded, problems)
    }

    /// One torrent's record as saved, if it can be read.
    pub fn load_record(&self, hash: &[u8; 20]) -> Option<TorrentRecord> {
        let bytes = fs::read(self.torrent_path(hash, "json")).ok()?;
        decode_record(&bytes).ok()
    }

    fn load_one(&self, path: &Path) -> Result<Loaded, String> {
        let bytes = fs::read(path).map_err(|e| e.to_string())?;
        let record = decode_record(&bytes)?;
        let metainfo = match fs::read(self.torrent_path(&record.info_hash, "torrent")) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound && record.magnet.is_some() => None,
            Err(e) => return Err(format!("its .torrent: {e}")),
        };
        Ok(Loaded { record, metainfo })
    }

    pub fn save_settings(&self, s: &Settings) -> io::Result<()> {
        let v = json!({
            "download_dir": s.download_dir.as_ref().map(|d| d.to_string_lossy()),
            "download_limit": s.download_limit,
            "upload_limit": s.upload_limit,
            "start_added": s.start_added,
        });
        write_atomic(&self.dir.join("settings.json"), &serde_json::to_vec_pretty(&v).unwrap_or_default())
    }

    /// The saved settings; none saved yet is the default, a file that does not parse is an error.
    pub fn load_settings(&self) -> Result<Settings, String> {
        let path = self.dir.join("settings.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Settings {
            download_dir: v.get("download_dir").and_then(Value::as_str).map(PathBuf::from),
            download_limit: v.get("download_limit").and_then(Value::as_u64),
            upload_limit: v.get("upload_limit").and_then(Value::as_u64),
            start_added: v.get("start_added").and_then(Value::as_bool),
        })
    }
}

fn decode_record(bytes: &[u8]) -> Result<TorrentRecord, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    let info_hash = field("info_hash").and_then(Value::as_str).and_then(parse_hash).ok_or("no info_hash")?;
    let download_dir = field("download_dir").and_then(Value::as_str).ok_or("no download_dir")?;
    let unwanted = match field("unwanted") {
        None => Vec::new(),
        Some(Value::Array(a)) => {
            a.iter().map(|i| i.as_u64().map(|i| i as usize)).collect::<Option<_>>().ok_or("bad unwanted list")?
        }
        Some(_) => return Err("bad unwanted list".into()),
    };
    Ok(TorrentRecord {
        info_hash,
        magnet: field("magnet").and_then(Value::as_str).map(str::to_string),
        download_dir: PathBuf::from(download_dir),
        stopped: field("stopped").and_then(Value::as_bool).unwrap_or(false),
        added: field("added").and_then(Value::as_u64).unwrap_or(0),
        position: field("position").and_then(Value::as_u64).unwrap_or(0),
        done: field("done").and_then(Value::as_u64).unwrap_or(0),
        unwanted,
        download_limit: field("download_limit").and_then(Value::as_u64),
        upload_limit: field("upload_limit").and_then(Value::as_u64),
    })
}

/// A download folder a client asked for: absolute, and with no `..` that could climb out of where it names.
pub fn check_download_dir(asked: &str) -> Result<PathBuf, String> {
    let path = Path::new(asked);
    if asked.is_empty() || asked.contains('\0') {
        return Err("download-dir is empty or not a path".into());
    }
    if !path.is_absolute() {
        return Err(format!("download-dir must be an absolute path: {asked}"));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("download-dir may not contain '..': {asked}"));
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> TorrentRecord {
        TorrentRecord {
            info_hash: [n; 20],
            magnet: None,
            download_dir: PathBuf::from("/srv/data"),
            stopped: n.is_multiple_of(2),
            added: 1_700_000_000,
            position: u64::from(n),
            done: 0,
            unwanted: vec![1, 3],
            download_limit: Some(1 << 20),
            upload_limit: None,
        }
    }

    #[test]
    fn records_come_back_as_saved_and_bad_ones_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_record(&record(1)).unwrap();
        store.save_metainfo(&[1; 20], b"d4:infode").unwrap();
        let magnet = TorrentRecord { magnet: Some("magnet:?xt=urn:btih:0202".into()), ..record(2) };
        store.save_record(&magnet).unwrap();
        // A record whose .torrent is gone, and one that is not JSON.
        store.save_record(&record(3)).unwrap();
        fs::write(dir.path().join("daemon/torrents/zz.json"), b"{nope").unwrap();

        let (loaded, problems) = store.load_all();
        assert_eq!(
            loaded,
            vec![
                Loaded { record: record(1), metainfo: Some(b"d4:infode".to_vec()) },
                Loaded { record: magnet, metainfo: None },
            ]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(dir.path().join("daemon/torrents/zz.json.invalid").exists());
        let (again, problems) = store.load_all();
        assert_eq!((again.len(), problems.len()), (2, 0), "set-aside records are not read again");

        store.remove(&[1; 20]).unwrap();
        store.remove(&[9; 20]).unwrap();
        assert_eq!(store.load_all().0.len(), 1);
    }

    #[test]
    fn settings_round_trip_and_default_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_settings(), Ok(Settings::default()));
        let s = Settings {
            download_dir: Some("/dl".into()),
            download_limit: Some(1000),
            upload_limit: None,
            start_added: Some(false),
        };
        store.save_settings(&s).unwrap();
        assert_eq!(store.load_settings(), Ok(s));
        fs::write(dir.path().join("daemon/settings.json"), b"[").unwrap();
        assert!(store.load_settings().is_err());
    }

    #[test]
    fn download_dirs_must_be_absolute_without_parent_steps() {
        assert_eq!(check_download_dir("/srv/dl"), Ok(PathBuf::from("/srv/dl")));
        for bad in ["", "dl", "./dl", "/srv/../etc", "/srv/dl/..", "/a\0b"] {
            assert!(check_download_dir(bad).is_err(), "{bad:?}");
        }
    }
}
