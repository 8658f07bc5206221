//! Pluggable profile lookup: a host that keeps its profiles in its own store can answer
//! the non-id matching modes itself; the built-in directory is the default.

use crate::profile::data::Match;

/// What a [`Resolver`] found for a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Exactly one profile: its id.
    Found(String),
    /// No profile matches.
    NotFound,
    /// Several profiles match (the platform requires the matched field to be unique).
    Ambiguous,
}

/// Finds profiles by email, phone or custom field in a host's own store.
///
/// The engine calls it for every [`Match`] other than [`Match::Id`] (ids are always
/// the engine's own), from any thread, possibly concurrently; it must not call back
/// into the engine. A found id need not exist in the engine yet: in a write it is
/// created, as a write by id would.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use relcount::{Engine, Match, PropSpec, RelationType, Resolution, Resolver, Value};
///
/// /// Emails are ids with "@example.com" appended, in this host.
/// struct ByEmail;
/// impl Resolver for ByEmail {
///     fn resolve(&self, _db_id: u32, query: &Match<'_>) -> Resolution {
///         match query {
///             Match::Email { email, .. } => match email.strip_suffix("@example.com") {
///                 Some(id) => Resolution::Found(id.to_string()),
///                 None => Resolution::NotFound,
///             },
///             _ => Resolution::NotFound,
///         }
///     }
/// }
///
/// let engine = Engine::builder().resolver(Arc::new(ByEmail)).build();
/// engine.define(RelationType::new(1, 1, 2).prop("Like", PropSpec::int().sum()))?;
/// engine.attach(1, "ann", "bob", &[("Like", Value::Int(1))])?;
/// let c = engine.get_counter(1, Match::Email { email: "ann@example.com", resource_id: None })?;
/// assert_eq!(c.total(), 1);
/// # Ok::<(), relcount::Error>(())
/// ```
pub trait Resolver: Send + Sync {
    /// The profile of database `db_id` that `query` names.
    fn resolve(&self, db_id: u32, query: &Match<'_>) -> Resolution;
}
