//! The socket-server settings std does not expose: the open-files limit, which bounds how many connections one
//! process can hold; the listen backlog, which bounds how many can wait to be accepted; and two listener options that
//! save system calls per accepted connection (`TCP_NODELAY` set once on the listener, `TCP_DEFER_ACCEPT`); a writer for
//! a connection's last bytes, which go out in one segment with its FIN; and a listener on `[::]` that takes IPv4 too.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV6, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use libc::c_int;

/// Sets an integer socket option on a listener.
fn set_int_option(listener: &std::net::TcpListener, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    set_fd_option(listener.as_raw_fd(), level, name, value)
}

/// Sets an integer socket option on a socket descriptor that the caller keeps open across the call.
fn set_fd_option(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    let len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: the caller guarantees `fd` is an open socket for the duration of the call; `value` lives across the call
    // and is `len` bytes long, and `setsockopt` only reads those bytes.
    let rc = unsafe { libc::setsockopt(fd, level, name, (&value as *const c_int).cast(), len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A listening TCP socket on `addr`. On `[::]` (any port) it is dual-stack: IPv4 clients reach it too, and are seen as
/// IPv4-mapped addresses (`::ffff:a.b.c.d`, which [`std::net::IpAddr::to_canonical`] turns back into IPv4). Where IPv6
/// is not available (no IPv6 in the kernel, or no dual-stack sockets), `[::]` falls back to `0.0.0.0` on the same port
/// with a warning, so that "every address" still means every address the machine has. Any other address is bound as
/// given (std's `TcpListener::bind`; `[::1]` and other IPv6 addresses take IPv6 only, as they must).
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => match bind_dual_stack(v6) {
            Err(e) if ipv6_unavailable(&e) => {
                log::warn!("cannot listen on {addr} ({e}); listening on IPv4 only");
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, v6.port()))
            }
            bound => bound,
        },
        _ => TcpListener::bind(addr),
    }
}

/// Whether `e`, from creating or setting up an IPv6 socket, means this machine has no (dual-stack) IPv6 rather than
/// that the port is taken or the call was refused.
pub(crate) fn ipv6_unavailable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL))
}

/// A listening socket on `[::]:port` with `IPV6_V6ONLY` off, set before `bind` as it must be (std's
/// `TcpListener::bind` cannot: it binds at once, leaving the system default, `net.ipv6.bindv6only` on Linux, and on
/// other systems often v6-only). Like std it sets `SO_REUSEADDR` (a restart does not wait out TIME_WAIT) and
/// close-on-exec.
fn bind_dual_stack(addr: SocketAddrV6) -> io::Result<TcpListener> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let kind = libc::SOCK_STREAM;
    // SAFETY: `socket` takes integers only and returns a new descriptor or -1.
    let raw = unsafe { libc::socket(libc::AF_INET6, kind, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor just returned by `socket`, open and owned by nothing else; from here `fd` owns it
    // and closes it on every early return.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // SAFETY: `fd` is open for the duration of the call; `fcntl` with F_SETFD takes integers only.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    set_fd_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_fd_option(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0).map_err(|e| {
        io::Error::new(io::ErrorKind::Unsupported, format!("no dual-stack sockets here (IPV6_V6ONLY: {e})"))
    })?;
    // SAFETY: all-zero bytes are a valid `sockaddr_in6` (every field is an integer or an array of them); the fields
    // that matter are set below, and any platform-specific ones (`sin6_len`) may stay zero for `bind`.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_port = addr.port().to_be();
    sa.sin6_flowinfo = addr.flowinfo();
    sa.sin6_addr = libc::in6_addr { s6_addr: addr.ip().octets() };
    sa.sin6_scope_id = addr.scope_id();
    let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: `fd` is open for the duration of the call; `sa` is a valid `sockaddr_in6` that outlives the call and is
    // `len` bytes long, and `bind` only reads those bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_in6).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a bound socket, open for the duration of the call; `listen` only takes integers.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
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

    #[test]
    fn a_listener_on_any_ipv6_address_takes_ipv4_too() {
        let l = bind_listener("[::]:0".parse().unwrap()).unwrap();
        let local = l.local_addr().unwrap();
        let mut families: Vec<SocketAddr> = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, local.port()))];
        // Without IPv6 it fell back to 0.0.0.0: IPv4 must still work.
        if local.is_ipv6() {
            assert!(local.ip().is_unspecified(), "{local}");
            // Set by us, not left to the system default (`net.ipv6.bindv6only`).
            let mut v6only: c_int = -1;
            let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
            // SAFETY: the descriptor is open for the call, borrowed from `l`; `v6only` is writable for `len` bytes and
            // `len` is writable, which is all `getsockopt` writes.
            let rc = unsafe {
                libc::getsockopt(
                    l.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_V6ONLY,
                    (&mut v6only as *mut c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!((rc, v6only), (0, 0));
            families.push(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port())));
        }
        for to in families {
            let c = TcpStream::connect(to).unwrap();
            let (_s, from) = l.accept().unwrap();
            assert_eq!(from.port(), c.local_addr().unwrap().port());
            // An IPv4 client shows as ::ffff:127.0.0.1 on a dual-stack socket; canonical, it is the client's address.
            assert_eq!(from.ip().to_canonical(), to.ip(), "connected to {to}");
        }
    }

    #[test]
    fn a_taken_port_is_refused_on_the_dual_stack_listener() {
        let first = bind_listener("[::]:0".parse().unwrap()).unwrap();
        let port = first.local_addr().unwrap().port();
        let e = bind_listener(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // It holds the IPv4 side of the port as well.
        assert_eq!(TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap_err().kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn other_addresses_are_bound_as_given() {
        let l = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(l.local_addr().unwrap().ip(), Ipv4Addr::LOCALHOST);
        if let Ok(l) = bind_listener("[::1]:0".parse().unwrap()) {
            assert_eq!(l.local_addr().unwrap().ip(), std::net::Ipv6Addr::LOCALHOST);
        }
    }

    #[test]
    fn missing_ipv6_is_told_from_other_failures() {
        assert!(ipv6_unavailable(&io::Error::from_raw_os_error(libc::EAFNOSUPPORT)));
        assert!(ipv6_unavailable(&io::Error::new(io::ErrorKind::Unsupported, "no dual stack")));
        assert!(!ipv6_unavailable(&io::Error::from_raw_os_error(libc::EADDRINUSE)));
        assert!(!ipv6_unavailable(&io::Error::from_raw_os_error(libc::EACCES)));
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
