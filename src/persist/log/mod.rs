//! The write log: one file per sequence number, records appended as
//! `[len u32][xxh64(payload) as u32][payload]`, with group commit under `Always` and
//! a background fsync under `EverySec`. By job: `record` (a command's bytes and
//! frame), `files` (names, end marks, cuts), `reader` (reading back), and here the
//! appending writer.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{SyncPolicy, sync_dir};
use crate::command::Command;
use crate::error::{Error, StorageError, StorageKind, fail, io_err};

mod files;
mod reader;
mod record;

pub(crate) use files::{end_path, extent, log_path, log_seqs, truncate};
use files::{mark_end, open_append};
pub(crate) use reader::{LogReader, Next, whole_record_after};
#[cfg(test)]
pub(crate) use record::MAX_RECORD;
use record::frame_of;

struct Open {
    file: Arc<File>,
    seq: u64,
    /// The length of the log's whole records: where the next one starts, and where a
    /// failed append cuts the file back to.
    len: u64,
    /// Under `Always`, the records waiting for the next batch (see `Log::commit`),
    /// which go to the file right after `len`'s bytes.
    pending: Vec<u8>,
    /// Under `Always`, the bytes of the batch a writer is writing and syncing (the
    /// others wait for it; it goes right after `len`, before `pending`); `None` when
    /// no batch is in flight. Every byte below `len` is then durable.
    leading: Option<u64>,
    /// Under `Always`, where each failed batch cut the file back to, and why it
    /// failed, in order: a writer waiting when the `n`th failure happened was durable
    /// only if its record ended at or before `cuts[n]`'s length. Cleared by a
    /// rotation (which no writer waits across).
    cuts: Vec<(u64, String)>,
    /// Under `Always`: records in `pending`, records in the last batch, how long its
    /// write and fsync took, and whether a writer is waiting for the next batch to
    /// fill before it leads (see `Log::commit`).
    queued: usize,
    last_batch: usize,
    last_sync: Duration,
    forming: bool,
    /// Why the log takes no more writes: a failure it could not undo (a failed append
    /// it could not cut back, or a failed background fsync), after which it cannot
    /// tell which acknowledged bytes are durable. Cleared only by reopening.
    failed: Option<String>,
    /// Under `EverySec`, when the background fsync in flight started.
    syncing_since: Option<Instant>,
    /// The next log, created ahead of a rotation (see `prepare_rotation`).
    next: Option<Arc<File>>,
    /// A delay injected into the next background fsync (tests only).
    #[cfg(test)]
    stall_next_sync: Duration,
    /// Fail the next background fsync (tests only).
    #[cfg(test)]
    fail_next_sync: bool,
}

impl Open {
    /// Refuses once the log has stopped (see `failed`).
    fn usable(&self, dir: &Path) -> Result<(), Error> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(fail(
                StorageKind::NotDurable,
                Some(&log_path(dir, self.seq)),
                format!(
                    "the write log failed earlier ({why}); no write is taken until the engine is reopened"
                ),
            )),
        }
    }

    /// Stops the log for `why`, unless it has stopped already (the first reason is
    /// the one kept).
    fn stop(&mut self, why: String) {
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }

    /// Whether the next background fsync is to fail (never outside tests).
    fn take_fail(&mut self) -> bool {
        #[cfg(test)]
        return std::mem::take(&mut self.fail_next_sync);
        #[cfg(not(test))]
        false
    }

    /// The delay injected into the next background fsync (none outside tests).
    fn take_stall(&mut self) -> Duration {
        #[cfg(test)]
        return std::mem::take(&mut self.stall_next_sync);
        #[cfg(not(test))]
        Duration::ZERO
    }
}

/// The open log and the signal of a background fsync's end, shared with the
/// `EverySec` thread.
struct Shared {
    open: Mutex<Open>,
    synced: Condvar,
    /// Every fsync of the log so far and their total time (see [`LogStats`]).
    fsyncs: AtomicU64,
    fsync_nanos: AtomicU64,
}

impl Shared {
    /// Runs one fsync of `file`, counted in the stats.
    fn sync_counted(&self, file: &File) -> std::io::Result<()> {
        let started = Instant::now();
        let synced = file.sync_data();
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos.fetch_add(nanos, Ordering::Relaxed);
        synced
    }
}

/// The write log's fsyncs so far, for a host's metrics: how many, and their total
/// time (so their mean latency is `fsync_seconds / fsyncs`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogStats {
    /// fsyncs of the write log since the engine opened it (appends' under
    /// [`SyncPolicy::Always`], the background thread's under
    /// [`SyncPolicy::EverySec`], and [`Engine::sync_log`]'s).
    ///
    /// [`Engine::sync_log`]: crate::Engine::sync_log
    pub fsyncs: u64,
    /// Their total time, in seconds.
    pub fsync_seconds: f64,
}

/// How long a background fsync may run before appends wait for it: the bound on
/// what `EverySec` may lose (a second between syncs, plus this) when the disk stalls.
const MAX_SYNC_STALL: Duration = Duration::from_secs(2);

/// The log being appended to.
pub(crate) struct Log {
    dir: PathBuf,
    policy: SyncPolicy,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    /// See [`MAX_SYNC_STALL`], in milliseconds (tests lower it).
    max_stall_ms: AtomicU64,
    /// Appends' fsyncs so far (see `syncs`).
    #[cfg(test)]
    syncs: AtomicU64,
    /// Injected I/O failures, for the tests of what a failure leaves behind.
    #[cfg(test)]
    faults: Faults,
}

/// I/O failures a test can inject into the next append or sync.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Write only this many bytes of the next frame, then fail (with `errno` when it
    /// is not 0: ENOSPC, EIO).
    pub(crate) short_write: Mutex<Option<usize>>,
    /// The OS error a short write fails with.
    pub(crate) errno: std::sync::atomic::AtomicI32,
    /// Fail the next `sync_data` of an append.
    pub(crate) sync: AtomicBool,
    /// Fail the next cut back of a failed append.
    pub(crate) truncate: AtomicBool,
    /// Hold the next append's fsync until the sender is dropped.
    pub(crate) hold_sync: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Appends to log `seq` in `dir` (created if missing), which its caller has
    /// locked (see `persist::dir`).
    pub(crate) fn open(dir: &Path, seq: u64, policy: SyncPolicy) -> Result<Log, Error> {
        let path = log_path(dir, seq);
        let file = Arc::new(open_append(&path)?);
        // Recovery cut any torn tail: the file ends with a whole record.
        let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        sync_dir(dir)?;
        let log = Log {
            dir: dir.to_path_buf(),
            policy,
            shared: Arc::new(Shared {
                open: Mutex::new(Open {
                    file,
                    seq,
                    len,
                    pending: Vec::new(),
                    leading: None,
                    cuts: Vec::new(),
                    queued: 0,
                    last_batch: 0,
                    last_sync: Duration::ZERO,
                    forming: false,
                    failed: None,
                    syncing_since: None,
                    next: None,
                    #[cfg(test)]
                    stall_next_sync: Duration::ZERO,
                    #[cfg(test)]
                    fail_next_sync: false,
                }),
                synced: Condvar::new(),
                fsyncs: AtomicU64::new(0),
                fsync_nanos: AtomicU64::new(0),
            }),
            stop: Arc::new(AtomicBool::new(false)),
            max_stall_ms: AtomicU64::new(MAX_SYNC_STALL.as_millis() as u64),
            #[cfg(test)]
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            faults: Faults::default(),
        };
        if policy == SyncPolicy::EverySec {
            let (shared, stop) = (Arc::downgrade(&log.shared), Arc::clone(&log.stop));
            std::thread::Builder::new()
                .name("relcount-fsync".into())
                .spawn(move || everysec(shared, stop))
                .map_err(|e| {
                    Error::Storage(StorageError::io_doing("starting the fsync thread", e))
                })?;
        }
        Ok(log)
    }

    /// Appends one command (and syncs it under [`SyncPolicy::Always`]). On `Ok` the
    /// command is in the log (and durable under `Always`); on `Err` it is not, and
    /// never will be: whatever part of it reached the file is cut back off before the
    /// error returns, so no later record follows a torn one. When even that fails,
    /// or a background fsync failed, the log takes no more writes until the engine is
    /// reopened (which recovers exactly the records that were acknowledged).
    pub(crate) fn append(&self, command: &Command) -> Result<(), Error> {
        let frame = frame_of(command)?;
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        open.usable(&self.dir)?;
        if self.policy == SyncPolicy::Always {
            return self.commit(open, &frame);
        }
        // A background fsync stalled past the bound: wait for it, so that no more
        // than the bound's worth of acknowledged writes is ever at risk.
        let max_stall = Duration::from_millis(self.max_stall_ms.load(Ordering::Relaxed));
        while open.syncing_since.is_some_and(|t| t.elapsed() >= max_stall) {
            open = self.wait(open);
            open.usable(&self.dir)?;
        }
        if let Err(e) = self.write_frame(&open.file, &frame) {
            // Part of the frame may be in the file: cut it off, so that replay never
            // sees it (the whole records before it stay).
            let len = open.len;
            self.cut_back(&mut open, len, &e);
            return Err(io_err(log_path(&self.dir, open.seq), e));
        }
        open.len += frame.len() as u64;
        Ok(())
    }

    /// Under `Always`, appends `frame` with group commit: it joins the records waiting
    /// for the next fsync, and returns once an fsync covered it. One of the waiting
    /// writers leads: it takes every waiting record, writes them with one `write` and
    /// syncs them with one fsync, outside the log's lock, while the others queue the
    /// next batch in memory (writing to the file while it syncs would stall on the
    /// file system's journal). When the batch's write or fsync fails, the file is cut
    /// back to where the batch began, and every record queued meanwhile is dropped
    /// too: each of their writers is refused.
    fn commit<'a>(&'a self, mut open: MutexGuard<'a, Open>, frame: &[u8]) -> Result<(), Error> {
        open.pending.extend_from_slice(frame);
        open.queued += 1;
        if open.forming {
            self.shared.synced.notify_all();
        }
        let end = open.len + open.leading.unwrap_or(0) + open.pending.len() as u64;
        let cuts = open.cuts.len();
        loop {
            if let Some((kept, why)) = open.cuts.get(cuts) {
                return if end <= *kept {
                    Ok(())
                } else {
                    Err(fail(
                        StorageKind::NotDurable,
                        Some(&log_path(&self.dir, open.seq)),
                        match &open.failed {
                            None => format!(
                                "this write's log record could not be made durable ({why}); it was cut back off the log"
                            ),
                            Some(failed) => format!(
                                "this write's log record could not be made durable ({why}); {failed}"
                            ),
                        },
                    ))
                };
            }
            if open.len >= end {
                return Ok(());
            }
            if open.leading.is_some() || open.forming {
                open = self.wait(open);
                continue;
            }
            if open.queued < open.last_batch {
                open = self.gather(open);
            }
            let (file, batch) = (Arc::clone(&open.file), std::mem::take(&mut open.pending));
            open.leading = Some(batch.len() as u64);
            open.last_batch = std::mem::take(&mut open.queued);
            drop(open);
            let started = Instant::now();
            let done = self
                .write_frame(&file, &batch)
                .and_then(|()| self.sync(&file));
            let took = started.elapsed();
            open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
            open.leading = None;
            open.last_sync = took;
            match done {
                Ok(()) => open.len += batch.len() as u64,
                Err(e) => {
                    // Part of the batch may be in the file, or all of it, durable or
                    // not (a later fsync would not tell): cut it off and refuse it,
                    // with everything queued behind it.
                    let kept = open.len;
                    self.cut_back(&mut open, kept, &e);
                    open.pending.clear();
                    open.queued = 0;
                    open.cuts.push((kept, e.to_string()));
                }
            }
            self.shared.synced.notify_all();
        }
    }

    /// Before leading a batch smaller than the last one, waits a little for the
    /// writers the last fsync acknowledged to queue their next records (PostgreSQL's
    /// `commit_delay`, sized by the last batch rather than a setting): until the batch
    /// is as large as the last, or for half the last fsync's time (at most 1 ms). So
    /// the batches of concurrent writers do not fall into a short one (the first
    /// writer back) and a long one (the others) in turn. A lone writer never waits.
    fn gather<'a>(&self, mut open: MutexGuard<'a, Open>) -> MutexGuard<'a, Open> {
        open.forming = true;
        let deadline = Instant::now() + open.last_sync.min(Duration::from_millis(1));
        loop {
            let now = Instant::now();
            if open.queued >= open.last_batch || now >= deadline {
                break;
            }
            open = self
                .shared
                .synced
                .wait_timeout(open, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        open.forming = false;
        open
    }

    /// Waits until no batch is in flight or queued (every record appended so far is
    /// in the file).
    fn settle<'a>(&self, mut open: MutexGuard<'a, Open>) -> MutexGuard<'a, Open> {
        while open.leading.is_some() || !open.pending.is_empty() {
            open = self.wait(open);
        }
        open
    }

    fn wait<'a>(&self, open: MutexGuard<'a, Open>) -> MutexGuard<'a, Open> {
        self.shared
            .synced
            .wait(open)
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the log back to `len` after a failed write or fsync (`e`); when that fails
    /// too, stops the log (see [`Open::failed`]) and records `len` as where the log
    /// ends (see [`end_path`]: recovery cuts the rest), so the refused records are
    /// never replayed.
    fn cut_back(&self, open: &mut Open, len: u64, e: &std::io::Error) {
        if let Err(cut) = self.cut(&open.file, len) {
            let marked = match mark_end(&self.dir, open.seq, len) {
                Ok(()) => "recovery will cut it".to_string(),
                Err(mark) => format!(
                    "nor could its end be recorded ({mark}): a restart may replay the refused write"
                ),
            };
            open.failed = Some(format!(
                "a failed append ({e}) could not be cut back off ({cut}); {marked}"
            ));
        }
    }

    fn write_frame(&self, file: &File, frame: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self
            .faults
            .short_write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let mut f = file;
            f.write_all(&frame[..n.min(frame.len())])?;
            return Err(match self.faults.errno.swap(0, Ordering::AcqRel) {
                0 => std::io::Error::other("injected short write"),
                errno => std::io::Error::from_raw_os_error(errno),
            });
        }
        let mut f = file;
        f.write_all(frame)
    }

    fn sync(&self, file: &File) -> std::io::Result<()> {
        #[cfg(test)]
        self.syncs.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        {
            let hold = self
                .faults
                .hold_sync
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(release) = hold {
                // Blocks until the test drops its sender.
                let _ = release.recv();
            }
            if self.faults.sync.swap(false, Ordering::AcqRel) {
                return Err(std::io::Error::other("injected fsync failure"));
            }
        }
        self.shared.sync_counted(file)
    }

    /// The log's fsyncs so far.
    pub(crate) fn stats(&self) -> LogStats {
        LogStats {
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
            fsync_seconds: self.shared.fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// Makes every record appended so far durable: waits for a batch in flight, then
    /// fsyncs the current log (a graceful shutdown's last step). A failure stops the
    /// log, as a failed background fsync does.
    pub(crate) fn sync_now(&self) -> Result<(), Error> {
        let file = {
            let open = self.settle(self.shared.open.lock().unwrap_or_else(|e| e.into_inner()));
            open.usable(&self.dir)?;
            Arc::clone(&open.file)
        };
        self.shared.sync_counted(&file).map_err(|e| {
            let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
            open.stop(format!("an fsync failed: {e}"));
            io_err(&self.dir, e)
        })
    }

    /// How many fsyncs appends have run (under `Always`; one may cover many appends).
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Bytes of whole records in the current log, written or queued for the next
    /// batch.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        let open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        open.len + open.leading.unwrap_or(0) + open.pending.len() as u64
    }

    /// Cuts the log back to `len` bytes, durably.
    fn cut(&self, file: &File, len: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if self.faults.truncate.swap(false, Ordering::AcqRel) {
            return Err(std::io::Error::other("injected truncate failure"));
        }
        file.set_len(len)?;
        file.sync_data()
    }

    #[cfg(test)]
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Makes the next background fsync take `stall` longer, and appends wait for any
    /// background fsync in flight for `max_stall` or more.
    #[cfg(test)]
    pub(crate) fn stall_next_sync(&self, stall: Duration, max_stall: Duration) {
        self.max_stall_ms
            .store(max_stall.as_millis() as u64, Ordering::Relaxed);
        self.shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stall_next_sync = stall;
    }

    /// Makes the next background fsync fail.
    #[cfg(test)]
    pub(crate) fn fail_next_background_sync(&self) {
        self.shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fail_next_sync = true;
    }

    /// Whether a background fsync is in flight.
    #[cfg(test)]
    pub(crate) fn syncing(&self) -> bool {
        self.shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .syncing_since
            .is_some()
    }

    /// Creates the next log ahead of a rotation, durably (the file and its directory
    /// entry), so that the rotation itself does no I/O while every writer waits on it.
    pub(crate) fn prepare_rotation(&self) -> Result<(), Error> {
        let seq = {
            let open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
            open.usable(&self.dir)?;
            if open.next.is_some() {
                return Ok(());
            }
            open.seq + 1
        };
        let file = Arc::new(open_append(&log_path(&self.dir, seq))?);
        sync_dir(&self.dir)?;
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.seq + 1 == seq && open.next.is_none() {
            open.next = Some(file);
        }
        Ok(())
    }

    /// Starts the next log and returns its sequence number, with the log it ends (to
    /// sync once the writers go on: [`sync_ended`](Self::sync_ended)). When nothing
    /// was logged since the last rotation, the current log stays (so compactions that
    /// keep failing, say on a full disk, add no files). Called with every shard
    /// locked, so no write straddles the switch.
    pub(crate) fn rotate(&self) -> Result<(u64, Option<Arc<File>>), Error> {
        let open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        // Every writer is held out by the caller's locks, but let a batch in flight
        // land in the log it was counted against.
        let mut open = self.settle(open);
        open.usable(&self.dir)?;
        if open.len == 0 {
            return Ok((open.seq, None));
        }
        let seq = open.seq + 1;
        let next = match open.next.take() {
            Some(file) => file,
            None => {
                let file = Arc::new(open_append(&log_path(&self.dir, seq))?);
                sync_dir(&self.dir)?;
                file
            }
        };
        let ended = std::mem::replace(&mut open.file, next);
        open.seq = seq;
        open.len = 0;
        open.cuts.clear();
        Ok((seq, Some(ended)))
    }

    /// Syncs a log that a rotation ended. A failure stops the log, as a failed
    /// background fsync does: acknowledged writes in it may not be on disk.
    pub(crate) fn sync_ended(&self, ended: &File) -> Result<(), Error> {
        ended.sync_data().map_err(|e| {
            let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
            open.stop(format!("an ended log's fsync failed: {e}"));
            io_err(&self.dir, e)
        })
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        let _ = open.file.sync_data();
    }
}

/// Syncs the current log once a second until the log is dropped. A failed fsync stops
/// the log from taking writes: the kernel may have dropped the pages it could not
/// write, so nothing acknowledged after it could be trusted to survive. An fsync that
/// stalls past [`MAX_SYNC_STALL`] makes appends wait for it.
fn everysec(shared: std::sync::Weak<Shared>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1000));
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (file, stall, fail) = {
            let mut o = shared.open.lock().unwrap_or_else(|e| e.into_inner());
            o.syncing_since = Some(Instant::now());
            (Arc::clone(&o.file), o.take_stall(), o.take_fail())
        };
        if !stall.is_zero() {
            std::thread::sleep(stall);
        }
        let synced = if fail {
            Err(std::io::Error::other("injected background fsync failure"))
        } else {
            shared.sync_counted(&file)
        };
        let mut o = shared.open.lock().unwrap_or_else(|e| e.into_inner());
        o.syncing_since = None;
        // Whatever log it was (a rotation may have come between), a failed fsync means
        // acknowledged bytes may not be on disk; a later fsync of the same file would
        // not report the error again.
        if let Err(e) = synced {
            o.stop(format!("a background fsync failed: {e}"));
        }
        drop(o);
        shared.synced.notify_all();
    }
}
