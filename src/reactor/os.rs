//! The two socket-server settings std does not expose: the open-files limit, which bounds how many connections one
//! process can hold, and the listen backlog, which bounds how many can wait to be accepted.

use std::io;
use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_ulong};

/// `struct rlimit` as glibc and musl declare it for `getrlimit`/`setrlimit` (`rlim_t` is `unsigned long`).
#[repr(C)]
struct Rlimit {
    cur: c_ulong,
    max: c_ulong,
}

const RLIMIT_NOFILE: c_int = 7;

// SAFETY: the C library's declarations on Linux; the rlimit calls only read or write the one struct they are given,
// and `listen` only takes integers.
unsafe extern "C" {
    fn getrlimit(resource: c_int, rlim: *mut Rlimit) -> c_int;
    fn setrlimit(resource: c_int, rlim: *const Rlimit) -> c_int;
    fn listen(fd: c_int, backlog: c_int) -> c_int;
}

/// Connections the kernel may hold for us before `accept`. std (and mio) use 128, which a burst of a few hundred
/// clients overflows: the kernel then drops their SYNs and they retry only after a second or more. The kernel caps
/// this at `net.core.somaxconn`.
const BACKLOG: c_int = 4096;

/// Raises the backlog of a listening socket (calling `listen` again on a listening socket only changes it).
pub fn widen_backlog(listener: &std::net::TcpListener) -> io::Result<()> {
    // SAFETY: the descriptor is a valid socket for the duration of the call, borrowed from `listener`.
    if unsafe { listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit (the most an unprivileged process may) and returns it.
/// Servers do this so that the limit is set by the administrator's hard limit, not by the shell's default of 1024.
#[allow(clippy::useless_conversion)] // `c_ulong` is `u32` on 32-bit targets
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = Rlimit { cur: 0, max: 0 };
    // SAFETY: `lim` is a valid, writable `struct rlimit`.
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.cur < lim.max {
        let raised = Rlimit { cur: lim.max, max: lim.max };
        // SAFETY: `raised` is a valid `struct rlimit` that outlives the call.
        if unsafe { setrlimit(RLIMIT_NOFILE, &raised) } != 0 {
            return Ok(u64::from(lim.cur));
        }
        return Ok(u64::from(raised.cur));
    }
    Ok(u64::from(lim.cur))
}

#[cfg(test)]
mod tests {
    #[test]
    fn limit_is_at_least_the_posix_minimum() {
        assert!(super::raise_fd_limit().unwrap() >= 20);
    }
}
