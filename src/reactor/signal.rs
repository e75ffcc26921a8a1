//! Ctrl-C and SIGTERM as a readable event in the loop (the self-pipe trick); the C calls come from `libc`.
//!
//! A signal handler may only do async-signal-safe work, so ours writes one byte into a socket pair and returns; the
//! read end is registered with mio and the loop stops cleanly when it becomes readable. If a second signal arrives
//! before the loop has finished stopping (a person pressing Ctrl-C again), the handler ends the process at once with
//! `_exit(128 + signal)`, the shell convention for death by signal.

use std::io::{self, Read};
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use libc::{SIGINT, SIGTERM, c_int};

/// The write end of the pipe; -1 until `install`. Never closed once set, so the handler never writes to a reused fd.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// Signals received so far; the second one ends the process.
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signum: c_int) {
    // Only atomics, write(2) and _exit(2) here: all async-signal-safe. A successful write leaves errno alone, and the
    // one write per process lands in an empty socket buffer, so the interrupted code's errno is not disturbed.
    if RECEIVED.fetch_add(1, Ordering::SeqCst) > 0 {
        // SAFETY: _exit is async-signal-safe and takes any status.
        unsafe { libc::_exit(128 + signum) }
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = signum as u8;
        // SAFETY: `byte` lives across the call and `fd` is a socket we own for the life of the process.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// The loop's end of the self-pipe: register [`SignalPipe::source`] for readable events.
pub struct SignalPipe {
    read: mio::net::UnixStream,
}

/// Which stop request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

/// Installs the SIGINT and SIGTERM handlers. Once per process: a second call fails with `AlreadyExists`.
pub fn install() -> io::Result<SignalPipe> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "signal handlers are already installed"));
    }
    let (read, write_end) = std::os::unix::net::UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write_end.set_nonblocking(true)?;
    // Leaked on purpose: the handler may run at any moment until the process ends.
    WAKE_FD.store(write_end.into_raw_fd(), Ordering::SeqCst);
    for signum in [SIGINT, SIGTERM] {
        // SAFETY: `on_signal` has the `extern "C" fn(c_int)` signature a handler needs (`sighandler_t` is a
        // pointer-sized integer holding it) and is async-signal-safe.
        let previous = unsafe { libc::signal(signum, on_signal as extern "C" fn(c_int) as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(SignalPipe { read: mio::net::UnixStream::from_std(read) })
}

impl SignalPipe {
    pub fn source(&mut self) -> &mut mio::net::UnixStream {
        &mut self.read
    }

    /// Reads what the handler wrote (until `WouldBlock`); returns the last signal seen, if any.
    pub fn drain(&mut self) -> Option<Signal> {
        let mut seen = None;
        let mut buf = [0u8; 16];
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => return seen,
                Ok(n) => {
                    seen = buf[..n].iter().rev().find_map(|&b| signal_from_byte(b)).or(seen);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return seen,
            }
        }
    }
}

fn signal_from_byte(b: u8) -> Option<Signal> {
    match b as c_int {
        SIGINT => Some(Signal::Interrupt),
        SIGTERM => Some(Signal::Terminate),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_map_to_signals() {
        assert_eq!(signal_from_byte(2), Some(Signal::Interrupt));
        assert_eq!(signal_from_byte(15), Some(Signal::Terminate));
        assert_eq!(signal_from_byte(9), None);
    }
}
