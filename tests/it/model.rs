//! Model tests: random operation sequences applied to the engine and to the naive oracle
//! (`tests/it/common/oracle.rs`); every answer is compared after every operation, and the
//! whole state is swept after every operation too, so a refused write that changed
//! anything is caught at once. Run under 1, 2 and 64 shards, and with a top-index
//! threshold low enough that small targets take the indexed path.

use crate::generate;

use crate::common::{Op, check_steps, pair};
use generate::{IDS, id, op_with, wide_id};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use relcount::Engine;

fn run(engine: Engine, ops: &[Op], candidates: &[String]) -> Result<(), TestCaseError> {
    let (engine, oracle) = pair(engine, relcount::xxh64);
    check_steps(&engine, oracle, ops, candidates).map_err(TestCaseError::fail)
}

fn candidates() -> Vec<String> {
    IDS.iter().map(|s| s.to_string()).collect()
}

/// 24-hex ids (held inline by the id order and the top index) and, among them in id
/// order, ids of other forms (compared through their profiles), so that both paths
/// and their meeting are exercised.
fn wide_candidates() -> Vec<String> {
    let mut c: Vec<String> = (0u8..14).map(|i| format!("{i:024x}")).collect();
    c.push("5c910f6bc484d023b1309bee".into());
    c.push("00000000000000000000000A".into());
    c.push("000000000000000000000003x".into());
    c.push("0000000000000000000000".into());
    c
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/model.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn model_one_shard(ops in prop::collection::vec(op_with(id().boxed()), 1..60)) {
        run(Engine::builder().shards(1).build(), &ops, &candidates())?;
    }

    #[test]
    fn model_two_shards(ops in prop::collection::vec(op_with(id().boxed()), 1..60)) {
        run(Engine::builder().shards(2).build(), &ops, &candidates())?;
    }

    #[test]
    fn model_64_shards(ops in prop::collection::vec(op_with(id().boxed()), 1..60)) {
        run(Engine::builder().shards(64).build(), &ops, &candidates())?;
    }

    /// Few recipients, many initiators, and an index threshold of 4: targets cross it
    /// both ways, so top lists refill from the ordered index and from scans.
    #[test]
    fn model_wide_targets_indexed(ops in prop::collection::vec(op_with(wide_id().boxed()), 1..120)) {
        run(Engine::builder().shards(2).top_index_threshold(4).build(), &ops, &wide_candidates())?;
    }

    #[test]
    fn model_wide_targets_64_shards(ops in prop::collection::vec(op_with(wide_id().boxed()), 1..120)) {
        run(Engine::builder().shards(64).top_index_threshold(2).build(), &ops, &wide_candidates())?;
    }
}
