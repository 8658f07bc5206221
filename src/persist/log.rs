//! The write log: one file per sequence number, records appended as
//! `[len u32][xxh64(payload) as u32][payload]`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::codec::{Corrupt, Dec, Decoded, Enc};
use super::{SyncPolicy, sync_dir};
use crate::command::{BulkRow, Command};
use crate::error::{Error, StorageError, StorageKind, fail, io_err};
use crate::write::{Op, Write as Change};

/// Largest record: a write is far smaller, a bulk import's batch may come near it.
/// A longer record is refused before it is acknowledged, and a bigger length field
/// read back is corruption, not a reason to allocate.
pub(crate) const MAX_RECORD: usize = 64 << 20;

/// The log's encoding of a command.
pub(crate) fn encode(command: &Command) -> Vec<u8> {
    let mut e = Enc::default();
    match command {
        Command::Define(def) => {
            e.u8(Tag::Define as u8);
            e.relation_type(def);
        }
        Command::Write(w) => {
            e.u8(op_code(w.op));
            e.u32(w.rel_id);
            e.str(&w.profile_a);
            e.str(&w.profile_b);
            if w.op != Op::Detach {
                e.weights(&w.values);
            }
        }
        Command::Batch(writes) => {
            e.u8(Tag::Batch as u8);
            // Property names once each, in a table the rows index.
            let mut names: Vec<&str> = Vec::new();
            let mut index: hashbrown::HashMap<&str, usize> = hashbrown::HashMap::new();
            for w in writes {
                for (name, _) in &w.values {
                    index.entry(name.as_str()).or_insert_with(|| {
                        names.push(name);
                        names.len() - 1
                    });
                }
            }
            e.count(names.len());
            for name in &names {
                e.str(name);
            }
            e.count(writes.len());
            for w in writes {
                e.u8(op_code(w.op));
                e.u32(w.rel_id);
                e.str(&w.profile_a);
                e.str(&w.profile_b);
                e.u8(u8::try_from(w.values.len()).unwrap_or(u8::MAX));
                for (name, v) in &w.values {
                    e.count(index[name.as_str()]);
                    e.value(*v);
                }
            }
        }
        Command::Profiles(items) => {
            e.u8(Tag::Profiles as u8);
            e.count(items.len());
            for (db, id, data) in items {
                e.u32(*db);
                e.str(id);
                e.profile_data(data);
            }
        }
        Command::Bulk {
            rel_id,
            names,
            rows,
        } => {
            e.u8(Tag::Bulk as u8);
            e.u32(*rel_id);
            e.count(names.len());
            for name in names {
                e.str(name);
            }
            e.count(rows.len());
            for row in rows {
                e.str(&row.a);
                e.str(&row.b);
                e.u8(u8::try_from(row.weights.len()).unwrap_or(u8::MAX));
                for &(i, v) in &row.weights {
                    e.u8(i);
                    e.value(v);
                }
            }
        }
        Command::Delete { db, id } => {
            e.u8(Tag::Delete as u8);
            e.u32(*db);
            e.str(id);
        }
        Command::Import { db, id, data } => {
            e.u8(Tag::Import as u8);
            e.u32(*db);
            e.str(id);
            e.profile_data(data);
        }
    }
    e.buf
}

/// What a record is: its payload's first byte (see `docs/format.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    Define = 1,
    Attach = 2,
    Strengthen = 3,
    Edit = 4,
    Detach = 5,
    Delete = 6,
    Import = 7,
    Bulk = 8,
    Profiles = 9,
    Batch = 10,
}

impl Tag {
    const ALL: [Tag; 10] = [
        Tag::Define,
        Tag::Attach,
        Tag::Strengthen,
        Tag::Edit,
        Tag::Detach,
        Tag::Delete,
        Tag::Import,
        Tag::Bulk,
        Tag::Profiles,
        Tag::Batch,
    ];

    fn of(byte: u8) -> Option<Tag> {
        Tag::ALL.into_iter().find(|t| *t as u8 == byte)
    }
}

/// The log's code of a single write: its record tag.
fn op_code(op: Op) -> u8 {
    (match op {
        Op::Attach => Tag::Attach,
        Op::Strengthen => Tag::Strengthen,
        Op::Edit => Tag::Edit,
        Op::Detach => Tag::Detach,
    }) as u8
}

/// The write of a record tag (see [`op_code`]).
fn op_of(code: u8) -> Option<Op> {
    Some(match Tag::of(code)? {
        Tag::Attach => Op::Attach,
        Tag::Strengthen => Op::Strengthen,
        Tag::Edit => Op::Edit,
        Tag::Detach => Op::Detach,
        _ => return None,
    })
}

/// A command from its log encoding.
pub(crate) fn decode(bytes: &[u8]) -> Decoded<Command> {
    let mut d = Dec::new(bytes);
    let byte = d.u8()?;
    let tag = Tag::of(byte).ok_or_else(|| Corrupt(format!("unknown record type {byte}")))?;
    let r = match tag {
        Tag::Define => Command::Define(d.relation_type()?),
        Tag::Attach | Tag::Strengthen | Tag::Edit => Command::Write(Change {
            op: op_of(byte).expect("a write's tag"),
            rel_id: d.u32()?,
            profile_a: d.str()?,
            profile_b: d.str()?,
            values: d.weights()?,
        }),
        Tag::Detach => Command::Write(Change {
            op: Op::Detach,
            rel_id: d.u32()?,
            profile_a: d.str()?,
            profile_b: d.str()?,
            values: Vec::new(),
        }),
        Tag::Delete => Command::Delete {
            db: d.u32()?,
            id: d.str()?,
        },
        Tag::Import => Command::Import {
            db: d.u32()?,
            id: d.str()?,
            data: d.profile_data()?,
        },
        Tag::Bulk => {
            let rel_id = d.u32()?;
            // A name is at least its 2-byte length; a row at least two ids' 2-byte
            // lengths and a weight count. (A tighter bound refused records the log had
            // acknowledged: 1-letter names, rows of short ids without weights.)
            let names = (0..d.count(2)?).map(|_| d.str()).collect::<Decoded<_>>()?;
            let rows = (0..d.count(5)?)
                .map(|_| {
                    let (a, b) = (d.str()?, d.str()?);
                    let weights = (0..d.u8()?)
                        .map(|_| Ok((d.u8()?, d.value()?)))
                        .collect::<Decoded<_>>()?;
                    Ok(BulkRow { a, b, weights })
                })
                .collect::<Decoded<_>>()?;
            Command::Bulk {
                rel_id,
                names,
                rows,
            }
        }
        Tag::Profiles => {
            // A profile is at least a database (4 bytes), an id's length (2), two
            // absent options (2) and two counts (8).
            let items = (0..d.count(16)?)
                .map(|_| Ok((d.u32()?, d.str()?, d.profile_data()?)))
                .collect::<Decoded<_>>()?;
            Command::Profiles(items)
        }
        Tag::Batch => {
            let names: Vec<String> = (0..d.count(2)?).map(|_| d.str()).collect::<Decoded<_>>()?;
            // A write is at least its tag, type, two ids' lengths and a value count.
            let writes = (0..d.count(10)?)
                .map(|_| {
                    let op = d.u8()?;
                    let op = op_of(op).ok_or_else(|| Corrupt(format!("unknown write {op}")))?;
                    let (rel_id, profile_a, profile_b) = (d.u32()?, d.str()?, d.str()?);
                    let values = (0..d.u8()?)
                        .map(|_| {
                            let i = d.u32()?;
                            let name = names.get(i as usize).ok_or_else(|| {
                                Corrupt(format!("property {i} of {}", names.len()))
                            })?;
                            Ok((name.clone(), d.value()?))
                        })
                        .collect::<Decoded<_>>()?;
                    Ok(Change {
                        op,
                        rel_id,
                        profile_a,
                        profile_b,
                        values,
                    })
                })
                .collect::<Decoded<_>>()?;
            Command::Batch(writes)
        }
    };
    if d.remaining() != 0 {
        return Err(Corrupt("trailing bytes in a record".into()));
    }
    Ok(r)
}

fn checksum(payload: &[u8]) -> u32 {
    crate::xxh64(payload) as u32
}

/// The file name of log `seq`.
pub(crate) fn log_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("log.{seq:020}"))
}

/// Where a log whose failed append could not be cut back records its real end (the
/// length of its acknowledged records): recovery cuts the log there before reading it,
/// then removes this file.
pub(crate) fn end_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("log.{seq:020}.end"))
}

/// Records, durably, that log `seq` ends at `len` (see [`end_path`]).
fn mark_end(dir: &Path, seq: u64, len: u64) -> std::io::Result<()> {
    let (path, tmp) = (
        end_path(dir, seq),
        dir.join(format!("log.{seq:020}.end.tmp")),
    );
    let mut f = File::create(&tmp)?;
    f.write_all(&len.to_le_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

/// Cuts log `seq` back to the end a failed append recorded for it, if one did (see
/// [`end_path`]), then forgets the record.
pub(crate) fn apply_end_mark(dir: &Path, seq: u64) -> Result<(), Error> {
    let path = end_path(dir, seq);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(&path, e)),
    };
    let len = <[u8; 8]>::try_from(bytes.as_slice())
        .map(u64::from_le_bytes)
        .map_err(|_| {
            fail(
                StorageKind::Corrupt,
                Some(&path),
                "not an end mark (8 bytes)",
            )
        })?;
    let log = log_path(dir, seq);
    let actual = std::fs::metadata(&log).map_err(|e| io_err(&log, e))?.len();
    if actual > len {
        truncate(&log, len)?;
    }
    std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
    sync_dir(dir)
}

/// The sequence numbers of the logs in `dir`, ascending.
pub(crate) fn log_seqs(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        if let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix("log."))
            .and_then(|n| n.parse::<u64>().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Reads a log one record at a time, holding one record in memory (at most
/// `MAX_RECORD` bytes), whatever the log's size.
pub(crate) struct LogReader {
    path: PathBuf,
    file: std::io::BufReader<File>,
    /// Where the next record starts: after the last whole one.
    offset: u64,
    buf: Vec<u8>,
}

/// One step of a [`LogReader`].
pub(crate) enum Next {
    /// A whole record and its byte offset.
    Record(u64, Command),
    /// The end of the log: every record was whole.
    End,
    /// A torn or corrupted record at this offset: the log's whole records end there.
    Torn(u64),
}

impl LogReader {
    pub(crate) fn open(path: &Path) -> Result<LogReader, Error> {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        Ok(LogReader {
            path: path.to_path_buf(),
            file: std::io::BufReader::with_capacity(1 << 16, file),
            offset: 0,
            buf: Vec::new(),
        })
    }

    /// Fills `buf` with exactly `n` bytes; `Ok(false)` at the end of the file (a
    /// short tail included).
    fn fill(&mut self, n: usize) -> Result<bool, Error> {
        use std::io::Read;
        self.buf.clear();
        let got = (&mut self.file)
            .take(n as u64)
            .read_to_end(&mut self.buf)
            .map_err(|e| io_err(&self.path, e))?;
        Ok(got == n)
    }

    pub(crate) fn next(&mut self) -> Result<Next, Error> {
        let start = self.offset;
        if !self.fill(8)? {
            return Ok(if self.buf.is_empty() {
                Next::End
            } else {
                Next::Torn(start)
            });
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        let sum = u32::from_le_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        if len > MAX_RECORD || !self.fill(len)? || checksum(&self.buf) != sum {
            return Ok(Next::Torn(start));
        }
        match decode(&self.buf) {
            Ok(command) => {
                self.offset = start + 8 + len as u64;
                Ok(Next::Record(start, command))
            }
            Err(_) => Ok(Next::Torn(start)),
        }
    }
}

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
    /// The directory's `LOCK` file, locked for as long as the log lives.
    _lock: File,
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

/// The frame of one command: `[len u32][checksum u32][payload]`, refused when its
/// payload passes [`MAX_RECORD`] (the reader would take it for corruption).
fn frame_of(command: &Command) -> Result<Vec<u8>, Error> {
    let payload = encode(command);
    if payload.len() > MAX_RECORD {
        return Err(fail(
            StorageKind::Refused,
            None,
            format!(
                "write log: this write's log record would be {} bytes, over the {MAX_RECORD} bytes a record may have",
                payload.len()
            ),
        ));
    }
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&checksum(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

fn open_append(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, e))
}

impl Log {
    /// Appends to log `seq` in `dir` (created if missing); keeps `lock` (the
    /// directory's lock file, already locked) until dropped.
    pub(crate) fn open(dir: &Path, seq: u64, policy: SyncPolicy, lock: File) -> Result<Log, Error> {
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
            _lock: lock,
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

/// Cuts a torn tail off the log at `path`.
pub(crate) fn truncate(path: &Path, len: u64) -> Result<(), Error> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::data::ProfileData;
    use crate::schema::RelationType;
    use crate::value::Value;

    #[test]
    fn records_round_trip() {
        let records = [
            Command::Define(RelationType::new(1, 1, 2)),
            Command::Write(Change::strengthen(1, "a", "b", [("W", Value::Int(-3))])),
            Command::Write(Change::detach(1, "a", "b")),
            Command::Batch(vec![
                Change::attach(
                    1,
                    "a",
                    "b",
                    [("W", Value::Int(2)), ("F", Value::Float(0.5))],
                ),
                Change::edit(1, "a", "c", [("F", Value::Float(-1.0))]),
                Change::detach(2, "x", "b"),
                Change::strengthen(1, "", "b", [("W", Value::Int(7))]),
            ]),
            Command::Batch(Vec::new()),
            Command::Bulk {
                rel_id: 1,
                names: vec!["W".into(), "F".into()],
                rows: vec![
                    crate::command::BulkRow {
                        a: "a".into(),
                        b: "b".into(),
                        weights: vec![(0, Value::Int(-3)), (1, Value::Float(0.5))],
                    },
                    crate::command::BulkRow {
                        a: "a".into(),
                        b: "c".into(),
                        weights: vec![],
                    },
                ],
            },
            // The smallest encodings of each count's items: 1-letter names, rows of
            // 1-letter ids without weights, an empty profile.
            Command::Bulk {
                rel_id: 1,
                names: (b'A'..=b'Z').map(|c| char::from(c).to_string()).collect(),
                rows: vec![crate::command::BulkRow {
                    a: "a".into(),
                    b: "b".into(),
                    weights: vec![(0, Value::Int(1))],
                }],
            },
            Command::Bulk {
                rel_id: 1,
                names: vec![],
                rows: (0..50)
                    .map(|i| crate::command::BulkRow {
                        a: "a".into(),
                        b: char::from(b'a' + i % 26).to_string(),
                        weights: vec![],
                    })
                    .collect(),
            },
            Command::Profiles(vec![(1, "p".into(), ProfileData::default()); 20]),
            Command::Profiles(vec![
                (1, "p".into(), ProfileData::default()),
                (
                    2,
                    "q".into(),
                    ProfileData {
                        email: Some("q@x.io".into()),
                        ..ProfileData::default()
                    },
                ),
            ]),
            Command::Delete {
                db: 2,
                id: "b".into(),
            },
            Command::Import {
                db: 1,
                id: "a".into(),
                data: ProfileData::default(),
            },
        ];
        for r in records {
            assert_eq!(decode(&encode(&r)), Ok(r));
        }
    }
}
