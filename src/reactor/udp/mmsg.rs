//! Datagrams in batches: up to [`BATCH`] received with one `recvmmsg` and up to [`BATCH`] sent with one `sendmmsg`
//! (Linux), instead of one `recvfrom` / `sendto` each: a loaded UDP tracker then pays a system call's fixed cost (entry
//! and exit, the file lookup, waking to an empty socket) once per batch rather than twice per announce. The kernel's
//! work for each datagram (routing, building and delivering the packet) stays, and is most of what is left. Other
//! systems get the same two functions over std's `recv_from` / `send_to`, one system call per datagram.
//!
//! All the unsafe code of the datagram path is in this file: the two calls, and reading the sender's address the
//! kernel wrote. Each `unsafe` block says why it is sound; the pointers handed to the kernel all point into arrays and
//! slices that live on this function's stack or are borrowed for the whole call, and no pointer outlives it.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

/// Most datagrams one call receives or sends. 32 slots of [`super::super::MAX_DATAGRAM`] bytes are 2 MiB of address
/// space, but only the pages datagrams were written to become resident (the buffer is allocated zeroed, straight from
/// the kernel): a tracker's small requests touch one page per slot.
pub const BATCH: usize = 32;

/// One datagram of a batch: its bytes are `buf[offset..offset + len]` of the buffer it was received into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub from: SocketAddr,
    pub offset: usize,
    pub len: usize,
    /// It was longer than its slot, so `len` bytes are only its beginning.
    pub truncated: bool,
}

/// Receives up to `max` datagrams (at most [`BATCH`], at most as many as `buf` has `slot`-byte slots) without
/// blocking; datagram i lands in slot i, `buf[i * slot..]`, and is described in `got` (cleared first). Returns how many
/// datagrams were taken from the socket (a datagram whose sender address is unreadable is taken but not in `got`);
/// fewer than asked means the socket had no more. `WouldBlock` when it had none.
#[cfg(target_os = "linux")]
pub fn recv_batch(
    sock: &UdpSocket,
    buf: &mut [u8],
    slot: usize,
    max: usize,
    got: &mut Vec<Received>,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    got.clear();
    let want = max.min(BATCH).min(buf.len().checked_div(slot).unwrap_or(0));
    if want == 0 {
        return Ok(0);
    }
    let mut names = [SockAddr::EMPTY; BATCH];
    let mut iovs: [libc::iovec; BATCH] = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
    // SAFETY: `mmsghdr` is plain C data (integers and pointers) for which all-zero bytes are a valid value.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, ((hdr, iov), name)) in hdrs.iter_mut().zip(&mut iovs).zip(&mut names).take(want).enumerate() {
        let chunk = &mut buf[i * slot..(i + 1) * slot];
        *iov = libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: chunk.len() };
        hdr.msg_hdr.msg_name = (name as *mut SockAddr).cast();
        hdr.msg_hdr.msg_namelen = std::mem::size_of::<SockAddr>() as libc::socklen_t;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `want` headers point at `want` disjoint slots of `buf` (each `slot` bytes, inside `buf`, which
    // is borrowed mutably for the call), at their own `names` entry with its true size and at their own iovec; all of
    // them live until the call returns and the kernel keeps no pointer past it. `sock` is open for the call.
    let n = unsafe {
        libc::recvmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), want as _, libc::MSG_DONTWAIT as _, std::ptr::null_mut())
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for (i, hdr) in hdrs.iter().take(n).enumerate() {
        let Some(from) = names[i].socket_addr(hdr.msg_hdr.msg_namelen) else {
            log::debug!("datagram from an address of an unknown family: dropped");
            continue;
        };
        got.push(Received {
            from,
            offset: i * slot,
            len: (hdr.msg_len as usize).min(slot),
            truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        });
    }
    Ok(n)
}

/// Sends `datagrams` in order, up to [`BATCH`] of them, and returns how many the socket took; the first of the rest
/// (if any) would block or failed, and sending it again reports why. An error means the first one was not sent.
#[cfg(target_os = "linux")]
pub fn send_batch(sock: &UdpSocket, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let count = datagrams.len().min(BATCH);
    if count == 0 {
        return Ok(0);
    }
    let mut names = [SockAddr::EMPTY; BATCH];
    let mut iovs: [libc::iovec; BATCH] = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
    // SAFETY: `mmsghdr` is plain C data (integers and pointers) for which all-zero bytes are a valid value.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (((hdr, iov), name), (to, bytes)) in hdrs.iter_mut().zip(&mut iovs).zip(&mut names).zip(datagrams) {
        let len = name.set(*to);
        // The kernel only reads a datagram to send, so the pointer's `mut` is never used.
        *iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        hdr.msg_hdr.msg_name = (name as *mut SockAddr).cast();
        hdr.msg_hdr.msg_namelen = len;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `count` headers point at their own address (of the length given), their own iovec and the
    // borrowed bytes of their datagram, all alive until the call returns; the kernel reads them and keeps no pointer.
    // `sock` is open for the call.
    let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), count as _, libc::MSG_DONTWAIT as _) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// [`recv_batch`] where there is no `recvmmsg`: the same, one system call per datagram.
#[cfg(not(target_os = "linux"))]
pub fn recv_batch(
    sock: &UdpSocket,
    buf: &mut [u8],
    slot: usize,
    max: usize,
    got: &mut Vec<Received>,
) -> io::Result<usize> {
    got.clear();
    let want = max.min(BATCH).min(buf.len().checked_div(slot).unwrap_or(0));
    for i in 0..want {
        // std does not say whether a datagram was cut short; a slot of the largest datagram's size never cuts one.
        match sock.recv_from(&mut buf[i * slot..(i + 1) * slot]) {
            Ok((len, from)) => got.push(Received { from, offset: i * slot, len, truncated: false }),
            // As `recvmmsg`: an error after some datagrams ends the batch, and the next call reports it.
            Err(_) if i > 0 => return Ok(i),
            Err(e) => return Err(e),
        }
    }
    Ok(want)
}

/// [`send_batch`] where there is no `sendmmsg`: the same, one system call per datagram.
#[cfg(not(target_os = "linux"))]
pub fn send_batch(sock: &UdpSocket, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    for (i, (to, bytes)) in datagrams.iter().take(BATCH).enumerate() {
        match sock.send_to(bytes, *to) {
            Ok(_) => {}
            // As `sendmmsg`: an error after some datagrams ends the batch, and sending the rest reports it.
            Err(_) if i > 0 => return Ok(i),
            Err(e) => return Err(e),
        }
    }
    Ok(datagrams.len().min(BATCH))
}

/// A socket address as the kernel reads and writes it: room for IPv4 and IPv6, told apart by the family field, which
/// both put first.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
#[repr(C)]
union SockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

#[cfg(target_os = "linux")]
impl SockAddr {
    /// An IPv6 address of all zeroes (the largest variant, so every byte is initialised).
    const EMPTY: SockAddr = SockAddr {
        v6: libc::sockaddr_in6 {
            sin6_family: 0,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
            sin6_scope_id: 0,
        },
    };

    /// Stores `addr`; returns the length to give the kernel.
    fn set(&mut self, addr: SocketAddr) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                self.v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                    sin_zero: [0; 8],
                };
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                self.v6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                    sin6_scope_id: a.scope_id(),
                };
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    /// The address the kernel wrote (`len` bytes of it), if it is IPv4 or IPv6.
    fn socket_addr(&self, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        // SAFETY: every variant is plain integers and every byte of the union was initialised (by `EMPTY`, then by the
        // kernel), so reading either variant reads initialised bytes; the family says which one the kernel meant, and
        // the length check says it wrote all of it.
        unsafe {
            match self.v4.sin_family as libc::c_int {
                libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                    let a = self.v4;
                    let ip = std::net::Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
                    Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
                }
                libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                    let a = self.v6;
                    let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                    let port = u16::from_be(a.sin6_port);
                    Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                        ip,
                        port,
                        u32::from_be(a.sin6_flowinfo),
                        a.sin6_scope_id,
                    )))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(addr: &str) -> (UdpSocket, std::net::UdpSocket) {
        let server = std::net::UdpSocket::bind(addr).unwrap();
        server.set_nonblocking(true).unwrap();
        let client = std::net::UdpSocket::bind(addr).unwrap();
        (UdpSocket::from_std(server), client)
    }

    /// Waits (bounded) until `sock` has something to read, so a test does not race the loopback.
    fn wait_readable(sock: &UdpSocket) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut probe = [0u8; 1];
        while std::time::Instant::now() < deadline {
            match sock.peek_from(&mut probe) {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("peek: {e}"),
            }
        }
        panic!("nothing arrived");
    }

    #[test]
    fn a_burst_larger_than_a_batch_is_read_in_batches_in_order_with_senders() {
        let (server, client) = pair("127.0.0.1:0");
        let to = server.local_addr().unwrap();
        let total = BATCH + 5;
        for i in 0..total {
            client.send_to(format!("datagram {i}").as_bytes(), to).unwrap();
        }
        let mut buf = vec![0u8; BATCH * 64];
        let mut got = Vec::new();
        let mut texts = Vec::new();
        let mut calls = 0;
        while texts.len() < total {
            wait_readable(&server);
            let n = recv_batch(&server, &mut buf, 64, usize::MAX, &mut got).unwrap();
            calls += 1;
            assert!(n <= BATCH && n == got.len());
            for r in &got {
                assert_eq!(r.from, client.local_addr().unwrap());
                assert!(!r.truncated);
                texts.push(String::from_utf8(buf[r.offset..r.offset + r.len].to_vec()).unwrap());
            }
        }
        let want: Vec<String> = (0..total).map(|i| format!("datagram {i}")).collect();
        assert_eq!(texts, want);
        assert!(calls >= 2, "{total} datagrams cannot fit one batch");
        assert_eq!(recv_batch(&server, &mut buf, 64, BATCH, &mut got).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn max_and_the_buffer_bound_a_batch() {
        let (server, client) = pair("127.0.0.1:0");
        let to = server.local_addr().unwrap();
        for _ in 0..4 {
            client.send_to(b"x", to).unwrap();
        }
        let mut buf = vec![0u8; 3 * 16 + 8]; // three whole slots
        let mut got = Vec::new();
        wait_readable(&server);
        assert_eq!(recv_batch(&server, &mut buf, 16, 1, &mut got).unwrap(), 1);
        assert_eq!(recv_batch(&server, &mut buf, 16, 0, &mut got).unwrap(), 0);
        assert!(got.is_empty());
        wait_readable(&server);
        let n = recv_batch(&server, &mut buf, 16, 10, &mut got).unwrap();
        assert!((1..=3).contains(&n), "{n}");
        assert!(got.iter().all(|r| r.offset + r.len <= 3 * 16));
    }

    /// Only `recvmmsg` says a datagram was cut short; elsewhere slots are as large as the largest datagram.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_datagram_longer_than_its_slot_is_marked_truncated_and_the_next_is_whole() {
        let (server, client) = pair("127.0.0.1:0");
        let to = server.local_addr().unwrap();
        client.send_to(&[7u8; 3000], to).unwrap();
        client.send_to(b"short", to).unwrap();
        let mut buf = vec![0u8; 4 * 1024];
        let mut got = Vec::new();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            wait_readable(&server);
            recv_batch(&server, &mut buf, 1024, BATCH, &mut got).unwrap();
            seen.extend(got.iter().map(|r| (r.truncated, buf[r.offset..r.offset + r.len].to_vec())));
        }
        assert_eq!(seen[0], (true, vec![7u8; 1024]));
        assert_eq!(seen[1], (false, b"short".to_vec()));
    }

    #[test]
    fn a_batch_is_sent_in_order_to_each_address_over_ipv4_and_ipv6() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(a) = std::net::UdpSocket::bind(addr) else { continue }; // a machine without IPv6 loopback
            let b = std::net::UdpSocket::bind(addr).unwrap();
            let sender = UdpSocket::from_std(std::net::UdpSocket::bind(addr).unwrap());
            let (ta, tb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
            let list: Vec<(SocketAddr, &[u8])> = vec![(ta, b"one"), (tb, b"two"), (ta, b"three")];
            assert_eq!(send_batch(&sender, &list).unwrap(), 3);
            let mut buf = [0u8; 16];
            for (sock, want) in [(&a, &b"one"[..]), (&b, b"two"), (&a, b"three")] {
                sock.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                assert_eq!((&buf[..n], from), (want, sender.local_addr().unwrap()));
            }
            assert_eq!(send_batch(&sender, &[]).unwrap(), 0);
        }
    }

    #[test]
    fn ipv6_senders_are_read_back_exactly() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            return; // a machine without IPv6 loopback
        }
        let (server, client) = pair("[::1]:0");
        client.send_to(b"v6", server.local_addr().unwrap()).unwrap();
        let mut buf = vec![0u8; 2 * 64];
        let mut got = Vec::new();
        wait_readable(&server);
        assert_eq!(recv_batch(&server, &mut buf, 64, BATCH, &mut got).unwrap(), 1);
        assert_eq!(got[0].from, client.local_addr().unwrap());
        assert_eq!(&buf[..got[0].len], b"v6");
    }

    #[test]
    fn a_datagram_the_socket_refuses_is_reported_and_the_batch_stops_there() {
        // Over IPv4 a UDP payload cannot exceed 65,507 bytes: the second datagram fails with EMSGSIZE, so the call
        // takes the first only, and sending from the second on reports the error.
        let (sink, _) = pair("127.0.0.1:0");
        let sender = UdpSocket::from_std(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let to = sink.local_addr().unwrap();
        let big = vec![0u8; 70_000];
        let list: Vec<(SocketAddr, &[u8])> = vec![(to, b"fits"), (to, &big), (to, b"after")];
        assert_eq!(send_batch(&sender, &list).unwrap(), 1);
        let err = send_batch(&sender, &list[1..]).unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert_eq!(send_batch(&sender, &list[2..]).unwrap(), 1);
    }
}
