//! relcount against its peers and the limit, each group in one run (criterion):
//!
//! - `get_counter/<size>/<store>`: one recipient with 10, 1k or 100k relations, and
//!   Zipf-drawn recipients of a 1M-profile workload; stores: `relcount`, `naive` (scans
//!   the target's relations), `sqlite` (in memory, indexed), `limit` (a bare hashbrown
//!   map from the id to a ready-made answer of the same size, got and copied).
//! - `writes/<op>/<store>`: attach, strengthen, edit, detach against SQLite's
//!   insert/update/delete with the same index, and the limit (a bare hashbrown insert
//!   of the relation record).
//!
//! Every timed loop checks its answer. `cargo bench --bench peers`;
//! `cargo bench --bench peers -- --test` runs each once (what .ci/run does).

#[path = "support/peers.rs"]
mod peers;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use peers::{Answer, Limit, Naive, Simple, Sqlite, relcount_answer};
use relcount::workload::{GenRelation, Rng, Workload, Zipf};
use relcount::{Engine, Value};

fn quick() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// `n` relations all to one recipient, from distinct initiators.
fn fan_in(n: usize) -> Vec<GenRelation> {
    let w = Workload::new(1, n as u64 * 4, 7);
    let mut seen = hashbrown::HashSet::new();
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        let mut r = w.relations(1).next().expect("one");
        r.a = "5c910f6bc484d023b1309bee".into();
        r.b = w.b_id(i);
        let mut rng = Rng::new(i);
        r.donate = 1000 / (1 + rng.below(1000) as i64);
        r.like = 1 + rng.below(5) as i64;
        r.subscriber = rng.below(2) == 0;
        i += 1;
        if seen.insert(r.b.clone()) {
            out.push(r);
        }
    }
    out
}

struct Stores {
    engine: Engine,
    naive: Naive,
    simple: Simple,
    sqlite: Sqlite,
    limit: Limit,
}

fn stores(rels: &[GenRelation]) -> Stores {
    let engine = Engine::new();
    engine.define(Workload::seed_schema(3)).expect("schema");
    let mut naive = Naive::default();
    let mut simple = Simple::default();
    let sqlite = Sqlite::new();
    sqlite.conn.execute_batch("BEGIN").expect("begin");
    for r in rels {
        engine
            .attach(3, r.a.as_str(), r.b.as_str(), &r.weights())
            .expect("attach");
        naive.attach(r);
        simple.attach(r);
        sqlite.attach(r);
    }
    sqlite.conn.execute_batch("COMMIT").expect("commit");
    let mut limit = Limit::default();
    for a in naive.targets.keys() {
        limit.answers.insert(a.clone(), naive.get(a));
    }
    Stores {
        engine,
        naive,
        simple,
        sqlite,
        limit,
    }
}

fn bench_get(c: &mut Criterion, name: &str, s: &Stores, reads: &[String], check: bool) {
    let mut g = c.benchmark_group(format!("get_counter/{name}"));
    if check {
        for a in reads.iter().take(50) {
            let want = s.naive.get(a);
            assert_eq!(relcount_answer(&s.engine, a), want, "relcount {a}");
            assert_eq!(s.sqlite.get(a), want, "sqlite {a}");
            assert_eq!(s.simple.get(a), want, "simple {a}");
            assert_eq!(s.limit.get(a), want, "limit {a}");
        }
    }
    let totals: hashbrown::HashMap<&str, u64> = reads
        .iter()
        .map(|a| (a.as_str(), s.naive.targets[a].len() as u64))
        .collect();
    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) % reads.len();
        reads[i].as_str()
    };
    let mut run = |store: &str, f: &dyn Fn(&str) -> Answer| {
        g.bench_function(BenchmarkId::from_parameter(store), |b| {
            b.iter(|| {
                let a = next();
                let ans = f(black_box(a));
                assert_eq!(ans.total, totals[a]);
                ans
            })
        });
    };
    run("relcount", &|a| relcount_answer(&s.engine, a));
    run("limit", &|a| s.limit.get(a));
    run("simple", &|a| s.simple.get(a));
    if s.naive.targets.values().map(Vec::len).max().unwrap_or(0) <= 100_000 {
        run("naive", &|a| s.naive.get(a));
    }
    run("sqlite", &|a| s.sqlite.get(a));
    g.finish();
}

fn get_counter(c: &mut Criterion) {
    let sizes: &[(&str, usize)] = if quick() {
        &[("10", 10), ("1k", 1_000)]
    } else {
        &[("10", 10), ("1k", 1_000), ("100k", 100_000)]
    };
    for &(name, n) in sizes {
        let s = stores(&fan_in(n));
        let reads = vec!["5c910f6bc484d023b1309bee".to_string()];
        bench_get(c, name, &s, &reads, true);
    }
    // A 1M-profile Zipf workload: most recipients small, a few huge; reads drawn with
    // the same law.
    let (ranks, n) = if quick() {
        (10_000, 10_000)
    } else {
        (1_000_000, 1_000_000)
    };
    let w = Workload::new(ranks, 1_000_000, 42);
    let rels: Vec<GenRelation> = w.relations(n).collect();
    let s = stores(&rels);
    let zipf = Zipf::new(ranks, relcount::workload::FAN_IN_EXPONENT);
    let mut rng = Rng::new(5);
    let reads: Vec<String> = (0..10_000)
        .map(|_| w.a_id(zipf.sample(&mut rng)))
        .filter(|a| s.naive.targets.contains_key(a))
        .collect();
    bench_get(c, "zipf_1M_profiles", &s, &reads, true);
}

fn writes(c: &mut Criterion) {
    let (ranks, n) = if quick() {
        (10_000, 10_000)
    } else {
        (100_000, 200_000)
    };
    let w = Workload::new(ranks, 1_000_000, 42);
    let base: Vec<GenRelation> = w.relations(n).collect();
    let fresh: Vec<GenRelation> = Workload::new(ranks, 1_000_000, 43).relations(n).collect();
    write_group(c, "writes", &base, &fresh);
}

/// The hot-recipient load: 1M relations, Zipf s = 1 over 100k recipients, so a few
/// recipients hold tens of thousands of relations (the store v3 issue's measurement).
fn writes_hot(c: &mut Criterion) {
    let (ranks, n) = if quick() {
        (10_000, 20_000)
    } else {
        (100_000, 1_000_000)
    };
    let w = Workload::with_exponent(ranks, 1_000_000, 42, 1.0);
    let base: Vec<GenRelation> = w.relations(n).collect();
    let fresh: Vec<GenRelation> = Workload::with_exponent(ranks, 1_000_000, 43, 1.0)
        .relations(n)
        .collect();
    write_group(c, "writes_hot", &base, &fresh);
}

/// Every recipient, the largest first.
fn recipients_by_size(naive: &Naive) -> Vec<String> {
    let mut recipients: Vec<String> = naive.targets.keys().cloned().collect();
    recipients.sort_unstable_by_key(|a| (std::cmp::Reverse(naive.targets[a].len()), a.clone()));
    recipients
}

/// Attach (`fresh`), strengthen, edit and detach (`base`) in group `name`, on stores
/// loaded with `base`; every store's answers checked equal first.
fn write_group(c: &mut Criterion, name: &str, base: &[GenRelation], fresh: &[GenRelation]) {
    let mut s = stores(base);
    let recipients = recipients_by_size(&s.naive);
    // The largest recipients and a spread of the others.
    let step = (recipients.len() / 40).max(1);
    for a in recipients
        .iter()
        .take(10)
        .chain(recipients.iter().step_by(step))
    {
        let want = s.naive.get(a);
        assert_eq!(relcount_answer(&s.engine, a), want, "relcount {a}");
        assert_eq!(s.simple.get(a), want, "simple {a}");
        assert_eq!(s.sqlite.get(a), want, "sqlite {a}");
    }
    let mut g = c.benchmark_group(name);
    let mut i = 0usize;
    let mut next = |v: &[GenRelation]| {
        i = (i + 1) % v.len();
        v[i].clone()
    };
    g.bench_function(BenchmarkId::new("attach", "relcount"), |b| {
        b.iter(|| {
            let r = next(fresh);
            s.engine
                .attach(3, r.a.as_str(), r.b.as_str(), &r.weights())
                .expect("attach")
        })
    });
    g.bench_function(BenchmarkId::new("attach", "sqlite"), |b| {
        b.iter(|| s.sqlite.attach(&next(fresh)))
    });
    g.bench_function(BenchmarkId::new("attach", "simple"), |b| {
        b.iter(|| s.simple.attach(&next(fresh)))
    });
    let mut limit: hashbrown::HashMap<
        (String, String),
        (i64, i64, bool),
        std::hash::BuildHasherDefault<peers::Xxh>,
    > = base
        .iter()
        .map(|r| ((r.a.clone(), r.b.clone()), (r.donate, r.like, r.subscriber)))
        .collect();
    g.bench_function(BenchmarkId::new("attach", "limit"), |b| {
        b.iter(|| {
            let r = next(fresh);
            limit.insert((r.a, r.b), (r.donate, r.like, r.subscriber))
        })
    });
    g.bench_function(BenchmarkId::new("strengthen", "relcount"), |b| {
        b.iter(|| {
            let r = next(base);
            s.engine
                .strengthen(
                    3,
                    r.a.as_str(),
                    r.b.as_str(),
                    &[("Donate", Value::Int(r.donate % 3 - 1))],
                )
                .expect("strengthen")
        })
    });
    g.bench_function(BenchmarkId::new("strengthen", "simple"), |b| {
        b.iter(|| {
            let mut r = next(base);
            r.donate = r.donate % 3 - 1;
            s.simple.strengthen(&r)
        })
    });
    g.bench_function(BenchmarkId::new("strengthen", "sqlite"), |b| {
        b.iter(|| {
            let mut r = next(base);
            r.donate = r.donate % 3 - 1;
            s.sqlite.strengthen(&r)
        })
    });
    // A batch of 1,000 strengthens (one `Engine::apply`): one iteration is 1,000
    // writes, against 1,000 single calls above.
    let batches: Vec<Vec<relcount::Write>> = base
        .chunks(1000)
        .take(100)
        .map(|chunk| {
            chunk
                .iter()
                .map(|r| {
                    let delta = [("Donate", Value::Int(r.donate % 3 - 1))];
                    relcount::Write::strengthen(3, r.a.clone(), r.b.clone(), delta)
                })
                .collect()
        })
        .collect();
    let mut k = 0usize;
    g.bench_function(BenchmarkId::new("strengthen_batch_1000", "relcount"), |b| {
        b.iter(|| {
            k = (k + 1) % batches.len();
            s.engine.apply(&batches[k]).expect("batch")
        })
    });
    g.bench_function(BenchmarkId::new("edit", "relcount"), |b| {
        b.iter(|| {
            let r = next(base);
            s.engine
                .edit(
                    3,
                    r.a.as_str(),
                    r.b.as_str(),
                    &[("Subscriber", Value::Bool(!r.subscriber))],
                )
                .expect("edit")
        })
    });
    // Detach, then attach back so the set stays the same size: timed as a pair.
    g.bench_function(BenchmarkId::new("detach_reattach", "relcount"), |b| {
        b.iter(|| {
            let r = next(base);
            let _ = s.engine.detach(3, r.a.as_str(), r.b.as_str());
            s.engine
                .attach(3, r.a.as_str(), r.b.as_str(), &r.weights())
                .expect("reattach")
        })
    });
    // A new relation into the largest recipient against one into recipients of 10 or
    // fewer (each detached again, so the sizes stay): what a recipient's size adds.
    let largest = recipients[0].clone();
    let small: Vec<String> = recipients
        .iter()
        .filter(|a| s.naive.targets[*a].len() <= 10)
        .take(1_000)
        .cloned()
        .collect();
    let mut k = 0u64;
    let mut attach_detach = |a: &str| {
        k += 1;
        let b = format!("{:024x}", 0xF00D_0000_0000 + k % 1_000);
        s.engine
            .attach(3, a, b.as_str(), &[("Donate", Value::Int(7))])
            .expect("attach");
        s.engine.detach(3, a, b.as_str()).expect("detach");
    };
    g.bench_function(BenchmarkId::new("attach_detach", "relcount_largest"), |b| {
        b.iter(|| attach_detach(&largest))
    });
    let mut j = 0usize;
    g.bench_function(BenchmarkId::new("attach_detach", "relcount_small"), |b| {
        b.iter(|| {
            j = (j + 1) % small.len();
            attach_detach(&small[j])
        })
    });
    g.bench_function(BenchmarkId::new("detach_reattach", "sqlite"), |b| {
        b.iter(|| {
            let r = next(base);
            s.sqlite.detach(&r.a, &r.b);
            s.sqlite.attach(&r)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = get_counter, writes, writes_hot
}
criterion_main!(benches);
