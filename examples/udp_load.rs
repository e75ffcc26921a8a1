//! BEP 15 (UDP tracker) load generator for `benches/tracker_load.sh --udp`: announces from PEERS distinct peers
//! spread over the swarms listed in a file, through SOCKETS client sockets on 127.0.0.1, closed loop.
//!
//! Usage: udp_load ADDR HASHES_FILE PEERS [--sockets N] [--inflight K] [--duration SECS] [--timeout-ms MS]
//!        [--numwant N] [--warmup]
//!   ADDR         the tracker's UDP address, 127.0.0.1:PORT (only loopback is accepted)
//!   HASHES_FILE  one 40-hex info hash per line (the swarms)
//!   PEERS        how many distinct peers (peer p: swarm p % swarms, peer_id -BENCH-p, port 10000 + p; like
//!                tracker_load.lua, half the peers of each swarm are seeds)
//!   --sockets    client sockets (each its own address, so its own connection id; default 64)
//!   --inflight   announces in flight per socket (default 4)
//!   --duration   seconds of load (default 10)
//!   --timeout-ms an unanswered request is given up after this long and its socket connects again (default 1000)
//!   --numwant    peers asked for per announce (default 50, as the HTTP bench)
//!   --warmup     announce every peer once, in order, then stop (no duration): fills the swarms
//!
//! Every socket connects once and keeps its connection id; an error answer or a timed-out request makes it connect
//! again. Each announce is a random peer. Prints one line:
//! `RESULT announces_per_s=.. p50_ms=.. p99_ms=.. requests=.. connects=.. timeouts=.. errors=.. peers_last=..`
//! (requests = announces answered within the duration; peers_last = peers in the last answer, a sanity check).
//! Single-threaded: std::net::UdpSocket, non-blocking, woken by poll(2).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const PROTOCOL_ID: u64 = 0x41727101980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;

struct Opts {
    addr: SocketAddr,
    hashes: Vec<[u8; 20]>,
    peers: u32,
    sockets: usize,
    inflight: usize,
    duration: Duration,
    timeout: Duration,
    numwant: i32,
    warmup: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "udp_load: {msg}\nusage: udp_load ADDR HASHES_FILE PEERS [--sockets N] [--inflight K] [--duration SECS] [--timeout-ms MS] [--numwant N] [--warmup]"
    );
    std::process::exit(2)
}

fn hex20(s: &str) -> Option<[u8; 20]> {
    if s.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn parse() -> Opts {
    let mut pos = Vec::new();
    let mut o = Opts {
        addr: "127.0.0.1:1".parse().unwrap(),
        hashes: Vec::new(),
        peers: 0,
        sockets: 64,
        inflight: 4,
        duration: Duration::from_secs(10),
        timeout: Duration::from_millis(1000),
        numwant: 50,
        warmup: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage(&format!("{name} needs a number")))
        };
        match a.as_str() {
            "--sockets" => o.sockets = num("--sockets").clamp(1, 1024) as usize,
            "--inflight" => o.inflight = num("--inflight").clamp(1, 64) as usize,
            "--duration" => o.duration = Duration::from_secs(num("--duration").clamp(1, 300)),
            "--timeout-ms" => o.timeout = Duration::from_millis(num("--timeout-ms").clamp(10, 10_000)),
            "--numwant" => o.numwant = num("--numwant").min(200) as i32,
            "--warmup" => o.warmup = true,
            _ if a.starts_with("--") => usage(&format!("unknown option {a}")),
            _ => pos.push(a),
        }
    }
    if pos.len() != 3 {
        usage("want ADDR HASHES_FILE PEERS");
    }
    o.addr = pos[0].parse().unwrap_or_else(|_| usage("ADDR must be IP:PORT"));
    if !o.addr.ip().is_loopback() {
        usage("ADDR must be a loopback address");
    }
    let text = std::fs::read_to_string(&pos[1]).unwrap_or_else(|e| usage(&format!("{}: {e}", pos[1])));
    o.hashes = text.lines().filter_map(|l| hex20(l.trim())).collect();
    if o.hashes.is_empty() {
        usage("no info hashes in HASHES_FILE");
    }
    o.peers =
        pos[2].parse().ok().filter(|p| (1..=50_000).contains(p)).unwrap_or_else(|| usage("PEERS must be 1..50000"));
    o
}

struct Slot {
    tid: u32,
    sent: Instant,
}

enum State {
    /// Needs a connect sent.
    Idle,
    Connecting {
        tid: u32,
        sent: Instant,
    },
    Connected {
        cid: u64,
    },
}

struct Client {
    sock: UdpSocket,
    state: State,
    slots: Vec<Slot>,
}

struct Stats {
    latencies_us: Vec<u32>,
    answered: u64,
    connects: u64,
    timeouts: u64,
    errors: u64,
    peers_last: usize,
}

struct Gen {
    rng: u64,
    next_tid: u32,
    warm_next: u32,
}

impl Gen {
    fn rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn tid(&mut self) -> u32 {
        self.next_tid = self.next_tid.wrapping_add(1);
        self.next_tid
    }
}

fn announce_packet(o: &Opts, cid: u64, tid: u32, p: u32, key: u32) -> [u8; 98] {
    let mut b = [0u8; 98];
    b[0..8].copy_from_slice(&cid.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    b[12..16].copy_from_slice(&tid.to_be_bytes());
    let n = o.hashes.len() as u32;
    b[16..36].copy_from_slice(&o.hashes[(p % n) as usize]);
    b[36..56].copy_from_slice(format!("-BENCH-{p:013}").as_bytes());
    let left: u64 = if (p / n).is_multiple_of(2) { 0 } else { 1 << 20 };
    // downloaded 56..64 = 0, left 64..72, uploaded 72..80 = 0, event 80..84 = 0 (none), ip 84..88 = 0
    b[64..72].copy_from_slice(&left.to_be_bytes());
    b[88..92].copy_from_slice(&key.to_be_bytes());
    b[92..96].copy_from_slice(&o.numwant.to_be_bytes());
    b[96..98].copy_from_slice(&peer_port(p).to_be_bytes());
    b
}

fn peer_port(p: u32) -> u16 {
    (10000 + p) as u16
}

/// Sends what `c` may send now: a connect, or announces up to --inflight (a warm-up stops after the last peer).
fn fill(o: &Opts, c: &mut Client, g: &mut Gen, st: &mut Stats, now: Instant) {
    match c.state {
        State::Idle => {
            let tid = g.tid();
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
            b[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
            b[12..16].copy_from_slice(&tid.to_be_bytes());
            if c.sock.send(&b).is_ok() {
                st.connects += 1;
                c.state = State::Connecting { tid, sent: now };
            }
        }
        State::Connecting { .. } => {}
        State::Connected { cid } => {
            while c.slots.len() < o.inflight {
                let p = if o.warmup {
                    if g.warm_next >= o.peers {
                        return;
                    }
                    g.warm_next += 1;
                    g.warm_next - 1
                } else {
                    (g.rand() % o.peers as u64) as u32
                };
                let tid = g.tid();
                let pkt = announce_packet(o, cid, tid, p, p.wrapping_mul(2654435761));
                match c.sock.send(&pkt) {
                    Ok(_) => c.slots.push(Slot { tid, sent: now }),
                    Err(_) => return, // a full send buffer: try again on the next turn
                }
            }
        }
    }
}

fn receive(c: &mut Client, st: &mut Stats, buf: &mut [u8], end: Instant) {
    loop {
        let n = match c.sock.recv(buf) {
            Ok(n) => n,
            Err(_) => return, // WouldBlock, or ECONNREFUSED from an earlier send
        };
        let now = Instant::now();
        if n < 8 {
            continue;
        }
        let action = u32::from_be_bytes(buf[0..4].try_into().unwrap());
        let tid = u32::from_be_bytes(buf[4..8].try_into().unwrap());
        match (&c.state, action) {
            (State::Connecting { tid: want, .. }, ACTION_CONNECT) if *want == tid && n >= 16 => {
                c.state = State::Connected { cid: u64::from_be_bytes(buf[8..16].try_into().unwrap()) };
            }
            (_, ACTION_ANNOUNCE) if n >= 20 => {
                if let Some(i) = c.slots.iter().position(|s| s.tid == tid) {
                    let s = c.slots.swap_remove(i);
                    if now <= end {
                        st.answered += 1;
                        st.latencies_us.push(now.duration_since(s.sent).as_micros().min(u32::MAX as u128) as u32);
                    }
                    st.peers_last = (n - 20) / 6;
                }
            }
            (_, ACTION_ERROR) => {
                st.errors += 1;
                if std::env::var_os("UDP_LOAD_DEBUG").is_some() {
                    eprintln!("udp_load: error answer: {}", String::from_utf8_lossy(&buf[8..n]));
                }
                c.slots.retain(|s| s.tid != tid);
                // The connection id may be what was refused: connect again, forget what is in flight.
                c.slots.clear();
                c.state = State::Idle;
            }
            _ => {}
        }
    }
}

fn main() {
    let o = parse();
    let mut clients: Vec<Client> = (0..o.sockets)
        .map(|_| {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
            sock.connect(o.addr).expect("connect the client socket");
            sock.set_nonblocking(true).expect("non-blocking");
            Client { sock, state: State::Idle, slots: Vec::with_capacity(o.inflight) }
        })
        .collect();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        ^ ((std::process::id() as u64) << 32);
    let mut g = Gen { rng: seed | 1, next_tid: seed as u32, warm_next: 0 };
    let mut st = Stats {
        latencies_us: Vec::with_capacity(1 << 20),
        answered: 0,
        connects: 0,
        timeouts: 0,
        errors: 0,
        peers_last: 0,
    };
    let mut pfds: Vec<libc::pollfd> =
        clients.iter().map(|c| libc::pollfd { fd: c.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    // A warm-up ends when every peer has been answered or given up; a timed run at `end`. Either way within 300 s.
    let end = if o.warmup { start + Duration::from_secs(300) } else { start + o.duration };
    let mut last_sweep = start;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        for c in clients.iter_mut() {
            fill(&o, c, &mut g, &mut st, now);
        }
        if o.warmup && g.warm_next >= o.peers && clients.iter().all(|c| c.slots.is_empty()) {
            break;
        }
        let wait = end.saturating_duration_since(now).min(Duration::from_millis(10));
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait.as_millis().max(1) as i32) };
        if r > 0 {
            for (c, p) in clients.iter_mut().zip(pfds.iter_mut()) {
                if p.revents != 0 {
                    p.revents = 0;
                    receive(c, &mut st, &mut buf, end);
                }
            }
        }
        let now = Instant::now();
        if now.duration_since(last_sweep) >= Duration::from_millis(50) {
            last_sweep = now;
            for c in clients.iter_mut() {
                let late = |t: Instant| now.duration_since(t) >= o.timeout;
                let expired = match c.state {
                    State::Connecting { sent, .. } => late(sent),
                    _ => c.slots.iter().any(|s| late(s.sent)),
                };
                if expired {
                    st.timeouts += c.slots.iter().filter(|s| late(s.sent)).count().max(1) as u64;
                    // A lost answer or a stale connection id (a tracker drops those silently): connect again.
                    c.slots.clear();
                    c.state = State::Idle;
                }
            }
        }
    }
    let secs = if o.warmup { start.elapsed() } else { o.duration }.as_secs_f64();
    let mut l = std::mem::take(&mut st.latencies_us);
    l.sort_unstable();
    let pct = |q: f64| if l.is_empty() { 0.0 } else { l[((l.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0 };
    println!(
        "RESULT announces_per_s={:.0} p50_ms={:.3} p99_ms={:.3} requests={} connects={} timeouts={} errors={} peers_last={} sockets={} inflight={}",
        st.answered as f64 / secs,
        pct(0.50),
        pct(0.99),
        st.answered,
        st.connects,
        st.timeouts,
        st.errors,
        st.peers_last,
        o.sockets,
        o.inflight
    );
}
