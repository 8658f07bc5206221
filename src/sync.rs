//! The synchronisation primitives the sharded writer state uses, behind a shim so the
//! lock protocol can be model-checked: with `RUSTFLAGS="--cfg relcount_loom"` they are
//! `loom`'s, and `cargo test --lib loom` explores every interleaving of the tests in
//! `shard.rs`. (A crate-specific cfg, as crossbeam's `crossbeam_loom`, so dependencies
//! that know a plain `loom` cfg are not switched too.)

#[cfg(relcount_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(relcount_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
