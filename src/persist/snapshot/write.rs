//! A snapshot encoded (version 3; version 2 for tests) and written crash-safely.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{FRAME, Frozen, MAGIC, SnapshotStats, TARGET_CHUNK, Tag, VERSION};
use crate::error::{Error, io_err};
use crate::persist::codec::Enc;
use crate::persist::sync_dir;
use crate::profile::Profile;
#[cfg(test)]
use crate::value::Value;

/// Where encoded records go: frames of about [`FRAME`] bytes, each written out (and
/// hashed) when full, so the encoding never holds more than one frame.
struct Framed<W: Write> {
    out: W,
    hash: xxhash_rust::xxh64::Xxh64,
    frame: Enc,
    written: u64,
}

impl<W: Write> Framed<W> {
    fn new(out: W) -> Self {
        Framed {
            out,
            hash: xxhash_rust::xxh64::Xxh64::new(0),
            frame: Enc::default(),
            written: 0,
        }
    }

    /// Bytes outside any frame (the header, the footer).
    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Closes the current frame if it is full enough (`at_least` bytes); called only
    /// between records, so every frame holds whole records.
    fn close(&mut self, at_least: usize) -> std::io::Result<()> {
        if self.frame.buf.len() < at_least.max(1) {
            return Ok(());
        }
        let payload = std::mem::take(&mut self.frame.buf);
        self.raw(&(payload.len() as u32).to_le_bytes())?;
        self.raw(&payload)
    }

    /// Closes the last frame and writes the checksum of everything before it.
    fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.close(1)?;
        let sum = self.hash.digest();
        self.out.write_all(&sum.to_le_bytes())?;
        Ok((self.out, self.written + 8))
    }
}

/// A snapshot of `f` begun in `version`: its header, then its relation types (the
/// same in every version).
fn begin<W: Write>(
    f: &Frozen,
    version: u32,
    out: W,
) -> std::io::Result<(Framed<W>, SnapshotStats)> {
    let mut w = Framed::new(out);
    let mut stats = SnapshotStats::default();
    let mut header = Enc::default();
    header.buf.extend_from_slice(MAGIC);
    header.u32(version);
    header.u64(f.next_seq);
    w.raw(&header.buf)?;
    for def in &f.schemas {
        w.frame.u8(Tag::Define as u8);
        w.frame.relation_type(def);
        stats.relation_types += 1;
        w.close(FRAME)?;
    }
    Ok((w, stats))
}

/// A profile record (the same in versions 2 and 3): database, id, and its data if it
/// has any.
fn put_profile(e: &mut Enc, profile: &Profile, data: Option<&crate::profile::data::Normalized>) {
    e.u8(Tag::Profile as u8);
    e.u32(profile.db);
    e.str(&profile.id.as_str());
    match data {
        Some(d) => {
            e.u8(1);
            e.profile_data(&d.to_data());
        }
        None => e.u8(0),
    }
}

/// The version-2 encoding (relations by initiator id, values by property), kept to
/// test that such files still load.
#[cfg(test)]
pub(crate) fn encode_v2<W: Write>(f: &Frozen, out: W) -> std::io::Result<(W, SnapshotStats)> {
    let (mut w, mut stats) = begin(f, 2, out)?;
    for (profile, data) in &f.profiles {
        put_profile(&mut w.frame, profile, data.as_deref());
        stats.profiles += 1;
        w.close(FRAME)?;
    }
    // The relations name initiators by slot; at the point, each slot they name was
    // held by a live profile (in `by_slot`) or by one being deleted (not in it: its
    // relations are left out).
    let by_slot: hashbrown::HashMap<u32, &Profile> =
        f.profiles.iter().map(|(p, _)| (p.slot, p)).collect();
    let gone = |p: &Profile| f.deleting.contains(&p.slot);
    for target in &f.targets {
        let block = &target.block;
        let schema = &block.schema;
        if gone(&block.profile) {
            continue;
        }
        let rels: Vec<_> = target
            .rels
            .iter()
            .filter_map(|(slot, rec)| Some((by_slot.get(&slot)?, rec)))
            .collect();
        for chunk in rels.chunks(TARGET_CHUNK) {
            let e = &mut w.frame;
            e.u8(3);
            e.u32(schema.rel_id());
            e.str(&block.profile.id.as_str());
            e.u32(chunk.len() as u32);
            for (b, rec) in chunk {
                e.str(&b.id.as_str());
                let values: Vec<(u8, Value)> = (0..schema.props.len())
                    .filter_map(|i| Some((i as u8, rec.get(schema, i)?)))
                    .collect();
                e.u8(values.len() as u8);
                for (i, v) in values {
                    e.u8(i);
                    e.value(v);
                }
                stats.relations += 1;
            }
            w.close(FRAME)?;
        }
    }
    w.frame.u8(0);
    let (out, bytes) = w.finish()?;
    stats.bytes = bytes;
    Ok((out, stats))
}

/// Encodes `f` in the current version: relation types, the profile table (every
/// profile once; its place in the table is its index), then each target's relations
/// in columns, initiators by index (see `docs/format.md`).
fn encode<W: Write>(f: &Frozen, out: W) -> std::io::Result<(W, SnapshotStats)> {
    let (mut w, mut stats) = begin(f, VERSION, out)?;
    // Slot -> index in the profile table (`u32::MAX`: no live profile at the point).
    let top = f
        .profiles
        .iter()
        .map(|(p, _)| p.slot as usize + 1)
        .max()
        .unwrap_or(0);
    let mut index = vec![u32::MAX; top];
    for (i, (profile, data)) in f.profiles.iter().enumerate() {
        index[profile.slot as usize] = i as u32;
        put_profile(&mut w.frame, profile, data.as_deref());
        stats.profiles += 1;
        w.close(FRAME)?;
    }
    let index_of = |slot: u32| index.get(slot as usize).copied().unwrap_or(u32::MAX);
    let gone = |p: &Profile| f.deleting.contains(&p.slot);
    for target in &f.targets {
        let block = &target.block;
        let schema = &block.schema;
        if gone(&block.profile) {
            continue;
        }
        let a = index_of(block.profile.slot);
        let (slots, flags, nums) = target.rels.columns();
        let (fb, nw) = ((2 * schema.props.len()).div_ceil(8), schema.stride() - 1);
        // The relations of initiators live at the point (those of a profile being
        // deleted are left out).
        let kept: Vec<usize> = (0..slots.len())
            .filter(|&i| index_of(slots[i]) != u32::MAX)
            .collect();
        for chunk in kept.chunks(TARGET_CHUNK) {
            let e = &mut w.frame;
            e.u8(Tag::Target as u8);
            e.u32(schema.rel_id());
            e.u32(a);
            // Room for the counter's metadata (none yet): its length, then its bytes.
            e.u16(0);
            e.u8(fb as u8);
            e.u8(nw as u8);
            e.count(chunk.len());
            for &i in chunk {
                e.u32(index_of(slots[i]));
            }
            for &i in chunk {
                e.buf.extend_from_slice(&flags[i * fb..(i + 1) * fb]);
            }
            for &i in chunk {
                for &word in &nums[i * nw..(i + 1) * nw] {
                    e.u64(word);
                }
            }
            stats.relations += chunk.len() as u64;
            w.close(FRAME)?;
        }
    }
    w.frame.u8(Tag::End as u8);
    let (out, bytes) = w.finish()?;
    stats.bytes = bytes;
    Ok((out, stats))
}

/// How much of a snapshot is written between two fsyncs of it (see [`Incremental`]).
const SYNC_EVERY: usize = 4 << 20;

/// A snapshot file synced every [`SYNC_EVERY`] bytes as it is written (Redis's
/// `rdb-save-incremental-fsync`): the kernel never holds hundreds of megabytes of it
/// to write back at once, which stalls every other write to the same disk, the
/// write log's appends included, for tens of milliseconds.
struct Incremental {
    file: std::fs::File,
    unsynced: usize,
}

impl Write for Incremental {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The prefix of every temporary file a snapshot of `path` is written to first.
pub(crate) fn tmp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned());
    format!("{name}.tmp.")
}

/// A temporary file of its own for a snapshot of `path`: unique per process and
/// call, so two writers never share one (the engine serialises its own snapshot
/// writes; this keeps other writers of the same path apart too).
fn tmp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!("{}{}.{n}", tmp_prefix(path), std::process::id()))
}

/// Writes `frozen` to `path` crash-safely: a temporary file, fsync, rename, fsync of
/// the directory.
pub(crate) fn write(frozen: &Frozen, path: &Path) -> Result<SnapshotStats, Error> {
    let tmp = tmp_path(path);
    let mut stats = SnapshotStats::default();
    let written = std::fs::File::create(&tmp).and_then(|file| {
        let file = Incremental { file, unsynced: 0 };
        let (out, s) = encode(frozen, std::io::BufWriter::with_capacity(1 << 16, file))?;
        stats = s;
        out.into_inner()
            .map_err(|e| e.into_error())?
            .file
            .sync_all()
    });
    // The snapshot being replaced, held open so that the rename does not free its
    // blocks at once (see `free_gently`).
    let replaced = std::fs::OpenOptions::new().write(true).open(path).ok();
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    if let Some(dir) = path.parent() {
        sync_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?;
    }
    if let Some(old) = replaced {
        crate::persist::free_gently(old);
    }
    Ok(stats)
}
