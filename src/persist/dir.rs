//! A data directory: its lock, its snapshot and its logs. [`DataDir`] owns every
//! file in it; the engine asks it to recover (a pull of steps: the snapshot's, then
//! each log's records in runs), to open the log where recovery ended, to retire the
//! logs a new snapshot covers, and how many log bytes are left to replay. It never
//! names a file itself.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::log::{self, Log, LogReader, Next};
use super::snapshot::{self, Item, SnapshotReader};
use super::{Skipped, SyncPolicy, remove_gently};
use crate::command::Command;
use crate::error::{Error, StorageKind, fail, io_err};

/// The data directory of one engine, locked for as long as this lives.
#[derive(Debug)]
pub(crate) struct DataDir {
    /// Absolute: a later change of the working directory must not send a
    /// compaction elsewhere.
    path: PathBuf,
    /// Locked: one engine per directory, as a second would interleave its log with
    /// ours.
    _lock: File,
}

impl DataDir {
    /// Opens the data directory at `path` (created if missing) and locks it.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when it cannot be made, read or locked, or is in use by
    /// another engine (`Locked`).
    pub(crate) fn open(path: &Path) -> Result<DataDir, Error> {
        std::fs::create_dir_all(path).map_err(|e| io_err(path, e))?;
        let path = path.canonicalize().map_err(|e| io_err(path, e))?;
        let lock_path = path.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        // A lock can outlive its engine for a moment: a process forking a child shares
        // the descriptor until the child's exec closes it. So a busy lock is retried
        // for up to a second before the directory is declared in use.
        let mut tries = 0;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {}
                // Not a lock held elsewhere: the file system failed (or has no locks).
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path, e)),
            }
            tries += 1;
            if tries == 50 {
                return Err(fail(
                    StorageKind::Locked,
                    Some(&path),
                    "the data directory is in use by another engine",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(DataDir { path, _lock: lock })
    }

    /// Where the directory's snapshot is.
    pub(crate) fn snapshot_path(&self) -> PathBuf {
        super::snapshot_path(&self.path)
    }

    /// The size of the directory's snapshot (0 when there is none yet).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when it cannot be read.
    pub(crate) fn snapshot_bytes(&self) -> Result<u64, Error> {
        let path = self.snapshot_path();
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Whether `path` names one of the files this directory keeps (its snapshot
    /// and the snapshot's temporary files, its logs and their end marks, its lock),
    /// whether or not it exists yet: only the directory writes those (a snapshot
    /// saved over the lock would let a second engine in, one over a log would lose
    /// its writes). Other files there are the host's.
    pub(crate) fn keeps(&self, path: &Path) -> bool {
        let Some(path) = resolved(path) else {
            return false;
        };
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        let tmp = snapshot::tmp_prefix(&self.snapshot_path());
        path.parent() == Some(self.path.as_path())
            && (name == "LOCK"
                || name == "snapshot.bin"
                || name.starts_with("log.")
                || name.starts_with(&tmp))
    }

    /// Recovers what the directory holds, as a pull of steps: the snapshot's, then
    /// each log's records from the sequence the snapshot covers up to, each log read
    /// to its end mark. What the files need (logs cut, tails kept, covered logs and
    /// stale files removed) waits for [`Recovery::finish`].
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the directory cannot be listed or the snapshot opened.
    pub(crate) fn recover(&self) -> Result<Recovery<'_>, Error> {
        let snap = self.snapshot_path();
        let snapshot = if snap.exists() {
            Some(SnapshotReader::open(&snap)?)
        } else {
            None
        };
        // Removed once recovery succeeds, as every change it makes.
        let changes = self.stale()?.into_iter().map(Change::Remove).collect();
        Ok(Recovery {
            dir: self,
            next_seq: snapshot.as_ref().map_or(0, SnapshotReader::next_seq),
            snapshot,
            seqs: None,
            at: 0,
            reading: None,
            current: None,
            changes,
            kept: Vec::new(),
        })
    }

    /// Opens the write log to append to log `seq` (where recovery ended).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the log cannot be opened.
    pub(crate) fn open_log(&self, seq: u64, sync: SyncPolicy) -> Result<Log, Error> {
        Log::open(&self.path, seq, sync)
    }

    /// Deletes the logs before `next_seq`, which a snapshot now in place covers, and
    /// their end marks.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the directory cannot be listed or a log deleted.
    pub(crate) fn retire(&self, next_seq: u64) -> Result<(), Error> {
        for seq in log::log_seqs(&self.path)? {
            if seq < next_seq {
                let path = log::log_path(&self.path, seq);
                remove_gently(&path).map_err(|e| io_err(&path, e))?;
                remove_if_there(&log::end_path(&self.path, seq))?;
            }
        }
        Ok(())
    }

    /// Bytes of log left to replay: every log there, as the logs a snapshot covers
    /// are deleted once it is in place (but for the moment a compaction takes).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the directory cannot be listed.
    pub(crate) fn log_bytes(&self) -> Result<u64, Error> {
        log::log_seqs(&self.path)?
            .into_iter()
            .try_fold(0u64, |sum, seq| {
                let path = log::log_path(&self.path, seq);
                match std::fs::metadata(&path) {
                    Ok(m) => Ok(sum + m.len()),
                    // Deleted since it was listed, by a compaction that folded it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(sum),
                    Err(e) => Err(io_err(&path, e)),
                }
            })
    }

    /// The files a crash left half made: temporary snapshots, and end marks not yet
    /// renamed into place (`log.<seq>.end.tmp`).
    fn stale(&self) -> Result<Vec<PathBuf>, Error> {
        let dir = &self.path;
        let prefix = snapshot::tmp_prefix(&self.snapshot_path());
        let mut stale = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let stale_name = name.starts_with(&prefix)
                || (name.starts_with("log.") && name.ends_with(".end.tmp"));
            // Only files the engine made: a directory of that name is the host's.
            let file = entry.file_type().is_ok_and(|t| t.is_file());
            if stale_name && file {
                stale.push(entry.path());
            }
        }
        Ok(stale)
    }
}

/// `path` with its directory made absolute and free of links, whether or not the file
/// exists yet.
fn resolved(path: &Path) -> Option<PathBuf> {
    let parent = match path.parent()? {
        p if p.as_os_str().is_empty() => Path::new("."),
        p => p,
    };
    Some(parent.canonicalize().ok()?.join(path.file_name()?))
}

/// A logged command with its ordinal and byte offset in its log.
pub(crate) type Logged = (u64, u64, Command);

/// One step of a recovery.
pub(crate) enum Step {
    /// A step of the snapshot.
    Snapshot(Item),
    /// A run of records of the log `file`: single writes gathered (up to
    /// [`REPLAY_RUN`]), any other record alone.
    Log(PathBuf, Vec<Logged>),
}

/// Most writes gathered into one run.
const REPLAY_RUN: usize = 1 << 16;

/// What a log's reading thread hands over: a run of records, then the end (with
/// the offset of a torn record, if the log ends in one).
enum Piece {
    Run(Vec<Logged>),
    End(Option<u64>),
}

/// A log being read: by a thread of its own, which decodes the next runs while the
/// engine applies this one.
struct Reading {
    path: PathBuf,
    /// Its length as recovery reads it (its end mark's, when it has one).
    len: u64,
    rx: Receiver<Result<Piece, Error>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Reading {
    fn drop(&mut self) {
        // The thread stops at its next send once the receiver is gone.
        let (_, rx) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A recovery under way (see [`DataDir::recover`]), pulled with [`Recovery::next`].
pub(crate) struct Recovery<'d> {
    dir: &'d DataDir,
    snapshot: Option<SnapshotReader<std::io::BufReader<File>>>,
    /// The first log the snapshot does not cover.
    next_seq: u64,
    /// The logs found once the snapshot is read, and the index of the next to read.
    seqs: Option<Vec<u64>>,
    at: usize,
    reading: Option<Reading>,
    /// The last log read: where appending goes on.
    current: Option<u64>,
    /// What the files need once recovery has read them all, made by
    /// [`Recovery::finish`] (so a recovery that fails changes nothing), in order.
    changes: Vec<Change>,
    /// Cut tails that held whole records, listed for the host.
    kept: Vec<Skipped>,
}

/// A change a recovery makes to the directory's files once it has succeeded.
enum Change {
    /// Copies bytes `from..to` of a log beside it, to the file named.
    Keep(PathBuf, u64, u64, PathBuf),
    /// Cuts a log to a length.
    Cut(PathBuf, u64),
    /// Removes a file (a log a snapshot covers, an end mark applied).
    Remove(PathBuf),
}

impl Recovery<'_> {
    /// Says that the engine refused the relation type the snapshot just yielded
    /// (see [`SnapshotReader::refuse_define`]).
    pub(crate) fn refuse_define(&mut self, rel_id: u32) {
        if let Some(s) = &mut self.snapshot {
            s.refuse_define(rel_id);
        }
    }

    /// Ends a recovery whose every step was taken: cuts the logs where recovery
    /// found their ends (an end mark's length, a torn record), keeping beside a log
    /// a cut tail that held whole records, and removes the logs the snapshot covers
    /// and the end marks applied. Returns the log to append to (the last one read,
    /// or the first one the snapshot does not cover) and the cut tails that held
    /// records (see `Engine::recovery_skipped`).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when a file cannot be changed.
    pub(crate) fn finish(mut self) -> Result<(u64, Vec<Skipped>), Error> {
        self.reading = None;
        let changed = !self.changes.is_empty();
        for change in std::mem::take(&mut self.changes) {
            match change {
                Change::Keep(path, from, to, kept) => keep_tail(&path, from, to, &kept)?,
                Change::Cut(path, len) => log::truncate(&path, len)?,
                Change::Remove(path) => remove_if_there(&path)?,
            }
        }
        if changed {
            super::sync_dir(&self.dir.path)?;
        }
        let seq = self.current.unwrap_or(self.next_seq);
        Ok((seq, std::mem::take(&mut self.kept)))
    }

    /// The next step, `None` once the snapshot and every log are read.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when a file cannot be read, or a snapshot or log is
    /// corrupted, truncated (but for a torn last record), missing from the
    /// sequence, or not relcount's.
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> Result<Option<Step>, Error> {
        if let Some(s) = &mut self.snapshot {
            match s.next()? {
                Some(item) => return Ok(Some(Step::Snapshot(item))),
                None => self.snapshot = None,
            }
        }
        loop {
            if let Some(reading) = &self.reading {
                let piece = reading.rx.recv().unwrap_or_else(|_| {
                    Err(fail(
                        StorageKind::Io,
                        Some(&reading.path),
                        "the log's reader stopped",
                    ))
                })?;
                match piece {
                    Piece::Run(run) => return Ok(Some(Step::Log(reading.path.clone(), run))),
                    Piece::End(torn) => {
                        let done = self.reading.take().map(|r| (r.path.clone(), r.len));
                        if let (Some(good_len), Some((path, len))) = (torn, done) {
                            self.cut_torn(&path, good_len, len)?;
                        }
                    }
                }
            }
            if !self.start_next_log()? {
                return Ok(None);
            }
        }
    }

    /// A bad record (at `good_len` of the log at `path`, read to `len`) ends the
    /// logs, unless a later log holds records: then the log is corrupted. Else the
    /// log is cut there once recovery succeeds: what follows is a crash's torn,
    /// unacknowledged append (or corruption, which looks the same on disk); when it
    /// holds whole records it is kept beside the log and listed, never dropped in
    /// silence.
    fn cut_torn(&mut self, path: &Path, good_len: u64, len: u64) -> Result<(), Error> {
        let dir = &self.dir.path;
        let later = &self.seqs.as_deref().unwrap_or(&[])[self.at..];
        // A later log's acknowledged length: its end mark's when it has one.
        let later_records = later
            .iter()
            .any(|&s| log::extent(dir, s).map_or(true, |e| e.acknowledged() > 0));
        if later_records {
            return Err(fail(
                StorageKind::Corrupt,
                Some(path),
                format!("corrupted record at byte {good_len}, before the last log"),
            ));
        }
        if log::whole_record_after(path, good_len, len)? {
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            // Never over a tail kept before (a second crash tears at the same byte:
            // the log was cut there).
            let kept = (0u32..)
                .map(|n| match n {
                    0 => dir.join(format!("{name}.cut.{good_len}")),
                    n => dir.join(format!("{name}.cut.{good_len}.{n}")),
                })
                // Free only if nothing is there, a dangling link included.
                .find(|p| std::fs::symlink_metadata(p).is_err())
                .unwrap_or_else(|| dir.join(format!("{name}.cut.{good_len}.last")));
            self.kept.push(Skipped {
                file: path.to_path_buf(),
                offset: good_len,
                record: 0,
                reason: format!(
                    "a bad record ends the log at byte {good_len}, and the {} bytes after it \
                     hold whole records (or, past 1 MiB, were not searched): a crash's \
                     unacknowledged append, or corruption; they are kept in {}",
                    len - good_len,
                    kept.display()
                ),
            });
            self.changes
                .push(Change::Keep(path.to_path_buf(), good_len, len, kept));
        }
        self.changes.push(Change::Cut(path.to_path_buf(), good_len));
        Ok(())
    }

    /// Starts reading the next log; `false` when there is none.
    fn start_next_log(&mut self) -> Result<bool, Error> {
        let dir = &self.dir.path;
        if self.seqs.is_none() {
            let mut seqs = log::log_seqs(dir)?;
            // Covered by the snapshot (a compaction stopped before deleting them),
            // with any end mark of them: removed once recovery succeeds.
            let covered = seqs.partition_point(|&s| s < self.next_seq);
            for seq in seqs.drain(..covered) {
                self.changes.push(Change::Remove(log::log_path(dir, seq)));
                if log::end_path(dir, seq).exists() {
                    self.changes.push(Change::Remove(log::end_path(dir, seq)));
                }
            }
            self.seqs = Some(seqs);
        }
        let seqs = self.seqs.as_deref().unwrap_or(&[]);
        let Some(&seq) = seqs.get(self.at) else {
            return Ok(false);
        };
        let expected = self.current.map_or(self.next_seq, |c| c + 1);
        if seq != expected {
            // Writes acknowledged in the missing log would be lost without a word.
            return Err(fail(
                StorageKind::Corrupt,
                Some(&log::log_path(dir, expected)),
                "missing: the logs after the snapshot must follow one another",
            ));
        }
        self.at += 1;
        self.current = Some(seq);
        // A failed append's end mark: the log is read to it, and cut there once
        // recovery succeeds.
        let path = log::log_path(dir, seq);
        let extent = log::extent(dir, seq)?;
        let len = extent.acknowledged();
        if extent.mark.is_some() {
            if extent.file > len {
                self.changes.push(Change::Cut(path.clone(), len));
            }
            self.changes.push(Change::Remove(log::end_path(dir, seq)));
        }
        let reader = LogReader::open(&path, len)?;
        let (tx, rx) = sync_channel(2);
        let thread = std::thread::Builder::new()
            .name("relcount-replay".into())
            .spawn(move || read_runs(reader, &tx))
            .map_err(|e| io_err(&path, e))?;
        self.reading = Some(Reading {
            path,
            len,
            rx,
            thread: Some(thread),
        });
        Ok(true)
    }
}

/// Reads a log into runs: writes gathered (up to [`REPLAY_RUN`]), every other
/// record a run of its own; then the end. Stops early when the receiver is gone.
fn read_runs(mut reader: LogReader, tx: &SyncSender<Result<Piece, Error>>) {
    let mut run: Vec<Logged> = Vec::new();
    let mut n = 0u64;
    loop {
        let next = match reader.next() {
            Ok(next) => next,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let pairwise = matches!(next, Next::Record(_, Command::Write(_)));
        if (!pairwise || run.len() >= REPLAY_RUN)
            && !run.is_empty()
            && tx.send(Ok(Piece::Run(std::mem::take(&mut run)))).is_err()
        {
            return;
        }
        let end = match next {
            Next::Record(offset, command) => {
                run.push((n, offset, command));
                n += 1;
                if pairwise || tx.send(Ok(Piece::Run(std::mem::take(&mut run)))).is_ok() {
                    continue;
                }
                return;
            }
            Next::End => None,
            Next::Torn(good_len) => Some(good_len),
        };
        let _ = tx.send(Ok(Piece::End(end)));
        return;
    }
}

/// Removes the file at `path`, if there is one.
fn remove_if_there(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path, e)),
        _ => Ok(()),
    }
}

/// Copies bytes `from..to` of the log at `path` to the new file `kept`, durably (its
/// contents and its name).
fn keep_tail(path: &Path, from: u64, to: u64, kept: &Path) -> Result<(), Error> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut src = File::open(path).map_err(|e| io_err(path, e))?;
    src.seek(SeekFrom::Start(from))
        .map_err(|e| io_err(path, e))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(kept)
        .map_err(|e| io_err(kept, e))?;
    std::io::copy(&mut src.take(to - from), &mut out).map_err(|e| io_err(kept, e))?;
    out.flush()
        .and_then(|()| out.sync_all())
        .map_err(|e| io_err(kept, e))?;
    // Its name durable before the cut that follows it.
    super::sync_dir(kept.parent().unwrap_or(Path::new(".")))
}
