//! Shared test support: the naive oracle, the owned form of answers both sides give,
//! and the operations the model tests apply to both.
#![allow(dead_code, unreachable_pub)]

pub mod oracle;

use relcount::{Counter, Engine, Error, Page, PropKind, PropSpec, RelationType, Sum, Value};

/// A counter as plain data, so engine and oracle answers compare with `==`.
#[derive(Debug, Clone, PartialEq)]
pub struct Owned {
    pub profile_id: String,
    pub xxh: u64,
    pub total: u64,
    pub props: Vec<OwnedProp>,
}

/// One property of an [`Owned`] counter.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedProp {
    pub name: String,
    pub total: u64,
    pub sum: Option<Sum>,
    pub top: Option<Vec<(String, Value)>>,
}

/// One row of `list`: initiator id, its hash, the values it has.
pub type OwnedRow = (String, u64, Vec<(String, Value)>);

/// A page of `list` as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedPage {
    pub total_count: u64,
    pub rows: Vec<OwnedRow>,
}

pub fn own(c: &Counter) -> Owned {
    Owned {
        profile_id: c.profile_id().to_string(),
        xxh: c.profile_xxh(),
        total: c.total(),
        props: c
            .props()
            .map(|p| OwnedProp {
                name: p.name().to_string(),
                total: p.total(),
                sum: p.sum(),
                top: p
                    .top()
                    .map(|t| t.map(|i| (i.profile_id.to_string(), i.value)).collect()),
            })
            .collect(),
    }
}

pub fn own_page(p: &Page) -> OwnedPage {
    OwnedPage {
        total_count: p.total_count,
        rows: p
            .rows
            .iter()
            .map(|r| (r.profile_b.to_string(), r.xxh_b, r.props.clone()))
            .collect(),
    }
}

/// One call, applied alike to the engine and the oracle.
#[derive(Debug, Clone)]
pub enum Op {
    Attach(u32, String, String, Vec<(String, Value)>),
    Strengthen(u32, String, String, Vec<(String, Value)>),
    Edit(u32, String, String, Vec<(String, Value)>),
    Detach(u32, String, String),
    Delete(u32, String),
    Get(u32, String),
    List(u32, String, usize, usize),
}

/// What a call answered, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Done(Result<(), Error>),
    Counter(Result<Owned, Error>),
    Page(Result<OwnedPage, Error>),
}

pub fn apply_engine(e: &Engine, op: &Op) -> Answer {
    match op {
        Op::Attach(r, a, b, w) => Answer::Done(e.attach(*r, a, b, w)),
        Op::Strengthen(r, a, b, w) => Answer::Done(e.strengthen(*r, a, b, w)),
        Op::Edit(r, a, b, w) => Answer::Done(e.edit(*r, a, b, w)),
        Op::Detach(r, a, b) => Answer::Done(e.detach(*r, a, b)),
        Op::Delete(db, id) => Answer::Done(e.delete_profile(*db, id)),
        Op::Get(r, a) => Answer::Counter(e.get_counter(*r, a).map(|c| own(&c))),
        Op::List(r, a, skip, limit) => {
            Answer::Page(e.list(*r, a, *skip, *limit).map(|p| own_page(&p)))
        }
    }
}

pub fn apply_oracle(o: &mut oracle::Oracle, op: &Op) -> Answer {
    match op {
        Op::Attach(r, a, b, w) => Answer::Done(o.write(oracle::Kind::Attach, *r, a, b, w)),
        Op::Strengthen(r, a, b, w) => Answer::Done(o.write(oracle::Kind::Strengthen, *r, a, b, w)),
        Op::Edit(r, a, b, w) => Answer::Done(o.write(oracle::Kind::Edit, *r, a, b, w)),
        Op::Detach(r, a, b) => Answer::Done(o.detach(*r, a, b)),
        Op::Delete(db, id) => Answer::Done(o.delete_profile(*db, id)),
        Op::Get(r, a) => Answer::Counter(o.get_counter(*r, a)),
        Op::List(r, a, skip, limit) => Answer::Page(o.list(*r, a, *skip, *limit)),
    }
}

/// The model tests' relation types: rel 1 from db 1 to db 2 with every kind of
/// property and small tops (so they churn), rel 2 within db 2 (so one profile is both
/// recipient and initiator), rel 3 from db 2 back to db 1.
pub fn model_schemas() -> Vec<RelationType> {
    vec![
        RelationType::new(1, 1, 2)
            .prop("Donate", PropSpec::int().top(3))
            .prop("Like", PropSpec::int().sum())
            .prop("Subscriber", PropSpec::bool())
            .prop("Score", PropSpec::float().sum().top(2))
            .prop("Both", PropSpec::int().sum().top(1)),
        RelationType::new(2, 2, 2).prop("W", PropSpec::int().sum().top(2)),
        RelationType::new(3, 2, 1)
            .prop("F", PropSpec::float().top(4))
            .prop("Flag", PropSpec::bool()),
    ]
}

/// The engine and the oracle, with the model schemas defined in both; `hash` is the
/// profile hash the engine was built with.
pub fn pair(engine: Engine, hash: fn(&[u8]) -> u64) -> (Engine, oracle::Oracle) {
    let mut o = oracle::Oracle::new(hash);
    for def in model_schemas() {
        engine.define(def.clone()).expect("model schema is valid");
        o.define(def).expect("model schema is valid");
    }
    (engine, o)
}

/// Every answer both sides can give about their whole state: profiles of each
/// database, and for every relation type and candidate id, the counter and the list.
pub fn sweep(e: &Engine, o: &oracle::Oracle, candidates: &[String]) -> Result<(), String> {
    for db in [1, 2] {
        let ids: Vec<String> = e.profile_ids(db).iter().map(|p| p.to_string()).collect();
        let want = o.profile_ids(db);
        if ids != want {
            return Err(format!(
                "profiles of db {db}: engine {ids:?}, oracle {want:?}"
            ));
        }
    }
    if e.relation_count() != o.relation_count() {
        return Err(format!(
            "relation_count: engine {}, oracle {}",
            e.relation_count(),
            o.relation_count()
        ));
    }
    for def in model_schemas() {
        let rel = def.rel_id();
        for id in candidates {
            for op in [Op::Get(rel, id.clone()), Op::List(rel, id.clone(), 0, 1000)] {
                let (got, want) = (apply_engine(e, &op), o.answer(&op));
                if got != want {
                    return Err(format!("{op:?}: engine {got:?}, oracle {want:?}"));
                }
            }
        }
    }
    Ok(())
}

/// The kind of each model property, for generators.
pub fn prop_kinds(rel: u32) -> Vec<(&'static str, PropKind)> {
    match rel {
        1 => vec![
            ("Donate", PropKind::Int),
            ("Like", PropKind::Int),
            ("Subscriber", PropKind::Bool),
            ("Score", PropKind::Float),
            ("Both", PropKind::Int),
        ],
        2 => vec![("W", PropKind::Int)],
        _ => vec![("F", PropKind::Float), ("Flag", PropKind::Bool)],
    }
}

/// Applies `ops` to both sides, comparing every answer and sweeping the whole state
/// after every step.
pub fn check_steps(
    engine: &Engine,
    mut oracle: oracle::Oracle,
    ops: &[Op],
    candidates: &[String],
) -> Result<(), String> {
    for (step, op) in ops.iter().enumerate() {
        let got = apply_engine(engine, op);
        let want = apply_oracle(&mut oracle, op);
        if got != want {
            return Err(format!(
                "step {step} {op:?}: engine {got:?}, oracle {want:?}"
            ));
        }
        sweep(engine, &oracle, candidates).map_err(|d| format!("after step {step} {op:?}: {d}"))?;
    }
    Ok(())
}

/// Every read answer of the engine over `candidates`: two equal snapshots mean two
/// equal states, as far as any caller can tell.
pub fn snapshot(e: &Engine, candidates: &[String]) -> Vec<Answer> {
    let mut out = Vec::new();
    for db in [1, 2] {
        out.push(Answer::Page(Ok(OwnedPage {
            total_count: 0,
            rows: e
                .profile_ids(db)
                .iter()
                .map(|p| (p.to_string(), 0, Vec::new()))
                .collect(),
        })));
    }
    for def in model_schemas() {
        for id in candidates {
            out.push(apply_engine(e, &Op::Get(def.rel_id(), id.clone())));
            out.push(apply_engine(
                e,
                &Op::List(def.rel_id(), id.clone(), 0, 1000),
            ));
        }
    }
    out
}
