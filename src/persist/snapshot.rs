//! Snapshot files: `RELCSNAP`, version, the log sequence it covers up to, records
//! (relation types, profiles, targets with their relations), an end record, and the
//! XXH64 of everything before it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::codec::{Corrupt, Dec, Enc};
use super::{storage, sync_dir};
use crate::accum::counter::View;
use crate::engine::Engine;
use crate::error::Error;
use crate::profile_data::ProfileData;
use crate::schema::{RelationType, Value};

const MAGIC: &[u8; 8] = b"RELCSNAP";
const VERSION: u32 = 1;

/// The engine's state at one point in time, taken under every shard lock.
pub(crate) struct Frozen {
    pub(crate) schemas: Vec<RelationType>,
    pub(crate) profiles: Vec<(u32, String, Option<ProfileData>)>,
    pub(crate) targets: Vec<Arc<View>>,
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
    for (db, id, data) in &f.profiles {
        e.u8(2);
        e.u32(*db);
        e.str(id);
        match data {
            Some(d) => {
                e.u8(1);
                e.profile_data(d);
            }
            None => e.u8(0),
        }
        stats.profiles += 1;
    }
    for view in &f.targets {
        let schema = &view.schema;
        // A profile whose delete is under way is gone from the snapshot, and so are
        // its relations: the state is the one after that delete.
        let rels: Vec<_> = view.rels.iter().filter(|r| !r.b.is_deleted()).collect();
        if view.profile.is_deleted() || rels.is_empty() {
            continue;
        }
        e.u8(3);
        e.u32(schema.rel_id());
        e.str(&view.profile.id.as_str());
        e.u32(rels.len() as u32);
        for rel in rels {
            e.str(&rel.b.id.as_str());
            let values: Vec<(u8, Value)> = (0..schema.props.len())
                .filter_map(|i| Some((i as u8, rel.rec.get(schema, i)?)))
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

/// Writes `frozen` to `path` crash-safely: a temporary file, fsync, rename, fsync of
/// the directory.
pub(crate) fn write(frozen: &Frozen, path: &Path) -> Result<SnapshotStats, Error> {
    let (bytes, stats) = encode(frozen);
    let tmp = path.with_extension("bin.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| storage(tmp.display(), e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| storage(tmp.display(), e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| storage(path.display(), e))?;
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

/// Loads the snapshot at `path` into `engine` (empty, without a log); returns the
/// first log sequence number it does not cover.
pub(crate) fn load(engine: &Engine, path: &Path) -> Result<(u64, SnapshotStats), Error> {
    let bytes = std::fs::read(path).map_err(|e| storage(path.display(), e))?;
    load_bytes(engine, &bytes).map_err(|e| match e {
        Loaded::Corrupt(c) => corrupt(path, c),
        Loaded::Engine(e) => Error::Storage {
            reason: format!("{}: snapshot refused by the engine: {e}", path.display()),
        },
    })
}

pub(crate) enum Loaded {
    Corrupt(Corrupt),
    Engine(Error),
}

impl From<Corrupt> for Loaded {
    fn from(c: Corrupt) -> Self {
        Loaded::Corrupt(c)
    }
}

impl From<Error> for Loaded {
    fn from(e: Error) -> Self {
        Loaded::Engine(e)
    }
}

/// Checks the header and checksum, then applies every record.
pub(crate) fn load_bytes(engine: &Engine, bytes: &[u8]) -> Result<(u64, SnapshotStats), Loaded> {
    let header = MAGIC.len() + 4 + 8;
    if bytes.len() < header + 1 + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Corrupt("not a relcount snapshot".into()).into());
    }
    let (body, footer) = bytes.split_at(bytes.len() - 8);
    let mut f = Dec::new(footer);
    if f.u64()? != crate::xxh64(body) {
        return Err(Corrupt("checksum mismatch".into()).into());
    }
    let mut d = Dec::new(&body[MAGIC.len()..]);
    let version = d.u32()?;
    if version != VERSION {
        return Err(Corrupt(format!("version {version}, this build reads {VERSION}")).into());
    }
    let next_seq = d.u64()?;
    let mut stats = SnapshotStats {
        bytes: bytes.len() as u64,
        ..SnapshotStats::default()
    };
    loop {
        match d.u8()? {
            0 => break,
            1 => {
                engine.define(d.relation_type()?)?;
                stats.relation_types += 1;
            }
            2 => {
                let db = d.u32()?;
                let id = d.str()?;
                let data = match d.u8()? {
                    0 => None,
                    1 => Some(d.profile_data()?),
                    t => return Err(Corrupt(format!("bad profile tag {t}")).into()),
                };
                engine.restore_profile(db, &id, data)?;
                stats.profiles += 1;
            }
            3 => {
                let rel_id = d.u32()?;
                let a = d.str()?;
                let names: Vec<String> = engine
                    .relation_type(rel_id)
                    .ok_or(Error::UnknownRelation { rel_id })?
                    .props()
                    .map(|(n, _)| n.to_owned())
                    .collect();
                let n = d.count(3)?;
                for _ in 0..n {
                    let b = d.str()?;
                    let k = d.u8()?;
                    let mut weights: Vec<(&str, Value)> = Vec::with_capacity(usize::from(k));
                    for _ in 0..k {
                        let i = usize::from(d.u8()?);
                        let name = names
                            .get(i)
                            .ok_or_else(|| Corrupt(format!("property index {i}")))?;
                        weights.push((name.as_str(), d.value()?));
                    }
                    engine.attach(rel_id, a.as_str(), b.as_str(), &weights)?;
                    stats.relations += 1;
                }
            }
            t => return Err(Corrupt(format!("unknown record type {t}")).into()),
        }
    }
    if d.remaining() != 0 {
        return Err(Corrupt("bytes after the end record".into()).into());
    }
    Ok((next_seq, stats))
}
