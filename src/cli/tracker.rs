//! `toybt tracker FILE.torrent... [--bind ADDR] [--port N] [--udp-port M] [--no-udp] [--interval SECS] [--open]`: an
//! HTTP and UDP (BEP 15) tracker on the loop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::metainfo::Metainfo;
use crate::reactor::{self, DatagramKind, ListenKind, Reactor, Services};
use crate::tracker::udp::UdpFront;
use crate::tracker::{Config, Registry};

const HELP: &str = "\
toybt tracker - serve a BitTorrent tracker over HTTP (BEP 3, 7, 23, 48) and UDP (BEP 15)

Usage:
  toybt tracker FILE.torrent... [--bind ADDR] [--port N] [--udp-port M] [--no-udp] [--interval SECS] [--open]

Serves the listed torrents; any other info hash gets the failure reason `unregistered torrent`.
At start it prints `tracker listening on ADDR:PORT (announce http://ADDR:PORT/announce)` and
`udp tracker listening on ADDR:PORT (announce udp://ADDR:PORT/announce)` on stderr, then one line
per torrent. Ctrl-C or SIGTERM stop it.

Options:
  --bind ADDR       address to listen on (default 0.0.0.0; `::` for IPv4 and IPv6, serving peers6 too)
  --port N          port to listen on (default 6969; 0 picks a free one)
  --udp-port M      UDP port of the BEP 15 tracker (default: the same number as --port; 0 picks a free one)
  --no-udp          serve HTTP only
  --interval SECS   re-announce interval told to clients (default 1800); silent peers expire after two
  --open            serve any info hash, not only the listed torrents
  -h, --help        print this help
";

/// An HTTP client speaks first, so the kernel keeps a new connection until its request is here (it comes with or
/// right after the handshake's last packet). One that stays silent is handed over anyway after about this long (when
/// the kernel re-sends its SYN-ACK), then meets the idle timeout as before: measured, a silent connection is closed
/// after 31 s instead of 30, and held no descriptor for its first second.
const DEFER_ACCEPT: Duration = Duration::from_secs(1);

/// Longest interval accepted: a day. Peers expire after two, so longer only keeps dead peers around.
const MAX_INTERVAL: u64 = 24 * 60 * 60;

pub fn run(mut args: pico_args::Arguments) -> Result<()> {
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return Ok(());
    }
    let bind: IpAddr =
        args.opt_value_from_fn("--bind", super::ip_address)?.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let port: u16 = args.opt_value_from_str("--port")?.unwrap_or(6969);
    let udp_port: Option<u16> = args.opt_value_from_str("--udp-port")?;
    let no_udp = args.contains("--no-udp");
    if no_udp && udp_port.is_some() {
        return Err(Error::usage("--udp-port and --no-udp exclude each other"));
    }
    let udp_port = if no_udp { None } else { Some(udp_port.unwrap_or(port)) };
    let interval: u64 = args.opt_value_from_str("--interval")?.unwrap_or(1800);
    if !(1..=MAX_INTERVAL).contains(&interval) {
        return Err(Error::usage(format!("--interval must be 1 to {MAX_INTERVAL} seconds")));
    }
    let open = args.contains("--open");
    let mut files = Vec::new();
    for arg in args.finish() {
        match arg.to_str() {
            Some(s) if s.starts_with('-') => return Err(Error::usage(format!("unknown option {s}"))),
            _ => files.push(PathBuf::from(arg)),
        }
    }
    if files.is_empty() && !open {
        return Err(Error::usage("give at least one .torrent file to serve, or --open (see `toybt tracker --help`)"));
    }
    let mut torrents = Vec::with_capacity(files.len());
    for path in &files {
        let meta = Metainfo::load(path)?;
        torrents.push((meta.info_hash, meta.name));
    }

    let cfg = Config { interval: Duration::from_secs(interval), open, ..Config::default() };
    let mut reactor = Reactor::new(Services::default()).map_err(|e| Error::io("cannot start the event loop", &e))?;
    // Before the start-up line: whoever reads it may signal us at once.
    let pipe = reactor::install_signals().map_err(|e| Error::io("cannot install signal handlers", &e))?;
    reactor.watch_signals(pipe).map_err(|e| Error::io("cannot watch for signals", &e))?;
    let max_conns = connection_limit();
    start(&mut reactor, SocketAddr::new(bind, port), udp_port, cfg, &torrents, max_conns)?;
    reactor.run().map_err(|e| Error::io("event loop failed", &e))?;
    log::info!("tracker stopped");
    Ok(())
}

/// Binds the tracker's port (and, with `udp_port`, its UDP port on the same address) and adds the tracker service
/// to `reactor`, then prints the start-up lines: the addresses and announce URLs, and one line per torrent. A `seed`
/// process that also runs a tracker calls this on its own loop. Returns the HTTP address and the UDP one.
pub fn start(
    reactor: &mut Reactor,
    addr: SocketAddr,
    udp_port: Option<u16>,
    cfg: Config,
    torrents: &[([u8; 20], String)],
    max_conns: usize,
) -> Result<(SocketAddr, Option<SocketAddr>)> {
    let listener = reactor::bind_listener(addr).map_err(|e| Error::io(format!("cannot listen on {addr}"), &e))?;
    let local = listener.local_addr().map_err(|e| Error::io(format!("cannot listen on {addr}"), &e))?;
    reactor::defer_accept(&listener, DEFER_ACCEPT)
        .map_err(|e| Error::io(format!("cannot set up listening on {local}"), &e))?;
    reactor.services.tracker =
        Some(Registry::new(cfg, torrents.iter().map(|(h, _)| *h), random_seed(), Instant::now()));
    reactor
        .listen(listener, ListenKind::Tracker, max_conns)
        .map_err(|e| Error::io(format!("cannot listen on {local}"), &e))?;
    eprintln!("tracker listening on {local} (announce http://{local}/announce)");
    let mut udp = None;
    if let Some(port) = udp_port {
        let want = SocketAddr::new(addr.ip(), port);
        let bound = start_udp(reactor, want).map_err(|e| Error::io(format!("cannot serve UDP on {want}"), &e))?;
        eprintln!("udp tracker listening on {bound} (announce udp://{bound}/announce)");
        udp = Some(bound);
    }
    for (hash, name) in torrents {
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        eprintln!("tracker serving {name} (info hash {hex})");
    }
    Ok((local, udp))
}

/// Binds `addr` and serves the UDP tracker front end on it; returns the bound address.
fn start_udp(reactor: &mut Reactor, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let sock = std::net::UdpSocket::bind(addr)?;
    let local = sock.local_addr()?;
    let front = UdpFront::new(Instant::now())?;
    reactor.bind_udp(sock, DatagramKind::UdpTracker(Box::new(front)))?;
    Ok(local)
}

/// How many client connections to hold: what the open-files limit allows, keeping some for everything else.
pub fn connection_limit() -> usize {
    const RESERVED: u64 = 64;
    let fds = reactor::raise_fd_limit().unwrap_or(1024);
    fds.saturating_sub(RESERVED).clamp(16, 100_000) as usize
}

/// Seeds the peer-list shuffle; it only needs to differ between runs.
fn random_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}
