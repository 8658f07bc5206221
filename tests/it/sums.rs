//! Float sums never drift: values come and go in any order and the reported sum is the
//! exact sum correctly rounded, and exactly 0.0 when none is left (the bound documented
//! in `accum::exact_sum`: within half an ulp of the exact sum).

use proptest::prelude::*;
use relcount::{Engine, PropSpec, RelationType, Sum, Value};

fn engine() -> Engine {
    let e = Engine::new();
    e.define(RelationType::new(1, 1, 2).prop("F", PropSpec::float().sum()))
        .expect("schema");
    e
}

fn float_sum(e: &Engine) -> f64 {
    match e
        .get_counter(1, "a")
        .expect("a")
        .prop("F")
        .and_then(|p| p.sum())
    {
        Some(Sum::Float(f)) => f,
        other => panic!("not a float sum: {other:?}"),
    }
}

#[test]
fn cancelling_magnitudes_do_not_drift() {
    let e = engine();
    let none: [(&str, Value); 0] = [];
    e.attach(1, "a", "keep", &none).expect("keeper");
    let vals = [1e16, 0.25, -1e16, 3.0, 1e-300, -3.0];
    for (i, v) in vals.iter().enumerate() {
        e.attach(1, "a", &format!("b{i}"), &[("F", Value::Float(*v))])
            .expect("attach");
    }
    // exact: 0.25 + 1e-300, rounded: 0.25
    assert_eq!(float_sum(&e), 0.25);
    e.detach(1, "a", "b1").expect("detach 0.25");
    assert_eq!(float_sum(&e), 1e-300);
    for i in [0, 2, 3, 4, 5] {
        e.detach(1, "a", &format!("b{i}")).expect("detach");
    }
    assert_eq!(e.get_counter(1, "a").expect("a").total(), 1);
    assert_eq!(float_sum(&e).to_bits(), 0.0f64.to_bits());
}

proptest! {
    /// Values `m * 2^-16` (|m| < 2^45) are exact in i128 units, so the oracle is the
    /// exact sum, rounded once by `i128 as f64`; strengthen moves values around too.
    #[test]
    fn matches_exact_oracle(ops in prop::collection::vec((0u8..6, -(1i64 << 45)..(1i64 << 45), any::<bool>()), 1..80)) {
        let e = engine();
        let none: [(&str, Value); 0] = [];
        e.attach(1, "a", "keep", &none).expect("keeper");
        let unit = 2f64.powi(-16);
        let mut present = std::collections::BTreeMap::<u8, i64>::new();
        for (b, m, strengthen) in ops {
            let name = format!("b{b}");
            if strengthen {
                let cur = present.get(&b).copied().unwrap_or(0);
                let next = cur + m;
                e.strengthen(1, "a", &name, &[("F", Value::Float(m as f64 * unit))]).expect("strengthen");
                present.insert(b, next);
            } else if present.remove(&b).is_some() {
                e.detach(1, "a", &name).expect("detach");
            } else {
                e.attach(1, "a", &name, &[("F", Value::Float(m as f64 * unit))]).expect("attach");
                present.insert(b, m);
            }
            let exact: i128 = present.values().map(|&m| i128::from(m)).sum();
            prop_assert_eq!(e.get_counter(1, "a").expect("a").total(), present.len() as u64 + 1);
            prop_assert_eq!(float_sum(&e), exact as f64 * unit);
        }
    }

    /// Any finite values across the whole exponent range, removed in another order:
    /// the sum comes back to exactly 0.0.
    #[test]
    fn wide_values_cancel_exactly(vals in prop::collection::vec((any::<i32>(), -1000i32..900), 1..40), rot in 0usize..40) {
        let e = engine();
        // A relation without a value keeps the target alive, so the sum read at the end
        // is the accumulator's, not a fresh zero.
        let none: [(&str, Value); 0] = [];
        e.attach(1, "a", "keep", &none).expect("keeper");
        for (i, &(m, x)) in vals.iter().enumerate() {
            e.attach(1, "a", &format!("b{i}"), &[("F", Value::Float(f64::from(m) * 2f64.powi(x)))]).expect("attach");
        }
        let n = vals.len();
        for k in 0..n {
            e.detach(1, "a", &format!("b{}", (k + rot) % n)).expect("detach");
        }
        prop_assert_eq!(e.get_counter(1, "a").expect("a").total(), 1);
        prop_assert_eq!(float_sum(&e).to_bits(), 0.0f64.to_bits());
    }
}
