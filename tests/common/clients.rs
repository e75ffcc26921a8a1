//! Real BitTorrent programs on 127.0.0.1 (libtorrent on ::1 too) for interop tests: python3-libtorrent (through
//! tests/support/lt_client.py), aria2c, transmission-cli and opentracker, plus torrents made with mktorrent,
//! byte-for-byte comparison and a scrape client. The flags come from /work/shared/INTEROP.md; each launcher returns only once its program is listening on
//! its own port (and, for a seed, has checked its data), so a test can go straight on to the next step.
//!
//! The programs cannot pick their own port, so a launcher picks one, starts the program and checks in /proc that the
//! program itself, and no other process, listens on it; if another process got there first it tries a new port.
//!
//! A test of toybt against a real client reads like this:
//! ```text
//! let mut fx = Fixture::single_file(7);                        // data in fx.seed_dir, empty fx.leech_dir
//! let mut leech = clients::transmission_leech(&fx.torrent.path, &fx.leech_dir);
//! let seed = Proc::toybt("seed", &["seed", t, "--peer", &leech.addr().to_string(), ...]);
//! leech.wait_done(Duration::from_secs(60));                   // panics with the client's output if it fails
//! fx.assert_leech_has_everything();                           // byte for byte
//! ```
//! With a tracker: make the fixture, start the tracker with `fx.torrent`, then `fx.announce_to(url)` (same info hash).

use super::{Proc, free_port, pseudo_random_bytes, wait_until};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a program may take to start listening (aria2 alone takes about 3 s on a quiet machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh ports tried before giving up on a program that keeps losing its port to someone else.
const PORT_ATTEMPTS: usize = 3;
/// Upper bound on a client's life if the test process dies without dropping it (aria2 and lt_client.py honour it).
const LIFETIME_SECS: u64 = 600;
/// Debian's libtorrent binding lives in the system Python, not in whatever `python3` comes first on PATH.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// A tracker address where nothing listens, for torrents whose peers are dialled directly.
pub const NOWHERE_ANNOUNCE: &str = "http://127.0.0.1:1/announce";

pub fn lt_client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/lt_client.py")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Libtorrent,
    Aria2,
    Transmission,
    Opentracker,
}

/// A running real program. Dropping it kills the program (by its pid) and removes its scratch folder.
pub struct Launched {
    pub proc: Proc,
    pub kind: Kind,
    /// The address it listens on (127.0.0.1 unless a launcher was told otherwise).
    pub ip: IpAddr,
    pub port: u16,
    /// When the program was started (the attempt that got its port).
    pub started: Instant,
    /// A leech's done hook (aria2's --on-bt-download-complete, Transmission's -f) creates this file.
    done_file: Option<PathBuf>,
    /// Config folder and hook script; declared after `proc` so it is removed only once the program is dead.
    _scratch: Option<TempDir>,
}

impl std::ops::Deref for Launched {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for Launched {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl Launched {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The announce URL of a tracker (opentracker; any HTTP tracker on `port`).
    pub fn announce_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    /// Waits until a downloading client has the whole torrent on disk; returns the time since it was started.
    /// libtorrent says `finished` (after flushing); aria2 and Transmission run a done hook that creates a file.
    /// Panics with the program's output if it fails, exits or runs out of time.
    pub fn wait_done(&mut self, timeout: Duration) -> Duration {
        let ok = match (&self.done_file, self.kind) {
            (None, Kind::Libtorrent) => self.proc.try_wait_line("finished", timeout).is_some(),
            (Some(done), _) => {
                let child = &mut self.proc.child;
                wait_until(timeout, || done.exists() || child.try_wait().ok().flatten().is_some()) && done.exists()
            }
            (None, kind) => panic!("{}: a {kind:?} seed or tracker does not download", self.proc.name),
        };
        if !ok {
            panic!(
                "{}: download not complete within {timeout:?}; output so far:\n{}",
                self.proc.name,
                self.proc.output()
            );
        }
        self.started.elapsed()
    }

    /// The last `upload_bytes N` figure lt_client.py printed (payload bytes it has sent).
    pub fn lt_upload_bytes(&self) -> u64 {
        assert_eq!(self.kind, Kind::Libtorrent, "only lt_client.py reports upload_bytes");
        let out = self.proc.output();
        out.lines().rev().find_map(|l| l.strip_prefix("upload_bytes ")?.parse().ok()).unwrap_or(0)
    }
}

/// A port no earlier launcher in this test process was given and that was free a moment ago. Remembering them matters
/// because opentracker binds with SO_REUSEPORT: two of them on one port would silently share its connections.
pub fn fresh_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..1000 {
        let port = free_port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no fresh port after 1000 tries");
}

/// Who listens on a TCP port, as far as one process is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    Free,
    /// Every socket listening on the port belongs to the process.
    Ours,
    /// Some other process listens there too (or alone).
    Taken,
}

enum Listen {
    Ours,
    Taken,
    Exited(i32),
    Timeout,
}

/// Inodes of the sockets listening on TCP `port` on any local address, from /proc/net/tcp and tcp6.
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // f[1] is ADDR:PORT in hex, f[3] the state (0A is LISTEN), f[9] the inode.
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && let Ok(inode) = f[9].parse()
            {
                inodes.push(inode);
            }
        }
    }
    inodes
}

/// Inodes of the sockets process `pid` has open.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return BTreeSet::new() };
    dir.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|t| t.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// Whether process `pid` (itself, not a child of it) alone listens on `port`.
pub fn port_state(pid: u32, port: u16) -> PortState {
    let listeners = listening_inodes(port);
    if listeners.is_empty() {
        return PortState::Free;
    }
    let ours = socket_inodes(pid);
    // Every listener must be ours (Transmission has one for IPv4 and one for IPv6); a socket of any other process,
    // even one sharing the port through SO_REUSEPORT, means the port is not ours alone.
    if listeners.iter().all(|i| ours.contains(i)) { PortState::Ours } else { PortState::Taken }
}

fn wait_listening(proc: &mut Proc, port: u16, timeout: Duration) -> Listen {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = proc.child.try_wait().unwrap() {
            return Listen::Exited(status.code().unwrap_or(-1));
        }
        match port_state(proc.child.id(), port) {
            PortState::Ours => return Listen::Ours,
            PortState::Taken => return Listen::Taken,
            PortState::Free => {}
        }
        if Instant::now() >= deadline {
            return Listen::Timeout;
        }
        std::thread::sleep(Duration::from_millis(20)); // poll: nothing notifies us when another process binds a port
    }
}

/// Starts the command `build(port)` makes on fresh ports until the program holds its port alone.
fn launch(
    kind: Kind,
    name: &str,
    mut build: impl FnMut(u16) -> (Command, Option<TempDir>, Option<PathBuf>),
) -> Launched {
    for attempt in 1..=PORT_ATTEMPTS {
        let port = fresh_port();
        let started = Instant::now();
        let (cmd, scratch, done_file) = build(port);
        let mut proc = Proc::spawn(name, cmd);
        match wait_listening(&mut proc, port, READY_TIMEOUT) {
            Listen::Ours => {
                let ip = IpAddr::from([127, 0, 0, 1]);
                return Launched { proc, kind, ip, port, started, done_file, _scratch: scratch };
            }
            Listen::Taken if attempt < PORT_ATTEMPTS => eprintln!("{name}: port {port} was taken, trying another"),
            Listen::Exited(code) if attempt < PORT_ATTEMPTS => {
                eprintln!("{name}: exited with {code} on port {port}, trying another:\n{}", proc.output())
            }
            Listen::Taken => panic!("{name}: port {port} taken on every attempt"),
            Listen::Exited(code) => panic!("{name}: exited with {code} before listening:\n{}", proc.output()),
            Listen::Timeout => panic!("{name}: not listening on {port} within {READY_TIMEOUT:?}:\n{}", proc.output()),
        }
    }
    unreachable!("the last attempt returns or panics")
}

fn require(program: &str) {
    assert!(
        super::which(program),
        "{program} is not installed; the interop tests need Debian's mktorrent, python3-libtorrent, aria2, \
         transmission-cli and opentracker (see /work/shared/INTEROP.md)"
    );
}

/// A scratch folder holding an executable hook that creates `done` in it; returns (folder, hook, done file).
fn done_hook(prefix: &str) -> (TempDir, PathBuf, PathBuf) {
    let scratch = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let done_file = scratch.path().join("done");
    let hook = scratch.path().join("done.sh");
    fs::write(&hook, format!("#!/bin/sh\ntouch '{}'\n", done_file.display())).unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    (scratch, hook, done_file)
}

fn ready_line(launched: Launched, needle: &str) -> Launched {
    launched.proc.wait_line(needle, READY_TIMEOUT);
    launched
}

// ---------------------------------------------------------------------------------------------------------------
// libtorrent

/// lt_client.py in `mode` (seed or leech) for `source`, a .torrent file or a magnet link, dialling `peers`, with more
/// of its switches in `flags` (`--pex`, `--keep-seed-links`, `--upload-mode`). Returns once it listens; wait for its
/// `checked`, `seeding`, `metadata` or `finished` line as the test needs.
pub fn libtorrent_with(
    mode: &str,
    source: impl AsRef<OsStr>,
    data_dir: &Path,
    peers: &[SocketAddr],
    flags: &[&str],
) -> Launched {
    libtorrent_on(IpAddr::from([127, 0, 0, 1]), mode, source, data_dir, peers, flags)
}

/// [`libtorrent_with`] listening on (and dialling from) `ip` alone.
fn libtorrent_on(
    ip: IpAddr,
    mode: &str,
    source: impl AsRef<OsStr>,
    data_dir: &Path,
    peers: &[SocketAddr],
    flags: &[&str],
) -> Launched {
    assert!(Path::new(SYSTEM_PYTHON).exists(), "{SYSTEM_PYTHON} is missing (python3-libtorrent)");
    let mut launched = launch(Kind::Libtorrent, &format!("libtorrent-{mode}"), |port| {
        let mut cmd = Command::new(SYSTEM_PYTHON);
        cmd.arg(lt_client_script()).arg(mode).arg(source.as_ref()).arg(data_dir);
        cmd.args(["--port", &port.to_string(), "--bind", &ip.to_string()]);
        cmd.args(["--max-seconds", &LIFETIME_SECS.to_string()]);
        for p in peers {
            // SocketAddr writes an IPv6 address in brackets, as lt_client.py wants it.
            cmd.args(["--peer", &p.to_string()]);
        }
        cmd.args(flags);
        (cmd, None, None)
    });
    launched.ip = ip;
    launched
}

/// libtorrent seeding `torrent` from `data_dir` (the folder that holds the torrent's file or folder), dialling `peers`
/// once its data is checked. Returns when it is seeding.
pub fn libtorrent_seed(torrent: &Path, data_dir: &Path, peers: &[SocketAddr]) -> Launched {
    ready_line(libtorrent_with("seed", torrent, data_dir, peers, &[]), "seeding")
}

/// libtorrent downloading `torrent` (a .torrent file or a magnet link) into `data_dir`, dialling `peers`; it goes on
/// seeding once done.
pub fn libtorrent_leech(torrent: impl AsRef<OsStr>, data_dir: &Path, peers: &[SocketAddr]) -> Launched {
    libtorrent_with("leech", torrent, data_dir, peers, &[])
}

/// [`libtorrent_seed`] listening on `ip` alone (`::1` for an IPv6 test); its `addr()` is `[ip]:port`.
pub fn libtorrent_seed_on(ip: IpAddr, torrent: &Path, data_dir: &Path, peers: &[SocketAddr]) -> Launched {
    ready_line(libtorrent_on(ip, "seed", torrent, data_dir, peers, &[]), "seeding")
}

/// [`libtorrent_leech`] listening on and dialling from `ip` alone.
pub fn libtorrent_leech_on(ip: IpAddr, torrent: &Path, data_dir: &Path, peers: &[SocketAddr]) -> Launched {
    libtorrent_on(ip, "leech", torrent, data_dir, peers, &[])
}

// ---------------------------------------------------------------------------------------------------------------
// aria2

#[derive(Clone, Copy, PartialEq, Eq)]
enum Aria2Role {
    /// Check, then seed until killed.
    Seed,
    /// Download, run the done hook, seed until killed.
    Leech,
    /// Download from a magnet link (metadata first, from peers), then exit 0 at once.
    MagnetLeech,
}

fn aria2(name: &str, source: &OsStr, data_dir: &Path, role: Aria2Role) -> Launched {
    aria2_with(name, source, data_dir, role, false)
}

/// `udp_trackers`: aria2 1.36 speaks BEP 15 only through its DHT socket, so DHT is turned on (no entry point, so it
/// finds no nodes), on a fresh UDP port and with its routing table kept in a scratch folder.
fn aria2_with(name: &str, source: &OsStr, data_dir: &Path, role: Aria2Role, udp_trackers: bool) -> Launched {
    require("aria2c");
    launch(Kind::Aria2, name, |port| {
        let mut cmd = Command::new("aria2c");
        cmd.args([
            "--no-conf=true",
            "--interface=127.0.0.1",
            "--disable-ipv6=true",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--file-allocation=falloc",
            "--auto-file-renaming=false",
            "--summary-interval=0",
            "--enable-color=false",
            "--console-log-level=notice",
            // Write through, so the files are complete when the done hook runs.
            "--disk-cache=0",
        ]);
        if role == Aria2Role::MagnetLeech {
            // Done means exit 0; keep the metadata in memory rather than writing a .torrent beside the data.
            cmd.args(["--seed-time=0", "--bt-save-metadata=false"]);
        } else {
            // Seed until killed. A leech too: with --seed-time=0 aria2 would announce only `stopped`, never
            // `completed`, and a tracker would count no download.
            cmd.arg("--seed-ratio=0.0");
        }
        cmd.arg(format!("--listen-port={port}"));
        cmd.arg(format!("--stop={LIFETIME_SECS}"));
        cmd.arg(format!("--dir={}", data_dir.display()));
        let (scratch, hook, done_file) = done_hook("toybt-aria2");
        if udp_trackers {
            cmd.arg("--enable-dht=true");
            cmd.arg(format!("--dht-listen-port={}", fresh_port()));
            cmd.arg(format!("--dht-file-path={}", scratch.path().join("dht.dat").display()));
        } else {
            cmd.arg("--enable-dht=false");
        }
        let done_file = match role {
            Aria2Role::Seed => {
                cmd.arg("--check-integrity=true");
                None
            }
            Aria2Role::Leech => {
                cmd.arg(format!("--on-bt-download-complete={}", hook.display()));
                Some(done_file)
            }
            Aria2Role::MagnetLeech => None,
        };
        let scratch = Some(scratch);
        cmd.arg(source);
        (cmd, scratch, done_file)
    })
}

/// aria2 checking and then seeding `torrent` from `data_dir` until killed. aria2 cannot be told to dial a peer: it
/// finds peers through the torrent's tracker or is dialled.
pub fn aria2_seed(torrent: &Path, data_dir: &Path) -> Launched {
    ready_line(aria2("aria2-seed", torrent.as_os_str(), data_dir, Aria2Role::Seed), "listening on TCP port")
}

/// aria2 downloading `torrent` into `data_dir`, then seeding until killed; `wait_done` waits for its done hook.
pub fn aria2_leech(torrent: &Path, data_dir: &Path) -> Launched {
    aria2("aria2-leech", torrent.as_os_str(), data_dir, Aria2Role::Leech)
}

/// [`aria2_leech`] with DHT on, which aria2 1.36 needs to announce to `udp://` trackers (BEP 15).
pub fn aria2_leech_udp(torrent: &Path, data_dir: &Path) -> Launched {
    aria2_with("aria2-leech", torrent.as_os_str(), data_dir, Aria2Role::Leech, true)
}

/// aria2 downloading from `magnet` (a magnet link; aria2 reads its `tr` trackers but not `x.pe` peers) into
/// `data_dir`; it exits 0 once the data is on disk (`--seed-time=0`), so wait with `wait_exit`.
pub fn aria2_magnet_leech(magnet: &str, data_dir: &Path) -> Launched {
    aria2("aria2-magnet-leech", OsStr::new(magnet), data_dir, Aria2Role::MagnetLeech)
}

// ---------------------------------------------------------------------------------------------------------------
// Transmission

fn transmission(name: &str, torrent: &OsStr, data_dir: &Path, seed: bool) -> Launched {
    require("transmission-cli");
    require("stdbuf");
    launch(Kind::Transmission, name, |port| {
        let (scratch, hook, done_file) = done_hook("toybt-transmission");
        let config = scratch.path().join("config");
        fs::create_dir(&config).unwrap();
        fs::write(config.join("settings.json"), transmission_settings(port)).unwrap();

        // transmission-cli prints its status with `\r` into a block-buffered stdout; turn that into lines as they
        // come. `exec` keeps transmission-cli itself as our child, so the pid we check and kill is the real one.
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(r#"exec stdbuf -o0 transmission-cli "$@" > >(exec stdbuf -oL tr '\r' '\n')"#)
            .arg("transmission-cli");
        cmd.arg("-g").arg(&config).arg("-w").arg(data_dir);
        cmd.args(["-p", &port.to_string(), "-M", "-B", "-D", "-U", "-et"]);
        // No `-v` for a seed: Transmission checks a new torrent's files by itself, and a `-v` that lands while that
        // first check runs stops the torrent for a moment, which transmission-cli takes as its cue to quit.
        if !seed {
            cmd.arg("-f").arg(&hook);
        }
        cmd.arg(torrent);
        (cmd, Some(scratch), (!seed).then_some(done_file))
    })
}

/// Settings that keep Transmission on 127.0.0.1 and plain TCP, and write each block as it arrives (no write cache)
/// so the files are complete when the done hook runs.
fn transmission_settings(port: u16) -> String {
    format!(
        r#"{{
    "bind-address-ipv4": "127.0.0.1",
    "bind-address-ipv6": "::1",
    "blocklist-enabled": false,
    "cache-size-mb": 0,
    "dht-enabled": false,
    "idle-seeding-limit-enabled": false,
    "lpd-enabled": false,
    "peer-port": {port},
    "peer-port-random-on-start": false,
    "pex-enabled": false,
    "port-forwarding-enabled": false,
    "ratio-limit-enabled": false,
    "rename-partial-files": false,
    "rpc-enabled": false,
    "speed-limit-down-enabled": false,
    "speed-limit-up-enabled": false,
    "utp-enabled": false
}}
"#
    )
}

/// Transmission verifying and then seeding `torrent` from `data_dir`. It cannot be told to dial a peer and drops
/// 127.x peers a tracker hands it, so leechers must dial it. Returns once it says it is seeding.
pub fn transmission_seed(torrent: &Path, data_dir: &Path) -> Launched {
    ready_line(transmission("transmission-seed", torrent.as_os_str(), data_dir, true), "Seeding")
}

/// Transmission downloading `torrent` (a .torrent file or a magnet link) into `data_dir`; a seed must dial it (see
/// `transmission_seed`). It does not create empty files. `wait_done` waits for its done hook.
pub fn transmission_leech(torrent: impl AsRef<OsStr>, data_dir: &Path) -> Launched {
    transmission("transmission-leech", torrent.as_ref(), data_dir, false)
}

// ---------------------------------------------------------------------------------------------------------------
// opentracker

/// opentracker serving only `info_hashes`. It answers compact only, includes the requester in the peers, closes the
/// connection after each response, and as root chroots to its folder and becomes `nobody` (hence a world-readable
/// folder of its own).
pub fn opentracker(info_hashes: &[[u8; 20]]) -> Launched {
    opentracker_on(info_hashes, None)
}

/// [`opentracker`] serving BEP 15 too, on a UDP port of its own (its `-P`); returns it and the UDP address, once a
/// connect request there is answered.
pub fn opentracker_udp(info_hashes: &[[u8; 20]]) -> (Launched, SocketAddr) {
    let mut udp_port = 0;
    let ot = opentracker_on(info_hashes, Some(&mut udp_port));
    let udp = SocketAddr::from(([127, 0, 0, 1], udp_port));
    assert!(
        udp_connect_answered(udp, READY_TIMEOUT),
        "opentracker: no answer on udp port {udp_port}:\n{}",
        ot.output()
    );
    (ot, udp)
}

fn opentracker_on(info_hashes: &[[u8; 20]], mut udp_port: Option<&mut u16>) -> Launched {
    require("opentracker");
    launch(Kind::Opentracker, "opentracker", |port| {
        let dir = tempfile::Builder::new().prefix("toybt-opentracker").tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let list: String = info_hashes.iter().map(|h| hex(h) + "\n").collect();
        fs::write(dir.path().join("whitelist.txt"), list).unwrap();
        let mut cmd = Command::new("opentracker");
        // Only -p unless asked: a -P (UDP) port would be one more port to race for, and without any -P none is opened.
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string(), "-w", "whitelist.txt"]).arg("-d").arg(dir.path());
        if let Some(u) = udp_port.as_deref_mut() {
            *u = fresh_port();
            cmd.args(["-P", &u.to_string()]);
        }
        (cmd, Some(dir), None)
    })
}

/// Sends BEP 15 connect requests to `addr` until one is answered (true) or `timeout` passes (false).
pub fn udp_connect_answered(addr: SocketAddr, timeout: Duration) -> bool {
    use toybt::tracker::udp::wire::{Request, Response};
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut req = Vec::new();
    Request::Connect { transaction_id: 0x5eed }.encode(&mut req);
    let mut buf = [0; 1500];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let _ = s.send_to(&req, addr);
        if let Ok((n, _)) = s.recv_from(&mut buf)
            && matches!(Response::decode(&buf[..n], false), Ok(Response::Connect { transaction_id: 0x5eed, .. }))
        {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------------------------
// Torrents and data

/// A .torrent file and what tests need from it.
#[derive(Clone, Debug)]
pub struct Torrent {
    pub path: PathBuf,
    pub info_hash: [u8; 20],
    /// The name in the info dictionary: the file's or top folder's name under a client's data folder.
    pub name: String,
}

impl Torrent {
    /// Reads a .torrent file and computes its info hash from the raw `info` bytes.
    pub fn load(path: &Path) -> Torrent {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let root = toybt::bencode::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let info = root.get("info").unwrap_or_else(|| panic!("{}: no info dictionary", path.display()));
        let raw = info.raw_dict().expect("info is a dictionary");
        let name = info.get("name").and_then(|n| n.as_str()).expect("info has a UTF-8 name").to_string();
        Torrent { path: path.to_path_buf(), info_hash: sha1_smol::Sha1::from(raw).digest().bytes(), name }
    }

    pub fn hex_hash(&self) -> String {
        hex(&self.info_hash)
    }

    /// Writes a copy announcing to `url` at `out`; the info dictionary is copied byte for byte, so the info hash is
    /// unchanged. This breaks the loop "the tracker needs the hash, the torrent needs the tracker's port".
    pub fn with_announce(&self, url: &str, out: &Path) -> Torrent {
        let bytes = fs::read(&self.path).unwrap();
        let root = toybt::bencode::decode(&bytes).unwrap();
        let raw_info = root.get("info").and_then(|i| i.raw_dict()).unwrap();
        let mut t = format!("d8:announce{}:{url}4:info", url.len()).into_bytes();
        t.extend_from_slice(raw_info);
        t.push(b'e');
        fs::write(out, t).unwrap();
        let copy = Torrent::load(out);
        assert_eq!(copy.info_hash, self.info_hash);
        copy
    }
}

impl Torrent {
    /// Writes a copy whose `announce-list` is `tiers` (BEP 12; `announce` is the first URL) at `out`; the info
    /// dictionary is copied byte for byte, so the info hash is unchanged.
    pub fn with_tiers(&self, tiers: &[Vec<String>], out: &Path) -> Torrent {
        let bytes = fs::read(&self.path).unwrap();
        let root = toybt::bencode::decode(&bytes).unwrap();
        let raw_info = root.get("info").and_then(|i| i.raw_dict()).unwrap();
        let s = |u: &str| format!("{}:{u}", u.len());
        let mut t = format!("d8:announce{}13:announce-listl", s(&tiers[0][0]));
        for tier in tiers {
            t.push('l');
            tier.iter().for_each(|u| t.push_str(&s(u)));
            t.push('e');
        }
        t.push_str("e4:info");
        let mut t = t.into_bytes();
        t.extend_from_slice(raw_info);
        t.push(b'e');
        fs::write(out, t).unwrap();
        let copy = Torrent::load(out);
        assert_eq!(copy.info_hash, self.info_hash);
        copy
    }
}

/// A torrent (made by mktorrent, announcing nowhere until `announce_to`) with its data under `seed_dir`, and an empty
/// `leech_dir` for a downloader, all in a temporary folder of its own.
pub struct Fixture {
    pub dir: TempDir,
    pub torrent: Torrent,
    pub seed_dir: PathBuf,
    pub leech_dir: PathBuf,
}

impl Fixture {
    pub fn new(content: impl FnOnce(&Path) -> PathBuf) -> Fixture {
        let dir = tempfile::Builder::new().prefix("toybt-fixture").tempdir().unwrap();
        let seed_dir = dir.path().join("seed");
        let leech_dir = dir.path().join("leech");
        fs::create_dir_all(&seed_dir).unwrap();
        fs::create_dir_all(&leech_dir).unwrap();
        let content = content(&seed_dir);
        let torrent = mktorrent(&content, NOWHERE_ANNOUNCE, &dir.path().join("t.torrent"));
        Fixture { dir, torrent, seed_dir, leech_dir }
    }

    /// One file of 3 MiB + 5 bytes: twelve full pieces and a short last one.
    pub fn single_file(seed: u64) -> Fixture {
        Fixture::new(|root| {
            let path = root.join("single.bin");
            write_random_file(&path, 3 * 1024 * 1024 + 5, seed);
            path
        })
    }

    /// Three files in two folders whose boundaries fall inside pieces.
    pub fn multi_file(seed: u64) -> Fixture {
        Fixture::new(|root| {
            let top = root.join("multi");
            let files = [("a.bin", 1536 * 1024 + 17), ("b.bin", 700 * 1024), ("sub/c.bin", 1024 * 1024 + 3)];
            write_random_tree(&top, &files, seed);
            top
        })
    }

    /// Makes the torrent announce to `url` (same info hash), e.g. once a tracker's port is known.
    pub fn announce_to(&mut self, url: &str) {
        let out = self.dir.path().join("tracked.torrent");
        self.torrent = self.torrent.with_announce(url, &out);
    }

    /// `leech_dir` holds exactly what `seed_dir` does for this torrent, byte for byte.
    pub fn assert_leech_has_everything(&self) {
        let name = &self.torrent.name;
        let (seed, leech) = (self.seed_dir.join(name), self.leech_dir.join(name));
        // libtorrent writes through its own cache and mapped files: its last blocks may reach the file a moment
        // after it says it finished (seen once under load). Identical within a few seconds, or the comparison fails.
        super::wait_until(Duration::from_secs(5), || compare_trees(&seed, &leech).is_ok());
        assert_same_tree(&seed, &leech);
    }
}

/// Runs mktorrent on `content` (a file or folder) with 256 KiB pieces and no creation date.
pub fn mktorrent(content: &Path, announce: &str, out: &Path) -> Torrent {
    require("mktorrent");
    let _ = fs::remove_file(out); // mktorrent refuses to overwrite
    let o = Command::new("mktorrent")
        .args(["-a", announce, "-l", "18", "-d", "-o"])
        .arg(out)
        .arg(content)
        .output()
        .expect("run mktorrent");
    assert!(o.status.success(), "mktorrent failed: {}", String::from_utf8_lossy(&o.stderr));
    Torrent::load(out)
}

/// Writes `len` deterministic pseudo-random bytes to `path`, creating parent folders.
pub fn write_random_file(path: &Path, len: usize, seed: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, pseudo_random_bytes(len, seed)).unwrap();
}

/// Fills folder `root` with `files` (relative path, length), seeded differently per file.
pub fn write_random_tree(root: &Path, files: &[(&str, usize)], seed: u64) {
    for (i, (rel, len)) in files.iter().enumerate() {
        write_random_file(&root.join(rel), *len, seed.wrapping_add(i as u64 * 7919));
    }
}

/// Relative paths of the regular files under `root` (or "" if `root` is a file), sorted.
fn file_list(root: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if meta.is_file() {
        return Ok(vec![PathBuf::new()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            let rel = rel.join(entry.file_name());
            if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
                stack.push(rel);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn same_file(a: &Path, b: &Path) -> Result<(), String> {
    let mut fa = fs::File::open(a).map_err(|e| format!("{}: {e}", a.display()))?;
    let mut fb = fs::File::open(b).map_err(|e| format!("{}: {e}", b.display()))?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| format!("{}: {e}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| format!("{}: {e}", b.display()))?;
        if let Some(i) = ba[..na.min(nb)].iter().zip(&bb[..na.min(nb)]).position(|(x, y)| x != y) {
            return Err(format!("{} and {} differ at byte {}", a.display(), b.display(), offset + i as u64));
        }
        if na != nb {
            return Err(format!("{} and {} differ in length after byte {}", a.display(), b.display(), offset));
        }
        if na == 0 {
            return Ok(());
        }
        offset += na as u64;
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Compares two files, or two folders file by file (same relative paths, same bytes).
pub fn compare_trees(a: &Path, b: &Path) -> Result<(), String> {
    let (la, lb) = (file_list(a)?, file_list(b)?);
    if la != lb {
        return Err(format!("{} has files {la:?} but {} has {lb:?}", a.display(), b.display()));
    }
    // `join("")` would add a trailing slash, which a plain file refuses.
    let under = |root: &Path, rel: &Path| if rel.as_os_str().is_empty() { root.to_path_buf() } else { root.join(rel) };
    la.iter().try_for_each(|rel| same_file(&under(a, rel), &under(b, rel)))
}

pub fn assert_same_tree(a: &Path, b: &Path) {
    if let Err(e) = compare_trees(a, b) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Tracker requests

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encodes every byte, which every tracker must accept.
pub fn url_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// One HTTP/1.1 GET over a plain TcpStream; returns (status code, body). Reads the body by Content-Length when given
/// (a keep-alive server) or to end of stream (opentracker closes after each response).
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> Result<(u16, Vec<u8>), String> {
    const LIMIT: usize = 1 << 20;
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    let req = format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("write to {addr}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut read_more = |buf: &mut Vec<u8>| -> Result<bool, String> {
        if buf.len() > LIMIT {
            return Err(format!("{addr} sent more than {LIMIT} bytes"));
        }
        let n = s.read(&mut chunk).map_err(|e| format!("read from {addr}: {e}"))?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if !read_more(&mut buf)? {
            return Err(format!("{addr} closed before the end of the headers"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line from {addr}: {head:?}"))?;
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
    });
    let body_start = head_end + 4;
    match length {
        Some(len) => {
            while buf.len() < body_start + len {
                if !read_more(&mut buf)? {
                    return Err(format!("{addr} closed before the whole body"));
                }
            }
            Ok((status, buf[body_start..body_start + len].to_vec()))
        }
        None => {
            while read_more(&mut buf)? {}
            Ok((status, buf[body_start..].to_vec()))
        }
    }
}

/// What a tracker's scrape says about one torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scrape {
    pub complete: i64,
    pub downloaded: i64,
    pub incomplete: i64,
}

/// `GET /scrape?info_hash=...` on the tracker at `addr`, decoded.
pub fn scrape(addr: SocketAddr, info_hash: &[u8; 20]) -> Result<Scrape, String> {
    let (status, body) = http_get(addr, &format!("/scrape?info_hash={}", url_encode(info_hash)))?;
    if status != 200 {
        return Err(format!("scrape: HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let root = toybt::bencode::decode(&body).map_err(|e| format!("scrape reply: {e}"))?;
    let Some(toybt::bencode::Value::Dict { entries, .. }) = root.get("files") else {
        return Err(format!("scrape reply without files: {}", String::from_utf8_lossy(&body)));
    };
    let stats = entries
        .iter()
        .find(|(k, _)| *k == info_hash)
        .map(|(_, v)| v)
        .ok_or_else(|| format!("scrape reply does not list {}", hex(info_hash)))?;
    let field = |k: &str| stats.get(k).and_then(|v| v.as_int()).ok_or_else(|| format!("scrape reply lacks {k}"));
    Ok(Scrape { complete: field("complete")?, downloaded: field("downloaded")?, incomplete: field("incomplete")? })
}

/// Re-scrapes until `want` holds (trackers learn of a completion a moment after the client knows); returns the last.
pub fn wait_scrape(
    addr: SocketAddr,
    info_hash: &[u8; 20],
    timeout: Duration,
    want: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let mut last = Err(String::from("no scrape yet"));
    let ok = wait_until(timeout, || {
        last = scrape(addr, info_hash);
        last.as_ref().is_ok_and(&want)
    });
    match last {
        Ok(s) if ok => s,
        other => {
            panic!("scrape of {} did not reach the expected numbers within {timeout:?}: {other:?}", hex(info_hash))
        }
    }
}
