//! # relcount
//!
//! An embedded, in-memory engine that keeps **profile relation counters**. Profiles of a
//! database A (recipients) receive typed relations from profiles of a database B
//! (initiators), with properties such as `"Donate": 20`, `"Like": 2`,
//! `"Subscriber": true`. For every `(relation type, profile A)` the engine keeps the
//! number of relations and, per property, how many have it, their sum and the top
//! initiators by value, updated on every write so that
//! [`get_counter`](Engine::get_counter) costs O(1) in the number of relations.
//!
//! ```
//! use relcount::{Engine, PropSpec, RelationType, Sum, Value};
//!
//! let engine = Engine::new();
//! engine.define(
//!     RelationType::new(3, 1, 2)
//!         .prop("Donate", PropSpec::int().top(10))
//!         .prop("Like", PropSpec::int().sum())
//!         .prop("Subscriber", PropSpec::bool()),
//! )?;
//! let a = "5c910f6bc484d023b1309bee";
//! engine.attach(3, a, "5c910938c484d023b1309bab", &[("Donate", 20.into())])?;
//! engine.strengthen(3, a, "5c910938c484d023b1309bab", &[("Like", 2.into())])?;
//! engine.edit(3, a, "5c910938c484d023b1309bab", &[("Subscriber", true.into())])?;
//!
//! let counter = engine.get_counter(3, a)?;
//! assert_eq!(relcount::format_xxh(counter.profile_xxh()), "54ec2d76ac22a964");
//! assert_eq!(counter.total(), 1);
//! let top: Vec<_> = counter.top("Donate").into_iter().flatten().collect();
//! assert_eq!(top[0].profile_id, "5c910938c484d023b1309bab");
//! assert_eq!(top[0].value, Value::Int(20));
//! assert_eq!(counter.sum("Like"), Some(Sum::Int(2)));
//! assert_eq!(counter.prop("Subscriber").map(|p| p.total()), Some(1));
//! # Ok::<(), relcount::Error>(())
//! ```
//!
//! ## Semantics
//!
//! The contract is the platform's "profile relations" API (docs/guide.md's
//! *Semantics* sums it up, docs/api.md gives its JSON calls): attach replaces a relation's values, strengthen adds
//! deltas, edit overwrites the listed values, detach removes, and deleting a profile
//! removes every relation it takes part in. Every write is atomic: it is validated
//! completely before anything changes, and a refused write changes nothing.
//!
//! - Int sums are exact (`i128`); float sums are exact too, kept as a Shewchuk
//!   expansion and reported correctly rounded (within half an ulp of the true sum, and
//!   exactly `0.0` when no value is left). Float values are limited to ±2^960 so that
//!   no sum can overflow.
//! - Top lists order by value descending, ties by initiator id ascending, and stay exact
//!   under detach, weakening and deletes, without rescanning large targets.
//!
//! ## Consistency
//!
//! - **A [`Counter`] is a snapshot of one profile's counters for one relation type,
//!   taken between two writes**: its `total`, every property's `total`, `sum` and `top`
//!   come from the same moment. A writer writes the next counters into the idle one of
//!   two copies and flips readers to it with one atomic store; a reader checks that no
//!   flip happened while it copied, so it never sees half a write (and never waits for
//!   one: the copy being written is not the one it reads).
//! - **Reads take no lock.** [`Engine::get_counter`] pins one epoch guard, finds the
//!   relation type and then the counters in one lookup by `(rel_id, XXH64 of the id)`
//!   in lock-free maps (`papaya`), checks the id, and copies the counters; it never waits
//!   for a writer, and a writer never waits for it. [`Engine::list`] takes the
//!   recipient's shard lock only to take its relations (two reference counts; the
//!   next write copies them instead of changing them) and sorts the page without it,
//!   so a page, its `total_count` and the counter of that moment always agree.
//! - **Linearizable per profile.** Writes to one recipient are serialised (a lock per
//!   shard of profiles) and published before the call returns: once a write returns,
//!   every later read sees it, and a read never sees a write that has not started.
//!   Each write takes effect at one instant (its flip), so reads of one
//!   profile, by any matching mode, are linearizable with the writes to it.
//! - **A profile is seen with the write that created it.** A write naming a new id
//!   creates the profile invisibly, publishes its first relation's counters (or, for
//!   an import, its data and index entries), and only then makes the profile visible,
//!   with one atomic store: [`get_counter`](Engine::get_counter), [`Engine::list`],
//!   [`Engine::contains_profile`] and [`Engine::profile_ids`] answer "not found" until
//!   that instant and the relation from it on, never a recipient without its relation.
//!   A new *initiator* is made visible just before the counters that name it, so a
//!   counter never names a profile that cannot be found.
//! - **Lookups by data are checked under the lock.** A write, detach or delete that
//!   names a profile by email, phone or field checks, holding the profile's lock, that
//!   the lookup still answers that profile (imports change data under the same lock);
//!   if not, it names its profile again. So it acts on a profile that matched at the
//!   instant it took effect.
//! - **A deleted profile reads "not found"**, from the instant its delete starts; a
//!   read racing the delete answers the counters from before it or "not found", never
//!   an empty counter the profile never had.
//! - **No deadlock.** A write touching two profiles locks both shards in ascending
//!   order; a profile delete locks one shard at a time; a write that would re-create an
//!   id whose delete is under way releases its locks and waits for the delete to end.
//!   No lock or guard is ever held when a call returns.
//! - Counters of different profiles are independent snapshots: a reader of two profiles
//!   may see a write in one and not yet in the other. A profile delete updates each
//!   touched counter atomically, one after the other; while it runs, the deleted id
//!   already reads as "not found", and its relations leave the other profiles'
//!   counters one counter at a time.
//! - **A snapshot is one point in time.** [`Engine::save_snapshot`] and
//!   [`Engine::compact`] fix their point by locking every shard for as long as it takes
//!   to note which profiles, data and published counters exist (reference counts, no
//!   copying; writers wait that long), then encode without any lock. The snapshot
//!   holds exactly the state at that point, with every delete under way completed
//!   (its log record is before the point); nothing that happens later changes it.
//!   Snapshot saves and compactions of one engine run one at a time, so a snapshot
//!   never replaces a newer one, and a directory reopens to exactly the acknowledged
//!   writes after any sequence of writes, deletes and compactions.
//!
//! ## Beyond the engine
//!
//! - Profiles can carry data (email, phone, custom fields, tags, subscriptions) and be
//!   named by any matching mode of the platform in every call: see [`Match`] and
//!   [`Engine::import_profile`]; hosts with their own profile store plug in a
//!   [`Resolver`].
//! - `relcount::api` (feature `json`, on by default) serves the platform's JSON calls, with
//!   tokens, limits, quotas and stable error codes; the `relcount-server` crate puts it
//!   on HTTP. With feature `serde`, a [`Counter`] and a [`Page`] serialise in the
//!   platform's JSON shape, for hosts with an HTTP stack of their own.
//! - Errors are one [`Error`] enum; a failure of the data directory is a
//!   [`StorageError`] that keeps its `io::Error` as its `source()`.
//! - [`EngineBuilder::open`] makes the engine durable: a crash-safe snapshot plus a
//!   write log with a sync policy ([`SyncPolicy`]), recovered at open;
//!   [`Engine::compact`] folds the log into a new snapshot.
//!
//! ## Where things are
//!
//! DESIGN.md in the repository describes the layout, module by module, and why it is
//! built this way.

#![forbid(unsafe_code)]

mod accum;
#[cfg(feature = "json")]
pub mod api;
mod command;
mod directory;
mod engine;
mod error;
pub mod limits;
mod map;
mod parallel;
mod persist;
mod profile;
mod record;
mod schema;
#[cfg(feature = "serde")]
mod serde_impls;
mod store;
mod sync;
mod value;
#[cfg(feature = "workload")]
pub mod workload;
mod write;

/// The examples of the README and of the pages in `docs/`, compiled and run as
/// doctests (some use the JSON layer).
#[cfg(all(doctest, feature = "json"))]
mod doc_pages {
    #[doc = include_str!("../README.md")]
    struct Readme;
    #[doc = include_str!("../docs/guide.md")]
    struct Guide;
    #[doc = include_str!("../docs/api.md")]
    struct Api;
    #[doc = include_str!("../docs/durability.md")]
    struct Durability;
}

pub use accum::{Counter, PropCounter, Sum, TopItem};
pub use directory::resolver::{Resolution, Resolver};
pub use engine::{AutoCompact, Compactor, Engine, EngineBuilder, Page, Row};
pub use error::{Error, ErrorKind, StorageError, StorageKind};
pub use persist::log::LogStats;
pub use persist::snapshot::SnapshotStats;
pub use persist::{Skipped, SyncPolicy};
pub use profile::data::{Channel, FieldValue, Match, OwnedMatch, ProfileData, Subscription};
pub use profile::id::{ProfileHasher, ProfileId, ProfileStr, format_xxh, xxh64};
pub use schema::{PropSpec, RelationType};
pub use value::{PropKind, Value};
pub use write::{Op, Write};
