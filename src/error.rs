//! The one error type of the engine: what was wrong with a call, and what to fix; and
//! [`StorageError`], what the data directory did, keeping the `io::Error` behind it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
        /// The argument's name, as the call's docs spell it (`"limit"`).
        name: &'static str,
        /// What is wrong, and the allowed range.
        reason: String,
    },
    /// A custom lookup on tags did not settle within
    /// [`MAX_LOOKUP_CANDIDATES`](crate::limits::MAX_LOOKUP_CANDIDATES) profiles: every
    /// tag it gives is held by more. Name the profile by a rarer tag or another field.
    LookupTooBroad {
        /// The database searched.
        db_id: u32,
        /// The lookup, as text.
        query: String,
    },
    /// A row of a batch was refused (so was the whole batch: nothing changed).
    InRow {
        /// The row's index in the batch, from 0.
        row: usize,
        /// Why it was refused.
        error: Box<Error>,
    },
    /// The engine ran out of profile slots (2^31 profiles, live or being deleted).
    CapacityExceeded,
    /// Reading or writing the data directory failed, or a file in it is corrupted,
    /// truncated or not a relcount file. A write refused this way changed nothing. The
    /// [`StorageError`] says which ([`StorageError::kind`]), where, and keeps the
    /// `io::Error` (its [`source`](std::error::Error::source)).
    Storage(StorageError),
}

/// What kind of error an [`Error`] is, without its details: what a host maps to its
/// own codes or exception classes (the JSON API, the Python and C bindings do). A
/// refused row of a batch ([`Error::InRow`]) is of its error's kind.
///
/// Unlike [`Error`], this enum is exhaustive, so a host's `match` needs no catch-all
/// and a kind added in a later version does not compile until it is mapped: adding
/// one is a breaking change.
///
/// ```
/// use relcount::{Engine, ErrorKind};
///
/// let engine = Engine::new();
/// let e = engine.get_counter(3, "nobody").unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::UnknownRelation);
/// assert_eq!(e.kind().name(), "UnknownRelation");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`Error::UnknownRelation`].
    UnknownRelation,
    /// [`Error::SchemaConflict`].
    SchemaConflict,
    /// [`Error::InvalidSchema`].
    InvalidSchema,
    /// [`Error::InvalidProfileId`].
    InvalidProfileId,
    /// [`Error::ProfileNotFound`].
    ProfileNotFound,
    /// [`Error::NoMatch`].
    NoMatch,
    /// [`Error::Ambiguous`].
    Ambiguous,
    /// [`Error::InvalidProfileData`].
    InvalidProfileData,
    /// [`Error::RelationNotFound`].
    RelationNotFound,
    /// [`Error::UnknownProperty`].
    UnknownProperty,
    /// [`Error::DuplicateProperty`].
    DuplicateProperty,
    /// [`Error::WrongType`].
    WrongType,
    /// [`Error::NotFinite`].
    NotFinite,
    /// [`Error::IntOverflow`].
    IntOverflow,
    /// [`Error::FloatOverflow`].
    FloatOverflow,
    /// [`Error::InvalidArgument`].
    InvalidArgument,
    /// [`Error::LookupTooBroad`].
    LookupTooBroad,
    /// [`Error::CapacityExceeded`].
    CapacityExceeded,
    /// [`Error::Storage`].
    Storage,
}

impl ErrorKind {
    /// Every kind, in the order of [`Error`]'s variants.
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::UnknownRelation,
        ErrorKind::SchemaConflict,
        ErrorKind::InvalidSchema,
        ErrorKind::InvalidProfileId,
        ErrorKind::ProfileNotFound,
        ErrorKind::NoMatch,
        ErrorKind::Ambiguous,
        ErrorKind::InvalidProfileData,
        ErrorKind::RelationNotFound,
        ErrorKind::UnknownProperty,
        ErrorKind::DuplicateProperty,
        ErrorKind::WrongType,
        ErrorKind::NotFinite,
        ErrorKind::IntOverflow,
        ErrorKind::FloatOverflow,
        ErrorKind::InvalidArgument,
        ErrorKind::LookupTooBroad,
        ErrorKind::CapacityExceeded,
        ErrorKind::Storage,
    ];

    /// The kind's name, as the variant of [`Error`] is named (`"WrongType"`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::UnknownRelation => "UnknownRelation",
            ErrorKind::SchemaConflict => "SchemaConflict",
            ErrorKind::InvalidSchema => "InvalidSchema",
            ErrorKind::InvalidProfileId => "InvalidProfileId",
            ErrorKind::ProfileNotFound => "ProfileNotFound",
            ErrorKind::NoMatch => "NoMatch",
            ErrorKind::Ambiguous => "Ambiguous",
            ErrorKind::InvalidProfileData => "InvalidProfileData",
            ErrorKind::RelationNotFound => "RelationNotFound",
            ErrorKind::UnknownProperty => "UnknownProperty",
            ErrorKind::DuplicateProperty => "DuplicateProperty",
            ErrorKind::WrongType => "WrongType",
            ErrorKind::NotFinite => "NotFinite",
            ErrorKind::IntOverflow => "IntOverflow",
            ErrorKind::FloatOverflow => "FloatOverflow",
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::LookupTooBroad => "LookupTooBroad",
            ErrorKind::CapacityExceeded => "CapacityExceeded",
            ErrorKind::Storage => "Storage",
        }
    }
}

impl Error {
    /// What kind of error this is (a refused row's: its error's kind).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InRow { error, .. } => error.kind(),
            Error::UnknownRelation { .. } => ErrorKind::UnknownRelation,
            Error::SchemaConflict { .. } => ErrorKind::SchemaConflict,
            Error::InvalidSchema { .. } => ErrorKind::InvalidSchema,
            Error::InvalidProfileId { .. } => ErrorKind::InvalidProfileId,
            Error::ProfileNotFound { .. } => ErrorKind::ProfileNotFound,
            Error::NoMatch { .. } => ErrorKind::NoMatch,
            Error::Ambiguous { .. } => ErrorKind::Ambiguous,
            Error::InvalidProfileData { .. } => ErrorKind::InvalidProfileData,
            Error::RelationNotFound { .. } => ErrorKind::RelationNotFound,
            Error::UnknownProperty { .. } => ErrorKind::UnknownProperty,
            Error::DuplicateProperty { .. } => ErrorKind::DuplicateProperty,
            Error::WrongType { .. } => ErrorKind::WrongType,
            Error::NotFinite { .. } => ErrorKind::NotFinite,
            Error::IntOverflow { .. } => ErrorKind::IntOverflow,
            Error::FloatOverflow { .. } => ErrorKind::FloatOverflow,
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::LookupTooBroad { .. } => ErrorKind::LookupTooBroad,
            Error::CapacityExceeded => ErrorKind::CapacityExceeded,
            Error::Storage(_) => ErrorKind::Storage,
        }
    }

    /// The index of the refused row, for an error of a batch ([`Error::InRow`]).
    #[must_use]
    pub fn row(&self) -> Option<usize> {
        match self {
            Error::InRow { row, .. } => Some(*row),
            _ => None,
        }
    }
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
            Error::InvalidArgument { reason, .. } => f.write_str(reason),
            Error::LookupTooBroad { db_id, query } => write!(
                f,
                "lookup too broad: {query} in database {db_id} did not settle within {} profiles (every tag given is held by more); name the profile by a rarer tag or another field",
                crate::limits::MAX_LOOKUP_CANDIDATES
            ),
            Error::InRow { row, error } => write!(f, "row {row}: {error}"),
            Error::CapacityExceeded => f.write_str("no profile slot left (2^31 profiles)"),
            Error::Storage(e) => write!(f, "storage: {e}"),
        }
    }
}

impl std::error::Error for Error {
    /// [`Error::Storage`]: its [`StorageError`]; [`Error::InRow`]: the row's error.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Storage(e) => Some(e),
            Error::InRow { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(e)
    }
}

/// What kind of failure a [`StorageError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageKind {
    /// An operating-system call failed (open, read, write, fsync, rename, a thread
    /// start): [`StorageError::io_error`] is the `io::Error`.
    Io,
    /// A file is corrupted, truncated, missing from its sequence, or not a relcount
    /// file: the directory needs an operator.
    Corrupt,
    /// Another engine holds the data directory.
    Locked,
    /// The write log failed earlier (a write or fsync it could not take back), so it
    /// takes no write until the engine is reopened; or this write could not be made
    /// durable and was taken back.
    NotDurable,
    /// The call cannot be done with this engine or these arguments: a write whose log
    /// record would pass the log's size limit, `compact` without a data directory, a
    /// snapshot saved over the directory's own.
    Refused,
    /// An invariant of the engine does not hold (a bug): please report it.
    Internal,
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageKind::Io => "i/o error",
            StorageKind::Corrupt => "corrupted data",
            StorageKind::Locked => "directory in use",
            StorageKind::NotDurable => "not durable",
            StorageKind::Refused => "refused",
            StorageKind::Internal => "internal error",
        })
    }
}

/// A failure of the data directory: its [`kind`](Self::kind), the file or directory
/// it concerns, what happened, and the `io::Error` behind it, if any (kept behind an
/// `Arc`, as jiff does, so the error stays `Clone`; it is the error's
/// [`source`](std::error::Error::source)).
///
/// # Examples
///
/// ```
/// use relcount::{Engine, Error, StorageKind, SyncPolicy};
///
/// let dir = std::env::temp_dir().join(format!("relcount-doc-storage-{}", std::process::id()));
/// std::fs::write(&dir, b"a file, not a directory").unwrap();
/// match Engine::builder().open(&dir, SyncPolicy::Always) {
///     Err(Error::Storage(e)) => {
///         assert_eq!(e.kind(), StorageKind::Io);
///         assert!(e.io_error().is_some());
///         assert!(std::error::Error::source(&e).is_some());
///     }
///     other => panic!("expected a storage error, got {other:?}"),
/// }
/// std::fs::remove_file(&dir).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct StorageError {
    kind: StorageKind,
    path: Option<PathBuf>,
    detail: String,
    io: Option<Arc<io::Error>>,
}

impl StorageError {
    /// An operating-system call on `path` failed with `e`.
    pub(crate) fn io(path: impl Into<PathBuf>, e: io::Error) -> Self {
        StorageError {
            kind: StorageKind::Io,
            path: Some(path.into()),
            detail: String::new(),
            io: Some(Arc::new(e)),
        }
    }

    /// An operating-system call not on one file (`what`: starting a thread) failed.
    pub(crate) fn io_doing(what: &str, e: io::Error) -> Self {
        StorageError {
            kind: StorageKind::Io,
            path: None,
            detail: what.into(),
            io: Some(Arc::new(e)),
        }
    }

    /// A failure of `kind` about `path`, described by `detail`.
    pub(crate) fn new(kind: StorageKind, path: Option<&Path>, detail: impl Into<String>) -> Self {
        StorageError {
            kind,
            path: path.map(Path::to_path_buf),
            detail: detail.into(),
            io: None,
        }
    }

    /// What kind of failure it is.
    #[must_use]
    pub fn kind(&self) -> StorageKind {
        self.kind
    }

    /// The file or directory it concerns, when it concerns one.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What happened, in words (empty for a plain I/O failure: the `io::Error` says it).
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The operating system's error, for [`StorageKind::Io`].
    #[must_use]
    pub fn io_error(&self) -> Option<&io::Error> {
        self.io.as_deref()
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if self.kind == StorageKind::Internal {
            // A bug, not the disk: the log line says so.
            write!(f, "{}", self.kind)?;
            sep = ": ";
        }
        if let Some(path) = &self.path {
            write!(f, "{}", path.display())?;
            sep = ": ";
        }
        if !self.detail.is_empty() {
            write!(f, "{sep}{}", self.detail)?;
            sep = ": ";
        }
        if let Some(e) = &self.io {
            write!(f, "{sep}{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io.as_deref().map(|e| e as _)
    }
}

/// An operating-system call on `path` failed: the engine's error for it.
pub(crate) fn io_err(path: impl AsRef<Path>, e: io::Error) -> Error {
    Error::Storage(StorageError::io(path.as_ref(), e))
}

/// A failure of `kind` about `path`, described by `detail`: the engine's error for it.
pub(crate) fn fail(kind: StorageKind, path: Option<&Path>, detail: impl Into<String>) -> Error {
    Error::Storage(StorageError::new(kind, path, detail))
}

/// Equal when of the same kind, about the same path, with the same detail and the
/// same I/O error kind and text (an `io::Error` has no equality of its own).
impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.path == other.path
            && self.detail == other.detail
            && match (&self.io, &other.io) {
                (None, None) => true,
                (Some(a), Some(b)) => a.kind() == b.kind() && a.to_string() == b.to_string(),
                _ => false,
            }
    }
}

impl Eq for StorageError {}
