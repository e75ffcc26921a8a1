//! The socket-server settings std does not expose: the open-files limit, which bounds how many connections one
//! process can hold; the listen backlog, which bounds how many can wait to be accepted; and two listener options that
//! save system calls per accepted connection (`TCP_NODELAY` set once on the listener, `TCP_DEFER_ACCEPT`); and a
//! writer for a connection's last bytes, which go out in one segment with its FIN.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use libc::c_int;

/// Sets an integer socket option on a listener.
fn set_int_option(listener: &std::net::TcpListener, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    let len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: the descriptor is a valid socket for the duration of the call, borrowed from `listener`; `value` lives
    // across the call and is `len` bytes long, and `setsockopt` only reads those bytes.
    let rc = unsafe { libc::setsockopt(listener.as_raw_fd(), level, name, (&value as *const c_int).cast(), len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turns Nagle off on the listener. Linux copies the listener's `TCP_NODELAY` to every socket it accepts, so one call
/// here replaces one `setsockopt` per connection. Returns whether accepted sockets inherit it; elsewhere the caller
/// must set it on each of them.
pub fn nodelay_for_accepted(listener: &std::net::TcpListener) -> bool {
    cfg!(target_os = "linux") && set_int_option(listener, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).is_ok()
}

/// Asks the kernel to hand out a connection only once its first bytes have arrived (Linux `TCP_DEFER_ACCEPT`), for
/// protocols where the client speaks first: `accept` is then followed by a read that finds the request, instead of a
/// read that finds nothing, a registration and a wait for readiness. A client that stays silent for `wait` (rounded up
/// by the kernel to its SYN-ACK retry schedule: 1, 3, 7, 15 s...) is handed out anyway (the kernel re-sends its
/// SYN-ACK then and accepts on the answer), so nothing is lost; until then it costs this process no descriptor.
/// Elsewhere this does nothing.
pub fn defer_accept(listener: &std::net::TcpListener, wait: Duration) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let secs = c_int::try_from(wait.as_secs().max(1)).unwrap_or(c_int::MAX);
        set_int_option(listener, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, secs)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (listener, wait);
    Ok(())
}

/// Connections the kernel may hold for us before `accept`. std (and mio) use 128, which a burst of a few hundred
/// clients overflows: the kernel then drops their SYNs and they retry only after a second or more. The kernel caps
/// this at `net.core.somaxconn`.
const BACKLOG: c_int = 4096;

/// Writes the last bytes a connection sends before it is closed. On Linux they are sent with `MSG_MORE`: a short
/// tail waits in the kernel for the FIN that closing (or shutting down) the socket adds, and both leave in one segment.
/// That is one packet fewer for each side to handle, and one acknowledgement fewer, for every `Connection: close`
/// answer. Only for a socket that is closed or shut down for writing once its output is written: until then the tail
/// could wait.
pub struct LastWrite<'a>(pub &'a mio::net::TcpStream);

impl io::Write for LastWrite<'_> {
    #[cfg(target_os = "linux")]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let flags = libc::MSG_MORE | libc::MSG_NOSIGNAL;
        // SAFETY: the descriptor is a valid socket for the duration of the call, borrowed from `self.0`, and `buf` is
        // readable for `buf.len()` bytes, which is all `send` reads.
        let n = unsafe { libc::send(self.0.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    #[cfg(not(target_os = "linux"))]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &*self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raises the backlog of a listening socket (calling `listen` again on a listening socket only changes it).
pub fn widen_backlog(listener: &std::net::TcpListener) -> io::Result<()> {
    // SAFETY: the descriptor is a valid socket for the duration of the call, borrowed from `listener`; `listen` only
    // takes integers.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit (the most an unprivileged process may) and returns it.
/// Servers do this so that the limit is set by the administrator's hard limit, not by the shell's default of 1024.
#[allow(clippy::useless_conversion)] // `rlim_t` is `u64` on most targets, `u32` on some 32-bit ones
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable `struct rlimit`, the only memory `getrlimit` touches.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: `raised` is a valid `struct rlimit` that outlives the call; `setrlimit` only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Ok(u64::from(lim.rlim_cur));
        }
        return Ok(u64::from(raised.rlim_cur));
    }
    Ok(u64::from(lim.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    #[test]
    fn limit_is_at_least_the_posix_minimum() {
        assert!(raise_fd_limit().unwrap() >= 20);
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let inherited = nodelay_for_accepted(&l);
        assert_eq!(inherited, cfg!(target_os = "linux"));
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(s.nodelay().unwrap(), inherited);
    }

    #[test]
    fn last_bytes_arrive_whole_once_the_socket_is_closed() {
        use std::io::Read;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            c.read_to_end(&mut got).map(|_| got)
        });
        // A blocking socket, so the writes below wait for room rather than fail.
        let (s, _) = l.accept().unwrap();
        let s = mio::net::TcpStream::from_std(s);
        // Many segments, and a tail that is not a whole one: it waits for the FIN.
        let answer: Vec<u8> = (0..300_001u32).map(|i| (i % 251) as u8).collect();
        let mut written = 0;
        while written < answer.len() {
            written += LastWrite(&s).write(&answer[written..]).unwrap();
        }
        drop(s);
        assert_eq!(reader.join().unwrap().unwrap(), answer);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_deferred_listener_hands_out_a_connection_once_it_has_bytes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        defer_accept(&l, Duration::from_secs(5)).unwrap();
        l.set_nonblocking(true).unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        // The handshake is complete on the client's side, yet nothing is handed out while the client is silent.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        c.write_all(b"GET").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match l.accept() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("not accepted after the client spoke: {e}"),
            }
        }
    }
}
