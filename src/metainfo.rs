//! A loaded .torrent: what it says, its info hash over the raw `info` bytes, and its file layout in piece space.
//!
//! INTERFACE CONTRACT (filled in by the metainfo work; other modules rely on these names):

use std::path::Path;

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
}

impl Metainfo {
    pub fn load(_path: &Path) -> crate::error::Result<Metainfo> {
        unimplemented!()
    }
    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }
    /// Size of piece `index`: `piece_length` except for a shorter last piece.
    pub fn piece_size(&self, index: u32) -> u32 {
        let start = index as u64 * self.piece_length as u64;
        (self.total_length - start).min(self.piece_length as u64) as u32
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
        self.info_hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}
