//! Reading a log back, one record at a time.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::record::{MAX_RECORD, checksum, decode, frame_header};
use crate::command::Command;
use crate::error::{Error, StorageKind, fail, io_err};

/// Reads a log one record at a time, holding one record in memory (at most
/// `MAX_RECORD` bytes), whatever the log's size.
pub(crate) struct LogReader {
    path: PathBuf,
    file: std::io::BufReader<std::io::Take<File>>,
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
    /// Reads the log at `path`, its first `len` bytes only (the rest is not the
    /// log's: past an end mark).
    pub(crate) fn open(path: &Path, len: u64) -> Result<LogReader, Error> {
        use std::io::Read;
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        Ok(LogReader {
            path: path.to_path_buf(),
            file: std::io::BufReader::with_capacity(1 << 16, file.take(len)),
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

    /// The next record, the end, or where the log's whole records end: at a record
    /// cut short by the end of the file, with a length no record has, or whose
    /// checksum does not match (a crash's torn append, or corruption: see
    /// [`whole_record_after`]).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the file cannot be read, or holds a record whose
    /// checksum matches but that does not decode (no torn write checksums right: a
    /// record of another version, or a bug).
    pub(crate) fn next(&mut self) -> Result<Next, Error> {
        let start = self.offset;
        if !self.fill(8)? {
            return Ok(if self.buf.is_empty() {
                Next::End
            } else {
                Next::Torn(start)
            });
        }
        let (len, sum) = frame_header(&self.buf);
        if len > MAX_RECORD || !self.fill(len)? || checksum(&self.buf) != sum {
            return Ok(Next::Torn(start));
        }
        match decode(&self.buf) {
            Ok(command) => {
                self.offset = start + 8 + len as u64;
                Ok(Next::Record(start, command))
            }
            Err(c) => Err(fail(
                StorageKind::Corrupt,
                Some(&self.path),
                format!(
                    "the record at byte {start} checksums right but does not decode ({}): \
                     written by another version, or a bug; an operator must restore the log",
                    c.0
                ),
            )),
        }
    }
}

/// Most bytes after a bad record searched for a whole record (see
/// [`whole_record_after`]); a longer tail is taken to hold one unless it is all
/// zeros.
const SCAN_TAIL: u64 = 1 << 20;

/// Most bytes checksummed while searching (a tail crafted so that every offset reads
/// as a plausible length stops there, and is taken to hold a record).
const SCAN_WORK: usize = 64 << 20;

/// Whether the bytes of the log at `path` after the bad record at `from` (up to
/// `end`) hold a whole record at any offset: one whose length fits and whose
/// checksum matches. A crash can leave such a tail (the pages of an append that was
/// never acknowledged reach the disk in any order) and so can corruption in place (a
/// bit flipped in a record, or in its length, which hides every record after it);
/// either way the records there are listed, not dropped in silence.
pub(crate) fn whole_record_after(path: &Path, from: u64, end: u64) -> Result<bool, Error> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path).map_err(|e| io_err(path, e))?;
    file.seek(SeekFrom::Start(from))
        .map_err(|e| io_err(path, e))?;
    if end.saturating_sub(from) > SCAN_TAIL {
        // Too long to search: taken to hold a record, unless it is all zeros (a
        // file a crash left extended).
        let mut rest = std::io::BufReader::new(file.take(end - from));
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = rest.read(&mut chunk).map_err(|e| io_err(path, e))?;
            if n == 0 {
                return Ok(false);
            }
            if chunk[..n].iter().any(|&b| b != 0) {
                return Ok(true);
            }
        }
    }
    let mut tail = Vec::new();
    file.take(end.saturating_sub(from))
        .read_to_end(&mut tail)
        .map_err(|e| io_err(path, e))?;
    let mut work = 0usize;
    for at in 1..tail.len().saturating_sub(7) {
        let (len, sum) = frame_header(&tail[at..at + 8]);
        let Some(payload) = tail.get(at + 8..at + 8 + len) else {
            continue;
        };
        work += len;
        if work > SCAN_WORK {
            return Ok(true);
        }
        if checksum(payload) == sum {
            return Ok(true);
        }
    }
    Ok(false)
}
