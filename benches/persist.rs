//! Durability bench: snapshot and load speed (MB/s, relations/s), the pause a
//! compaction imposes on a writer beside it, and the write log's overhead per sync
//! policy (attach throughput beside the same engine without a log).
//!
//! `cargo bench --bench persist`; `cargo bench --bench persist -- --quick` for a smoke
//! run (what .ci/run does). Custom harness: each figure is one timed pass over a large
//! batch, which criterion's repeated sampling would make needlessly slow.

use std::path::PathBuf;
use std::time::Instant;

use relcount::workload::{GenRelation, Workload};
use relcount::{Engine, SyncPolicy};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relcount-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn attach_all(e: &Engine, w: &Workload, rels: &[GenRelation]) {
    for r in rels {
        e.attach(w.rel_id, r.a.as_str(), r.b.as_str(), &r.weights())
            .expect("attach");
    }
}

/// Loads `count` relations of `w` in bulk into an engine on a data directory, then
/// times every write of one writer while `compact()` runs.
fn compaction_beside_a_writer(w: &Workload, sample: &[GenRelation], count: usize) {
    let d = dir("compact");
    let engine = Engine::builder().open(&d, SyncPolicy::No).expect("open");
    engine
        .define(Workload::seed_schema(w.rel_id))
        .expect("schema");
    let mut relations = w.relations(count);
    loop {
        let batch: Vec<GenRelation> = relations.by_ref().take(100_000).collect();
        if batch.is_empty() {
            break;
        }
        let rows: Vec<_> = batch
            .iter()
            .map(|r| (r.a.as_str(), r.b.as_str(), r.weights()))
            .collect();
        engine.import_relations(w.rel_id, rows).expect("import");
    }
    // Start from a compacted engine, as a long-running one is, once the disk has
    // written back the first compaction (deleting a gigabyte of import log).
    engine.compact().expect("first compaction");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let done = std::sync::atomic::AtomicBool::new(false);
    let origin = Instant::now();
    let mut long = Vec::new();
    let (compact, mut waits) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut waits = Vec::new();
            let mut long = Vec::new();
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let r = &sample[i % sample.len()];
                let t = Instant::now();
                engine
                    .strengthen(
                        w.rel_id,
                        r.a.as_str(),
                        r.b.as_str(),
                        &[("Like", relcount::Value::Int(1))],
                    )
                    .expect("strengthen");
                let wait = t.elapsed().as_secs_f64();
                if wait > 0.002 {
                    long.push((t.duration_since(origin).as_secs_f64(), wait));
                }
                waits.push(wait);
                i += 1;
            }
            (waits, long)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t = Instant::now();
        engine.compact().expect("compact");
        let compact = t.elapsed().as_secs_f64();
        done.store(true, std::sync::atomic::Ordering::Release);
        let (waits, mine) = writer.join().expect("writer");
        long = mine;
        (compact, waits)
    });
    waits.sort_by(f64::total_cmp);
    let pct = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize] * 1e6;
    println!(
        "compaction of {} relations ({} profiles) beside a writer: {:.2} s; the writer's {} writes meanwhile: p50 {:.1} us, p99 {:.1} us, p99.99 {:.0} us, worst {:.0} us",
        engine.relation_count(),
        engine.profile_count(),
        compact,
        waits.len(),
        pct(0.5),
        pct(0.99),
        pct(0.9999),
        pct(1.0)
    );
    // Waits over 2 ms, by when they began (the compaction began at 0.05 s).
    for (at, wait) in long.iter().take(20) {
        println!("  a {:.1} ms wait at {at:.3} s", wait * 1e3);
    }
    drop(engine);
    std::fs::remove_dir_all(&d).ok();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let (n, log_n, always_n) = if quick {
        (20_000, 20_000, 200)
    } else {
        (1_000_000, 300_000, 3_000)
    };
    let w = Workload::new(100_000, 1_000_000, 42);
    let rels: Vec<GenRelation> = w.relations(n).collect();

    // Snapshot and load.
    let engine = Engine::new();
    engine
        .define(Workload::seed_schema(w.rel_id))
        .expect("schema");
    attach_all(&engine, &w, &rels);
    let d = dir("snap");
    std::fs::create_dir_all(&d).expect("dir");
    let path = d.join("snapshot.bin");
    let t = Instant::now();
    let stats = engine.save_snapshot(&path).expect("save");
    let save = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let loaded = Engine::load_snapshot(&path).expect("load");
    let load = t.elapsed().as_secs_f64();
    assert_eq!(loaded.relation_count(), engine.relation_count());
    let mb = stats.bytes as f64 / 1e6;
    println!(
        "snapshot: {} relations, {} profiles, {:.1} MB ({:.1} bytes per relation)",
        stats.relations,
        stats.profiles,
        mb,
        stats.bytes as f64 / stats.relations as f64
    );
    println!(
        "  save {:.2} s: {:.0} MB/s, {:.0} relations/s",
        save,
        mb / save,
        stats.relations as f64 / save
    );
    println!(
        "  load {:.2} s: {:.0} MB/s, {:.0} relations/s (each target placed from its columns)",
        load,
        mb / load,
        stats.relations as f64 / load
    );
    drop((engine, loaded));
    std::fs::remove_dir_all(&d).ok();

    // A compaction beside a writer: the writer waits only while the point in time is
    // taken (every shard locked for a moment) or while a shard it locks is captured
    // (its targets' references), never while profiles are collected or encoded.
    // `RELCOUNT_BENCH_COMPACT_N` sets the engine's size (default: the snapshot's).
    let compact_n = std::env::var("RELCOUNT_BENCH_COMPACT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    compaction_beside_a_writer(&w, &rels, compact_n);

    // Log replay: a log of `log_n` writes (attaches, a strengthen every third), then
    // a restart that replays it (no snapshot): writes per second.
    let d = dir("replay");
    let e = Engine::builder().open(&d, SyncPolicy::No).expect("open");
    e.define(Workload::seed_schema(w.rel_id)).expect("schema");
    let mut writes = 1u64;
    for (i, r) in rels[..log_n.min(rels.len())].iter().enumerate() {
        if i % 3 == 2 {
            e.strengthen(
                w.rel_id,
                r.a.as_str(),
                r.b.as_str(),
                &[("Like", relcount::Value::Int(1))],
            )
            .expect("strengthen");
        } else {
            e.attach(w.rel_id, r.a.as_str(), r.b.as_str(), &r.weights())
                .expect("attach");
        }
        writes += 1;
    }
    let relations = e.relation_count();
    let log_mb = e.log_bytes().expect("log bytes") as f64 / 1e6;
    drop(e);
    let t = Instant::now();
    let e = Engine::builder().open(&d, SyncPolicy::No).expect("reopen");
    let replay = t.elapsed().as_secs_f64();
    assert_eq!(e.relation_count(), relations);
    println!(
        "log replay: {writes} writes ({log_mb:.1} MB of log) in {replay:.2} s: {:.0} writes/s",
        writes as f64 / replay
    );
    drop(e);
    std::fs::remove_dir_all(&d).ok();

    // The log's overhead, per sync policy.
    println!("write log overhead (attach throughput, same workload):");
    let mut base = 0.0;
    for (name, policy, count) in [
        ("no log", None, log_n),
        ("log, fsync no", Some(SyncPolicy::No), log_n),
        ("log, fsync everysec", Some(SyncPolicy::EverySec), log_n),
        ("log, fsync always", Some(SyncPolicy::Always), always_n),
    ] {
        let d = dir(name.replace([' ', ','], "-").as_str());
        let e = match policy {
            Some(p) => Engine::builder().open(&d, p).expect("open"),
            None => Engine::new(),
        };
        e.define(Workload::seed_schema(w.rel_id)).expect("schema");
        let t = Instant::now();
        attach_all(&e, &w, &rels[..count.min(rels.len())]);
        let per_s = count.min(rels.len()) as f64 / t.elapsed().as_secs_f64();
        if policy.is_none() {
            base = per_s;
        }
        println!(
            "  {name:<22} {per_s:>10.0} attaches/s  {:>6.1} us each  ({:.2}x the no-log rate)",
            1e6 / per_s,
            per_s / base
        );
        drop(e);
        std::fs::remove_dir_all(&d).ok();
    }

    // Group commit: under `always`, writers waiting on one fsync share the next. Two
    // workloads: each writer its own recipients (writes never wait on each other's
    // locks), and the Zipf workload (a write to a busy recipient holds its lock until
    // its fsync ends, so the next write to it waits for that fsync: writes to one
    // recipient commit one at a time, as updates of one row do in PostgreSQL).
    println!("fsync always, attach throughput by writer threads (group commit):");
    for zipf in [false, true] {
        let mut one = 0.0;
        for threads in [1usize, 8] {
            let d = dir(&format!("group-{threads}-{zipf}"));
            let e = Engine::builder()
                .open(&d, SyncPolicy::Always)
                .expect("open");
            e.define(Workload::seed_schema(w.rel_id)).expect("schema");
            let count = (always_n * threads).min(rels.len());
            let t = Instant::now();
            std::thread::scope(|s| {
                for (k, part) in rels[..count].chunks(count.div_ceil(threads)).enumerate() {
                    let (e, w) = (&e, &w);
                    s.spawn(move || {
                        if zipf {
                            return attach_all(e, w, part);
                        }
                        for (i, r) in part.iter().enumerate() {
                            let a = format!("writer{k}-{i}");
                            e.attach(w.rel_id, a.as_str(), r.b.as_str(), &r.weights())
                                .expect("attach");
                        }
                    });
                }
            });
            let per_s = count as f64 / t.elapsed().as_secs_f64();
            if threads == 1 {
                one = per_s;
            }
            println!(
                "  {}, {threads} writer(s): {per_s:>8.0} attaches/s ({:.2}x one writer)",
                if zipf {
                    "Zipf workload"
                } else {
                    "own recipients"
                },
                per_s / one
            );
            drop(e);
            std::fs::remove_dir_all(&d).ok();
        }
    }
}
