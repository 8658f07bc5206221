//! A snapshot read back a record at a time, pulled: [`SnapshotReader::next`] yields
//! what the engine applies, in order (relation types, profiles, relations in
//! batches), as the log reader yields its records. Versions 1 and 2 yield relations
//! by id in batches of a relation type; version 3 yields batches of its profile
//! table and of its targets' columns.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{MAGIC, MAX_FRAME, Tag, VERSION};
use crate::command::BulkRow;
use crate::error::{Error, StorageKind, fail, io_err};
use crate::persist::codec::{Corrupt, Dec};
use crate::profile::data::ProfileData;
use crate::profile::id::ProfileId;
use crate::schema::RelationType;
use crate::value::Value;

/// Where a record is in its file: its byte offset and its ordinal among the records.
pub(crate) type Place = (u64, u64);

/// A relation a load left out: its target's index in the batch, its row, why.
pub(crate) type LeftOut = (usize, usize, String);

/// A profile of a version-3 snapshot: database, id, data (`None`: id-only).
pub(crate) type ProfileRecord = (u32, String, Option<ProfileData>);

/// What a batch answers when it refuses: `Err((Some(row), why))` when one row is
/// refused, `Err((None, why))` when the whole batch is (nothing of it applied).
pub(crate) type Refused = Result<(), (Option<usize>, Error)>;

/// One step of a snapshot, in file order.
pub(crate) enum Item {
    /// A relation type. When the engine refuses it, its caller says so
    /// ([`SnapshotReader::refuse_define`]) before the next step, so that the
    /// relations of that type are skipped as one.
    Define(Place, RelationType),
    /// A profile with its data (versions 1 and 2).
    Import(Place, u32, String, ProfileData),
    /// Id-only profiles of one database (versions 1 and 2).
    Ids(Ids),
    /// Relations of one relation type, by id (versions 1 and 2).
    Relations(Relations),
    /// The next entries of the profile table (version 3).
    Profiles(Profiles),
    /// Targets, their relations in columns (version 3).
    Targets(Vec<TargetRecord>),
    /// A record this version refuses as it reads it, and why.
    Skip(Place, String),
}

/// Id-only profiles of one database, to be made as one batch.
pub(crate) struct Ids {
    pub(crate) db: u32,
    pub(crate) ids: Vec<String>,
    at: Vec<Place>,
}

impl Ids {
    /// Where the `i`th profile's record is, and what it is (for a skipped one).
    pub(crate) fn describe(&self, i: usize) -> (Place, String) {
        let what = format!("profile {:?} of database {}", clip(&self.ids[i]), self.db);
        (self.at[i], what)
    }
}

/// Relations of one relation type by id, gathered to be imported as one batch.
pub(crate) struct Relations {
    pub(crate) rel_id: u32,
    /// The relation type's property names, which the rows' weights index.
    pub(crate) names: Vec<String>,
    pub(crate) rows: Vec<BulkRow>,
    at: Vec<Place>,
}

impl Relations {
    /// Where the `i`th row's record is, and what it is (for a skipped one).
    pub(crate) fn describe(&self, i: usize) -> (Place, String) {
        let row = &self.rows[i];
        let what = format!(
            "relation {} from {:?} to {:?}",
            self.rel_id,
            clip(&row.b),
            clip(&row.a)
        );
        (self.at[i], what)
    }
}

/// The next entries of a version-3 snapshot's profile table, in order.
pub(crate) struct Profiles {
    pub(crate) profiles: Vec<ProfileRecord>,
    at: Vec<Place>,
}

impl Profiles {
    /// Where the `i`th profile's record is, and what it is (for a skipped one).
    pub(crate) fn describe(&self, i: usize) -> (Place, String) {
        let (db, id, _) = &self.profiles[i];
        (
            self.at[i],
            format!("profile {:?} of database {db}", clip(id)),
        )
    }
}

/// One recipient's relations in a version-3 snapshot (several consecutive records of
/// it joined): its relation type, its index in the profile table, and its relations
/// in columns (see `docs/format.md`).
pub(crate) struct TargetRecord {
    pub(crate) rel_id: u32,
    pub(crate) a: u32,
    pub(crate) initiators: Vec<u32>,
    /// Taken by the loader (left empty).
    pub(crate) flags: Vec<u8>,
    /// Taken by the loader (left empty).
    pub(crate) nums: Vec<u64>,
    /// Each joined record's first row, file offset and ordinal.
    pieces: Vec<(usize, u64, u64)>,
}

impl TargetRecord {
    /// Where the record that holds `row` is, and what the row is (for a skipped one).
    pub(crate) fn describe(&self, row: usize) -> (Place, String) {
        let k = self.pieces.partition_point(|p| p.0 <= row).max(1) - 1;
        let what = format!(
            "relation {} of profile {} from profile {}",
            self.rel_id, self.a, self.initiators[row]
        );
        ((self.pieces[k].1, self.pieces[k].2), what)
    }
}

/// Rows (or profiles) a batch takes before it is yielded.
const BATCH: usize = 100_000;

/// At most the first 64 bytes of `id`, for a message about an id that may be far
/// longer than any valid one.
fn clip(id: &str) -> &str {
    let mut end = id.len().min(crate::limits::MAX_PROFILE_ID_LEN);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

/// Why a read stopped: the file is not a whole snapshot, or it could not be read.
enum ReadError {
    Corrupt(Corrupt),
    Io(std::io::Error),
}

impl From<Corrupt> for ReadError {
    fn from(c: Corrupt) -> Self {
        ReadError::Corrupt(c)
    }
}

/// Reads exactly `n` bytes (`n` no more than what is left of the file, checked by
/// the caller, so a corrupted length never sizes an allocation past the file).
fn read_exact(r: &mut impl Read, n: usize) -> Result<Vec<u8>, ReadError> {
    let mut buf = vec![0u8; n];
    match r.read_exact(&mut buf) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(Corrupt("truncated".into()).into())
        }
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// A snapshot read a record at a time. Version 1 is read whole and its checksum
/// checked first; versions 2 and 3 a frame at a time, the checksum checked at the
/// end (a load that fails leaves an engine its caller discards). A record this
/// version refuses is yielded as [`Item::Skip`] and the read goes on: a snapshot
/// that decodes always loads.
pub(crate) struct SnapshotReader<R> {
    r: R,
    /// The file, named in errors (`None` for bytes in memory).
    path: Option<PathBuf>,
    version: u32,
    next_seq: u64,
    /// Bytes of the file after the header.
    rest: usize,
    /// The frame being read (version 1: the whole body), how far, and the file
    /// offset of its first byte.
    frame: Vec<u8>,
    pos: usize,
    base: u64,
    /// The file offset after the last frame read.
    at: usize,
    sum: xxhash_rust::xxh64::Xxh64,
    ended: bool,
    ready: VecDeque<Item>,
    /// The property names of each relation type defined so far, and the last one
    /// defined if it was new (see [`SnapshotReader::refuse_define`]).
    names: hashbrown::HashMap<u32, Vec<String>>,
    new_define: Option<u32>,
    /// Each defined relation type's record widths: flag bytes and numeric words.
    shapes: hashbrown::HashMap<u32, (usize, usize)>,
    relations: Option<Relations>,
    ids: Option<Ids>,
    profiles: Option<Profiles>,
    targets: Vec<TargetRecord>,
    target_rows: usize,
    ordinal: u64,
}

/// The header's length: magic, version, the log sequence covered.
const HEADER: usize = MAGIC.len() + 4 + 8;

impl SnapshotReader<std::io::BufReader<std::fs::File>> {
    /// Opens the snapshot at `path` and checks its header.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        let len = file.metadata().map_err(|e| io_err(path, e))?.len();
        let reader = std::io::BufReader::with_capacity(1 << 16, file);
        SnapshotReader::new(reader, len, Some(path.to_path_buf()))
    }
}

impl<'a> SnapshotReader<&'a [u8]> {
    /// Reads a snapshot from its bytes in memory.
    pub(crate) fn from_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        SnapshotReader::new(bytes, bytes.len() as u64, None)
    }
}

impl<R: Read> SnapshotReader<R> {
    fn new(mut r: R, len: u64, path: Option<PathBuf>) -> Result<Self, Error> {
        let mut head = Vec::new();
        let checked = (|| {
            if len < (HEADER + 1 + 8) as u64 {
                return Err(Corrupt("not a relcount snapshot".into()).into());
            }
            head = read_exact(&mut r, HEADER)?;
            if &head[..MAGIC.len()] != MAGIC {
                return Err(Corrupt("not a relcount snapshot".into()).into());
            }
            let mut d = Dec::new(&head[MAGIC.len()..]);
            let version = d.u32()?;
            if !(1..=VERSION).contains(&version) {
                return Err(Corrupt(format!(
                    "version {version}, this build reads 1 to {VERSION}"
                ))
                .into());
            }
            Ok((version, d.u64()?))
        })();
        let (version, next_seq) = checked.map_err(|e| error(path.as_deref(), e))?;
        let mut sum = xxhash_rust::xxh64::Xxh64::new(0);
        sum.update(&head);
        Ok(SnapshotReader {
            r,
            path,
            version,
            next_seq,
            // Never past the file: `len` bounds every length read from it.
            rest: usize::try_from(len).unwrap_or(usize::MAX) - HEADER,
            frame: Vec::new(),
            pos: 0,
            base: HEADER as u64,
            at: HEADER,
            sum,
            ended: false,
            ready: VecDeque::new(),
            names: hashbrown::HashMap::new(),
            new_define: None,
            shapes: hashbrown::HashMap::new(),
            relations: None,
            ids: None,
            profiles: None,
            targets: Vec::new(),
            target_rows: 0,
            ordinal: 0,
        })
    }

    /// The first log sequence number the snapshot does not cover.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next step, `None` after the last (the checksum checked).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] for a file that cannot be read, or is corrupted, truncated,
    /// of another version or not a relcount snapshot. Never allocates more than the
    /// file's size on any input.
    pub(crate) fn next(&mut self) -> Result<Option<Item>, Error> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(Some(item));
            }
            if self.ended {
                return Ok(None);
            }
            self.step().map_err(|e| error(self.path.as_deref(), e))?;
        }
    }

    /// Says that the engine refused the relation type just yielded: its relations
    /// are then skipped as they are read, one entry a record.
    pub(crate) fn refuse_define(&mut self, rel_id: u32) {
        if self.new_define.take() == Some(rel_id) {
            self.names.remove(&rel_id);
            self.shapes.remove(&rel_id);
        }
    }

    /// Reads one record (and the frame it starts, if the last one is used up).
    fn step(&mut self) -> Result<(), ReadError> {
        self.new_define = None;
        if self.pos == self.frame.len() {
            self.next_frame()?;
        }
        // Taken while the record is read, which may yield batches.
        let frame = std::mem::take(&mut self.frame);
        let mut d = Dec::new(&frame[self.pos..]);
        let at = self.base + self.pos as u64;
        let ended = self.record(&mut d, at);
        self.pos += d.pos();
        self.frame = frame;
        if ended? {
            self.finish()?;
        }
        Ok(())
    }

    /// Reads the next frame into `frame` (version 1: the whole body, its checksum
    /// checked).
    fn next_frame(&mut self) -> Result<(), ReadError> {
        if self.version == 1 {
            if !self.frame.is_empty() {
                return Err(Corrupt("no end record".into()).into());
            }
            let mut tail = read_exact(&mut self.r, self.rest)?;
            let body = tail.len() - 8;
            self.sum.update(&tail[..body]);
            if Dec::new(&tail[body..]).u64()? != self.sum.digest() {
                return Err(Corrupt("checksum mismatch".into()).into());
            }
            tail.truncate(body);
            self.frame = tail;
            self.at = HEADER + self.rest;
            return Ok(());
        }
        let left = self.rest - (self.at - HEADER);
        if left < 4 + 8 {
            return Err(Corrupt("truncated: no end record".into()).into());
        }
        let n = read_exact(&mut self.r, 4)?;
        self.sum.update(&n);
        let n = Dec::new(&n).u32()? as usize;
        if n > MAX_FRAME || n > left - 4 - 8 {
            return Err(Corrupt(format!("frame of {n} bytes at offset {}", self.at)).into());
        }
        self.frame = read_exact(&mut self.r, n)?;
        self.sum.update(&self.frame);
        self.pos = 0;
        self.base = (self.at + 4) as u64;
        self.at += 4 + n;
        Ok(())
    }

    /// After the end record: nothing may follow it but the checksum, which must
    /// match.
    fn finish(&mut self) -> Result<(), ReadError> {
        if self.pos != self.frame.len() {
            return Err(Corrupt("bytes after the end record".into()).into());
        }
        if self.version >= 2 {
            if self.rest - (self.at - HEADER) != 8 {
                return Err(Corrupt("bytes after the end record".into()).into());
            }
            let footer = read_exact(&mut self.r, 8)?;
            if Dec::new(&footer).u64()? != self.sum.digest() {
                return Err(Corrupt("checksum mismatch".into()).into());
            }
        }
        self.ended = true;
        Ok(())
    }

    /// Yields the gathered relations (batches of relations by id, targets).
    fn flush_relations(&mut self) {
        if let Some(r) = self.relations.take() {
            self.ready.push_back(Item::Relations(r));
        }
        if !self.targets.is_empty() {
            self.target_rows = 0;
            let targets = std::mem::take(&mut self.targets);
            self.ready.push_back(Item::Targets(targets));
        }
    }

    /// Yields the gathered profiles.
    fn flush_profiles(&mut self) {
        if let Some(ids) = self.ids.take() {
            self.ready.push_back(Item::Ids(ids));
        }
        if let Some(p) = self.profiles.take() {
            self.ready.push_back(Item::Profiles(p));
        }
    }

    /// Reads the record at the start of `d` (at file offset `at`); `true` for the end
    /// record (every batch yielded).
    fn record(&mut self, d: &mut Dec<'_>, at: u64) -> Result<bool, Corrupt> {
        let place = (at, self.ordinal);
        self.ordinal += 1;
        let byte = d.u8()?;
        let tag = Tag::of(byte).ok_or_else(|| Corrupt(format!("unknown record type {byte}")))?;
        // Gathered batches are yielded before any other kind of record.
        if tag != Tag::Target {
            self.flush_relations();
        }
        if tag != Tag::Profile {
            self.flush_profiles();
        }
        match tag {
            Tag::End => return Ok(true),
            Tag::Define => {
                let def = d.relation_type()?;
                let rel_id = def.rel_id();
                let props: Vec<String> = def.props().map(|(n, _)| n.to_owned()).collect();
                let numeric = def
                    .props()
                    .filter(|(_, spec)| spec.kind() != crate::value::PropKind::Bool)
                    .count();
                let shape = ((2 * props.len()).div_ceil(8), numeric);
                // A relation type defined twice keeps its first definition (the
                // engine refuses the second).
                if !self.names.contains_key(&rel_id) {
                    self.names.insert(rel_id, props);
                    self.shapes.insert(rel_id, shape);
                    self.new_define = Some(rel_id);
                }
                self.ready.push_back(Item::Define(place, def));
            }
            Tag::Profile if self.version >= 3 => self.profile3(d, place)?,
            Tag::Target if self.version >= 3 => self.target3(d, place)?,
            Tag::Profile => self.profile(d, place)?,
            Tag::Target => self.target(d, place)?,
        }
        Ok(false)
    }

    /// A version-3 profile: the next entry of the profile table.
    fn profile3(&mut self, d: &mut Dec<'_>, place: Place) -> Result<(), Corrupt> {
        let record = profile_record(d)?;
        if self
            .profiles
            .as_ref()
            .is_some_and(|p| p.profiles.len() >= BATCH)
        {
            self.flush_profiles();
        }
        let p = self.profiles.get_or_insert_with(|| Profiles {
            profiles: Vec::new(),
            at: Vec::new(),
        });
        p.profiles.push(record);
        p.at.push(place);
        Ok(())
    }

    /// A version-3 target record: relations of one recipient, in columns.
    fn target3(&mut self, d: &mut Dec<'_>, place: Place) -> Result<(), Corrupt> {
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
            let why = format!("{n} relations of {rel_id} to profile {a}: {e}");
            self.ready.push_back(Item::Skip(place, why));
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
                t.pieces.push((t.initiators.len(), place.0, place.1));
                t.initiators.extend(initiators);
                t.flags.extend(flags);
                t.nums.extend(nums);
            }
            _ => {
                // A batch holds whole targets when it can: a full one is yielded
                // when the next recipient starts, or mid-target at four times the
                // size.
                if self.target_rows >= BATCH {
                    self.flush_relations();
                }
                self.targets.push(TargetRecord {
                    rel_id,
                    a,
                    initiators,
                    flags,
                    nums,
                    pieces: vec![(0, place.0, place.1)],
                });
            }
        }
        self.target_rows += n;
        if self.target_rows >= 4 * BATCH {
            self.flush_relations();
        }
        Ok(())
    }

    fn profile(&mut self, d: &mut Dec<'_>, place: Place) -> Result<(), Corrupt> {
        let (db, id, data) = profile_record(d)?;
        let Some(data) = data else {
            // Id-only: created in batches of a database.
            if self
                .ids
                .as_ref()
                .is_some_and(|p| p.db != db || p.ids.len() >= BATCH)
            {
                self.flush_profiles();
            }
            let p = self.ids.get_or_insert_with(|| Ids {
                db,
                ids: Vec::new(),
                at: Vec::new(),
            });
            p.ids.push(id);
            p.at.push(place);
            return Ok(());
        };
        self.flush_profiles();
        self.ready.push_back(Item::Import(place, db, id, data));
        Ok(())
    }

    fn target(&mut self, d: &mut Dec<'_>, place: Place) -> Result<(), Corrupt> {
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
        // is yielded when the next recipient starts, or mid-target at four times the
        // size, so one huge target never gathers whole.
        if self.relations.as_ref().is_some_and(|p| {
            p.rel_id != rel_id
                || (p.rows.len() >= BATCH && p.rows.last().is_some_and(|r| r.a != a))
                || p.rows.len() >= 4 * BATCH
        }) {
            self.flush_relations();
        }
        if let Some(e) = &refused {
            let why = format!("{n} relations of {rel_id} to {:?}: {e}", clip(&a));
            self.ready.push_back(Item::Skip(place, why));
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
            let names = &self.names;
            let p = self.relations.get_or_insert_with(|| Relations {
                rel_id,
                names: names[&rel_id].clone(),
                rows: Vec::new(),
                at: Vec::new(),
            });
            p.rows.push(BulkRow {
                a: a.clone(),
                b,
                weights,
            });
            p.at.push(place);
        }
        Ok(())
    }
}

/// The error of a read that stopped, naming the file (if any).
fn error(path: Option<&Path>, e: ReadError) -> Error {
    match (e, path) {
        (ReadError::Io(e), Some(path)) => io_err(path, e),
        (ReadError::Io(e), None) => fail(StorageKind::Corrupt, None, e.to_string()),
        (ReadError::Corrupt(c), path) => fail(
            StorageKind::Corrupt,
            path,
            format!("corrupted snapshot: {}", c.0),
        ),
    }
}

/// Imports `items` through `import` (a batch, all or nothing), all of them if it
/// can. At a refused item, the ones before it (checked in order, so all valid) are
/// imported as a batch of their own, the refused one goes to `refuse`, and the rest
/// are tried again: each item is checked at most twice, however many are refused.
/// Returns how many were imported.
pub(crate) fn import_valid<T>(
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
