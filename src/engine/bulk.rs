//! Profiles in bulk: many looked up and made under every shard lock at once (a
//! snapshot's ids, `import_profiles`).

use super::{Engine, Named};
use crate::command::Command;
use crate::directory::Lookup;
use crate::error::Error;
use crate::profile::data::Normalized;
use crate::profile::{Profile, ProfileKey};
use crate::store;

/// A batch's profiles under every shard lock: each one live, or made (pending) when it
/// was missing.
pub(super) struct Found<'a> {
    pub(super) held: Vec<store::Held<'a>>,
    /// The profiles, in the order they were named.
    pub(super) table: Vec<Profile>,
    /// The ones made, with their places in `table`.
    pub(super) created: Vec<Profile>,
    pub(super) missing: Vec<usize>,
}

impl Engine {
    /// Creates id-only profiles of database `db` in bulk (a snapshot's profiles
    /// without data): each as [`import_profile`](Self::import_profile) with empty data
    /// would, so an existing one loses its data. All or nothing: a refused id is
    /// [`Error::InRow`]. Not logged (a snapshot load has no log).
    pub(crate) fn import_ids(&self, db: u32, ids: &[String]) -> Result<(), Error> {
        let mut named = ids
            .iter()
            .enumerate()
            .map(|(row, id)| {
                self.name(db, id).map_err(|error| Error::InRow {
                    row,
                    error: Box::new(error),
                })
            })
            .collect::<Result<Vec<Named>, Error>>()?;
        // An id given twice is one profile (made once: `create_many` takes each
        // missing key once).
        let mut seen = hashbrown::HashSet::new();
        named.retain(|n| seen.insert(n.key.clone()));
        let found = self.find_or_make(&named, crate::parallel::threads_for(named.len()))?;
        let mut made = found.missing.iter().peekable();
        for (i, p) in found.table.iter().enumerate() {
            if made.next_if(|&&m| m == i).is_none() {
                self.directory.set_data(p, Normalized::default());
            }
        }
        for p in &found.created {
            self.directory.activate(p);
        }
        Ok(())
    }

    /// Imports validated profiles in bulk (see `import_profiles`): looked up and made
    /// under every shard lock, logged as one record, then their data set.
    pub(super) fn store_profiles(&self, checked: Vec<(Named, Normalized)>) -> Result<(), Error> {
        // The last import of an id wins, as one import after another would.
        let mut last: hashbrown::HashMap<&ProfileKey, usize> = hashbrown::HashMap::new();
        for (i, (named, _)) in checked.iter().enumerate() {
            last.insert(&named.key, i);
        }
        let keep: Vec<bool> = (0..checked.len())
            .map(|i| last[&checked[i].0.key] == i)
            .collect();
        drop(last);
        let (named, data): (Vec<Named>, Vec<Normalized>) = checked
            .into_iter()
            .zip(keep)
            .filter_map(|(item, keep)| keep.then_some(item))
            .unzip();
        if named.is_empty() {
            return Ok(());
        }
        let Found {
            held: _held,
            table,
            created,
            ..
        } = self.find_or_make(&named, crate::parallel::threads_for(named.len()))?;
        let logged = self.log(|| {
            Command::Profiles(
                named
                    .iter()
                    .zip(&data)
                    .map(|(n, d)| (n.key.db, n.key.id.to_string(), d.to_data()))
                    .collect(),
            )
        });
        if let Err(e) = logged {
            return Err(self.abandon(&created, e));
        }
        for (p, d) in table.iter().zip(data) {
            self.directory.set_data(p, d);
        }
        // Visible by id and by their data at once.
        for p in &created {
            self.directory.activate(p);
        }
        Ok(())
    }

    /// Locks every shard and looks every profile up (on up to `threads` threads),
    /// making the missing ones, pending.
    pub(super) fn find_or_make(&self, named: &[Named], threads: usize) -> Result<Found<'_>, Error> {
        let (held, found) = self.lock_and_find(named, threads);
        let mut table = found;
        let missing: Vec<usize> = (0..table.len()).filter(|&i| table[i].is_none()).collect();
        let keys = missing.iter().map(|&i| named[i].key.clone()).collect();
        let created = self.directory.create_many(keys, threads)?;
        for (&i, p) in missing.iter().zip(&created) {
            table[i] = Some(p.clone());
        }
        Ok(Found {
            held,
            table: table.into_iter().flatten().collect(),
            created,
            missing,
        })
    }

    /// Locks every shard and looks every profile up (on up to `threads` threads): each
    /// live or missing. A profile whose delete is under way is waited for: its
    /// cascade, which needs these locks, finishes first.
    pub(super) fn lock_and_find(
        &self,
        named: &[Named],
        threads: usize,
    ) -> (Vec<store::Held<'_>>, Vec<Option<Profile>>) {
        let per = named.len().div_ceil(threads.max(1)).max(1);
        loop {
            let held = self.store.lock_all();
            let parts: Vec<&[Named]> = named.chunks(per).collect();
            let found: Vec<Lookup> = crate::parallel::run(parts, |part| {
                part.iter()
                    .map(|p| self.directory.lookup(&p.key))
                    .collect::<Vec<_>>()
            })
            .into_iter()
            .flatten()
            .collect();
            if !found.iter().any(|l| matches!(l, Lookup::Deleting)) {
                return (held, found.into_iter().map(Lookup::live).collect());
            }
            drop(held);
            std::thread::yield_now();
        }
    }
}
