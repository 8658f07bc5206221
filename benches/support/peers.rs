//! The peers every relcount bench compares against, answering the same question:
//! the seed schema's counter (total, Like's sum, Subscriber's true count, Donate's top
//! 10 by value descending then id ascending) for one recipient.
#![allow(dead_code, unreachable_pub)]

use std::hash::BuildHasherDefault;

use relcount::Value;
use relcount::workload::GenRelation;
use rusqlite::{Connection, params};

/// A counter as plain data; every store's answer is compared as this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub total: u64,
    pub like_sum: i128,
    pub sub_total: u64,
    pub top: Vec<(String, i64)>,
}

pub fn relcount_answer(e: &relcount::Engine, a: &str) -> Answer {
    let c = e.get_counter(3, a).expect("known recipient");
    Answer {
        total: c.total(),
        like_sum: match c.prop("Like").and_then(|p| p.sum()) {
            Some(relcount::Sum::Int(s)) => s,
            _ => 0,
        },
        sub_total: c.prop("Subscriber").map_or(0, |p| p.total()),
        top: c
            .prop("Donate")
            .and_then(|p| p.top())
            .map(|t| {
                t.map(|i| match i.value {
                    Value::Int(v) => (i.profile_id.to_string(), v),
                    _ => unreachable!("Donate is int"),
                })
                .collect()
            })
            .unwrap_or_default(),
    }
}

/// The naive store: relations only, every counter recomputed by scanning the target.
#[derive(Default)]
pub struct Naive {
    pub targets: hashbrown::HashMap<String, Vec<(String, i64, i64, bool)>>,
    /// Where each (recipient, initiator) sits in its target's list.
    at: hashbrown::HashMap<(String, String), usize>,
}

impl Naive {
    pub fn attach(&mut self, r: &GenRelation) {
        let rels = self.targets.entry(r.a.clone()).or_default();
        let row = (r.b.clone(), r.donate, r.like, r.subscriber);
        match self.at.get(&(r.a.clone(), r.b.clone())) {
            Some(&i) => rels[i] = row,
            None => {
                self.at.insert((r.a.clone(), r.b.clone()), rels.len());
                rels.push(row);
            }
        }
    }

    pub fn get(&self, a: &str) -> Answer {
        let rels = &self.targets[a];
        let mut top: Vec<(String, i64)> = rels.iter().map(|x| (x.0.clone(), x.1)).collect();
        let order =
            |x: &(String, i64), y: &(String, i64)| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0));
        if top.len() > 10 {
            top.select_nth_unstable_by(10, order);
            top.truncate(10);
        }
        top.sort_by(order);
        Answer {
            total: rels.len() as u64,
            like_sum: rels.iter().map(|x| i128::from(x.2)).sum(),
            sub_total: rels.iter().filter(|x| x.3).count() as u64,
            top,
        }
    }
}

/// The straightforward incremental store, as a careful engineer writes it in an
/// afternoon: a map of recipients, each with a map of its relations, running totals
/// and an ordered set of `(value, initiator)` for its top. One thread, nothing
/// published, no concurrency: what a purpose-built engine must beat.
#[derive(Default)]
pub struct Simple {
    pub targets: hashbrown::HashMap<String, SimpleTarget, BuildHasherDefault<Xxh>>,
}

/// One recipient of [`Simple`].
#[derive(Default)]
pub struct SimpleTarget {
    rels: hashbrown::HashMap<String, (i64, i64, bool), BuildHasherDefault<Xxh>>,
    like_sum: i128,
    sub_total: u64,
    /// Donate's values, best first: `(Reverse(value), initiator)`.
    top: std::collections::BTreeSet<(std::cmp::Reverse<i64>, String)>,
}

impl SimpleTarget {
    fn take(&mut self, b: &str, old: (i64, i64, bool)) {
        self.like_sum -= i128::from(old.1);
        self.sub_total -= u64::from(old.2);
        self.top.remove(&(std::cmp::Reverse(old.0), b.to_owned()));
    }

    fn put(&mut self, b: &str, new: (i64, i64, bool)) {
        self.like_sum += i128::from(new.1);
        self.sub_total += u64::from(new.2);
        self.top.insert((std::cmp::Reverse(new.0), b.to_owned()));
    }
}

impl Simple {
    /// Sets the relation's values, as `attach` does.
    pub fn attach(&mut self, r: &GenRelation) {
        let t = self.targets.entry_ref(r.a.as_str()).or_default();
        let new = (r.donate, r.like, r.subscriber);
        if let Some(old) = t.rels.insert(r.b.clone(), new) {
            t.take(&r.b, old);
        }
        t.put(&r.b, new);
    }

    /// Adds `r.donate` to the relation's Donate (creating it with only that value
    /// otherwise, Like 0), as `strengthen` does.
    pub fn strengthen(&mut self, r: &GenRelation) {
        let t = self.targets.entry_ref(r.a.as_str()).or_default();
        let old = t.rels.get(r.b.as_str()).copied();
        let new = match old {
            Some(old) => {
                t.take(&r.b, old);
                (old.0 + r.donate, old.1, old.2)
            }
            None => (r.donate, 0, false),
        };
        t.rels.insert(r.b.clone(), new);
        t.put(&r.b, new);
    }

    pub fn get(&self, a: &str) -> Answer {
        let t = &self.targets[a];
        Answer {
            total: t.rels.len() as u64,
            like_sum: t.like_sum,
            sub_total: t.sub_total,
            top: t
                .top
                .iter()
                .take(10)
                .map(|(v, b)| (b.clone(), v.0))
                .collect(),
        }
    }
}

/// SQLite in memory, indexed on (rel_id, profile_a): the same answer by COUNT, SUM and
/// ORDER BY ... LIMIT 10.
pub struct Sqlite {
    pub conn: Connection,
}

impl Sqlite {
    pub fn new() -> Sqlite {
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             CREATE TABLE rel (rel_id INTEGER NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL,
                 donate INTEGER, like_ INTEGER, sub INTEGER, PRIMARY KEY (rel_id, a, b));
             CREATE INDEX rel_a ON rel (rel_id, a);",
        )
        .expect("schema");
        Sqlite { conn }
    }

    pub fn attach(&self, r: &GenRelation) {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO rel (rel_id, a, b, donate, like_, sub) VALUES (3, ?1, ?2, ?3, ?4, ?5)",
            )
            .expect("prepare")
            .execute(params![r.a, r.b, r.donate, r.like, r.subscriber])
            .expect("insert");
    }

    pub fn strengthen(&self, r: &GenRelation) {
        self.conn
            .prepare_cached(
                "INSERT INTO rel (rel_id, a, b, donate, like_, sub) VALUES (3, ?1, ?2, ?3, 0, NULL)
                 ON CONFLICT (rel_id, a, b) DO UPDATE SET donate = coalesce(donate, 0) + ?3",
            )
            .expect("prepare")
            .execute(params![r.a, r.b, r.donate])
            .expect("upsert");
    }

    pub fn detach(&self, a: &str, b: &str) {
        self.conn
            .prepare_cached("DELETE FROM rel WHERE rel_id = 3 AND a = ?1 AND b = ?2")
            .expect("prepare")
            .execute(params![a, b])
            .expect("delete");
    }

    pub fn get(&self, a: &str) -> Answer {
        let (total, like_sum, sub_total) = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*), coalesce(SUM(like_), 0), coalesce(SUM(sub), 0) FROM rel WHERE rel_id = 3 AND a = ?1",
            )
            .expect("prepare")
            .query_row(params![a], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })
            .expect("counts");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT b, donate FROM rel WHERE rel_id = 3 AND a = ?1 AND donate IS NOT NULL
                 ORDER BY donate DESC, b ASC LIMIT 10",
            )
            .expect("prepare");
        let top = stmt
            .query_map(params![a], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .expect("top")
            .map(|r| r.expect("row"))
            .collect();
        Answer {
            total: total as u64,
            like_sum: i128::from(like_sum),
            sub_total: sub_total as u64,
            top,
        }
    }

    /// Bytes of the database: page_count * page_size.
    pub fn bytes(&self) -> u64 {
        let q = |sql: &str| -> u64 {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .expect("pragma") as u64
        };
        q("PRAGMA page_count") * q("PRAGMA page_size")
    }
}

/// XXH64 as a `Hasher`, so the limit hashes ids as relcount does.
pub struct Xxh(xxhash_rust::xxh64::Xxh64);

impl Default for Xxh {
    fn default() -> Self {
        Xxh(xxhash_rust::xxh64::Xxh64::new(0))
    }
}

impl std::hash::Hasher for Xxh {
    fn finish(&self) -> u64 {
        self.0.digest()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The limit: a bare `hashbrown` map from the id (XXH64) to a ready-made answer of the
/// same size, got and copied. No engine can answer faster than this.
#[derive(Default)]
pub struct Limit {
    pub answers: hashbrown::HashMap<String, Answer, BuildHasherDefault<Xxh>>,
}

impl Limit {
    pub fn get(&self, a: &str) -> Answer {
        self.answers[a].clone()
    }
}
