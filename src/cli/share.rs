//! `toybt share PATH`: one command that makes the torrent, runs its tracker (HTTP and UDP) and seeds it, and prints
//! the magnet link; with `--hosts N` it exits once N peers have completed the download. The way to push one build
//! artefact to N machines: run this, hand the link to the machines, wait for it to exit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use log::info;

use super::swarm::{self, SWARM_OPTIONS_HELP, SessionPlan, SwarmOptions};
use crate::bitfield::Bitfield;
use crate::create::{self, Options};
use crate::error::{Error, Result};
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::resume;
use crate::storage::{OpenMode, Storage};

const HELP: &str = "\
toybt share - make a torrent of PATH, run its tracker, seed it, and print its magnet link

Usage:
  toybt share PATH [--tracker-port N] [--hosts N] [--private] [-o OUT.torrent] [options]

Hashes PATH (a file or a folder), starts a tracker for it (HTTP and UDP on the same port number), seeds it,
and prints the magnet link on stdout (its tracker as tr, this process as x.pe) and the .torrent's path on
stderr. Give the link to the machines that should get PATH (`toybt leech LINK`, or any client).

Options:
  --tracker-port N       port of the tracker, HTTP and UDP (default 6969; 0 picks free ports)
  --hosts N              exit 0 once N peers have completed the download (told by their `completed`
                         announces); default: seed until interrupted
  --host HOST            the address or name other machines reach this one by, for the tracker URLs and
                         x.pe (default: the --bind address, or this machine's first non-loopback IPv4 address)
  --private              mark the torrent private (BEP 27: peers only from its tracker, no PEX or DHT)
  -o, --output FILE      where to write the .torrent (default: PATH.torrent beside PATH)
  -l, --piece-length N   piece length in bytes (suffix K or M; default: about 1000-2000 pieces)
";

pub fn run(mut args: pico_args::Arguments) -> Result<()> {
    if args.contains(["-h", "--help"]) {
        print!("{HELP}{SWARM_OPTIONS_HELP}");
        return Ok(());
    }
    let opts = SwarmOptions::parse(&mut args)?;
    let tracker_port: u16 = args.opt_value_from_str("--tracker-port")?.unwrap_or(6969);
    let hosts: Option<u64> = args.opt_value_from_str("--hosts")?;
    if hosts == Some(0) {
        return Err(Error::usage("--hosts must be at least 1"));
    }
    let host: Option<String> = args.opt_value_from_str("--host")?;
    let private = args.contains("--private");
    let output: Option<PathBuf> = args.opt_value_from_os_str(["-o", "--output"], |s| Ok::<_, String>(s.into()))?;
    let piece_length = args.opt_value_from_fn(["-l", "--piece-length"], super::create::parse_size)?;
    let path: PathBuf = args
        .free_from_os_str(|s| Ok::<_, String>(s.into()))
        .map_err(|_| Error::usage("give the file or folder to share"))?;
    super::finish(args)?;

    let content = create::scan(&path)?;
    let piece_length = create::choose_piece_length(&content, piece_length)?;
    let total = content.total_length;
    info!("hashing {} ({} bytes)", content.name, total);
    let pieces = create::hash_pieces(&content, piece_length, &mut |_| {})?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let base = Options {
        piece_length: Some(piece_length),
        private,
        creation_date: Some(now.as_secs() as i64),
        ..Options::default()
    };
    // The info hash does not depend on the trackers, so the tracker can start before they are written in.
    let unannounced = Metainfo::from_bytes(&create::encode(&content, piece_length, &pieces, &base))
        .map_err(|e| Error::bad_input(format!("cannot make a valid torrent of {}: {e}", path.display())))?;
    let torrent_path = output.unwrap_or_else(|| beside(&path, "torrent"));
    let announce_host = match host {
        Some(h) => h,
        None => default_host(opts.bind).to_string(),
    };

    let dht_state = opts.dht.state_file();
    swarm::run_loop(dht_state.as_deref(), || {
        let peer_opts = opts.clone();
        let (reactor, _) = swarm::start_loop(&opts, |reactor, peer_port| {
            let (http, udp) = crate::cli::tracker::start(
                reactor,
                SocketAddr::new(opts.bind, tracker_port),
                Some(tracker_port),
                crate::tracker::Config::default(),
                &[(unannounced.info_hash, unannounced.name.clone())],
                crate::cli::tracker::connection_limit(),
            )?;
            let mut tiers = vec![vec![format!("http://{}/announce", host_port(&announce_host, http.port()))]];
            if let Some(udp) = udp {
                tiers.push(vec![format!("udp://{}/announce", host_port(&announce_host, udp.port()))]);
            }
            let bytes = create::encode(&content, piece_length, &pieces, &Options { trackers: tiers, ..base.clone() });
            let meta = Metainfo::from_bytes(&bytes).map_err(|e| Error::bad_input(format!("torrent: {e}")))?;
            std::fs::write(&torrent_path, &bytes)
                .map_err(|e| Error::io(format!("cannot write {}", torrent_path.display()), &e))?;
            eprintln!("torrent written to {}", torrent_path.display());
            let mut magnet = Magnet::from_meta(&meta);
            magnet.peers.push(host_port(&announce_host, peer_port));
            // stdout carries the link alone, for scripts; everything else goes to stderr.
            println!("{}", magnet.to_uri());
            reactor.services.completions_goal = hosts.map(|n| (meta.info_hash, n));
            let plan = seed_plan(meta, path.clone(), peer_opts)?;
            swarm::add_session(reactor, plan, peer_port)
        })?;
        Ok(reactor)
    })
}

/// The content was hashed a moment ago: it is served as it is, and a resume record says so, with no second check.
fn seed_plan(meta: Metainfo, content: PathBuf, opts: SwarmOptions) -> Result<SessionPlan> {
    let mut storage = Storage::open(&meta, content.clone(), OpenMode::Seed)?;
    let have = Bitfield::full(meta.piece_count());
    let record = swarm::record_location(crate::state_dir::state_dir().as_deref(), &meta, &content);
    let mut keeper = resume::Keeper::new(record, &meta, &storage);
    if let Err(e) = keeper.save(&mut storage, have.as_wire()) {
        log::warn!("{e}");
    }
    Ok(SessionPlan { meta, storage, have, opts, seed_time: None, resume: Some(keeper), tracker_port: None })
}

/// `/data/build.tar` → `/data/build.tar.torrent`; a folder `/data/site/` → `/data/site.torrent`.
fn beside(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.components().as_path().as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// `host:port`, with an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// The address other machines are told: the bound one, or when bound to every address, the first non-loopback
/// IPv4 address of an interface that is up; loopback when there is none.
fn default_host(bind: IpAddr) -> IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    first_lan_ipv4().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4)
}

fn first_lan_ipv4() -> Option<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list it allocates, which is read only while it lives and freed
    // once with freeifaddrs; every pointer followed is checked for null first.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut at = list;
        while !at.is_null() {
            let ifa = &*at;
            let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
            let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
            if up && !loopback && !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
            at = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_torrent_goes_beside_the_content() {
        assert_eq!(beside(Path::new("/data/build.tar"), "torrent"), PathBuf::from("/data/build.tar.torrent"));
        assert_eq!(beside(Path::new("/data/site/"), "torrent"), PathBuf::from("/data/site.torrent"));
        assert_eq!(beside(Path::new("site"), "torrent"), PathBuf::from("site.torrent"));
    }

    #[test]
    fn hosts_get_brackets_when_they_are_ipv6() {
        assert_eq!(host_port("10.0.0.5", 6881), "10.0.0.5:6881");
        assert_eq!(host_port("::1", 6881), "[::1]:6881");
        assert_eq!(host_port("build.example", 6969), "build.example:6969");
    }

    #[test]
    fn a_bound_address_is_the_one_announced() {
        assert_eq!(default_host("127.0.0.1".parse().unwrap()), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let any = default_host("0.0.0.0".parse().unwrap());
        assert!(!any.is_unspecified());
    }
}
