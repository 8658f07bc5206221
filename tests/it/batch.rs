//! `Engine::apply`: batches of writes of every kind against the naive oracle applying
//! the same writes one after another (all of them, or none at the first refused one),
//! small and at the sizes that take the parallel path, with single writes and deletes
//! between the batches; what a batch is refused for and that it then changes nothing;
//! and a replayed log of single writes (replayed as batches) against the same writes
//! applied live.

use proptest::prelude::*;

use crate::common::{Op, apply_engine, apply_oracle, pair, sweep};
use relcount::workload::Rng;
use relcount::{Engine, Error, Value, Write};

fn ids(prefix: &str, n: u64) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// `n` valid writes of rel 1 (db 1 <- db 2) over the pools, pairs repeating:
/// attaches, strengthens, edits, and detaches of pairs written earlier in the batch
/// (so they find their relation, unless a delete between batches removed it).
fn writes(rng: &mut Rng, n: usize, a: &[String], b: &[String]) -> Vec<Write> {
    let pick = |rng: &mut Rng, pool: &[String]| pool[rng.below(pool.len() as u64) as usize].clone();
    let mut made: Vec<(String, String)> = Vec::new();
    (0..n)
        .map(|_| {
            if rng.below(10) == 0 && !made.is_empty() {
                let (x, y) = made.swap_remove(rng.below(made.len() as u64) as usize);
                return Write::detach(1, x, y);
            }
            let (x, y) = (pick(rng, a), pick(rng, b));
            let mut w = vec![("Donate".to_string(), Value::Int(rng.below(7) as i64 - 2))];
            if rng.below(2) == 0 {
                w.push((
                    "Score".into(),
                    Value::Float(rng.below(9) as f64 * 0.25 - 1.0),
                ));
            }
            if rng.below(3) == 0 {
                w.push(("Subscriber".into(), Value::Bool(rng.below(2) == 0)));
            }
            if !made.contains(&(x.clone(), y.clone())) {
                made.push((x.clone(), y.clone()));
            }
            match rng.below(9) {
                0..=2 => Write::attach(1, x, y, w),
                3..=6 => Write::strengthen(1, x, y, w),
                _ => Write::edit(1, x, y, w),
            }
        })
        .collect()
}

fn run(seed: u64, engine: Engine, size: usize) {
    let mut rng = Rng::new(seed);
    let (a, b) = (ids("a", 40), ids("b", 600));
    let mut candidates = a.clone();
    candidates.extend(b.iter().cloned());
    let (engine, mut oracle) = pair(engine, relcount::xxh64);
    let step = |oracle: &mut crate::common::oracle::Oracle, op: Op| {
        let (got, want) = (apply_engine(&engine, &op), apply_oracle(oracle, &op));
        assert_eq!(got, want, "seed {seed}: {op:?}");
        got
    };
    let mut applied = 0;
    for _ in 0..4 {
        // A refused batch (a strengthen past a range): drop the refused write and try
        // the rest again.
        let mut writes = writes(&mut rng, size, &a, &b);
        for _ in 0..50 {
            match step(&mut oracle, Op::Batch(writes.clone())) {
                crate::common::Answer::Imported(Err(Error::InRow { row, .. })) => {
                    writes.remove(row);
                }
                _ => {
                    applied += 1;
                    break;
                }
            }
        }
        for _ in 0..100 {
            let (x, y) = (
                a[rng.below(40) as usize].clone(),
                b[rng.below(600) as usize].clone(),
            );
            step(
                &mut oracle,
                match rng.below(3) {
                    0 => Op::Delete(2, y.into()),
                    1 => Op::Detach(1, x.into(), y.into()),
                    _ => Op::Strengthen(
                        1,
                        x.into(),
                        y.into(),
                        vec![("Donate".into(), Value::Int(1))],
                    ),
                },
            );
        }
        sweep(&engine, &oracle, &candidates).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    assert!(
        applied == 4,
        "seed {seed}: only {applied} of 4 batches applied"
    );
}

#[test]
fn small_batches_equal_one_write_after_another() {
    for seed in 1..=3 {
        run(
            seed,
            Engine::builder().shards(4).top_index_threshold(8).build(),
            300,
        );
    }
}

#[test]
fn large_batches_equal_one_write_after_another() {
    run(
        4,
        Engine::builder().shards(8).top_index_threshold(16).build(),
        12_000,
    );
    run(5, Engine::builder().shards(1).build(), 9_000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Batches over tiny pools (every pair repeats, detaches meet relations made
    /// earlier in the batch) equal the same writes one after another.
    #[test]
    fn batches_over_tiny_pools_fold_each_pair_in_order(
        batches in prop::collection::vec(
            prop::collection::vec((0u8..4, 0u8..3, 0u8..3, -3i64..4), 1..16),
            1..6,
        ),
    ) {
        let (engine, mut oracle) = pair(Engine::builder().shards(2).build(), relcount::xxh64);
        for batch in batches {
            let writes: Vec<Write> = batch
                .into_iter()
                .map(|(op, x, y, v)| {
                    let (x, y) = (format!("a{x}"), format!("b{y}"));
                    let w = [("Donate", Value::Int(v)), ("Like", Value::Int(v * 2))];
                    match op {
                        0 => Write::attach(1, x, y, w),
                        1 => Write::strengthen(1, x, y, w),
                        2 => Write::edit(1, x, y, [("Like", Value::Int(v))]),
                        _ => Write::detach(1, x, y),
                    }
                })
                .collect();
            let op = Op::Batch(writes);
            let (got, want) = (apply_engine(&engine, &op), apply_oracle(&mut oracle, &op));
            prop_assert_eq!(got, want, "{:?}", op);
        }
        let candidates: Vec<String> = ["a0", "a1", "a2", "b0", "b1", "b2"].map(String::from).to_vec();
        sweep(&engine, &oracle, &candidates).map_err(TestCaseError::fail)?;
    }
}

/// Shrunk by the model: a batch whose first write detaches a missing relation and
/// whose second names a profile that does not exist must be refused for the first
/// (the single calls in order would stop there), not the second.
#[test]
fn a_batch_is_refused_for_its_first_refused_write() {
    let (engine, _) = pair(Engine::new(), relcount::xxh64);
    engine.attach(1, "a", "b", &[]).expect("attach");
    let refused = engine
        .apply(&[Write::detach(1, "a", "c0"), Write::detach(1, "nobody", "b")])
        .unwrap_err();
    assert!(
        matches!(&refused, Error::InRow { row: 0, error } if matches!(**error, Error::ProfileNotFound { .. })),
        "{refused:?}"
    );
    // A later write that fails its checks (a bad id) does not hide an earlier refusal
    // that only its place in the batch shows.
    let refused = engine
        .apply(&[
            Write::attach(1, "a", "c1", [("Donate", Value::Int(1))]),
            Write::detach(1, "a", "b"),
            Write::detach(1, "a", "b"),
            Write::attach(1, "a", "", [("Donate", Value::Int(1))]),
        ])
        .unwrap_err();
    assert!(
        matches!(&refused, Error::InRow { row: 2, error } if matches!(**error, Error::RelationNotFound { .. })),
        "{refused:?}"
    );
    // Nothing of either batch: no c1, the relation a <- b still there.
    assert_eq!(engine.get_counter(1, "a").expect("a").total(), 1);
    assert!(!engine.contains_profile(2, "c1"));
}

#[test]
fn a_detach_given_values_is_refused() {
    let (engine, _) = pair(Engine::new(), relcount::xxh64);
    let mut w = Write::detach(1, "a", "b");
    w.values.push(("Donate".into(), Value::Int(1)));
    let refused = engine.apply(&[Write::attach(1, "a", "b", [("Donate", Value::Int(1))]), w]);
    assert!(
        matches!(&refused, Err(Error::InRow { row: 1, error }) if matches!(**error, Error::InvalidArgument { .. })),
        "{refused:?}"
    );
    assert!(!engine.contains_profile(1, "a"));
}

/// A strengthen past the int range refuses the batch at that write, after earlier
/// writes of the same pair raised the value (the fold is in order).
#[test]
fn an_overflow_reached_inside_a_batch_refuses_it() {
    let (engine, _) = pair(Engine::new(), relcount::xxh64);
    let big = [("Donate", Value::Int(i64::MAX - 1))];
    let one = [("Donate", Value::Int(1))];
    let refused = engine
        .apply(&[
            Write::attach(1, "a", "b", big),
            Write::strengthen(1, "a", "b", one),
            Write::strengthen(1, "a", "b", one),
        ])
        .unwrap_err();
    assert!(
        matches!(&refused, Error::InRow { row: 2, error } if matches!(**error, Error::IntOverflow { .. })),
        "{refused:?}"
    );
    assert!(engine.get_counter(1, "a").is_err());
    assert_eq!(engine.relation_count(), 0);
}
