//! relcount for C hosts: the engine behind a C ABI, with the header `relcount.h`
//! (written by cbindgen at every build, in `include/`).
//!
//! # The contract
//!
//! - **Handles.** An engine (`RcEngine`) and a counter (`RcCounter`) are opaque
//!   handles the library allocates (`rc_engine_new`, `rc_engine_open`,
//!   `rc_get_counter`) and the caller frees exactly once (`rc_engine_free`,
//!   `rc_counter_free`; both take NULL). A counter is a snapshot: it stays valid and
//!   unchanged after later writes and after its engine is freed. Both may be used
//!   from any thread, at the same time.
//! - **Everything else is the caller's.** Strings, weights, definitions and the
//!   structs answers are written into are owned by the caller; the library reads or
//!   writes them during the call only and keeps no pointer to them. Strings are
//!   NUL-terminated UTF-8. Profile ids come back copied into the caller's
//!   `RcProfileId` (64 bytes at most, plus the NUL).
//! - **Errors.** Every call that can fail returns an `RcStatus`: `RC_STATUS_OK` (0), or
//!   the kind of error, and then `rc_last_error()` gives its message: a string the
//!   library owns, valid until the next call on the same thread. A refused call
//!   changed nothing. NULL where a pointer is required and ids that are not UTF-8 are
//!   errors too (`RC_STATUS_NULL_ARGUMENT`, `RC_STATUS_INVALID_UTF8`).
//! - **No panic crosses the boundary.** Each call runs under `catch_unwind`; a panic
//!   (a bug) answers `RC_STATUS_PANIC` with its message.
//!
//! Module layout: `status` (codes and the thread's last error), `args` (reading
//! the caller's arguments), and the calls in this file.

// A C ABI is raw pointers: every `unsafe` block here carries its `// SAFETY:`
// (clippy `undocumented_unsafe_blocks`), every `unsafe fn` its `# Safety`.
#![allow(unsafe_code)]

mod args;
mod status;

use std::ffi::c_char;
use std::path::PathBuf;

pub use status::{RcStatus, rc_last_error};

use args::{optional_str, out_arg, prop_defs, str_arg, weights};
use relcount::{Counter, Engine, Error, Op, Sum, SyncPolicy, Value};
use status::{Failure, run};

/// An engine (opaque). Made by `rc_engine_new` or `rc_engine_open`, freed by
/// `rc_engine_free`.
pub struct RcEngine {
    inner: Engine,
}

/// One relation type's counters for one profile, at one moment (opaque). Made by
/// `rc_get_counter`, freed by `rc_counter_free`.
pub struct RcCounter {
    inner: Counter,
}

/// `RcValue.kind` and `RcPropDef.kind`: an int (`int_value`).
pub const RC_KIND_INT: u32 = 0;
/// A float (`float_value`).
pub const RC_KIND_FLOAT: u32 = 1;
/// A bool (`bool_value`, 0 or 1).
pub const RC_KIND_BOOL: u32 = 2;
/// The longest profile id, in bytes.
pub const RC_MAX_ID_LEN: usize = 64;

/// A typed value: `kind` says which field holds it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RcValue {
    /// `RC_KIND_INT`, `RC_KIND_FLOAT` or `RC_KIND_BOOL`.
    pub kind: u32,
    /// The value when `kind` is `RC_KIND_INT`.
    pub int_value: i64,
    /// The value when `kind` is `RC_KIND_FLOAT`.
    pub float_value: f64,
    /// The value when `kind` is `RC_KIND_BOOL`: 0 is false, anything else true.
    pub bool_value: u8,
}

/// One property's value in a write.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RcWeight {
    /// The property's name.
    pub name: *const c_char,
    /// Its value (a write) or delta (a strengthen).
    pub value: RcValue,
}

/// One property of a relation type being defined.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RcPropDef {
    /// The property's name.
    pub name: *const c_char,
    /// `RC_KIND_INT`, `RC_KIND_FLOAT` or `RC_KIND_BOOL`.
    pub kind: u32,
    /// Nonzero to keep the sum of its values (numbers only).
    pub sum: u8,
    /// How many initiators to keep in its top list, 1 to 1000; 0 keeps none.
    pub top: u16,
}

/// A profile id, copied into the caller's struct: `len` bytes of `id`, then a NUL.
/// Read it by `len`: an id written by another host (Python, the JSON API) may hold a
/// NUL of its own.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RcProfileId {
    /// Its length in bytes (1 to `RC_MAX_ID_LEN`).
    pub len: usize,
    /// The id, NUL-terminated.
    pub id: [c_char; 65],
}

/// A sum. An int sum is exact in 128 bits: `int_hi * 2^64 + int_lo` (two's
/// complement); when it fits in 64 bits, `int_hi` is 0 or -1 and `(int64_t)int_lo` is
/// the sum.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RcSum {
    /// `RC_KIND_INT` or `RC_KIND_FLOAT`.
    pub kind: u32,
    /// The high 64 bits of an int sum.
    pub int_hi: i64,
    /// The low 64 bits of an int sum.
    pub int_lo: u64,
    /// A float sum, correctly rounded.
    pub float_value: f64,
}

/// One property's counters in a counter.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RcProp {
    /// Relations that have a value for it.
    pub total: u64,
    /// 1 when the property keeps a sum (then `sum` holds it), else 0.
    pub has_sum: u8,
    /// The sum.
    pub sum: RcSum,
    /// 1 when the property keeps a top list, else 0.
    pub has_top: u8,
    /// Entries in the top list (`rc_counter_top` reads them, best first).
    pub top_len: usize,
}

/// One entry of a top list.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RcTopItem {
    /// The initiator.
    pub profile_id: RcProfileId,
    /// Its value of the property.
    pub value: RcValue,
}

/// Makes an empty in-memory engine into `*out`.
///
/// # Safety
///
/// `out` is NULL or valid for one pointer's write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_engine_new(out: *mut *mut RcEngine) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { out_arg(out, "out") }?;
        out.set(Box::into_raw(Box::new(RcEngine {
            inner: Engine::new(),
        })));
        Ok(())
    })
}

/// Opens (or makes) a durable engine on the data directory `dir` into `*out`,
/// recovered to exactly its acknowledged writes. `fsync` is `"always"` (or NULL),
/// `"everysec"` or `"no"`.
///
/// # Safety
///
/// `dir` and `fsync` are NULL or NUL-terminated strings; `out` is NULL or valid for
/// one pointer's write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_engine_open(
    dir: *const c_char,
    fsync: *const c_char,
    out: *mut *mut RcEngine,
) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let (dir, fsync, out) = unsafe {
            (
                str_arg(dir, "dir")?,
                optional_str(fsync, "fsync")?,
                out_arg(out, "out")?,
            )
        };
        let sync: SyncPolicy = fsync.unwrap_or("always").parse()?;
        let inner = Engine::builder().open(PathBuf::from(dir), sync)?;
        out.set(Box::into_raw(Box::new(RcEngine { inner })));
        Ok(())
    })
}

/// Frees an engine (a durable one syncs its log and releases its directory). NULL
/// does nothing.
///
/// # Safety
///
/// `engine` is NULL or a handle from `rc_engine_new`/`rc_engine_open` not yet freed,
/// and no other thread uses it during or after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_engine_free(engine: *mut RcEngine) {
    // SAFETY: the same contract.
    unsafe { free(engine) }
}

/// Frees a handle the library made with `Box::into_raw` (NULL does nothing).
///
/// # Safety
///
/// `handle` is NULL or such a handle, not yet freed, unused during or after this.
unsafe fn free<T>(handle: *mut T) {
    if !handle.is_null() {
        let _ = run(|| {
            // SAFETY: the caller's contract: made by Box::into_raw, freed once.
            drop(unsafe { Box::from_raw(handle) });
            Ok(())
        });
    }
}

/// The value behind a handle, or a NULL failure naming the argument.
///
/// # Safety
///
/// `handle` is NULL or a live handle.
unsafe fn live<'a, T>(handle: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller's contract.
    unsafe { handle.as_ref() }.ok_or_else(|| args::null(name))
}

/// The engine behind a handle.
///
/// # Safety
///
/// `engine` is NULL or a live handle.
unsafe fn engine<'a>(engine: *const RcEngine) -> Result<&'a Engine, Failure> {
    // SAFETY: the caller's contract.
    unsafe { live(engine, "engine") }.map(|e| &e.inner)
}

/// Defines relation type `rel_id` from profiles of `db_b` to profiles of `db_a`, with
/// `count` properties. Defining it again with the same schema does nothing.
///
/// # Safety
///
/// `engine` is a live handle; `props` is NULL (with `count` 0) or points to `count`
/// definitions whose names are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_define(
    engine: *const RcEngine,
    rel_id: u32,
    db_a: u32,
    db_b: u32,
    props: *const RcPropDef,
    count: usize,
) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let (e, def) = unsafe {
            (
                self::engine(engine)?,
                prop_defs(rel_id, db_a, db_b, props, count)?,
            )
        };
        Ok(e.define(def)?)
    })
}

/// Runs one write.
///
/// # Safety
///
/// As `rc_attach`.
unsafe fn write(
    kind: Op,
    engine: *const RcEngine,
    rel_id: u32,
    profile_a: *const c_char,
    profile_b: *const c_char,
    w: *const RcWeight,
    count: usize,
) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let (e, a, b, w) = unsafe {
            (
                self::engine(engine)?,
                str_arg(profile_a, "profile_a")?,
                str_arg(profile_b, "profile_b")?,
                weights(w, count)?,
            )
        };
        Ok(match kind {
            Op::Attach => e.attach(rel_id, a, b, &w),
            Op::Strengthen => e.strengthen(rel_id, a, b, &w),
            Op::Edit => e.edit(rel_id, a, b, &w),
            Op::Detach => e.detach(rel_id, a, b),
        }?)
    })
}

/// Attaches `profile_b` to `profile_a` (ids) with these values, replacing the
/// relation's values if it exists; missing profiles are created.
///
/// # Safety
///
/// `engine` is a live handle; the ids are NUL-terminated strings; `weights` is NULL
/// (with `count` 0) or points to `count` weights whose names are NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_attach(
    engine: *const RcEngine,
    rel_id: u32,
    profile_a: *const c_char,
    profile_b: *const c_char,
    weights: *const RcWeight,
    count: usize,
) -> RcStatus {
    // SAFETY: the same contract.
    unsafe {
        write(
            Op::Attach,
            engine,
            rel_id,
            profile_a,
            profile_b,
            weights,
            count,
        )
    }
}

/// Adds these deltas to the relation's numbers (a negative one weakens) and sets its
/// bools; creates the relation if needed.
///
/// # Safety
///
/// As `rc_attach`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_strengthen(
    engine: *const RcEngine,
    rel_id: u32,
    profile_a: *const c_char,
    profile_b: *const c_char,
    weights: *const RcWeight,
    count: usize,
) -> RcStatus {
    // SAFETY: the same contract.
    unsafe {
        write(
            Op::Strengthen,
            engine,
            rel_id,
            profile_a,
            profile_b,
            weights,
            count,
        )
    }
}

/// Overwrites the listed values of the relation, keeping the others; creates the
/// relation if needed.
///
/// # Safety
///
/// As `rc_attach`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_edit(
    engine: *const RcEngine,
    rel_id: u32,
    profile_a: *const c_char,
    profile_b: *const c_char,
    weights: *const RcWeight,
    count: usize,
) -> RcStatus {
    // SAFETY: the same contract.
    unsafe {
        write(
            Op::Edit,
            engine,
            rel_id,
            profile_a,
            profile_b,
            weights,
            count,
        )
    }
}

/// Removes the relation: `RC_STATUS_PROFILE_NOT_FOUND` when either profile does not
/// exist, `RC_STATUS_RELATION_NOT_FOUND` when both do and the relation does not.
///
/// # Safety
///
/// `engine` is a live handle; the ids are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_detach(
    engine: *const RcEngine,
    rel_id: u32,
    profile_a: *const c_char,
    profile_b: *const c_char,
) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let (e, a, b) = unsafe {
            (
                self::engine(engine)?,
                str_arg(profile_a, "profile_a")?,
                str_arg(profile_b, "profile_b")?,
            )
        };
        Ok(e.detach(rel_id, a, b)?)
    })
}

/// `RcWrite::op`: an attach (`rc_attach`).
pub const RC_OP_ATTACH: u32 = 0;
/// `RcWrite::op`: a strengthen (`rc_strengthen`).
pub const RC_OP_STRENGTHEN: u32 = 1;
/// `RcWrite::op`: an edit (`rc_edit`).
pub const RC_OP_EDIT: u32 = 2;
/// `RcWrite::op`: a detach (`rc_detach`; no weights).
pub const RC_OP_DETACH: u32 = 3;

/// One write of a batch (`rc_apply`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RcWrite {
    /// `RC_OP_ATTACH`, `RC_OP_STRENGTHEN`, `RC_OP_EDIT` or `RC_OP_DETACH`.
    pub op: u32,
    /// The relation type.
    pub rel_id: u32,
    /// The recipient's id (database A), NUL-terminated.
    pub profile_a: *const c_char,
    /// The initiator's id (database B), NUL-terminated.
    pub profile_b: *const c_char,
    /// NULL (with `count` 0) or `count` weights (none for a detach).
    pub weights: *const RcWeight,
    /// The number of weights.
    pub count: usize,
}

/// Applies `count` writes in order, all or nothing (the engine's `apply`): a refused
/// write changes nothing and its status and message say which, as "row N: ...".
/// Much cheaper a write than single calls: the batch is one log record and each
/// touched counter is computed once.
///
/// # Safety
///
/// `engine` is a live handle; `writes` is NULL (with `count` 0) or points to `count`
/// writes whose ids are NUL-terminated strings and whose weights are as `rc_attach`'s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_apply(
    engine: *const RcEngine,
    writes: *const RcWrite,
    count: usize,
) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let (e, given) = unsafe { (self::engine(engine)?, args::array(writes, count, "writes")?) };
        let mut batch = Vec::with_capacity(given.len());
        for (row, w) in given.iter().enumerate() {
            let in_row = |f: Failure| f.in_row(row);
            let op = match w.op {
                RC_OP_ATTACH => Op::Attach,
                RC_OP_STRENGTHEN => Op::Strengthen,
                RC_OP_EDIT => Op::Edit,
                RC_OP_DETACH => Op::Detach,
                other => {
                    let why = format!("op {other} is none of the RC_OP_ constants");
                    return Err(in_row(Failure::new(RcStatus::InvalidArgument, why)));
                }
            };
            // SAFETY: the caller's contract, write by write.
            let (a, b, values) = unsafe {
                (
                    str_arg(w.profile_a, "profile_a").map_err(in_row)?,
                    str_arg(w.profile_b, "profile_b").map_err(in_row)?,
                    weights(w.weights, w.count).map_err(in_row)?,
                )
            };
            batch.push(relcount::Write::new(op, w.rel_id, a, b, values));
        }
        e.apply(&batch)?;
        Ok(())
    })
}

/// Deletes profile `profile_id` of database `db_id` and every relation it takes
/// part in.
///
/// # Safety
///
/// `engine` is a live handle; `profile_id` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_delete_profile(
    engine: *const RcEngine,
    db_id: u32,
    profile_id: *const c_char,
) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let (e, id) = unsafe { (self::engine(engine)?, str_arg(profile_id, "profile_id")?) };
        Ok(e.delete_profile(db_id, id)?)
    })
}

/// Reads the counters of `profile_a` (an id) for relation type `rel_id` into a new
/// counter handle in `*out`, to free with `rc_counter_free`.
///
/// # Safety
///
/// `engine` is a live handle; `profile_a` is a NUL-terminated string; `out` is valid
/// for one pointer's write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_get_counter(
    engine: *const RcEngine,
    rel_id: u32,
    profile_a: *const c_char,
    out: *mut *mut RcCounter,
) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let (e, a, out) = unsafe {
            (
                self::engine(engine)?,
                str_arg(profile_a, "profile_a")?,
                out_arg(out, "out")?,
            )
        };
        let inner = e.get_counter(rel_id, a)?;
        out.set(Box::into_raw(Box::new(RcCounter { inner })));
        Ok(())
    })
}

/// Frees a counter. NULL does nothing.
///
/// # Safety
///
/// `counter` is NULL or a handle from `rc_get_counter` not yet freed, unused by any
/// other thread during or after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_counter_free(counter: *mut RcCounter) {
    // SAFETY: the same contract.
    unsafe { free(counter) }
}

/// The counter behind a handle.
///
/// # Safety
///
/// `counter` is NULL or a live handle.
unsafe fn counter<'a>(counter: *const RcCounter) -> Result<&'a Counter, Failure> {
    // SAFETY: the caller's contract.
    unsafe { live(counter, "counter") }.map(|c| &c.inner)
}

/// An id as the caller's struct holds it.
fn profile_id(id: &str) -> RcProfileId {
    let mut out = RcProfileId {
        len: id.len().min(RC_MAX_ID_LEN),
        id: [0; 65],
    };
    for (dst, &src) in out.id.iter_mut().zip(&id.as_bytes()[..out.len]) {
        *dst = src as c_char;
    }
    out
}

/// The counter's relations (0 for NULL).
///
/// # Safety
///
/// `counter` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_counter_total(counter: *const RcCounter) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { counter.as_ref() }.map_or(0, |c| c.inner.total())
}

/// The counter's profile: its id into `*id`, and its XXH64 into `*xxh` (either may
/// be NULL).
///
/// # Safety
///
/// `counter` is a live handle; `id` and `xxh` are NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_counter_profile(
    counter: *const RcCounter,
    id: *mut RcProfileId,
    xxh: *mut u64,
) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let c = unsafe { self::counter(counter) }?;
        if !id.is_null() {
            // SAFETY: not NULL, and valid for a write by the caller's contract.
            unsafe { id.write(profile_id(&c.profile_id().as_str())) };
        }
        if !xxh.is_null() {
            // SAFETY: as `id`.
            unsafe { xxh.write(c.profile_xxh()) };
        }
        Ok(())
    })
}

/// A value as C has it.
fn c_value(v: Value) -> RcValue {
    match v {
        Value::Int(i) => RcValue {
            kind: RC_KIND_INT,
            int_value: i,
            ..RcValue::default()
        },
        Value::Float(x) => RcValue {
            kind: RC_KIND_FLOAT,
            float_value: x,
            ..RcValue::default()
        },
        Value::Bool(b) => RcValue {
            kind: RC_KIND_BOOL,
            bool_value: u8::from(b),
            ..RcValue::default()
        },
    }
}

/// Property `name`'s counters into `*out` (`RC_STATUS_UNKNOWN_PROPERTY` when the
/// relation type has no such property).
///
/// # Safety
///
/// `counter` is a live handle; `name` a NUL-terminated string; `out` valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_counter_prop(
    counter: *const RcCounter,
    name: *const c_char,
    out: *mut RcProp,
) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let (c, name, out) = unsafe {
            (
                self::counter(counter)?,
                str_arg(name, "name")?,
                out_arg(out, "out")?,
            )
        };
        let p = c.prop(name).ok_or_else(|| Error::UnknownProperty {
            rel_id: c.rel_id(),
            name: name.to_owned(),
        })?;
        let mut prop = RcProp {
            total: p.total(),
            ..RcProp::default()
        };
        if let Some(sum) = p.sum() {
            prop.has_sum = 1;
            prop.sum = match sum {
                Sum::Int(i) => RcSum {
                    kind: RC_KIND_INT,
                    int_hi: (i >> 64) as i64,
                    int_lo: i as u64,
                    ..RcSum::default()
                },
                Sum::Float(x) => RcSum {
                    kind: RC_KIND_FLOAT,
                    float_value: x,
                    ..RcSum::default()
                },
            };
        }
        if let Some(top) = p.top() {
            prop.has_top = 1;
            prop.top_len = top.len();
        }
        out.set(prop);
        Ok(())
    })
}

/// Entry `index` (from 0, best first) of property `name`'s top list into `*out`
/// (`RC_STATUS_INVALID_ARGUMENT` past its end or for a property keeping none).
///
/// # Safety
///
/// As `rc_counter_prop`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rc_counter_top(
    counter: *const RcCounter,
    name: *const c_char,
    index: usize,
    out: *mut RcTopItem,
) -> RcStatus {
    run(|| {
        // SAFETY: the caller's contract.
        let (c, name, out) = unsafe {
            (
                self::counter(counter)?,
                str_arg(name, "name")?,
                out_arg(out, "out")?,
            )
        };
        let p = c.prop(name).ok_or_else(|| Error::UnknownProperty {
            rel_id: c.rel_id(),
            name: name.to_owned(),
        })?;
        let Some(mut top) = p.top() else {
            return Err(Error::InvalidArgument {
                name: "name",
                reason: format!("property {name} keeps no top list"),
            }
            .into());
        };
        let len = top.len();
        let Some(item) = top.nth(index) else {
            return Err(Error::InvalidArgument {
                name: "index",
                reason: format!("index {index} is past the top list's {len} entries"),
            }
            .into());
        };
        out.set(RcTopItem {
            profile_id: profile_id(&item.profile_id.as_str()),
            value: c_value(item.value),
        });
        Ok(())
    })
}
