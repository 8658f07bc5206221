//! Every refused call answers a precise error and leaves the engine exactly as it was:
//! the whole observable state is compared before and after each one.

use crate::common::{Op, Who, apply_engine, pair, snapshot};
use relcount::limits::MAX_FLOAT;
use relcount::{Engine, Error, PropKind, PropSpec, RelationType, Value};

const A: &str = "5c910f6bc484d023b1309bee";
const B: &str = "5c910938c484d023b1309bab";

fn ids() -> Vec<String> {
    [A, B, "a1", "b1", "new"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn populated() -> Engine {
    let (engine, _) = pair(Engine::builder().shards(4).build(), relcount::xxh64);
    let w = |n: &str, v| vec![(n.to_string(), v)];
    for op in [
        Op::Attach(
            1,
            Who::from(A),
            Who::from(B),
            w("Donate", Value::Int(i64::MAX)),
        ),
        Op::Attach(
            1,
            Who::from(A),
            Who::from("b1"),
            w("Score", Value::Float(MAX_FLOAT)),
        ),
        Op::Attach(1, Who::from("a1"), Who::from(B), w("Like", Value::Int(3))),
        Op::Attach(2, Who::from(B), Who::from("b1"), w("W", Value::Int(5))),
    ] {
        assert_eq!(
            apply_engine(&engine, &op),
            crate::common::Answer::Done(Ok(()))
        );
    }
    engine
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn refused_writes_change_nothing() {
    let engine = populated();
    let before = snapshot(&engine, &ids());
    let long = "x".repeat(65);
    let cases: Vec<(Op, Error)> = vec![
        (
            Op::Attach(9, Who::from(s(A)), Who::from(s(B)), vec![]),
            Error::UnknownRelation { rel_id: 9 },
        ),
        (
            Op::Attach(
                1,
                Who::from(s("new")),
                Who::from(s("new")),
                vec![(s("Nope"), Value::Int(1))],
            ),
            Error::UnknownProperty {
                rel_id: 1,
                name: s("Nope"),
            },
        ),
        (
            Op::Attach(
                1,
                Who::from(s("new")),
                Who::from(s(B)),
                vec![(s("Donate"), Value::Float(1.5))],
            ),
            Error::WrongType {
                property: s("Donate"),
                expected: PropKind::Int,
                got: "float",
            },
        ),
        (
            Op::Edit(
                1,
                Who::from(s(A)),
                Who::from(s(B)),
                vec![(s("Subscriber"), Value::Int(1))],
            ),
            Error::WrongType {
                property: s("Subscriber"),
                expected: PropKind::Bool,
                got: "int",
            },
        ),
        (
            Op::Edit(
                1,
                Who::from(s(A)),
                Who::from(s(B)),
                vec![(s("Like"), Value::Bool(true))],
            ),
            Error::WrongType {
                property: s("Like"),
                expected: PropKind::Int,
                got: "bool",
            },
        ),
        (
            Op::Attach(
                1,
                Who::from(s("new")),
                Who::from(s(B)),
                vec![(s("Score"), Value::Float(f64::NAN))],
            ),
            Error::NotFinite {
                property: s("Score"),
            },
        ),
        (
            Op::Attach(
                1,
                Who::from(s("new")),
                Who::from(s(B)),
                vec![(s("Score"), Value::Float(f64::NEG_INFINITY))],
            ),
            Error::NotFinite {
                property: s("Score"),
            },
        ),
        (
            Op::Attach(
                1,
                Who::from(s("new")),
                Who::from(s(B)),
                vec![(s("Score"), Value::Float(1e300))],
            ),
            Error::FloatOverflow {
                property: s("Score"),
            },
        ),
        (
            Op::Attach(
                1,
                Who::from(s("new")),
                Who::from(s(B)),
                vec![(s("Like"), Value::Int(1)), (s("Like"), Value::Int(2))],
            ),
            Error::DuplicateProperty { name: s("Like") },
        ),
        (
            Op::Strengthen(
                1,
                Who::from(s(A)),
                Who::from(s(B)),
                vec![(s("Donate"), Value::Int(1))],
            ),
            Error::IntOverflow {
                property: s("Donate"),
            },
        ),
        (
            Op::Strengthen(
                1,
                Who::from(s(A)),
                Who::from(s("b1")),
                vec![(s("Score"), Value::Float(MAX_FLOAT))],
            ),
            Error::FloatOverflow {
                property: s("Score"),
            },
        ),
        (
            // The relation does not exist, so strengthen would create it and a new
            // profile; the refused weight must stop that too.
            Op::Strengthen(
                1,
                Who::from(s("new")),
                Who::from(s("new")),
                vec![(s("Like"), Value::Int(1)), (s("Donate"), Value::Bool(true))],
            ),
            Error::WrongType {
                property: s("Donate"),
                expected: PropKind::Int,
                got: "bool",
            },
        ),
        (
            Op::Attach(1, Who::from(s("")), Who::from(s(B)), vec![]),
            Error::InvalidProfileId { len: 0 },
        ),
        (
            Op::Attach(1, Who::from(s(A)), Who::from(long.clone()), vec![]),
            Error::InvalidProfileId { len: 65 },
        ),
        (
            Op::Detach(1, Who::from(s(A)), Who::from(s("a1"))),
            Error::ProfileNotFound {
                db_id: 2,
                profile_id: s("a1"),
            },
        ),
        (
            Op::Detach(1, Who::from(s("a1")), Who::from(s("b1"))),
            Error::RelationNotFound {
                rel_id: 1,
                profile_a: s("a1"),
                profile_b: s("b1"),
            },
        ),
        (
            Op::Detach(1, Who::from(s("new")), Who::from(s(B))),
            Error::ProfileNotFound {
                db_id: 1,
                profile_id: s("new"),
            },
        ),
        (
            Op::Delete(1, Who::from(s("new"))),
            Error::ProfileNotFound {
                db_id: 1,
                profile_id: s("new"),
            },
        ),
        (
            Op::Delete(1, Who::from(long)),
            Error::InvalidProfileId { len: 65 },
        ),
        (
            Op::Get(1, Who::from(s("new"))),
            Error::ProfileNotFound {
                db_id: 1,
                profile_id: s("new"),
            },
        ),
        (
            Op::List(1, Who::from(s(A)), 0, 0),
            Error::InvalidArgument {
                name: "limit",
                reason: s("limit must be 1 to 1000, got 0"),
            },
        ),
        (
            Op::List(1, Who::from(s(A)), 0, 1001),
            Error::InvalidArgument {
                name: "limit",
                reason: s("limit must be 1 to 1000, got 1001"),
            },
        ),
        // A batch with one bad row applies none of its good ones.
        (
            Op::Bulk(
                1,
                vec![
                    (s(A), s("new-b"), vec![(s("Like"), Value::Int(1))]),
                    (s(A), s(B), vec![(s("Like"), Value::Bool(true))]),
                ],
            ),
            Error::InRow {
                row: 1,
                error: Box::new(Error::WrongType {
                    property: s("Like"),
                    expected: PropKind::Int,
                    got: "bool",
                }),
            },
        ),
        (
            Op::Bulk(
                1,
                vec![
                    (s(A), s("new-b"), vec![]),
                    (s(A), s("new-b"), vec![]),
                    (s(A), s(""), vec![]),
                ],
            ),
            Error::InRow {
                row: 2,
                error: Box::new(Error::InvalidProfileId { len: 0 }),
            },
        ),
        (Op::Bulk(9, vec![]), Error::UnknownRelation { rel_id: 9 }),
    ];
    for (op, want) in cases {
        let got = apply_engine(&engine, &op);
        let err = match got {
            crate::common::Answer::Done(r) => r.err(),
            crate::common::Answer::Counter(r) => r.err(),
            crate::common::Answer::Page(r) => r.err(),
            crate::common::Answer::Imported(r) => r.err(),
        };
        assert_eq!(err.as_ref(), Some(&want), "{op:?}");
        assert!(!want.to_string().is_empty());
        assert_eq!(
            snapshot(&engine, &ids()),
            before,
            "{op:?} changed the state"
        );
    }
}

#[test]
fn schema_conflicts_and_repeats() {
    let engine = Engine::new();
    let def = RelationType::new(3, 1, 2).prop("Like", PropSpec::int().sum());
    engine.define(def.clone()).expect("first define");
    engine
        .define(def.clone())
        .expect("same schema again is a no-op");
    engine
        .attach(3, A, B, &[("Like", Value::Int(2))])
        .expect("attach");
    let other = RelationType::new(3, 1, 2).prop("Like", PropSpec::int());
    assert_eq!(
        engine.define(other),
        Err(Error::SchemaConflict { rel_id: 3 })
    );
    assert_eq!(engine.relation_type(3), Some(def));
    assert_eq!(engine.get_counter(3, A).map(|c| c.total()), Ok(1));
    let bad = RelationType::new(4, 1, 2).prop("T", PropSpec::int().top(1001));
    assert!(matches!(
        engine.define(bad),
        Err(Error::InvalidSchema { rel_id: 4, .. })
    ));
    assert_eq!(engine.relation_type(4), None);
}

#[test]
fn error_texts_say_what_to_fix() {
    let cases = [
        (
            Error::WrongType {
                property: s("Donate"),
                expected: PropKind::Int,
                got: "float",
            },
            "property Donate is int, got float",
        ),
        (
            Error::UnknownRelation { rel_id: 7 },
            "relation 7 is not defined",
        ),
        (
            Error::InvalidProfileId { len: 65 },
            "profile id must be 1 to 64 bytes long, got 65",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}
