//! Durability: snapshots and a write log, so a restart loses nothing (Redis's RDB and
//! AOF, for this engine).
//!
//! - **Snapshot** (`snapshot.bin`): every relation type, profile (with its data) and
//!   relation, in a versioned binary format of framed records ending in an XXH64
//!   checksum, written and read a frame at a time; written to a temporary file,
//!   fsynced, renamed over the old one, and the directory fsynced, so a crash leaves
//!   the old snapshot or the new one, never half of one. Counters are not stored:
//!   loading rebuilds them by importing the relations in bulk batches.
//! - **Write log** (`log.<seq>`): every accepted write, appended while the write holds
//!   its locks (so the log's order is the order writes to the same profile were applied),
//!   before it changes anything (a write the log cannot take is refused). Each record
//!   is length-prefixed and checksummed; a torn last record is detected and dropped.
//! - **Recovery**: the snapshot, then every log from the sequence number the snapshot
//!   records. **Compaction** ([`Engine::compact`]) rotates the log at the snapshot's
//!   point in time and deletes the logs the new snapshot covers.
//!
//! [`Engine::compact`]: crate::Engine::compact

pub(crate) mod codec;
pub(crate) mod dir;
pub(crate) mod log;
pub(crate) mod snapshot;

use std::path::{Path, PathBuf};

use crate::error::{Error, io_err};

/// When the write log is flushed to stable storage (Redis's `appendfsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` after every write: an acknowledged write survives a power loss.
    /// Slowest.
    Always,
    /// The OS gets every write at once (a process crash loses nothing); a background
    /// thread syncs once a second (a power loss may lose the last second). When that
    /// fsync stalls for 2 s, appends wait for it, so a power loss never costs more
    /// than about 3 s of acknowledged writes; when it fails, the engine refuses every
    /// later write until it is reopened.
    EverySec,
    /// The OS gets every write at once; syncing is left to it.
    No,
}

/// `always`, `everysec` or `no`, as `RELCOUNT_FSYNC` and Redis spell them.
///
/// # Examples
///
/// ```
/// use relcount::SyncPolicy;
///
/// assert_eq!("everysec".parse::<SyncPolicy>()?, SyncPolicy::EverySec);
/// assert!("sometimes".parse::<SyncPolicy>().is_err());
/// assert_eq!(SyncPolicy::Always.to_string(), "always");
/// # Ok::<(), relcount::Error>(())
/// ```
impl std::str::FromStr for SyncPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "everysec" => Ok(SyncPolicy::EverySec),
            "no" => Ok(SyncPolicy::No),
            _ => Err(Error::InvalidArgument {
                name: "sync policy",
                reason: format!("the sync policy must be always, everysec or no, got {s:?}"),
            }),
        }
    }
}

/// As [`FromStr`](std::str::FromStr) reads it.
impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncPolicy::Always => "always",
            SyncPolicy::EverySec => "everysec",
            SyncPolicy::No => "no",
        })
    }
}

/// A record that recovery could not apply, and skipped: one that an earlier version
/// acknowledged and this version refuses. Recovery never refuses to start over such
/// a record; it reports it here (see [`Engine::recovery_skipped`]) with where it is.
///
/// [`Engine::recovery_skipped`]: crate::Engine::recovery_skipped
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The log or snapshot file it is in (empty for a snapshot loaded from bytes).
    pub file: PathBuf,
    /// Its byte offset in that file.
    pub offset: u64,
    /// Its position among the file's records, from 0.
    pub record: u64,
    /// What it was, and why this version refuses it.
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: record {} at byte {} skipped: {}",
            self.file.display(),
            self.record,
            self.offset,
            self.reason
        )
    }
}

pub(crate) fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.bin")
}

/// How much of a deleted file [`remove_gently`] frees at a time.
const FREE_STEP: u64 = 8 << 20;

/// Deletes the file at `path` a slice at a time: it is unlinked, then truncated by
/// [`FREE_STEP`] while still open, and closed. Freeing the blocks of a file of
/// hundreds of megabytes in one go (an unlink, or a rename over it) is one large
/// journal transaction on ext4, and every other write to the disk, the write log's
/// appends included, waited for it (19 ms measured beside a 700 MB snapshot). The
/// caller has made what replaces the file durable first.
pub(crate) fn remove_gently(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    std::fs::remove_file(path)?;
    free_gently(file);
    Ok(())
}

/// Frees the blocks of `file`, which no name refers to any more, a slice at a time
/// (see [`remove_gently`]). Failures are ignored: closing it frees the rest.
pub(crate) fn free_gently(file: std::fs::File) {
    let mut len = file.metadata().map_or(0, |m| m.len());
    while len > FREE_STEP {
        len -= FREE_STEP;
        if file.set_len(len).is_err() {
            break;
        }
    }
}

/// Makes a rename or creation in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}
