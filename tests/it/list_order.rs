//! `list` on recipients that cross the id order's threshold (1024 relations; dropped
//! below 512) both ways, against the naive oracle (`tests/it/common/oracle.rs`): random
//! bulk imports, attaches, detaches of runs of initiators and deletes of initiators and
//! recipients on two recipients with up to 3,000 initiators, and after each of them
//! random pages of both (and the whole list, by the sweep), compared with the oracle's.

use crate::common::{Op, Who, apply_engine, apply_oracle, pair, sweep};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use relcount::{Engine, Value};

/// Initiators in the pool.
const POOL: u32 = 3000;

/// Initiator `i`'s id: 24 hex digits spread so that ids do not come in the order of
/// `i` (the order is not the insertion order), every seventh a text id.
fn b_id(i: u32) -> String {
    let i = i % POOL;
    if i % 7 == 3 {
        format!("t{i}")
    } else {
        format!("{:024x}", (u64::from(i) * 0x9E37_79B1) % (1 << 40))
    }
}

/// The two recipients.
fn a_id(a: u8) -> String {
    ["5c910f6bc484d023b1309bee", "a1"][usize::from(a % 2)].to_string()
}

/// One step: `(kind, recipient, first initiator, run length, value)`.
type Step = (u8, u8, u32, u32, i64);

/// The calls of one step.
fn calls((kind, a, b, n, v): Step) -> Vec<Op> {
    let a = a_id(a);
    let w = |i: u32| vec![("Like".to_string(), Value::Int(v + i64::from(i)))];
    match kind {
        // A run of n initiators imported in one batch (some already there: rewritten).
        0..=3 => vec![Op::Bulk(
            1,
            (b..b + n).map(|i| (a.clone(), b_id(i), w(i))).collect(),
        )],
        4 | 5 => vec![Op::Attach(1, a.into(), b_id(b).into(), w(b))],
        // A run of n detaches (some of relations that are not there: refused alike).
        6..=8 => (b..b + n)
            .map(|i| Op::Detach(1, Who::Id(a.clone()), b_id(i).into()))
            .collect(),
        9 | 10 => vec![Op::Delete(2, b_id(b).into())],
        _ => vec![Op::Delete(1, a.into())],
    }
}

fn run(steps: &[Step], pages: &[(usize, usize)]) -> Result<(), String> {
    let (engine, mut oracle) = pair(Engine::builder().shards(2).build(), relcount::xxh64);
    let recipients = [a_id(0), a_id(1)];
    for (s, &step) in steps.iter().enumerate() {
        for op in calls(step) {
            let (got, want) = (apply_engine(&engine, &op), apply_oracle(&mut oracle, &op));
            if got != want {
                return Err(format!("step {s}, {op:?}: engine {got:?}, oracle {want:?}"));
            }
        }
        for a in &recipients {
            for &(skip, limit) in pages {
                let op = Op::List(1, a.clone().into(), skip, limit);
                let (got, want) = (apply_engine(&engine, &op), oracle.answer(&op));
                if got != want {
                    return Err(format!("step {s}, {op:?}: engine {got:?}, oracle {want:?}"));
                }
            }
            // The whole list, page after page.
            for skip in (0..=3000).step_by(1000) {
                let op = Op::List(1, a.clone().into(), skip, 1000);
                let (got, want) = (apply_engine(&engine, &op), oracle.answer(&op));
                if got != want {
                    return Err(format!("step {s}, {op:?}: differs"));
                }
            }
        }
        sweep(&engine, &oracle, &recipients).map_err(|e| format!("step {s}: {e}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // 48 unless PROPTEST_CASES says otherwise (an explicit count here would
        // override the variable).
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/list_order.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn pages_match_the_oracle_across_the_threshold(
        steps in prop::collection::vec((0u8..12, 0u8..2, 0u32..POOL, 1u32..1600, -9i64..9), 1..14),
        pages in prop::collection::vec((0usize..2200, 1usize..=1000), 1..5),
    ) {
        run(&steps, &pages).map_err(TestCaseError::fail)?;
    }
}

/// A recipient grown past the threshold by attaches one at a time (the order built
/// at the crossing, then kept insert by insert), shrunk below half of it by detaches
/// (kept removal by removal, then dropped), and grown again: every page as the
/// oracle's at each stage.
#[test]
fn a_recipient_crosses_the_threshold_one_write_at_a_time() {
    let mut steps: Vec<Step> = (0..1300).map(|i| (4, 0, i * 2, 1, 1)).collect();
    steps.push((6, 0, 0, 2000, 0));
    steps.extend((0..900).map(|i| (4, 0, i * 3 + 1, 1, 2)));
    run(&steps[..1300], &[(0, 1), (1023, 7), (1299, 1000)]).expect("grown");
    run(&steps, &[(0, 1), (600, 100), (1000, 1000)]).expect("shrunk and grown again");
}
