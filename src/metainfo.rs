//! A loaded .torrent: what it says, its info hash over the raw `info` bytes, and its file layout in piece space.
//!
//! Everything is read from our own bencode decoder's values, which is the gatekeeper: it refuses files over
//! [`MAX_TORRENT_BYTES`] (checked before reading) and nesting deeper than [`crate::bencode::MAX_DEPTH`], and keeps the
//! raw `info` span, so the info hash is SHA-1 over those bytes exactly as written, sorted or not.
//!
//! lava_torrent is not used here, because it refuses or mangles torrents that are valid: it rejects dictionaries
//! with unsorted keys, reads a `pieces` string that happens to be valid UTF-8 as text and then rejects it as "not a
//! sequence of bytes", treats an `info` with a non-UTF-8 key as "not a dictionary", joins path components into one
//! `PathBuf` (so a component `a/b` or `/etc` is silently merged instead of refused) and recurses without a depth
//! limit. The tests check that both parsers agree on the fields of canonical torrents.
//!
//! Refused, with a one-sentence reason ([`MetainfoError`]):
//! - a file over 64 MiB, malformed bencode, nesting deeper than the bound, a dictionary with a key twice;
//! - no `info` dictionary; a missing `name`, or a `name` that is not one valid path component;
//! - a path component (of `name` or of `files[i].path`) that is empty, `.` or `..`, contains `/` (so no absolute or
//!   smuggled nested paths), `\` (a separator on Windows, so a traversal for some clients: we refuse it everywhere),
//!   a NUL byte, is not UTF-8, or is longer than 255 bytes; a whole path longer than 4096 bytes;
//! - two files with the same path, or a file whose path is a folder of another file (padding files excepted);
//! - `piece length` missing, 0, negative or above 256 MiB (any other value is legal, powers of two or not);
//! - `pieces` not a multiple of 20 bytes, or not exactly ceil(total / piece length) hashes;
//! - a negative or missing file length, lengths whose sum overflows, a total size of 0;
//! - both `length` and `files`, or neither; an empty `files` list.
//!
//! Accepted with a warning (in [`Metainfo::warnings`]):
//! - no tracker at all (no `announce`, no usable `announce-list`): a trackerless torrent, peers are given by hand;
//! - dictionary keys out of order (the info hash still covers the bytes as written);
//! - unknown fields in `info` (they count in the info hash and are otherwise ignored), web seeds and DHT nodes;
//! - a hybrid v1/v2 torrent (`meta version` 2): only the v1 part is used;
//! - a `private` value other than 0 or 1 (anything but 0 means private); empty tiers in `announce-list`;
//! - BEP 47 `attr` flags other than padding (`x`, `h`, `l`): the file is handled as a plain file.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::bencode::{self, DecodeError, Value};
use crate::error::Error;
use crate::sha1::digest as sha1;

/// A .torrent larger than this is refused before it is read.
pub const MAX_TORRENT_BYTES: u64 = 64 << 20;
/// Largest accepted `piece length`: pieces are held whole in memory while they are verified.
pub const MAX_PIECE_LENGTH: u64 = 256 << 20;
/// Linux's NAME_MAX and PATH_MAX: longer names could never be created on disk, so they are refused up front.
const MAX_COMPONENT_BYTES: usize = 255;
const MAX_PATH_BYTES: usize = 4096;

/// `info` keys we understand or that are common and harmless; any other key is reported as a warning.
const KNOWN_INFO_KEYS: &[&str] = &[
    "files",
    "length",
    "name",
    "piece length",
    "pieces",
    "private",
    "source",
    "md5sum",
    "name.utf-8",
    "meta version",
    "file tree",
];

/// One file of the torrent, in torrent order, placed in the torrent's byte space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components below the torrent's top folder (multi-file) or just `[name]` (single-file). Validated.
    pub path: Vec<String>,
    pub length: u64,
    /// Offset of the file's first byte in the concatenated torrent data.
    pub offset: u64,
    /// A BEP 47 padding file (`attr` contains `p`): occupies piece space, never created on disk.
    pub padding: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    /// SHA-1 of the `info` value's raw bytes as they appear in the file.
    pub info_hash: [u8; 20],
    pub name: String,
    pub piece_length: u32,
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<FileEntry>,
    pub total_length: u64,
    /// True for a torrent with a `files` list (content is a folder named `name`).
    pub multi_file: bool,
    pub private: bool,
    pub announce: Option<String>,
    /// Tiers from `announce-list` (BEP 12), empty when absent.
    pub announce_list: Vec<Vec<String>>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
    /// Things accepted but worth telling the user (e.g. no tracker at all).
    pub warnings: Vec<String>,
    /// The `info` dictionary's raw bytes, as hashed: what BEP 9 hands to peers that start from a magnet link.
    pub info: Vec<u8>,
}

/// Why bytes are not a usable torrent. `Display` gives the sentence; [`Metainfo::load`] prefixes the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetainfoError {
    /// The input is larger than [`MAX_TORRENT_BYTES`] (its size in bytes).
    TooLarge(u64),
    /// Not bencode, or broken bencode.
    Bencode(DecodeError),
    /// Well-formed bencode that breaks a metainfo rule.
    Invalid(String),
}

impl fmt::Display for MetainfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetainfoError::TooLarge(n) => {
                write!(f, "the torrent file is {n} bytes, larger than the {} MiB limit", MAX_TORRENT_BYTES >> 20)
            }
            MetainfoError::Bencode(e) => write!(f, "not a torrent file: malformed bencode: {e}"),
            MetainfoError::Invalid(m) => write!(f, "invalid torrent: {m}"),
        }
    }
}

impl std::error::Error for MetainfoError {}

fn invalid<T>(message: impl Into<String>) -> Result<T, MetainfoError> {
    Err(MetainfoError::Invalid(message.into()))
}

impl Metainfo {
    /// Reads and validates a .torrent file. Errors name the file and are `bad_input` (exit 2), except IO failures.
    pub fn load(path: &Path) -> crate::error::Result<Metainfo> {
        let shown = path.display();
        let file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::bad_input(format!("{shown}: no such file")),
            _ => Error::io(shown.to_string(), &e),
        })?;
        let meta = file.metadata().map_err(|e| Error::io(shown.to_string(), &e))?;
        if meta.is_dir() {
            return Err(Error::bad_input(format!("{shown}: is a folder, not a torrent file")));
        }
        if meta.len() > MAX_TORRENT_BYTES {
            return Err(Error::bad_input(format!("{shown}: {}", MetainfoError::TooLarge(meta.len()))));
        }
        // The size was checked above, but the file may grow under us: never read more than the limit plus one.
        let mut buf = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_TORRENT_BYTES + 1).read_to_end(&mut buf).map_err(|e| Error::io(shown.to_string(), &e))?;
        Metainfo::from_bytes(&buf).map_err(|e| Error::bad_input(format!("{shown}: {e}")))
    }

    /// Parses and validates the bytes of a .torrent.
    pub fn from_bytes(buf: &[u8]) -> Result<Metainfo, MetainfoError> {
        if buf.len() as u64 > MAX_TORRENT_BYTES {
            return Err(MetainfoError::TooLarge(buf.len() as u64));
        }
        let root = bencode::decode(buf).map_err(MetainfoError::Bencode)?;
        if !root.is_dict() {
            return invalid("the top level is not a dictionary");
        }
        let sorted = check_keys(&root)?;
        let Some(info) = root.get("info") else { return invalid("there is no `info` dictionary") };
        let Some(info_raw) = info.raw_dict() else { return invalid("`info` is not a dictionary") };
        let info_hash = sha1(info_raw);

        let mut warnings = Vec::new();
        if !sorted {
            warnings.push(
                "dictionary keys are not in sorted order; the info hash is taken over the `info` bytes as written"
                    .to_string(),
            );
        }
        let name = check_name(info)?;
        let (piece_length, pieces) = check_pieces(info)?;
        let (files, multi_file) = parse_files(info, name, &mut warnings)?;
        let total_length = check_layout(&files, piece_length, pieces.len() as u64 / 20)?;
        check_info_extras(&root, info, &mut warnings);
        let private = private_flag(info, &mut warnings);
        let (announce, announce_list) = trackers(&root, &mut warnings);
        Ok(Metainfo {
            info_hash,
            name: name.to_string(),
            // Range-checked by `check_pieces`.
            piece_length: piece_length as u32,
            pieces: pieces.chunks_exact(20).map(|c| c.try_into().unwrap_or([0; 20])).collect(),
            files,
            total_length,
            multi_file,
            private,
            announce,
            announce_list,
            comment: text(root.get("comment")),
            created_by: text(root.get("created by")),
            creation_date: root.get("creation date").and_then(Value::as_int),
            warnings,
            info: info_raw.to_vec(),
        })
    }

    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }
    /// Size of piece `index`: `piece_length` except for a shorter last piece; 0 past the end (an index from a peer
    /// must never panic us).
    pub fn piece_size(&self, index: u32) -> u32 {
        let start = index as u64 * self.piece_length as u64;
        self.total_length.saturating_sub(start).min(self.piece_length as u64) as u32
    }
    /// True when `data` is the whole of piece `index` with the expected SHA-1.
    pub fn piece_matches(&self, index: u32, data: &[u8]) -> bool {
        match self.pieces.get(index as usize) {
            Some(expected) => data.len() == self.piece_size(index) as usize && sha1(data) == *expected,
            None => false,
        }
    }
    /// Trackers to announce to, by tier: `announce-list` when present, else `[[announce]]`.
    pub fn tracker_tiers(&self) -> Vec<Vec<String>> {
        if !self.announce_list.is_empty() {
            self.announce_list.clone()
        } else {
            self.announce.iter().map(|a| vec![a.clone()]).collect()
        }
    }
    pub fn info_hash_hex(&self) -> String {
        hex(&self.info_hash)
    }
    /// Where `file` lives relative to the download folder: `name/a/b` for a multi-file torrent, `name` otherwise.
    /// Safe to join to a folder: every component was validated.
    pub fn relative_path(&self, file: &FileEntry) -> PathBuf {
        let mut p = PathBuf::new();
        if self.multi_file {
            p.push(&self.name);
        }
        p.extend(&file.path);
        p
    }
}

/// Torrents made in memory for unit tests and benches (a separate crate, hence `pub`): no .torrent file behind them,
/// so no trackers, no raw `info` and an info hash the caller picks.
#[doc(hidden)]
impl Metainfo {
    /// The total length is the files' sum (padding included, as in a parsed torrent).
    pub fn for_tests(
        info_hash: [u8; 20],
        name: &str,
        piece_length: u32,
        pieces: Vec<[u8; 20]>,
        files: Vec<FileEntry>,
        multi_file: bool,
    ) -> Metainfo {
        Metainfo {
            info_hash,
            name: name.into(),
            piece_length,
            pieces,
            total_length: files.iter().map(|f| f.length).sum(),
            files,
            multi_file,
            private: false,
            announce: None,
            announce_list: vec![],
            comment: None,
            created_by: None,
            creation_date: None,
            warnings: vec![],
            info: Vec::new(),
        }
    }

    /// One file named `name` holding `content`, with its pieces' real SHA-1 hashes.
    pub fn single_file_for_tests(info_hash: [u8; 20], name: &str, content: &[u8], piece_length: u32) -> Metainfo {
        let pieces = content.chunks(piece_length as usize).map(sha1).collect();
        let file = FileEntry { path: vec![name.into()], length: content.len() as u64, offset: 0, padding: false };
        Metainfo::for_tests(info_hash, name, piece_length, pieces, vec![file], false)
    }
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rejects a dictionary with a repeated key anywhere (clients would disagree on which one counts) and tells whether
/// every dictionary has its keys in sorted order.
fn check_keys(v: &Value) -> Result<bool, MetainfoError> {
    match v {
        Value::Int(_) | Value::Bytes(_) => Ok(true),
        Value::List(items) => {
            let mut sorted = true;
            for item in items {
                sorted &= check_keys(item)?;
            }
            Ok(sorted)
        }
        Value::Dict { entries, .. } => {
            let mut sorted = entries.windows(2).all(|w| w[0].0 < w[1].0);
            if !sorted {
                let mut keys: Vec<&[u8]> = entries.iter().map(|(k, _)| *k).collect();
                keys.sort_unstable();
                if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
                    return invalid(format!("a dictionary has the key \"{}\" twice", w[0].escape_ascii()));
                }
            }
            for (_, value) in entries {
                sorted &= check_keys(value)?;
            }
            Ok(sorted)
        }
    }
}

/// Why `c` cannot be one component of a path on disk, if it cannot.
pub fn component_problem(c: &str) -> Option<&'static str> {
    if c.is_empty() {
        Some("is empty")
    } else if c == "." || c == ".." {
        Some("is `.` or `..`")
    } else if c.contains('/') {
        Some("contains `/`")
    } else if c.contains('\\') {
        Some("contains `\\`")
    } else if c.contains('\0') {
        Some("contains a NUL byte")
    } else if c.len() > MAX_COMPONENT_BYTES {
        Some("is longer than 255 bytes")
    } else {
        None
    }
}

fn check_name<'a>(info: &Value<'a>) -> Result<&'a str, MetainfoError> {
    let Some(name) = info.get("name") else { return invalid("`info` has no `name`") };
    let Some(name) = name.as_str() else { return invalid("`name` is not a UTF-8 string") };
    if let Some(problem) = component_problem(name) {
        return invalid(format!("`name` \"{}\" is not a valid file name: it {problem}", name.escape_debug()));
    }
    Ok(name)
}

/// Piece length and the concatenated piece hashes, both range-checked.
fn check_pieces<'a>(info: &Value<'a>) -> Result<(u64, &'a [u8]), MetainfoError> {
    let Some(pl) = info.get("piece length").and_then(Value::as_int) else {
        return invalid("`piece length` is missing or not an integer");
    };
    if pl <= 0 || pl as u64 > MAX_PIECE_LENGTH {
        return invalid(format!("`piece length` is {pl}; it must be between 1 byte and 256 MiB"));
    }
    let Some(pieces) = info.get("pieces").and_then(Value::as_bytes) else {
        return if info.get("file tree").is_some() {
            invalid("there is no `pieces`: BitTorrent v2-only torrents are not supported")
        } else {
            invalid("`pieces` is missing or not a byte string")
        };
    };
    if pieces.len() % 20 != 0 {
        return invalid(format!("`pieces` is {} bytes long, not a multiple of 20", pieces.len()));
    }
    Ok((pl as u64, pieces))
}

fn file_length(v: Option<&Value>, field: &str) -> Result<u64, MetainfoError> {
    match v.map(|v| v.as_int()) {
        None => invalid(format!("`{field}` is missing")),
        Some(None) => invalid(format!("`{field}` is not an integer")),
        Some(Some(n)) if n < 0 => invalid(format!("`{field}` is {n}; a length cannot be negative")),
        Some(Some(n)) => Ok(n as u64),
    }
}

/// The files with their raw path components and padding flags, offsets filled in.
fn parse_files(info: &Value, name: &str, warnings: &mut Vec<String>) -> Result<(Vec<FileEntry>, bool), MetainfoError> {
    let files = match (info.get("length"), info.get("files")) {
        (Some(_), Some(_)) => return invalid("`info` has both `length` and `files`"),
        (None, None) => return invalid("`info` has neither `length` nor `files`"),
        (Some(len), None) => {
            let length = file_length(Some(len), "length")?;
            return Ok((vec![FileEntry { path: vec![name.to_string()], length, offset: 0, padding: false }], false));
        }
        (None, Some(files)) => files,
    };
    let Some(list) = files.as_list() else { return invalid("`files` is not a list") };
    if list.is_empty() {
        return invalid("`files` is an empty list");
    }
    let mut out = Vec::with_capacity(list.len());
    let mut offset: u64 = 0;
    let mut odd_attrs = 0usize;
    for (i, f) in list.iter().enumerate() {
        if !f.is_dict() {
            return invalid(format!("`files[{i}]` is not a dictionary"));
        }
        let length = file_length(f.get("length"), &format!("files[{i}].length"))?;
        let Some(components) = f.get("path").and_then(Value::as_list) else {
            return invalid(format!("`files[{i}].path` is missing or not a list"));
        };
        if components.is_empty() {
            return invalid(format!("`files[{i}].path` is an empty list"));
        }
        let mut path = Vec::with_capacity(components.len());
        let mut path_bytes = name.len();
        for c in components {
            let Some(c) = c.as_str() else {
                return invalid(format!("`files[{i}].path` has a component that is not a UTF-8 string"));
            };
            if let Some(problem) = component_problem(c) {
                return invalid(format!("`files[{i}].path` component \"{}\" {problem}", c.escape_debug()));
            }
            path_bytes += 1 + c.len();
            if path_bytes > MAX_PATH_BYTES {
                return invalid(format!("`files[{i}].path` is longer than {MAX_PATH_BYTES} bytes"));
            }
            path.push(c.to_string());
        }
        let attr = match f.get("attr") {
            Some(a) => a.as_bytes().unwrap_or_default(),
            None => b"",
        };
        let padding = attr.contains(&b'p');
        if attr.iter().any(|&b| b != b'p') {
            odd_attrs += 1;
        }
        out.push(FileEntry { path, length, offset, padding });
        offset = offset
            .checked_add(length)
            .filter(|&t| t <= i64::MAX as u64)
            .ok_or_else(|| MetainfoError::Invalid("the file lengths add up to more than 2^63 bytes".into()))?;
    }
    if odd_attrs > 0 {
        warnings.push(format!(
            "{odd_attrs} file(s) have BEP 47 `attr` flags other than padding (executable, hidden, symlink); \
             they are handled as plain files"
        ));
    }
    Ok((out, true))
}

/// Checks the total size against the piece hashes and that no two real files collide on disk; returns the total.
fn check_layout(files: &[FileEntry], piece_length: u64, piece_count: u64) -> Result<u64, MetainfoError> {
    let total = files.last().map(|f| f.offset + f.length).unwrap_or(0);
    if total == 0 {
        return invalid("the total size is 0 bytes; there is nothing to share");
    }
    let needed = total.div_ceil(piece_length);
    if needed != piece_count {
        return invalid(format!(
            "`pieces` has {piece_count} piece hash(es) but {total} bytes in pieces of {piece_length} bytes need {needed}"
        ));
    }
    // In component order a path sorts right before the paths inside it, so neighbours reveal every collision.
    let mut paths: Vec<&[String]> = files.iter().filter(|f| !f.padding).map(|f| &f.path[..]).collect();
    paths.sort_unstable();
    for w in paths.windows(2) {
        if w[0] == w[1] {
            return invalid(format!("two files have the same path \"{}\"", w[0].join("/").escape_debug()));
        }
        if w[1].starts_with(w[0]) {
            return invalid(format!(
                "\"{}\" is a file but also the folder of \"{}\"",
                w[0].join("/").escape_debug(),
                w[1].join("/").escape_debug()
            ));
        }
    }
    Ok(total)
}

/// Warnings about what lies around the fields we use: unknown keys, v2 parts, web seeds.
fn check_info_extras(root: &Value, info: &Value, warnings: &mut Vec<String>) {
    if let Value::Dict { entries, .. } = info {
        let unknown: Vec<String> = entries
            .iter()
            .filter(|(k, _)| !KNOWN_INFO_KEYS.iter().any(|known| known.as_bytes() == *k))
            .map(|(k, _)| k.escape_ascii().to_string())
            .collect();
        if !unknown.is_empty() {
            warnings.push(format!(
                "unknown field(s) in `info`: {} (they count in the info hash and are otherwise ignored)",
                unknown.join(", ")
            ));
        }
    }
    if info.get("meta version").and_then(Value::as_int) == Some(2) {
        warnings.push("a hybrid BitTorrent v1/v2 torrent: only the v1 part is used".to_string());
    }
    for (key, what) in [("url-list", "web seeds (`url-list`)"), ("httpseeds", "HTTP seeds"), ("nodes", "DHT nodes")] {
        if root.get(key).is_some() {
            warnings.push(format!("{what} are ignored"));
        }
    }
}

/// A text field: UTF-8 when it is, else decoded lossily (comments from old clients are often Latin-1).
fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_bytes).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// `announce` and `announce-list`, keeping what is usable: a broken tracker list costs trackers, not the torrent.
fn trackers(root: &Value, warnings: &mut Vec<String>) -> (Option<String>, Vec<Vec<String>>) {
    let announce = match root.get("announce") {
        None => None,
        Some(a) => match a.as_str() {
            Some(url) if !url.is_empty() => Some(url.to_string()),
            _ => {
                warnings.push("`announce` is not a UTF-8 URL; it is ignored".to_string());
                None
            }
        },
    };
    let mut tiers = Vec::new();
    let mut skipped = 0usize;
    if let Some(list) = root.get("announce-list") {
        match list.as_list() {
            Some(list) => {
                for tier in list {
                    let urls = tier.as_list().unwrap_or_default();
                    let good: Vec<String> =
                        urls.iter().filter_map(Value::as_str).filter(|u| !u.is_empty()).map(String::from).collect();
                    skipped += usize::from(good.len() != urls.len() || tier.as_list().is_none() || good.is_empty());
                    if !good.is_empty() {
                        tiers.push(good);
                    }
                }
            }
            None => skipped += 1,
        }
    }
    if skipped > 0 {
        warnings.push(format!("{skipped} empty or malformed part(s) of `announce-list` are ignored"));
    }
    if announce.is_none() && tiers.is_empty() {
        warnings.push("no tracker (no `announce` or `announce-list`): peers must be given by hand".to_string());
    }
    (announce, tiers)
}

fn private_flag(info: &Value, warnings: &mut Vec<String>) -> bool {
    match info.get("private") {
        None => false,
        Some(Value::Int(0)) => false,
        Some(Value::Int(1)) => true,
        Some(other) => {
            let shown = match other {
                Value::Int(n) => n.to_string(),
                _ => "not an integer".to_string(),
            };
            warnings.push(format!("`private` is {shown}, not 0 or 1; the torrent is treated as private"));
            true
        }
    }
}

#[cfg(test)]
mod tests;
