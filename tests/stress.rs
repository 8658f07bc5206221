//! Concurrency stress: writers and readers on one engine at once. `#[ignore]`d in the
//! default run; `.ci/run` runs them for a short time:
//! `RELCOUNT_STRESS_MS=3000 cargo test --release --test stress -- --ignored`.
//!
//! 1. Invariants under contention: every write sets `Like` on every relation it makes
//!    or touches (attach and edit to 1, strengthen adds 1), so in every consistent
//!    snapshot `Like.total == total` and `sum(Like) >= total`; top lists are sorted and
//!    as long as they should be; pages are ordered and count their rows. Readers check
//!    each read while writers attach, strengthen, edit, detach and delete profiles over
//!    a small shared keyspace; at the end every counter is recomputed from its
//!    relations.
//! 2. Determinism: writers on disjoint keyspaces; the final state must equal the
//!    oracle's after replaying each writer's log.

#[path = "it/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use relcount::workload::Rng;
use relcount::{Counter, Engine, Error, Page, PropSpec, RelationType, Sum, Value};

fn budget() -> Duration {
    let ms = std::env::var("RELCOUNT_STRESS_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    Duration::from_millis(ms)
}

const TOP: usize = 3;

fn schema() -> RelationType {
    RelationType::new(1, 1, 2)
        .prop("Like", PropSpec::int().sum())
        .prop("Donate", PropSpec::int().top(TOP as u16))
        .prop("Sub", PropSpec::bool())
}

fn a_id(i: u64) -> String {
    format!("a{i}")
}

fn b_id(i: u64) -> String {
    format!("{:024x}", i)
}

/// Checks one snapshot; returns what is wrong.
fn check_counter(c: &Counter) -> Result<(), String> {
    let like = c.prop("Like").ok_or("no Like")?;
    let Some(Sum::Int(sum)) = like.sum() else {
        return Err("Like keeps no int sum".into());
    };
    if like.total() != c.total() || sum < i128::from(c.total()) {
        return Err(format!(
            "torn snapshot: total {} like {:?}",
            c.total(),
            like
        ));
    }
    let donate = c.prop("Donate").ok_or("no Donate")?;
    let top: Vec<Value> = donate.top().ok_or("no top")?.map(|t| t.value).collect();
    if top.len() != (donate.total() as usize).min(TOP) {
        return Err(format!(
            "top of {} for {} valued",
            top.len(),
            donate.total()
        ));
    }
    let ints: Vec<i64> = top
        .iter()
        .map(|v| match v {
            Value::Int(i) => *i,
            _ => i64::MIN,
        })
        .collect();
    if ints.windows(2).any(|w| w[0] < w[1]) {
        return Err(format!("top not sorted: {ints:?}"));
    }
    let sub = c.prop("Sub").ok_or("no Sub")?;
    if sub.total() > c.total() {
        return Err("more true Subs than relations".into());
    }
    Ok(())
}

fn check_page(p: &Page) -> Result<(), String> {
    if p.total_count != p.rows.len() as u64 {
        return Err(format!(
            "total_count {} rows {}",
            p.total_count,
            p.rows.len()
        ));
    }
    for row in &p.rows {
        let like = row.props.iter().find(|(n, _)| n == "Like").map(|(_, v)| *v);
        if !matches!(like, Some(Value::Int(l)) if l >= 1) {
            return Err(format!("row without Like >= 1: {row:?}"));
        }
    }
    if p.rows.windows(2).any(|w| w[0].profile_b >= w[1].profile_b) {
        return Err("rows not ordered by initiator".into());
    }
    Ok(())
}

fn write_step(e: &Engine, rng: &mut Rng, a_keys: u64, b_keys: u64) -> Result<(), Error> {
    let a = a_id(rng.below(a_keys));
    let b = b_id(rng.below(b_keys));
    let donate = Value::Int(rng.below(7) as i64 - 2);
    let sub = Value::Bool(rng.below(2) == 0);
    match rng.below(100) {
        0..=39 => e.attach(
            1,
            &a,
            &b,
            &[("Like", Value::Int(1)), ("Donate", donate), ("Sub", sub)],
        ),
        40..=59 => e.strengthen(1, &a, &b, &[("Donate", donate), ("Like", Value::Int(1))]),
        60..=74 => e.edit(1, &a, &b, &[("Like", Value::Int(1)), ("Sub", sub)]),
        75..=96 => e.detach(1, &a, &b),
        98 => e.delete_profile(1, &a),
        _ => e.delete_profile(2, &b),
    }
}

#[test]
#[ignore = "stress: run with --ignored (see the module docs)"]
fn readers_never_see_a_torn_counter() {
    let engine = Engine::builder().shards(4).top_index_threshold(8).build();
    engine.define(schema()).expect("schema");
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let writes = AtomicU64::new(0);
    let deadline = Instant::now() + budget();
    let (a_keys, b_keys) = (4, 40);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (engine, stop, writes) = (&engine, &stop, &writes);
            s.spawn(move || {
                let mut rng = Rng::new(t + 1);
                while !stop.load(Ordering::Relaxed) {
                    // Errors (detach of a missing relation, ...) are part of the mix.
                    let _ = write_step(engine, &mut rng, a_keys, b_keys);
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for t in 0..2u64 {
            let (engine, stop, reads) = (&engine, &stop, &reads);
            s.spawn(move || {
                let mut rng = Rng::new(100 + t);
                while !stop.load(Ordering::Relaxed) {
                    let a = a_id(rng.below(a_keys));
                    match engine.get_counter(1, &a) {
                        Ok(c) => check_counter(&c).unwrap_or_else(|e| panic!("{a}: {e}")),
                        Err(Error::ProfileNotFound { .. }) => {}
                        Err(e) => panic!("unexpected {e}"),
                    }
                    match engine.list(1, &a, 0, 1000) {
                        Ok(p) => check_page(&p).unwrap_or_else(|e| panic!("{a}: {e}")),
                        Err(Error::ProfileNotFound { .. }) => {}
                        Err(e) => panic!("unexpected {e}"),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
    });
    // Quiescent: counters must equal what the relations say, recomputed from scratch.
    let mut relations = 0;
    for i in 0..a_keys {
        // Recompute Like's sum and every total from the relations of the same moment.
        let Ok(c) = engine.get_counter(1, &a_id(i)) else {
            continue;
        };
        let page = engine.list(1, &a_id(i), 0, 1000).expect("list");
        relations += page.total_count;
        check_counter(&c).expect("final counter");
        let likes: i128 = page
            .rows
            .iter()
            .flat_map(|r| &r.props)
            .filter_map(|(n, v)| match (n.as_str(), v) {
                ("Like", Value::Int(l)) => Some(i128::from(*l)),
                _ => None,
            })
            .sum();
        assert_eq!(c.prop("Like").and_then(|p| p.sum()), Some(Sum::Int(likes)));
        assert_eq!(c.total(), page.total_count);
        let mut donations: Vec<(i64, String)> = page
            .rows
            .iter()
            .filter_map(|r| {
                r.props.iter().find_map(|(n, v)| match (n.as_str(), v) {
                    ("Donate", Value::Int(d)) => Some((*d, r.profile_b.to_string())),
                    _ => None,
                })
            })
            .collect();
        donations.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
        donations.truncate(TOP);
        let top: Vec<(i64, String)> = c
            .prop("Donate")
            .and_then(|p| p.top())
            .expect("top")
            .map(|t| match t.value {
                Value::Int(v) => (v, t.profile_id.to_string()),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(top, donations, "final top of {}", a_id(i));
    }
    assert_eq!(engine.relation_count(), relations);
    eprintln!(
        "stress: {} writes, {} reads (counter + list) in {:?}",
        writes.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
        budget()
    );
    assert!(reads.load(Ordering::Relaxed) > 0 && writes.load(Ordering::Relaxed) > 0);
}

#[test]
#[ignore = "stress: run with --ignored (see the module docs)"]
fn disjoint_writers_match_the_oracle() {
    use common::{Op, Who, apply_engine, apply_oracle, oracle::Oracle};
    let engine = Engine::builder().shards(2).top_index_threshold(4).build();
    engine.define(schema()).expect("schema");
    let deadline = Instant::now() + budget();
    let logs: Vec<Vec<Op>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|t| {
                let engine = &engine;
                s.spawn(move || {
                    let mut rng = Rng::new(7 + t);
                    let mut log = Vec::new();
                    while Instant::now() < deadline {
                        // Writer t owns a{t*10..t*10+3} and initiators with its prefix.
                        let a: Who = a_id(t * 10 + rng.below(3)).into();
                        let b: Who = format!("w{t}-{}", rng.below(12)).into();
                        let d = rng.below(9) as i64 - 4;
                        let op = match rng.below(10) {
                            0..=3 => Op::Attach(
                                1,
                                a,
                                b,
                                vec![
                                    ("Donate".into(), Value::Int(d)),
                                    ("Like".into(), Value::Int(1)),
                                ],
                            ),
                            4..=5 => {
                                Op::Strengthen(1, a, b, vec![("Donate".into(), Value::Int(d))])
                            }
                            6 => Op::Edit(1, a, b, vec![("Sub".into(), Value::Bool(d > 0))]),
                            7..=8 => Op::Detach(1, a, b),
                            _ => Op::Delete(2, b),
                        };
                        apply_engine(engine, &op);
                        log.push(op);
                    }
                    log
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });
    let mut oracle = Oracle::new(relcount::xxh64);
    oracle.define(schema()).expect("schema");
    let mut ops = 0;
    for log in &logs {
        for op in log {
            apply_oracle(&mut oracle, op);
            ops += 1;
        }
    }
    for t in 0..2u64 {
        for i in 0..3 {
            let a: Who = a_id(t * 10 + i).into();
            for op in [Op::Get(1, a.clone()), Op::List(1, a.clone(), 0, 1000)] {
                assert_eq!(apply_engine(&engine, &op), oracle.answer(&op), "{op:?}");
            }
        }
    }
    assert_eq!(engine.relation_count(), oracle.relation_count());
    eprintln!("stress: {ops} writes on disjoint keyspaces, final state equals the oracle's");
}

// ----- what a reader and a snapshot see (see `common::consistency`) ---------------------

fn deadline() -> common::consistency::Bound {
    common::consistency::Bound::Until(Instant::now() + budget())
}

/// Readers assert on every read that a profile which only exists with a relation
/// never reads empty, on 1, 2 and 64 shards.
#[test]
#[ignore = "stress: run with --ignored (see the module docs)"]
fn new_profiles_never_read_empty() {
    for shards in [1, 2, 64] {
        let reads = common::consistency::new_profiles_come_with_their_relation(shards, deadline())
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("shards {shards}: {reads} reads checked");
    }
}

/// Readers assert on every read that a deleted profile reads "not found", never
/// empty, on 1, 2 and 64 shards.
#[test]
#[ignore = "stress: run with --ignored (see the module docs)"]
fn deleted_profiles_never_read_empty() {
    for shards in [1, 2, 64] {
        let reads = common::consistency::deleted_profiles_read_not_found(shards, deadline())
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("shards {shards}: {reads} reads checked");
    }
}

/// A reader pages a recipient whose initiators are deleted and whose freed slots new
/// profiles take, on 1, 2 and 64 shards: never a page naming a new profile.
#[test]
#[ignore = "stress: run with --ignored (see the module docs)"]
fn pages_never_name_a_reused_slot() {
    for shards in [1, 2, 64] {
        let pages = common::consistency::pages_never_name_a_reused_slot(shards, deadline())
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("shards {shards}: {pages} pages checked");
    }
}

/// A writer attaching, strengthening, detaching and deleting while one compactor,
/// then two, compact in a loop; then the directory reopens to exactly the state
/// before the drop.
#[test]
#[ignore = "stress: run with --ignored (see the module docs)"]
fn compactions_beside_a_writer_reopen_exactly() {
    for compactors in [1, 2] {
        for shards in [1, 2, 64] {
            let dir = common::consistency::temp_dir(&format!("stress-{compactors}-{shards}"));
            let n = common::consistency::compactions_beside_a_writer_reopen_exactly(
                &dir,
                shards,
                compactors,
                deadline(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            eprintln!("{compactors} compactor(s), shards {shards}: {n} compactions");
        }
    }
}
