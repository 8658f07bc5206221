//! What a write costs, counted rather than timed: allocations on this thread (the
//! counting allocator of `main.rs`) over a hot-recipient load, where the largest
//! recipient keeps an id order and a top index. Store v3's goal is no allocation for
//! a strengthen or a re-attach: the counters are written in place to the block
//! readers read (`accum::block`).

use relcount::Engine;
use relcount::Value;
use relcount::workload::{GenRelation, Workload};

use crate::counting_alloc::thread_allocs;

/// An engine with 30,000 relations of a Zipf s = 1 law over 2,000 recipients (the
/// largest holds about 3,600: an id order and a top index), and the rows loaded.
fn hot() -> (Engine, Vec<GenRelation>) {
    let w = Workload::with_exponent(2_000, 100_000, 7, 1.0);
    let engine = Engine::new();
    engine
        .define(Workload::seed_schema(w.rel_id))
        .expect("schema");
    let rows: Vec<GenRelation> = w.relations(30_000).collect();
    for r in &rows {
        engine
            .attach(w.rel_id, r.a.as_str(), r.b.as_str(), &r.weights())
            .expect("attach");
    }
    (engine, rows)
}

/// Allocations per call of `op` over `rows`.
fn per_write(rows: &[&GenRelation], mut op: impl FnMut(&GenRelation)) -> f64 {
    let before = thread_allocs();
    rows.iter().for_each(|r| op(r));
    (thread_allocs() - before) as f64 / rows.len() as f64
}

/// A strengthen, an edit and a re-attach of existing relations (values changed, no
/// page or snapshot holding them) allocate nothing in a recipient without a top index
/// (at most 64 valued relations): the counters are written to the published block in
/// place, the top list edited in place, a refill scanned on the stack (once every
/// relation has a value: a list that grows past its longest takes room). In recipients
/// with a top index (a B-tree of every valued relation), a value that moves removes
/// and inserts a key, and the B-tree now and then splits or merges a node: a few
/// allocations in a hundred writes.
#[test]
fn writes_to_existing_relations_allocate_nothing() {
    let (engine, rows) = hot();
    let mut sizes: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for r in &rows {
        *sizes.entry(r.a.as_str()).or_default() += 1;
    }
    let (small, large): (Vec<&GenRelation>, Vec<&GenRelation>) = rows[..10_000]
        .iter()
        .partition(|r| sizes[r.a.as_str()] <= 64);
    assert!(small.len() > 1_000 && large.len() > 1_000);
    // Once first: a strengthen that gives a relation its first Donate lengthens its
    // recipient's top list, which may grow its room (and its block's) once.
    for r in &rows[..10_000] {
        engine
            .strengthen(3, r.a.as_str(), r.b.as_str(), &[("Donate", Value::Int(0))])
            .expect("strengthen");
    }
    let counts = |rows: &[&GenRelation]| -> [f64; 3] {
        let strengthen = per_write(rows, |r| {
            engine
                .strengthen(3, r.a.as_str(), r.b.as_str(), &[("Donate", Value::Int(1))])
                .expect("strengthen");
        });
        let edit = per_write(rows, |r| {
            engine
                .edit(
                    3,
                    r.a.as_str(),
                    r.b.as_str(),
                    &[("Subscriber", Value::Bool(!r.subscriber))],
                )
                .expect("edit");
        });
        let reattach = per_write(rows, |r| {
            let mut w = r.weights();
            w[1].1 = Value::Int(r.like + 1);
            engine
                .attach(3, r.a.as_str(), r.b.as_str(), &w)
                .expect("attach");
        });
        [strengthen, edit, reattach]
    };
    let small = counts(&small);
    let large = counts(&large);
    eprintln!(
        "allocations a write (strengthen, edit, re-attach): small recipients {small:.2?}, \
         with a top index {large:.2?}"
    );
    assert_eq!(small, [0.0; 3], "small recipients");
    for (op, n) in ["strengthen", "edit", "re-attach"].iter().zip(large) {
        assert!(
            n <= 0.2,
            "{op}: {n:.2} allocations a write with a top index"
        );
    }
}

/// Each recipient's relations in `rows`.
fn sizes(rows: &[GenRelation]) -> std::collections::HashMap<&str, usize> {
    let mut sizes = std::collections::HashMap::new();
    for r in rows {
        *sizes.entry(r.a.as_str()).or_default() += 1;
    }
    sizes
}

/// Up to 2,000 recipients of 2 to 10 relations (at least 500).
fn small_recipients<'a>(sizes: &std::collections::HashMap<&'a str, usize>) -> Vec<&'a str> {
    let small: Vec<&str> = sizes
        .iter()
        .filter(|(_, n)| (2..=10).contains(*n))
        .map(|(a, _)| *a)
        .take(2_000)
        .collect();
    assert!(small.len() >= 500, "{} small recipients", small.len());
    small
}

/// `n` new 24-hex initiator ids from `base`, created id-only in database 2 when
/// `create`.
fn initiators(engine: &Engine, base: usize, n: usize, create: bool) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{:024x}", base + i)).collect();
    if create {
        engine
            .import_profiles(
                ids.iter()
                    .map(|id| (2, id.as_str(), relcount::ProfileData::default())),
            )
            .expect("profiles");
    }
    ids
}

/// An attach of a new relation (7 and 1) into the seed schema.
fn attach(engine: &Engine, a: &str, b: &str) {
    engine
        .attach(
            3,
            a,
            b,
            &[("Donate", Value::Int(7)), ("Like", Value::Int(1))],
        )
        .expect("attach");
}

/// An attach of a new relation into the largest recipient (an id order of thousands
/// and a top index) allocates no more than one into the smallest ones: its inserts
/// compare keys held in place and grow their leaves by an eighth at a time, so the
/// recipient's size adds no allocation per write.
#[test]
fn an_attach_into_a_large_recipient_allocates_as_one_into_a_small_one() {
    let (engine, rows) = hot();
    let sizes = sizes(&rows);
    let largest = sizes
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(a, _)| *a)
        .expect("a");
    let small = small_recipients(&sizes);
    assert!(
        sizes[largest] > 2_000,
        "the largest holds {}",
        sizes[largest]
    );
    // New initiators, created beforehand, so that only the relation is counted.
    let fresh = initiators(&engine, 0xF00D_0000, small.len(), true);
    let attach = |a: &str, b: &str| attach(&engine, a, b);
    let before = thread_allocs();
    for b in &fresh {
        attach(largest, b);
    }
    let large = (thread_allocs() - before) as f64 / fresh.len() as f64;
    let before = thread_allocs();
    for (a, b) in small.iter().zip(&fresh) {
        attach(a, b);
    }
    let small = (thread_allocs() - before) as f64 / fresh.len() as f64;
    eprintln!("allocations an attach: into the largest {large:.2}, into small ones {small:.2}");
    assert!(
        large <= small + 0.5,
        "largest {large:.2} against small {small:.2}"
    );
}

/// An attach whose initiator is new creates it: the profile is its one allocation
/// more than an attach from an initiator that exists (store v3 step 2: creating a
/// profile allocates nothing but itself, and the tables' amortised growth).
#[test]
fn an_attach_creating_its_initiator_allocates_the_profile_alone() {
    let (engine, rows) = hot();
    let sizes = sizes(&rows);
    let small = small_recipients(&sizes);
    let existing = initiators(&engine, 0xF00D_0000, small.len(), true);
    let new = initiators(&engine, 0xBEEF_0000, small.len(), false);
    let count = |initiators: &[String]| {
        let before = thread_allocs();
        for (a, b) in small.iter().zip(initiators) {
            attach(&engine, a, b);
        }
        (thread_allocs() - before) as f64 / small.len() as f64
    };
    let from_existing = count(&existing);
    // The other half of each recipient's new relations: the same recipients, so
    // their growth is alike.
    let from_new = count(&new);
    eprintln!(
        "allocations an attach: from an existing initiator {from_existing:.2}, \
         creating it {from_new:.2}"
    );
    assert!(
        from_new <= from_existing + 1.25,
        "creating the initiator: {from_new:.2} against {from_existing:.2}"
    );
}
