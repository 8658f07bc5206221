//! The exception classes: `RelcountError`, and under it one class per kind of engine
//! error, raised with the engine's message. A row of a batch refused raises its row's
//! kind with `.row` set; a storage failure raises `StorageError` with `.kind`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use relcount::{Error, ErrorKind, StorageKind};

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

/// The exception for an engine error: its kind's class, with the engine's message
/// (and `.row` for a refused row of a batch). Every kind is listed: a new one does not
/// compile until it has its class.
pub(crate) fn raise(py: Python<'_>, error: &Error) -> PyErr {
    let message = error.to_string();
    let err = match error.kind() {
        ErrorKind::UnknownRelation => UnknownRelation::new_err(message),
        ErrorKind::SchemaConflict => SchemaConflict::new_err(message),
        ErrorKind::InvalidSchema => InvalidSchema::new_err(message),
        ErrorKind::InvalidProfileId => InvalidProfileId::new_err(message),
        ErrorKind::ProfileNotFound => ProfileNotFound::new_err(message),
        ErrorKind::NoMatch => NoMatch::new_err(message),
        ErrorKind::Ambiguous => Ambiguous::new_err(message),
        ErrorKind::InvalidProfileData => InvalidProfileData::new_err(message),
        ErrorKind::RelationNotFound => RelationNotFound::new_err(message),
        ErrorKind::UnknownProperty => UnknownProperty::new_err(message),
        ErrorKind::DuplicateProperty => DuplicateProperty::new_err(message),
        ErrorKind::WrongType => WrongType::new_err(message),
        ErrorKind::NotFinite => NotFinite::new_err(message),
        ErrorKind::IntOverflow => IntOverflow::new_err(message),
        ErrorKind::FloatOverflow => FloatOverflow::new_err(message),
        ErrorKind::InvalidArgument => InvalidArgument::new_err(message),
        ErrorKind::LookupTooBroad => LookupTooBroad::new_err(message),
        ErrorKind::CapacityExceeded => CapacityExceeded::new_err(message),
        ErrorKind::Storage => {
            let err = StorageError::new_err(message);
            // A storage error is the call's own, never a row's.
            if let Error::Storage(e) = error {
                let _ = err.value(py).setattr("kind", storage_kind(e.kind()));
            }
            err
        }
    };
    if let Some(row) = error.row() {
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
