//! Snapshot files: `RELCSNAP`, version, the log sequence it covers up to, records
//! (relation types, profiles, targets with their relations), an end record, and the
//! XXH64 of everything before it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::codec::{Corrupt, Dec, Enc};
use super::{storage, sync_dir};
use crate::command::{BulkRow, Command};
use crate::directory::{FrozenProfile, Profile};
use crate::error::Error;
use crate::schema::{RelationType, Value};
use crate::store;

const MAGIC: &[u8; 8] = b"RELCSNAP";
const VERSION: u32 = 1;

/// The engine's state at one point in time: immutable pieces collected under every
/// shard lock (reference counts only, no copying), encoded after the locks are gone.
/// Everything that decides what the snapshot holds is fixed at that point: a profile
/// whose delete started before it is left out with all its relations (the state once
/// that delete ends, as its log record is before the point); deletes that start later
/// change nothing here.
pub(crate) struct Frozen {
    pub(crate) schemas: Vec<RelationType>,
    /// Live profiles and their data at the point.
    pub(crate) profiles: Vec<FrozenProfile>,
    /// Slots of the profiles whose delete was under way at the point (unique among
    /// the profiles the targets below refer to, which all existed then).
    pub(crate) deleting: hashbrown::HashSet<u32>,
    /// Every target's counters and relations at the point.
    pub(crate) targets: Vec<store::Frozen>,
    /// The first log the snapshot does not cover.
    pub(crate) next_seq: u64,
}

/// What a snapshot holds, in counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotStats {
    /// Relation types.
    pub relation_types: u64,
    /// Profiles.
    pub profiles: u64,
    /// Relations.
    pub relations: u64,
    /// File size in bytes.
    pub bytes: u64,
}

fn encode(f: &Frozen) -> (Vec<u8>, SnapshotStats) {
    let mut e = Enc::default();
    let mut stats = SnapshotStats::default();
    e.buf.extend_from_slice(MAGIC);
    e.u32(VERSION);
    e.u64(f.next_seq);
    for def in &f.schemas {
        e.u8(1);
        e.relation_type(def);
        stats.relation_types += 1;
    }
    for (profile, data) in &f.profiles {
        e.u8(2);
        e.u32(profile.db);
        e.str(&profile.id.as_str());
        match data {
            Some(d) => {
                e.u8(1);
                e.profile_data(&d.to_data());
            }
            None => e.u8(0),
        }
        stats.profiles += 1;
    }
    // The relations name initiators by slot; at the point, each slot they name was
    // held by a live profile (in `by_slot`) or by one being deleted (not in it: its
    // relations are left out).
    let by_slot: hashbrown::HashMap<u32, &Profile> =
        f.profiles.iter().map(|(p, _)| (p.slot, &**p)).collect();
    let gone = |p: &Profile| f.deleting.contains(&p.slot);
    for target in &f.targets {
        let view = &target.view;
        let schema = &view.schema;
        let rels: Vec<_> = target
            .rels
            .iter()
            .filter_map(|(slot, rec)| Some((by_slot.get(&slot)?, rec)))
            .collect();
        if gone(&view.profile) || rels.is_empty() {
            continue;
        }
        e.u8(3);
        e.u32(schema.rel_id());
        e.str(&view.profile.id.as_str());
        e.u32(rels.len() as u32);
        for (b, rec) in rels {
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
    }
    e.u8(0);
    let sum = crate::xxh64(&e.buf);
    e.u64(sum);
    stats.bytes = e.buf.len() as u64;
    (e.buf, stats)
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
    let (bytes, stats) = encode(frozen);
    let tmp = tmp_path(path);
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(&bytes)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(storage(path.display(), e));
    }
    if let Some(dir) = path.parent() {
        sync_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?;
    }
    Ok(stats)
}

fn corrupt(path: &Path, c: Corrupt) -> Error {
    Error::Storage {
        reason: format!("{}: corrupted snapshot: {}", path.display(), c.0),
    }
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
        let mut done = 0;
        while !self.ids.is_empty() {
            match (sink.ids)(self.db, &self.ids) {
                Ok(()) => {
                    done += self.ids.len() as u64;
                    self.ids.clear();
                    self.at.clear();
                }
                Err((row, e)) => {
                    let refused = match row {
                        Some(row) => row..row + 1,
                        None => 0..self.ids.len(),
                    };
                    let at: Vec<_> = self.at.drain(refused.clone()).collect();
                    for (id, (offset, ordinal)) in self.ids.drain(refused).zip(at) {
                        let what = format!("profile {id:?} of database {}", self.db);
                        (sink.skip)(offset, ordinal, format!("{what}: {e}"));
                    }
                }
            }
        }
        done
    }
}

/// Rows a batch takes before it is imported.
const BATCH: usize = 100_000;

impl Pending {
    /// Imports the gathered rows; a row the engine refuses is reported and left out,
    /// and the rest imported again. Returns how many were imported.
    fn flush(&mut self, names: &[String], sink: &mut Sink<'_>) -> u64 {
        let mut done = 0;
        while !self.rows.is_empty() {
            match (sink.bulk)(self.rel_id, names, &self.rows) {
                Ok(()) => {
                    done += self.rows.len() as u64;
                    self.rows.clear();
                    self.at.clear();
                }
                Err((row, e)) => {
                    let refused = match row {
                        Some(row) => row..row + 1,
                        None => 0..self.rows.len(),
                    };
                    let at: Vec<_> = self.at.drain(refused.clone()).collect();
                    for (r, (offset, ordinal)) in self.rows.drain(refused).zip(at) {
                        let what = format!("relation {} from {:?} to {:?}", self.rel_id, r.b, r.a);
                        (sink.skip)(offset, ordinal, format!("{what}: {e}"));
                    }
                }
            }
        }
        done
    }
}

/// Loads the snapshot at `path` into `sink` (an empty engine, without a log);
/// returns the first log sequence number it does not cover.
pub(crate) fn load(path: &Path, sink: Sink<'_>) -> Result<(u64, SnapshotStats), Error> {
    let bytes = std::fs::read(path).map_err(|e| storage(path.display(), e))?;
    load_bytes(&bytes, sink).map_err(|c| corrupt(path, c))
}

/// Checks the header and checksum, then applies every record: relation types and
/// profiles one command each, relations in batches of a relation type. A record the
/// engine refuses (one an earlier version accepted and this one does not) is reported
/// to `skip` and the load goes on: a snapshot that decodes always loads.
pub(crate) fn load_bytes(
    bytes: &[u8],
    mut sink: Sink<'_>,
) -> Result<(u64, SnapshotStats), Corrupt> {
    let header = MAGIC.len() + 4 + 8;
    if bytes.len() < header + 1 + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Corrupt("not a relcount snapshot".into()));
    }
    let (body, footer) = bytes.split_at(bytes.len() - 8);
    let mut f = Dec::new(footer);
    if f.u64()? != crate::xxh64(body) {
        return Err(Corrupt("checksum mismatch".into()));
    }
    let mut d = Dec::new(&body[MAGIC.len()..]);
    let version = d.u32()?;
    if version != VERSION {
        return Err(Corrupt(format!(
            "version {version}, this build reads {VERSION}"
        )));
    }
    let next_seq = d.u64()?;
    let mut stats = SnapshotStats {
        bytes: bytes.len() as u64,
        ..SnapshotStats::default()
    };
    let mut ordinal = 0u64;
    // The property names of each relation type defined so far, by index.
    let mut names: hashbrown::HashMap<u32, Vec<String>> = hashbrown::HashMap::new();
    let mut pending: Option<Pending> = None;
    let mut pending_ids: Option<PendingIds> = None;
    // Offsets are of the file: the body starts after the magic.
    let offset = |d: &Dec<'_>| (MAGIC.len() + d.pos()) as u64;
    loop {
        let at = offset(&d);
        let tag = d.u8()?;
        // Batches are imported before any other record, and when full.
        if let Some(p) = &mut pending
            && (tag != 3 || p.rows.len() >= BATCH)
        {
            stats.relations += p.flush(&names[&p.rel_id], &mut sink);
            pending = None;
        }
        if let Some(p) = &mut pending_ids
            && (tag != 2 || p.ids.len() >= BATCH)
        {
            stats.profiles += p.flush(&mut sink);
            pending_ids = None;
        }
        match tag {
            0 => break,
            1 => {
                let def = d.relation_type()?;
                let (rel_id, props) = (
                    def.rel_id(),
                    def.props().map(|(n, _)| n.to_owned()).collect(),
                );
                match (sink.apply)(Command::Define(def)) {
                    Ok(()) => {
                        names.insert(rel_id, props);
                        stats.relation_types += 1;
                    }
                    Err(e) => (sink.skip)(at, ordinal, format!("relation type: {e}")),
                }
            }
            2 => {
                let db = d.u32()?;
                let id = d.str()?;
                let data = match d.u8()? {
                    0 => None,
                    1 => Some(d.profile_data()?),
                    t => return Err(Corrupt(format!("bad profile tag {t}"))),
                };
                let Some(data) = data else {
                    // Id-only: created in batches of a database.
                    if pending_ids.as_ref().is_some_and(|p| p.db != db)
                        && let Some(mut p) = pending_ids.take()
                    {
                        stats.profiles += p.flush(&mut sink);
                    }
                    let p = pending_ids.get_or_insert_with(|| PendingIds {
                        db,
                        ids: Vec::new(),
                        at: Vec::new(),
                    });
                    p.ids.push(id);
                    p.at.push((at, ordinal));
                    ordinal += 1;
                    continue;
                };
                let import = Command::Import {
                    db,
                    id: id.clone(),
                    data,
                };
                match (sink.apply)(import) {
                    Ok(()) => stats.profiles += 1,
                    Err(e) => {
                        (sink.skip)(at, ordinal, format!("profile {id:?} of database {db}: {e}"))
                    }
                }
            }
            3 => {
                let rel_id = d.u32()?;
                let a = d.str()?;
                let n = d.count(3)?;
                let known = names.get(&rel_id).map(Vec::len);
                if pending.as_ref().is_some_and(|p| p.rel_id != rel_id)
                    && let Some(mut p) = pending.take()
                {
                    stats.relations += p.flush(&names[&p.rel_id], &mut sink);
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
                    if known.is_none() {
                        let e = Error::UnknownRelation { rel_id };
                        (sink.skip)(
                            at,
                            ordinal,
                            format!("relation {rel_id} from {b:?} to {a:?}: {e}"),
                        );
                        continue;
                    }
                    let p = pending.get_or_insert_with(|| Pending {
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
            }
            t => return Err(Corrupt(format!("unknown record type {t}"))),
        }
        ordinal += 1;
    }
    if d.remaining() != 0 {
        return Err(Corrupt("bytes after the end record".into()));
    }
    Ok((next_seq, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{PropSpec, RelationType};

    /// A snapshot whose one relation this version refuses (an empty initiator id,
    /// accepted by no version but written here by hand) loads every other relation
    /// of the batch around it, and reports that one with its record's place.
    #[test]
    fn a_refused_relation_is_skipped_and_its_batch_loads() {
        let mut e = Enc::default();
        e.buf.extend_from_slice(MAGIC);
        e.u32(VERSION);
        e.u64(7);
        e.u8(1);
        e.relation_type(&RelationType::new(1, 1, 2).prop("Like", PropSpec::int().sum()));
        let target_at = (e.buf.len()) as u64;
        e.u8(3);
        e.u32(1);
        e.str("p");
        e.u32(3);
        for (b, like) in [("q1", 1), ("", 2), ("q3", 4)] {
            e.str(b);
            e.u8(1);
            e.u8(0);
            e.value(Value::Int(like));
        }
        e.u8(0);
        let sum = crate::xxh64(&e.buf);
        e.u64(sum);
        let engine = crate::Engine::load_snapshot_bytes(&e.buf).expect("loads");
        let skipped = engine.recovery_skipped();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!((skipped[0].offset, skipped[0].record), (target_at, 1));
        assert!(skipped[0].reason.contains("profile id"), "{}", skipped[0]);
        let counter = engine.get_counter(1, "p").expect("p");
        assert_eq!(counter.total(), 2);
        assert_eq!(
            counter.prop("Like").and_then(|p| p.sum()),
            Some(crate::Sum::Int(5))
        );
    }
}
