//! The naive oracle: a `BTreeMap` of relations, every counter recomputed from scratch by
//! scanning, and validation written out plainly from docs/api.md. It shares no code with the
//! engine beyond the public types of answers and errors.

use std::collections::{BTreeMap, BTreeSet};

use relcount::limits::MAX_FLOAT;
use relcount::{Channel, Error, FieldValue, ProfileData, PropKind, RelationType, Sum, Value};

use super::{Answer, Op, Owned, OwnedPage, OwnedProp, Who};

/// A profile's data as the oracle keeps it: normalised plainly, matched by scanning.
#[derive(Debug, Clone, Default)]
struct Data {
    email: Option<String>,
    phone: Option<String>,
    scalars: BTreeMap<String, String>,
    tags: BTreeMap<String, BTreeSet<String>>,
    subs: Vec<(u32, Channel, String)>,
}

fn email(e: &str) -> String {
    e.trim().to_lowercase()
}

fn phone(p: &str) -> String {
    let digits: String = p.chars().filter(char::is_ascii_digit).collect();
    format!("+{digits}")
}

fn data_of(d: &ProfileData) -> Data {
    let mut out = Data {
        email: d.email.as_deref().map(email),
        phone: d.phone.as_deref().map(phone),
        ..Data::default()
    };
    for (name, v) in &d.fields {
        let name = name.trim().to_string();
        match v {
            FieldValue::Text(t) => {
                out.scalars.insert(name, t.trim().to_string());
            }
            FieldValue::Int(i) => {
                out.scalars.insert(name, i.to_string());
            }
            FieldValue::Tags(ts) => {
                out.tags
                    .insert(name, ts.iter().map(|t| t.trim().to_string()).collect());
            }
        }
    }
    for s in &d.subscriptions {
        let a = match s.channel {
            Channel::Email => email(&s.address),
            Channel::Sms => phone(&s.address),
        };
        out.subs.push((s.resource_id, s.channel, a));
    }
    out
}

impl Data {
    fn matches(&self, who: &Who) -> bool {
        match who {
            Who::Id(_) => false,
            Who::Email {
                email: e,
                resource_id: r,
            } => {
                let e = email(e);
                (r.is_none() && self.email.as_ref() == Some(&e))
                    || self.subs.iter().any(|(res, c, a)| {
                        *c == Channel::Email && *a == e && r.is_none_or(|r| r == *res)
                    })
            }
            Who::EmailProfile(e) => self.email.as_ref() == Some(&email(e)),
            Who::Phone {
                phone: p,
                resource_id: r,
            } => {
                let p = phone(p);
                (r.is_none() && self.phone.as_ref() == Some(&p))
                    || self.subs.iter().any(|(res, c, a)| {
                        *c == Channel::Sms && *a == p && r.is_none_or(|r| r == *res)
                    })
            }
            Who::Custom { field: f, value: v } => {
                let (f, v) = (f.trim(), v.trim());
                if let Some(s) = self.scalars.get(f) {
                    return s == v;
                }
                let want: BTreeSet<String> = v
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect();
                self.tags
                    .get(f)
                    .is_some_and(|have| !want.is_empty() && want.is_subset(have))
            }
            other => unimplemented!("the oracle has no matching mode {other:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Attach,
    Strengthen,
    Edit,
}

#[derive(Debug, Clone)]
struct Prop {
    name: String,
    kind: PropKind,
    sum: bool,
    top: Option<u16>,
}

#[derive(Debug, Clone)]
struct Rel {
    db_a: u32,
    db_b: u32,
    props: Vec<Prop>,
}

/// Relations keyed by `(rel_id, profile_a, profile_b)`, values by property name.
#[derive(Debug, Clone)]
pub struct Oracle {
    rels: BTreeMap<u32, Rel>,
    defs: BTreeMap<u32, RelationType>,
    profiles: BTreeMap<(u32, String), Option<Data>>,
    relations: BTreeMap<(u32, String, String), BTreeMap<String, Value>>,
    hash: fn(&[u8]) -> u64,
}

fn check_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 64 {
        Err(Error::InvalidProfileId { len: id.len() })
    } else {
        Ok(())
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Bool(_) => "bool",
    }
}

impl Oracle {
    pub fn new(hash: fn(&[u8]) -> u64) -> Self {
        Oracle {
            rels: BTreeMap::new(),
            defs: BTreeMap::new(),
            profiles: BTreeMap::new(),
            relations: BTreeMap::new(),
            hash,
        }
    }

    /// Mirrors a relation type (the engine's own tests cover schema validation):
    /// the same definition again is a no-op, another one for a known id a conflict.
    pub fn define(&mut self, def: RelationType) -> Result<(), Error> {
        if let Some(known) = self.defs.get(&def.rel_id()) {
            return if *known == def {
                Ok(())
            } else {
                Err(Error::SchemaConflict {
                    rel_id: def.rel_id(),
                })
            };
        }
        self.defs.insert(def.rel_id(), def.clone());
        let props = def
            .props()
            .map(|(name, spec)| Prop {
                name: name.to_string(),
                kind: spec.kind(),
                sum: spec.has_sum(),
                top: spec.top_size(),
            })
            .collect();
        self.rels.insert(
            def.rel_id(),
            Rel {
                db_a: def.db_a(),
                db_b: def.db_b(),
                props,
            },
        );
        Ok(())
    }

    fn rel(&self, rel_id: u32) -> Result<&Rel, Error> {
        self.rels
            .get(&rel_id)
            .ok_or(Error::UnknownRelation { rel_id })
    }

    fn typed(
        &self,
        rel_id: u32,
        weights: &[(String, Value)],
    ) -> Result<Vec<(String, Value)>, Error> {
        let rel = self.rel(rel_id)?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (name, value) in weights {
            let prop = rel.props.iter().find(|p| &p.name == name).ok_or_else(|| {
                Error::UnknownProperty {
                    rel_id,
                    name: name.clone(),
                }
            })?;
            if !seen.insert(name.clone()) {
                return Err(Error::DuplicateProperty { name: name.clone() });
            }
            let v = match (prop.kind, *value) {
                (PropKind::Int, Value::Int(v)) => Value::Int(v),
                (PropKind::Float, Value::Int(v)) => Value::Float(v as f64),
                (PropKind::Float, Value::Float(v)) if v.is_nan() || v.is_infinite() => {
                    return Err(Error::NotFinite {
                        property: name.clone(),
                    });
                }
                (PropKind::Float, Value::Float(v)) if v.abs() > MAX_FLOAT => {
                    return Err(Error::FloatOverflow {
                        property: name.clone(),
                    });
                }
                (PropKind::Float, Value::Float(v)) => Value::Float(if v == 0.0 { 0.0 } else { v }),
                (PropKind::Bool, Value::Bool(v)) => Value::Bool(v),
                (kind, v) => {
                    return Err(Error::WrongType {
                        property: name.clone(),
                        expected: kind,
                        got: type_name(&v),
                    });
                }
            };
            out.push((name.clone(), v));
        }
        Ok(out)
    }

    fn has(&self, db: u32, id: &str) -> bool {
        self.profiles.contains_key(&(db, id.to_string()))
    }

    /// The id `who` names in `db`: ids as given (existence is the caller's question),
    /// others by scanning every profile's data.
    fn find(&self, db: u32, who: &Who) -> Result<String, Error> {
        if let Who::Id(id) = who {
            check_id(id)?;
            return Ok(id.clone());
        }
        let hits: Vec<&String> = self
            .profiles
            .iter()
            .filter(|((d, _), data)| *d == db && data.as_ref().is_some_and(|x| x.matches(who)))
            .map(|((_, id), _)| id)
            .collect();
        match hits.as_slice() {
            [] => Err(Error::NoMatch {
                db_id: db,
                query: String::new(),
            }),
            [one] => Ok((*one).clone()),
            _ => Err(Error::Ambiguous {
                db_id: db,
                query: String::new(),
            }),
        }
    }

    pub fn import(&mut self, db: u32, id: &str, data: &ProfileData) -> Result<(), Error> {
        check_id(id)?;
        self.profiles
            .insert((db, id.to_string()), Some(data_of(data)));
        Ok(())
    }

    pub fn write(
        &mut self,
        kind: Kind,
        rel_id: u32,
        a: &Who,
        b: &Who,
        weights: &[(String, Value)],
    ) -> Result<(), Error> {
        let rel = self.rel(rel_id)?.clone();
        let typed = self.typed(rel_id, weights)?;
        let a = &self.find(rel.db_a, a)?;
        let b = &self.find(rel.db_b, b)?;
        let key = (rel_id, a.to_string(), b.to_string());
        let old = self.relations.get(&key).cloned();
        let mut values = match (kind, &old) {
            (Kind::Attach, _) | (_, None) => BTreeMap::new(),
            (_, Some(old)) => old.clone(),
        };
        for (name, v) in typed {
            let v = match (kind, v, values.get(&name)) {
                (Kind::Strengthen, Value::Int(d), cur) => {
                    let cur = match cur {
                        Some(Value::Int(c)) => *c,
                        _ => 0,
                    };
                    Value::Int(cur.checked_add(d).ok_or(Error::IntOverflow {
                        property: name.clone(),
                    })?)
                }
                (Kind::Strengthen, Value::Float(d), cur) => {
                    let cur = match cur {
                        Some(Value::Float(c)) => *c,
                        _ => 0.0,
                    };
                    let s = cur + d;
                    if s.abs() > MAX_FLOAT {
                        return Err(Error::FloatOverflow {
                            property: name.clone(),
                        });
                    }
                    Value::Float(if s == 0.0 { 0.0 } else { s })
                }
                (_, v, _) => v,
            };
            values.insert(name, v);
        }
        self.profiles
            .entry((rel.db_a, a.to_string()))
            .or_insert(None);
        self.profiles
            .entry((rel.db_b, b.to_string()))
            .or_insert(None);
        self.relations.insert(key, values);
        Ok(())
    }

    /// A bulk import: the same rows as attaches, one at a time, in order; all of them
    /// or (at the first refused row) none.
    pub fn bulk(&mut self, rel_id: u32, rows: &[crate::common::BulkRow]) -> Result<usize, Error> {
        self.rel(rel_id)?;
        let mut next = self.clone();
        for (row, (a, b, w)) in rows.iter().enumerate() {
            let (a, b) = (Who::Id(a.clone()), Who::Id(b.clone()));
            next.write(Kind::Attach, rel_id, &a, &b, w)
                .map_err(|error| Error::InRow {
                    row,
                    error: Box::new(error),
                })?;
        }
        *self = next;
        Ok(rows.len())
    }

    /// A batch of writes: one after another, in order; all of them or (at the first
    /// refused one) none.
    pub fn batch(&mut self, writes: &[relcount::Write]) -> Result<usize, Error> {
        let mut next = self.clone();
        for (row, w) in writes.iter().enumerate() {
            let (a, b) = (Who::Id(w.profile_a.clone()), Who::Id(w.profile_b.clone()));
            let kind = match w.op {
                relcount::Op::Attach => Kind::Attach,
                relcount::Op::Strengthen => Kind::Strengthen,
                relcount::Op::Edit => Kind::Edit,
                relcount::Op::Detach => {
                    let done = next.rel(w.rel_id).map(drop).and_then(|()| {
                        if w.values.is_empty() {
                            next.detach(w.rel_id, &a, &b)
                        } else {
                            Err(Error::InvalidArgument {
                                name: "values",
                                reason: "a detach takes no values".into(),
                            })
                        }
                    });
                    done.map_err(|error| Error::InRow {
                        row,
                        error: Box::new(error),
                    })?;
                    continue;
                }
            };
            next.write(kind, w.rel_id, &a, &b, &w.values)
                .map_err(|error| Error::InRow {
                    row,
                    error: Box::new(error),
                })?;
        }
        *self = next;
        Ok(writes.len())
    }

    pub fn detach(&mut self, rel_id: u32, a: &Who, b: &Who) -> Result<(), Error> {
        let rel = self.rel(rel_id)?.clone();
        let a = &self.find(rel.db_a, a)?;
        let b = &self.find(rel.db_b, b)?;
        for (db, id) in [(rel.db_a, a), (rel.db_b, b)] {
            if !self.has(db, id) {
                return Err(Error::ProfileNotFound {
                    db_id: db,
                    profile_id: id.to_string(),
                });
            }
        }
        self.relations
            .remove(&(rel_id, a.to_string(), b.to_string()))
            .map(|_| ())
            .ok_or_else(|| Error::RelationNotFound {
                rel_id,
                profile_a: a.to_string(),
                profile_b: b.to_string(),
            })
    }

    pub fn delete_profile(&mut self, db: u32, who: &Who) -> Result<(), Error> {
        let id = &self.find(db, who)?;
        if self.profiles.remove(&(db, id.to_string())).is_none() {
            return Err(Error::ProfileNotFound {
                db_id: db,
                profile_id: id.to_string(),
            });
        }
        let rels = self.rels.clone();
        self.relations.retain(|(rel_id, a, b), _| {
            let r = &rels[rel_id];
            !((r.db_a == db && a == id) || (r.db_b == db && b == id))
        });
        Ok(())
    }

    fn rows(&self, rel_id: u32, a: &str) -> Vec<(&String, &BTreeMap<String, Value>)> {
        self.relations
            .iter()
            .filter(|((r, pa, _), _)| *r == rel_id && pa == a)
            .map(|((_, _, b), v)| (b, v))
            .collect()
    }

    /// The relation type and the existing recipient `a` names, as a read finds them.
    fn recipient(&self, rel_id: u32, a: &Who) -> Result<(&Rel, String), Error> {
        let rel = self.rel(rel_id)?;
        let a = self.find(rel.db_a, a)?;
        if !self.has(rel.db_a, &a) {
            return Err(Error::ProfileNotFound {
                db_id: rel.db_a,
                profile_id: a,
            });
        }
        Ok((rel, a))
    }

    pub fn get_counter(&self, rel_id: u32, a: &Who) -> Result<Owned, Error> {
        let (rel, a) = self.recipient(rel_id, a)?;
        let rows = self.rows(rel_id, &a);
        let props = rel
            .props
            .iter()
            .map(|p| {
                let vals: Vec<(&String, Value)> = rows
                    .iter()
                    .filter_map(|(b, v)| Some((*b, *v.get(&p.name)?)))
                    .collect();
                let total = match p.kind {
                    PropKind::Bool => vals.iter().filter(|(_, v)| *v == Value::Bool(true)).count(),
                    _ => vals.len(),
                } as u64;
                let sum = p.sum.then(|| match p.kind {
                    PropKind::Int => Sum::Int(
                        vals.iter()
                            .map(|(_, v)| match v {
                                Value::Int(i) => i128::from(*i),
                                _ => unreachable!(),
                            })
                            .sum(),
                    ),
                    // Model floats are multiples of 1/4 below 2^100: exact in i128.
                    _ => {
                        let quarters: i128 = vals
                            .iter()
                            .map(|(_, v)| match v {
                                Value::Float(f) => {
                                    assert_eq!((f * 4.0).fract(), 0.0, "model float {f}");
                                    (f * 4.0) as i128
                                }
                                _ => unreachable!(),
                            })
                            .sum();
                        Sum::Float(quarters as f64 / 4.0 + 0.0)
                    }
                });
                let top = p.top.map(|n| {
                    let mut v: Vec<(String, Value)> =
                        vals.iter().map(|(b, v)| ((*b).clone(), *v)).collect();
                    v.sort_by(|x, y| by_value(&y.1, &x.1).then_with(|| x.0.cmp(&y.0)));
                    v.truncate(usize::from(n));
                    v
                });
                OwnedProp {
                    name: p.name.clone(),
                    total,
                    sum,
                    top,
                }
            })
            .collect();
        Ok(Owned {
            profile_id: a.to_string(),
            xxh: (self.hash)(a.as_bytes()),
            total: rows.len() as u64,
            props,
        })
    }

    pub fn list(
        &self,
        rel_id: u32,
        a: &Who,
        skip: usize,
        limit: usize,
    ) -> Result<OwnedPage, Error> {
        if !(1..=1000).contains(&limit) {
            return Err(Error::InvalidArgument {
                name: "limit",
                reason: format!("limit must be 1 to 1000, got {limit}"),
            });
        }
        let (rel, a) = self.recipient(rel_id, a)?;
        let rows = self.rows(rel_id, &a);
        Ok(OwnedPage {
            total_count: rows.len() as u64,
            rows: rows
                .iter()
                .skip(skip)
                .take(limit)
                .map(|(b, v)| {
                    let props = rel
                        .props
                        .iter()
                        .filter_map(|p| Some((p.name.clone(), *v.get(&p.name)?)))
                        .collect();
                    ((*b).clone(), (self.hash)(b.as_bytes()), props)
                })
                .collect(),
        })
    }

    pub fn relation_count(&self) -> u64 {
        self.relations.len() as u64
    }

    pub fn profile_ids(&self, db: u32) -> Vec<String> {
        self.profiles
            .keys()
            .filter(|(d, _)| *d == db)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Answers a read op without needing `&mut`.
    pub fn answer(&self, op: &Op) -> Answer {
        match op {
            Op::Get(r, a) => Answer::Counter(self.get_counter(*r, a)),
            Op::List(r, a, s, l) => Answer::Page(self.list(*r, a, *s, *l)),
            _ => panic!("answer takes read ops only"),
        }
        .comparable_pub()
    }
}

fn by_value(x: &Value, y: &Value) -> std::cmp::Ordering {
    match (x, y) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).expect("finite"),
        _ => unreachable!("one property has one type"),
    }
}
