//! The exception classes: `RelcountError`, and under it one class per kind of engine
//! error, raised with the engine's message. A row of a batch refused raises its row's
//! kind with `.row` set; a storage failure raises `StorageError` with `.kind`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use relcount::{Error, StorageKind};

create_exception!(
    relcount,
    RelcountError,
    PyException,
    "Any error of relcount; a refused call changed nothing."
);
create_exception!(
    relcount,
    UnknownRelation,
    RelcountError,
    "The relation type was never defined."
);
create_exception!(
    relcount,
    SchemaConflict,
    RelcountError,
    "The relation type is already defined with another schema."
);
create_exception!(
    relcount,
    InvalidSchema,
    RelcountError,
    "A relation type definition is not valid."
);
create_exception!(
    relcount,
    InvalidProfileId,
    RelcountError,
    "A profile id is empty or longer than 64 bytes."
);
create_exception!(
    relcount,
    ProfileNotFound,
    RelcountError,
    "No profile with this id exists in the database."
);
create_exception!(
    relcount,
    NoMatch,
    RelcountError,
    "No profile answers a lookup by email, phone or custom field."
);
create_exception!(
    relcount,
    Ambiguous,
    RelcountError,
    "Several profiles answer a lookup that must name one."
);
create_exception!(
    relcount,
    InvalidProfileData,
    RelcountError,
    "A profile's data (email, phone, fields, subscriptions) is not valid."
);
create_exception!(
    relcount,
    RelationNotFound,
    RelcountError,
    "Detach of a relation that does not exist."
);
create_exception!(
    relcount,
    UnknownProperty,
    RelcountError,
    "A weight names a property the relation type does not have."
);
create_exception!(
    relcount,
    DuplicateProperty,
    RelcountError,
    "The same property is given twice in one call."
);
create_exception!(
    relcount,
    WrongType,
    RelcountError,
    "A value's type does not match the property's type."
);
create_exception!(
    relcount,
    NotFinite,
    RelcountError,
    "A float value is NaN or infinite."
);
create_exception!(
    relcount,
    IntOverflow,
    RelcountError,
    "A strengthen would take an int value out of the int64 range."
);
create_exception!(
    relcount,
    FloatOverflow,
    RelcountError,
    "A float value would exceed 2^960 in magnitude."
);
create_exception!(
    relcount,
    InvalidArgument,
    RelcountError,
    "An argument is out of its documented range or shape."
);
create_exception!(
    relcount,
    LookupTooBroad,
    RelcountError,
    "A custom lookup on tags did not settle within 10,000 profiles."
);
create_exception!(
    relcount,
    CapacityExceeded,
    RelcountError,
    "The engine ran out of profile slots."
);
create_exception!(
    relcount,
    StorageError,
    RelcountError,
    "The data directory failed, is corrupted or is in use; `.kind` says which."
);

/// Adds the classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // `.row` reads None on any error but a refused batch row's (which sets its own).
    py.get_type::<RelcountError>().setattr("row", py.None())?;
    m.add("RelcountError", py.get_type::<RelcountError>())?;
    m.add("UnknownRelation", py.get_type::<UnknownRelation>())?;
    m.add("SchemaConflict", py.get_type::<SchemaConflict>())?;
    m.add("InvalidSchema", py.get_type::<InvalidSchema>())?;
    m.add("InvalidProfileId", py.get_type::<InvalidProfileId>())?;
    m.add("ProfileNotFound", py.get_type::<ProfileNotFound>())?;
    m.add("NoMatch", py.get_type::<NoMatch>())?;
    m.add("Ambiguous", py.get_type::<Ambiguous>())?;
    m.add("InvalidProfileData", py.get_type::<InvalidProfileData>())?;
    m.add("RelationNotFound", py.get_type::<RelationNotFound>())?;
    m.add("UnknownProperty", py.get_type::<UnknownProperty>())?;
    m.add("DuplicateProperty", py.get_type::<DuplicateProperty>())?;
    m.add("WrongType", py.get_type::<WrongType>())?;
    m.add("NotFinite", py.get_type::<NotFinite>())?;
    m.add("IntOverflow", py.get_type::<IntOverflow>())?;
    m.add("FloatOverflow", py.get_type::<FloatOverflow>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("LookupTooBroad", py.get_type::<LookupTooBroad>())?;
    m.add("CapacityExceeded", py.get_type::<CapacityExceeded>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    Ok(())
}

/// The exception for an engine error: its kind's class, with the engine's message.
pub(crate) fn raise(py: Python<'_>, error: &Error) -> PyErr {
    let message = error.to_string();
    let (inner, row) = match error {
        Error::InRow { row, error } => (&**error, Some(*row)),
        other => (other, None),
    };
    let err = match inner {
        Error::UnknownRelation { .. } => UnknownRelation::new_err(message),
        Error::SchemaConflict { .. } => SchemaConflict::new_err(message),
        Error::InvalidSchema { .. } => InvalidSchema::new_err(message),
        Error::InvalidProfileId { .. } => InvalidProfileId::new_err(message),
        Error::ProfileNotFound { .. } => ProfileNotFound::new_err(message),
        Error::NoMatch { .. } => NoMatch::new_err(message),
        Error::Ambiguous { .. } => Ambiguous::new_err(message),
        Error::InvalidProfileData { .. } => InvalidProfileData::new_err(message),
        Error::RelationNotFound { .. } => RelationNotFound::new_err(message),
        Error::UnknownProperty { .. } => UnknownProperty::new_err(message),
        Error::DuplicateProperty { .. } => DuplicateProperty::new_err(message),
        Error::WrongType { .. } => WrongType::new_err(message),
        Error::NotFinite { .. } => NotFinite::new_err(message),
        Error::IntOverflow { .. } => IntOverflow::new_err(message),
        Error::FloatOverflow { .. } => FloatOverflow::new_err(message),
        Error::InvalidArgument { .. } => InvalidArgument::new_err(message),
        Error::LookupTooBroad { .. } => LookupTooBroad::new_err(message),
        Error::CapacityExceeded => CapacityExceeded::new_err(message),
        Error::Storage(e) => {
            let err = StorageError::new_err(message);
            let _ = err.value(py).setattr("kind", storage_kind(e.kind()));
            err
        }
        // `Error` is non-exhaustive: a kind added later is still a RelcountError.
        _ => RelcountError::new_err(message),
    };
    if let Some(row) = row {
        let _ = err.value(py).setattr("row", row);
    }
    err
}

/// `StorageError.kind`: a short lowercase name.
fn storage_kind(kind: StorageKind) -> &'static str {
    match kind {
        StorageKind::Io => "io",
        StorageKind::Corrupt => "corrupt",
        StorageKind::Locked => "locked",
        StorageKind::NotDurable => "not_durable",
        StorageKind::Refused => "refused",
        StorageKind::Internal => "internal",
        _ => "other",
    }
}

/// `InvalidArgument` with a message of the binding's own (a shape the engine never
/// sees, such as a profile dict with no known key).
pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    InvalidArgument::new_err(message.into())
}
