//! Shared test support: the naive oracle, the owned form of answers both sides give,
//! and the operations the model tests apply to both.
#![allow(dead_code, unreachable_pub)]

pub mod consistency;
pub mod oracle;

use relcount::{
    Counter, Engine, Error, Page, ProfileData, PropKind, PropSpec, RelationType, Sum, Value,
};

/// How a test names a profile: the library's owned match.
pub use relcount::OwnedMatch as Who;

/// Errors whose text describes a lookup or data compare by kind and database only:
/// the oracle does not copy the engine's wording.
pub fn comparable(e: Error) -> Error {
    match e {
        Error::NoMatch { db_id, .. } => Error::NoMatch {
            db_id,
            query: String::new(),
        },
        Error::Ambiguous { db_id, .. } => Error::Ambiguous {
            db_id,
            query: String::new(),
        },
        Error::InvalidProfileData { .. } => Error::InvalidProfileData {
            reason: String::new(),
        },
        Error::InRow { row, error } => Error::InRow {
            row,
            error: Box::new(comparable(*error)),
        },
        e => e,
    }
}

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

/// One row of a bulk import: profile A id, profile B id, weights.
pub type BulkRow = (String, String, Vec<(String, Value)>);

/// One call, applied alike to the engine and the oracle.
#[derive(Debug, Clone)]
pub enum Op {
    Attach(u32, Who, Who, Vec<(String, Value)>),
    Strengthen(u32, Who, Who, Vec<(String, Value)>),
    Edit(u32, Who, Who, Vec<(String, Value)>),
    Detach(u32, Who, Who),
    Delete(u32, Who),
    Get(u32, Who),
    List(u32, Who, usize, usize),
    Import(u32, String, ProfileData),
    /// A bulk import: rows of (profile A id, profile B id, weights).
    Bulk(u32, Vec<BulkRow>),
    /// A batch of writes (`Engine::apply`).
    Batch(Vec<relcount::Write>),
}

/// What a call answered, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Done(Result<(), Error>),
    Counter(Result<Owned, Error>),
    Page(Result<OwnedPage, Error>),
    Imported(Result<usize, Error>),
}

/// Owned weights as the engine's writes take them.
pub fn borrowed(w: &[(String, Value)]) -> Vec<(&str, Value)> {
    w.iter().map(|(n, v)| (n.as_str(), *v)).collect()
}

pub fn apply_engine(e: &Engine, op: &Op) -> Answer {
    let answer = match op {
        Op::Attach(r, a, b, w) => {
            Answer::Done(e.attach(*r, a.as_match(), b.as_match(), &borrowed(w)))
        }
        Op::Strengthen(r, a, b, w) => {
            Answer::Done(e.strengthen(*r, a.as_match(), b.as_match(), &borrowed(w)))
        }
        Op::Edit(r, a, b, w) => Answer::Done(e.edit(*r, a.as_match(), b.as_match(), &borrowed(w))),
        Op::Detach(r, a, b) => Answer::Done(e.detach(*r, a.as_match(), b.as_match())),
        Op::Delete(db, who) => Answer::Done(e.delete_profile(*db, who.as_match())),
        Op::Get(r, a) => Answer::Counter(e.get_counter(*r, a.as_match()).map(|c| own(&c))),
        Op::List(r, a, skip, limit) => Answer::Page(
            e.list(*r, a.as_match(), *skip, *limit)
                .map(|p| own_page(&p)),
        ),
        Op::Import(db, id, data) => Answer::Done(e.import_profile(*db, id, data.clone())),
        Op::Bulk(r, rows) => Answer::Imported(e.import_relations(*r, rows.iter().cloned())),
        Op::Batch(writes) => Answer::Imported(e.apply(writes)),
    };
    answer.comparable()
}

impl Answer {
    pub fn comparable_pub(self) -> Answer {
        self.comparable()
    }

    fn comparable(self) -> Answer {
        match self {
            Answer::Done(r) => Answer::Done(r.map_err(comparable)),
            Answer::Counter(r) => Answer::Counter(r.map_err(comparable)),
            Answer::Page(r) => Answer::Page(r.map_err(comparable)),
            Answer::Imported(r) => Answer::Imported(r.map_err(comparable)),
        }
    }
}

pub fn apply_oracle(o: &mut oracle::Oracle, op: &Op) -> Answer {
    let answer = match op {
        Op::Attach(r, a, b, w) => Answer::Done(o.write(oracle::Kind::Attach, *r, a, b, w)),
        Op::Strengthen(r, a, b, w) => Answer::Done(o.write(oracle::Kind::Strengthen, *r, a, b, w)),
        Op::Edit(r, a, b, w) => Answer::Done(o.write(oracle::Kind::Edit, *r, a, b, w)),
        Op::Detach(r, a, b) => Answer::Done(o.detach(*r, a, b)),
        Op::Delete(db, who) => Answer::Done(o.delete_profile(*db, who)),
        Op::Get(r, a) => Answer::Counter(o.get_counter(*r, a)),
        Op::List(r, a, skip, limit) => Answer::Page(o.list(*r, a, *skip, *limit)),
        Op::Import(db, id, data) => Answer::Done(o.import(*db, id, data)),
        Op::Bulk(r, rows) => Answer::Imported(o.bulk(*r, rows)),
        Op::Batch(writes) => Answer::Imported(o.batch(writes)),
    };
    answer.comparable()
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

/// Lookups the sweep tries in every database, so indexes are compared with the
/// oracle's scans after every step.
pub fn sweep_queries() -> Vec<Who> {
    let mut q = Vec::new();
    for e in EMAILS {
        q.push(Who::Email {
            email: e.to_string(),
            resource_id: None,
        });
        q.push(Who::Email {
            email: e.to_string(),
            resource_id: Some(1),
        });
        q.push(Who::EmailProfile(e.to_string()));
    }
    for p in PHONES {
        q.push(Who::Phone {
            phone: p.to_string(),
            resource_id: None,
        });
        q.push(Who::Phone {
            phone: p.to_string(),
            resource_id: Some(2),
        });
    }
    for v in ["1", "2", "t1", "t2", "t1, t2", "t3,t1", ""] {
        q.push(Who::Custom {
            field: "CRM".into(),
            value: v.to_string(),
        });
        q.push(Who::Custom {
            field: "Tags".into(),
            value: v.to_string(),
        });
    }
    q
}

/// Emails of the model keyspace (some equal after normalisation).
pub const EMAILS: &[&str] = &["ann@x.io", " ANN@x.io", "bob@x.io"];
/// Phones of the model keyspace (some equal after normalisation).
pub const PHONES: &[&str] = &["+7 900 1", "79001", "+1 555"];

/// Every answer both sides can give about their whole state: profiles of each
/// database, and for every relation type and candidate id, the counter and the list,
/// and every lookup of [`sweep_queries`].
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
            for op in [
                Op::Get(rel, id.clone().into()),
                Op::List(rel, id.clone().into(), 0, 1000),
            ] {
                let (got, want) = (apply_engine(e, &op), o.answer(&op));
                if got != want {
                    return Err(format!("{op:?}: engine {got:?}, oracle {want:?}"));
                }
            }
        }
    }
    // rel 1 reads database 1 and rel 2 database 2: every lookup mode in both.
    for rel in [1, 2] {
        for who in sweep_queries() {
            let op = Op::Get(rel, who);
            let (got, want) = (apply_engine(e, &op), o.answer(&op));
            if got != want {
                return Err(format!("{op:?}: engine {got:?}, oracle {want:?}"));
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
        check_step(engine, &mut oracle, op, candidates).map_err(|e| format!("step {step}: {e}"))?;
    }
    Ok(())
}

/// Applies one op to both sides, compares the answers, then sweeps the whole state.
pub fn check_step(
    engine: &Engine,
    oracle: &mut oracle::Oracle,
    op: &Op,
    candidates: &[String],
) -> Result<(), String> {
    let got = apply_engine(engine, op);
    let want = apply_oracle(oracle, op);
    if got != want {
        return Err(format!("{op:?}: engine {got:?}, oracle {want:?}"));
    }
    sweep(engine, oracle, candidates).map_err(|d| format!("after {op:?}: {d}"))
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
            out.push(apply_engine(e, &Op::Get(def.rel_id(), id.clone().into())));
            out.push(apply_engine(
                e,
                &Op::List(def.rel_id(), id.clone().into(), 0, 1000),
            ));
        }
    }
    out
}
