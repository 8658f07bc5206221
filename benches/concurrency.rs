//! Concurrency bench: throughput and get_counter latency for 1
//! and 2 threads, read-heavy (95/5) and write-heavy (50/50) mixes over a Zipf workload,
//! relcount beside a `DashMap<(rel, profile), counters>` store written the obvious way.
//!
//! `cargo bench --bench concurrency` (about a minute); `-- --quick` for a smoke run.
//! A custom harness, not criterion: it needs per-operation latency percentiles under
//! concurrent load, which criterion does not measure.

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use relcount::workload::{GenRelation, Rng, Workload, Zipf};
use relcount::{Engine, Sum, Value};

/// The peer: per target a map of relations plus running counters and an ordered set
/// for the top list, behind DashMap's sharded RwLocks.
#[derive(Default)]
struct PeerTarget {
    rels: HashMap<String, (i64, i64, bool)>,
    like_sum: i128,
    sub_total: u64,
    donate: BTreeSet<(std::cmp::Reverse<i64>, String)>,
}

/// What a peer read returns: the same content as a relcount counter.
struct PeerCounter {
    total: u64,
    like_sum: i128,
    sub_total: u64,
    top: Vec<(String, i64)>,
}

struct Peer(DashMap<String, PeerTarget>);

impl Peer {
    fn attach(&self, r: &GenRelation) {
        let mut t = self.0.entry(r.a.clone()).or_default();
        let t = &mut *t;
        if let Some((d, l, s)) = t.rels.insert(r.b.clone(), (r.donate, r.like, r.subscriber)) {
            t.like_sum -= i128::from(l);
            t.sub_total -= u64::from(s);
            t.donate.remove(&(std::cmp::Reverse(d), r.b.clone()));
        }
        t.like_sum += i128::from(r.like);
        t.sub_total += u64::from(r.subscriber);
        t.donate.insert((std::cmp::Reverse(r.donate), r.b.clone()));
    }

    fn get(&self, a: &str) -> Option<PeerCounter> {
        let t = self.0.get(a)?;
        Some(PeerCounter {
            total: t.rels.len() as u64,
            like_sum: t.like_sum,
            sub_total: t.sub_total,
            top: t
                .donate
                .iter()
                .take(10)
                .map(|(v, b)| (b.clone(), v.0))
                .collect(),
        })
    }
}

trait Store: Sync {
    fn write(&self, r: &GenRelation);
    /// Reads one counter; returns its total (checked against the other store).
    fn read(&self, a: &str) -> u64;
}

struct Relcount(Engine);

impl Store for Relcount {
    fn write(&self, r: &GenRelation) {
        self.0.attach(3, &r.a, &r.b, &r.weights()).expect("attach");
    }

    fn read(&self, a: &str) -> u64 {
        let c = self.0.get_counter(3, a).expect("known profile");
        let like = c.prop("Like").and_then(|p| p.sum());
        let top = c.prop("Donate").and_then(|p| p.top()).map(|t| t.count());
        black_box((like, top));
        c.total()
    }
}

impl Store for Peer {
    fn write(&self, r: &GenRelation) {
        self.attach(r);
    }

    fn read(&self, a: &str) -> u64 {
        let c = self.get(a).expect("known profile");
        black_box((c.like_sum, c.sub_total, c.top.len()));
        c.total
    }
}

struct Run {
    ops_per_s: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

/// `threads` threads for `dur`, each op a read with probability `read_pct`%, else a
/// write (an attach drawn from the workload: new relations and re-attaches).
fn run(
    store: &dyn Store,
    reads: &[String],
    writes: &[GenRelation],
    threads: u64,
    read_pct: u64,
    dur: Duration,
) -> Run {
    let stop = AtomicBool::new(false);
    let (ops, mut lat) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let mut rng = Rng::new(1000 + t);
                    let mut ops = 0u64;
                    let mut lat = Vec::with_capacity(1 << 20);
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            if rng.below(100) < read_pct {
                                let a = &reads[rng.below(reads.len() as u64) as usize];
                                let t0 = Instant::now();
                                black_box(store.read(a));
                                lat.push(t0.elapsed());
                            } else {
                                store.write(&writes[rng.below(writes.len() as u64) as usize]);
                            }
                            ops += 1;
                        }
                    }
                    (ops, lat)
                })
            })
            .collect();
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .fold((0, Vec::new()), |(o, mut l), (o2, l2)| {
                l.extend(l2);
                (o + o2, l)
            })
    });
    lat.sort_unstable();
    Run {
        ops_per_s: ops as f64 / dur.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        p999: percentile(&lat, 0.999),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let (a_count, n, dur) = if quick {
        (2_000, 20_000, Duration::from_millis(150))
    } else {
        (20_000, 500_000, Duration::from_secs(2))
    };
    let w = Workload::new(a_count, n as u64, 42);
    let load: Vec<GenRelation> = w.relations(n).collect();
    // Writes: the workload's next relations (new pairs and repeats).
    let writes: Vec<GenRelation> = Workload::new(a_count, n as u64, 43)
        .relations(n / 4)
        .collect();

    let engine = Engine::new();
    engine
        .define(relcount::workload::Workload::seed_schema(3))
        .expect("schema");
    let relcount = Relcount(engine);
    let peer = Peer(DashMap::new());
    for r in load.iter().chain(&writes) {
        relcount.write(r);
        peer.write(r);
    }
    // Reads: recipients drawn with the same Zipf law, among those that exist.
    let zipf = Zipf::new(a_count, relcount::workload::FAN_IN_EXPONENT);
    let mut rng = Rng::new(9);
    let reads: Vec<String> = (0..100_000)
        .map(|_| w.a_id(zipf.sample(&mut rng)))
        .filter(|a| relcount.0.contains_profile(1, a))
        .collect();
    // Correctness inside the bench: both stores answer the same counters.
    for a in reads.iter().take(2_000) {
        let (c, p) = (
            relcount.0.get_counter(3, a).expect("a"),
            peer.get(a).expect("a"),
        );
        assert_eq!(c.total(), p.total);
        assert_eq!(
            c.prop("Like").and_then(|x| x.sum()),
            Some(Sum::Int(p.like_sum))
        );
        assert_eq!(c.prop("Subscriber").map(|x| x.total()), Some(p.sub_total));
        let top: Vec<(String, i64)> = c
            .prop("Donate")
            .and_then(|x| x.top())
            .expect("top")
            .map(|t| match t.value {
                Value::Int(v) => (t.profile_id.to_string(), v),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(top, p.top);
    }
    println!(
        "workload: {n} relations over {a_count} Zipf recipients, reads Zipf-drawn; {dur:?} per cell"
    );
    println!(
        "{:<10} {:>7} {:>5} {:>14} {:>10} {:>10} {:>10}",
        "store", "threads", "read%", "ops/s", "p50", "p99", "p99.9"
    );
    for (name, store) in [("relcount", &relcount as &dyn Store), ("dashmap", &peer)] {
        for read_pct in [100, 95, 50] {
            for threads in [1, 2] {
                let r = run(store, &reads, &writes, threads, read_pct, dur);
                println!(
                    "{:<10} {:>7} {:>5} {:>14.0} {:>10?} {:>10?} {:>10?}",
                    name, threads, read_pct, r.ops_per_s, r.p50, r.p99, r.p999
                );
            }
        }
    }
}
