//! The library's integration tests, in one binary (one link instead of one a file):
//! each module is a suite, `common` holds the naive oracle, the operations the model
//! tests apply and the concurrency scenarios. The slow stress tests are apart, in
//! `tests/stress.rs`.

#![allow(unsafe_code)] // the counting allocator; the library itself forbids unsafe

#[path = "../../examples/support/counting_alloc.rs"]
mod counting_alloc;

/// Counts live bytes in all and per thread, so a test bounds what a loop leaves
/// allocated (`counting_alloc::thread_net`) while other tests run beside it.
#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

mod common;
/// Proptest strategies for the model's operations.
mod generate;

#[cfg(feature = "json")]
mod api;
mod batch;
mod bulk;
mod collisions;
mod directory;
mod errors;
mod host;
mod list_order;
mod list_order_races;
mod model;
mod persist;
#[cfg(feature = "json")]
mod regressions;
#[cfg(feature = "json")]
mod roundtrip;
mod rust_api;
mod seed;
#[cfg(all(feature = "serde", feature = "json"))]
mod serde;
mod sums;
#[cfg(feature = "json")]
mod validate;
mod write_work;
