//! The writes: attach, strengthen, edit, detach and the cascading profile delete.

use smallvec::SmallVec;

use super::{Engine, Named};
use crate::command::Command;
use crate::directory::Lookup;
use crate::error::Error;
use crate::profile::Profile;
use crate::profile::data::Match;
use crate::record::{Record, WriteKind};
use crate::store::{Known, Locked};
use crate::value::Value;
use crate::write::{Op, Write};

impl Engine {
    /// Creates the relation from `profile_b` (database B) to `profile_a` (database A)
    /// with exactly the given values; an existing relation has all its values replaced,
    /// so a replayed attach is idempotent. Missing profiles are created.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRelation`], [`Error::InvalidProfileId`], and for the weights
    /// [`Error::UnknownProperty`], [`Error::DuplicateProperty`], [`Error::WrongType`],
    /// [`Error::NotFinite`], [`Error::FloatOverflow`]. Nothing is written on error.
    pub fn attach<'a, 'b>(
        &self,
        rel_id: u32,
        profile_a: impl Into<Match<'a>>,
        profile_b: impl Into<Match<'b>>,
        weights: &[(&str, Value)],
    ) -> Result<(), Error> {
        self.write(
            WriteKind::Attach,
            rel_id,
            &profile_a.into(),
            &profile_b.into(),
            weights,
        )
    }

    /// Adds the given deltas to the relation's numeric values (an unset value counts as
    /// 0; a negative delta weakens) and sets the given bools. Creates the relation (and
    /// missing profiles) if needed.
    ///
    /// # Errors
    ///
    /// As [`attach`](Self::attach), plus [`Error::IntOverflow`] when an int would leave
    /// the i64 range and [`Error::FloatOverflow`] when a float would exceed 2^960.
    pub fn strengthen<'a, 'b>(
        &self,
        rel_id: u32,
        profile_a: impl Into<Match<'a>>,
        profile_b: impl Into<Match<'b>>,
        deltas: &[(&str, Value)],
    ) -> Result<(), Error> {
        self.write(
            WriteKind::Strengthen,
            rel_id,
            &profile_a.into(),
            &profile_b.into(),
            deltas,
        )
    }

    /// Overwrites the given values; the others keep theirs. Creates the relation (and
    /// missing profiles) if needed.
    ///
    /// # Errors
    ///
    /// As [`attach`](Self::attach).
    pub fn edit<'a, 'b>(
        &self,
        rel_id: u32,
        profile_a: impl Into<Match<'a>>,
        profile_b: impl Into<Match<'b>>,
        values: &[(&str, Value)],
    ) -> Result<(), Error> {
        self.write(
            WriteKind::Edit,
            rel_id,
            &profile_a.into(),
            &profile_b.into(),
            values,
        )
    }

    pub(super) fn write<N: AsRef<str>>(
        &self,
        kind: WriteKind,
        rel_id: u32,
        profile_a: &Match<'_>,
        profile_b: &Match<'_>,
        weights: &[(N, Value)],
    ) -> Result<(), Error> {
        // Borrowed from the registry, which keeps it for the engine's life: no guard
        // held across the log's fsync, and no reference count every writer shares.
        let schema = self.schema(rel_id)?;
        let changes = schema.resolve(weights)?;
        let (a, b, mut locked, found_a, found_b) = loop {
            let a = self.named(schema.db_a(), profile_a)?;
            let b = self.named(schema.db_b(), profile_b)?;
            let (locked, found_a, found_b) = self.lock_named(&a, &b);
            // Named by data that changed since (or vanished): name them again. So a
            // profile found by its data is live here, and only one named by id or by
            // the host's resolver is ever missing, to be created.
            if self.still_named(&a, found_a.as_ref()) && self.still_named(&b, found_b.as_ref()) {
                break (a, b, locked, found_a, found_b);
            }
        };
        let (old, known) = match (&found_a, &found_b) {
            (Some(pa), Some(pb)) => self.store.relation(&mut locked, rel_id, (pa, a.shard), pb),
            // A profile created by this write has no relation yet.
            _ => (None, Known::Absent),
        };
        let record = Record::next(schema, old, kind, &changes)?;
        // Missing profiles are created pending: found by no read until the relation
        // that creates them is published with them (see `directory`).
        let mut created: SmallVec<[Profile; 2]> = SmallVec::new();
        let pa = match found_a {
            Some(p) => p,
            None => {
                let p = self.directory.create(a.key.clone())?;
                created.push(p.clone());
                p
            }
        };
        let pb = match found_b {
            Some(p) => p,
            // A relation from a profile to itself (one database on both ends).
            None if b.key == a.key => pa.clone(),
            None => match self.directory.create(b.key.clone()) {
                Ok(p) => {
                    created.push(p.clone());
                    p
                }
                Err(e) => return Err(self.abandon(&created, e)),
            },
        };
        // Everything is validated: log it before anything changes (a write the log
        // cannot take is refused), then apply. Profiles are logged by id.
        let logged = self.log(|| {
            let op = match kind {
                WriteKind::Attach => Op::Attach,
                WriteKind::Strengthen => Op::Strengthen,
                WriteKind::Edit => Op::Edit,
            };
            Command::Write(Write {
                op,
                rel_id,
                profile_a: a.key.id.to_string(),
                profile_b: b.key.id.to_string(),
                values: Self::owned_weights(weights),
            })
        });
        if let Err(e) = logged {
            return Err(self.abandon(&created, e));
        }
        // A created initiator becomes visible just before the counters that name it
        // (a counter never names a profile that cannot be found); a created recipient
        // just after them (it is never found without them).
        let recipient = |p: &Profile| p.same(&pa);
        for p in created.iter().filter(|p| !recipient(p)) {
            self.directory.activate(p);
        }
        self.store.set(
            &mut locked,
            schema,
            (&pa, a.shard),
            (&pb, b.shard),
            (Some(record), known),
        );
        for p in created.iter().filter(|p| recipient(p)) {
            self.directory.activate(p);
        }
        Ok(())
    }

    /// One write of the public vocabulary, through its single call.
    pub(super) fn write_one(&self, w: &Write) -> Result<(), Error> {
        let (a, b) = (Match::Id(&w.profile_a), Match::Id(&w.profile_b));
        let kind = match w.op {
            Op::Attach => WriteKind::Attach,
            Op::Strengthen => WriteKind::Strengthen,
            Op::Edit => WriteKind::Edit,
            Op::Detach => return self.detach(w.rel_id, a, b),
        };
        self.write(kind, w.rel_id, &a, &b, &w.values)
    }

    /// Locks the shards of both ends and looks both up: live or missing, never being
    /// deleted (a write that would re-create an id whose delete is under way lets the
    /// cascade, which needs these locks, finish first).
    fn lock_named(&self, a: &Named, b: &Named) -> (Locked<'_>, Option<Profile>, Option<Profile>) {
        loop {
            let locked = self.store.lock_pair(a.shard, b.shard);
            match (self.directory.lookup(&a.key), self.directory.lookup(&b.key)) {
                (Lookup::Deleting, _) | (_, Lookup::Deleting) => {
                    drop(locked);
                    std::thread::yield_now();
                }
                (la, lb) => return (locked, la.live(), lb.live()),
            }
        }
    }

    /// Undoes the creation of profiles whose write was refused; returns `e`.
    pub(super) fn abandon(&self, created: &[Profile], e: Error) -> Error {
        for p in created {
            self.directory.abandon(p);
        }
        e
    }

    /// Removes the relation from `profile_b` to `profile_a`.
    ///
    /// # Errors
    ///
    /// [`Error::ProfileNotFound`] when either profile does not exist,
    /// [`Error::RelationNotFound`] when the relation does not; plus
    /// [`Error::UnknownRelation`] and [`Error::InvalidProfileId`]. Nothing changes on
    /// error.
    pub fn detach<'a, 'b>(
        &self,
        rel_id: u32,
        profile_a: impl Into<Match<'a>>,
        profile_b: impl Into<Match<'b>>,
    ) -> Result<(), Error> {
        let schema = self.schema(rel_id)?;
        let (profile_a, profile_b) = (profile_a.into(), profile_b.into());
        let (a, b, mut locked, pa, pb) = loop {
            let a = self.named(schema.db_a(), &profile_a)?;
            let b = self.named(schema.db_b(), &profile_b)?;
            let locked = self.store.lock_pair(a.shard, b.shard);
            let (pa, pb) = (self.directory.get(&a.key), self.directory.get(&b.key));
            if self.still_named(&a, pa.as_ref()) && self.still_named(&b, pb.as_ref()) {
                break (a, b, locked, pa, pb);
            }
        };
        let pa = pa.ok_or_else(|| Self::not_found(&a))?;
        let pb = pb.ok_or_else(|| Self::not_found(&b))?;
        let (found, known) = self
            .store
            .relation(&mut locked, rel_id, (&pa, a.shard), &pb);
        if found.is_none() {
            return Err(Error::RelationNotFound {
                rel_id,
                profile_a: a.key.id.to_string(),
                profile_b: b.key.id.to_string(),
            });
        }
        self.log(|| {
            let (a, b) = (a.key.id.to_string(), b.key.id.to_string());
            Command::Write(Write::detach(rel_id, a, b))
        })?;
        let (a, b) = ((&pa, a.shard), (&pb, b.shard));
        self.store.set(&mut locked, schema, a, b, (None, known));
        Ok(())
    }

    /// Deletes a profile and every relation it takes part in, as recipient or as
    /// initiator; the counters of every profile it touched follow. Costs O(its
    /// relations), whatever the size of the engine.
    ///
    /// Each touched counter changes atomically, but not all at once: while the delete
    /// runs, a reader may see some of its relations gone and others not yet.
    ///
    /// # Errors
    ///
    /// [`Error::ProfileNotFound`], [`Error::InvalidProfileId`], and for a profile named
    /// by its data [`Error::NoMatch`], [`Error::Ambiguous`].
    pub fn delete_profile<'a>(
        &self,
        db_id: u32,
        profile: impl Into<Match<'a>>,
    ) -> Result<(), Error> {
        let profile = profile.into();
        let (profile, cascade, shard) = loop {
            let named = self.named(db_id, &profile)?;
            let mut held = self.store.lock(named.shard);
            let found = self.directory.get(&named.key);
            if !self.still_named(&named, found.as_ref()) {
                continue; // named by data that changed since: name it again
            }
            let profile = found.ok_or_else(|| Self::not_found(&named))?;
            self.log(|| Command::Delete {
                db: db_id,
                id: profile.id.to_string(),
            })?;
            // Marked deleted before anything is removed (see `profile::cell`).
            self.directory.unlink(&profile);
            let mut rel_ids: Vec<u32> = Vec::new();
            self.schemas.each(|s| {
                if s.db_a() == db_id {
                    rel_ids.push(s.rel_id());
                }
                true
            });
            let cascade = self
                .store
                .remove_profile(&mut held, &profile, rel_ids.into_iter());
            break (profile, cascade, named.shard);
        };
        // One lock at a time from here.
        self.store.finish(cascade, &profile);
        // Under its shard's lock, as every change to a profile (a snapshot point is
        // taken with every shard locked: the release is before it or after).
        let _held = self.store.lock(shard);
        self.directory.release(&profile);
        Ok(())
    }
}
