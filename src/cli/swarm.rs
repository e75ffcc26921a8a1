//! What `seed` and `leech` share: their options, the check of the data on disk (trusting a valid resume record),
//! the peer listener, and the loop that runs the session until it is done or stopped.

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::dht::DhtOptions;
use crate::bitfield::Bitfield;
use crate::error::{Error, Result};
use crate::metainfo::Metainfo;
use crate::progress;
use crate::resume;
use crate::storage::Storage;

/// Ports tried in turn when none is given, as other clients do.
pub const DEFAULT_PORTS: std::ops::RangeInclusive<u16> = 6881..=6889;

/// The options both commands take.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// `::` (the default) listens on IPv4 and IPv6 at once, or on IPv4 alone where the machine has no IPv6.
    pub bind: IpAddr,
    /// `None`: the first free of 6881..=6889.
    pub port: Option<u16>,
    pub peers: Vec<SocketAddr>,
    pub recheck: bool,
    pub max_peers: usize,
    /// `--max-upload-rate`: bytes per second served to all peers together (`None`: no limit).
    pub max_upload_rate: Option<u64>,
    /// Peer exchange (BEP 11), on unless `--no-pex` (never for a private torrent either way).
    pub pex: bool,
    /// The Mainline DHT (BEP 5): on unless `--no-dht` (never for a private torrent either way).
    pub dht: DhtOptions,
}

pub const SWARM_OPTIONS_HELP: &str =
    "  --bind ADDR            address to listen for peers on (default ::, every IPv4 and IPv6 address;
                         0.0.0.0 for IPv4 only, ::1 or 127.0.0.1 for this machine only)
  --port N               peer port (default: the first free of 6881-6889; 0 picks any free port)
  --peer ADDR:PORT       connect to this peer directly, [ADDR]:PORT for IPv6 (repeatable; with or without a tracker)
  --max-peers N          most connections at once (default 50)
  --max-upload-rate R    serve at most R bytes per second to all peers together (suffix K or M; default: no limit)
  --recheck              hash all data on disk again instead of trusting the resume record
  --no-pex               do not exchange peer addresses with peers (BEP 11; private torrents never do)
  --no-dht               do not use the Mainline DHT (BEP 5; private torrents never do); it runs on UDP
                         on the peer port's number
  --dht-bootstrap HOST:PORT  join the DHT through this node, [ADDR]:PORT for IPv6, instead of the default
                         routers (repeatable)
  --dht-state FILE       where the DHT routing table is kept between runs (default
                         $XDG_STATE_HOME/toybt/dht.dat, else ~/.local/state/toybt/dht.dat)
  -h, --help             print this help
";

impl SwarmOptions {
    /// On 127.0.0.1 with a free port and the default limits: for examples and tests.
    pub fn loopback() -> SwarmOptions {
        SwarmOptions {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: Some(0),
            peers: Vec::new(),
            recheck: false,
            max_peers: 50,
            max_upload_rate: None,
            pex: true,
            dht: DhtOptions::off(),
        }
    }

    pub fn parse(args: &mut pico_args::Arguments) -> Result<SwarmOptions> {
        let bind = args.opt_value_from_fn("--bind", super::ip_address)?.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let port = args.opt_value_from_str("--port")?;
        let peers = args.values_from_fn("--peer", |s| {
            s.parse::<SocketAddr>().map_err(|_| format!("--peer {s:?} is not an ADDRESS:PORT"))
        })?;
        let recheck = args.contains("--recheck");
        let max_peers: usize = args.opt_value_from_str("--max-peers")?.unwrap_or(50);
        if max_peers == 0 {
            return Err(Error::usage("--max-peers must be at least 1"));
        }
        let max_upload_rate =
            args.opt_value_from_fn("--max-upload-rate", crate::cli::create::parse_size)?.map(u64::from);
        if max_upload_rate == Some(0) {
            return Err(Error::usage("--max-upload-rate must be at least 1 byte per second"));
        }
        let pex = !args.contains("--no-pex");
        let dht = DhtOptions::parse(args)?;
        Ok(SwarmOptions { bind, port, peers, recheck, max_peers, max_upload_rate, pex, dht })
    }
}

/// Binds the peer listener: the given port, or the first free default one. On `::` it takes IPv4 and IPv6 peers (see
/// [`crate::reactor::bind_listener`]).
pub fn bind_peer_listener(opts: &SwarmOptions) -> Result<TcpListener> {
    let ports: Vec<u16> = match opts.port {
        Some(p) => vec![p],
        None => DEFAULT_PORTS.collect(),
    };
    let mut last = None;
    for port in ports {
        let addr = SocketAddr::new(opts.bind, port);
        match crate::reactor::bind_listener(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some((addr, e)),
        }
    }
    let (addr, e) = last.expect("at least one port was tried");
    Err(Error::io(format!("cannot listen for peers on {addr}"), &e))
}

/// Tries for a UDP port of the same number as a TCP port picked by the system (`--port 0`).
const SAME_PORT_TRIES: usize = 8;

/// Binds the peer listener and, with the DHT on, the DHT's UDP socket on the same address and port number: the
/// given port, or the first of the default ones where both are free. With `--port 0` the system picks the TCP
/// port and the UDP one must match it, so a few picks are tried.
pub fn bind_peer_sockets(opts: &SwarmOptions) -> Result<(TcpListener, Option<std::net::UdpSocket>)> {
    if !opts.dht.enabled {
        return Ok((bind_peer_listener(opts)?, None));
    }
    let ports: Vec<u16> = match opts.port {
        Some(0) => vec![0; SAME_PORT_TRIES],
        Some(p) => vec![p],
        None => DEFAULT_PORTS.collect(),
    };
    let mut last = None;
    for port in ports {
        let tcp = match bind_peer_listener(&SwarmOptions { port: Some(port), ..opts.clone() }) {
            Ok(l) => l,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let local = tcp.local_addr().map_err(|e| Error::io("peer listener", &e))?;
        match super::dht::bind_udp(local) {
            Ok(udp) => return Ok((tcp, Some(udp))),
            Err(e) => {
                last = Some(Error::io(format!("cannot open the DHT's UDP socket on {local} (or use --no-dht)"), &e))
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::runtime("no port to try".to_string())))
}

/// A BEP 20 peer id: `-TB0100-` and twelve random characters.
pub fn new_peer_id() -> [u8; 20] {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = *b"-TB0100-000000000000";
    let mut seed = random_u64();
    for b in &mut id[8..] {
        *b = ALPHABET[(seed % ALPHABET.len() as u64) as usize];
        seed = seed.rotate_right(6) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    id
}

/// Randomness for ids and shuffles, from the kernel; the clock and pid if it cannot be read.
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    let from_kernel = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf));
    if from_kernel.is_ok() {
        return u64::from_le_bytes(buf);
    }
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Where `seed`, `leech` and `share` keep the resume record of `meta`'s content at `content`: in the state folder
/// (`resume::record_path`), so the download folder holds exactly what the torrent names. A record an older toybt
/// left beside the content is moved there first, so it is read once more and never again beside the content. With
/// no state folder (no `$XDG_STATE_HOME` nor `$HOME`), or one that cannot be made, the record stays beside the content.
pub fn record_location(state: Option<&Path>, meta: &Metainfo, content: &Path) -> PathBuf {
    let legacy = resume::legacy_record_path(content);
    let Some(state) = state else { return legacy };
    let path = resume::record_path(state, &meta.info_hash, content);
    if let Some(folder) = path.parent()
        && let Err(e) = std::fs::create_dir_all(folder)
    {
        warn!("cannot make the state folder {}: {e}; keeping the resume record beside the data", folder.display());
        return legacy;
    }
    if path.exists() || !legacy.is_file() {
        return path;
    }
    // A rename across file systems fails: then a copy, and the old one removed only once the copy is whole.
    let moved = std::fs::rename(&legacy, &path).or_else(|_| {
        std::fs::copy(&legacy, &path)?;
        std::fs::remove_file(&legacy)
    });
    match moved {
        Ok(()) => {
            info!("moved the resume record {} to {}", legacy.display(), path.display());
            path
        }
        Err(e) => {
            warn!(
                "cannot move the resume record {} to {}: {e}; it stays where it is",
                legacy.display(),
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            legacy
        }
    }
}

/// Which pieces of the content at hand are verified, trusting the resume record at `record_path` where the files
/// still match it and hashing the rest; and the keeper that writes the record from here on. Nothing on disk (a fresh
/// download) skips hashing entirely. If anything was hashed, or the old record was unusable, a new record is written
/// at once (after fsyncing the files just checked), so a crash soon after start does not mean hashing them again.
pub fn check_data(
    meta: &Metainfo,
    storage: &mut Storage,
    record_path: PathBuf,
    stamps: &[Option<resume::FileStamp>],
    recheck: bool,
) -> (Bitfield, resume::Keeper) {
    let count = meta.piece_count();
    let mut to_check: Vec<bool> = vec![true; count as usize];
    let mut have = Bitfield::new(count);
    let nothing_on_disk = stamps.iter().all(Option::is_none);
    let mut record_unusable = false;
    match (!recheck).then(|| std::fs::read(&record_path)) {
        Some(Ok(bytes)) => match resume::decode(&bytes).and_then(|r| resume::plan(meta, &r, stamps)) {
            Ok(plan) => {
                for (i, trusted) in plan.trusted.iter().enumerate() {
                    if *trusted {
                        have.set(i as u32);
                    }
                    to_check[i] = false;
                }
                for f in plan.changed_files.iter().filter(|&&f| stamps[f].is_some()) {
                    info!("{} changed since the resume record; checking its pieces", storage.path(*f).display());
                    for p in resume::pieces_of_file(meta, *f) {
                        to_check[p] = true;
                        have.clear(p as u32);
                    }
                }
            }
            Err(why) => {
                warn!("ignoring the resume record {}: {why}; checking the data", record_path.display());
                record_unusable = true;
            }
        },
        Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
            warn!("cannot read the resume record {}: {e}; checking the data", record_path.display());
            record_unusable = true;
        }
        _ => {}
    }
    if nothing_on_disk {
        to_check.fill(false);
    }
    // A file that is not there (not selected, or not created yet) holds none of its pieces: nothing to read.
    for f in (0..meta.files.len()).filter(|&f| stamps[f].is_none() && !meta.files[f].padding) {
        for p in resume::pieces_of_file(meta, f) {
            to_check[p] = false;
            have.clear(p as u32);
        }
    }
    let total = to_check.iter().filter(|c| **c).count() as u32;
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut scratch = Vec::new();
    let mut done = 0u32;
    let mut next_report = started + Duration::from_secs(2);
    let mut hashed_files = vec![false; meta.files.len()];
    for index in 0..count {
        if !to_check[index as usize] {
            continue;
        }
        match storage.verify_piece(index, &mut scratch) {
            Ok(true) => {
                have.set(index);
            }
            Ok(false) => {}
            Err(e) => log::debug!("piece {index}: {e}"),
        }
        for span in storage.layout().piece_spans(index).into_iter().flatten().filter(|s| !s.padding) {
            hashed_files[span.file] = true;
        }
        done += 1;
        let now = Instant::now();
        if now >= next_report || done == total {
            next_report = now + Duration::from_secs(2);
            let line = format!("checking {}: {done}/{total} pieces", meta.name);
            if tty {
                crate::terminal::show(&line);
            } else {
                info!("{line}");
            }
        }
    }
    crate::terminal::finish();
    info!(
        "re-hashed {total} piece(s) in {:.1}s; {} of {count} verified ({} of {})",
        started.elapsed().as_secs_f64(),
        have.count(),
        progress::bytes(have.iter_ones().map(|i| meta.piece_size(i) as u64).sum()),
        progress::bytes(meta.total_length)
    );
    // What was just read may be in the page cache only (an earlier run was killed before its fsync): make it durable
    // before a record vouches for it.
    for (file, hashed) in hashed_files.iter().enumerate() {
        if *hashed && matches!(resume::stamp(storage.path(file)), Ok(Some(_))) {
            storage.mark_unsynced(file);
        }
    }
    let mut keeper = resume::Keeper::new(record_path, meta, storage);
    if (total > 0 || record_unusable)
        && let Err(e) = keeper.save(storage, have.as_wire())
    {
        warn!("{e}");
    }
    (have, keeper)
}

/// The stamps of every file of the torrent as it is on disk now (padding files count as absent).
pub fn file_stamps(meta: &Metainfo, content: &Path) -> Vec<Option<resume::FileStamp>> {
    meta.files
        .iter()
        .map(|f| {
            if f.padding {
                return None;
            }
            let path = if meta.multi_file {
                f.path.iter().fold(content.to_path_buf(), |p, c| p.join(c))
            } else {
                content.to_path_buf()
            };
            resume::stamp(&path).ok().flatten()
        })
        .collect()
}

/// The content path of a torrent downloaded into `dir`: `dir/NAME`.
pub fn content_in(dir: &Path, meta: &Metainfo) -> PathBuf {
    dir.join(&meta.name)
}

/// What differs between `seed` and `leech` when the session starts.
pub struct SessionPlan {
    pub meta: Metainfo,
    pub storage: Storage,
    pub have: Bitfield,
    pub opts: SwarmOptions,
    pub seed_time: Option<Duration>,
    pub resume: Option<resume::Keeper>,
    /// Also run the embedded tracker for this torrent on this port.
    pub tracker_port: Option<u16>,
}

/// Runs the torrent session on the loop until it finishes (seed time over) or is stopped (Ctrl-C, SIGTERM), then
/// prints the summary.
pub fn run_session(plan: SessionPlan) -> Result<()> {
    let dht_state = plan.opts.dht.state_file();
    run_loop(dht_state.as_deref(), || start_session(plan).map(|(reactor, _)| reactor))
}

/// Runs the loop that `start` builds until its session finishes or is stopped, then saves the DHT's routing table
/// to `dht_state` (if the loop runs a DHT node) and prints the summary. Signal handlers go in first: whoever reads
/// the start-up lines may signal us at once.
pub fn run_loop(dht_state: Option<&Path>, start: impl FnOnce() -> Result<crate::reactor::Reactor>) -> Result<()> {
    let pipe = crate::reactor::install_signals().map_err(|e| Error::io("cannot install signal handlers", &e))?;
    let mut reactor = start()?;
    reactor.watch_signals(pipe).map_err(|e| Error::io("cannot watch for signals", &e))?;
    let ran = reactor.run();
    // The last live line stays on screen as it was; the summary goes below it.
    crate::terminal::finish();
    super::dht::save_table(reactor.services.dht.as_ref().map(|d| &d.node), dht_state);
    ran.map_err(|e| Error::io("event loop failed", &e))?;
    let now = Instant::now();
    if let Some(why) = reactor.services.session().and_then(crate::torrent::Session::failure) {
        return Err(Error::runtime(why.to_string()));
    }
    if let Some(t) = reactor.services.torrent() {
        if t.was_leeching() {
            info!("{}", t.summary(now));
        } else {
            info!("uploaded {}", progress::bytes(t.uploaded()));
        }
        // Exact figures for scripts and tests.
        info!(
            "totals: downloaded={} uploaded={} hash_failures={} complete={} pieces={}",
            t.downloaded(),
            t.uploaded(),
            t.hash_failures(),
            t.is_complete(),
            t.verified_pieces()
        );
        if let Some(e) = t.disk_error() {
            return Err(Error::runtime(e.to_string()));
        }
    } else {
        info!("stopped before the metadata arrived");
    }
    Ok(())
}

/// How a session's progress reaches the person: a live line redrawn every second on a terminal, a log line every
/// five seconds otherwise.
fn progress_view() -> crate::reactor::Progress {
    let live = std::io::stderr().is_terminal();
    crate::reactor::Progress {
        every: if live { Duration::from_secs(1) } else { Duration::from_secs(5) },
        next: Instant::now() + if live { Duration::ZERO } else { Duration::from_secs(5) },
        show: if live {
            Box::new(|line: &str| crate::terminal::show(line))
        } else {
            Box::new(|line: &str| info!("{line}"))
        },
    }
}

/// Builds a loop hosting the session (and the embedded tracker if asked), listening for peers; returns it ready to
/// `run`, with the peer address. Prints the `peer listening on ADDR` line.
pub fn start_session(plan: SessionPlan) -> Result<(crate::reactor::Reactor, SocketAddr)> {
    let opts = plan.opts.clone();
    start_loop(&opts, |reactor, port| add_session(reactor, plan, port))
}

/// Binds the peer port (and the DHT's, the same number over UDP), builds a loop with the DHT node and whatever `add`
/// puts in it (given the port), and listens; prints the `peer listening on ADDR` line (and `dht listening on ADDR`).
pub fn start_loop(
    opts: &SwarmOptions,
    add: impl FnOnce(&mut crate::reactor::Reactor, u16) -> Result<()>,
) -> Result<(crate::reactor::Reactor, SocketAddr)> {
    use crate::reactor::{ListenKind, Reactor, Services};

    let (listener, dht_sock) = bind_peer_sockets(opts)?;
    let local = listener.local_addr().map_err(|e| Error::io("peer listener", &e))?;
    let mut reactor = Reactor::new(Services::default()).map_err(|e| Error::io("cannot start the event loop", &e))?;
    // Before the sessions: each is tracked in the DHT as it is added.
    if let Some(sock) = dht_sock {
        let state = opts.dht.state_file();
        super::dht::start_node(&mut reactor, sock, local.port(), &opts.dht.routers(), state.as_deref())?;
    }
    add(&mut reactor, local.port())?;
    reactor.services.progress = Some(progress_view());
    reactor
        .listen(listener, ListenKind::Peer, opts.max_peers)
        .map_err(|e| Error::io(format!("cannot listen for peers on {local}"), &e))?;
    eprintln!("peer listening on {local}");
    if reactor.services.dht.is_some() {
        eprintln!("dht listening on {local}");
    }
    log::debug!("SHA-1: {}", crate::sha1::implementation());
    Ok((reactor, local))
}

/// The settings of a session whose peers reach it on `peer_port`.
pub fn session_config(opts: &SwarmOptions, peer_port: u16, seed_time: Option<Duration>) -> crate::torrent::Config {
    let mut cfg = crate::torrent::Config::new(new_peer_id(), peer_port);
    cfg.max_peers = opts.max_peers;
    cfg.seed_time = seed_time;
    cfg.max_upload_rate = opts.max_upload_rate;
    cfg.pex = opts.pex;
    cfg.dht = opts.dht.enabled;
    cfg
}

/// Resolves tracker host names once, before the loop runs: the loop never waits on DNS.
pub fn resolve_trackers(reactor: &mut crate::reactor::Reactor, urls: Vec<crate::tracker::announce::TrackerUrl>) {
    use std::net::ToSocketAddrs;
    // Whether a udp tracker was resolved, and whether one is IPv6.
    let mut udp_v6: Option<bool> = None;
    for url in urls {
        let key = (url.host.clone(), url.port);
        if reactor.services.tracker_addrs.contains_key(&key) {
            continue;
        }
        match (url.host.as_str(), url.port).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => {
                reactor.services.tracker_addrs.insert(key, addr);
                if url.scheme == crate::tracker::announce::Scheme::Udp {
                    udp_v6 = Some(udp_v6.unwrap_or(false) || addr.is_ipv6());
                }
            }
            _ => warn!("cannot resolve tracker host {}; it will be skipped", url.host),
        }
    }
    if let Some(v6) = udp_v6
        && let Err(e) = open_udp_announce_socket(reactor, v6)
    {
        warn!("cannot open a UDP socket for udp trackers: {e}");
    }
}

/// Binds the one datagram socket every UDP announce of the loop goes through, if it is not there yet: IPv4 only,
/// unless an IPv6 tracker needs a dual-stack socket (then IPv4 trackers are reached by their mapped addresses).
pub fn open_udp_announce_socket(reactor: &mut crate::reactor::Reactor, v6: bool) -> std::io::Result<()> {
    use crate::reactor::{DatagramKind, UdpAnnounceSocket};
    use crate::tracker::udp::UdpAnnouncer;
    // One socket per loop: a session added later with an IPv6 tracker where an IPv4 socket is open gets a clear
    // failed announce from the announcer.
    if reactor.services.udp_announce.is_some() {
        return Ok(());
    }
    let sock = if v6 { std::net::UdpSocket::bind("[::]:0")? } else { std::net::UdpSocket::bind("0.0.0.0:0")? };
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32);
    let id = reactor.bind_udp(sock, DatagramKind::UdpAnnounce)?;
    reactor.services.udp_announce = Some(UdpAnnounceSocket { id, announcer: UdpAnnouncer::new(seed, v6) });
    Ok(())
}

/// Adds a torrent session (and its embedded tracker, if the plan asks for one) to a loop whose peers reach it on
/// `peer_port`. Sessions share the loop and the peer port: an incoming peer joins the one its handshake names.
pub fn add_session(reactor: &mut crate::reactor::Reactor, plan: SessionPlan, peer_port: u16) -> Result<()> {
    let SessionPlan { meta, storage, have, opts, seed_time, resume, tracker_port } = plan;
    let mut cfg = session_config(&opts, peer_port, seed_time);
    cfg.resume = resume;
    if let Some(port) = tracker_port {
        let ip = if opts.bind.is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { opts.bind };
        let tracker_cfg = crate::tracker::Config::default();
        let (addr, _) = crate::cli::tracker::start(
            reactor,
            SocketAddr::new(opts.bind, port),
            Some(port),
            tracker_cfg,
            &[(meta.info_hash, meta.name.clone())],
            crate::cli::tracker::connection_limit(),
        )?;
        cfg.extra_trackers.push(format!("http://{}/announce", SocketAddr::new(ip, addr.port())));
    }
    let mut torrent = crate::torrent::Torrent::new(meta, storage, have, cfg, Instant::now())?;
    resolve_trackers(reactor, torrent.tracker_urls());
    torrent.add_peer_addrs(opts.peers.iter().copied());
    reactor.services.add_torrent(torrent);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<SwarmOptions, String> {
        let mut args = pico_args::Arguments::from_vec(args.iter().map(|s| std::ffi::OsString::from(*s)).collect());
        SwarmOptions::parse(&mut args).map_err(|e| e.to_string())
    }

    #[test]
    fn the_default_bind_is_every_address_of_both_families() {
        assert_eq!(parse(&[]).unwrap().bind, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }

    #[test]
    fn bind_takes_either_family() {
        for (text, want) in [
            ("::", IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            ("::1", IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ("0.0.0.0", IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ("127.0.0.1", IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ] {
            assert_eq!(parse(&["--bind", text]).unwrap().bind, want, "--bind {text}");
        }
        assert!(parse(&["--bind", "[::1]"]).unwrap_err().contains("not an IP address"));
    }

    #[test]
    fn peers_take_ipv6_in_brackets() {
        let opts =
            parse(&["--peer", "[::1]:6881", "--peer", "127.0.0.1:6882", "--peer", "[2001:db8::7]:51413"]).unwrap();
        let want: Vec<SocketAddr> = vec![
            "[::1]:6881".parse().unwrap(),
            "127.0.0.1:6882".parse().unwrap(),
            "[2001:db8::7]:51413".parse().unwrap(),
        ];
        assert_eq!(opts.peers, want);
        assert!(opts.peers[0].is_ipv6());
        // Without brackets the port cannot be told from the address.
        assert!(parse(&["--peer", "::1:6881"]).unwrap_err().contains("is not an ADDRESS:PORT"));
    }

    #[test]
    fn the_peer_listener_on_any_address_takes_both_families() {
        let opts = SwarmOptions { bind: IpAddr::V6(Ipv6Addr::UNSPECIFIED), ..SwarmOptions::loopback() };
        let l = bind_peer_listener(&opts).unwrap();
        let local = l.local_addr().unwrap();
        // The line tests and scripts read: the port is what follows the last colon.
        let line = format!("peer listening on {local}");
        let port: u16 = line.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(port, local.port());
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        if local.is_ipv6() {
            assert_eq!(line, format!("peer listening on [::]:{port}"));
            std::net::TcpStream::connect((Ipv6Addr::LOCALHOST, port)).unwrap();
        }
    }

    #[test]
    fn the_peer_listener_on_ipv6_loopback_is_ipv6_only() {
        let opts = SwarmOptions { bind: IpAddr::V6(Ipv6Addr::LOCALHOST), ..SwarmOptions::loopback() };
        let Ok(l) = bind_peer_listener(&opts) else { return }; // no IPv6 on this machine
        let local = l.local_addr().unwrap();
        assert_eq!(local.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        std::net::TcpStream::connect(local).unwrap();
        assert!(std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, local.port())).is_err());
    }

    fn meta(info_hash: [u8; 20]) -> Metainfo {
        Metainfo::single_file_for_tests(info_hash, "a.bin", &[0; 10], 16384)
    }

    #[test]
    fn the_record_lives_in_the_state_folder_keyed_by_torrent_and_content_path() {
        let state = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let content = data.path().join("a.bin");
        let here = record_location(Some(state.path()), &meta([0xab; 20]), &content);
        assert!(here.starts_with(state.path().join("resume")), "{}", here.display());
        let name = here.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&"ab".repeat(20)) && name.ends_with(".resume"), "{name}");
        // Another spelling of the same place, the same record; another place or torrent, another record.
        let spelled = data.path().join(".").join("a.bin");
        assert_eq!(record_location(Some(state.path()), &meta([0xab; 20]), &spelled), here);
        assert_ne!(record_location(Some(state.path()), &meta([0xab; 20]), &data.path().join("b.bin")), here);
        assert_ne!(record_location(Some(state.path()), &meta([0xcd; 20]), &content), here);
        // Without a state folder it stays beside the content, as before.
        assert_eq!(record_location(None, &meta([0xab; 20]), &content), data.path().join("a.bin.toybt"));
        assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0, "nothing written beside the content");
    }

    #[test]
    fn a_record_left_beside_the_content_is_moved_to_the_state_folder_once() {
        let state = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let content = data.path().join("a.bin");
        let legacy = data.path().join("a.bin.toybt");
        std::fs::write(&legacy, b"old record").unwrap();
        let here = record_location(Some(state.path()), &meta([0xab; 20]), &content);
        assert_eq!(std::fs::read(&here).unwrap(), b"old record");
        assert!(!legacy.exists(), "moved, not copied");
        // One in the state folder already wins over a stray one beside the content, which is left alone.
        std::fs::write(&legacy, b"stray").unwrap();
        assert_eq!(record_location(Some(state.path()), &meta([0xab; 20]), &content), here);
        assert_eq!(std::fs::read(&here).unwrap(), b"old record");
    }
}
