//! The engine's side of durability: opening a data directory (snapshot, then log
//! replay), logging each accepted write, freezing a consistent point in time, and
//! compaction.

use std::path::Path;

use super::{Engine, EngineBuilder};
use crate::command::Command;
use crate::error::{Error, StorageKind, fail};
use crate::persist::dir::{DataDir, Logged, Step};
use crate::persist::log::{self, LogStats};
use crate::persist::snapshot::{self, Frozen, SnapshotReader, SnapshotStats};
use crate::persist::{Skipped, SyncPolicy};
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
        let dir = DataDir::open(dir.as_ref())?;
        let engine = self.build();
        let mut loading = super::load::Loading::default();
        let mut recovery = dir.recover()?;
        let snapshot = dir.snapshot_path();
        while let Some(step) = recovery.next()? {
            match step {
                Step::Snapshot(item) => {
                    if let Some(rel_id) = engine.load_item(item, &mut loading, &snapshot) {
                        recovery.refuse_define(rel_id);
                    }
                }
                Step::Log(file, run) => {
                    engine.finish_load(&mut loading);
                    engine.replay(run, &file);
                }
            }
        }
        engine.finish_load(&mut loading);
        let (seq, kept) = recovery.finish()?;
        for tail in kept {
            engine.note_skipped(tail);
        }
        let _ = engine.log.set(dir.open_log(seq, sync)?);
        let _ = engine.data_dir.set(dir);
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
        engine.restore(&mut SnapshotReader::open(path)?, path)?;
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
        engine.restore(&mut SnapshotReader::from_bytes(bytes)?, Path::new(""))?;
        Ok(engine)
    }
}

/// Most skipped records listed (see `Engine::note_skipped`).
const MAX_SKIPPED: usize = 10_000;

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
    pub(super) fn note_skipped(&self, skipped: Skipped) {
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
    /// [`Error::Storage`] when the file cannot be written, or is one the engine's data
    /// directory keeps (its snapshot, which only [`compact`](Self::compact) writes,
    /// with the log position it covers; its logs; its lock).
    pub fn save_snapshot(&self, path: impl AsRef<Path>) -> Result<SnapshotStats, Error> {
        let path = path.as_ref();
        if let Some(dir) = self.data_dir.get() {
            // A snapshot there without its log position would be replayed over again;
            // one over the lock or a log would let a second engine in or lose writes.
            if dir.keeps(path) {
                return Err(fail(
                    StorageKind::Refused,
                    Some(path),
                    "this is a file the engine's data directory keeps (its snapshot, logs \
                     or lock): save under another name, or use compact() for the \
                     directory's snapshot",
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
        let dir = self.data_dir.get().ok_or_else(|| {
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
        let stats = snapshot::write(&frozen, &dir.snapshot_path())?;
        dir.retire(frozen.next_seq)?;
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
        self.data_dir.get().map_or(Ok(0), DataDir::log_bytes)
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
