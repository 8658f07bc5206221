//! Naming profiles: turning a [`Match`] into the profile it names (the directory's
//! indexes or the host's [`Resolver`]), and importing profile data.

use super::{Engine, Named};
use crate::command::Command;
use crate::directory::resolver::Resolution;
use crate::directory::{Found, Lookup};
use crate::error::{Error, StorageKind, fail};
use crate::profile::data::{Match, Normalized, ProfileData, Query};
use crate::profile::id::ProfileId;
use crate::profile::{Profile, ProfileKey};

/// Reads a `profile_data` by data makes before it gives up: each is retried only when
/// the profile found was re-imported without that data between lookup and read.
const PROFILE_DATA_TRIES: usize = 16;

impl Engine {
    /// A profile id of database `db`, hashed and placed, not looked up.
    pub(super) fn name(&self, db: u32, id: &str) -> Result<Named, Error> {
        self.name_id(db, ProfileId::new(id)?, None)
    }

    fn name_id(&self, db: u32, id: ProfileId, query: Option<Query>) -> Result<Named, Error> {
        let hash = id.hash_with(self.store.hasher());
        Ok(Named {
            key: ProfileKey { db, id },
            hash,
            shard: self.store.shard_of(hash),
            query,
        })
    }

    /// The profile `m` names in database `db`, as an id to lock and look up: ids as
    /// given (a write may create them), other modes through the host's resolver (whose
    /// ids a write may create too) or the directory's indexes (which find only
    /// existing profiles).
    pub(super) fn named(&self, db: u32, m: &Match<'_>) -> Result<Named, Error> {
        let Some(query) = Query::of(m)? else {
            let Match::Id(id) = *m else {
                unreachable!("only Match::Id has no query")
            };
            return self.name(db, id);
        };
        match &self.resolver {
            Some(resolver) => self.resolved(db, &query, resolver.resolve(db, m)),
            None => {
                let guard = self.collector.enter();
                match self.directory.find(db, &query, &guard) {
                    Found::One(p) => self.name_id(db, p.id.clone(), Some(query)),
                    Found::None => Err(no_match(db, &query)),
                    Found::Many => Err(ambiguous(db, &query)),
                    Found::TooBroad => Err(too_broad(db, &query)),
                }
            }
        }
    }

    fn resolved(&self, db: u32, query: &Query, r: Resolution) -> Result<Named, Error> {
        match r {
            Resolution::Found(id) => self.name_id(db, ProfileId::new(&id)?, None),
            Resolution::NotFound => Err(no_match(db, query)),
            Resolution::Ambiguous => Err(ambiguous(db, query)),
        }
    }

    /// The live profile `m` names in database `db`, for a read. Lock-free.
    pub(super) fn find_profile(
        &self,
        db: u32,
        m: &Match<'_>,
        guard: &impl seize::Guard,
    ) -> Result<Profile, Error> {
        let named = match Query::of(m)? {
            Some(query) if self.resolver.is_none() => {
                return match self.directory.find(db, &query, guard) {
                    Found::One(p) => Ok(p),
                    Found::None => Err(no_match(db, &query)),
                    Found::Many => Err(ambiguous(db, &query)),
                    Found::TooBroad => Err(too_broad(db, &query)),
                };
            }
            _ => self.named(db, m)?,
        };
        self.directory
            .get(&named.key)
            .ok_or_else(|| Self::not_found(&named))
    }

    /// Whether `found` (looked up under its shard's lock) is still the one profile the
    /// lookup that named it answers. A profile named by its data may have lost that
    /// data, or another may have gained it, between the lookup and the lock; the
    /// write then names its profile again. (Data changes under the same lock, so
    /// the answer holds for as long as the lock is held.)
    pub(super) fn still_named(&self, named: &Named, found: Option<&Profile>) -> bool {
        let Some(query) = &named.query else {
            return true;
        };
        let Some(found) = found else {
            return false;
        };
        let guard = self.collector.enter();
        matches!(self.directory.find(named.key.db, query, &guard), Found::One(p) if p.same(found))
    }

    pub(super) fn not_found(named: &Named) -> Error {
        Self::not_found_id(named.key.db, &named.key.id)
    }

    /// "Profile `id` of database `db` not found".
    pub(super) fn not_found_id(db: u32, id: &ProfileId) -> Error {
        Error::ProfileNotFound {
            db_id: db,
            profile_id: id.to_string(),
        }
    }

    /// Creates or replaces profile `profile_id` of database `db_id` with `data`: its
    /// email, phone, custom fields and subscriptions, and every index entry that finds
    /// it. Its relations are kept.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidProfileId`]; [`Error::InvalidProfileData`] for an email that is
    /// not `local@domain`, a phone that is not 1 to 15 digits, an empty or repeated
    /// field name, a tag with a comma, more than 64 fields, subscriptions or tags, or a
    /// text over 256 bytes. Nothing changes on error.
    ///
    /// # Examples
    ///
    /// ```
    /// use relcount::{Engine, Match, ProfileData, PropSpec, RelationType, Value};
    ///
    /// let engine = Engine::new();
    /// engine.define(RelationType::new(1, 1, 2).prop("Like", PropSpec::int().sum()))?;
    /// let data = ProfileData { email: Some("Ann@Example.com".into()), ..Default::default() };
    /// engine.import_profile(1, "ann", data)?;
    /// engine.attach(1, Match::EmailProfile("ann@example.com"), "bob", &[("Like", Value::Int(1))])?;
    /// assert_eq!(engine.get_counter(1, "ann")?.total(), 1);
    /// # Ok::<(), relcount::Error>(())
    /// ```
    pub fn import_profile(
        &self,
        db_id: u32,
        profile_id: &str,
        data: ProfileData,
    ) -> Result<(), Error> {
        let named = self.name(db_id, profile_id)?;
        let data = Normalized::new(&data)?;
        self.store_profile(named, data)
    }

    /// The data of a profile as stored: normalised (emails trimmed and case-folded,
    /// phones as `+` and digits, texts trimmed, tags sorted and deduplicated, fields
    /// sorted by name, integer fields as their text). Importing it again changes
    /// nothing, and looking the profile up by any of it finds it. An id-only profile
    /// answers empty data.
    ///
    /// # Errors
    ///
    /// As [`get_counter`](Self::get_counter) for naming the profile.
    ///
    /// # Examples
    ///
    /// ```
    /// use relcount::{Engine, ProfileData};
    ///
    /// let engine = Engine::new();
    /// let data = ProfileData { email: Some(" Ann@Example.COM".into()), ..Default::default() };
    /// engine.import_profile(1, "ann", data)?;
    /// let stored = engine.profile_data(1, "ann")?;
    /// assert_eq!(stored.email.as_deref(), Some("ann@example.com"));
    /// # Ok::<(), relcount::Error>(())
    /// ```
    pub fn profile_data<'a>(
        &self,
        db_id: u32,
        profile: impl Into<Match<'a>>,
    ) -> Result<ProfileData, Error> {
        let guard = self.collector.enter();
        let m = profile.into();
        // A profile named by its data answers with data it matches: one imported
        // between the lookup and the read is looked up again.
        let query = match Query::of(&m)? {
            Some(query) if self.resolver.is_none() => Some(query),
            _ => None,
        };
        for _ in 0..PROFILE_DATA_TRIES {
            let profile = self.find_profile(db_id, &m, &guard)?;
            // Deleted since it was found: its slot's data may be another's by now.
            let data = self
                .directory
                .data(&profile)
                .ok_or_else(|| Self::not_found_id(profile.db, &profile.id))?;
            let matches = match (&query, &data) {
                (None, _) => true,
                (Some(query), Some(data)) => data.matches(query),
                (Some(_), None) => false,
            };
            if matches {
                return Ok(data.map(|d| d.to_data()).unwrap_or_default());
            }
        }
        Err(fail(
            StorageKind::Internal,
            None,
            "the profile's data changed under every read",
        ))
    }

    /// Imports several profiles, all or nothing: every one is validated before any is
    /// written (an invalid one leaves all unchanged), and the batch is one log record
    /// (recovery restores all of it or none). An id given twice ends with its last
    /// data. Each profile is replaced atomically; readers may see some of the batch
    /// before the rest. The batch is applied in bulk, holding every shard lock: writers
    /// and `list` wait meanwhile, `get_counter` and lookups never do.
    ///
    /// # Errors
    ///
    /// As [`import_profile`](Self::import_profile), for the first invalid profile;
    /// [`Error::Storage`] when the log refuses the batch (its record would pass
    /// 64 MiB). Nothing changes on error.
    pub fn import_profiles<'a>(
        &self,
        profiles: impl IntoIterator<Item = (u32, &'a str, ProfileData)>,
    ) -> Result<(), Error> {
        let checked = profiles
            .into_iter()
            .map(|(db, id, data)| Ok((self.name(db, id)?, Normalized::new(&data)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        self.store_profiles(checked)
    }

    fn store_profile(&self, named: Named, data: Normalized) -> Result<(), Error> {
        loop {
            let _shard = self.store.lock(named.shard);
            let found = match self.directory.lookup(&named.key) {
                Lookup::Deleting => {
                    drop(_shard);
                    std::thread::yield_now();
                    continue;
                }
                found => found,
            };
            let (profile, new) = match found.live() {
                Some(profile) => (profile, false),
                None => (self.directory.create(named.key.clone())?, true),
            };
            let logged = self.log(|| Command::Import {
                db: named.key.db,
                id: named.key.id.to_string(),
                data: data.to_data(),
            });
            if let Err(e) = logged {
                if new {
                    self.directory.abandon(&profile);
                }
                return Err(e);
            }
            self.directory.set_data(&profile, data);
            if new {
                // Visible by id and by its data at once.
                self.directory.activate(&profile);
            }
            return Ok(());
        }
    }
}

fn no_match(db_id: u32, query: &Query) -> Error {
    Error::NoMatch {
        db_id,
        query: query.describe(),
    }
}

fn too_broad(db_id: u32, query: &Query) -> Error {
    Error::LookupTooBroad {
        db_id,
        query: query.describe(),
    }
}

fn ambiguous(db_id: u32, query: &Query) -> Error {
    Error::Ambiguous {
        db_id,
        query: query.describe(),
    }
}
