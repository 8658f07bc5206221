//! Feature `serde`: `Counter` and `Page` serialise to exactly what the JSON API answers
//! (its `data`, and a page's `data` and `total_count`), on random workloads of every
//! write kind over a small keyspace, so top lists, sums of both kinds and deletes all
//! show up. The API's hand-written renderer is the oracle.

use crate::generate;

use std::sync::Arc;

use crate::common::{Op, apply_engine, model_schemas};
use generate::{IDS, id, op_with};
use proptest::prelude::*;
use relcount::Engine;
use relcount::api::{Api, TokenScope};
use serde_json::{Value as J, json};

const TOKEN: &str = "serde-test-token-0123456789abcdef";

fn parse(text: &str) -> J {
    serde_json::from_str(text).expect("well-formed JSON")
}

/// Through text on both sides: an i128 sum beyond u64 parses the same way from both.
macro_rules! serialised {
    ($value:expr) => {
        parse(&serde_json::to_string($value).expect("serialises"))
    };
}

fn check(api: &Api, engine: &Engine) -> Result<(), TestCaseError> {
    for def in model_schemas() {
        let rel = def.rel_id();
        for id in IDS {
            let body = json!({"token": TOKEN, "rel_id": rel, "profile_id": id}).to_string();
            let answer = parse(
                &api.handle("relations/get_counter", None, body.as_bytes())
                    .body,
            );
            match engine.get_counter(rel, *id) {
                Ok(counter) => prop_assert_eq!(&answer["data"], &serialised!(&counter)),
                Err(_) => prop_assert_ne!(&answer["error"], &json!(0)),
            }
            for (skip, limit) in [(0, 1000), (1, 2)] {
                let body = json!({"token": TOKEN, "rel_id": rel, "profile_id": id,
                    "skip": skip, "limit": limit})
                .to_string();
                let mut answer = parse(&api.handle("relations/get", None, body.as_bytes()).body);
                match engine.list(rel, *id, skip, limit) {
                    Ok(page) => {
                        let envelope = answer.as_object_mut().expect("an object");
                        prop_assert_eq!(envelope.remove("error"), Some(json!(0)));
                        prop_assert!(envelope.remove("error_text").is_some());
                        prop_assert_eq!(&answer, &serialised!(&page));
                    }
                    Err(_) => prop_assert_ne!(&answer["error"], &json!(0)),
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn counters_and_pages_serialise_as_the_api_answers(
        full in proptest::collection::vec((-50i64..50, -5.0f64..5.0), IDS.len()),
        ops in proptest::collection::vec(op_with(id().boxed()), 1..60)
    ) {
        let engine = Arc::new(Engine::new());
        for def in model_schemas() {
            engine.define(def).expect("define");
        }
        // Full top lists to begin with (the random writes alone seldom fill one).
        for (b, (i, f)) in IDS.iter().zip(&full) {
            let w = [("Donate", (*i).into()), ("Like", (*i).into()), ("Score", (*f).into())];
            engine.attach(1, IDS[0], *b, &w).expect("attach");
            engine.attach(3, IDS[2], *b, &[("F", (*f).into())]).expect("attach");
        }
        let api = Api::new(Arc::clone(&engine));
        api.add_token(TOKEN, TokenScope::full());
        for op in &ops {
            if let Op::Get(..) | Op::List(..) = op {
                continue;
            }
            apply_engine(&engine, op);
        }
        check(&api, &engine)?;
    }
}

/// The shapes themselves, on the seed's example: a test that does not lean on the
/// renderer it is compared with above.
#[test]
fn the_seed_counter_and_its_page() {
    use relcount::{PropSpec, RelationType};
    let engine = Engine::new();
    engine
        .define(
            RelationType::new(3, 1, 2)
                .prop("Donate", PropSpec::int().top(10))
                .prop("Like", PropSpec::int().sum())
                .prop("Score", PropSpec::float().sum())
                .prop("Subscriber", PropSpec::bool()),
        )
        .expect("define");
    let (a, b) = ("5c910f6bc484d023b1309bee", "5c910938c484d023b1309bab");
    engine
        .attach(
            3,
            a,
            b,
            &[
                ("Donate", 20.into()),
                ("Like", 2.into()),
                ("Score", 0.5.into()),
                ("Subscriber", true.into()),
            ],
        )
        .expect("attach");
    let counter = engine.get_counter(3, a).expect("counter");
    assert_eq!(
        serialised!(&counter),
        json!({
            "profile_id": a,
            "profile_xxh": "54ec2d76ac22a964",
            "total": 1,
            "props": {
                "Donate": {"total": 1, "top": [{"profile_id": b, "value": 20}], "sum": null},
                "Like": {"total": 1, "top": null, "sum": 2},
                "Score": {"total": 1, "top": null, "sum": 0.5},
                "Subscriber": {"total": 1, "top": null, "sum": null},
            }
        })
    );
    let page = engine.list(3, a, 0, 10).expect("page");
    let row = &serialised!(&page)["data"][0];
    assert_eq!(row["profile_id_a"], json!(a));
    assert_eq!(row["profile_id_b"], json!(b));
    assert_eq!(row["db_b"], json!(2));
    assert_eq!(row["props"]["Subscriber"], json!({"value": true}));
    assert_eq!(serialised!(&page)["total_count"], json!(1));
}

/// Postmortem: an int sum beyond the 64-bit ranges is written exactly as text,
/// and `serde_json::to_value` refuses it with an error rather than rounding it; a sum
/// that fits goes out as an `i64` or a `u64`, which every format takes.
#[test]
fn a_sum_beyond_64_bits_is_exact_as_text_and_refused_as_a_value() {
    use relcount::{PropSpec, RelationType, Sum};
    let engine = Engine::new();
    engine
        .define(RelationType::new(9, 1, 2).prop("N", PropSpec::int().sum()))
        .expect("define");
    engine
        .attach(9, "a", "b1", &[("N", i64::MIN.into())])
        .expect("attach");
    engine
        .attach(9, "a", "b2", &[("N", i64::MIN.into())])
        .expect("attach");
    engine
        .attach(9, "c", "b1", &[("N", i64::MAX.into())])
        .expect("attach");
    engine
        .attach(9, "c", "b2", &[("N", 1.into())])
        .expect("attach");
    let low = engine.get_counter(9, "a").expect("counter");
    assert_eq!(low.sum("N"), Some(Sum::Int(2 * i128::from(i64::MIN))));
    let text = serde_json::to_string(&low).expect("serialises");
    assert!(text.contains(r#""sum":-18446744073709551616"#), "{text}");
    assert!(serde_json::to_value(&low).is_err());
    // Past i64 but within u64: a u64.
    let high = engine.get_counter(9, "c").expect("counter");
    let value = serde_json::to_value(&high).expect("fits a u64");
    assert_eq!(value["props"]["N"]["sum"], json!(1u64 << 63));
    assert_eq!(
        serde_json::to_value(Sum::Int(-2)).expect("an i64"),
        json!(-2)
    );
}
