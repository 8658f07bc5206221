//! The one error type of the engine: what was wrong with a call, and what to fix.

use std::fmt;

use crate::value::PropKind;

/// Why a call was refused. A refused call changed nothing.
///
/// Each variant names what the caller should fix; the `Display` text is written for the
/// person reading a log or an API answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The relation type was never defined.
    UnknownRelation {
        /// The requested relation type.
        rel_id: u32,
    },
    /// `define` was called again for a relation type with a different schema.
    SchemaConflict {
        /// The relation type already defined.
        rel_id: u32,
    },
    /// A relation type definition is not valid.
    InvalidSchema {
        /// The relation type being defined.
        rel_id: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// A profile id is empty or longer than 64 bytes.
    InvalidProfileId {
        /// The length of the id given, in bytes.
        len: usize,
    },
    /// No profile with this id exists in the database.
    ProfileNotFound {
        /// The database searched.
        db_id: u32,
        /// The id searched for.
        profile_id: String,
    },
    /// No profile answers a lookup by email, phone or custom field.
    NoMatch {
        /// The database searched.
        db_id: u32,
        /// The lookup, as text.
        query: String,
    },
    /// Several profiles answer a lookup that must name one.
    Ambiguous {
        /// The database searched.
        db_id: u32,
        /// The lookup, as text.
        query: String,
    },
    /// A profile's data (email, phone, fields, subscriptions) is not valid.
    InvalidProfileData {
        /// What is wrong.
        reason: String,
    },
    /// Detach of a relation that does not exist.
    RelationNotFound {
        /// The relation type.
        rel_id: u32,
        /// The recipient (database A) profile id.
        profile_a: String,
        /// The initiator (database B) profile id.
        profile_b: String,
    },
    /// A weight names a property the relation type does not have.
    UnknownProperty {
        /// The relation type.
        rel_id: u32,
        /// The unknown name.
        name: String,
    },
    /// The same property is given twice in one call.
    DuplicateProperty {
        /// The repeated name.
        name: String,
    },
    /// A value's type does not match the property's type.
    WrongType {
        /// The property.
        property: String,
        /// The property's type.
        expected: PropKind,
        /// The type of the value given.
        got: &'static str,
    },
    /// A float value is NaN or infinite.
    NotFinite {
        /// The property.
        property: String,
    },
    /// A strengthen would take an int value out of the i64 range.
    IntOverflow {
        /// The property.
        property: String,
    },
    /// A float value would exceed 2^960 in magnitude (the bound that keeps sums exact).
    FloatOverflow {
        /// The property.
        property: String,
    },
    /// An argument is out of its documented range.
    InvalidArgument {
        /// What is wrong, and the allowed range.
        reason: String,
    },
    /// A row of a batch was refused (so was the whole batch: nothing changed).
    InRow {
        /// The row's index in the batch, from 0.
        row: usize,
        /// Why it was refused.
        error: Box<Error>,
    },
    /// The engine ran out of profile slots (2^32 - 1 live profiles).
    CapacityExceeded,
    /// Reading or writing the data directory failed, or a file in it is corrupted,
    /// truncated or not a relcount file. A write refused this way changed nothing.
    Storage {
        /// What failed, and where.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownRelation { rel_id } => write!(f, "relation {rel_id} is not defined"),
            Error::SchemaConflict { rel_id } => write!(
                f,
                "relation {rel_id} is already defined with a different schema"
            ),
            Error::InvalidSchema { rel_id, reason } => {
                write!(f, "invalid schema for relation {rel_id}: {reason}")
            }
            Error::InvalidProfileId { len } => write!(
                f,
                "profile id must be 1 to {} bytes long, got {len}",
                crate::limits::MAX_PROFILE_ID_LEN
            ),
            Error::ProfileNotFound { db_id, profile_id } => {
                write!(f, "profile {profile_id:?} not found in database {db_id}")
            }
            Error::NoMatch { db_id, query } => {
                write!(f, "no profile in database {db_id} has {query}")
            }
            Error::Ambiguous { db_id, query } => write!(
                f,
                "several profiles in database {db_id} have {query}; the matched field must be unique"
            ),
            Error::InvalidProfileData { reason } => f.write_str(reason),
            Error::RelationNotFound {
                rel_id,
                profile_a,
                profile_b,
            } => write!(
                f,
                "relation {rel_id} from {profile_b:?} to {profile_a:?} not found"
            ),
            Error::UnknownProperty { rel_id, name } => {
                write!(f, "relation {rel_id} has no property {name:?}")
            }
            Error::DuplicateProperty { name } => write!(f, "property {name:?} is given twice"),
            Error::WrongType {
                property,
                expected,
                got,
            } => write!(f, "property {property} is {expected}, got {got}"),
            Error::NotFinite { property } => {
                write!(f, "property {property} must be a finite number")
            }
            Error::IntOverflow { property } => {
                write!(f, "property {property} would leave the int64 range")
            }
            Error::FloatOverflow { property } => {
                write!(
                    f,
                    "property {property} must stay within +/-2^960 (about 9.7e288)"
                )
            }
            Error::InvalidArgument { reason } => f.write_str(reason),
            Error::InRow { row, error } => write!(f, "row {row}: {error}"),
            Error::CapacityExceeded => f.write_str("no profile slot left (2^32 - 1 profiles)"),
            Error::Storage { reason } => write!(f, "storage: {reason}"),
        }
    }
}

impl std::error::Error for Error {}
