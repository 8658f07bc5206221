//! The synchronisation primitives: the mutexes and atomics of the writer state, behind
//! a shim so the protocols can be model-checked. Built with `--cfg relcount_loom` they
//! are `loom`'s, and the tests named `loom` (in `store/shard.rs`: the shard lock order;
//! `profile/cell.rs`: a profile's life and the reading of its slot; `accum/block.rs`: the counter block's two copies)
//! explore every interleaving. `.ci/run` builds the library's unit tests that way with
//! `cargo rustc -p relcount --lib --profile test -- --cfg relcount_loom`, which passes
//! the cfg to this crate alone, so no dependency is rebuilt. (A crate-specific cfg, as
//! crossbeam's `crossbeam_loom`, so dependencies that know a plain `loom` cfg are never
//! switched.)

// Only the library's own test build takes loom's: the copy of the library its tests
// link as a dev-dependency (for the `workload` feature) is built without `test` and
// keeps std's, as every other build does.
#[cfg(all(test, relcount_loom))]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(all(test, relcount_loom))]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(all(test, relcount_loom)))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(all(test, relcount_loom)))]
pub(crate) use std::sync::{Mutex, MutexGuard};
