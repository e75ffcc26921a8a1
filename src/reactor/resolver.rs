//! Tracker host names resolved off the loop: the daemon adds torrents while it runs, and `getaddrinfo` may wait
//! seconds on a slow name server, which would stall every other torrent.
//!
//! The loop sends `(host, port)` to one helper thread, which answers through a channel and wakes the loop with the
//! same `mio::Waker` the disk workers use; the reactor takes the answers every turn (`Services::disk_turn`).
//! Announces that needed a host being resolved wait in [`Resolving`] until its answer comes, then are carried out,
//! or fail with the reason the name did not resolve.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::tracker::announce::{AnnounceParams, TrackerUrl};

/// The resolver thread needs little stack: it only calls `getaddrinfo`.
const STACK: usize = 256 * 1024;

/// What the thread found for one `(host, port)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub host: String,
    pub port: u16,
    /// The first address, or why there is none.
    pub result: Result<SocketAddr, String>,
}

/// The helper thread and the questions it has not answered yet. The thread starts with the first question.
#[derive(Default)]
pub struct Resolver {
    /// `None` until the first question, and while dropping.
    jobs: Option<Sender<(String, u16)>>,
    done: Option<Receiver<Resolved>>,
    waker: Arc<OnceLock<Arc<mio::Waker>>>,
    thread: Option<JoinHandle<()>>,
    asked: HashSet<(String, u16)>,
}

impl Resolver {
    /// From now on every answer also wakes the loop through `waker` (the first one given stays).
    pub fn set_waker(&self, waker: &Arc<mio::Waker>) {
        if self.waker.get().is_none() {
            let _ = self.waker.set(waker.clone());
        }
    }

    /// Is `(host, port)` asked and not answered yet?
    pub fn is_pending(&self, host: &str, port: u16) -> bool {
        self.asked.contains(&(host.to_string(), port))
    }

    /// Asks for `(host, port)` unless it is asked already. Fails only if the thread cannot be started.
    pub fn ask(&mut self, host: &str, port: u16) -> Result<(), String> {
        let key = (host.to_string(), port);
        if self.asked.contains(&key) {
            return Ok(());
        }
        if self.jobs.is_none() {
            self.start()?;
        }
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(key.clone()).is_ok());
        if !sent {
            return Err("the resolver thread is gone".into());
        }
        self.asked.insert(key);
        Ok(())
    }

    fn start(&mut self) -> Result<(), String> {
        let (jobs, job_rx) = mpsc::channel::<(String, u16)>();
        let (done_tx, done) = mpsc::channel();
        let wake = self.waker.clone();
        let thread = std::thread::Builder::new()
            .name("resolver".into())
            .stack_size(STACK)
            .spawn(move || serve(job_rx, done_tx, wake))
            .map_err(|e| format!("cannot start the resolver thread: {e}"))?;
        self.jobs = Some(jobs);
        self.done = Some(done);
        self.thread = Some(thread);
        Ok(())
    }

    /// The next answer, if one came. A thread that died with questions open answers them all with an error.
    pub fn poll_done(&mut self) -> Option<Resolved> {
        let done = self.done.as_ref()?;
        match done.try_recv() {
            Ok(r) => {
                self.asked.remove(&(r.host.clone(), r.port));
                Some(r)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                let (host, port) = self.asked.iter().next().cloned()?;
                self.asked.remove(&(host.clone(), port));
                Some(Resolved { host, port, result: Err("the resolver thread is gone".into()) })
            }
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current name; not joined, as that name may take seconds.
        self.jobs = None;
        drop(self.thread.take());
    }
}

fn serve(jobs: Receiver<(String, u16)>, done: Sender<Resolved>, waker: Arc<OnceLock<Arc<mio::Waker>>>) {
    while let Ok((host, port)) = jobs.recv() {
        let result = resolve(&host, port);
        if done.send(Resolved { host, port, result }).is_err() {
            return;
        }
        if let Some(w) = waker.get() {
            let _ = w.wake();
        }
    }
}

/// The first address of `host:port`, or why there is none.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    match (host, port).to_socket_addrs() {
        Ok(mut found) => found.next().ok_or_else(|| format!("{host} has no address")),
        Err(e) => Err(e.to_string()),
    }
}

/// An announce that waits for its tracker's host name.
pub struct Parked {
    pub info_hash: [u8; 20],
    pub url: TrackerUrl,
    pub params: AnnounceParams,
    pub timeout: Duration,
}

/// The resolver and the announces waiting for it.
#[derive(Default)]
pub struct Resolving {
    pub resolver: Resolver,
    pub parked: Vec<Parked>,
}

impl Resolving {
    /// Forgets the announces of a torrent whose session is gone (a new session announces on its own).
    pub fn forget(&mut self, info_hash: &[u8; 20]) {
        self.parked.retain(|p| p.info_hash != *info_hash);
    }

    /// The announces waiting for `(host, port)`, taken out.
    pub fn take_parked(&mut self, host: &str, port: u16) -> Vec<Parked> {
        let (out, keep) =
            std::mem::take(&mut self.parked).into_iter().partition(|p| p.url.host == host && p.url.port == port);
        self.parked = keep;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};

    /// Waits for answers through the waker, as the loop does; every wait is bounded.
    fn answers(r: &mut Resolver, poll: &mut Poll, want: usize) -> Vec<Resolved> {
        let mut got = Vec::new();
        let mut events = Events::with_capacity(4);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while got.len() < want {
            while let Some(a) = r.poll_done() {
                got.push(a);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero() || got.len() >= want, "answers so far: {got:?}");
            if got.len() < want {
                poll.poll(&mut events, Some(left)).unwrap();
            }
        }
        got.sort_by(|a, b| a.host.cmp(&b.host));
        got
    }

    #[test]
    fn a_name_that_resolves_and_one_that_does_not_are_both_answered_and_wake_the_loop() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), Token(7)).unwrap());
        let mut r = Resolver::default();
        r.set_waker(&waker);
        assert!(r.poll_done().is_none(), "nothing asked, nothing answered, no thread");
        r.ask("localhost", 6969).unwrap();
        r.ask("nonexistent.invalid", 80).unwrap();
        r.ask("localhost", 6969).unwrap();
        assert!(r.is_pending("localhost", 6969) && r.is_pending("nonexistent.invalid", 80));
        assert!(!r.is_pending("localhost", 80));

        let got = answers(&mut r, &mut poll, 2);
        assert_eq!(got[0].host, "localhost");
        let addr = got[0].result.as_ref().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 6969, "{addr}");
        assert_eq!((got[1].host.as_str(), got[1].port), ("nonexistent.invalid", 80));
        assert!(got[1].result.is_err(), "{got:?}");
        assert!(!r.is_pending("localhost", 6969), "answered questions are not pending");
        assert!(r.poll_done().is_none(), "asked twice, answered once");
    }

    #[test]
    fn parked_announces_are_taken_by_host_and_forgotten_with_their_torrent() {
        let url = |host: &str| TrackerUrl::parse(&format!("http://{host}:6969/announce")).unwrap();
        let park = |n: u8, host: &str| Parked {
            info_hash: [n; 20],
            url: url(host),
            params: AnnounceParams {
                info_hash: [n; 20],
                peer_id: [0; 20],
                port: 6881,
                uploaded: 0,
                downloaded: 0,
                left: 0,
                event: None,
                numwant: 50,
                key: 0,
            },
            timeout: Duration::from_secs(1),
        };
        let parked = vec![park(1, "a.example"), park(2, "b.example"), park(3, "a.example")];
        let mut rs = Resolving { parked, ..Default::default() };
        rs.forget(&[3; 20]);
        let taken = rs.take_parked("a.example", 6969);
        assert_eq!(taken.iter().map(|p| p.info_hash[0]).collect::<Vec<_>>(), vec![1]);
        assert_eq!(rs.parked.len(), 1);
        assert!(rs.take_parked("a.example", 80).is_empty(), "another port is another tracker");
    }
}
