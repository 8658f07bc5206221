//! The log's files in a data directory: their names, the end marks a failed cut
//! leaves, and cutting a torn tail.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, StorageKind, fail, io_err};

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
pub(super) fn mark_end(dir: &Path, seq: u64, len: u64) -> std::io::Result<()> {
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

/// The end a failed append recorded for log `seq` (see [`end_path`]), if one did.
fn end_mark(dir: &Path, seq: u64) -> Result<Option<u64>, Error> {
    let path = end_path(dir, seq);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, e)),
    };
    <[u8; 8]>::try_from(bytes.as_slice())
        .map(|b| Some(u64::from_le_bytes(b)))
        .map_err(|_| {
            fail(
                StorageKind::Corrupt,
                Some(&path),
                "not an end mark (8 bytes)",
            )
        })
}

/// Log `seq`'s file length, and its end mark if it has one (see [`end_path`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extent {
    pub(crate) file: u64,
    pub(crate) mark: Option<u64>,
}

impl Extent {
    /// The length of the log's acknowledged bytes: its file's, or less when its end
    /// mark says so.
    pub(crate) fn acknowledged(self) -> u64 {
        self.mark.map_or(self.file, |mark| mark.min(self.file))
    }
}

/// Log `seq`'s [`Extent`].
pub(crate) fn extent(dir: &Path, seq: u64) -> Result<Extent, Error> {
    let log = log_path(dir, seq);
    let file = std::fs::metadata(&log).map_err(|e| io_err(&log, e))?.len();
    Ok(Extent {
        file,
        mark: end_mark(dir, seq)?,
    })
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
            // Only the names the log writes (20 digits): a host's `log.+0` is not
            // a log.
            .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

pub(super) fn open_append(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, e))
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
