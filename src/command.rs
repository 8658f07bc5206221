//! One vocabulary for a change: what the write log stores, and what replaying a log
//! and loading a snapshot execute, through one [`Engine::execute`]. Profiles are named
//! by id (lookups by email, phone or field are resolved before a change is logged), so
//! executing a command never depends on the indexes.
//!
//! [`Engine::execute`]: crate::engine::Engine

use crate::profile::data::ProfileData;
use crate::schema::RelationType;
use crate::value::Value;
use crate::write::Write;

/// One accepted change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Define a relation type.
    Define(RelationType),
    /// Create or replace a profile's data (empty data: an id-only profile).
    Import {
        db: u32,
        id: String,
        data: ProfileData,
    },
    /// Create or replace several profiles' data, as one change (`import_profiles`).
    Profiles(Vec<(u32, String, ProfileData)>),
    /// Attach, strengthen, edit or detach one relation.
    Write(Write),
    /// Writes applied as one change, in order (see `Engine::apply`).
    Batch(Vec<Write>),
    /// A bulk import of attaches for one relation type (see `Engine::import_relations`):
    /// `names` are the property names the rows' weights index.
    Bulk {
        rel_id: u32,
        names: Vec<String>,
        rows: Vec<BulkRow>,
    },
    /// Delete a profile and every relation it takes part in.
    Delete { db: u32, id: String },
}

/// One attach of a [`Command::Bulk`]: recipient id, initiator id, and the weights as
/// `(index into the command's names, value)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BulkRow {
    pub(crate) a: String,
    pub(crate) b: String,
    pub(crate) weights: Vec<(u8, Value)>,
}
