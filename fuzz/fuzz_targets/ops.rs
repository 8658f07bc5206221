//! `ops`: arbitrary sequences of define / attach / detach / strengthen / edit / import /
//! delete / get / list over a small keyspace, applied to the engine and to the naive
//! oracle of the model tests; every answer compared, the whole state swept after every
//! step. Run: `cargo fuzz run ops` (nightly) or `cargo fuzz run ops --sanitizer none`.

#![no_main]

#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/it/common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{EMAILS, Op, PHONES, Who, check_step, pair};
use libfuzzer_sys::fuzz_target;
use relcount::{
    Channel, Engine, FieldValue, ProfileData, PropSpec, RelationType, Subscription, Value,
};

const IDS: &[&str] = &[
    "5c910f6bc484d023b1309bee",
    "5c910938c484d023b1309bab",
    "a1",
    "b1",
    "B1",
    "",
];

#[derive(Arbitrary, Debug)]
enum FWho {
    Id(u8),
    Email(u8, Option<u8>),
    EmailProfile(u8),
    Phone(u8, Option<u8>),
    Custom(bool, u8),
}

impl FWho {
    fn who(&self) -> Who {
        let pick = |xs: &[&str], i: &u8| xs[usize::from(*i) % xs.len()].to_string();
        let res = |r: &Option<u8>| r.map(|r| u32::from(r % 3));
        match self {
            FWho::Id(i) => Who::Id(pick(IDS, i)),
            FWho::Email(i, r) => Who::Email {
                email: pick(EMAILS, i),
                resource_id: res(r),
            },
            FWho::EmailProfile(i) => Who::EmailProfile(pick(EMAILS, i)),
            FWho::Phone(i, r) => Who::Phone {
                phone: pick(PHONES, i),
                resource_id: res(r),
            },
            FWho::Custom(tags, i) => {
                let values = ["1", "2", "t1", "t1, t2", "t2,t3", ""];
                let field = if *tags { "Tags" } else { "CRM" };
                Who::Custom {
                    field: field.into(),
                    value: pick(&values, i),
                }
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum FVal {
    Small(i8),
    Int(i64),
    /// A multiple of 1/4, so the oracle's exact float sums hold.
    Quarter(i32),
    Bool(bool),
    Bad(u8),
}

impl FVal {
    fn value(&self) -> Value {
        match self {
            FVal::Small(i) => Value::Int(i64::from(*i)),
            FVal::Int(i) => Value::Int(*i),
            FVal::Quarter(q) => Value::Float(f64::from(*q) * 0.25),
            FVal::Bool(b) => Value::Bool(*b),
            FVal::Bad(k) => {
                Value::Float([f64::NAN, f64::INFINITY, 1e300, -0.0][usize::from(*k) % 4])
            }
        }
    }
}

const NAMES: &[&str] = &[
    "Donate",
    "Like",
    "Subscriber",
    "Score",
    "Both",
    "W",
    "F",
    "Flag",
    "Nope",
];

#[derive(Arbitrary, Debug)]
struct FData {
    email: Option<u8>,
    phone: Option<u8>,
    crm: Option<i8>,
    tags: Option<Vec<u8>>,
    subs: Vec<(u8, bool, u8)>,
}

impl FData {
    fn data(&self) -> ProfileData {
        let mut fields = Vec::new();
        if let Some(c) = self.crm {
            fields.push(("CRM".to_string(), FieldValue::Int(i64::from(c % 3))));
        }
        if let Some(t) = &self.tags {
            let tags = t.iter().take(4).map(|i| format!("t{}", i % 4)).collect();
            fields.push(("Tags".to_string(), FieldValue::Tags(tags)));
        }
        ProfileData {
            email: self
                .email
                .map(|i| EMAILS[usize::from(i) % EMAILS.len()].to_string()),
            phone: self
                .phone
                .map(|i| PHONES[usize::from(i) % PHONES.len()].to_string()),
            fields,
            subscriptions: self
                .subs
                .iter()
                .take(3)
                .map(|&(r, sms, i)| Subscription {
                    resource_id: u32::from(r % 3),
                    channel: if sms { Channel::Sms } else { Channel::Email },
                    address: if sms {
                        PHONES[usize::from(i) % PHONES.len()]
                    } else {
                        EMAILS[usize::from(i) % EMAILS.len()]
                    }
                    .to_string(),
                })
                .collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum FOp {
    Define(u8),
    Attach(u8, FWho, FWho, Vec<(u8, FVal)>),
    Strengthen(u8, FWho, FWho, Vec<(u8, FVal)>),
    Edit(u8, FWho, FWho, Vec<(u8, FVal)>),
    Detach(u8, FWho, FWho),
    Delete(bool, FWho),
    Get(u8, FWho),
    List(u8, FWho, u8, u16),
    Import(bool, u8, FData),
}

fn rel(r: u8) -> u32 {
    [1, 2, 3, 9][usize::from(r) % 4]
}

fn weights(w: &[(u8, FVal)]) -> Vec<(String, Value)> {
    w.iter()
        .take(4)
        .map(|(n, v)| (NAMES[usize::from(*n) % NAMES.len()].to_string(), v.value()))
        .collect()
}

/// Relation types a `Define` may try: the model's own (a no-op), conflicting ones,
/// and a new one.
fn definition(i: u8) -> RelationType {
    let mut defs = common::model_schemas();
    defs.push(RelationType::new(1, 1, 2).prop("Donate", PropSpec::int()));
    defs.push(RelationType::new(9, 1, 2).prop("Like", PropSpec::int().sum()));
    defs.swap_remove(usize::from(i) % defs.len())
}

fuzz_target!(|ops: Vec<FOp>| {
    let (engine, mut oracle) = pair(
        Engine::builder().shards(2).top_index_threshold(3).build(),
        relcount::xxh64,
    );
    let candidates: Vec<String> = IDS.iter().map(|s| s.to_string()).collect();
    for op in ops.iter().take(64) {
        let step = match op {
            FOp::Define(i) => {
                let def = definition(*i);
                let (got, want) = (engine.define(def.clone()), oracle.define(def));
                assert_eq!(got, want, "define");
                continue;
            }
            FOp::Attach(r, a, b, w) => Op::Attach(rel(*r), a.who(), b.who(), weights(w)),
            FOp::Strengthen(r, a, b, w) => Op::Strengthen(rel(*r), a.who(), b.who(), weights(w)),
            FOp::Edit(r, a, b, w) => Op::Edit(rel(*r), a.who(), b.who(), weights(w)),
            FOp::Detach(r, a, b) => Op::Detach(rel(*r), a.who(), b.who()),
            FOp::Delete(db2, who) => Op::Delete(1 + u32::from(*db2), who.who()),
            FOp::Get(r, who) => Op::Get(rel(*r), who.who()),
            FOp::List(r, who, skip, limit) => Op::List(
                rel(*r),
                who.who(),
                usize::from(*skip % 4),
                usize::from(*limit % 1002),
            ),
            FOp::Import(db2, i, d) => Op::Import(
                1 + u32::from(*db2),
                IDS[usize::from(*i) % IDS.len()].to_string(),
                d.data(),
            ),
        };
        if let Err(e) = check_step(&engine, &mut oracle, &step, &candidates) {
            panic!("{e}");
        }
    }
});
