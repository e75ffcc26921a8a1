//! What can go wrong in storage, as a value the caller can inspect (the OS cause stays an `io::Error`).

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum StorageError {
    /// The metainfo's file layout does not add up (offsets, lengths, piece count, path components).
    Layout(String),
    /// A piece index at or past the piece count.
    PieceIndex { index: u32, count: u32 },
    /// `write_piece` got a buffer that is not exactly the piece's size.
    PieceLength { index: u32, expected: u32, got: usize },
    /// A block request that is empty, larger than `MAX_BLOCK`, or runs past the end of its piece.
    BlockRange { index: u32, begin: u32, length: u32, piece_size: u32 },
    /// A write to storage opened for seeding.
    ReadOnly,
    /// Something on disk below the content folder that storage refuses to use (a symlink, a folder where a file
    /// belongs, a device...).
    Unsafe { path: PathBuf, reason: &'static str },
    /// The OS refused: `op` is what we were doing ("writing", "opening"...), `source` keeps the cause (ENOSPC...).
    Io { path: PathBuf, op: &'static str, source: io::Error },
}

impl StorageError {
    /// The OS error kind for `Io`, so a caller can tell a full disk (`StorageFull`) from the rest.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            StorageError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> StorageError {
        StorageError::Io { path: path.into(), op, source }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Layout(why) => write!(f, "the torrent's file layout is inconsistent: {why}"),
            StorageError::PieceIndex { index, count } => {
                write!(f, "piece {index} does not exist (the torrent has {count} pieces)")
            }
            StorageError::PieceLength { index, expected, got } => {
                write!(f, "piece {index} is {expected} bytes but {got} bytes were given")
            }
            StorageError::BlockRange { index, begin, length, piece_size } => write!(
                f,
                "block of {length} bytes at {begin} in piece {index} is out of range (piece is {piece_size} bytes)"
            ),
            StorageError::ReadOnly => f.write_str("storage is open read-only for seeding"),
            StorageError::Unsafe { path, reason } => write!(f, "{}: {reason}; refusing to use it", path.display()),
            StorageError::Io { path, op, source } => write!(f, "{op} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<StorageError> for crate::error::Error {
    fn from(e: StorageError) -> crate::error::Error {
        match e {
            StorageError::Layout(_) => crate::error::Error::bad_input(e.to_string()),
            _ => crate::error::Error::runtime(e.to_string()),
        }
    }
}
