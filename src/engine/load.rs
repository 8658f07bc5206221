//! A snapshot loaded into a new engine, a step at a time as its reader yields them.
//! Versions 1 and 2: relation types and profiles one call each, relations by id
//! through the batch path. Version 3: its profile table made in batches (each
//! profile looked up and made under every shard lock, on all cores), then its
//! targets placed whole from their columns (see `store::Store::install`). Not
//! logged: a load fills an engine before its log opens. What this version refuses
//! is skipped and listed (see `Engine::recovery_skipped`), and the load goes on.

use std::path::Path;

use super::Engine;
use crate::error::Error;
use crate::persist::Skipped;
use crate::persist::snapshot::{
    Item, LeftOut, ProfileRecord, Refused, SnapshotReader, TargetRecord, import_valid,
};
use crate::profile::Profile;
use crate::profile::data::Normalized;
use crate::store;

/// The snapshot's profile table as loaded so far: each entry the profile made for it
/// and its shard, or `None` when the load refused it.
type Table = Vec<Option<(Profile, usize)>>;

/// A snapshot load under way: its profile table so far, and the reverse index's
/// entries of the relations placed, indexed once at the end (see
/// [`Engine::finish_load`]).
#[derive(Default)]
pub(super) struct Loading {
    table: Table,
    initiated: store::Initiated,
}

/// A batch's answer as the snapshot's batches take it: which row was refused, if
/// one was (`Error::InRow`), or that the whole batch was.
fn refused<T>(done: Result<T, Error>) -> Refused {
    match done {
        Ok(_) => Ok(()),
        Err(Error::InRow { row, error }) => Err((Some(row), *error)),
        Err(e) => Err((None, e)),
    }
}

impl Engine {
    /// Loads a whole snapshot into this new engine, `file` named in what is skipped.
    pub(super) fn restore<R: std::io::Read>(
        &self,
        reader: &mut SnapshotReader<R>,
        file: &Path,
    ) -> Result<(), Error> {
        let mut loading = Loading::default();
        while let Some(item) = reader.next()? {
            if let Some(rel_id) = self.load_item(item, &mut loading, file) {
                reader.refuse_define(rel_id);
            }
        }
        self.finish_load(&mut loading);
        Ok(())
    }

    /// Ends the snapshot part of a load: the reverse index gains every relation
    /// placed, in one sorted merge a shard. Nothing reads that index before (a load
    /// only adds), and everything after (replay's deletes) finds it whole.
    pub(super) fn finish_load(&self, loading: &mut Loading) {
        let initiated = std::mem::take(&mut loading.initiated);
        if !initiated.is_empty() {
            let threads = crate::parallel::threads_for(self.relation_count() as usize);
            self.store.index_loaded(initiated, threads);
        }
    }

    /// Applies one step of a snapshot (of `file`), its profile table so far in
    /// `table`; notes what it refuses as skipped. Returns the relation type it
    /// refused to define, if it did (its reader must hear of it).
    pub(super) fn load_item(&self, item: Item, loading: &mut Loading, file: &Path) -> Option<u32> {
        let skip = |(offset, record): (u64, u64), reason: String| {
            self.note_skipped(Skipped {
                file: file.to_path_buf(),
                offset,
                record,
                reason,
            });
        };
        match item {
            Item::Define(at, def) => {
                let rel_id = def.rel_id();
                if let Err(e) = self.define(def) {
                    skip(at, format!("relation type: {e}"));
                    return Some(rel_id);
                }
            }
            Item::Import(at, db, id, data) => {
                if let Err(e) = self.import_profile(db, &id, data) {
                    skip(at, format!("profile {id:?} of database {db}: {e}"));
                }
            }
            Item::Ids(batch) => {
                import_valid(
                    &batch.ids,
                    |part| refused(self.import_ids(batch.db, part)),
                    |i, e| {
                        let (at, what) = batch.describe(i);
                        skip(at, format!("{what}: {e}"));
                    },
                );
            }
            Item::Relations(batch) => {
                import_valid(
                    &batch.rows,
                    |part| refused(self.import_logged(batch.rel_id, &batch.names, part)),
                    |i, e| {
                        let (at, what) = batch.describe(i);
                        skip(at, format!("{what}: {e}"));
                    },
                );
            }
            Item::Profiles(batch) => {
                let refused = self.load_profiles(&batch.profiles, &mut loading.table);
                for (i, why) in refused.into_iter().enumerate() {
                    if let Some(e) = why {
                        let (at, what) = batch.describe(i);
                        skip(at, format!("{what}: {e}"));
                    }
                }
            }
            Item::Targets(mut targets) => {
                for (t, row, why) in self.load_targets(&mut targets, loading) {
                    let (at, what) = targets[t].describe(row);
                    skip(at, format!("{what}: {why}"));
                }
            }
            Item::Skip(at, why) => skip(at, why),
        }
        None
    }

    /// Makes a batch of a snapshot's profiles, the next entries of `table`: each as
    /// [`import_profile`](Self::import_profile) would (an id given twice is one
    /// profile, with the data of its last entry). Returns, for each one, why it was
    /// refused, if it was.
    pub(super) fn load_profiles(
        &self,
        items: &[ProfileRecord],
        table: &mut Table,
    ) -> Vec<Option<Error>> {
        let mut refused: Vec<Option<Error>> = Vec::with_capacity(items.len());
        // Each item's place among the distinct profiles, if it was accepted.
        let mut place: Vec<Option<usize>> = Vec::with_capacity(items.len());
        let mut interned = super::Interned::default();
        let mut data: Vec<Option<Normalized>> = Vec::new();
        // Named and checked on all cores (hashing and checking ids is most of it).
        let checked = crate::parallel::map(items, |(db, id, d)| {
            let n = self.name(*db, id)?;
            let d = d.as_ref().map(Normalized::new).transpose()?;
            Ok::<_, Error>((n, d))
        });
        for checked in checked {
            match checked.and_then(|(n, d)| Ok((interned.intern(n)?, d))) {
                Ok(((i, new), d)) => {
                    if new {
                        data.push(d);
                    } else {
                        data[i as usize] = d;
                    }
                    refused.push(None);
                    place.push(Some(i as usize));
                }
                Err(e) => {
                    refused.push(Some(e));
                    place.push(None);
                }
            }
        }
        let named = interned.named;
        let threads = crate::parallel::threads_for(items.len());
        let found = match self.find_or_make(&named, threads) {
            Ok(found) => found,
            Err(e) => {
                // Past the engine's tables: every profile of the batch is refused.
                table.extend(items.iter().map(|_| None));
                return items.iter().map(|_| Some(e.clone())).collect();
            }
        };
        let (profiles, created) = (&found.table, &found.created);
        // A profile made here without data has none to set (and an existing one, met
        // again, loses what it had, as an import without data would).
        let mut made = found.missing.iter().peekable();
        for (i, (p, d)) in profiles.iter().zip(data).enumerate() {
            let new = made.next_if(|&&m| m == i).is_some();
            if d.is_some() || !new {
                self.directory.set_data(p, d.unwrap_or_default());
            }
        }
        for p in created {
            self.directory.activate(p);
        }
        for at in place {
            table.push(at.map(|i| (profiles[i].clone(), named[i].shard)));
        }
        refused
    }

    /// Places a batch of a snapshot's targets (their flags and numbers taken), their
    /// profiles named by index into `table`. Returns the relations left out: target,
    /// row, why.
    pub(super) fn load_targets(
        &self,
        targets: &mut [TargetRecord],
        loading: &mut Loading,
    ) -> Vec<LeftOut> {
        let table = &loading.table;
        let mut left = Vec::new();
        let mut columns = Vec::with_capacity(targets.len());
        // Each placed target's index in `targets`.
        let mut from = Vec::with_capacity(targets.len());
        let mut rows = 0;
        for (i, t) in targets.iter_mut().enumerate() {
            let recipient = self.schema(t.rel_id).and_then(|schema| {
                match table.get(t.a as usize).and_then(Option::as_ref) {
                    Some((p, shard)) if p.db == schema.db_a() => Ok((schema, p, *shard)),
                    _ => Err(Error::InvalidArgument {
                        name: "recipient",
                        reason: format!("profile {} of the snapshot is not one of database A", t.a),
                    }),
                }
            });
            match recipient {
                Ok((schema, a, shard_a)) => {
                    rows += t.initiators.len();
                    from.push(i);
                    columns.push(store::Columns {
                        schema,
                        a: a.clone(),
                        shard_a,
                        initiators: t.initiators.clone(),
                        flags: std::mem::take(&mut t.flags),
                        nums: std::mem::take(&mut t.nums),
                    });
                }
                Err(e) => left.extend((0..t.initiators.len()).map(|row| (i, row, e.to_string()))),
            }
        }
        let mut held = self.store.lock_all();
        let threads = crate::parallel::threads_for(rows);
        let placed = self
            .store
            .install(&mut held, columns, table, threads, &mut loading.initiated);
        left.extend(
            placed
                .into_iter()
                .map(|(t, row, why)| (from[t], row, why.to_string())),
        );
        left.sort_unstable_by_key(|l| (l.0, l.1));
        left
    }
}

#[cfg(test)]
mod tests {
    use crate::persist::snapshot;
    use crate::schema::{PropSpec, RelationType};
    use crate::{Engine, ProfileData, Value};

    /// Everything a reader can ask of `e` about the ids `ids` (counters and pages of
    /// every type, profiles and their data), as text to compare.
    fn state(e: &Engine, ids: &[String]) -> Vec<String> {
        let mut out = vec![format!("{} relations", e.relation_count())];
        for db in [1, 2] {
            let mut p: Vec<String> = e.profile_ids(db).iter().map(|p| p.to_string()).collect();
            p.sort();
            out.push(format!("db {db}: {p:?}"));
            for id in ids {
                out.push(format!("{db} {id} {:?}", e.profile_data(db, id.as_str())));
            }
        }
        for rel in [1, 2, 3] {
            for id in ids {
                out.push(format!("{rel} {id} {:?}", e.get_counter(rel, id.as_str())));
                out.push(format!(
                    "{rel} {id} {:?}",
                    e.list(rel, id.as_str(), 0, 1000)
                ));
            }
        }
        out
    }

    /// A version-2 snapshot (initiators by id, values by property) written from the
    /// same point in time as a version-3 one (columns, initiators by index) loads into
    /// the same engine, and both into the engine they were taken from: every counter,
    /// page, profile and its data.
    #[test]
    fn version_2_and_3_snapshots_load_the_same_state() {
        let e = Engine::builder().shards(4).top_index_threshold(4).build();
        e.define(
            RelationType::new(1, 1, 2)
                .prop("Donate", PropSpec::int().sum().top(3))
                .prop("Sub", PropSpec::bool())
                .prop("Score", PropSpec::float().sum().top(2)),
        )
        .expect("rel 1");
        e.define(RelationType::new(2, 2, 2).prop("W", PropSpec::int().top(2)))
            .expect("rel 2");
        e.define(RelationType::new(3, 2, 1).prop("F", PropSpec::bool()))
            .expect("rel 3");
        let hex = |i: u64| format!("{:024x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut ids: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
        ids.extend((0..40).map(hex));
        let mut rng = crate::workload::Rng::new(7);
        for _ in 0..3000 {
            let a = &ids[rng.below(ids.len() as u64) as usize];
            let b = &ids[rng.below(ids.len() as u64) as usize];
            let v = rng.below(9) as i64 - 4;
            let done = match rng.below(5) {
                0 => e.attach(
                    1,
                    a.as_str(),
                    b.as_str(),
                    &[("Donate", Value::Int(v)), ("Sub", Value::Bool(v > 0))],
                ),
                1 => e.strengthen(
                    1,
                    a.as_str(),
                    b.as_str(),
                    &[("Score", Value::Float(v as f64 / 4.0))],
                ),
                2 => e.attach(2, a.as_str(), b.as_str(), &[("W", Value::Int(v))]),
                3 => e.attach(3, a.as_str(), b.as_str(), &[("F", Value::Bool(v > 0))]),
                _ => e.detach(1, a.as_str(), b.as_str()),
            };
            let _ = done;
        }
        e.delete_profile(2, ids[3].as_str()).expect("delete");
        let data = ProfileData {
            email: Some("x@example.com".into()),
            ..ProfileData::default()
        };
        e.import_profile(1, "p5", data).expect("data");
        e.import_profile(2, "only", ProfileData::default())
            .expect("id-only");
        ids.push("only".into());
        let frozen = {
            let mut serial = e.snapshot_lock.lock().expect("snapshot lock");
            e.freeze(&mut serial, false).expect("freeze")
        };
        let (v2, _) = snapshot::encode_v2(&frozen, Vec::new()).expect("v2");
        let want = state(&e, &ids);
        let from_v2 = Engine::load_snapshot_bytes(&v2).expect("v2 loads");
        assert!(from_v2.recovery_skipped().is_empty());
        let same = |got: Vec<String>, what: &str| {
            let diff: Vec<_> = got
                .iter()
                .zip(&want)
                .filter(|(g, w)| g != w)
                .take(3)
                .collect();
            assert!(
                diff.is_empty() && got.len() == want.len(),
                "{what}: {diff:#?}"
            );
        };
        same(state(&from_v2, &ids), "v2");
        let dir = std::env::temp_dir().join(format!("relcount-v3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("snap");
        e.save_snapshot(&path).expect("save");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[8..12], &3u32.to_le_bytes(), "written as version 3");
        let from_v3 = Engine::load_snapshot_bytes(&bytes).expect("v3 loads");
        assert!(from_v3.recovery_skipped().is_empty());
        same(state(&from_v3, &ids), "v3");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The reverse index of a loaded engine is whole once the load returns (it is
    /// built once, at the end of the snapshot): deleting an initiator takes its
    /// relations out of every counter, in the loaded engine as in the original.
    #[test]
    fn a_loaded_engine_cascades_an_initiator_delete() {
        let e = Engine::builder().shards(4).build();
        e.define(RelationType::new(1, 1, 2).prop("W", PropSpec::int().sum().top(3)))
            .expect("rel 1");
        let hex = |i: u64| format!("{:024x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for a in 0..30 {
            for b in 0..40 {
                if (a * 7 + b) % 3 != 0 {
                    e.attach(
                        1,
                        hex(a).as_str(),
                        hex(1000 + b).as_str(),
                        &[("W", Value::Int(b as i64))],
                    )
                    .expect("attach");
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("relcount-cascade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("snap");
        e.save_snapshot(&path).expect("save");
        let loaded = Engine::load_snapshot(&path).expect("load");
        std::fs::remove_dir_all(&dir).ok();
        for b in [1000, 1007, 1039] {
            e.delete_profile(2, hex(b).as_str()).expect("delete");
            loaded.delete_profile(2, hex(b).as_str()).expect("delete");
        }
        assert_eq!(loaded.relation_count(), e.relation_count());
        for a in 0..30 {
            let (want, got) = (
                e.get_counter(1, hex(a).as_str()),
                loaded.get_counter(1, hex(a).as_str()),
            );
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "recipient {a}");
        }
    }
}
