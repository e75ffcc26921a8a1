//! One error type for the whole program: a sentence for a person plus the kind that picks the exit code.

use std::fmt;

/// What went wrong, as far as the exit code is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command line was wrong (exit 2).
    Usage,
    /// An input the user gave us is malformed, e.g. a broken torrent (exit 2).
    BadInput,
    /// Something failed while running: IO, network, disk full (exit 1).
    Runtime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::Usage, message: message.into() }
    }
    pub fn bad_input(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::BadInput, message: message.into() }
    }
    pub fn runtime(message: impl Into<String>) -> Error {
        Error { kind: ErrorKind::Runtime, message: message.into() }
    }
    /// An IO failure on `what` (a path or an address), keeping the OS reason.
    pub fn io(what: impl fmt::Display, err: &std::io::Error) -> Error {
        Error::runtime(format!("{what}: {err}"))
    }

    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::Usage | ErrorKind::BadInput => 2,
            ErrorKind::Runtime => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<pico_args::Error> for Error {
    fn from(e: pico_args::Error) -> Error {
        Error::usage(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
