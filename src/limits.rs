//! Every bound and default of the engine, in one place. Each is part of the contract: a
//! call past a bound is refused with an [`Error`](crate::Error) that names it, and
//! changes nothing. (The JSON layer's own limits, on request size and counts, are
//! `api::Limits` (feature `json`), set per server.)
//!
//! ```
//! use relcount::limits;
//!
//! assert_eq!(limits::MAX_PROFILE_ID_LEN, 64);
//! assert_eq!(limits::MAX_TOP, 1000);
//! ```

// Profiles.

/// The longest profile id accepted, in bytes (docs/api.md, *Profile ids*).
pub const MAX_PROFILE_ID_LEN: usize = 64;

/// Most custom fields, subscriptions, or tags in one field, per profile.
pub const MAX_PROFILE_ITEMS: usize = 64;

/// Longest email, phone, field name, field value or tag, in bytes, as stored (after
/// normalisation: trimmed, and for emails case-folded, which can lengthen a text).
pub const MAX_TEXT_LEN: usize = 256;

/// Most profiles a custom lookup on tags examines: it checks the profiles under its
/// rarest tag, so one whose every tag is popular (and that matches fewer than two of
/// them early) would otherwise cost a scan of that tag. Lookups by email, phone or a
/// field's value are not capped (their candidates are the few sharing that value).
pub const MAX_LOOKUP_CANDIDATES: usize = 10_000;

// Relation types and values.

/// Most properties one relation type may have.
pub const MAX_PROPS: usize = 32;

/// Longest property name, in bytes.
pub const MAX_PROP_NAME_LEN: usize = 64;

/// The platform's default `top` size.
pub const DEFAULT_TOP: u16 = 10;

/// Largest `top` size (docs/api.md, *Concepts*).
pub const MAX_TOP: u16 = 1000;

/// Largest float magnitude a property value may have: 2^960 (about 9.7e288).
///
/// No exact sum of fewer than 2^62 such values can leave the finite range.
pub const MAX_FLOAT: f64 = f64::from_bits(0x7BF0_0000_0000_0000);

// Reads.

/// Default page size of [`Engine::list`](crate::Engine::list).
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// Largest page size of [`Engine::list`](crate::Engine::list).
pub const MAX_LIST_LIMIT: usize = 1000;

// Engine settings.

/// Default number of shards.
pub const DEFAULT_SHARDS: usize = 64;

/// Most shards an engine may have.
pub const MAX_SHARDS: usize = 1 << 16;

/// Default of [`EngineBuilder::top_index_threshold`](crate::EngineBuilder::top_index_threshold):
/// targets with more valued relations than this keep an ordered index of them, so a
/// top list refills without a scan.
pub const DEFAULT_TOP_INDEX_THRESHOLD: usize = 64;
