//! The public vocabulary of a change to one relation: what [`Engine::apply`] takes in
//! batches, what the write log stores, and what the bindings and the cluster speak.
//!
//! [`Engine::apply`]: crate::Engine::apply

use crate::value::Value;

/// What a [`Write`] does to its relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Create the relation with exactly the given values, replacing any it had
    /// ([`Engine::attach`](crate::Engine::attach)).
    Attach,
    /// Add the given deltas to its numbers and set the given bools, creating it if
    /// needed ([`Engine::strengthen`](crate::Engine::strengthen)).
    Strengthen,
    /// Overwrite the given values, keeping the others, creating it if needed
    /// ([`Engine::edit`](crate::Engine::edit)).
    Edit,
    /// Remove it ([`Engine::detach`](crate::Engine::detach)); takes no values.
    Detach,
}

/// One change to the relation of type `rel_id` from `profile_b` (an id in the type's
/// database B) to `profile_a` (an id in its database A). Profiles are named by id: a
/// lookup by email, phone or field is the single calls' job, resolved before a change
/// is logged.
///
/// # Examples
///
/// ```
/// use relcount::{Engine, PropSpec, RelationType, Value, Write};
///
/// let engine = Engine::new();
/// engine.define(RelationType::new(3, 1, 2).prop("Donate", PropSpec::int().sum()))?;
/// let batch = [
///     Write::attach(3, "a", "b1", [("Donate", Value::Int(20))]),
///     Write::strengthen(3, "a", "b1", [("Donate", Value::Int(5))]),
///     Write::attach(3, "a", "b2", [("Donate", Value::Int(1))]),
///     Write::detach(3, "a", "b2"),
/// ];
/// assert_eq!(engine.apply(&batch)?, 4);
/// let counter = engine.get_counter(3, "a")?;
/// assert_eq!(counter.total(), 1);
/// assert_eq!(counter.prop("Donate").unwrap().sum(), Some(relcount::Sum::Int(25)));
/// # Ok::<(), relcount::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// What it does.
    pub op: Op,
    /// The relation type.
    pub rel_id: u32,
    /// The recipient's id (database A).
    pub profile_a: String,
    /// The initiator's id (database B).
    pub profile_b: String,
    /// Property names and values (deltas for a strengthen); empty for a detach.
    pub values: Vec<(String, Value)>,
}

impl Write {
    /// A write of `op` with `values`.
    pub fn new<N: Into<String>>(
        op: Op,
        rel_id: u32,
        profile_a: impl Into<String>,
        profile_b: impl Into<String>,
        values: impl IntoIterator<Item = (N, Value)>,
    ) -> Self {
        Write {
            op,
            rel_id,
            profile_a: profile_a.into(),
            profile_b: profile_b.into(),
            values: values.into_iter().map(|(n, v)| (n.into(), v)).collect(),
        }
    }

    /// An [`Op::Attach`].
    pub fn attach<N: Into<String>>(
        rel_id: u32,
        profile_a: impl Into<String>,
        profile_b: impl Into<String>,
        values: impl IntoIterator<Item = (N, Value)>,
    ) -> Self {
        Self::new(Op::Attach, rel_id, profile_a, profile_b, values)
    }

    /// An [`Op::Strengthen`] by `deltas`.
    pub fn strengthen<N: Into<String>>(
        rel_id: u32,
        profile_a: impl Into<String>,
        profile_b: impl Into<String>,
        deltas: impl IntoIterator<Item = (N, Value)>,
    ) -> Self {
        Self::new(Op::Strengthen, rel_id, profile_a, profile_b, deltas)
    }

    /// An [`Op::Edit`].
    pub fn edit<N: Into<String>>(
        rel_id: u32,
        profile_a: impl Into<String>,
        profile_b: impl Into<String>,
        values: impl IntoIterator<Item = (N, Value)>,
    ) -> Self {
        Self::new(Op::Edit, rel_id, profile_a, profile_b, values)
    }

    /// An [`Op::Detach`].
    pub fn detach(rel_id: u32, profile_a: impl Into<String>, profile_b: impl Into<String>) -> Self {
        Self::new(
            Op::Detach,
            rel_id,
            profile_a,
            profile_b,
            std::iter::empty::<(String, Value)>(),
        )
    }
}
