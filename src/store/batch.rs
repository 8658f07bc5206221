//! A batch of writes with every shard held: planned (each pair's writes folded, in
//! order, from its current values, refusals found) before anything changes, then set
//! target by target, each touched target changed once and its counters published
//! once. Both steps run on all cores, a set of shards each.

use std::sync::Arc;

use super::{Held, Store, TargetKey, spread};
use crate::error::Error;
use crate::profile::Profile;
use crate::record::{Record, WriteKind};
use crate::schema::{Changes, Schema};
use crate::store::Known;
use crate::store::shard::Shard;

/// What one row does to its pair.
pub(crate) enum Change {
    /// Set these values, whatever the pair had (an attach).
    Set(Record),
    /// Compute the values from the pair's current ones (a strengthen or an edit).
    Fold(WriteKind, Changes),
    /// Remove the relation (a detach): refused when there is none.
    Remove,
}

/// One row of a batch: the relation of type `schemas[ty]` from `profiles[b]` to
/// `profiles[a]` (indexes into the batch's tables) and what it does.
pub(crate) struct Row {
    pub(crate) a: u32,
    pub(crate) b: u32,
    pub(crate) ty: u32,
    pub(crate) change: Change,
}

/// A batch as the store takes it: its relation types, its profiles (each live, or
/// made pending for it) with each one's slot and shard, and its rows in order.
pub(crate) struct Batch<'a> {
    pub(crate) schemas: &'a [&'a Arc<Schema>],
    pub(crate) profiles: &'a [Profile],
    pub(crate) slots: &'a [u32],
    pub(crate) shards: &'a [usize],
    pub(crate) rows: &'a [Row],
}

/// A refused row: its index in the batch, and why.
pub(crate) type Refused = (usize, Error);

/// What a batch will set: per shard, per touched target whose rows are not all
/// [`Change::Set`], each pair's final values (`None`: removed) in the order the
/// pairs first appear; the other targets take their rows as they are. Made by
/// [`Store::plan`], spent by [`Store::commit`].
pub(crate) struct Plan {
    shards: Vec<Vec<Part>>,
}

/// One target's part of a batch.
struct Part {
    ty: u32,
    a: u32,
    /// Row indexes, in batch order.
    rows: Vec<u32>,
    /// For a target with rows other than sets: each pair's final values, and where
    /// the pair's relation was when planned.
    folded: Option<Vec<(u32, Option<Record>, Known)>>,
}

impl Store {
    /// Plans `batch` (see [`Plan`]), with every shard `held`, on up to `threads`
    /// threads. A row that cannot apply (a fold past a number's range, a remove of a
    /// missing relation) is refused: with `skip`, it is left out (the pair keeps what
    /// it had) and listed; without, the first refused row in batch order is the
    /// answer and nothing is planned.
    pub(crate) fn plan(
        &self,
        held: &mut [Held<'_>],
        batch: &Batch<'_>,
        threads: usize,
        skip: bool,
    ) -> Result<(Plan, Vec<Refused>), Refused> {
        let mut by_shard: Vec<Vec<u32>> = vec![Vec::new(); held.len()];
        for (i, row) in (0u32..).zip(batch.rows) {
            by_shard[batch.shards[row.a as usize]].push(i);
        }
        let shards: Vec<usize> = (0..held.len()).collect();
        let work: Vec<Vec<(usize, Vec<u32>)>> = shards
            .into_iter()
            .zip(by_shard)
            .map(|(s, rows)| {
                if rows.is_empty() {
                    Vec::new()
                } else {
                    vec![(s, rows)]
                }
            })
            .collect();
        let planned = crate::parallel::run(spread(held, work, threads), |part| {
            part.into_iter()
                .map(|(shard, mut mine)| {
                    let (s, rows) = mine.pop().expect("one entry a shard");
                    (s, self.plan_shard(shard, batch, rows, skip))
                })
                .collect::<Vec<_>>()
        });
        let mut plan = Plan {
            shards: (0..held.len()).map(|_| Vec::new()).collect(),
        };
        let mut refused = Vec::new();
        for (s, (parts, no)) in planned.into_iter().flatten() {
            plan.shards[s] = parts;
            refused.extend(no);
        }
        refused.sort_by_key(|r| r.0);
        if !skip && !refused.is_empty() {
            return Err(refused.swap_remove(0));
        }
        Ok((plan, refused))
    }

    /// One shard's targets of a batch: `mine` are the rows whose recipients live in
    /// it. Returns their parts and the refused rows (the first of each target only,
    /// without `skip`).
    fn plan_shard(
        &self,
        shard: &Shard,
        batch: &Batch<'_>,
        mut mine: Vec<u32>,
        skip: bool,
    ) -> (Vec<Part>, Vec<Refused>) {
        let row = |i: u32| &batch.rows[i as usize];
        // Stable: each target's rows stay in batch order.
        mine.sort_by_key(|&i| (row(i).ty, row(i).a));
        let mut parts = Vec::new();
        let mut refused = Vec::new();
        for run in mine.chunk_by(|&x, &y| (row(x).ty, row(x).a) == (row(y).ty, row(y).a)) {
            let (ty, a) = (row(run[0]).ty, row(run[0]).a);
            let folded = run
                .iter()
                .any(|&i| !matches!(row(i).change, Change::Set(_)))
                .then(|| {
                    let schema = batch.schemas[ty as usize];
                    let target = shard
                        .targets
                        .get(&(schema.rel_id(), batch.slots[a as usize]));
                    self.fold(schema, target, batch, run, skip, &mut refused)
                });
            parts.push(Part {
                ty,
                a,
                rows: run.to_vec(),
                folded,
            });
        }
        (parts, refused)
    }

    /// Folds one target's rows (`run`, in batch order) pair by pair from the values
    /// the target holds; refused rows go to `refused`.
    fn fold(
        &self,
        schema: &Schema,
        target: Option<&crate::accum::target::Target>,
        batch: &Batch<'_>,
        run: &[u32],
        skip: bool,
        refused: &mut Vec<Refused>,
    ) -> Vec<(u32, Option<Record>, Known)> {
        // Per initiator: where the pair's relation was before (if it had one), and its
        // values now.
        let mut at: hashbrown::HashMap<u32, usize> = hashbrown::HashMap::new();
        let mut pairs: Vec<(u32, Known, Option<Record>)> = Vec::new();
        for &i in run {
            let row = &batch.rows[i as usize];
            let k = *at.entry(row.b).or_insert_with(|| {
                let pb = &batch.profiles[row.b as usize];
                let (known, had) = match target.and_then(|t| t.find(pb, &self.slots)) {
                    Some((at, r)) => (Known::At(at), Some(r.to_record())),
                    None => (Known::Absent, None),
                };
                pairs.push((row.b, known, had));
                pairs.len() - 1
            });
            let now = &mut pairs[k].2;
            let next = match &row.change {
                Change::Set(rec) => Ok(Some(rec.clone())),
                Change::Fold(kind, changes) => {
                    Record::next(schema, now.as_ref().map(Record::view), *kind, changes).map(Some)
                }
                Change::Remove if now.is_some() => Ok(None),
                Change::Remove => Err(Error::RelationNotFound {
                    rel_id: schema.rel_id(),
                    profile_a: batch.profiles[row.a as usize].id.to_string(),
                    profile_b: batch.profiles[row.b as usize].id.to_string(),
                }),
            };
            match next {
                Ok(next) => *now = next,
                Err(e) => {
                    refused.push((i as usize, e));
                    if !skip {
                        break;
                    }
                }
            }
        }
        pairs
            .into_iter()
            .filter(|(_, had, now)| matches!(had, Known::At(_)) || now.is_some())
            .map(|(b, had, now)| (b, now, had))
            .collect()
    }

    /// Sets what `plan` planned for `batch`, with every shard `held`, on up to
    /// `threads` threads: each touched target is changed once and its counters
    /// published once, and the reverse index gains the relations that are new and
    /// loses the ones removed. A row `refused` (by [`plan`](Self::plan), with
    /// `skip`) is left out.
    pub(crate) fn commit(
        &self,
        held: &mut [Held<'_>],
        batch: &Batch<'_>,
        plan: Plan,
        threads: usize,
    ) {
        let work: Vec<Vec<Part>> = plan.shards;
        let changed = crate::parallel::run(spread(held, work, threads), |part| {
            let mut changed = Vec::new();
            for (shard, parts) in part {
                for p in parts {
                    self.commit_target(shard, batch, p, &mut changed);
                }
            }
            changed
        });
        self.index_initiators(held, changed.into_iter().flatten(), threads);
    }

    /// One target's part of [`commit`](Self::commit). Pushes `(initiator slot,
    /// initiator shard, target, added)` of each relation added or removed.
    fn commit_target(
        &self,
        shard: &mut Shard,
        batch: &Batch<'_>,
        part: Part,
        changed: &mut Vec<(u32, usize, TargetKey, bool)>,
    ) {
        let schema = batch.schemas[part.ty as usize];
        let a = part.a as usize;
        let (pa, key) = (&batch.profiles[a], (schema.rel_id(), batch.slots[a]));
        // Places found when planned stay true while no row removes a relation (a
        // removal moves the last relation into the hole): then no row searches again.
        let known = part
            .folded
            .as_ref()
            .is_some_and(|f| f.iter().all(|(_, r, _)| r.is_some()));
        let places: Vec<Known> = match &part.folded {
            Some(folded) if known => folded.iter().map(|f| f.2).collect(),
            _ => Vec::new(),
        };
        let sets: Vec<(u32, Option<&Record>)> = match &part.folded {
            Some(folded) => folded.iter().map(|(b, r, _)| (*b, r.as_ref())).collect(),
            None => part
                .rows
                .iter()
                .map(|&i| {
                    let row = &batch.rows[i as usize];
                    match &row.change {
                        Change::Set(rec) => (row.b, Some(rec)),
                        _ => unreachable!("a target of sets alone"),
                    }
                })
                .collect(),
        };
        if sets.is_empty() {
            return;
        }
        let target = self.target_of(shard, schema, pa, key);
        let shared = target.shares_key;
        let before = target.len();
        let rows: Vec<(u32, &Profile, Option<&Record>)> = sets
            .iter()
            .map(|&(b, r)| (batch.slots[b as usize], &batch.profiles[b as usize], r))
            .collect();
        let (fresh, moved) = target.apply_many(&rows, &places, self.index_above, &self.slots);
        let after = target.len();
        for (j, new) in moved {
            let b = sets[j].0 as usize;
            changed.push((batch.slots[b], batch.shards[b], key, new));
        }
        self.publish(shard, key, (before, after), pa, fresh, shared);
    }
}
