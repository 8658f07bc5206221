//! Proptest strategies for the model's operations (shared by the model and persistence
//! tests; the fuzz crate has its own `Arbitrary` types).
#![allow(dead_code, unreachable_pub)]

use proptest::prelude::*;
use relcount::{Channel, FieldValue, ProfileData, PropKind, Subscription, Value};

use crate::common::{EMAILS, Op, PHONES, Who, prop_kinds};

/// Ids shared by both databases (the same id in two databases is two profiles), hex
/// and text, plus two invalid ones that must be refused.
pub const IDS: &[&str] = &[
    "5c910f6bc484d023b1309bee",
    "5c910938c484d023b1309bab",
    "a1",
    "b1",
    "b2",
    "B1",
];
pub const BAD_IDS: &[&str] = &[""];

pub fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        30 => prop::sample::select(IDS).prop_map(str::to_string),
        1 => prop::sample::select(BAD_IDS).prop_map(str::to_string),
        1 => Just("x".repeat(65)),
    ]
}

/// Ids for the wide keyspace: many initiators so targets cross the index threshold.
pub fn wide_id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("5c910f6bc484d023b1309bee".to_string()),
        10 => (0u8..14).prop_map(|i| format!("{i:024x}")),
    ]
}

pub fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        20 => -3i64..=3,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        2 => Just(1i64 << 40),
    ]
}

pub fn float() -> impl Strategy<Value = f64> {
    prop::sample::select(&[-2.5, -0.0, 0.0, 0.25, 1.0, 3.75, 1e16, -1e16][..])
}

/// A value for a property of `kind`: mostly well typed, sometimes not (wrong type, NaN,
/// infinity, out of range), so refusals are exercised.
pub fn value_for(kind: PropKind, sel: u8, i: i64, f: f64, b: bool) -> Value {
    match (sel, kind) {
        (0, PropKind::Bool) => Value::Int(i),
        (0, _) => Value::Bool(b),
        (1, PropKind::Int) => Value::Float(f),
        (1, _) => Value::Float(f64::NAN),
        (2, _) => Value::Float(f64::INFINITY),
        (3, _) => Value::Float(1e300),
        (_, PropKind::Int) => Value::Int(i),
        (sel, PropKind::Float) if sel % 3 == 0 => Value::Int(i),
        (_, PropKind::Float) => Value::Float(f),
        (_, PropKind::Bool) => Value::Bool(b),
    }
}

pub fn weights(rel: u32) -> impl Strategy<Value = Vec<(String, Value)>> {
    let kinds = prop_kinds(rel);
    let n = kinds.len();
    prop::collection::vec(
        (
            0..=n,
            prop_oneof![1 => 0u8..4, 40 => 4u8..255],
            int(),
            float(),
            any::<bool>(),
        ),
        0..=3,
    )
    .prop_map(move |ws| {
        ws.into_iter()
            .map(|(i, sel, iv, fv, bv)| match kinds.get(i) {
                Some(&(name, kind)) => (name.to_string(), value_for(kind, sel, iv, fv, bv)),
                None => ("Nope".to_string(), Value::Int(iv)),
            })
            .collect()
    })
}

pub fn rel() -> impl Strategy<Value = u32> {
    prop_oneof![12 => Just(1u32), 6 => Just(2u32), 4 => Just(3u32), 1 => Just(9u32)]
}

/// A profile reference: mostly an id, sometimes a lookup by data.
pub fn who(ids: BoxedStrategy<String>) -> BoxedStrategy<Who> {
    let email = prop::sample::select(EMAILS).prop_map(str::to_string);
    let phone = prop::sample::select(PHONES).prop_map(str::to_string);
    let resource = prop::option::of(1u32..3);
    prop_oneof![
        12 => ids.prop_map(Who::Id),
        1 => (email.clone(), resource.clone()).prop_map(|(email, resource_id)| Who::Email { email, resource_id }),
        1 => email.prop_map(Who::EmailProfile),
        1 => (phone, resource).prop_map(|(phone, resource_id)| Who::Phone { phone, resource_id }),
        1 => (prop::sample::select(&["CRM", "Tags"][..]), prop::sample::select(&["1", "2", "t1", "t1, t2"][..]))
            .prop_map(|(f, v)| Who::Custom { field: f.to_string(), value: v.to_string() }),
    ]
    .boxed()
}

/// Profile data over small pools, so imports collide, re-imports change entries, and
/// lookups find one, none or several profiles.
pub fn data() -> impl Strategy<Value = ProfileData> {
    let email = prop::option::of(prop::sample::select(EMAILS).prop_map(str::to_string));
    let phone = prop::option::of(prop::sample::select(PHONES).prop_map(str::to_string));
    let crm = prop::option::of(prop_oneof![
        (1i64..3).prop_map(FieldValue::Int),
        prop::sample::select(&["1", " 2 ", "t1"][..]).prop_map(|t| FieldValue::Text(t.to_string())),
    ]);
    let tags = prop::option::of(
        prop::collection::vec(prop::sample::select(&["t1", "t2", "t3"][..]), 0..3)
            .prop_map(|t| FieldValue::Tags(t.into_iter().map(str::to_string).collect())),
    );
    let sub = (1u32..3, any::<bool>(), 0usize..3).prop_map(|(r, sms, i)| Subscription {
        resource_id: r,
        channel: if sms { Channel::Sms } else { Channel::Email },
        address: if sms { PHONES[i] } else { EMAILS[i] }.to_string(),
    });
    (email, phone, crm, tags, prop::collection::vec(sub, 0..3)).prop_map(
        |(email, phone, crm, tags, subscriptions)| ProfileData {
            email,
            phone,
            fields: crm
                .map(|v| ("CRM".to_string(), v))
                .into_iter()
                .chain(tags.map(|v| ("Tags".to_string(), v)))
                .collect(),
            subscriptions,
        },
    )
}

pub fn op_with(ids: BoxedStrategy<String>) -> impl Strategy<Value = Op> {
    let ids_for_import = ids.clone();
    let ids_for_bulk = ids.clone();
    let (w1, w2) = (who(ids.clone()), who(ids));
    (rel(), w1, w2, 0u8..108, ids_for_import, data())
        .prop_flat_map(move |(r, a, b, pick, id, data)| {
            let w = weights(if r == 9 { 1 } else { r });
            // A batch over the same small pools: pairs repeat, rows are sometimes
            // invalid (a bad id or weight), so all-or-nothing and last-row-wins show.
            let row = (
                ids_for_bulk.clone(),
                ids_for_bulk.clone(),
                weights(if r == 9 { 1 } else { r }),
            );
            // A batch of writes of every kind over the same pools, mostly of one
            // type: pairs repeat, so a pair's writes fold in order; a detach may find
            // no relation (or no profile) at its place, refusing the batch.
            let write = (
                0u8..10,
                prop_oneof![4 => Just(r), 1 => rel()],
                ids_for_bulk.clone(),
                ids_for_bulk.clone(),
                weights(if r == 9 { 1 } else { r }),
            )
                .prop_map(|(op, r, a, b, w)| {
                    let op = match op {
                        0..=2 => relcount::Op::Attach,
                        3..=5 => relcount::Op::Strengthen,
                        6..=7 => relcount::Op::Edit,
                        _ => relcount::Op::Detach,
                    };
                    let w = if op == relcount::Op::Detach {
                        Vec::new()
                    } else {
                        w
                    };
                    relcount::Write::new(op, r, a, b, w)
                });
            (
                Just((r, a, b, pick, id, data)),
                w,
                0usize..4,
                prop_oneof![Just(1usize), Just(2), Just(1000), Just(0), Just(1001)],
                prop::collection::vec(row, 0..10),
                prop::collection::vec(write, 0..12),
            )
        })
        .prop_map(
            |((r, a, b, pick, id, data), w, skip, limit, rows, writes)| match pick {
                104.. => Op::Batch(writes),
                100.. => Op::Bulk(r, rows),
                0..=26 => Op::Attach(r, a, b, w),
                27..=44 => Op::Strengthen(r, a, b, w),
                45..=56 => Op::Edit(r, a, b, w),
                57..=69 => Op::Detach(r, a, b),
                70..=73 => Op::Delete(1 + u32::from(pick % 2), a),
                74..=83 => Op::Import(1 + u32::from(pick % 2), id, data),
                84..=92 => Op::Get(r, a),
                _ => Op::List(r, a, skip, limit),
            },
        )
}
