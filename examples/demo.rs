//! Loads a realistic workload (1M relations, Zipf fan-in: the busiest recipients have
//! 100k+ initiators; the seed page's Donate/Like/Subscriber schema), prints a few
//! counters, and measures load throughput, get_counter throughput and memory per
//! relation.
//!
//! `cargo run --release --example demo [relations]`

#![allow(unsafe_code)] // the counting allocator; the library itself forbids unsafe

use std::time::Instant;

use relcount::workload::{Rng, Workload, Zipf};
use relcount::{Engine, Sum, format_xxh};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::live;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

const A_PROFILES: usize = 100_000;
const B_PROFILES: u64 = 1_000_000;

fn main() -> Result<(), relcount::Error> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let workload = Workload::new(A_PROFILES, B_PROFILES, 42);
    let engine = Engine::new();
    engine.define(Workload::seed_schema(workload.rel_id))?;

    // Generate first, so the load measures the engine, not string formatting.
    let rels: Vec<_> = workload.relations(n).collect();
    let before = live();
    let start = Instant::now();
    for (i, r) in rels.iter().enumerate() {
        engine.attach(workload.rel_id, &r.a, &r.b, &r.weights())?;
        if (i + 1) % (n / 10).max(1) == 0 {
            eprint!("\rloading {:>3}%", (i + 1) * 100 / n);
        }
    }
    let load = start.elapsed();
    eprintln!();
    let relations = engine.relation_count();
    let profiles = engine.profile_count();
    // Measured before the generated relations are freed: `before` counted them.
    let bytes = live().saturating_sub(before);
    drop(rels);
    println!(
        "loaded {n} attaches -> {relations} relations, {profiles} profiles in {:.2} s: {:.0} attaches/s",
        load.as_secs_f64(),
        n as f64 / load.as_secs_f64()
    );
    println!(
        "memory: {:.1} MiB live, {:.1} bytes per relation (profiles, counters and indexes included)",
        bytes as f64 / f64::from(1 << 20),
        bytes as f64 / relations as f64
    );

    for rank in [0, 1, 10, 1000] {
        let id = workload.a_id(rank);
        let c = engine.get_counter(workload.rel_id, &id)?;
        println!(
            "\nrecipient #{rank} {id} (xxh {}): {} relations",
            format_xxh(c.profile_xxh()),
            c.total()
        );
        for p in c.props() {
            let sum = match p.sum() {
                Some(Sum::Int(s)) => s.to_string(),
                Some(Sum::Float(s)) => s.to_string(),
                None => "null".into(),
            };
            let top: Option<Vec<String>> = p.top().map(|t| {
                t.take(3)
                    .map(|i| format!("{}={:?}", i.profile_id, i.value))
                    .collect()
            });
            println!(
                "  {:<10} total {:>7}  sum {:>8}  top {}",
                p.name(),
                p.total(),
                sum,
                top.map_or("null".into(), |t| format!("{t:?}"))
            );
        }
    }

    // Reads: recipients drawn with the same Zipf law as the writes (hot ones dominate).
    let zipf = Zipf::new(A_PROFILES, relcount::workload::FAN_IN_EXPONENT);
    let mut rng = Rng::new(7);
    let ids: Vec<String> = (0..100_000)
        .map(|_| workload.a_id(zipf.sample(&mut rng)))
        .collect();
    let reads = 2_000_000;
    let start = Instant::now();
    let mut checksum = 0u64;
    for i in 0..reads {
        if let Ok(c) = engine.get_counter(workload.rel_id, &ids[i % ids.len()]) {
            checksum = checksum.wrapping_add(c.total());
        }
    }
    let single = reads as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            let (engine, ids) = (&engine, &ids);
            s.spawn(move || {
                let mut sum = 0u64;
                for i in 0..reads / 2 {
                    if let Ok(c) = engine.get_counter(3, &ids[(i * 2 + t) % ids.len()]) {
                        sum = sum.wrapping_add(c.total());
                    }
                }
                sum
            });
        }
    });
    let double = reads as f64 / start.elapsed().as_secs_f64();
    println!(
        "\nget_counter: {single:.0}/s on 1 thread, {double:.0}/s on 2 threads (checksum {checksum})"
    );
    Ok(())
}
