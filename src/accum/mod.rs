//! The accumulators: everything a counter keeps so that reading it is O(1).
//!
//! - `exact_sum`: float sums that never drift;
//! - `top`: top-N lists, exact under every write;
//! - `counter`: the published, immutable counters and the public [`Counter`] view;
//! - `order`: the id order of a large recipient's relations, for pages;
//! - `target`: the writer-side state of one recipient (its relations, packed),
//!   updating all of the above.

pub(crate) mod counter;
pub(crate) mod exact_sum;
pub(crate) mod order;
pub(crate) mod target;
pub(crate) mod top;

pub use counter::{Counter, PropCounter, Sum, TopItem};
