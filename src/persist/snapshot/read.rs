//! A snapshot read a frame at a time into a sink: versions 1 and 2 as commands and
//! bulk batches, version 3 as batches of its profile table and of its targets'
//! columns.

use std::io::Read;
use std::path::Path;

use super::{MAGIC, MAX_FRAME, SnapshotStats, Tag, VERSION};
use crate::command::{BulkRow, Command};
use crate::error::{Error, StorageKind, fail, io_err};
use crate::persist::codec::{Corrupt, Dec};
use crate::profile::id::ProfileId;
use crate::value::Value;

fn corrupt(path: &Path, c: Corrupt) -> Error {
    fail(
        StorageKind::Corrupt,
        Some(path),
        format!("corrupted snapshot: {}", c.0),
    )
}

/// Where a snapshot's commands go as it loads: `apply` executes one, `bulk` imports a
/// batch of relations (`Err((Some(row), why))` when it refuses one row, `None` when it
/// refuses them all: either way nothing of the batch was applied), `skip` hears of
/// one that was refused (its byte offset, ordinal and why).
pub(crate) struct Sink<'a> {
    pub(crate) apply: &'a mut dyn FnMut(Command) -> Result<(), Error>,
    pub(crate) bulk: &'a mut BulkSink<'a>,
    /// Creates id-only profiles of a database, as `bulk` does relations.
    pub(crate) ids: &'a mut dyn FnMut(u32, &[String]) -> Refused,
    pub(crate) skip: &'a mut dyn FnMut(u64, u64, String),
    /// Makes a batch of a version-3 snapshot's profiles, the next entries of its
    /// profile table, in order: for each one, why it was refused, if it was.
    pub(crate) profiles: &'a mut dyn FnMut(&[ProfileRecord]) -> Vec<Option<Error>>,
    /// Places a batch of a version-3 snapshot's targets: returns the relations left
    /// out (target, row, why).
    pub(crate) targets: &'a mut dyn FnMut(&mut [TargetRecord]) -> Vec<LeftOut>,
}

/// A relation a load left out: its target's index in the batch, its row, why.
pub(crate) type LeftOut = (usize, usize, String);

/// A profile of a version-3 snapshot: database, id, data (`None`: id-only).
pub(crate) type ProfileRecord = (u32, String, Option<crate::profile::data::ProfileData>);

/// One recipient's relations in a version-3 snapshot (several consecutive records of
/// it joined): its relation type, its index in the profile table, and its relations
/// in columns (see `docs/format.md`).
pub(crate) struct TargetRecord {
    pub(crate) rel_id: u32,
    pub(crate) a: u32,
    pub(crate) initiators: Vec<u32>,
    /// Taken by the sink (left empty).
    pub(crate) flags: Vec<u8>,
    /// Taken by the sink (left empty).
    pub(crate) nums: Vec<u64>,
    /// Each joined record's first row, file offset and ordinal.
    pieces: Vec<(usize, u64, u64)>,
}

impl TargetRecord {
    /// The file offset and ordinal of the record that holds `row`.
    fn place_of(&self, row: usize) -> (u64, u64) {
        let k = self.pieces.partition_point(|p| p.0 <= row).max(1) - 1;
        (self.pieces[k].1, self.pieces[k].2)
    }
}

/// What a batch of the sink answers: `Err((Some(row), why))` when one row is refused,
/// `Err((None, why))` when the whole batch is.
pub(crate) type Refused = Result<(), (Option<usize>, Error)>;

/// Imports a batch of one relation type's relations: `(rel_id, property names, rows)`.
pub(crate) type BulkSink<'a> = dyn FnMut(u32, &[String], &[BulkRow]) -> Refused + 'a;

/// Rows of a snapshot's targets of one relation type, gathered to be imported as one
/// batch: with each row, the offset and ordinal of its target record, and the ids.
struct Pending {
    rel_id: u32,
    rows: Vec<BulkRow>,
    at: Vec<(u64, u64)>,
}

/// Id-only profiles of one database, gathered to be created as one batch.
struct PendingIds {
    db: u32,
    ids: Vec<String>,
    at: Vec<(u64, u64)>,
}

impl PendingIds {
    /// Creates the gathered profiles; an id the engine refuses is reported and left
    /// out. Returns how many were created.
    fn flush(&mut self, sink: &mut Sink<'_>) -> u64 {
        let (db, ids, at) = (self.db, &self.ids, &self.at);
        let (make, skip) = (&mut sink.ids, &mut sink.skip);
        import_valid(
            ids,
            |part| make(db, part),
            |i, e| {
                let what = format!("profile {:?} of database {db}", clip(&ids[i]));
                skip(at[i].0, at[i].1, format!("{what}: {e}"));
            },
        )
    }
}

/// Imports `items` through `import` (a batch, all or nothing), all of them if it
/// can. At a refused item, the ones before it (checked in order, so all valid) are
/// imported as a batch of their own, the refused one goes to `refuse`, and the rest
/// are tried again: each item is checked at most twice, however many are refused.
/// Returns how many were imported.
pub(super) fn import_valid<T>(
    items: &[T],
    mut import: impl FnMut(&[T]) -> Refused,
    mut refuse: impl FnMut(usize, Error),
) -> u64 {
    let mut done = 0;
    let mut start = 0;
    while start < items.len() {
        match import(&items[start..]) {
            Ok(()) => {
                done += (items.len() - start) as u64;
                break;
            }
            Err((Some(row), e)) => {
                if row > 0 {
                    match import(&items[start..start + row]) {
                        Ok(()) => done += row as u64,
                        Err((_, e)) => (start..start + row).for_each(|i| refuse(i, e.clone())),
                    }
                }
                refuse(start + row, e);
                start += row + 1;
            }
            Err((None, e)) => {
                (start..items.len()).for_each(|i| refuse(i, e.clone()));
                break;
            }
        }
    }
    done
}

/// Rows a batch takes before it is imported.
const BATCH: usize = 100_000;

impl Pending {
    /// Imports the gathered rows; a row the engine refuses is reported and left out.
    /// Returns how many were imported.
    fn flush(&mut self, names: &[String], sink: &mut Sink<'_>) -> u64 {
        let (rel_id, rows, at) = (self.rel_id, &self.rows, &self.at);
        let (bulk, skip) = (&mut sink.bulk, &mut sink.skip);
        import_valid(
            rows,
            |part| bulk(rel_id, names, part),
            |i, e| {
                let what = format!(
                    "relation {rel_id} from {:?} to {:?}",
                    clip(&rows[i].b),
                    clip(&rows[i].a)
                );
                skip(at[i].0, at[i].1, format!("{what}: {e}"));
            },
        )
    }
}

/// At most the first 64 bytes of `id`, for a message about an id that may be far
/// longer than any valid one.
fn clip(id: &str) -> &str {
    let mut end = id.len().min(crate::limits::MAX_PROFILE_ID_LEN);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

/// Why a load stopped: the file is not a whole snapshot, or it could not be read.
enum LoadError {
    Corrupt(Corrupt),
    Io(std::io::Error),
}

impl From<Corrupt> for LoadError {
    fn from(c: Corrupt) -> Self {
        LoadError::Corrupt(c)
    }
}

/// Loads the snapshot at `path` into `sink` (an empty engine, without a log), a frame
/// at a time; returns the first log sequence number it does not cover.
pub(crate) fn load(path: &Path, sink: Sink<'_>) -> Result<(u64, SnapshotStats), Error> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    load_from(reader, len, sink).map_err(|e| match e {
        LoadError::Corrupt(c) => corrupt(path, c),
        LoadError::Io(e) => io_err(path, e),
    })
}

/// [`load`] from bytes in memory.
pub(crate) fn load_bytes(bytes: &[u8], sink: Sink<'_>) -> Result<(u64, SnapshotStats), Corrupt> {
    load_from(bytes, bytes.len() as u64, sink).map_err(|e| match e {
        LoadError::Corrupt(c) => c,
        LoadError::Io(e) => Corrupt(e.to_string()),
    })
}

/// Reads exactly `n` bytes (`n` no more than what is left of the file, checked by
/// the caller, so a corrupted length never sizes an allocation past the file).
fn read_exact(r: &mut impl Read, n: usize) -> Result<Vec<u8>, LoadError> {
    let mut buf = vec![0u8; n];
    match r.read_exact(&mut buf) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(Corrupt("truncated".into()).into())
        }
        Err(e) => Err(LoadError::Io(e)),
    }
}

/// Checks the header, then applies every record: relation types and profiles one
/// command each, relations in batches of a relation type. A record the engine refuses
/// (one an earlier version accepted and this one does not) is reported to `skip` and
/// the load goes on: a snapshot that decodes always loads. Version 1 is read whole
/// and its checksum checked first; version 2 a frame at a time, its checksum checked
/// at the end (a load that fails leaves an engine its caller discards).
fn load_from(
    mut r: impl Read,
    len: u64,
    sink: Sink<'_>,
) -> Result<(u64, SnapshotStats), LoadError> {
    let header = MAGIC.len() + 4 + 8;
    if len < (header + 1 + 8) as u64 {
        return Err(Corrupt("not a relcount snapshot".into()).into());
    }
    let head = read_exact(&mut r, header)?;
    if &head[..MAGIC.len()] != MAGIC {
        return Err(Corrupt("not a relcount snapshot".into()).into());
    }
    let mut d = Dec::new(&head[MAGIC.len()..]);
    let version = d.u32()?;
    let next_seq = d.u64()?;
    let mut loader = Loader {
        sink,
        version,
        names: hashbrown::HashMap::new(),
        shapes: hashbrown::HashMap::new(),
        pending: None,
        pending_ids: None,
        profiles: Vec::new(),
        profile_at: Vec::new(),
        targets: Vec::new(),
        target_rows: 0,
        stats: SnapshotStats {
            bytes: len,
            ..SnapshotStats::default()
        },
        ordinal: 0,
    };
    // Never past the file: `len` bounds every length read from it.
    let rest = usize::try_from(len).unwrap_or(usize::MAX) - header;
    match version {
        1 => {
            let tail = read_exact(&mut r, rest)?;
            let (body, footer) = tail.split_at(tail.len() - 8);
            let mut sum = xxhash_rust::xxh64::Xxh64::new(0);
            sum.update(&head);
            sum.update(body);
            if Dec::new(footer).u64()? != sum.digest() {
                return Err(Corrupt("checksum mismatch".into()).into());
            }
            let mut d = Dec::new(body);
            if !loader.records(&mut d, header as u64)? {
                return Err(Corrupt("no end record".into()).into());
            }
            if d.remaining() != 0 {
                return Err(Corrupt("bytes after the end record".into()).into());
            }
        }
        2 | 3 => {
            let mut sum = xxhash_rust::xxh64::Xxh64::new(0);
            sum.update(&head);
            let mut at = header;
            loop {
                let left = rest - (at - header);
                if left < 4 + 8 {
                    return Err(Corrupt("truncated: no end record".into()).into());
                }
                let n = read_exact(&mut r, 4)?;
                sum.update(&n);
                let n = Dec::new(&n).u32()? as usize;
                if n > MAX_FRAME || n > left - 4 - 8 {
                    return Err(Corrupt(format!("frame of {n} bytes at offset {at}")).into());
                }
                let frame = read_exact(&mut r, n)?;
                sum.update(&frame);
                let mut d = Dec::new(&frame);
                let ended = loader.records(&mut d, (at + 4) as u64)?;
                at += 4 + n;
                if ended {
                    if d.remaining() != 0 {
                        return Err(Corrupt("bytes after the end record".into()).into());
                    }
                    if rest - (at - header) != 8 {
                        return Err(Corrupt("bytes after the end record".into()).into());
                    }
                    let footer = read_exact(&mut r, 8)?;
                    if Dec::new(&footer).u64()? != sum.digest() {
                        return Err(Corrupt("checksum mismatch".into()).into());
                    }
                    break;
                }
            }
        }
        v => {
            return Err(Corrupt(format!("version {v}, this build reads 1 to {VERSION}")).into());
        }
    }
    Ok((next_seq, loader.stats))
}

/// The state of a load across frames.
struct Loader<'a> {
    sink: Sink<'a>,
    version: u32,
    /// The property names of each relation type defined so far, by index.
    names: hashbrown::HashMap<u32, Vec<String>>,
    /// Each defined relation type's record widths: flag bytes and numeric words.
    shapes: hashbrown::HashMap<u32, (usize, usize)>,
    pending: Option<Pending>,
    pending_ids: Option<PendingIds>,
    /// Version 3: profiles gathered to be made as one batch, with each one's offset
    /// and ordinal.
    profiles: Vec<ProfileRecord>,
    profile_at: Vec<(u64, u64)>,
    /// Version 3: targets gathered to be placed as one batch, and their relations.
    targets: Vec<TargetRecord>,
    target_rows: usize,
    stats: SnapshotStats,
    ordinal: u64,
}

impl Loader<'_> {
    fn flush_relations(&mut self) {
        if let Some(mut p) = self.pending.take() {
            self.stats.relations += p.flush(&self.names[&p.rel_id], &mut self.sink);
        }
        if !self.targets.is_empty() {
            let mut targets = std::mem::take(&mut self.targets);
            let left = (self.sink.targets)(&mut targets);
            self.stats.relations += (self.target_rows - left.len()) as u64;
            self.target_rows = 0;
            for (t, row, why) in left {
                let t = &targets[t];
                let (at, ordinal) = t.place_of(row);
                (self.sink.skip)(
                    at,
                    ordinal,
                    format!(
                        "relation {} of profile {} from profile {}: {why}",
                        t.rel_id, t.a, t.initiators[row]
                    ),
                );
            }
        }
    }

    fn flush_ids(&mut self) {
        if let Some(mut p) = self.pending_ids.take() {
            self.stats.profiles += p.flush(&mut self.sink);
        }
        if !self.profiles.is_empty() {
            let profiles = std::mem::take(&mut self.profiles);
            let at = std::mem::take(&mut self.profile_at);
            let refused = (self.sink.profiles)(&profiles);
            for ((p, why), (at, ordinal)) in profiles.iter().zip(refused).zip(at) {
                match why {
                    None => self.stats.profiles += 1,
                    Some(e) => (self.sink.skip)(
                        at,
                        ordinal,
                        format!("profile {:?} of database {}: {e}", clip(&p.1), p.0),
                    ),
                }
            }
        }
    }

    /// Applies the records of `d` (whose first byte is at file offset `base`) until it
    /// is used up at a record's end (`false`) or the end record (`true`, every batch
    /// imported).
    fn records(&mut self, d: &mut Dec<'_>, base: u64) -> Result<bool, Corrupt> {
        while d.remaining() > 0 {
            let at = base + d.pos() as u64;
            let ordinal = self.ordinal;
            self.ordinal += 1;
            let byte = d.u8()?;
            let tag =
                Tag::of(byte).ok_or_else(|| Corrupt(format!("unknown record type {byte}")))?;
            // Gathered batches are imported before any other kind of record.
            if tag != Tag::Target {
                self.flush_relations();
            }
            if tag != Tag::Profile {
                self.flush_ids();
            }
            match tag {
                Tag::End => return Ok(true),
                Tag::Define => {
                    let def = d.relation_type()?;
                    let (rel_id, props) = (
                        def.rel_id(),
                        def.props().map(|(n, _)| n.to_owned()).collect::<Vec<_>>(),
                    );
                    let numeric = def
                        .props()
                        .filter(|(_, spec)| spec.kind() != crate::value::PropKind::Bool)
                        .count();
                    let shape = ((2 * props.len()).div_ceil(8), numeric);
                    match (self.sink.apply)(Command::Define(def)) {
                        Ok(()) => {
                            self.names.insert(rel_id, props);
                            self.shapes.insert(rel_id, shape);
                            self.stats.relation_types += 1;
                        }
                        Err(e) => (self.sink.skip)(at, ordinal, format!("relation type: {e}")),
                    }
                }
                Tag::Profile if self.version >= 3 => self.profile3(d, at, ordinal)?,
                Tag::Target if self.version >= 3 => self.target3(d, at, ordinal)?,
                Tag::Profile => self.profile(d, at, ordinal)?,
                Tag::Target => self.target(d, at, ordinal)?,
            }
        }
        Ok(false)
    }

    /// A version-3 profile: the next entry of the profile table.
    fn profile3(&mut self, d: &mut Dec<'_>, at: u64, ordinal: u64) -> Result<(), Corrupt> {
        let (db, id, data) = profile_record(d)?;
        if self.profiles.len() >= BATCH {
            self.flush_ids();
        }
        self.profiles.push((db, id, data));
        self.profile_at.push((at, ordinal));
        Ok(())
    }

    /// A version-3 target record: relations of one recipient, in columns.
    fn target3(&mut self, d: &mut Dec<'_>, at: u64, ordinal: u64) -> Result<(), Corrupt> {
        let rel_id = d.u32()?;
        let a = d.u32()?;
        let meta = usize::from(d.u16()?);
        d.take(meta)?;
        let (fb, nw) = (usize::from(d.u8()?), usize::from(d.u8()?));
        let n = d.count(4 + fb + 8 * nw)?;
        // `count` checked that the columns fit in the bytes left: sized once.
        let mut initiators = Vec::with_capacity(n);
        for _ in 0..n {
            initiators.push(d.u32()?);
        }
        let flags = d.take(n * fb)?.to_vec();
        let mut nums = Vec::with_capacity(n * nw);
        for _ in 0..n * nw {
            nums.push(d.u64()?);
        }
        let Some(&shape) = self.shapes.get(&rel_id) else {
            // A relation type this load refused (or a file that names none).
            let e = Error::UnknownRelation { rel_id };
            (self.sink.skip)(
                at,
                ordinal,
                format!("{n} relations of {rel_id} to profile {a}: {e}"),
            );
            return Ok(());
        };
        if shape != (fb, nw) {
            return Err(Corrupt(format!(
                "relations of {rel_id} of {fb} flag bytes and {nw} numbers, not {shape:?}"
            )));
        }
        if n == 0 {
            return Ok(());
        }
        match self.targets.last_mut() {
            // The same recipient's next record: joined.
            Some(t) if t.rel_id == rel_id && t.a == a => {
                t.pieces.push((t.initiators.len(), at, ordinal));
                t.initiators.extend(initiators);
                t.flags.extend(flags);
                t.nums.extend(nums);
            }
            _ => {
                // A batch holds whole targets when it can: a full one is placed when
                // the next recipient starts, or mid-target at four times the size.
                if self.target_rows >= BATCH {
                    self.flush_relations();
                }
                self.targets.push(TargetRecord {
                    rel_id,
                    a,
                    initiators,
                    flags,
                    nums,
                    pieces: vec![(0, at, ordinal)],
                });
            }
        }
        self.target_rows += n;
        if self.target_rows >= 4 * BATCH {
            self.flush_relations();
        }
        Ok(())
    }

    fn profile(&mut self, d: &mut Dec<'_>, at: u64, ordinal: u64) -> Result<(), Corrupt> {
        let (db, id, data) = profile_record(d)?;
        let Some(data) = data else {
            // Id-only: created in batches of a database.
            if self
                .pending_ids
                .as_ref()
                .is_some_and(|p| p.db != db || p.ids.len() >= BATCH)
            {
                self.flush_ids();
            }
            let p = self.pending_ids.get_or_insert_with(|| PendingIds {
                db,
                ids: Vec::new(),
                at: Vec::new(),
            });
            p.ids.push(id);
            p.at.push((at, ordinal));
            return Ok(());
        };
        self.flush_ids();
        let import = Command::Import {
            db,
            id: id.clone(),
            data,
        };
        match (self.sink.apply)(import) {
            Ok(()) => self.stats.profiles += 1,
            Err(e) => {
                (self.sink.skip)(at, ordinal, format!("profile {id:?} of database {db}: {e}"))
            }
        }
        Ok(())
    }

    fn target(&mut self, d: &mut Dec<'_>, at: u64, ordinal: u64) -> Result<(), Corrupt> {
        let rel_id = d.u32()?;
        let a = d.str()?;
        let n = d.count(3)?;
        let known = self.names.get(&rel_id).map(Vec::len);
        // A recipient id no version accepts refuses the whole record, reported once
        // (its rows are read past, never gathered: a hostile file cannot make them
        // cost more than their bytes).
        let refused = ProfileId::new(&a)
            .err()
            .or_else(|| known.is_none().then_some(Error::UnknownRelation { rel_id }));
        // A batch holds one relation type, and whole targets when it can: a full one
        // is imported when the next recipient starts, or mid-target at four times the
        // size, so one huge target never gathers whole.
        if self.pending.as_ref().is_some_and(|p| {
            p.rel_id != rel_id
                || (p.rows.len() >= BATCH && p.rows.last().is_some_and(|r| r.a != a))
                || p.rows.len() >= 4 * BATCH
        }) {
            self.flush_relations();
        }
        if let Some(e) = &refused {
            (self.sink.skip)(
                at,
                ordinal,
                format!("{n} relations of {rel_id} to {:?}: {e}", clip(&a)),
            );
        }
        for _ in 0..n {
            let b = d.str()?;
            let k = d.u8()?;
            let mut weights: Vec<(u8, Value)> = Vec::with_capacity(usize::from(k));
            for _ in 0..k {
                let i = d.u8()?;
                let value = d.value()?;
                if known.is_some_and(|props| usize::from(i) >= props) {
                    return Err(Corrupt(format!("property index {i}")));
                }
                weights.push((i, value));
            }
            if refused.is_some() {
                continue;
            }
            let p = self.pending.get_or_insert_with(|| Pending {
                rel_id,
                rows: Vec::new(),
                at: Vec::new(),
            });
            p.rows.push(BulkRow {
                a: a.clone(),
                b,
                weights,
            });
            p.at.push((at, ordinal));
        }
        Ok(())
    }
}

/// A profile record's body (the same in every version): database, id, data.
fn profile_record(d: &mut Dec<'_>) -> Result<ProfileRecord, Corrupt> {
    let db = d.u32()?;
    let id = d.str()?;
    let data = match d.u8()? {
        0 => None,
        1 => Some(d.profile_data()?),
        t => return Err(Corrupt(format!("bad profile tag {t}"))),
    };
    Ok((db, id, data))
}
