//! Shared helpers for process tests: start the real `toybt` binary (and real clients), wait on events with deadlines.
#![allow(dead_code)]

pub mod clients;
pub mod dht;
pub mod hostile;
pub mod swarm;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often `wait_until` re-checks a condition it cannot be woken for (a file, a port).
const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub fn toybt_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_toybt"))
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The `XDG_STATE_HOME` of every toybt a test starts (unless the test sets its own): never the real home. One
/// folder under the target directory for every test, so a test's restart finds what its first run kept; resume
/// records are named by torrent and content path, and each test's content is in a temporary folder of its own.
pub fn state_home() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xdg-state");
    std::fs::create_dir_all(&dir).expect("make the tests' state folder");
    dir
}

/// Where `seed`, `leech` and `share`, started by `toybt_command`, keep the resume record of `meta`'s content at
/// `content`.
#[allow(dead_code)]
pub fn record_file(meta: &toybt::metainfo::Metainfo, content: &Path) -> PathBuf {
    toybt::resume::record_path(&state_home().join("toybt"), &meta.info_hash, content)
}

/// `toybt ARGS` as a command, its state folder in `state_home()`. A `seed`, `leech`, `share` or `daemon` that does
/// not say how to use the DHT gets `--no-dht`: a test must never reach the public DHT routers (tests/dht.rs gives its own with
/// `--dht-bootstrap`).
pub fn toybt_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(toybt_bin());
    cmd.args(args);
    cmd.env("XDG_STATE_HOME", state_home());
    let words: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let swarm = words.first().is_some_and(|w| *w == "seed" || *w == "leech" || *w == "share" || *w == "daemon");
    let says_dht = words.iter().any(|w| *w == "--no-dht" || *w == "--dht-bootstrap");
    if swarm && !says_dht {
        cmd.arg("--no-dht");
    }
    cmd
}

/// Runs `toybt ARGS` to completion and returns (exit code, stdout, stderr).
pub fn run_toybt(args: &[&str]) -> (i32, String, String) {
    let out = toybt_command(args).env("RUST_LOG", "info").output().expect("run toybt");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Re-checks `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL); // poll: the condition has no event to wake us
    }
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// A child process whose stderr and stdout lines are collected as they come, so a test can wait for a line.
/// Dropping it kills the process (only the one we started, by its handle) and waits for it.
pub struct Proc {
    pub name: String,
    pub child: Child,
    lines: Arc<(Mutex<Lines>, Condvar)>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let lines = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let readers = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
        ];
        let open = Arc::new(Mutex::new(readers.len()));
        for r in readers {
            let lines = lines.clone();
            let open = open.clone();
            let tag = name.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("TOYBT_TEST_ECHO").is_some() {
                        eprintln!("[{tag}] {line}");
                    }
                    let (m, cv) = &*lines;
                    m.lock().unwrap().lines.push(line);
                    cv.notify_all();
                }
                let mut n = open.lock().unwrap();
                *n -= 1;
                if *n == 0 {
                    let (m, cv) = &*lines;
                    m.lock().unwrap().closed = true;
                    cv.notify_all();
                }
            });
        }
        Proc { name: name.to_string(), child, lines }
    }

    /// Starts the toybt binary with `args`.
    pub fn toybt(name: &str, args: &[&str]) -> Proc {
        let mut cmd = toybt_command(args);
        cmd.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        Proc::spawn(name, cmd)
    }

    /// Waits until a line containing `needle` has been printed; returns that line.
    /// Panics with everything printed so far if it does not come in time or the process closes its output.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        self.try_wait_line(needle, timeout).unwrap_or_else(|| {
            panic!("{}: no line containing {needle:?} within {timeout:?}; output so far:\n{}", self.name, self.output())
        })
    }

    pub fn try_wait_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.lines.iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if g.closed || now >= deadline {
                return None;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Number of lines so far that contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.lines.0.lock().unwrap().lines.iter().filter(|l| l.contains(needle)).count()
    }

    pub fn output(&self) -> String {
        self.lines.0.lock().unwrap().lines.join("\n")
    }

    /// Waits for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL); // poll: no portable way to wait on a child with a deadline
        }
    }

    /// Sends SIGTERM to this child (ours, by pid).
    pub fn terminate(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }

    /// Sends SIGKILL to this child (ours, by pid).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- output of {} ---\n{}\n--- end of {} ---", self.name, self.output(), self.name);
        }
    }
}

/// Reads `HOST:PORT` out of a line like `... listening on 127.0.0.1:40123 ...`.
pub fn port_from_line(line: &str) -> u16 {
    let after = line.split("listening on ").nth(1).expect("listening line");
    let addr = after.split_whitespace().next().unwrap();
    addr.rsplit(':').next().unwrap().trim_end_matches(|c: char| !c.is_ascii_digit()).parse().unwrap()
}

/// A port that was free a moment ago, for programs that cannot be told to pick their own (real clients).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Deterministic pseudo-random bytes (xorshift), so tests make data without a rand crate.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn which(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
