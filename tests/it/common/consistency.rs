//! Concurrency scenarios for what a reader and a snapshot may see (reads that never
//! see half a write, snapshots of one point in time, compactions that cannot lose
//! writes). Each runs writers, readers or compactors on one engine until a
//! bound (iterations for the regression tests, time for the stress tests) and
//! returns what it found wrong, if anything.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use relcount::{Engine, Error, PropSpec, RelationType, SyncPolicy, Value};

use super::{OwnedPage, own, own_page};

/// When a scenario stops: after `n` writer iterations, or at a deadline.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Iterations(u64),
    Until(std::time::Instant),
}

impl Bound {
    fn done(&self, i: u64) -> bool {
        match *self {
            Bound::Iterations(n) => i >= n,
            Bound::Until(t) => std::time::Instant::now() >= t,
        }
    }
}

pub fn schema() -> RelationType {
    RelationType::new(1, 1, 2)
        .prop("Like", PropSpec::int().sum())
        .prop("Donate", PropSpec::int().top(3))
}

/// Checks that recipient `id` reads (by `get_counter` and `list`) either with its one
/// relation or as "not found".
fn one_relation_or_not_found(engine: &Engine, id: &str, shards: usize) -> Result<(), String> {
    match engine.get_counter(1, id) {
        Ok(c) if c.total() == 1 => {}
        Ok(c) => {
            return Err(format!(
                "{id} read with total {} (shards {shards})",
                c.total()
            ));
        }
        Err(Error::ProfileNotFound { .. }) => {}
        Err(e) => return Err(format!("{id}: {e}")),
    }
    match engine.list(1, id, 0, 10) {
        Ok(p) if p.total_count == 1 && p.rows.len() == 1 => Ok(()),
        Ok(p) => Err(format!("{id} listed {p:?} (shards {shards})")),
        Err(Error::ProfileNotFound { .. }) => Ok(()),
        Err(e) => Err(format!("{id}: {e}")),
    }
}

/// A recipient that only ever exists with its one relation: a reader that looks it
/// up while the write creating it runs gets "not found" or the relation, never a
/// profile without it (by `get_counter`, `list` and `contains_profile`). Returns the
/// number of reads checked.
pub fn new_profiles_come_with_their_relation(shards: usize, bound: Bound) -> Result<u64, String> {
    let engine = Engine::builder().shards(shards).build();
    engine.define(schema()).map_err(|e| e.to_string())?;
    let current = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            while !stop.load(Ordering::Acquire) {
                let n = current.load(Ordering::Acquire);
                let id = format!("h{n}");
                reads += 1;
                one_relation_or_not_found(&engine, &id, shards)?;
                if engine.contains_profile(1, id.as_str()) {
                    let total = engine.get_counter(1, id.as_str()).map(|c| c.total());
                    if total.as_ref().ok() != Some(&1) {
                        return Err(format!("{id} contained, then read {total:?}"));
                    }
                }
            }
            Ok(reads)
        });
        let mut n = 0;
        while !bound.done(n) {
            current.store(n, Ordering::Release);
            let id = format!("h{n}");
            if let Err(e) = engine.attach(1, id.as_str(), "z", &[("Like", Value::Int(1))]) {
                stop.store(true, Ordering::Release);
                return Err(e.to_string());
            }
            n += 1;
        }
        stop.store(true, Ordering::Release);
        reader.join().map_err(|_| "reader panicked".to_string())?
    })
}

/// A recipient attached once and deleted: a reader racing the delete gets its one
/// relation or "not found", never an empty counter (also when the delete freed its
/// slot and the next recipient took it). Returns the number of reads checked.
pub fn deleted_profiles_read_not_found(shards: usize, bound: Bound) -> Result<u64, String> {
    let engine = Engine::builder().shards(shards).build();
    engine.define(schema()).map_err(|e| e.to_string())?;
    let current = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            while !stop.load(Ordering::Acquire) {
                let id = format!("d{}", current.load(Ordering::Acquire));
                reads += 1;
                one_relation_or_not_found(&engine, &id, shards)?;
            }
            Ok::<u64, String>(reads)
        });
        let mut n = 0;
        let result = (|| {
            while !bound.done(n) {
                let id = format!("d{n}");
                engine.attach(1, id.as_str(), "z", &[("Like", Value::Int(1))])?;
                current.store(n, Ordering::Release);
                engine.delete_profile(1, id.as_str())?;
                n += 1;
            }
            Ok::<(), Error>(())
        })();
        stop.store(true, Ordering::Release);
        let reads = reader.join().map_err(|_| "reader panicked".to_string())??;
        result.map_err(|e| e.to_string())?;
        Ok(reads)
    })
}

/// A recipient "A" with ten steady initiators and one that comes and goes: each
/// round attaches `x{n}` to it and deletes `x{n}`, then creates `y{n}` (related only
/// to another recipient), which takes the slot `x{n}` freed. A reader paging "A" must
/// see the steady ten and at most the current `x`, with a `total_count` equal to its
/// rows: never a `y` (a slot read after it was taken again). Returns the pages
/// checked.
pub fn pages_never_name_a_reused_slot(shards: usize, bound: Bound) -> Result<u64, String> {
    let engine = Engine::builder().shards(shards).build();
    engine.define(schema()).map_err(|e| e.to_string())?;
    for i in 0..10 {
        let b = format!("s{i}");
        engine
            .attach(1, "A", b.as_str(), &[("Like", Value::Int(1))])
            .map_err(|e| e.to_string())?;
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut pages = 0u64;
            while !stop.load(Ordering::Acquire) {
                let page = engine.list(1, "A", 0, 1000).map_err(|e| e.to_string())?;
                pages += 1;
                let ids: Vec<String> = page.rows.iter().map(|r| r.profile_b.to_string()).collect();
                let steady = ids.iter().filter(|id| id.starts_with('s')).count();
                let churn = ids.iter().filter(|id| id.starts_with('x')).count();
                if page.total_count != ids.len() as u64
                    || steady != 10
                    || churn > 1
                    || steady + churn != ids.len()
                {
                    return Err(format!(
                        "page of A (shards {shards}): {ids:?}, total {}",
                        page.total_count
                    ));
                }
            }
            Ok::<u64, String>(pages)
        });
        let mut n = 0;
        let result = (|| {
            while !bound.done(n) {
                let (x, y) = (format!("x{n}"), format!("y{n}"));
                engine.attach(1, "A", x.as_str(), &[("Like", Value::Int(1))])?;
                engine.delete_profile(2, x.as_str())?;
                engine.attach(1, "Z", y.as_str(), &[("Like", Value::Int(1))])?;
                engine.delete_profile(2, y.as_str())?;
                n += 1;
            }
            Ok::<(), Error>(())
        })();
        stop.store(true, Ordering::Release);
        let pages = reader.join().map_err(|_| "reader panicked".to_string())??;
        result.map_err(|e| e.to_string())?;
        Ok(pages)
    })
}

/// Everything a caller can observe of the scenario engines, for equality across a
/// drop and a reopen.
#[derive(Debug, PartialEq)]
pub struct State {
    pub counters: Vec<(String, super::Owned, OwnedPage)>,
    pub initiators: Vec<String>,
    /// Every profile's data, by database and id.
    pub data: Vec<(u32, String, relcount::ProfileData)>,
    pub relations: u64,
}

pub fn observe(e: &Engine) -> State {
    let counters = e
        .profile_ids(1)
        .into_iter()
        .map(|id| {
            let id = id.to_string();
            let c = own(&e
                .get_counter(1, id.as_str())
                .expect("a listed profile reads"));
            let p = own_page(
                &e.list(1, id.as_str(), 0, 1000)
                    .expect("a listed profile lists"),
            );
            (id, c, p)
        })
        .collect();
    State {
        counters,
        initiators: e
            .profile_ids(2)
            .into_iter()
            .map(|i| i.to_string())
            .collect(),
        data: [1, 2]
            .into_iter()
            .flat_map(|db| {
                let mut ids: Vec<String> = e
                    .profile_ids(db)
                    .into_iter()
                    .map(|i| i.to_string())
                    .collect();
                ids.sort();
                ids.into_iter().map(move |id| {
                    let data = e.profile_data(db, id.as_str()).expect("a listed profile");
                    (db, id, data)
                })
            })
            .collect(),
        relations: e.relation_count(),
    }
}

/// One writer step, in a cycle of thirteen: attach one initiator to eight
/// recipients, detach seven of them one by one, strengthen the last, delete the
/// initiator (which removes the last), then attach and delete a recipient, then give
/// the initiator data and a recipient new data. A compaction whose point in time
/// falls among the detaches has a log after it that detaches relations its snapshot
/// must hold; one among the imports, data it must hold as it was at the point.
fn churn(engine: &Engine, i: u64) -> Result<(), Error> {
    const B: &str = "b";
    let r = |k: u64| format!("r{k}");
    let values = [
        ("Like", Value::Int(1)),
        ("Donate", Value::Int((i % 13) as i64)),
    ];
    let data = |n: u64| relcount::ProfileData {
        email: Some(format!("p{n}@example.com")),
        ..Default::default()
    };
    match i % 13 {
        0 => (0..8).try_for_each(|k| engine.attach(1, r(k).as_str(), B, &values)),
        k @ 1..=7 => engine.detach(1, r(k - 1).as_str(), B),
        8 => engine.strengthen(1, r(7).as_str(), B, &[("Like", Value::Int(2))]),
        9 => engine.delete_profile(2, B),
        10 => {
            engine.attach(1, "a", B, &values)?;
            engine.delete_profile(1, "a")
        }
        11 => engine.import_profile(2, B, data(i)),
        _ => engine.import_profile(1, r(7).as_str(), data(i)),
    }
}

/// Relations loaded before a compaction scenario starts.
const BACKGROUND: u64 = 20_000;

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "relcount-consistency-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A fresh durable engine on `dir` with `schema()` defined.
fn open_fresh(dir: &Path, shards: usize) -> Result<Engine, String> {
    let _ = std::fs::remove_dir_all(dir);
    let engine = Engine::builder()
        .shards(shards)
        .open(dir, SyncPolicy::No)
        .map_err(|e| e.to_string())?;
    engine.define(schema()).map_err(|e| e.to_string())?;
    Ok(engine)
}

/// Drops `engine` and reopens its directory: the state must be exactly the one
/// before the drop, with no record skipped. Returns the reopened engine.
fn reopen_exactly(engine: Engine, dir: &Path, shards: usize, what: &str) -> Result<Engine, String> {
    let before = observe(&engine);
    drop(engine);
    let engine = Engine::builder()
        .shards(shards)
        .open(dir, SyncPolicy::No)
        .map_err(|e| format!("reopen: {e}"))?;
    let skipped = engine.recovery_skipped();
    if !skipped.is_empty() {
        return Err(format!("recovery skipped {skipped:?}"));
    }
    let after = observe(&engine);
    if after != before {
        return Err(format!(
            "{what}{shards} shards: reopened to another state:\nbefore {before:?}\nafter  {after:?}"
        ));
    }
    Ok(engine)
}

/// A writer churning a few pairs while `compactors` threads compact in a loop; then
/// the engine is dropped and its directory reopened: the state must be exactly the
/// one before the drop, with nothing skipped. `Bound::Iterations` counts
/// compactions. Returns the number of compactions.
pub fn compactions_beside_a_writer_reopen_exactly(
    dir: &Path,
    shards: usize,
    compactors: usize,
    bound: Bound,
) -> Result<u64, String> {
    let engine = open_fresh(dir, shards)?;
    // Relations that stay, so encoding a snapshot takes long enough for the writer
    // to run beside it.
    for k in 0..BACKGROUND {
        let (a, b) = (format!("bg{}", k % 1000), format!("bgb{k}"));
        engine
            .attach(1, a.as_str(), b.as_str(), &[("Like", Value::Int(1))])
            .map_err(|e| e.to_string())?;
    }
    let stop = AtomicBool::new(false);
    let compactions = AtomicU64::new(0);
    let running = AtomicU64::new(compactors as u64);
    let written = std::thread::scope(|s| {
        let handles: Vec<_> = (0..compactors)
            .map(|_| {
                s.spawn(|| {
                    let ran = (|| {
                        while !stop.load(Ordering::Acquire)
                            && !bound.done(compactions.load(Ordering::Relaxed))
                        {
                            engine.compact().map_err(|e| format!("compact: {e}"))?;
                            compactions.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<(), String>(())
                    })();
                    running.fetch_sub(1, Ordering::Release);
                    ran
                })
            })
            .collect();
        // The writer runs while any compactor does, and a few cycles more, so the
        // last snapshot on disk was taken while it wrote and the log after it holds
        // records that replay against that snapshot.
        let mut i = 0;
        let mut after = 0;
        let mut result = Ok(());
        while after < 12 {
            if running.load(Ordering::Acquire) == 0 {
                after += 1;
            }
            if let Err(e) = churn(&engine, i) {
                result = Err(format!("write {i}: {e}"));
                break;
            }
            i += 1;
        }
        stop.store(true, Ordering::Release);
        for h in handles {
            h.join().map_err(|_| "compactor panicked".to_string())??;
        }
        result
    });
    written?;
    drop(reopen_exactly(engine, dir, shards, "")?);
    let _ = std::fs::remove_dir_all(dir);
    Ok(compactions.load(Ordering::Relaxed))
}

/// What the writer of [`compactions_beside_churn`] deletes and re-creates in a loop.
#[derive(Debug, Clone, Copy)]
pub enum Churn {
    /// Initiator "b": attach a->b, detach it, delete "b" (database 2).
    Initiator,
    /// Recipient "a": attach a->b, delete "a" (database 1).
    Recipient,
    /// Initiator "b" imported with data first (an email and a tag), then attached
    /// and deleted.
    Imported,
}

/// What [`compactions_beside_churn`] counted.
#[derive(Debug)]
pub struct ChurnReport {
    /// Writer cycles (each deletes and re-creates one profile) while each compaction
    /// ran, from its call to its return.
    pub cycles_during: Vec<u64>,
    /// Profiles and relations at the end.
    pub profiles: usize,
}

/// A writer deletes and re-creates one profile in a loop (as `churn` says) beside
/// `filler` relations, while `compactions` compactions run in turn on another thread,
/// each started once the writer has made 100 cycles. A compaction must end before the
/// writer has made `cap` cycles: its work is bounded by the data at its point, not by
/// what writers do meanwhile (a walk of the papaya profile map would first finish every
/// resize under way, and the churn starts them as fast as they finish). Then the
/// directory must reopen to exactly the engine's state.
pub fn compactions_beside_churn(
    dir: &Path,
    shards: usize,
    churn: Churn,
    filler: u64,
    compactions: usize,
    cap: u64,
) -> Result<ChurnReport, String> {
    let engine = open_fresh(dir, shards)?;
    for k in 0..filler {
        let (a, b) = (format!("f{}", k % 500), format!("fb{k}"));
        engine
            .attach(
                1,
                a.as_str(),
                b.as_str(),
                &[("Donate", Value::Int(k as i64))],
            )
            .map_err(|e| e.to_string())?;
    }
    let data = relcount::ProfileData {
        email: Some("b@example.com".into()),
        fields: vec![(
            "tags".into(),
            relcount::FieldValue::Tags(vec!["churned".into()]),
        )],
        ..Default::default()
    };
    let cycle = |i: u64| -> Result<(), Error> {
        let w = [
            ("Like", Value::Int(1)),
            ("Donate", Value::Int(i as i64 % 7)),
        ];
        match churn {
            Churn::Initiator => {
                engine.attach(1, "a", "b", &w)?;
                engine.detach(1, "a", "b")?;
                engine.delete_profile(2, "b")
            }
            Churn::Recipient => {
                engine.attach(1, "a", "b", &w)?;
                engine.delete_profile(1, "a")
            }
            Churn::Imported => {
                engine.import_profile(2, "b", data.clone())?;
                engine.attach(1, "a", "b", &w)?;
                engine.delete_profile(2, "b")
            }
        }
    };
    let cycles = AtomicU64::new(0);
    let running = AtomicBool::new(true);
    let during = std::thread::scope(|s| {
        let compactor = s.spawn(|| {
            let mut during = Vec::new();
            for _ in 0..compactions {
                let start = cycles.load(Ordering::Acquire) + 100;
                while cycles.load(Ordering::Acquire) < start {
                    if !running.load(Ordering::Acquire) {
                        return Err("the writer stopped".to_string());
                    }
                    std::thread::yield_now();
                }
                let before = cycles.load(Ordering::Acquire);
                engine.compact().map_err(|e| format!("compact: {e}"))?;
                during.push(cycles.load(Ordering::Acquire) - before);
            }
            Ok(during)
        });
        // The writer runs until the compactor is done, or `cap` cycles past the start.
        let mut i = 0;
        let mut result = Ok(());
        while !compactor.is_finished() {
            if i >= cap {
                result = Err(format!(
                    "{churn:?}, {shards} shards: the compactions had not ended after {i} \
                     writer cycles"
                ));
                break;
            }
            if let Err(e) = cycle(i) {
                result = Err(format!("cycle {i}: {e}"));
                break;
            }
            i += 1;
            cycles.store(i, Ordering::Release);
        }
        running.store(false, Ordering::Release);
        // A few cycles after the last compaction, so its log has records to replay.
        for _ in 0..3 {
            if result.is_ok() {
                result = cycle(i).map_err(|e| format!("cycle {i}: {e}"));
                i += 1;
            }
        }
        let during = compactor
            .join()
            .map_err(|_| "compactor panicked".to_string())?;
        result.and(during)
    })?;
    let engine = reopen_exactly(engine, dir, shards, &format!("{churn:?}, "))?;
    let profiles = engine.profile_count();
    drop(engine);
    let _ = std::fs::remove_dir_all(dir);
    Ok(ChurnReport {
        cycles_during: during,
        profiles,
    })
}
