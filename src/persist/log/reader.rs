//! Reading a log back, one record at a time.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::record::{MAX_RECORD, checksum, decode};
use crate::command::Command;
use crate::error::{Error, StorageKind, fail, io_err};

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

    /// The next record, the end, or where the log's whole records end.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the file cannot be read, or holds a record that is
    /// not a torn write: one whose checksum matches but that does not decode, or a
    /// bad one followed by a whole record (corruption in place, not a crash
    /// mid-append, which only ever leaves a bad tail).
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
        if len > MAX_RECORD || !self.fill(len)? {
            // Cut short by the end of the file (or a length no record has): a torn
            // append.
            return Ok(Next::Torn(start));
        }
        if checksum(&self.buf) != sum {
            // Whole in length: torn, unless a whole record follows it.
            if self.whole_record_next()? {
                return Err(self.corrupt(start, "its checksum does not match"));
            }
            return Ok(Next::Torn(start));
        }
        match decode(&self.buf) {
            Ok(command) => {
                self.offset = start + 8 + len as u64;
                Ok(Next::Record(start, command))
            }
            // A torn write never checksums right.
            Err(c) => Err(self.corrupt(start, &c.0)),
        }
    }

    /// Whether the bytes after the record just read begin a whole record (one whose
    /// checksum matches).
    fn whole_record_next(&mut self) -> Result<bool, Error> {
        if !self.fill(8)? {
            return Ok(false);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        let sum = u32::from_le_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        Ok(len <= MAX_RECORD && self.fill(len)? && checksum(&self.buf) == sum)
    }

    fn corrupt(&self, at: u64, why: &str) -> Error {
        fail(
            StorageKind::Corrupt,
            Some(&self.path),
            format!(
                "the record at byte {at} is corrupted ({why}) and is not a torn write: \
                 an operator must restore the log, or cut it at byte {at}, losing that \
                 record and every one after it"
            ),
        )
    }
}
