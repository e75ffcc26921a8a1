//! `toybt daemon`: every torrent in one loop on one peer port, driven over Transmission's RPC (transmission-remote,
//! the status page on `/`), with its state in the state folder so a restart brings every torrent back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use super::dht::DhtOptions;
use super::swarm::{self, SwarmOptions};
use crate::daemon::access::Access;
use crate::daemon::store::Store;
use crate::daemon::{Daemon, DaemonConfig};
use crate::error::{Error, Result};
use crate::reactor::{Ctl, ListenKind, Reactor, Services};

const HELP: &str = "\
toybt daemon - run many torrents in one process, driven by Transmission's RPC

Usage:
  toybt daemon [options]

Every torrent shares one peer port. The RPC (http://RPC-BIND:RPC-PORT/transmission/rpc) speaks the
subset of Transmission's protocol that transmission-remote uses; http://RPC-BIND:RPC-PORT/ is a status
page and /metrics is for Prometheus. Each torrent's .torrent, resume record and settings live in the
state folder, so a restart brings every torrent back as it was without hashing.

Options:
  --bind ADDR            address to listen for peers on (default ::)
  --port N               peer port (default: the first free of 6881-6889; 0 picks any free port)
  --rpc-bind ADDR        address of the RPC and status page (default 127.0.0.1; anything but loopback
                         needs --rpc-auth)
  --rpc-port N           RPC port (default 9091; 0 picks any free port)
  --rpc-auth USER:PASS   require these HTTP Basic credentials
  --rpc-host NAME        a host name the RPC answers to besides addresses and localhost (repeatable)
  --download-dir DIR     where torrents are downloaded unless told otherwise (default: the current folder)
  --state-dir DIR        the state folder (default $XDG_STATE_HOME/toybt, else ~/.local/state/toybt)
  --watch DIR            add every .torrent file dropped in DIR, renaming it .added (.invalid if it is not one)
  --max-peers N          most peer connections, all torrents together (default 200)
  --max-upload-rate R    bytes per second served, all torrents together (suffix K or M; default: no limit)
  --max-download-rate R  bytes per second downloaded, all torrents together (suffix K or M; default: no limit)
  --no-pex               do not exchange peer addresses with peers (BEP 11)
  --no-dht               do not use the Mainline DHT (BEP 5; private torrents never do); one node serves
                         every torrent, on UDP at the peer port's number
  --dht-bootstrap HOST:PORT  join the DHT through this node, [ADDR]:PORT for IPv6, instead of the default
                         routers (repeatable)
  --dht-state FILE       where the DHT routing table is kept (default STATE-DIR/daemon/dht.dat)
  -h, --help             print this help
";

/// The daemon's DHT routing table, in its folder of the state folder.
const DHT_TABLE_FILE: &str = "dht.dat";

/// RPC connections at once (past that the longest-silent one is closed): each may buffer a 16 MiB request.
const RPC_CONNECTIONS: usize = 32;

/// The state folder when none is given: `$XDG_STATE_HOME/toybt`, else `~/.local/state/toybt`.
pub fn default_state_dir() -> Option<PathBuf> {
    let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    match from("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
        Some(state) => Some(state.join("toybt")),
        None => from("HOME").map(|home| home.join(".local").join("state").join("toybt")),
    }
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p);
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io("cannot read the current folder", &e))?;
    Ok(cwd.join(p))
}

fn rate(s: &str) -> std::result::Result<u64, String> {
    match crate::cli::create::parse_size(s)? {
        0 => Err("a rate must be at least 1 byte per second".into()),
        n => Ok(u64::from(n)),
    }
}

pub fn run(mut args: pico_args::Arguments) -> Result<()> {
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return Ok(());
    }
    let bind = args.opt_value_from_fn("--bind", super::ip_address)?.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let port: Option<u16> = args.opt_value_from_str("--port")?;
    let rpc_bind = args.opt_value_from_fn("--rpc-bind", super::ip_address)?.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let rpc_port: u16 = args.opt_value_from_str("--rpc-port")?.unwrap_or(9091);
    let rpc_auth: Option<String> = args.opt_value_from_str("--rpc-auth")?;
    let rpc_hosts: Vec<String> = args.values_from_str("--rpc-host")?;
    let download_dir: Option<PathBuf> = args.opt_value_from_str("--download-dir")?;
    let state_dir: Option<PathBuf> = args.opt_value_from_str("--state-dir")?;
    let watch: Option<PathBuf> = args.opt_value_from_str("--watch")?;
    let max_peers: usize = args.opt_value_from_str("--max-peers")?.unwrap_or(200);
    let max_upload_rate = args.opt_value_from_fn("--max-upload-rate", rate)?;
    let max_download_rate = args.opt_value_from_fn("--max-download-rate", rate)?;
    let pex = !args.contains("--no-pex");
    let dht = DhtOptions::parse(&mut args)?;
    super::finish(args)?;

    if max_peers == 0 {
        return Err(Error::usage("--max-peers must be at least 1"));
    }
    if let Some(auth) = &rpc_auth
        && !auth.contains(':')
    {
        return Err(Error::usage("--rpc-auth takes USER:PASS"));
    }
    if !rpc_bind.is_loopback() && rpc_auth.is_none() {
        return Err(Error::usage(format!(
            "--rpc-bind {rpc_bind} lets other machines drive this daemon: give --rpc-auth USER:PASS as well"
        )));
    }
    let state_dir = match state_dir {
        Some(d) => absolute(d)?,
        None => default_state_dir()
            .ok_or_else(|| Error::usage("neither XDG_STATE_HOME nor HOME is set: give --state-dir"))?,
    };
    let download_dir = absolute(download_dir.unwrap_or_else(|| PathBuf::from(".")))?;
    let watch = watch.map(absolute).transpose()?;
    if let Some(w) = &watch
        && !w.is_dir()
    {
        return Err(Error::bad_input(format!("--watch {}: not a folder", w.display())));
    }

    let pipe = crate::reactor::install_signals().map_err(|e| Error::io("cannot install signal handlers", &e))?;
    let store = Store::open(&state_dir).map_err(|e| Error::io(format!("state folder {}", state_dir.display()), &e))?;
    let settings = store.load_settings().unwrap_or_else(|why| {
        log::warn!("{why}; starting with the default settings");
        Default::default()
    });
    // The daemon's own table beside its other state, so a `seed` or `leech` running at the same time keeps its own.
    let dht_state = dht.enabled.then(|| dht.state.clone().unwrap_or_else(|| store.dir().join(DHT_TABLE_FILE)));
    let peer_opts = SwarmOptions { bind, port, max_peers, dht: dht.clone(), ..SwarmOptions::loopback() };
    let (peer_listener, dht_sock) = swarm::bind_peer_sockets(&peer_opts)?;
    let peer_local = peer_listener.local_addr().map_err(|e| Error::io("peer listener", &e))?;
    let rpc_addr = SocketAddr::new(rpc_bind, rpc_port);
    let rpc_listener = crate::reactor::bind_listener(rpc_addr)
        .map_err(|e| Error::io(format!("cannot listen for RPC on {rpc_addr}"), &e))?;
    let rpc_local = rpc_listener.local_addr().map_err(|e| Error::io("rpc listener", &e))?;

    let mut reactor = Reactor::new(Services::default()).map_err(|e| Error::io("cannot start the event loop", &e))?;
    // One socket for every udp:// announce of every torrent; dual-stack where the machine has IPv6.
    if swarm::open_udp_announce_socket(&mut reactor, true).is_err()
        && let Err(e) = swarm::open_udp_announce_socket(&mut reactor, false)
    {
        log::warn!("cannot open a UDP socket for udp trackers: {e}");
    }
    // Before the torrents are restored: each is tracked in the DHT as its session is added.
    if let Some(sock) = dht_sock {
        super::dht::start_node(&mut reactor, sock, peer_local.port(), &dht.routers(), dht_state.as_deref())?;
    }
    let cfg = DaemonConfig {
        peer_port: peer_local.port(),
        peer_id: swarm::new_peer_id(),
        max_peers,
        max_upload_rate,
        max_download_rate,
        download_dir,
        watch,
        pex,
        dht: dht.enabled,
        state_dir,
    };
    let access = Access { credentials: rpc_auth, allowed_hosts: rpc_hosts, session_id: session_id() };
    let (loaded, problems) = store.load_all();
    for p in problems {
        log::warn!("{p}");
    }
    let now = Instant::now();
    let mut daemon = Daemon::new(cfg, access, store, settings, now);
    daemon.restore(loaded, now, &mut reactor.services, &mut Ctl::default());
    reactor.services.daemon = Some(Box::new(daemon));
    reactor
        .listen(peer_listener, ListenKind::Peer, max_peers)
        .map_err(|e| Error::io(format!("cannot listen for peers on {peer_local}"), &e))?;
    reactor
        .listen(rpc_listener, ListenKind::Rpc, RPC_CONNECTIONS)
        .map_err(|e| Error::io(format!("cannot listen for RPC on {rpc_local}"), &e))?;
    eprintln!("peer listening on {peer_local}");
    if reactor.services.dht.is_some() {
        eprintln!("dht listening on {peer_local}");
    }
    eprintln!("rpc listening on {rpc_local} (http://{rpc_local}/)");
    reactor.watch_signals(pipe).map_err(|e| Error::io("cannot watch for signals", &e))?;
    let ran = reactor.run();
    super::dht::save_table(reactor.services.dht.as_ref().map(|d| &d.node), dht_state.as_deref());
    ran.map_err(|e| Error::io("event loop failed", &e))?;
    log::info!("daemon stopped");
    Ok(())
}

/// A random id the RPC's clients must echo (a page on another site cannot read it).
fn session_id() -> String {
    (0..3).map(|_| format!("{:016x}", swarm::random_u64())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn relative_folders_become_absolute() {
        let p = absolute(PathBuf::from("x")).unwrap();
        assert!(p.is_absolute() && p.ends_with("x"));
        assert_eq!(absolute(PathBuf::from("/a/b")).unwrap(), Path::new("/a/b"));
    }
}
