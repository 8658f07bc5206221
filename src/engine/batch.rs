//! Batches of writes: [`Engine::apply`], [`Engine::import_relations`] and the replay of
//! logged writes go one way. Every row is checked and named; every profile is looked up
//! (or made) under every shard lock; each pair's writes are folded in order and every
//! refusal found before anything changes; the batch is logged as one record; then each
//! touched target is changed once and its counters published once, on all cores.

use std::sync::Arc;

use super::Engine;
use crate::command::{BulkRow, Command};
use crate::error::Error;
use crate::profile::Profile;
use crate::record::{Record, WriteKind};
use crate::schema::Schema;
use crate::store::{self, Change};
use crate::value::Value;
use crate::write::{Op, Write};

/// A batch checked and named, not yet looked up.
struct Checked<'e> {
    /// Its relation types; rows name them by index.
    schemas: Vec<&'e Arc<Schema>>,
    /// Its distinct profiles; rows name them by index.
    profiles: Vec<super::Named>,
    rows: Vec<store::Row>,
    /// Each row's index in what the caller gave (a row refused while checking, when
    /// refusals are skipped, is left out).
    given: Vec<usize>,
    /// Rows refused while checking, by their index in what the caller gave.
    refused: Vec<(usize, Error)>,
    /// When refusals are not skipped: the first row refused while checking (the rows
    /// after it are left out). The batch is refused, by this row or by an earlier one
    /// that its place in the batch refuses (a detach of a missing relation).
    failed: Option<(usize, Error)>,
}

/// One row checked and named (see `Engine::check_row`): its type's schema, its two
/// ends, what it does.
type Checked1<'e> = (&'e Arc<Schema>, super::Named, super::Named, Change);

/// The log record of a batch, from its profiles (each live or made) and its rows.
type Logger<'a> = &'a dyn Fn(&[Profile], &[store::Row]) -> Command;

/// `error` as the refusal of row `row` of a batch.
fn in_row(row: usize, error: Error) -> Error {
    Error::InRow {
        row,
        error: Box::new(error),
    }
}

impl Engine {
    /// Applies a batch of writes, in order: the batch ends as the writes one after
    /// another would end it, so a strengthen after an attach of the same pair adds to
    /// the attached values, and a detach removes what the writes before it made.
    /// Returns the number of writes.
    ///
    /// The batch is **all or nothing**: every write is checked (against the state
    /// left by the writes before it) before anything changes; if one is refused,
    /// nothing is applied and the error is [`Error::InRow`] with the write's index
    /// (from 0) and why. On an engine with a data directory the batch is one log
    /// record (at most 64 MiB), so recovery restores all of an acknowledged batch or
    /// none of it.
    ///
    /// A batch is much cheaper per write than single calls: its profiles are looked
    /// up together, each touched counter is computed and published once, and it runs
    /// on all cores, a set of shards each. Like
    /// [`import_relations`](Self::import_relations), it holds every shard lock from
    /// the lookup of its profiles to the end, so writers wait meanwhile;
    /// [`get_counter`](Self::get_counter) never waits, and sees each recipient's
    /// counters before the batch or after it, never between.
    ///
    /// # Errors
    ///
    /// [`Error::InRow`] wrapping what the write's single call would refuse at its
    /// place in the batch ([`Error::UnknownRelation`], [`Error::InvalidProfileId`],
    /// the values' errors, [`Error::IntOverflow`], [`Error::ProfileNotFound`] and
    /// [`Error::RelationNotFound`] for a detach, [`Error::InvalidArgument`] for a
    /// detach given values); [`Error::Storage`] when the log refuses the batch;
    /// [`Error::CapacityExceeded`]. Nothing is written on error.
    ///
    /// # Examples
    ///
    /// ```
    /// use relcount::{Engine, PropSpec, RelationType, Value, Write};
    ///
    /// let engine = Engine::new();
    /// engine.define(RelationType::new(3, 1, 2).prop("Like", PropSpec::int().sum()))?;
    /// let likes: Vec<Write> = (0..1000)
    ///     .map(|i| Write::strengthen(3, "a", format!("b{}", i % 10), [("Like", Value::Int(1))]))
    ///     .collect();
    /// assert_eq!(engine.apply(&likes)?, 1000);
    /// assert_eq!(engine.get_counter(3, "a")?.total(), 10);
    ///
    /// // A refused write refuses the batch: nothing of it is applied.
    /// let err = engine.apply(&[Write::attach(3, "a", "c", [("Like", Value::Int(1))]),
    ///                          Write::detach(3, "a", "nobody")]).unwrap_err();
    /// assert!(matches!(err, relcount::Error::InRow { row: 1, .. }));
    /// assert_eq!(engine.get_counter(3, "a")?.total(), 10);
    /// # Ok::<(), relcount::Error>(())
    /// ```
    pub fn apply(&self, writes: &[Write]) -> Result<usize, Error> {
        let checked = self.check_writes(writes, false);
        self.run(
            checked,
            false,
            Some(&|_, _| Command::Batch(writes.to_vec())),
        )?;
        Ok(writes.len())
    }

    /// Imports a batch of attaches for relation type `rel_id`: each row is
    /// `(profile_a id, profile_b id, weights)`, meaning exactly what
    /// [`attach`](Self::attach) with those arguments means, and rows apply in order
    /// (a pair given twice ends with the values of its last row). Returns the number
    /// of rows. It is [`apply`](Self::apply) with attaches of one type, logged more
    /// compactly.
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
    /// recipient's new counters before another's. Memory: the batch's rows are held
    /// until it is applied, so feed a large backfill in batches (100,000 rows is a
    /// good size).
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
        let given = rows
            .into_iter()
            .map(|(a, b, w)| (Op::Attach, rel_id, a, b, Ok(w)));
        let checked = self.check(given, false);
        let n = checked.rows.len();
        self.run(
            checked,
            false,
            Some(&|table, rows| Self::bulk_command(schema, table, rows)),
        )?;
        Ok(n)
    }

    /// Replays a logged bulk import (all or nothing, as it was accepted).
    pub(super) fn import_logged(
        &self,
        rel_id: u32,
        names: &[String],
        rows: &[BulkRow],
    ) -> Result<usize, Error> {
        self.schema(rel_id)?;
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
        let given = rows
            .iter()
            .map(|r| (Op::Attach, rel_id, r.a.as_str(), r.b.as_str(), weights(r)));
        let checked = self.check(given, false);
        self.run(checked, false, None)?;
        Ok(rows.len())
    }

    /// Replays writes logged one by one, as one batch that skips what this version
    /// refuses: returns the refused writes, by index, in order.
    pub(super) fn replay_writes(&self, writes: &[Write]) -> Vec<(usize, Error)> {
        let run = self.run(self.check_writes(writes, true), true, None);
        match run {
            Ok(refused) => refused,
            // Not a row's refusal (a batch too large for the engine's tables): every
            // write is refused with it.
            Err(e) => (0..writes.len()).map(|i| (i, e.clone())).collect(),
        }
    }

    /// Checks and names every row (nothing is looked up or changed yet), in the order
    /// the single calls check them, so a row fails as its call would. A refused row
    /// ends the batch there (see [`Checked::failed`]), or with `skip` is left out and
    /// listed.
    fn check<A, B, W, N>(
        &self,
        rows: impl Iterator<Item = (Op, u32, A, B, Result<W, Error>)>,
        skip: bool,
    ) -> Checked<'_>
    where
        A: AsRef<str>,
        B: AsRef<str>,
        W: AsRef<[(N, Value)]>,
        N: AsRef<str>,
    {
        let (lower, _) = rows.size_hint();
        let rows = rows.map(|(op, rel_id, a, b, values)| {
            self.check_row(op, rel_id, a.as_ref(), b.as_ref(), values)
        });
        self.gather(rows, lower, skip)
    }

    /// [`check`](Self::check) of writes of the public vocabulary: each row checked and
    /// named on all cores when they are many (hashing and checking ids is most of
    /// it), then gathered in order. A detach given values is refused.
    fn check_writes(&self, writes: &[Write], skip: bool) -> Checked<'_> {
        let one = |w: &Write| {
            let values = (w.op != Op::Detach || w.values.is_empty())
                .then_some(w.values.as_slice())
                .ok_or_else(|| Error::InvalidArgument {
                    name: "values",
                    reason: "a detach takes no values".into(),
                });
            self.check_row(w.op, w.rel_id, &w.profile_a, &w.profile_b, values)
        };
        let rows = crate::parallel::map(writes, one);
        self.gather(rows.into_iter(), writes.len(), skip)
    }

    /// One row checked and named: its type's schema, its ends, what it does.
    fn check_row<N: AsRef<str>>(
        &self,
        op: Op,
        rel_id: u32,
        a: &str,
        b: &str,
        values: Result<impl AsRef<[(N, Value)]>, Error>,
    ) -> Result<Checked1<'_>, Error> {
        let schema = self.schema(rel_id)?;
        let changes = match op {
            Op::Detach => {
                values?;
                None
            }
            _ => Some(schema.resolve(values?.as_ref())?),
        };
        let a = self.name(schema.db_a(), a)?;
        let b = self.name(schema.db_b(), b)?;
        let change = match (op, changes) {
            (Op::Attach, Some(changes)) => {
                Change::Set(Record::next(schema, None, WriteKind::Attach, &changes)?)
            }
            (Op::Strengthen, Some(changes)) => Change::Fold(WriteKind::Strengthen, changes),
            (Op::Edit, Some(changes)) => Change::Fold(WriteKind::Edit, changes),
            _ => Change::Remove,
        };
        Ok((schema, a, b, change))
    }

    /// Rows checked one by one, gathered in order into a batch: its relation types
    /// and its distinct profiles as tables the rows index. A refused row ends the
    /// batch (see [`Checked::failed`]), or with `skip` is left out and listed.
    fn gather<'e>(
        &'e self,
        rows: impl Iterator<Item = Result<Checked1<'e>, Error>>,
        lower: usize,
        skip: bool,
    ) -> Checked<'e> {
        let mut checked = Checked {
            schemas: Vec::new(),
            profiles: Vec::new(),
            rows: Vec::with_capacity(lower),
            given: Vec::with_capacity(lower),
            refused: Vec::new(),
            failed: None,
        };
        let mut interned = super::Interned::default();
        let mut last_type: Option<(u32, u32)> = None;
        for (n, row) in rows.enumerate() {
            let named = row.and_then(|(schema, a, b, change)| {
                let rel_id = schema.rel_id();
                let ty = match last_type {
                    Some((id, ty)) if id == rel_id => ty,
                    _ => {
                        let ty = match checked.schemas.iter().position(|s| s.rel_id() == rel_id) {
                            Some(ty) => ty,
                            None => {
                                checked.schemas.push(schema);
                                checked.schemas.len() - 1
                            }
                        } as u32;
                        last_type = Some((rel_id, ty));
                        ty
                    }
                };
                let (a, b) = (interned.intern(a)?.0, interned.intern(b)?.0);
                Ok(store::Row { a, b, ty, change })
            });
            match named {
                Ok(row) => {
                    checked.rows.push(row);
                    checked.given.push(n);
                }
                Err(e) if skip => checked.refused.push((n, e)),
                Err(e) => {
                    checked.failed = Some((n, e));
                    break;
                }
            }
        }
        checked.profiles = interned.named;
        checked
    }

    /// Looks up (or makes) a checked batch's profiles under every shard lock, plans
    /// it, logs it with `log` (if given) and applies it. Returns the refused rows
    /// (by the caller's index, in order) when `skip`; without, a refused row is
    /// [`Error::InRow`] and nothing changes.
    fn run(
        &self,
        checked: Checked<'_>,
        skip: bool,
        log: Option<Logger<'_>>,
    ) -> Result<Vec<(usize, Error)>, Error> {
        let Checked {
            schemas,
            profiles,
            mut rows,
            mut given,
            mut refused,
            mut failed,
        } = checked;
        let fail = |failed: Option<(usize, Error)>| match failed {
            Some((row, e)) => Err(in_row(row, e)),
            None => Ok(()),
        };
        if rows.is_empty() {
            fail(failed)?;
            return Ok(refused);
        }
        let threads = crate::parallel::threads_for(rows.len());
        let (mut held, found) = self.lock_and_find(&profiles, threads);
        // A detach needs both its ends to exist where it stands in the batch: live
        // before it, or made by a write before it. Only a write makes a profile.
        let mut alive: Vec<bool> = found.iter().map(Option::is_some).collect();
        let mut keep = vec![true; rows.len()];
        for (i, row) in rows.iter().enumerate() {
            let (a, b) = (row.a as usize, row.b as usize);
            if !matches!(row.change, Change::Remove) {
                (alive[a], alive[b]) = (true, true);
                continue;
            }
            if let Some(gone) = [a, b].into_iter().find(|&x| !alive[x]) {
                let e = Self::not_found(&profiles[gone]);
                if !skip {
                    // Refused here, unless a row before it is (found below).
                    failed = Some((given[i], e));
                    keep[i..].fill(false);
                    break;
                }
                refused.push((given[i], e));
                keep[i] = false;
            }
        }
        // The batch's profiles: live ones, and the missing ones a write makes. A
        // missing profile named only by refused rows is left out, and the rows
        // renumbered.
        let missing: Vec<usize> = (0..found.len())
            .filter(|&i| found[i].is_none() && alive[i])
            .collect();
        let keys = missing.iter().map(|&i| profiles[i].key.clone()).collect();
        let created = self.directory.create_many(keys, threads)?;
        let mut table = found;
        for (&i, p) in missing.iter().zip(&created) {
            table[i] = Some(p.clone());
        }
        let mut at = vec![u32::MAX; table.len()];
        let mut table_of = Vec::with_capacity(table.len());
        let (mut slots, mut shards) = (Vec::new(), Vec::new());
        for (i, p) in table.into_iter().enumerate() {
            if let Some(p) = p {
                at[i] = table_of.len() as u32;
                slots.push(p.slot);
                shards.push(profiles[i].shard);
                table_of.push(p);
            }
        }
        if keep.contains(&false) {
            let mut k = keep.iter();
            rows.retain(|_| *k.next().expect("a flag a row"));
            let mut k = keep.iter();
            given.retain(|_| *k.next().expect("a flag a row"));
        }
        if at.len() != table_of.len() {
            for row in &mut rows {
                (row.a, row.b) = (at[row.a as usize], at[row.b as usize]);
            }
        }
        let recipient_made: Vec<bool> = {
            let mut recipient = vec![false; table_of.len()];
            for row in &rows {
                recipient[row.a as usize] = true;
            }
            missing.iter().map(|&i| recipient[at[i] as usize]).collect()
        };
        let batch = store::Batch {
            schemas: &schemas,
            profiles: &table_of,
            slots: &slots,
            shards: &shards,
            rows: &rows,
        };
        let (plan, more) = match self.store.plan(&mut held, &batch, threads, skip) {
            Ok(planned) => planned,
            Err((i, e)) => return Err(self.abandon(&created, in_row(given[i], e))),
        };
        refused.extend(more.into_iter().map(|(i, e)| (given[i], e)));
        if let Err(e) = fail(failed) {
            return Err(self.abandon(&created, e));
        }
        if let Some(log) = log
            && let Err(e) = self.log(|| log(&table_of, &rows))
        {
            return Err(self.abandon(&created, e));
        }
        // As with a single write: a made recipient becomes visible just after its
        // counters are published (it is never found without them), and a made
        // profile that only initiates, just before the counters that name it. A made
        // profile that is both (a self-relation, or a recipient that also initiates
        // another row) counts as a recipient, as a self-relation does in `attach`:
        // another recipient's top list may name it a moment before it is found.
        let activate = |early: bool| {
            for (p, &late) in created.iter().zip(&recipient_made) {
                if late != early {
                    self.directory.activate(p);
                }
            }
        };
        activate(true);
        self.store.commit(&mut held, &batch, plan, threads);
        activate(false);
        refused.sort_by_key(|r| r.0);
        Ok(refused)
    }

    /// The log record of a bulk import: profiles by id, weights by property index.
    fn bulk_command(schema: &Schema, table: &[Profile], rows: &[store::Row]) -> Command {
        let names = schema.props.iter().map(|p| p.name.to_string()).collect();
        let rows = rows
            .iter()
            .map(|r| {
                let Change::Set(record) = &r.change else {
                    unreachable!("an import's rows are attaches")
                };
                BulkRow {
                    a: table[r.a as usize].id.to_string(),
                    b: table[r.b as usize].id.to_string(),
                    weights: (0..schema.props.len())
                        .filter_map(|i| Some((i as u8, record.get(schema, i)?)))
                        .collect(),
                }
            })
            .collect();
        Command::Bulk {
            rel_id: schema.rel_id(),
            names,
            rows,
        }
    }
}
