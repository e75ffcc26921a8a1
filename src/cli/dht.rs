//! The Mainline DHT on the command line: the `--no-dht`, `--dht-bootstrap` and `--dht-state` options of `seed` and
//! `leech`, starting a node on a loop (routers resolved at start-up, the saved routing table loaded) and saving its
//! table at the end; and `toybt dht`, a bare node.

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::dht::{self, Node};
use crate::error::{Error, Result};
use crate::reactor::{DatagramKind, DhtSocket, Reactor, Services, UdpId};

/// The routing table of `seed` and `leech`, in the state folder.
const TABLE_FILE: &str = "dht.dat";
/// The routing table of `toybt dht`: its own file, so a bare node and a client on one machine keep their own ids.
const BARE_TABLE_FILE: &str = "dht-node.dat";
/// A saved table larger than this is not ours (the real one is a few KiB): refused before it is read.
const MAX_TABLE_FILE: u64 = 1 << 20;

const HELP: &str = "\
toybt dht - run a bare Mainline DHT node (BEP 5)

Usage:
  toybt dht [--bind ADDR] [--port N] [--bootstrap HOST:PORT]... [--state FILE]

A node that answers other nodes and keeps a routing table, with no torrent of its own: the bootstrap
node of a private network, or a test fixture. It prints `dht listening on ADDR:PORT` on stderr at start;
on a terminal a status line shows the routing table's size and the queries per second. Ctrl-C or
SIGTERM stop it, and its routing table is saved so a restart needs no bootstrap node.

Options:
  --bind ADDR               address to listen on (default ::, IPv4 and IPv6; 0.0.0.0 for IPv4 only)
  --port N                  UDP port (default 6881; 0 picks a free one)
  --bootstrap HOST:PORT     a node to join the DHT through, [ADDR]:PORT for IPv6 (repeatable); without
                            one the node starts alone and waits to be contacted
  --state FILE              where the routing table is kept (default $XDG_STATE_HOME/toybt/dht-node.dat,
                            else ~/.local/state/toybt/dht-node.dat)
  -h, --help                print this help
";

/// How `seed` and `leech` use the DHT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtOptions {
    /// On unless `--no-dht`.
    pub enabled: bool,
    /// `--dht-bootstrap`: replaces [`dht::DEFAULT_ROUTERS`] when given.
    pub bootstrap: Vec<String>,
    /// `--dht-state`; `None`: the default file in the state folder.
    pub state: Option<PathBuf>,
}

impl DhtOptions {
    /// No DHT at all: for examples and tests, which must never reach the public routers.
    pub fn off() -> DhtOptions {
        DhtOptions { enabled: false, bootstrap: Vec::new(), state: None }
    }

    pub fn parse(args: &mut pico_args::Arguments) -> Result<DhtOptions> {
        let enabled = !args.contains("--no-dht");
        let bootstrap = args.values_from_fn("--dht-bootstrap", |s| check_host_port("--dht-bootstrap", s))?;
        let state: Option<PathBuf> = args.opt_value_from_str("--dht-state")?;
        if !enabled && (!bootstrap.is_empty() || state.is_some()) {
            return Err(Error::usage("--no-dht excludes --dht-bootstrap and --dht-state"));
        }
        Ok(DhtOptions { enabled, bootstrap, state })
    }

    /// The nodes to join through: `--dht-bootstrap`, else the default routers.
    pub fn routers(&self) -> Vec<String> {
        if self.bootstrap.is_empty() {
            dht::DEFAULT_ROUTERS.iter().map(|s| s.to_string()).collect()
        } else {
            self.bootstrap.clone()
        }
    }

    /// Where the routing table is kept: `--dht-state`, else the state folder's file; `None` when there is no state
    /// folder (no `HOME`) or the DHT is off.
    pub fn state_file(&self) -> Option<PathBuf> {
        if !self.enabled {
            return None;
        }
        self.state.clone().or_else(|| crate::state_dir::state_dir().map(|d| d.join(TABLE_FILE)))
    }
}

/// Checks that `s` looks like `HOST:PORT` (`[ADDR]:PORT` for IPv6) with a port from 1 to 65535; the name itself is
/// resolved at start-up, where failing is not fatal.
fn check_host_port(option: &str, s: &str) -> std::result::Result<String, String> {
    let bad = || format!("{option} {s:?} is not a HOST:PORT");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || (host.contains(':') && !bracketed) || host == "[]" {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(s.to_string()),
        _ => Err(bad()),
    }
}

/// Resolves bootstrap names once, at start-up (the loop never waits on DNS). A name that does not resolve is logged
/// and skipped: the saved table, or peers' `port` messages, may do without it.
pub fn resolve(names: &[String]) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    let mut addrs = Vec::new();
    for name in names {
        match name.to_socket_addrs() {
            Ok(found) => {
                let before = addrs.len();
                addrs.extend(found.map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())));
                if addrs.len() == before {
                    warn!("dht bootstrap node {name} has no address; skipping it");
                }
            }
            Err(e) => warn!("cannot resolve dht bootstrap node {name} ({e}); skipping it"),
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// A node from the table saved at `state`, or a new one: no file starts fresh quietly, an unreadable or corrupt one
/// with a warning.
pub fn load_node(now: Instant, state: Option<&Path>) -> Node {
    let config = dht::Config { id: None, seed: super::swarm::random_u64() };
    let Some(path) = state else { return Node::new(now, config) };
    let bytes = match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_TABLE_FILE => Err(format!("{} bytes is too large for a routing table", m.len())),
        Ok(_) => std::fs::read(path).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Node::new(now, config),
        Err(e) => Err(e.to_string()),
    };
    match bytes.and_then(|b| Node::from_saved(now, config.clone(), &b)) {
        Ok(node) => {
            info!("dht routing table loaded from {}", path.display());
            node
        }
        Err(why) => {
            warn!("ignoring the dht routing table {}: {why}; starting with an empty one", path.display());
            Node::new(now, config)
        }
    }
}

/// Writes the node's routing table to `state` atomically (creating its folder); a failure is a warning, never an
/// error of the run.
pub fn save_table(node: Option<&Node>, state: Option<&Path>) {
    let (Some(node), Some(path)) = (node, state) else { return };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        warn!("cannot save the dht routing table: {}: {e}", dir.display());
        return;
    }
    match crate::resume::write_atomic(path, &node.save()) {
        Ok(()) => info!("dht routing table ({} nodes) saved to {}", node.stats().nodes, path.display()),
        Err(e) => warn!("cannot save the dht routing table to {}: {e}", path.display()),
    }
}

/// Binds a UDP socket on `addr`; on `::` where the machine has no IPv6, on IPv4 alone (as the peer listener does).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    match UdpSocket::bind(addr) {
        Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && crate::reactor::ipv6_unavailable(&e) => {
            warn!("cannot use {addr} for the dht ({e}); IPv4 only");
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, addr.port()))
        }
        bound => bound,
    }
}

/// Puts a DHT node on `reactor` behind `sock` (already bound): loaded from `state`, joining through `routers`
/// (resolved here), announcing our torrents on `peer_port`. Sessions added after this use it.
pub fn start_node(
    reactor: &mut Reactor,
    sock: UdpSocket,
    peer_port: u16,
    routers: &[String],
    state: Option<&Path>,
) -> Result<UdpId> {
    let local = sock.local_addr().map_err(|e| Error::io("dht socket", &e))?;
    let now = Instant::now();
    let node = load_node(now, state);
    let id_hex: String = node.id().iter().map(|b| format!("{b:02x}")).collect();
    let id = reactor.bind_udp(sock, DatagramKind::Dht).map_err(|e| Error::io(format!("dht socket on {local}"), &e))?;
    let mut d = DhtSocket::new(id, node, peer_port);
    for addr in resolve(routers) {
        d.node.add_node(now, addr);
    }
    reactor.services.dht = Some(d);
    reactor.wake_datagram(id);
    log::debug!("dht node {id_hex} on udp {local}");
    Ok(id)
}

/// `toybt dht`.
pub fn run(mut args: pico_args::Arguments) -> Result<()> {
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return Ok(());
    }
    let bind = args.opt_value_from_fn("--bind", super::ip_address)?.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let port: u16 = args.opt_value_from_str("--port")?.unwrap_or(6881);
    let bootstrap = args.values_from_fn("--bootstrap", |s| check_host_port("--bootstrap", s))?;
    let state: Option<PathBuf> = args.opt_value_from_str("--state")?;
    super::finish(args)?;
    let state = state.or_else(|| crate::state_dir::state_dir().map(|d| d.join(BARE_TABLE_FILE)));

    let pipe = crate::reactor::install_signals().map_err(|e| Error::io("cannot install signal handlers", &e))?;
    let addr = SocketAddr::new(bind, port);
    let sock = bind_udp(addr).map_err(|e| Error::io(format!("cannot listen for dht nodes on {addr}"), &e))?;
    let local = sock.local_addr().map_err(|e| Error::io("dht socket", &e))?;
    let mut reactor = Reactor::new(Services::default()).map_err(|e| Error::io("cannot start the event loop", &e))?;
    start_node(&mut reactor, sock, local.port(), &bootstrap, state.as_deref())?;
    if std::io::stderr().is_terminal() {
        reactor.services.progress = Some(crate::reactor::Progress {
            every: Duration::from_secs(1),
            next: Instant::now(),
            show: Box::new(|line: &str| crate::terminal::show(line)),
        });
    }
    reactor.watch_signals(pipe).map_err(|e| Error::io("cannot watch for signals", &e))?;
    eprintln!("dht listening on {local}");
    let ran = reactor.run();
    crate::terminal::finish();
    save_table(reactor.services.dht.as_ref().map(|d| &d.node), state.as_deref());
    ran.map_err(|e| Error::io("event loop failed", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<DhtOptions, String> {
        let mut args = pico_args::Arguments::from_vec(args.iter().map(|s| std::ffi::OsString::from(*s)).collect());
        DhtOptions::parse(&mut args).map_err(|e| e.to_string())
    }

    #[test]
    fn the_dht_is_on_with_the_default_routers_unless_told_otherwise() {
        let o = parse(&[]).unwrap();
        assert!(o.enabled);
        assert_eq!(o.routers(), dht::DEFAULT_ROUTERS.to_vec());
        assert!(!parse(&["--no-dht"]).unwrap().enabled);
        assert_eq!(parse(&["--no-dht"]).unwrap().state_file(), None, "nothing is kept with the DHT off");
    }

    #[test]
    fn bootstrap_nodes_replace_the_routers_and_must_look_like_host_port() {
        let o =
            parse(&["--dht-bootstrap", "127.0.0.1:7000", "--dht-bootstrap", "[::1]:7001", "--dht-bootstrap", "a.b:1"])
                .unwrap();
        assert_eq!(o.routers(), vec!["127.0.0.1:7000", "[::1]:7001", "a.b:1"]);
        for bad in ["127.0.0.1", "host:", ":6881", "host:0", "host:65536", "::1:6881", "[]:6881"] {
            let e = parse(&["--dht-bootstrap", bad]).unwrap_err();
            assert!(e.contains("is not a HOST:PORT"), "{bad}: {e}");
        }
        assert!(parse(&["--no-dht", "--dht-bootstrap", "a:1"]).unwrap_err().contains("excludes"));
    }

    #[test]
    fn the_state_file_is_the_option_or_the_state_folders() {
        let o = parse(&["--dht-state", "/tmp/x/table.dat"]).unwrap();
        assert_eq!(o.state_file(), Some(PathBuf::from("/tmp/x/table.dat")));
        let default = parse(&[]).unwrap().state_file();
        assert_eq!(default, crate::state_dir::state_dir().map(|d| d.join("dht.dat")));
    }

    #[test]
    fn names_that_do_not_resolve_are_skipped() {
        let got = resolve(&["127.0.0.1:7000".into(), "127.0.0.1:not-a-port".into(), "127.0.0.1:7000".into()]);
        assert_eq!(got, vec!["127.0.0.1:7000".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn a_saved_table_comes_back_and_a_corrupt_one_starts_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let path = dir.path().join("sub").join("dht.dat");
        let fresh = load_node(now, Some(&path));
        save_table(Some(&fresh), Some(&path));
        assert_eq!(load_node(now, Some(&path)).id(), fresh.id(), "the saved table brings its id back");
        let saved = std::fs::read(&path).unwrap();
        std::fs::write(&path, &saved[..5]).unwrap();
        assert_ne!(load_node(now, Some(&path)).id(), fresh.id(), "a cut table is not trusted");
        std::fs::write(&path, vec![0u8; MAX_TABLE_FILE as usize + 1]).unwrap();
        assert_ne!(load_node(now, Some(&path)).id(), fresh.id(), "nor one too large to be a table");
    }
}
