//! Snapshot files: `RELCSNAP`, version, the log sequence it covers up to, records
//! (relation types, profiles, targets with their relations), an end record, and the
//! XXH64 of everything before it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::codec::{Corrupt, Dec, Enc};
use super::{storage, sync_dir};
use crate::command::Command;
use crate::directory::{FrozenProfile, Profile};
use crate::error::Error;
use crate::record::WriteKind;
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

/// Where a snapshot's commands go as it loads: `apply` executes one, `skip` hears of
/// one that `apply` refused (its byte offset, ordinal and why).
pub(crate) struct Sink<'a> {
    pub(crate) apply: &'a mut dyn FnMut(Command) -> Result<(), Error>,
    pub(crate) skip: &'a mut dyn FnMut(u64, u64, String),
}

/// Loads the snapshot at `path` into `sink` (an empty engine, without a log);
/// returns the first log sequence number it does not cover.
pub(crate) fn load(path: &Path, sink: Sink<'_>) -> Result<(u64, SnapshotStats), Error> {
    let bytes = std::fs::read(path).map_err(|e| storage(path.display(), e))?;
    load_bytes(&bytes, sink).map_err(|c| corrupt(path, c))
}

/// Checks the header and checksum, then applies every record as a command. A record
/// the engine refuses (one an earlier version accepted and this one does not) is
/// reported to `skip` and the load goes on: a snapshot that decodes always loads.
pub(crate) fn load_bytes(bytes: &[u8], sink: Sink<'_>) -> Result<(u64, SnapshotStats), Corrupt> {
    let Sink { apply, skip } = sink;
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
    // Offsets are of the file: the body starts after the magic.
    let offset = |d: &Dec<'_>| (MAGIC.len() + d.pos()) as u64;
    loop {
        let at = offset(&d);
        let mut refused = |what: &str, e: Error| skip(at, ordinal, format!("{what}: {e}"));
        match d.u8()? {
            0 => break,
            1 => {
                let def = d.relation_type()?;
                let (rel_id, props) = (
                    def.rel_id(),
                    def.props().map(|(n, _)| n.to_owned()).collect(),
                );
                match apply(Command::Define(def)) {
                    Ok(()) => {
                        names.insert(rel_id, props);
                        stats.relation_types += 1;
                    }
                    Err(e) => refused("relation type", e),
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
                let import = Command::Import {
                    db,
                    id: id.clone(),
                    data: data.unwrap_or_default(),
                };
                match apply(import) {
                    Ok(()) => stats.profiles += 1,
                    Err(e) => refused(&format!("profile {id:?} of database {db}"), e),
                }
            }
            3 => {
                let rel_id = d.u32()?;
                let a = d.str()?;
                let names = names.get(&rel_id);
                let n = d.count(3)?;
                for _ in 0..n {
                    let b = d.str()?;
                    let k = d.u8()?;
                    let mut weights: Vec<(String, Value)> = Vec::with_capacity(usize::from(k));
                    for _ in 0..k {
                        let i = usize::from(d.u8()?);
                        let value = d.value()?;
                        if let Some(names) = names {
                            let name = names
                                .get(i)
                                .ok_or_else(|| Corrupt(format!("property index {i}")))?;
                            weights.push((name.clone(), value));
                        }
                    }
                    let done = match names {
                        Some(_) => apply(Command::Write {
                            kind: WriteKind::Attach,
                            rel_id,
                            a: a.clone(),
                            b: b.clone(),
                            weights,
                        }),
                        None => Err(Error::UnknownRelation { rel_id }),
                    };
                    match done {
                        Ok(()) => stats.relations += 1,
                        Err(e) => refused(&format!("relation {rel_id} from {b:?} to {a:?}"), e),
                    }
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
