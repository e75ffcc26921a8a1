//! The disk workers: a small fixed pool of threads, shared by every torrent of the process, that write verified
//! pieces, fsync them and write the resume records, so the loop never waits on the page cache or the device.
//!
//! Why threads. Copying a piece into the page cache is the kernel's work on the calling thread, and on a VM whose
//! fresh page-cache memory is slow to touch it was ~45 % of a leech's time; a full disk queue or an fsync can take
//! seconds. Done on the loop, that time is taken from receiving and hashing; here it runs on the other core.
//!
//! Why a shared pool. One thread per torrent made a daemon with 1,000 seeding torrents a process of 1,000 threads
//! (each with its stack and its wake-ups), while an idle seed has no disk work at all. The pool has `POOL_THREADS`
//! threads, started when the first torrent needs one; each torrent is pinned to one of them in turn, so its jobs
//! still run one at a time in the order they were queued, and a busy torrent gets a thread's whole time.
//!
//! What stays on the loop. The session still decides everything; the worker only hashes and writes. A whole
//! received piece is handed over with its index; the worker hashes it (SHA-1 was ~55 % of the loop's CPU samples in
//! a 1 GiB leech, and on the worker it overlaps with receiving on the other core), writes it only if it matches, and
//! reports the verdict (`DiskDone::Written` or `DiskDone::Mismatch`). The loop acts on it: it blames and bans the
//! senders of a bad piece and asks for it again, and counts a good piece as its own only when the write is reported.
//! Reads for serving stay on the loop (a pread from the page cache is a copy into the send buffer, as cheap as
//! handing the request over).
//!
//! Jobs of one torrent run in the order they were queued, so a resume record queued after writes is written after
//! them, and its fsync covers them: it vouches only for data whose fsync completed, as before. The piece buffer is
//! moved in and handed back with the result for reuse, never copied. The session bounds its queued data in bytes
//! (`unwritten_bytes`) and stops reading from peers past its bound, so the queue stays far below its job bound.
//! Dropping a torrent's worker drains its queue: every queued write and record is done before the drop returns,
//! whatever way the session ends; a session that stops waits for the queue itself before its final record
//! (`Torrent::stop`).

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

mod runs;

use self::runs::{Runs, Verified};
use super::{PieceBytes, Storage, StorageError};
use crate::resume::{Keeper, SaveError};

/// Threads in the pool: as many as the cores the loop leaves free on a small machine, and enough that one torrent's
/// slow fsync does not hold every other torrent's writes.
const POOL_THREADS: usize = 2;
/// Jobs one pool thread's queue holds, all torrents pinned to it together; each session's byte bound keeps its own
/// share small (see `Torrent::input_paused`), so sending never blocks the loop in practice.
const QUEUE_JOBS: usize = 4096;
/// A pool thread needs little stack: it calls pwrite, fsync and the record's encoder.
const STACK: usize = 256 * 1024;

enum Work {
    Write {
        index: u32,
        data: PieceBytes,
        /// The next piece is on its way, so this one may wait for it to write both with one call.
        next_coming: bool,
    },
    Save {
        pieces: Vec<u8>,
    },
    Audit {
        max_files: usize,
    },
    /// Answers once every job queued before it for this torrent is done (a dropped worker waits for it).
    Barrier(SyncSender<()>),
    /// Holds the thread until the sender side is dropped or sends, so tests can fill the queue.
    #[cfg(test)]
    Gate(Receiver<()>),
}

/// What one torrent's jobs work on, kept between its jobs by the thread it is pinned to.
struct Desk {
    storage: Storage,
    keeper: Option<Keeper>,
}

/// One job: the work, and the torrent it is for.
struct Job {
    work: Work,
    owner: Owner,
}

/// A torrent as its jobs see it: its desk, where its reports go and whom to wake.
#[derive(Clone)]
struct Owner {
    desk: Arc<Mutex<Desk>>,
    done: Sender<DiskDone>,
    waker: Arc<OnceLock<Arc<mio::Waker>>>,
}

/// What the worker reports back, in the order the jobs were queued.
#[derive(Debug)]
pub enum DiskDone {
    /// Piece `index` matched its hash and was written (or the write failed); `data` is its buffer, back for reuse.
    Written { index: u32, data: PieceBytes, result: Result<(), StorageError> },
    /// Piece `index` did not match its hash and was not written; `data` is its bytes, for blaming its senders.
    Mismatch { index: u32, data: PieceBytes },
    /// A resume record was brought up to date (see `resume::Keeper::save`).
    Saved(Result<(), SaveError>),
    /// A job failed in a way no error covers (it panicked): nothing more of this torrent will be written.
    Lost,
}

/// One torrent's handle on the pool.
pub struct DiskWorker {
    /// The queue of the pool thread this torrent is pinned to.
    queue: SyncSender<Job>,
    desk: Arc<Mutex<Desk>>,
    /// Handed to each job, for its report.
    report_to: Sender<DiskDone>,
    done: Receiver<DiskDone>,
    waker: Arc<OnceLock<Arc<mio::Waker>>>,
    /// Bytes of piece data queued and not yet reported.
    unwritten: usize,
    /// Writes and saves queued and not yet reported.
    pending: usize,
}

/// The pool's queues, one per thread, started by the first torrent that needs them.
static POOL: OnceLock<Vec<SyncSender<Job>>> = OnceLock::new();
/// The next thread a torrent is pinned to, in turn.
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn pool() -> io::Result<&'static [SyncSender<Job>]> {
    if let Some(p) = POOL.get() {
        return Ok(p);
    }
    let mut queues = Vec::with_capacity(POOL_THREADS);
    for i in 0..POOL_THREADS {
        let (tx, rx) = mpsc::sync_channel(QUEUE_JOBS);
        std::thread::Builder::new().name(format!("disk-{i}")).stack_size(STACK).spawn(move || serve(rx))?;
        queues.push(tx);
    }
    // Two loops starting at once may both have built a pool: the one that lost stops its threads by dropping its
    // queues here.
    Ok(POOL.get_or_init(|| queues))
}

impl DiskWorker {
    /// Pins a torrent to a pool thread (starting the pool if need be); it writes through `storage` (see
    /// `Storage::twin`) and keeps the record with `keeper`. Whole aligned pieces are written past the page cache
    /// (`Storage::set_direct_writes`): on this VM it cost a leech half the CPU of writing through the page cache and
    /// made the 8-leecher swarm faster, not slower (README, Performance). `TOYBT_WRITES=buffered` in the environment
    /// writes everything through the page cache instead.
    pub fn start(mut storage: Storage, keeper: Option<Keeper>) -> io::Result<DiskWorker> {
        storage.set_direct_writes(std::env::var_os("TOYBT_WRITES").is_none_or(|v| v != "buffered"));
        let queues = pool()?;
        let queue = queues[NEXT.fetch_add(1, Ordering::Relaxed) % queues.len()].clone();
        let (report_to, done) = mpsc::channel();
        Ok(DiskWorker {
            queue,
            desk: Arc::new(Mutex::new(Desk { storage, keeper })),
            report_to,
            done,
            waker: Arc::default(),
            unwritten: 0,
            pending: 0,
        })
    }

    /// From now on every report also wakes the loop through `waker` (the first one given stays).
    pub fn set_waker(&self, waker: &Arc<mio::Waker>) {
        if self.waker.get().is_none() {
            let _ = self.waker.set(waker.clone());
        }
    }

    /// Queues a received piece to be hashed and, if it matches, written; `DiskDone::Written` or `DiskDone::Mismatch`
    /// follows. `next_coming`: piece `index + 1` is still being received, so the worker may hold this one a moment
    /// to write both with one call (see `serve`).
    pub fn write(&mut self, index: u32, data: PieceBytes, next_coming: bool) {
        self.unwritten += data.len();
        self.pending += 1;
        self.send(Work::Write { index, data, next_coming });
    }

    /// Queues a resume record for `pieces` (a wire bitfield), after every write queued so far; `DiskDone::Saved`
    /// follows. Without a keeper it reports success at once.
    pub fn save(&mut self, pieces: Vec<u8>) {
        self.pending += 1;
        self.send(Work::Save { pieces });
    }

    /// Queues a look at up to `max_files` files for changes made under us (see `Keeper::audit`); nothing is reported.
    pub fn audit(&mut self, max_files: usize) {
        self.send(Work::Audit { max_files });
    }

    /// Holds the worker's thread before the jobs queued from now on until the returned sender sends (or is dropped).
    #[cfg(test)]
    pub(crate) fn gate(&mut self) -> SyncSender<()> {
        let (open, wait) = mpsc::sync_channel(1);
        self.send(Work::Gate(wait));
        open
    }

    /// A report, if one is in.
    pub fn poll_done(&mut self) -> Option<DiskDone> {
        if self.pending == 0 {
            return None;
        }
        match self.done.try_recv() {
            Ok(d) => Some(self.count(d)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(self.lost()),
        }
    }

    /// The next report, waiting for it; `None` when nothing is pending.
    pub fn wait_done(&mut self) -> Option<DiskDone> {
        if self.pending == 0 {
            return None;
        }
        match self.done.recv() {
            Ok(d) => Some(self.count(d)),
            Err(_) => Some(self.lost()),
        }
    }

    /// Bytes of piece data queued and not yet reported written.
    pub fn unwritten_bytes(&self) -> usize {
        self.unwritten
    }

    /// Nothing queued is waiting for its report.
    pub fn is_idle(&self) -> bool {
        self.pending == 0
    }

    fn count(&mut self, d: DiskDone) -> DiskDone {
        if matches!(d, DiskDone::Lost) {
            return self.lost();
        }
        self.pending = self.pending.saturating_sub(1);
        if let DiskDone::Written { data, .. } | DiskDone::Mismatch { data, .. } = &d {
            self.unwritten -= data.len();
        }
        d
    }

    fn lost(&mut self) -> DiskDone {
        self.pending = 0;
        self.unwritten = 0;
        DiskDone::Lost
    }

    fn send(&mut self, work: Work) {
        let owner = Owner { desk: self.desk.clone(), done: self.report_to.clone(), waker: self.waker.clone() };
        let job = Job { work, owner };
        let job = match self.queue.try_send(job) {
            Ok(()) => return,
            // Only if the torrents on this thread let far more than their byte bounds pile up: waiting is the bound.
            Err(TrySendError::Full(job)) => job,
            // The pool threads never end (a panicking job is caught), so this is not expected; nothing is queued.
            Err(TrySendError::Disconnected(_)) => return,
        };
        let _ = self.queue.send(job);
    }
}

impl Drop for DiskWorker {
    /// Drains the queue: the thread finishes every job of this torrent queued before the drop returns.
    fn drop(&mut self) {
        let (answer, finished) = mpsc::sync_channel(1);
        self.send(Work::Barrier(answer));
        if finished.recv().is_err() {
            log::error!("the disk worker failed; data queued for writing may be lost");
        }
    }
}

/// A pool thread: runs the jobs of every torrent pinned to it, in the order they were queued, except that verified
/// pieces that can be written past the page cache are held back a moment to be written together with their
/// neighbours (see `runs`). A torrent's held pieces are written before any other job of its, so a record still
/// follows the data it vouches for; their reports may come out of job order among themselves.
fn serve(jobs: Receiver<Job>) {
    let mut runs = Runs::default();
    loop {
        let job = match runs.wait(Instant::now()) {
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
            Some(wait) => match jobs.recv_timeout(wait) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    runs.write_stale(Instant::now());
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        serve_job(job, &mut runs);
        runs.write_stale(Instant::now());
    }
    runs.write_all();
}

fn serve_job(Job { work, owner }: Job, runs: &mut Runs) {
    if !matches!(work, Work::Write { .. }) {
        runs.write_torrent(&owner);
    }
    let report = match work {
        Work::Barrier(answer) => {
            let _ = answer.send(());
            return;
        }
        #[cfg(test)]
        Work::Gate(wait) => {
            runs.write_all();
            let _ = wait.recv();
            return;
        }
        // A job that panics (a bug) must not take the thread, and with it every torrent pinned to it: its own
        // torrent hears `Lost`, and its desk, poisoned, writes nothing more.
        work => match std::panic::catch_unwind(AssertUnwindSafe(|| run(&owner.desk, work))) {
            Ok(Ran::Report(report)) => report,
            Ok(Ran::Silent) => return,
            Ok(Ran::Hold(piece)) => {
                runs.hold(Instant::now(), &owner, piece);
                return;
            }
            Err(_) => DiskDone::Lost,
        },
    };
    // Reports keep the order of their torrent's jobs where they can: its held pieces go first.
    runs.write_torrent(&owner);
    send_reports(&owner, [report]);
}

/// Sends reports to their torrent and wakes its loop once.
fn send_reports(owner: &Owner, reports: impl IntoIterator<Item = DiskDone>) {
    for report in reports {
        // The receiver is gone only while the owner is being dropped: the jobs still run, unreported.
        let _ = owner.done.send(report);
    }
    if let Some(w) = owner.waker.get()
        && let Err(e) = w.wake()
    {
        log::debug!("cannot wake the loop: {e}");
    }
}

/// What became of one job.
enum Ran {
    Report(DiskDone),
    /// A verified piece to hold for a run.
    Hold(Verified),
    Silent,
}

/// One job at its torrent's desk: its report, or a verified piece to hold for a run.
fn run(desk: &Mutex<Desk>, work: Work) -> Ran {
    let reports = matches!(work, Work::Write { .. } | Work::Save { .. });
    let Ok(mut desk) = desk.lock() else { return if reports { Ran::Report(DiskDone::Lost) } else { Ran::Silent } };
    let Desk { storage, keeper } = &mut *desk;
    Ran::Report(match work {
        Work::Write { index, data, next_coming } => {
            if !storage.piece_matches(index, &data) {
                return Ran::Report(DiskDone::Mismatch { index, data });
            }
            if let Some((file, offset)) = storage.direct_span(index) {
                return Ran::Hold(Verified { index, data, file, offset, next_coming });
            }
            let result = storage.write_piece(index, &data);
            DiskDone::Written { index, data, result }
        }
        Work::Save { pieces } => DiskDone::Saved(match keeper {
            Some(k) => k.save(storage, &pieces),
            None => Ok(()),
        }),
        Work::Audit { max_files } => {
            if let Some(k) = keeper {
                k.audit(storage, max_files);
            }
            return Ran::Silent;
        }
        Work::Barrier(_) => return Ran::Silent,
        #[cfg(test)]
        Work::Gate(_) => return Ran::Silent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Metainfo;
    use crate::resume;
    use crate::storage::OpenMode;
    use crate::test_data::bytes as data;

    struct Fixture {
        dir: tempfile::TempDir,
        meta: Metainfo,
        content: Vec<u8>,
        record: std::path::PathBuf,
    }

    impl Fixture {
        fn new(mode: OpenMode) -> (Fixture, DiskWorker) {
            let content = data(10 * 1024, 7);
            let meta = Metainfo::single_file_for_tests([3; 20], "w.bin", &content, 1024);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("w.bin");
            if mode == OpenMode::Seed {
                std::fs::write(&path, &content).unwrap();
            }
            let storage = Storage::open(&meta, path, mode).unwrap();
            let record = dir.path().join("w.bin.toybt");
            let keeper = Keeper::new(record.clone(), &meta, &storage);
            let worker = DiskWorker::start(storage.twin(), Some(keeper)).unwrap();
            (Fixture { dir, meta, content, record }, worker)
        }

        fn piece(&self, i: u32) -> PieceBytes {
            self.content[i as usize * 1024..(i as usize + 1) * 1024].to_vec().into()
        }
    }

    fn drain(w: &mut DiskWorker) -> Vec<DiskDone> {
        std::iter::from_fn(|| w.wait_done()).collect()
    }

    #[test]
    fn writes_and_records_are_reported_in_order_and_the_record_follows_the_data() {
        let (f, mut w) = Fixture::new(OpenMode::Leech);
        for i in [3, 0, 9] {
            w.write(i, f.piece(i), true);
        }
        w.save(vec![0b1001_0000, 0b0100_0000]);
        w.write(1, f.piece(1), true);
        let got = drain(&mut w);
        let order: Vec<String> = got
            .iter()
            .map(|d| match d {
                DiskDone::Written { index, result, data } => {
                    assert!(result.is_ok(), "{result:?}");
                    assert_eq!(data.len(), 1024, "the buffer comes back whole");
                    format!("w{index}")
                }
                DiskDone::Saved(r) => format!("s{}", r.is_ok()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(order, ["w3", "w0", "w9", "strue", "w1"]);
        assert!(w.is_idle());
        assert_eq!(w.unwritten_bytes(), 0);
        let on_disk = std::fs::read(f.dir.path().join("w.bin")).unwrap();
        for i in [0, 1, 3, 9] {
            assert_eq!(&on_disk[i * 1024..(i + 1) * 1024], &f.piece(i as u32)[..]);
        }
        let rec = resume::decode(&std::fs::read(&f.record).unwrap()).unwrap();
        assert_eq!(rec.pieces, vec![0b1001_0000, 0b0100_0000]);
        // The record vouches for the file as it was after the three writes it followed were synced.
        assert_eq!(rec.files.len(), f.meta.files.len());
        assert!(rec.files[0].is_some());
    }

    /// Aligned pieces go past the page cache and neighbours are held to be written together: the reports still come
    /// one per piece in the order of the jobs, a record still follows the data it vouches for, and a run that waits
    /// for a piece that never comes is written anyway.
    #[test]
    fn neighbouring_pieces_written_as_runs_keep_their_reports_and_order() {
        const P: usize = Aligned::P;
        let (f, mut w) = Aligned::new(12);
        let (content, path, record, piece) = (&f.content, &f.path, &f.record, |i| f.piece(i));
        let gate = w.gate();
        for i in [0, 1, 2, 3, 5, 6] {
            // Piece 4 is not coming: the run of 0..=3 is written without waiting for it.
            w.write(i as u32, piece(i), i != 3);
        }
        let mut bad = piece(7);
        bad[0] ^= 1;
        w.write(7, bad, true);
        w.write(8, piece(8), true);
        w.save(vec![0b1110_1101, 0b1000_0000]);
        w.write(9, piece(9), true);
        gate.send(()).unwrap();
        let order: Vec<String> = drain(&mut w)
            .iter()
            .map(|d| match d {
                DiskDone::Written { index, result: Ok(()), data } if data.len() == P => format!("w{index}"),
                DiskDone::Mismatch { index, .. } => format!("m{index}"),
                DiskDone::Saved(Ok(())) => "s".to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(order, ["w0", "w1", "w2", "w3", "w5", "w6", "m7", "w8", "s", "w9"]);
        let on_disk = std::fs::read(path).unwrap();
        for i in [0, 1, 2, 3, 5, 6, 8, 9] {
            assert_eq!(&on_disk[i * P..(i + 1) * P], &content[i * P..(i + 1) * P], "piece {i}");
        }
        for i in [4, 7, 10, 11] {
            assert!(on_disk[i * P..(i + 1) * P].iter().all(|&b| b == 0), "piece {i} was never written");
        }
        let rec = resume::decode(&std::fs::read(record).unwrap()).unwrap();
        assert_eq!(rec.pieces, vec![0b1110_1101, 0b1000_0000]);
    }

    /// Pieces whose neighbours never come are held within bounds (runs, bytes, time) and all end up written.
    #[test]
    fn held_pieces_stay_within_bounds_and_are_all_written() {
        let (f, mut w) = Aligned::new(40);
        let gate = w.gate();
        // Every other piece, each said to have neighbours on the way: twenty runs of one, more than may be held.
        for i in (0..40).step_by(2) {
            w.write(i as u32, f.piece(i), true);
        }
        gate.send(()).unwrap();
        let mut written: Vec<u32> = drain(&mut w)
            .into_iter()
            .map(|d| match d {
                DiskDone::Written { index, result: Ok(()), .. } => index,
                other => panic!("{other:?}"),
            })
            .collect();
        written.sort_unstable();
        assert_eq!(written, (0..40).step_by(2).collect::<Vec<u32>>());
        let on_disk = std::fs::read(&f.path).unwrap();
        for i in 0..40 {
            let want: &[u8] =
                if i % 2 == 0 { &f.content[i * Aligned::P..(i + 1) * Aligned::P] } else { &[0; Aligned::P] };
            assert_eq!(&on_disk[i * Aligned::P..(i + 1) * Aligned::P], want, "piece {i}");
        }
    }

    /// A torrent of `DIRECT_ALIGN`-sized pieces, whose pieces the worker may hold and write in runs.
    struct Aligned {
        _dir: tempfile::TempDir,
        content: Vec<u8>,
        path: std::path::PathBuf,
        record: std::path::PathBuf,
    }

    impl Aligned {
        const P: usize = crate::storage::DIRECT_ALIGN;

        fn new(pieces: usize) -> (Aligned, DiskWorker) {
            let content = data(pieces * Self::P, 9);
            let meta = Metainfo::single_file_for_tests([4; 20], "r.bin", &content, Self::P as u32);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.bin");
            let storage = Storage::open(&meta, path.clone(), OpenMode::Leech).unwrap();
            let record = dir.path().join("r.bin.toybt");
            let keeper = Keeper::new(record.clone(), &meta, &storage);
            let worker = DiskWorker::start(storage.twin(), Some(keeper)).unwrap();
            (Aligned { _dir: dir, content, path, record }, worker)
        }

        /// Piece `i` in an aligned buffer, as the session hands it over.
        fn piece(&self, i: usize) -> PieceBytes {
            let mut b = PieceBytes::default();
            b.set_len(Self::P);
            b.put(0, &self.content[i * Self::P..(i + 1) * Self::P]);
            b
        }
    }

    #[test]
    fn a_refused_write_reports_the_storage_error_and_hands_the_buffer_back() {
        let (f, mut w) = Fixture::new(OpenMode::Seed);
        w.write(2, f.piece(2), true);
        match drain(&mut w).as_slice() {
            [DiskDone::Written { index: 2, result: Err(StorageError::ReadOnly), data }] => assert_eq!(data.len(), 1024),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_piece_that_fails_its_hash_is_reported_and_never_written() {
        let (f, mut w) = Fixture::new(OpenMode::Leech);
        let mut bad = f.piece(3);
        bad[100] ^= 1;
        w.write(3, bad, true);
        w.write(4, vec![0; 5].into(), true);
        w.write(5, f.piece(5), true);
        let got = drain(&mut w);
        match got.as_slice() {
            [
                DiskDone::Mismatch { index: 3, data: a },
                DiskDone::Mismatch { index: 4, data: b },
                DiskDone::Written { index: 5, result: Ok(()), .. },
            ] => {
                assert_eq!((a.len(), a[100]), (1024, f.content[3 * 1024 + 100] ^ 1), "the bad bytes come back");
                assert_eq!(b.len(), 5);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.unwritten_bytes(), 0);
        let on_disk = std::fs::read(f.dir.path().join("w.bin")).unwrap();
        assert!(on_disk[3 * 1024..6 * 1024].starts_with(&[0; 2048]), "pieces 3 and 4 were not written");
        assert_eq!(&on_disk[5 * 1024..6 * 1024], &f.piece(5)[..]);
    }

    #[test]
    fn unwritten_bytes_count_what_is_queued_until_it_is_reported() {
        let (f, mut w) = Fixture::new(OpenMode::Leech);
        let gate = w.gate();
        for i in 0..6 {
            w.write(i, f.piece(i), true);
        }
        assert_eq!(w.unwritten_bytes(), 6 * 1024);
        // Held at the gate: nothing can have been written, so nothing is reported.
        assert!(w.poll_done().is_none());
        assert_eq!(w.unwritten_bytes(), 6 * 1024);
        gate.send(()).unwrap();
        let first = w.wait_done();
        assert!(matches!(first, Some(DiskDone::Written { index: 0, .. })));
        assert_eq!(w.unwritten_bytes(), 5 * 1024);
        assert_eq!(drain(&mut w).len(), 5);
        assert_eq!(w.unwritten_bytes(), 0);
        assert!(w.poll_done().is_none(), "nothing pending, nothing to report");
    }

    #[test]
    fn dropping_the_worker_finishes_every_queued_write_and_record_first() {
        let (f, mut w) = Fixture::new(OpenMode::Leech);
        let gate = w.gate();
        for i in 0..10 {
            w.write(i, f.piece(i), true);
        }
        w.save(vec![0xff, 0xc0]);
        // Still held: the drop must wait for the gate and then for every job behind it.
        let opener = std::thread::spawn(move || gate.send(()));
        drop(w);
        opener.join().unwrap().unwrap();
        assert_eq!(std::fs::read(f.dir.path().join("w.bin")).unwrap(), f.content);
        let rec = resume::decode(&std::fs::read(&f.record).unwrap()).unwrap();
        assert_eq!(rec.pieces, vec![0xff, 0xc0]);
        assert_eq!(rec.files[0], resume::stamp(&f.dir.path().join("w.bin")).unwrap());
    }

    #[test]
    fn many_torrents_share_the_pools_few_threads_and_each_keeps_its_own_order_and_record() {
        let fixtures: Vec<(Fixture, DiskWorker)> =
            (0..3 * POOL_THREADS + 1).map(|_| Fixture::new(OpenMode::Leech)).collect();
        let mut fixtures = fixtures;
        for (f, w) in &mut fixtures {
            for i in (0..10).rev() {
                w.write(i, f.piece(i), true);
            }
            w.save(vec![0xff, 0xc0]);
        }
        for (f, w) in &mut fixtures {
            let order: Vec<Option<u32>> = drain(w)
                .into_iter()
                .map(|d| match d {
                    DiskDone::Written { index, result: Ok(()), .. } => Some(index),
                    DiskDone::Saved(Ok(())) => None,
                    other => panic!("{other:?}"),
                })
                .collect();
            let want: Vec<Option<u32>> = (0..10).rev().map(Some).chain([None]).collect();
            assert_eq!(order, want);
            assert_eq!(std::fs::read(f.dir.path().join("w.bin")).unwrap(), f.content);
            assert_eq!(resume::decode(&std::fs::read(&f.record).unwrap()).unwrap().pieces, vec![0xff, 0xc0]);
        }
        let disk_threads = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
            .filter(|name| name.starts_with("disk-"))
            .count();
        assert_eq!(disk_threads, POOL_THREADS, "one pool for every torrent of the process");
    }
}
