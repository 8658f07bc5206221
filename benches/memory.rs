//! Bulk load, memory per relation and per profile, and churn on a hot target.
//!
//! - **bulk load**: 10M relations (Zipf fan-in), relations per second, attach by
//!   attach, then through `import_relations` (batches of 100,000) with its peak
//!   memory beside its final footprint, and SQLite's bulk insert (one transaction)
//!   of 1M of the same rows;
//! - **memory**: live heap bytes (a counting allocator) per profile (all profiles
//!   created first, id-only) and per relation (then every relation attached), beside
//!   SQLite's `page_count * page_size` for the same rows and the limit: the bytes of
//!   the relation records alone;
//! - **churn**: one target with 1M relations under random strengthen (+/-), detach and
//!   re-attach, top members included: mean and worst cost per operation, beside the
//!   mean attach into the same target; then `list` of its first and last page.
//!
//! `cargo bench --bench memory` (several minutes; about 4 GB);
//! `cargo bench --bench memory -- --quick` for a smoke run (what .ci/run does).
//! A custom harness: each figure is one pass over a large batch.

#![allow(unsafe_code)] // the counting allocator; the library itself forbids unsafe

#[path = "../examples/support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/peers.rs"]
mod peers;

use std::time::{Duration, Instant};

use counting_alloc::{live, peak, reset_peak};
use relcount::workload::{GenRelation, Rng, Workload};
use relcount::{Engine, Value};

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

fn mib(b: usize) -> f64 {
    b as f64 / f64::from(1 << 20)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let (n, sqlite_n, hot) = if quick {
        (50_000, 50_000, 20_000)
    } else {
        (10_000_000, 1_000_000, 1_000_000)
    };
    let w = Workload::new(n / 10, n as u64, 42);

    // Profiles first (id-only), then relations: the two costs apart.
    let engine = Engine::new();
    engine
        .define(Workload::seed_schema(w.rel_id))
        .expect("schema");
    let t = Instant::now();
    let mut ids: hashbrown::HashSet<(u32, String)> = hashbrown::HashSet::new();
    for r in w.relations(n) {
        ids.insert((w.db_a, r.a));
        ids.insert((w.db_b, r.b));
    }
    let id_list: Vec<(u32, String)> = ids.into_iter().collect();
    let before_profiles = live();
    engine
        .import_profiles(
            id_list
                .iter()
                .map(|(db, id)| (*db, id.as_str(), relcount::ProfileData::default())),
        )
        .expect("profiles");
    let profile_bytes = live() - before_profiles;
    let profiles = engine.profile_count();
    drop(id_list);
    println!(
        "profiles: {profiles} (with empty data) in {:.1} s, {:.1} MiB: {:.1} bytes per profile",
        t.elapsed().as_secs_f64(),
        mib(profile_bytes),
        profile_bytes as f64 / profiles as f64
    );

    let before = live();
    let t = Instant::now();
    let mut loaded = 0usize;
    // Generated in chunks, so the generator's strings never count as engine memory.
    let mut source = w.relations(n);
    let mut chunk: Vec<GenRelation> = Vec::with_capacity(100_000);
    let mut load_time = Duration::ZERO;
    loop {
        chunk.clear();
        chunk.extend(source.by_ref().take(100_000));
        if chunk.is_empty() {
            break;
        }
        let c0 = Instant::now();
        for r in &chunk {
            engine
                .attach(w.rel_id, r.a.as_str(), r.b.as_str(), &r.weights())
                .expect("attach");
        }
        load_time += c0.elapsed();
        loaded += chunk.len();
    }
    drop(chunk);
    let relation_bytes = live() - before;
    let relations = engine.relation_count();
    println!(
        "bulk load: {loaded} attaches -> {relations} relations in {:.1} s ({:.1} s wall with generation): {:.0} relations/s",
        load_time.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        loaded as f64 / load_time.as_secs_f64()
    );
    println!(
        "memory: {:.1} MiB for relations: {:.1} bytes per relation (records, recipient \
         tables, top indexes, reverse index, published counters); with profiles: {:.1} bytes per relation",
        mib(relation_bytes),
        relation_bytes as f64 / relations as f64,
        (relation_bytes + profile_bytes) as f64 / relations as f64
    );
    let record = std::mem::size_of::<(u32, i64, i64, bool)>();
    println!(
        "limit: the relation records alone ({{initiator u32, Donate i64, Like i64, Subscriber bool}}): {record} bytes per relation"
    );
    drop(engine);

    // The same rows through the bulk import, in batches of 100,000 (each generated
    // before it is timed): the rate, and the peak of live memory during the import
    // beside the engine's footprint once it is done.
    let engine = Engine::new();
    engine
        .define(Workload::seed_schema(w.rel_id))
        .expect("schema");
    let before = live();
    reset_peak();
    let mut source = w.relations(n);
    let mut import_time = Duration::ZERO;
    let mut imported = 0usize;
    loop {
        let chunk: Vec<GenRelation> = source.by_ref().take(100_000).collect();
        if chunk.is_empty() {
            break;
        }
        let t = Instant::now();
        imported += engine
            .import_relations(
                w.rel_id,
                chunk
                    .iter()
                    .map(|r| (r.a.as_str(), r.b.as_str(), r.weights())),
            )
            .expect("import");
        import_time += t.elapsed();
    }
    let import_peak = peak() - before;
    let import_bytes = live() - before;
    let import_rate = imported as f64 / import_time.as_secs_f64();
    println!(
        "bulk import: {imported} rows -> {} relations in {:.2} s: {import_rate:.0} rows/s ({:.1}x the attach load); {:.1} MiB after ({:.1} bytes per relation, profiles included), peak {:.1} MiB during: {:.2}x the footprint",
        engine.relation_count(),
        import_time.as_secs_f64(),
        import_rate / (loaded as f64 / load_time.as_secs_f64()),
        mib(import_bytes),
        import_bytes as f64 / engine.relation_count() as f64,
        mib(import_peak),
        import_peak as f64 / import_bytes as f64
    );
    drop(engine);

    // SQLite, the same rows, inserted in one transaction (its bulk insert).
    let sqlite = peers::Sqlite::new();
    let ws = Workload::new(sqlite_n / 10, sqlite_n as u64, 42);
    let sqlite_rows: Vec<GenRelation> = ws.relations(sqlite_n).collect();
    let t = Instant::now();
    sqlite.conn.execute_batch("BEGIN").expect("begin");
    for r in &sqlite_rows {
        sqlite.attach(r);
    }
    sqlite.conn.execute_batch("COMMIT").expect("commit");
    let sqlite_rate = sqlite_n as f64 / t.elapsed().as_secs_f64();
    drop(sqlite_rows);
    println!(
        "sqlite bulk insert ({sqlite_n} rows, one transaction): {sqlite_rate:.0} rows/s; bulk import / sqlite = {:.1}x",
        import_rate / sqlite_rate
    );
    let rows: i64 = sqlite
        .conn
        .query_row("SELECT COUNT(*) FROM rel", [], |r| r.get(0))
        .expect("count");
    println!(
        "sqlite: {rows} rows, page_count * page_size = {:.1} MiB: {:.1} bytes per relation (ids inline, no counters kept)",
        mib(sqlite.bytes() as usize),
        sqlite.bytes() as f64 / rows as f64
    );
    drop(sqlite);

    // Churn on one hot target.
    let engine = Engine::new();
    engine.define(Workload::seed_schema(3)).expect("schema");
    let a = "5c910f6bc484d023b1309bee";
    let b = |i: u64| format!("{:024x}", i + 1);
    let mut rng = Rng::new(1);
    let t = Instant::now();
    for i in 0..hot {
        let v = Value::Int(rng.below(1000) as i64);
        engine
            .attach(
                3,
                a,
                b(i).as_str(),
                &[("Donate", v), ("Like", Value::Int(1))],
            )
            .expect("attach");
    }
    let attach_mean = t.elapsed() / hot as u32;
    let ops = if quick { 20_000 } else { 300_000 };
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    let mut lat = Vec::with_capacity(ops);
    for _ in 0..ops {
        // Top members are the likeliest to move: a third of the ops aim at them.
        let top: Vec<String> = if rng.below(3) == 0 {
            engine
                .get_counter(3, a)
                .expect("hot")
                .prop("Donate")
                .and_then(|p| p.top())
                .map(|t| t.map(|i| i.profile_id.to_string()).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let who = match top.get(rng.below(10) as usize) {
            Some(id) => id.clone(),
            None => b(rng.below(hot)),
        };
        let kind = rng.below(10);
        let t = Instant::now();
        match kind {
            0..=5 => {
                let d = rng.below(600) as i64 - 300;
                engine
                    .strengthen(3, a, who.as_str(), &[("Donate", Value::Int(d))])
                    .expect("strengthen");
            }
            _ => {
                let _ = engine.detach(3, a, who.as_str());
                engine
                    .attach(
                        3,
                        a,
                        who.as_str(),
                        &[
                            ("Donate", Value::Int(rng.below(1000) as i64)),
                            ("Like", Value::Int(1)),
                        ],
                    )
                    .expect("reattach");
            }
        }
        let dt = t.elapsed();
        worst = worst.max(dt);
        total += dt;
        lat.push(dt);
    }
    lat.sort_unstable();
    println!(
        "churn on a target with {hot} relations: {ops} ops, mean {:?}, p99 {:?}, p99.9 {:?}, worst {:?}; \
         mean attach into it {:?}: churn mean / attach mean = {:.2}",
        total / ops as u32,
        lat[lat.len() * 99 / 100],
        lat[lat.len() * 999 / 1000],
        worst,
        attach_mean,
        (total / ops as u32).as_secs_f64() / attach_mean.as_secs_f64()
    );

    // Paging the hot target: the first and the last page of 100 rows.
    let size = engine.get_counter(3, a).expect("hot").total();
    let reps = if quick { 3 } else { 10 };
    for (name, skip) in [("first", 0), ("last", size.saturating_sub(100))] {
        let t = Instant::now();
        for _ in 0..reps {
            let page = engine.list(3, a, skip as usize, 100).expect("list");
            assert_eq!(page.total_count, size);
            assert_eq!(page.rows.len() as u64, size.min(100));
        }
        println!(
            "list of the {size}-relation target, {name} page of 100: {:?} each",
            t.elapsed() / reps
        );
    }
}
