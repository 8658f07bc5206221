//! docs/api.md, *Profile ids*: the hash places a key, it never replaces it. With a degenerate hash
//! every profile collides (same `profile_xxh`, same shard), and the model still holds.

use crate::common::{Op, Who, check_steps, pair};
use relcount::{Engine, Value};

fn constant(_: &[u8]) -> u64 {
    0x5eed_5eed_5eed_5eed
}

fn two_bits(bytes: &[u8]) -> u64 {
    relcount::xxh64(bytes) & (0b11 << 62)
}

fn ids() -> Vec<String> {
    [
        "5c910f6bc484d023b1309bee",
        "5c910938c484d023b1309bab",
        "a1",
        "b1",
        "b2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A fixed scenario that touches every write and the cascade, under a hash where every
/// profile collides.
fn scenario() -> Vec<Op> {
    let ids = ids();
    let mut ops = Vec::new();
    for (i, a) in ids.iter().enumerate() {
        for (j, b) in ids.iter().enumerate() {
            let v = (i * 7 + j * 3) as i64 % 5 - 2;
            ops.push(Op::Attach(
                1,
                Who::from(a.clone()),
                Who::from(b.clone()),
                vec![
                    ("Donate".into(), Value::Int(v)),
                    ("Like".into(), Value::Int(v)),
                ],
            ));
            ops.push(Op::Attach(
                2,
                Who::from(a.clone()),
                Who::from(b.clone()),
                vec![("W".into(), Value::Int(v))],
            ));
        }
    }
    ops.push(Op::Strengthen(
        1,
        Who::from(ids[0].clone()),
        Who::from(ids[1].clone()),
        vec![("Donate".into(), Value::Int(9))],
    ));
    ops.push(Op::Detach(
        1,
        Who::from(ids[0].clone()),
        Who::from(ids[2].clone()),
    ));
    ops.push(Op::Delete(2, Who::from(ids[1].clone())));
    ops.push(Op::Delete(1, Who::from(ids[3].clone())));
    ops.push(Op::Edit(
        2,
        Who::from(ids[4].clone()),
        Who::from(ids[0].clone()),
        vec![("W".into(), Value::Int(-7))],
    ));
    ops
}

#[test]
fn degenerate_hash_keeps_profiles_apart() {
    for shards in [1, 2, 64] {
        let engine = Engine::builder()
            .shards(shards)
            .profile_hasher(constant)
            .build();
        let (engine, oracle) = pair(engine, constant);
        check_steps(&engine, oracle, &scenario(), &ids())
            .unwrap_or_else(|e| panic!("{shards} shards: {e}"));
        // Every profile reports the colliding hash, and they are all still distinct.
        let c = engine.get_counter(1, "a1").expect("a1");
        assert_eq!(c.profile_xxh(), constant(b""));
        assert_eq!(engine.profile_ids(1).len(), 4); // b1 of db 1 was deleted
    }
}

#[test]
fn few_distinct_hashes_keep_profiles_apart() {
    let engine = Engine::builder().shards(4).profile_hasher(two_bits).build();
    let (engine, oracle) = pair(engine, two_bits);
    check_steps(&engine, oracle, &scenario(), &ids()).unwrap_or_else(|e| panic!("{e}"));
}

use crate::generate;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The model test's random operations under hashes where every id collides, or
    /// only four values exist: published counters shared by colliding recipients are
    /// merged, split and removed as they come and go, and every answer equals the
    /// oracle's.
    #[test]
    fn model_with_colliding_hashes(
        ops in prop::collection::vec(generate::op_with(generate::id().boxed()), 1..60),
        hasher in prop_oneof![Just(constant as fn(&[u8]) -> u64), Just(two_bits as fn(&[u8]) -> u64)],
        shards in prop_oneof![Just(1usize), Just(4)],
    ) {
        let engine = Engine::builder().shards(shards).profile_hasher(hasher).build();
        let (engine, oracle) = pair(engine, hasher);
        let candidates: Vec<String> = generate::IDS.iter().map(|s| s.to_string()).collect();
        check_steps(&engine, oracle, &ops, &candidates).map_err(TestCaseError::fail)?;
    }
}
