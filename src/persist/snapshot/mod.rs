//! Snapshot files: `RELCSNAP`, version, the log sequence it covers up to, records
//! (relation types, profiles, targets with their relations), an end record, and the
//! XXH64 of everything before it.
//!
//! Frames of records, `[len u32][records]`, each about 1 MiB of whole records, so
//! neither a save nor a load holds the file in memory, whatever its size. Version 3
//! (written) names each profile once in a profile table and stores each recipient's
//! relations as columns; versions 2 (framed, relations by id) and 1 (one run of
//! records) still load. The bytes are laid out in `docs/format.md`.
//!
//! `write.rs` encodes a snapshot and writes it crash-safely; `read.rs` reads one back
//! a record at a time, pulled.

mod read;
#[cfg(test)]
mod tests;
mod write;

use crate::profile::FrozenProfile;
use crate::schema::RelationType;
use crate::store;

pub(crate) use read::{
    Item, LeftOut, ProfileRecord, Refused, SnapshotReader, TargetRecord, import_valid,
};
#[cfg(test)]
pub(crate) use write::encode_v2;
pub(crate) use write::{tmp_prefix, write};

const MAGIC: &[u8; 8] = b"RELCSNAP";
/// The version written.
const VERSION: u32 = 3;

/// What a record is: its first byte. A target record's body differs by version (2:
/// initiators by id, values by property; 3: columns, initiators by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    /// The end of the records.
    End = 0,
    /// A relation type.
    Define = 1,
    /// A profile, with or without its data.
    Profile = 2,
    /// Relations of one target.
    Target = 3,
}

impl Tag {
    fn of(byte: u8) -> Option<Tag> {
        Some(match byte {
            0 => Tag::End,
            1 => Tag::Define,
            2 => Tag::Profile,
            3 => Tag::Target,
            _ => return None,
        })
    }
}
/// A frame is closed once it holds this many bytes (of whole records).
const FRAME: usize = 1 << 20;
/// Largest frame read (a frame holds at least one record, and a profile's record may
/// pass `FRAME`); a longer length is corruption, not a reason to allocate.
const MAX_FRAME: usize = 64 << 20;
/// Relations per target record: a larger target is split over several.
const TARGET_CHUNK: usize = 4096;

/// The engine's state at one point in time: shared pieces collected under every
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
    /// Every target's relations at the point (its block for its schema and
    /// recipient; the counters are counted again from the relations as they load).
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
