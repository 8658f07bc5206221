//! The accumulators: everything a counter keeps so that reading it is O(1).
//!
//! - `exact_sum`: float sums that never drift;
//! - `top`: top-N lists, exact under every write;
//! - `block`: a target's published counters, a block of atomic words updated in
//!   place and read without waiting for its writer;
//! - `counter`: the writer's working counters and the public [`Counter`], an owned
//!   copy read from a block;
//! - `order`: the id order of a large recipient's relations, for pages;
//! - `target`: the writer-side state of one recipient (its relations, packed),
//!   updating all of the above.

pub(crate) mod block;
pub(crate) mod counter;
pub(crate) mod exact_sum;
pub(crate) mod order;
pub(crate) mod target;
pub(crate) mod top;

pub use counter::{Counter, PropCounter, Sum, TopItem};
