//! The platform's own example (docs/api.md, *`relations/get_counter`*): the seed
//! schema and one relation produce exactly the seed's counters, field by field.

use relcount::{Engine, PropKind, PropSpec, RelationType, Sum, Value, format_xxh};

fn seed_engine() -> Engine {
    let engine = Engine::new();
    engine
        .define(
            RelationType::new(3, 1, 2)
                .prop("Donate", PropSpec::int().top(10))
                .prop("Like", PropSpec::int().sum())
                .prop("Subscriber", PropSpec::bool()),
        )
        .expect("seed schema");
    engine
}

#[test]
fn seed_counter_field_by_field() {
    let engine = seed_engine();
    engine
        .attach(
            3,
            "5c910f6bc484d023b1309bee",
            "5c910938c484d023b1309bab",
            &[
                ("Donate", Value::Int(20)),
                ("Like", Value::Int(2)),
                ("Subscriber", Value::Bool(true)),
            ],
        )
        .expect("attach");
    let c = engine
        .get_counter(3, "5c910f6bc484d023b1309bee")
        .expect("counter");
    assert_eq!(c.profile_id().to_string(), "5c910f6bc484d023b1309bee");
    assert_eq!(format_xxh(c.profile_xxh()), "54ec2d76ac22a964");
    assert_eq!(c.total(), 1);
    let names: Vec<&str> = c.props().map(|p| p.name()).collect();
    assert_eq!(names, ["Donate", "Like", "Subscriber"]);

    let donate = c.prop("Donate").expect("Donate");
    assert_eq!(donate.kind(), PropKind::Int);
    assert_eq!(donate.total(), 1);
    assert_eq!(donate.sum(), None);
    let top: Vec<(String, Value)> = donate
        .top()
        .expect("Donate keeps a top")
        .map(|t| (t.profile_id.to_string(), t.value))
        .collect();
    assert_eq!(
        top,
        [("5c910938c484d023b1309bab".to_string(), Value::Int(20))]
    );

    let like = c.prop("Like").expect("Like");
    assert_eq!(like.total(), 1);
    assert!(like.top().is_none());
    assert_eq!(like.sum(), Some(Sum::Int(2)));

    let sub = c.prop("Subscriber").expect("Subscriber");
    assert_eq!(sub.total(), 1);
    assert!(sub.top().is_none());
    assert_eq!(sub.sum(), None);
}

/// The same counters reached through strengthen and edit instead of one attach.
#[test]
fn seed_counter_by_strengthen_and_edit() {
    let engine = seed_engine();
    let (a, b) = ("5c910f6bc484d023b1309bee", "5c910938c484d023b1309bab");
    engine
        .strengthen(
            3,
            a,
            b,
            &[("Donate", Value::Int(25)), ("Like", Value::Int(2))],
        )
        .expect("strengthen");
    engine
        .strengthen(3, a, b, &[("Donate", Value::Int(-5))])
        .expect("weaken");
    engine
        .edit(3, a, b, &[("Subscriber", Value::Bool(true))])
        .expect("edit");
    let c = engine.get_counter(3, a).expect("counter");
    assert_eq!(c.total(), 1);
    let top: Vec<Value> = c
        .prop("Donate")
        .and_then(|p| p.top())
        .expect("top")
        .map(|t| t.value)
        .collect();
    assert_eq!(top, [Value::Int(20)]);
    assert_eq!(c.prop("Like").and_then(|p| p.sum()), Some(Sum::Int(2)));
    assert_eq!(c.prop("Subscriber").map(|p| p.total()), Some(1));
}

/// docs/api.md: a known profile with no relations answers `total: 0` and zeroed props.
#[test]
fn known_profile_without_relations_is_zeroed() {
    let engine = seed_engine();
    let (a, b) = ("5c910f6bc484d023b1309bee", "5c910938c484d023b1309bab");
    engine
        .attach(3, a, b, &[("Donate", Value::Int(20))])
        .expect("attach");
    engine.detach(3, a, b).expect("detach");
    let c = engine.get_counter(3, a).expect("still known");
    assert_eq!(c.total(), 0);
    let donate = c.prop("Donate").expect("Donate");
    assert_eq!(donate.total(), 0);
    assert_eq!(donate.top().map(|t| t.count()), Some(0));
    assert_eq!(c.prop("Like").and_then(|p| p.sum()), Some(Sum::Int(0)));
    assert!(engine.get_counter(3, "never-seen").is_err());
}
