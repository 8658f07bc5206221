//! The engine's side of durability: opening a data directory (snapshot, then log
//! replay), logging each accepted write, freezing a consistent point in time, and
//! compaction.

use std::path::{Path, PathBuf};

use super::{Engine, EngineBuilder};
use crate::command::Command;
use crate::error::{Error, StorageKind, fail, io_err};
use crate::persist::log::{self, Log, LogStats};
use crate::persist::snapshot::{self, Frozen, SnapshotStats};
use crate::persist::{Skipped, SyncPolicy, snapshot_path};
use crate::value::Value;

impl EngineBuilder {
    /// Builds the engine from the data directory `dir` (created if missing): the last
    /// snapshot, then every write logged after it; from then on every accepted write is
    /// logged there under `sync`. A torn last log record (a crash mid-write) is dropped.
    ///
    /// A record that decodes but that this version refuses (one an earlier version
    /// accepted, such as data past a limit it checked differently) never stops the
    /// open: it is skipped and listed by [`Engine::recovery_skipped`], with its file
    /// and position.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the directory cannot be read or written, or a snapshot or
    /// log is corrupted, truncated (but for a torn last record), missing from the
    /// sequence, or not relcount's.
    ///
    /// # Examples
    ///
    /// ```
    /// use relcount::{Engine, PropSpec, RelationType, SyncPolicy, Value};
    ///
    /// let dir = std::env::temp_dir().join(format!("relcount-doc-{}", std::process::id()));
    /// {
    ///     let engine = Engine::builder().open(&dir, SyncPolicy::Always)?;
    ///     engine.define(RelationType::new(1, 1, 2).prop("Like", PropSpec::int().sum()))?;
    ///     engine.attach(1, "a", "b", &[("Like", Value::Int(2))])?;
    /// } // "restart"
    /// let engine = Engine::builder().open(&dir, SyncPolicy::Always)?;
    /// assert_eq!(engine.get_counter(1, "a")?.total(), 1);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), relcount::Error>(())
    /// ```
    pub fn open(self, dir: impl AsRef<Path>, sync: SyncPolicy) -> Result<Engine, Error> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        // Kept absolute: a later change of the working directory must not send a
        // compaction elsewhere.
        let dir = &dir.canonicalize().map_err(|e| io_err(dir, e))?;
        // One engine per directory: a second one would interleave its log with ours.
        let lock_path = dir.join("LOCK");
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
                    Some(dir),
                    "the data directory is in use by another engine",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let engine = self.build();
        let snap = snapshot_path(dir);
        remove_stale_tmp(dir, &snap)?;
        let next_seq = if snap.exists() {
            engine.restore(&snap, |sink| Ok(snapshot::load(&snap, sink)?.0))?
        } else {
            0
        };
        let seqs = log::log_seqs(dir)?;
        let mut current = next_seq;
        let mut expected = next_seq;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = log::log_path(dir, seq);
            if seq < next_seq {
                // Covered by the snapshot (a compaction stopped before deleting it),
                // with any end mark of it.
                std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
                let _ = std::fs::remove_file(log::end_path(dir, seq));
                continue;
            }
            if seq != expected {
                // Writes acknowledged in the missing log would be lost without a word.
                return Err(fail(
                    StorageKind::Corrupt,
                    Some(&log::log_path(dir, expected)),
                    "missing: the logs after the snapshot must follow one another",
                ));
            }
            expected = seq + 1;
            log::apply_end_mark(dir, seq)?;
            let reader = log::LogReader::open(&path)?;
            // One thread reads and decodes the log into runs while this one replays
            // them (see `replay`).
            let torn = std::thread::scope(|s| {
                let (tx, rx) = std::sync::mpsc::sync_channel(2);
                s.spawn(move || read_runs(reader, &tx));
                for piece in rx {
                    match piece? {
                        Piece::Run(run) => engine.replay(run, &path),
                        Piece::End(torn) => return Ok(torn),
                    }
                }
                Ok::<_, Error>(None)
            })?;
            if let Some(good_len) = torn {
                // A torn record ends the logs, unless a later log holds records.
                let later_records = seqs[i + 1..].iter().any(|&s| {
                    std::fs::metadata(log::log_path(dir, s)).map_or(true, |m| m.len() > 0)
                });
                if later_records {
                    return Err(fail(
                        StorageKind::Corrupt,
                        Some(&path),
                        format!("corrupted record at byte {good_len}, before the last log"),
                    ));
                }
                // A crash mid-append: the records before it are all there is.
                log::truncate(&path, good_len)?;
            }
            current = seq;
        }
        let _ = engine.log.set(Log::open(dir, current, sync, lock)?);
        let _ = engine.data_dir.set(dir.to_path_buf());
        Ok(engine)
    }

    /// Builds the engine with these settings and loads a snapshot file into it (without
    /// a write log: see [`open`](Self::open) for a durable engine). The shards, hasher,
    /// top index threshold and resolver are this builder's.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] for a file that cannot be read, or is corrupted, truncated,
    /// of another version or not a relcount snapshot. Never panics and never allocates
    /// more than the file's size on any input.
    pub fn load_snapshot(self, path: impl AsRef<Path>) -> Result<Engine, Error> {
        let engine = self.build();
        let path = path.as_ref();
        engine.restore(path, |sink| Ok(snapshot::load(path, sink)?.0))?;
        Ok(engine)
    }

    /// Loads an engine from the bytes of a snapshot file (see
    /// [`load_snapshot`](Self::load_snapshot)).
    ///
    /// # Errors
    ///
    /// As [`load_snapshot`](Self::load_snapshot).
    pub fn load_snapshot_bytes(self, bytes: &[u8]) -> Result<Engine, Error> {
        let engine = self.build();
        engine.restore(Path::new(""), |sink| {
            let (next_seq, _) = snapshot::load_bytes(bytes, sink).map_err(|c| {
                fail(
                    StorageKind::Corrupt,
                    None,
                    format!("corrupted snapshot: {}", c.0),
                )
            })?;
            Ok(next_seq)
        })?;
        Ok(engine)
    }
}

/// A batch's answer as the snapshot loader takes it: which row was refused, if one
/// was (`Error::InRow`), or that the whole batch was.
fn refused<T>(done: Result<T, Error>) -> snapshot::Refused {
    match done {
        Ok(_) => Ok(()),
        Err(Error::InRow { row, error }) => Err((Some(row), *error)),
        Err(e) => Err((None, e)),
    }
}

/// Most skipped records listed (see `Engine::note_skipped`).
const MAX_SKIPPED: usize = 10_000;

/// A logged command with its ordinal and byte offset in its log.
type Logged = (u64, u64, Command);

/// Most writes gathered into one parallel replay.
const REPLAY_RUN: usize = 1 << 16;

/// What the log's reading thread hands to the replay: a run of records, then the
/// end (with the offset of a torn record, if the log ends in one).
enum Piece {
    Run(Vec<Logged>),
    End(Option<u64>),
}

/// Reads a log into runs for `replay`: writes and detaches gathered (up to
/// [`REPLAY_RUN`]), every other record a run of its own; then the end. Stops early
/// when the receiver is gone.
fn read_runs(mut reader: log::LogReader, tx: &std::sync::mpsc::SyncSender<Result<Piece, Error>>) {
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
        let pairwise = matches!(next, log::Next::Record(_, Command::Write(_)));
        if (!pairwise || run.len() >= REPLAY_RUN)
            && !run.is_empty()
            && tx.send(Ok(Piece::Run(std::mem::take(&mut run)))).is_err()
        {
            return;
        }
        let end = match next {
            log::Next::Record(offset, command) => {
                run.push((n, offset, command));
                n += 1;
                if pairwise || tx.send(Ok(Piece::Run(std::mem::take(&mut run)))).is_ok() {
                    continue;
                }
                return;
            }
            log::Next::End => None,
            log::Next::Torn(good_len) => Some(good_len),
        };
        let _ = tx.send(Ok(Piece::End(end)));
        return;
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

/// Removes the temporary files of snapshots that a crash interrupted.
fn remove_stale_tmp(dir: &Path, snap: &Path) -> Result<(), Error> {
    let prefix = snapshot::tmp_prefix(snap);
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        }
    }
    Ok(())
}

impl Engine {
    /// The records recovery skipped because this version refuses them (see
    /// [`EngineBuilder::open`]): empty unless a data directory or snapshot written by
    /// an earlier version holds something this one no longer accepts. A host should
    /// log them. At most the first 10,000 are listed, then one entry saying more were
    /// skipped.
    #[must_use]
    pub fn recovery_skipped(&self) -> Vec<Skipped> {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replays a run of logged commands: a run of single writes as one batch that
    /// skips what this version refuses (see `replay_writes`), any other command
    /// alone. A refused command is noted as skipped, in log order.
    fn replay(&self, run: Vec<Logged>, file: &Path) {
        let mut at = Vec::with_capacity(run.len());
        let mut writes = Vec::with_capacity(run.len());
        let mut others = Vec::new();
        for (record, offset, command) in run {
            match command {
                Command::Write(w) => {
                    at.push((record, offset));
                    writes.push(w);
                }
                other => others.push((record, offset, other)),
            }
        }
        let mut refused: Vec<(u64, u64, Error)> = self
            .replay_writes(&writes)
            .into_iter()
            .map(|(i, e)| (at[i].0, at[i].1, e))
            .collect();
        for (record, offset, command) in others {
            if let Err(e) = self.execute(command) {
                refused.push((record, offset, e));
            }
        }
        refused.sort_by_key(|r| r.0);
        for (record, offset, e) in refused {
            self.note_skipped(Skipped {
                file: file.to_path_buf(),
                offset,
                record,
                reason: e.to_string(),
            });
        }
    }

    /// Notes a record recovery skipped: the first [`MAX_SKIPPED`], then one entry
    /// saying more were skipped, so a hostile file cannot grow the list without bound.
    fn note_skipped(&self, skipped: Skipped) {
        let mut list = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        match list.len() {
            n if n < MAX_SKIPPED => list.push(skipped),
            n if n == MAX_SKIPPED => list.push(Skipped {
                reason: format!(
                    "more records were skipped; only the first {MAX_SKIPPED} are listed"
                ),
                ..skipped
            }),
            _ => {}
        }
    }

    /// Loads a snapshot into this new engine: `load` decodes it (from `file`, named
    /// in what is skipped) into a sink that executes each command; returns the first
    /// log sequence number the snapshot does not cover.
    fn restore(
        &self,
        file: &Path,
        load: impl FnOnce(snapshot::Sink<'_>) -> Result<u64, Error>,
    ) -> Result<u64, Error> {
        let mut table = super::load::Table::new();
        let table = std::cell::RefCell::new(&mut table);
        load(snapshot::Sink {
            apply: &mut |command| self.execute(command),
            profiles: &mut |items| self.load_profiles(items, &mut table.borrow_mut()),
            targets: &mut |targets| self.load_targets(targets, &table.borrow()),
            bulk: &mut |rel_id, names, rows| refused(self.import_logged(rel_id, names, rows)),
            ids: &mut |db, ids| refused(self.import_ids(db, ids)),
            skip: &mut |offset, record, reason| {
                self.note_skipped(Skipped {
                    file: file.to_path_buf(),
                    offset,
                    record,
                    reason,
                });
            },
        })
    }

    /// Appends `command` to the write log, if the engine has one. Called by every write
    /// after validation and before it changes anything, with its locks held.
    pub(super) fn log(&self, command: impl FnOnce() -> Command) -> Result<(), Error> {
        match self.log.get() {
            Some(log) => log.append(&command()),
            None => Ok(()),
        }
    }

    /// Executes one logged or snapshotted change, through the same paths as the
    /// public calls (so replay validates exactly as the original call did).
    pub(crate) fn execute(&self, command: Command) -> Result<(), Error> {
        match command {
            Command::Define(def) => self.define(def),
            Command::Write(w) => self.write_one(&w),
            Command::Batch(writes) => self.apply(&writes).map(drop),
            Command::Bulk {
                rel_id,
                names,
                rows,
            } => self.import_logged(rel_id, &names, &rows).map(drop),
            Command::Delete { db, id } => self.delete_profile(db, &id),
            Command::Import { db, id, data } => self.import_profile(db, &id, data),
            Command::Profiles(items) => self.import_profiles(
                items
                    .iter()
                    .map(|(db, id, data)| (*db, id.as_str(), data.clone())),
            ),
        }
    }

    /// Everything at one point in time, without stopping the writers for more than
    /// a moment: with define held and every shard locked (in ascending order), the
    /// log is rotated if `rotate` (to a file created beforehand, so no I/O happens
    /// under the locks), the relation types are collected and a snapshot point
    /// begins; then the locks are released. From then on the first change to each
    /// shard captures that shard's targets (reference counts), and the first change
    /// to each profile keeps its state, so the state at the point is collected beside
    /// the writers, one shard at a time. `serial` (the snapshot lock held) numbers
    /// the points. What the snapshot holds is decided by what was collected, never by
    /// anything read later; it is encoded without any lock.
    pub(super) fn freeze(&self, serial: &mut u32, rotate: bool) -> Result<Frozen, Error> {
        *serial = serial.checked_add(1).unwrap_or(1);
        let point = *serial;
        let (schemas, next_seq, ended) = {
            let _define = self.define_lock.lock().unwrap_or_else(|e| e.into_inner());
            let held = self.store.lock_all();
            let (next_seq, ended) = match (rotate, self.log.get()) {
                (true, Some(log)) => log.rotate()?,
                _ => (0, None),
            };
            let mut schemas = Vec::new();
            self.schemas.each(|s| {
                schemas.push(s.def.clone());
                true
            });
            schemas.sort_by_key(|d| d.rel_id());
            self.store.begin_point(&held, point);
            self.directory.begin_point(point);
            (schemas, next_seq, ended)
        };
        let targets = self.store.take_point();
        let (profiles, deleting) = self.directory.take_point();
        if let (Some(ended), Some(log)) = (ended, self.log.get()) {
            log.sync_ended(&ended)?;
        }
        Ok(Frozen {
            schemas,
            profiles,
            deleting: deleting.into_iter().collect(),
            targets,
            next_seq,
        })
    }

    /// Writes a snapshot of the whole engine to `path`, crash-safely (temporary file,
    /// fsync, rename, fsync of the directory). The snapshot is of one point in time even
    /// while writers run: they pause while the relations are collected (O(targets),
    /// reference counts, no copying), then encoding runs beside them.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the file cannot be written, or is the engine's own data
    /// directory's snapshot (which only [`compact`](Self::compact) writes, with the
    /// log position it covers).
    pub fn save_snapshot(&self, path: impl AsRef<Path>) -> Result<SnapshotStats, Error> {
        let path = path.as_ref();
        if let Some(dir) = self.data_dir.get() {
            // A snapshot there without its log position would be replayed over again.
            let own = snapshot_path(dir);
            if path == own || resolved(path).is_some_and(|p| Some(p) == resolved(&own)) {
                return Err(fail(
                    StorageKind::Refused,
                    Some(path),
                    "this is the data directory's own snapshot: use compact() to write it",
                ));
            }
        }
        let mut serial = self.snapshot_lock.lock().unwrap_or_else(|e| e.into_inner());
        snapshot::write(&self.freeze(&mut serial, false)?, path)
    }

    /// Snapshots a durable engine into its data directory and deletes the logs the
    /// snapshot covers (the log restarts at the snapshot's point in time).
    ///
    /// Compactions and snapshot saves of one engine run one at a time (a second call
    /// waits for the first), so a snapshot never replaces a newer one and a log is
    /// deleted only once a snapshot covering it is in place. Writers keep running
    /// meanwhile, but for the moment the point in time is taken.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the engine has no data directory (see
    /// [`EngineBuilder::open`]) or writing fails.
    pub fn compact(&self) -> Result<SnapshotStats, Error> {
        let dir: PathBuf = self.data_dir.get().cloned().ok_or_else(|| {
            fail(
                StorageKind::Refused,
                None,
                "compact: the engine has no data directory",
            )
        })?;
        let mut serial = self.snapshot_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = self.log.get() {
            log.prepare_rotation()?;
        }
        let frozen = self.freeze(&mut serial, true)?;
        let stats = snapshot::write(&frozen, &snapshot_path(&dir))?;
        for seq in log::log_seqs(&dir)? {
            if seq < frozen.next_seq {
                let path = log::log_path(&dir, seq);
                crate::persist::remove_gently(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        Ok(stats)
    }

    /// Bytes of write log not yet folded into a snapshot: what a restart would replay
    /// (0 for an engine without a data directory). The log grows with every write until
    /// [`compact`](Self::compact) folds it; a host compacts when this passes what it is
    /// willing to replay at start (the server does, past `RELCOUNT_COMPACT_MB`).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the data directory cannot be listed.
    pub fn log_bytes(&self) -> Result<u64, Error> {
        let Some(dir) = self.data_dir.get() else {
            return Ok(0);
        };
        // Logs a snapshot covers are deleted once it is in place, so every log left is
        // one to replay (but for the moment a compaction takes to delete them).
        log::log_seqs(dir)?.into_iter().try_fold(0u64, |sum, seq| {
            let path = log::log_path(dir, seq);
            match std::fs::metadata(&path) {
                Ok(m) => Ok(sum + m.len()),
                // Deleted since it was listed, by a compaction that folded it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(sum),
                Err(e) => Err(io_err(&path, e)),
            }
        })
    }

    /// Makes every write acknowledged so far durable, whatever the sync policy: waits
    /// for a group commit in flight, then fsyncs the write log (what a host runs last
    /// on a graceful shutdown). Without a data directory, does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the fsync fails (the log then takes no more writes, as
    /// after a failed background fsync) or the log had already stopped.
    pub fn sync_log(&self) -> Result<(), Error> {
        self.log.get().map_or(Ok(()), log::Log::sync_now)
    }

    /// The write log's fsyncs so far (count and total time), for a host's metrics;
    /// `None` without a data directory.
    #[must_use]
    pub fn log_stats(&self) -> Option<LogStats> {
        self.log.get().map(log::Log::stats)
    }

    /// Loads an engine with the default settings from a snapshot file (without a write
    /// log): short for `Engine::builder().load_snapshot(path)`.
    ///
    /// # Errors
    ///
    /// As [`EngineBuilder::load_snapshot`].
    pub fn load_snapshot(path: impl AsRef<Path>) -> Result<Engine, Error> {
        Engine::builder().load_snapshot(path)
    }

    /// Loads an engine with the default settings from the bytes of a snapshot file:
    /// short for `Engine::builder().load_snapshot_bytes(bytes)`.
    ///
    /// # Errors
    ///
    /// As [`EngineBuilder::load_snapshot`].
    pub fn load_snapshot_bytes(bytes: &[u8]) -> Result<Engine, Error> {
        Engine::builder().load_snapshot_bytes(bytes)
    }

    /// The owned weights of a write, for its log record.
    pub(super) fn owned_weights<N: AsRef<str>>(weights: &[(N, Value)]) -> Vec<(String, Value)> {
        weights
            .iter()
            .map(|(n, v)| (n.as_ref().to_owned(), *v))
            .collect()
    }
}

/// Failures injected into the write log: after each, exactly the acknowledged writes
/// are recovered.
#[cfg(test)]
mod fault_tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::schema::{PropSpec, RelationType};

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("relcount-fault-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn open(dir: &Path, sync: SyncPolicy) -> Engine {
        let engine = Engine::builder().open(dir, sync).expect("open");
        if engine.relation_type(1).is_none() {
            engine
                .define(RelationType::new(1, 1, 2).prop("Like", PropSpec::int().sum()))
                .expect("define");
        }
        engine
    }

    fn strengthen(engine: &Engine) -> Result<(), Error> {
        engine.strengthen(1, "a", "b", &[("Like", Value::Int(1))])
    }

    fn like(engine: &Engine) -> Option<crate::Sum> {
        engine.get_counter(1, "a").ok()?.prop("Like")?.sum()
    }

    fn faults(engine: &Engine) -> &crate::persist::log::Faults {
        engine.log.get().expect("a durable engine").faults()
    }

    /// Postmortem: a failed append left its partial
    /// frame in the log, later acknowledged writes followed it, and recovery cut them
    /// all off as a torn tail. A failed append is now cut back off before it returns.
    #[test]
    fn a_short_write_is_cut_off_and_later_writes_survive() {
        let dir = dir("short");
        let engine = open(&dir, SyncPolicy::No);
        strengthen(&engine).expect("first");
        for cut in [0, 3, 9, 20] {
            *faults(&engine).short_write.lock().expect("faults") = Some(cut);
            assert!(strengthen(&engine).is_err(), "a failed append is refused");
            strengthen(&engine).expect("the log takes writes again");
        }
        assert_eq!(like(&engine), Some(crate::Sum::Int(5)));
        drop(engine);
        let engine = open(&dir, SyncPolicy::No);
        assert_eq!(
            like(&engine),
            Some(crate::Sum::Int(5)),
            "exactly the acknowledged writes"
        );
        assert!(engine.recovery_skipped().is_empty());
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Under `Always` a failed fsync refused the write but left its bytes to be
    /// replayed. They are now cut off, so the refused write never comes back.
    #[test]
    fn a_failed_fsync_refuses_the_write_and_it_never_replays() {
        let dir = dir("fsync");
        let engine = open(&dir, SyncPolicy::Always);
        strengthen(&engine).expect("first");
        faults(&engine).sync.store(true, Ordering::Release);
        assert!(strengthen(&engine).is_err());
        assert_eq!(
            like(&engine),
            Some(crate::Sum::Int(1)),
            "a refused write changes nothing"
        );
        strengthen(&engine).expect("third");
        drop(engine);
        let engine = open(&dir, SyncPolicy::Always);
        assert_eq!(like(&engine), Some(crate::Sum::Int(2)));
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// `n` ids that live in `n` different shards: `n / 2` writers from the second
    /// half to the first never wait on each other's locks.
    fn apart(engine: &Engine, n: usize) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        (0..)
            .map(|i| format!("r{i:06}")) // one length: every write's record is as long
            .filter(|id| seen.insert(engine.store.shard_of(crate::xxh64(id.as_bytes()))))
            .take(n)
            .collect()
    }

    /// Runs a strengthen from each id of the second half of `ids` to its peer in the
    /// first half, each on its own thread, while the first one's fsync is held until
    /// every record is written; then lets the fsync go. Returns each write's result.
    fn held_group(engine: &Engine, ids: &[String]) -> Vec<Result<(), Error>> {
        let log = engine.log.get().expect("a durable engine");
        let (release, hold) = std::sync::mpsc::channel();
        *faults(engine).hold_sync.lock().expect("faults") = Some(hold);
        let (before, syncs) = (log.len(), log.syncs());
        std::thread::scope(|s| {
            let n = ids.len() / 2;
            let write = move |i: usize| {
                let (a, b) = (ids[i].as_str(), ids[n + i].as_str());
                engine.strengthen(1, a, b, &[("Like", Value::Int(1))])
            };
            let first = s.spawn(move || write(0));
            // The first writer leads; its fsync is held until the rest have written.
            while log.syncs() == syncs {
                std::thread::yield_now();
            }
            let first_len = log.len();
            let rest: Vec<_> = (1..n).map(|i| s.spawn(move || write(i))).collect();
            let each = first_len - before;
            while log.len() < before + each * n as u64 {
                std::thread::yield_now();
            }
            drop(release);
            std::iter::once(first)
                .chain(rest)
                .map(|h| h.join().expect("writer"))
                .collect()
        })
    }

    /// Group commit: writers that wait on one fsync share the next one. Eight writes
    /// (one held in its fsync while the seven others write) take two fsyncs.
    #[test]
    fn concurrent_writes_share_an_fsync() {
        let dir = dir("group");
        let engine = open(&dir, SyncPolicy::Always);
        let ids = apart(&engine, 16);
        let log = engine.log.get().expect("a durable engine");
        let syncs = log.syncs();
        let results = held_group(&engine, &ids);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            log.syncs() - syncs,
            2,
            "one fsync for the first, one for the seven others"
        );
        drop(engine);
        let engine = open(&dir, SyncPolicy::Always);
        for id in &ids[..8] {
            let sum = engine
                .get_counter(1, id.as_str())
                .ok()
                .and_then(|c| c.prop("Like")?.sum());
            assert_eq!(sum, Some(crate::Sum::Int(1)), "{id}");
        }
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A failed fsync that several writers waited on refuses each of them, changes
    /// nothing, and none replays; the log takes writes again.
    #[test]
    fn a_failed_group_fsync_refuses_every_write_it_covered() {
        let dir = dir("group-fail");
        let engine = open(&dir, SyncPolicy::Always);
        strengthen(&engine).expect("before");
        let ids = apart(&engine, 12);
        faults(&engine).sync.store(true, Ordering::Release);
        let results = held_group(&engine, &ids);
        assert!(results.iter().all(Result::is_err), "{results:?}");
        for id in &ids {
            assert!(!engine.contains_profile(1, id.as_str()), "{id} was refused");
        }
        strengthen(&engine).expect("after");
        drop(engine);
        let engine = open(&dir, SyncPolicy::Always);
        assert_eq!(like(&engine), Some(crate::Sum::Int(2)));
        for id in &ids {
            assert!(
                !engine.contains_profile(1, id.as_str()),
                "{id} never replays"
            );
        }
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A step of the random fault workload: a write over a keyspace of four
    /// recipients and four initiators, a compaction or a restart, with the fault
    /// armed for it (if any).
    #[derive(Debug, Clone)]
    enum Step {
        Attach(u8, u8, i64),
        Strengthen(u8, u8, i64),
        Detach(u8, u8),
        Delete(u32, u8),
        Compact,
        Restart,
    }

    #[derive(Debug, Clone, Copy)]
    enum Fault {
        /// The frame's first `n` bytes reach the file, then the write fails with
        /// `errno` (0: a plain error).
        Write(usize, i32),
        /// The fsync that covers the write fails (under `Always`).
        Sync,
        /// The failed write's cut back fails too: the log stops until a restart.
        WriteAndCut(usize),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = (Step, Option<Fault>)> {
        use proptest::prelude::*;
        let step = prop_oneof![
            4 => (0u8..4, 0u8..4, -3i64..10).prop_map(|(a, b, v)| Step::Attach(a, b, v)),
            4 => (0u8..4, 0u8..4, -3i64..10).prop_map(|(a, b, v)| Step::Strengthen(a, b, v)),
            2 => (0u8..4, 0u8..4).prop_map(|(a, b)| Step::Detach(a, b)),
            1 => (1u32..=2, 0u8..4).prop_map(|(db, k)| Step::Delete(db, k)),
            1 => Just(Step::Compact),
            1 => Just(Step::Restart),
        ];
        let fault = prop_oneof![
            6 => Just(None),
            2 => (0usize..48, prop_oneof![Just(0), Just(ENOSPC), Just(EIO)])
                .prop_map(|(n, e)| Some(Fault::Write(n, e))),
            2 => Just(Some(Fault::Sync)),
            1 => (0usize..48).prop_map(|n| Some(Fault::WriteAndCut(n))),
        ];
        (step, fault)
    }

    /// Linux's errno values for a full disk and an I/O error.
    const ENOSPC: i32 = 28;
    const EIO: i32 = 5;

    /// The oracle: relations as a plain map, profiles as plain sets.
    #[derive(Debug, Default, Clone, PartialEq)]
    struct Model {
        like: std::collections::BTreeMap<(u8, u8), i64>,
        recipients: std::collections::BTreeSet<u8>,
        initiators: std::collections::BTreeSet<u8>,
    }

    impl Model {
        /// Applies `step` if it is valid; whether it was.
        fn apply(&mut self, step: &Step) -> bool {
            match *step {
                Step::Attach(a, b, v) | Step::Strengthen(a, b, v) => {
                    let old = self.like.get(&(a, b)).copied();
                    let new = match step {
                        Step::Attach(..) => v,
                        _ => old.unwrap_or(0) + v,
                    };
                    self.like.insert((a, b), new);
                    self.recipients.insert(a);
                    self.initiators.insert(b);
                    true
                }
                Step::Detach(a, b) => self.like.remove(&(a, b)).is_some(),
                Step::Delete(db, k) => {
                    let set = if db == 1 {
                        &mut self.recipients
                    } else {
                        &mut self.initiators
                    };
                    if !set.remove(&k) {
                        return false;
                    }
                    self.like
                        .retain(|&(a, b), _| if db == 1 { a != k } else { b != k });
                    true
                }
                Step::Compact | Step::Restart => true,
            }
        }
    }

    fn id(prefix: char, k: u8) -> String {
        format!("{prefix}{k}")
    }

    fn run(engine: &Engine, step: &Step) -> Result<(), Error> {
        let like = |v: i64| [("Like", Value::Int(v))];
        match *step {
            Step::Attach(a, b, v) => {
                engine.attach(1, id('a', a).as_str(), id('b', b).as_str(), &like(v))
            }
            Step::Strengthen(a, b, v) => {
                engine.strengthen(1, id('a', a).as_str(), id('b', b).as_str(), &like(v))
            }
            Step::Detach(a, b) => engine.detach(1, id('a', a).as_str(), id('b', b).as_str()),
            Step::Delete(db, k) => {
                engine.delete_profile(db, id(if db == 1 { 'a' } else { 'b' }, k).as_str())
            }
            Step::Compact => engine.compact().map(drop),
            Step::Restart => Ok(()),
        }
    }

    /// What the engine holds, in the oracle's terms (every counter read, so a
    /// counter out of step with the relations shows too).
    fn observed(engine: &Engine) -> Model {
        let mut m = Model::default();
        for k in 0..4u8 {
            if engine.contains_profile(1, id('a', k).as_str()) {
                m.recipients.insert(k);
            }
            if engine.contains_profile(2, id('b', k).as_str()) {
                m.initiators.insert(k);
            }
            let Ok(page) = engine.list(1, id('a', k).as_str(), 0, 100) else {
                continue;
            };
            let mut sum = 0;
            for row in &page.rows {
                let b: u8 = row.profile_b.as_str()[1..]
                    .parse()
                    .expect("an initiator id");
                let Some(Value::Int(v)) =
                    row.props.iter().find(|(n, _)| n == "Like").map(|(_, v)| *v)
                else {
                    panic!("a relation without its Like");
                };
                m.like.insert((k, b), v);
                sum += v;
            }
            let counter = engine
                .get_counter(1, id('a', k).as_str())
                .expect("a listed recipient");
            assert_eq!(counter.total(), page.rows.len() as u64, "a{k}'s total");
            let got = counter.prop("Like").and_then(|p| p.sum());
            let want = (!page.rows.is_empty()).then_some(crate::Sum::Int(i128::from(sum)));
            assert_eq!(got.filter(|_| !page.rows.is_empty()), want, "a{k}'s sum");
        }
        m
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Faults below the log (short writes, ENOSPC, EIO, failed fsyncs, a cut back
        /// that fails) at random points of a random workload under each sync policy:
        /// after every step, and after every restart, the engine holds exactly the
        /// writes it acknowledged (the oracle applies a step only when the engine
        /// said `Ok`, and agrees when it refused one with no fault armed).
        #[test]
        fn random_faults_keep_exactly_the_acknowledged_writes(
            policy in proptest::sample::select(vec![SyncPolicy::Always, SyncPolicy::EverySec, SyncPolicy::No]),
            steps in proptest::collection::vec(step(), 1..40),
        ) {
            let dir = dir("random");
            let mut engine = open(&dir, policy);
            let mut model = Model::default();
            for (i, (step, fault)) in steps.iter().enumerate() {
                if matches!(step, Step::Restart) {
                    drop(engine);
                    engine = open(&dir, policy);
                    proptest::prop_assert_eq!(&observed(&engine), &model, "after restart at step {}", i);
                    proptest::prop_assert!(engine.recovery_skipped().is_empty());
                    continue;
                }
                let f = faults(&engine);
                match fault {
                    Some(Fault::Write(n, errno)) => {
                        *f.short_write.lock().expect("faults") = Some(*n);
                        f.errno.store(*errno, Ordering::Release);
                    }
                    Some(Fault::Sync) => f.sync.store(true, Ordering::Release),
                    Some(Fault::WriteAndCut(n)) => {
                        *f.short_write.lock().expect("faults") = Some(*n);
                        f.truncate.store(true, Ordering::Release);
                    }
                    None => {}
                }
                let done = run(&engine, step);
                // A fault not reached (a refused step, a policy that never syncs) is
                // disarmed, so it never lands on a later step.
                *f.short_write.lock().expect("faults") = None;
                f.errno.store(0, Ordering::Release);
                f.sync.store(false, Ordering::Release);
                f.truncate.store(false, Ordering::Release);
                let mut next = model.clone();
                let valid = next.apply(step);
                match &done {
                    Ok(()) => {
                        proptest::prop_assert!(valid, "step {} acknowledged but invalid", i);
                        model = next;
                    }
                    Err(e) => proptest::prop_assert!(
                        fault.is_some() || !valid || engine_stopped(e),
                        "step {} refused with no fault: {}", i, e
                    ),
                }
                proptest::prop_assert_eq!(&observed(&engine), &model, "after step {} ({:?})", i, done);
            }
            drop(engine);
            let engine = open(&dir, policy);
            proptest::prop_assert_eq!(&observed(&engine), &model, "after the last restart");
            drop(engine);
            std::fs::remove_dir_all(&dir).ok();
        }
    }

    /// Whether `e` says the log stopped after an earlier failure (until a restart).
    fn engine_stopped(e: &Error) -> bool {
        e.to_string().contains("until the engine is reopened")
    }

    /// When a failed append cannot be cut back, the log stops taking writes (nothing
    /// after the torn frame could be recovered), compaction too; a reopen recovers
    /// exactly the acknowledged writes.
    #[test]
    fn a_failed_cut_stops_the_log_until_reopened() {
        let dir = dir("stop");
        let engine = open(&dir, SyncPolicy::Always);
        strengthen(&engine).expect("first");
        *faults(&engine).short_write.lock().expect("faults") = Some(5);
        faults(&engine).truncate.store(true, Ordering::Release);
        assert!(strengthen(&engine).is_err());
        let refused = strengthen(&engine).expect_err("the log is stopped");
        assert!(
            refused.to_string().contains("until the engine is reopened"),
            "{refused}"
        );
        assert!(engine.compact().is_err(), "no rotation past a torn frame");
        assert_eq!(like(&engine), Some(crate::Sum::Int(1)));
        drop(engine);
        let engine = open(&dir, SyncPolicy::Always);
        assert_eq!(like(&engine), Some(crate::Sum::Int(1)));
        strengthen(&engine).expect("a reopened engine takes writes");
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Found by `random_faults_keep_exactly_the_acknowledged_writes`: a write whose
    /// whole frame reached the file before the write failed, and whose cut back
    /// failed too, was refused, then replayed by the next open. The log's real end is
    /// now recorded beside it (`log.<seq>.end`) and recovery cuts the log there.
    #[test]
    fn a_refused_write_whose_cut_failed_never_replays() {
        let dir = dir("endmark");
        let engine = open(&dir, SyncPolicy::Always);
        strengthen(&engine).expect("first");
        *faults(&engine).short_write.lock().expect("faults") = Some(usize::MAX);
        faults(&engine).truncate.store(true, Ordering::Release);
        let refused = strengthen(&engine).expect_err("refused");
        assert!(
            refused.to_string().contains("recovery will cut it"),
            "{refused}"
        );
        let stopped = strengthen(&engine).expect_err("the log is stopped");
        assert!(
            stopped.to_string().contains("recovery will cut it"),
            "{stopped}"
        );
        drop(engine);
        assert!(log::end_path(&dir, 0).exists(), "the end is recorded");
        let engine = open(&dir, SyncPolicy::Always);
        assert_eq!(
            like(&engine),
            Some(crate::Sum::Int(1)),
            "the refused write is gone"
        );
        assert!(
            !log::end_path(&dir, 0).exists(),
            "and the record of the end too"
        );
        strengthen(&engine).expect("writes go on");
        drop(engine);
        let engine = open(&dir, SyncPolicy::Always);
        assert_eq!(like(&engine), Some(crate::Sum::Int(2)));
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A write whose record the log could not read back (then over 1 MiB) was
    /// acknowledged, and lost with every later write on restart. It is now refused
    /// before anything changes: here a bulk import whose one record would pass the
    /// 64 MiB a record may have.
    #[test]
    fn a_record_over_the_readers_limit_is_refused() {
        let dir = dir("big");
        let engine = open(&dir, SyncPolicy::No);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let row = (a.as_str(), b.as_str(), [("Like", Value::Int(1))]);
        // 143 bytes a row: two ids (2 + 64 bytes each), a weight count, one weight.
        let rows = crate::persist::log::MAX_RECORD / 143 + 1;
        let refused = engine
            .import_relations(1, std::iter::repeat_n(row, rows))
            .expect_err("over 64 MiB");
        assert!(
            refused.to_string().contains("bytes a record may have"),
            "{refused}"
        );
        assert!(!engine.contains_profile(1, a.as_str()));
        assert!(!engine.contains_profile(2, b.as_str()));
        strengthen(&engine).expect("later writes go on");
        drop(engine);
        let engine = open(&dir, SyncPolicy::No);
        assert_eq!(like(&engine), Some(crate::Sum::Int(1)));
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// `EverySec` ignored a failed background fsync. It now stops the log: every
    /// later write is refused (the kernel may have dropped pages of acknowledged
    /// ones), and a reopen recovers exactly the acknowledged writes.
    #[test]
    fn a_failed_background_fsync_refuses_later_writes() {
        let dir = dir("background");
        let engine = open(&dir, SyncPolicy::EverySec);
        strengthen(&engine).expect("before");
        engine
            .log
            .get()
            .expect("a durable engine")
            .fail_next_background_sync();
        let mut acknowledged = 1;
        // The background fsync runs once a second: write until it has failed (a
        // liveness bound, not a timing one).
        let refused = loop {
            assert!(
                acknowledged < 100_000,
                "the failed fsync never stopped the log"
            );
            match strengthen(&engine) {
                Ok(()) => acknowledged += 1,
                Err(e) => break e,
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(
            refused.to_string().contains("background fsync failed"),
            "{refused}"
        );
        assert!(strengthen(&engine).is_err(), "and every write after it");
        assert_eq!(like(&engine), Some(crate::Sum::Int(acknowledged)));
        drop(engine);
        let engine = open(&dir, SyncPolicy::EverySec);
        assert_eq!(like(&engine), Some(crate::Sum::Int(acknowledged)));
        strengthen(&engine).expect("a reopened engine takes writes");
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// `EverySec` had no bound on its loss window when fsync stalled: appends went on
    /// being acknowledged while nothing reached the disk. An append now waits for a
    /// background fsync in flight past the bound (2 s; here 0, with an fsync stalled).
    #[test]
    fn appends_wait_for_a_stalled_background_fsync() {
        let dir = dir("stall");
        let engine = open(&dir, SyncPolicy::EverySec);
        let log = engine.log.get().expect("a durable engine");
        log.stall_next_sync(
            std::time::Duration::from_millis(1500),
            std::time::Duration::ZERO,
        );
        let mut polls = 0;
        while !log.syncing() {
            polls += 1;
            assert!(polls < 2000, "the background fsync never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        strengthen(&engine).expect("the append");
        assert!(
            !log.syncing(),
            "the append waited for the stalled fsync to end"
        );
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }
}
