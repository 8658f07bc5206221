//! Reading the caller's arguments: NUL-terminated UTF-8 strings, arrays of weights
//! and property definitions, and out-pointers. A NULL where a pointer is required
//! and a string that is not UTF-8 are failures with their argument's name.

use std::ffi::{CStr, c_char};

use relcount::{Error, PropSpec, RelationType, Value};

use crate::status::{Failure, RcStatus};
use crate::{RC_KIND_BOOL, RC_KIND_FLOAT, RC_KIND_INT, RcPropDef, RcValue, RcWeight};

/// NULL given for a required pointer.
pub(crate) fn null(name: &str) -> Failure {
    Failure::new(RcStatus::NullArgument, format!("{name} must not be NULL"))
}

/// A required string.
///
/// # Safety
///
/// `p` is NULL or a NUL-terminated string, valid for `'a`.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    // SAFETY: the caller's contract.
    unsafe { optional_str(p, name) }?.ok_or_else(|| null(name))
}

/// An optional string (NULL is `None`).
///
/// # Safety
///
/// As [`str_arg`].
pub(crate) unsafe fn optional_str<'a>(
    p: *const c_char,
    name: &str,
) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL, and NUL-terminated by the caller's contract.
    let bytes = unsafe { CStr::from_ptr(p) };
    bytes.to_str().map(Some).map_err(|e| {
        Failure::new(
            RcStatus::InvalidUtf8,
            format!("{name} is not UTF-8 (at byte {})", e.valid_up_to()),
        )
    })
}

/// Where a call writes its answer: a non-NULL pointer, written once with [`Out::set`].
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    /// Writes the answer (without reading or dropping what was there: the caller's
    /// memory may be uninitialised).
    pub(crate) fn set(self, value: T) {
        // SAFETY: not NULL (checked in `out_arg`) and valid for a write by the
        // contract of the call that made it.
        unsafe { self.0.write(value) }
    }
}

/// A required out-pointer.
///
/// # Safety
///
/// `p` is NULL or valid for one write of a `T`.
pub(crate) unsafe fn out_arg<T>(p: *mut T, name: &str) -> Result<Out<T>, Failure> {
    if p.is_null() {
        Err(null(name))
    } else {
        Ok(Out(p))
    }
}

/// A caller's array as a slice (NULL with a count of 0 is empty).
///
/// # Safety
///
/// `p` is NULL or points to `count` initialised `T`s.
pub(crate) unsafe fn array<'a, T>(
    p: *const T,
    count: usize,
    name: &str,
) -> Result<&'a [T], Failure> {
    if count == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(null(name));
    }
    // SAFETY: not NULL, and `count` elements by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, count) })
}

/// A typed value, checked: an unknown kind is refused.
fn value(v: &RcValue, name: &str) -> Result<Value, Failure> {
    match v.kind {
        RC_KIND_INT => Ok(Value::Int(v.int_value)),
        RC_KIND_FLOAT => Ok(Value::Float(v.float_value)),
        RC_KIND_BOOL => Ok(Value::Bool(v.bool_value != 0)),
        other => Err(Error::InvalidArgument {
            name: "kind",
            reason: format!(
                "property {name}: kind {other} is not RC_KIND_INT (0), RC_KIND_FLOAT (1) or RC_KIND_BOOL (2)"
            ),
        }
        .into()),
    }
}

/// Weights, borrowed from the caller's strings.
///
/// # Safety
///
/// `w` is NULL or points to `count` weights whose names are NULL or NUL-terminated.
pub(crate) unsafe fn weights<'a>(
    w: *const RcWeight,
    count: usize,
) -> Result<Vec<(&'a str, Value)>, Failure> {
    // SAFETY: the caller's contract.
    let w = unsafe { array(w, count, "weights") }?;
    w.iter()
        .map(|w| {
            // SAFETY: the caller's contract.
            let name = unsafe { str_arg(w.name, "a weight's name") }?;
            Ok((name, value(&w.value, name)?))
        })
        .collect()
}

/// A relation type from the caller's property definitions.
///
/// # Safety
///
/// `props` is NULL or points to `count` definitions whose names are NULL or
/// NUL-terminated.
pub(crate) unsafe fn prop_defs(
    rel_id: u32,
    db_a: u32,
    db_b: u32,
    props: *const RcPropDef,
    count: usize,
) -> Result<RelationType, Failure> {
    // SAFETY: the caller's contract.
    let props = unsafe { array(props, count, "props") }?;
    let mut def = RelationType::new(rel_id, db_a, db_b);
    for p in props {
        // SAFETY: the caller's contract.
        let name = unsafe { str_arg(p.name, "a property's name") }?;
        let mut spec = match p.kind {
            RC_KIND_INT => PropSpec::int(),
            RC_KIND_FLOAT => PropSpec::float(),
            RC_KIND_BOOL => PropSpec::bool(),
            other => {
                return Err(Error::InvalidSchema {
                    rel_id,
                    reason: format!("property {name}: kind {other} is not 0, 1 or 2"),
                }
                .into());
            }
        };
        if p.sum != 0 {
            spec = spec.sum();
        }
        if p.top != 0 {
            spec = spec.top(p.top);
        }
        def = def.prop(name, spec);
    }
    Ok(def)
}
