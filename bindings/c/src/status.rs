//! What a call answers: an [`RcStatus`], and the message of the thread's last error
//! ([`rc_last_error`]). [`run`] is the one way a call's body runs: under
//! `catch_unwind`, its error (or panic) turned into a status and a message.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use relcount::{Error, ErrorKind};

/// A call's outcome: `RC_STATUS_OK` (0), or the kind of error (then `rc_last_error`
/// says what). The kinds are the engine's errors, then the ABI's own.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcStatus {
    /// Success.
    Ok = 0,
    /// The relation type was never defined.
    UnknownRelation = 1,
    /// The relation type is already defined with another schema.
    SchemaConflict = 2,
    /// A relation type definition is not valid.
    InvalidSchema = 3,
    /// A profile id is empty or longer than 64 bytes.
    InvalidProfileId = 4,
    /// No profile with this id exists in the database.
    ProfileNotFound = 5,
    /// No profile answers a lookup.
    NoMatch = 6,
    /// Several profiles answer a lookup that must name one.
    Ambiguous = 7,
    /// A profile's data is not valid.
    InvalidProfileData = 8,
    /// Detach of a relation that does not exist.
    RelationNotFound = 9,
    /// A weight names a property the relation type does not have.
    UnknownProperty = 10,
    /// The same property is given twice in one call.
    DuplicateProperty = 11,
    /// A value's type does not match the property's type.
    WrongType = 12,
    /// A float value is NaN or infinite.
    NotFinite = 13,
    /// A strengthen would take an int out of the int64 range.
    IntOverflow = 14,
    /// A float value would exceed 2^960 in magnitude.
    FloatOverflow = 15,
    /// An argument is out of its documented range.
    InvalidArgument = 16,
    /// A custom lookup on tags did not settle.
    LookupTooBroad = 17,
    /// The engine ran out of profile slots.
    CapacityExceeded = 18,
    /// The data directory failed, is corrupted or is in use.
    Storage = 19,
    /// NULL where a pointer is required.
    NullArgument = 20,
    /// A string is not UTF-8.
    InvalidUtf8 = 21,
    /// A panic (a bug in relcount) was caught at the boundary; please report it.
    Panic = 22,
    /// Not returned: every engine error has its own code (`ErrorKind` is exhaustive).
    /// Kept so the codes after it never change.
    Other = 23,
}

/// A failed call: its status and message.
pub(crate) struct Failure {
    status: RcStatus,
    message: String,
}

impl Failure {
    /// The failure of row `row` of a batch: its message says which row, as the
    /// engine's own refusal of a row does.
    pub(crate) fn in_row(self, row: usize) -> Self {
        Failure {
            status: self.status,
            message: format!("row {row}: {}", self.message),
        }
    }
}

impl From<Error> for Failure {
    /// Every kind is listed: a new one does not compile until it has its status.
    fn from(e: Error) -> Self {
        let status = match e.kind() {
            ErrorKind::UnknownRelation => RcStatus::UnknownRelation,
            ErrorKind::SchemaConflict => RcStatus::SchemaConflict,
            ErrorKind::InvalidSchema => RcStatus::InvalidSchema,
            ErrorKind::InvalidProfileId => RcStatus::InvalidProfileId,
            ErrorKind::ProfileNotFound => RcStatus::ProfileNotFound,
            ErrorKind::NoMatch => RcStatus::NoMatch,
            ErrorKind::Ambiguous => RcStatus::Ambiguous,
            ErrorKind::InvalidProfileData => RcStatus::InvalidProfileData,
            ErrorKind::RelationNotFound => RcStatus::RelationNotFound,
            ErrorKind::UnknownProperty => RcStatus::UnknownProperty,
            ErrorKind::DuplicateProperty => RcStatus::DuplicateProperty,
            ErrorKind::WrongType => RcStatus::WrongType,
            ErrorKind::NotFinite => RcStatus::NotFinite,
            ErrorKind::IntOverflow => RcStatus::IntOverflow,
            ErrorKind::FloatOverflow => RcStatus::FloatOverflow,
            ErrorKind::InvalidArgument => RcStatus::InvalidArgument,
            ErrorKind::LookupTooBroad => RcStatus::LookupTooBroad,
            ErrorKind::CapacityExceeded => RcStatus::CapacityExceeded,
            ErrorKind::Storage => RcStatus::Storage,
        };
        Failure {
            status,
            message: e.to_string(),
        }
    }
}

impl Failure {
    /// A failure of the ABI's own (a NULL pointer, a string that is not UTF-8).
    pub(crate) fn new(status: RcStatus, message: String) -> Self {
        Failure { status, message }
    }
}

thread_local! {
    /// The message of this thread's last call: empty after a success.
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

/// Records the message of this thread's last call. During the thread's teardown
/// (an `atexit` handler, a C++ static destructor, a pthread key destructor) its
/// thread-locals may be gone: the message is then dropped, never a panic (which
/// could not unwind out of an `extern "C"` function, and would abort the host).
fn set_last(message: &str) {
    // A message may quote an id holding a NUL (ids are any UTF-8, and a host other
    // than C may have written one): the text stops at it.
    let text = message.split('\0').next().unwrap_or_default();
    let c = CString::new(text).unwrap_or_default();
    let _ = LAST.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = c;
        }
    });
}

/// Empties the message after a success, allocating nothing when it is already empty
/// (the common case: a success after a success).
fn clear_last() {
    let _ = LAST.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut()
            && !last.as_bytes().is_empty()
        {
            *last = CString::default();
        }
    });
}

/// Runs a call's body: `Ok` is `RC_STATUS_OK`; an error or a panic is its status,
/// with its message kept for `rc_last_error`.
pub(crate) fn run(body: impl FnOnce() -> Result<(), Failure>) -> RcStatus {
    let outcome = catch_unwind(AssertUnwindSafe(body));
    match outcome {
        Ok(Ok(())) => {
            clear_last();
            RcStatus::Ok
        }
        Ok(Err(failure)) => {
            set_last(&failure.message);
            failure.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            set_last(&format!("internal error (please report it): {what}"));
            RcStatus::Panic
        }
    }
}

/// The message of this thread's last call: why it failed, or `""` after a success.
/// The string is the library's: valid until the next call on this thread; copy it to
/// keep it. During the thread's teardown, when the message is gone, a fixed text
/// saying so.
#[unsafe(no_mangle)]
pub extern "C" fn rc_last_error() -> *const c_char {
    LAST.try_with(|last| last.try_borrow().map(|m| m.as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(GONE.as_ptr())
}

/// What `rc_last_error` answers once the thread's message is gone.
static GONE: &std::ffi::CStr = c"no message: the thread is ending";

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    fn last() -> String {
        // SAFETY: rc_last_error's string is valid until the next call on this thread.
        unsafe { CStr::from_ptr(rc_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_is_caught_and_answered_with_its_message() {
        let status = run(|| panic!("boom at the boundary"));
        assert_eq!(status, RcStatus::Panic);
        assert!(last().contains("boom at the boundary"), "{}", last());
        assert_eq!(run(|| Ok(())), RcStatus::Ok);
        assert_eq!(last(), "");
    }

    #[test]
    fn a_refused_row_answers_its_own_kind_and_the_row() {
        let e = Error::InRow {
            row: 4,
            error: Box::new(Error::NotFinite {
                property: "Score".into(),
            }),
        };
        assert_eq!(run(|| Err(e.into())), RcStatus::NotFinite);
        assert_eq!(last(), "row 4: property Score must be a finite number");
    }

    #[test]
    fn a_message_with_a_nul_stops_at_it() {
        let status = run(|| {
            Err(Failure::new(
                RcStatus::InvalidArgument,
                "before\0after".into(),
            ))
        });
        assert_eq!(status, RcStatus::InvalidArgument);
        assert_eq!(last(), "before");
    }
}
