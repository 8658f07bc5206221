//! Bulk import: a batch of attaches for one relation type, validated whole, logged as
//! one record, and applied target by target (each touched counter computed once).

use std::sync::Arc;

use super::{Engine, Named};
use crate::command::{BulkRow, Command};
use crate::directory::Lookup;
use crate::error::Error;
use crate::profile::data::Normalized;
use crate::profile::{Profile, ProfileKey};
use crate::record::{Record, WriteKind};
use crate::schema::Schema;
use crate::store;
use crate::value::Value;

/// A batch validated and named (not yet looked up): its distinct profiles, and its
/// rows as indexes into them with their records.
struct Batch {
    profiles: Vec<Named>,
    rows: Vec<store::BulkRow>,
}

/// A batch's profiles under every shard lock: each one live, or made (pending) when it
/// was missing.
struct Found<'a> {
    held: Vec<store::Held<'a>>,
    /// The profiles, in the order they were named.
    table: Vec<Profile>,
    /// The ones made, with their places in `table`.
    created: Vec<Profile>,
    missing: Vec<usize>,
}

impl Engine {
    /// Imports a batch of attaches for relation type `rel_id`: each row is
    /// `(profile_a id, profile_b id, weights)`, meaning exactly what
    /// [`attach`](Self::attach) with those arguments means, and rows apply in order
    /// (a pair given twice ends with the values of its last row). Returns the number
    /// of rows.
    ///
    /// The batch is **all or nothing**: every row is validated before anything
    /// changes; if one is refused, nothing is applied and the error is
    /// [`Error::InRow`] with the row's index (from 0) and why. On an engine with a
    /// data directory the batch is one log record, so recovery restores all of an
    /// acknowledged batch or none of it; that record may be at most 64 MiB (about
    /// 400,000 rows of 24-character ids): split larger imports.
    ///
    /// It is far faster than one attach a row: each recipient's counters are computed
    /// once for the batch, from its relations, and the batch is applied on all cores,
    /// a set of shards each. It holds every shard lock from the lookup of its
    /// profiles to the end (its log append included), so writers wait meanwhile, and
    /// so does [`list`](Self::list), which takes a recipient's shard lock for a moment;
    /// [`get_counter`](Self::get_counter) never waits. A reader sees each recipient's
    /// counters before the batch or after it, never between, but may see one
    /// recipient's new counters before another's. Memory: the batch's rows are held until it is applied, so
    /// feed a large backfill in batches (100,000 rows is a good size).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRelation`]; [`Error::InRow`] wrapping what
    /// [`attach`](Self::attach) would refuse for that row; [`Error::Storage`] when
    /// the log refuses the batch; [`Error::CapacityExceeded`]. Nothing is written on
    /// error.
    ///
    /// # Examples
    ///
    /// ```
    /// use relcount::{Engine, PropSpec, RelationType, Value};
    ///
    /// let engine = Engine::new();
    /// engine.define(RelationType::new(3, 1, 2).prop("Donate", PropSpec::int().sum()))?;
    /// let rows = [
    ///     ("a", "b1", [("Donate", Value::Int(20))]),
    ///     ("a", "b2", [("Donate", Value::Int(5))]),
    ///     ("a", "b1", [("Donate", Value::Int(7))]), // the last row of a pair wins
    /// ];
    /// assert_eq!(engine.import_relations(3, rows)?, 3);
    /// let counter = engine.get_counter(3, "a")?;
    /// assert_eq!(counter.total(), 2);
    /// assert_eq!(counter.prop("Donate").unwrap().sum(), Some(relcount::Sum::Int(12)));
    /// # Ok::<(), relcount::Error>(())
    /// ```
    pub fn import_relations<A, B, W, N>(
        &self,
        rel_id: u32,
        rows: impl IntoIterator<Item = (A, B, W)>,
    ) -> Result<usize, Error>
    where
        A: AsRef<str>,
        B: AsRef<str>,
        W: AsRef<[(N, Value)]>,
        N: AsRef<str>,
    {
        let schema = self.schema(rel_id)?;
        let batch = self.batch(schema, rows.into_iter().map(|(a, b, w)| (a, b, Ok(w))))?;
        self.apply_batch(schema, batch)
    }

    /// Replays a logged bulk import.
    pub(super) fn import_logged(
        &self,
        rel_id: u32,
        names: &[String],
        rows: &[BulkRow],
    ) -> Result<usize, Error> {
        let schema = self.schema(rel_id)?;
        let weights = |row: &BulkRow| {
            row.weights
                .iter()
                .map(|&(i, v)| match names.get(usize::from(i)) {
                    Some(name) => Ok((name.as_str(), v)),
                    None => Err(Error::InvalidArgument {
                        name: "weights",
                        reason: format!("property index {i} of {}", names.len()),
                    }),
                })
                .collect::<Result<Vec<_>, Error>>()
        };
        let batch = self.batch(
            schema,
            rows.iter()
                .map(|r| (r.a.as_str(), r.b.as_str(), weights(r))),
        )?;
        self.apply_batch(schema, batch)
    }

    /// Validates and names every row (nothing is looked up or changed yet).
    fn batch<A, B, W, N>(
        &self,
        schema: &Schema,
        rows: impl Iterator<Item = (A, B, Result<W, Error>)>,
    ) -> Result<Batch, Error>
    where
        A: AsRef<str>,
        B: AsRef<str>,
        W: AsRef<[(N, Value)]>,
        N: AsRef<str>,
    {
        let mut profiles: Vec<Named> = Vec::new();
        // Indexes into `profiles`, by the profile hash already computed.
        let mut known: hashbrown::HashTable<u32> = hashbrown::HashTable::new();
        let mut index_of = |named: Named| -> Result<u32, Error> {
            let eq = |&i: &u32| profiles[i as usize].key == named.key;
            if let Some(&i) = known.find(named.hash, eq) {
                return Ok(i);
            }
            let i = u32::try_from(profiles.len()).map_err(|_| Error::CapacityExceeded)?;
            known.insert_unique(named.hash, i, |&j| profiles[j as usize].hash);
            profiles.push(named);
            Ok(i)
        };
        let (lower, _) = rows.size_hint();
        let mut out = Vec::with_capacity(lower);
        for (n, (a, b, weights)) in rows.enumerate() {
            let in_row = |error: Error| Error::InRow {
                row: n,
                error: Box::new(error),
            };
            let row = (|| {
                // In the order `attach` checks them, so a row fails as it would.
                let changes = schema.resolve(weights?.as_ref())?;
                let a = self.name(schema.db_a(), a.as_ref())?;
                let b = self.name(schema.db_b(), b.as_ref())?;
                let record = Record::next(schema, None, WriteKind::Attach, &changes)?;
                Ok((a, b, record))
            })();
            let (a, b, record) = row.map_err(in_row)?;
            let (a, b) = (index_of(a).map_err(in_row)?, index_of(b).map_err(in_row)?);
            out.push(store::BulkRow { a, b, record });
        }
        Ok(Batch {
            profiles,
            rows: out,
        })
    }

    /// Looks up (or creates) the batch's profiles under every shard lock, logs the
    /// batch and applies it.
    fn apply_batch(&self, schema: &Arc<Schema>, batch: Batch) -> Result<usize, Error> {
        let Batch { profiles, rows } = batch;
        if rows.is_empty() {
            return Ok(0);
        }
        let threads = crate::parallel::threads_for(rows.len());
        let Found {
            mut held,
            table,
            created,
            missing,
        } = self.find_or_make(&profiles, threads)?;
        let logged = self.log(|| Self::bulk_command(schema, &table, &rows));
        if let Err(e) = logged {
            return Err(self.abandon(&created, e));
        }
        // As with a single attach: a created recipient becomes visible just after its
        // counters are published (it is never found without them), and a created
        // profile that only initiates, just before the counters that name it. A
        // created profile that is both (a self-relation, or a recipient that also
        // initiates another row) counts as a recipient, as a self-relation does in
        // `attach`: another recipient's top list may name it a moment before it is
        // found.
        let mut recipient = vec![false; table.len()];
        for row in &rows {
            recipient[row.a as usize] = true;
        }
        let activate = |early: bool| {
            for (p, &i) in created.iter().zip(&missing) {
                if recipient[i] != early {
                    self.directory.activate(p);
                }
            }
        };
        activate(true);
        let slots: Vec<u32> = table.iter().map(|p| p.slot).collect();
        let shards: Vec<usize> = profiles.iter().map(|p| p.shard).collect();
        let ends = store::BulkProfiles {
            profiles: &table,
            slots: &slots,
            shards: &shards,
        };
        self.store
            .set_many(&mut held, schema, &ends, &rows, threads);
        activate(false);
        Ok(rows.len())
    }

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
    /// making the missing ones, pending. A profile whose delete is under way is waited
    /// for: its cascade, which needs these locks, finishes first.
    fn find_or_make(&self, named: &[Named], threads: usize) -> Result<Found<'_>, Error> {
        let per = named.len().div_ceil(threads.max(1)).max(1);
        let (held, found) = loop {
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
                break (held, found);
            }
            drop(held);
            std::thread::yield_now();
        };
        let mut table: Vec<Option<Profile>> = found.into_iter().map(Lookup::live).collect();
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

    /// The log record of a batch: profiles by id, weights by property index.
    fn bulk_command(schema: &Schema, table: &[Profile], rows: &[store::BulkRow]) -> Command {
        let names = schema.props.iter().map(|p| p.name.to_string()).collect();
        let rows = rows
            .iter()
            .map(|r| BulkRow {
                a: table[r.a as usize].id.to_string(),
                b: table[r.b as usize].id.to_string(),
                weights: (0..schema.props.len())
                    .filter_map(|i| Some((i as u8, r.record.get(schema, i)?)))
                    .collect(),
            })
            .collect();
        Command::Bulk {
            rel_id: schema.rel_id(),
            names,
            rows,
        }
    }
}
