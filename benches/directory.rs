//! Profile directory bench: the cost of finding a profile by every matching mode (a
//! `get_counter` through each), and of a cascading delete as a function of the deleted
//! profile's own relations, in engines of two sizes; the cost of finding a profile by
//! id among millions (the id table, far larger than the cache) and of creating one (an
//! attach from a new initiator against one from an existing initiator).
//!
//! `cargo bench --bench directory`; `cargo bench --bench directory -- --test` runs each
//! once (what .ci/run does).

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use relcount::workload::Workload;
use relcount::{Channel, Engine, FieldValue, Match, ProfileData, Subscription, Value};

const PROFILES: usize = 50_000;

fn data(i: usize) -> ProfileData {
    ProfileData {
        email: Some(format!("user{i}@example.com")),
        phone: Some(format!("+7 900 {i:07}")),
        fields: vec![
            ("CRM_ID".into(), FieldValue::Int(i as i64)),
            (
                "Interests".into(),
                // 3 of 20 common tags, plus one unique tag.
                FieldValue::Tags(vec![
                    format!("tag-{}", i % 20),
                    format!("tag-{}", (i / 20) % 20),
                    format!("tag-{}", (i / 400) % 20),
                    format!("u{i}"),
                ]),
            ),
        ],
        subscriptions: vec![Subscription {
            resource_id: 24,
            channel: Channel::Email,
            address: format!("work{i}@example.com"),
        }],
    }
}

/// An engine with `PROFILES` imported recipients and `relations` Zipf relations.
fn engine(relations: usize) -> (Engine, Workload) {
    let w = Workload::new(PROFILES, 1_000_000, 42);
    let e = Engine::new();
    e.define(Workload::seed_schema(w.rel_id)).expect("schema");
    e.import_profiles(
        (0..PROFILES)
            .map(|i| (w.db_a, w.a_id(i), data(i)))
            .collect::<Vec<_>>()
            .iter()
            .map(|(db, id, d)| (*db, id.as_str(), d.clone())),
    )
    .expect("import");
    for r in w.relations(relations) {
        e.attach(w.rel_id, r.a.as_str(), r.b.as_str(), &r.weights())
            .expect("attach");
    }
    (e, w)
}

fn lookups(c: &mut Criterion) {
    let (e, w) = engine(200_000);
    let i = 777;
    let id = w.a_id(i);
    let (email, work, phone, crm, tags) = (
        format!("user{i}@example.com"),
        format!("work{i}@example.com"),
        format!("+79000000{i}"),
        i.to_string(),
        format!("tag-{}, u{i}", i % 20),
    );
    let modes: Vec<(&str, Match<'_>)> = vec![
        ("profile_id", Match::Id(&id)),
        (
            "email",
            Match::Email {
                email: &email,
                resource_id: None,
            },
        ),
        (
            "email_subscription_in_resource",
            Match::Email {
                email: &work,
                resource_id: Some(24),
            },
        ),
        ("email_profile", Match::EmailProfile(&email)),
        (
            "phone",
            Match::Phone {
                phone: &phone,
                resource_id: None,
            },
        ),
        (
            "custom_scalar",
            Match::Custom {
                field: "CRM_ID",
                value: &crm,
            },
        ),
        (
            "custom_two_tags",
            Match::Custom {
                field: "Interests",
                value: &tags,
            },
        ),
    ];
    let want = e.get_counter(w.rel_id, Match::Id(&id)).expect("id").total();
    let mut g = c.benchmark_group("get_counter_by");
    for (name, m) in modes {
        // Correctness inside the bench: every mode finds the same profile.
        assert_eq!(
            e.get_counter(w.rel_id, m).expect(name).total(),
            want,
            "{name}"
        );
        g.bench_function(BenchmarkId::new(name, "50k_profiles"), |b| {
            b.iter(|| black_box(e.get_counter(w.rel_id, black_box(m)).expect("found")))
        });
    }
    g.finish();
}

fn cascades(c: &mut Criterion) {
    let mut g = c.benchmark_group("delete_initiator");
    g.sample_size(10);
    for engine_relations in [100_000, 1_000_000] {
        let (e, w) = engine(engine_relations);
        for fan_out in [1_000, 10_000] {
            let mut k = 0u64;
            g.bench_function(
                BenchmarkId::new(
                    format!("{fan_out}_relations"),
                    format!("{engine_relations}_in_engine"),
                ),
                |b| {
                    b.iter_batched(
                        || {
                            k += 1;
                            let star = format!("star-{k}");
                            for t in 0..fan_out {
                                e.attach(
                                    w.rel_id,
                                    w.a_id(t % PROFILES).as_str(),
                                    star.as_str(),
                                    &[("Donate", Value::Int(1000))],
                                )
                                .expect("attach");
                            }
                            star
                        },
                        |star| {
                            e.delete_profile(w.db_b, star.as_str()).expect("delete");
                            assert!(!e.contains_profile(w.db_b, star.as_str()));
                        },
                        BatchSize::PerIteration,
                    )
                },
            );
        }
    }
    g.finish();
}

/// Id-only profiles in the big engine: enough that the id table and the profiles are
/// far larger than the cache.
fn big_profiles() -> usize {
    if std::env::args().any(|a| a == "--test" || a == "--quick") {
        20_000
    } else {
        4_000_000
    }
}

fn b_id(i: u64) -> String {
    format!(
        "{:024x}",
        0xB000_0000_0000_0000_u64 ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    )
}

/// A profile found by id among millions (`contains_profile`: the id validated, then
/// one directory lookup), present and absent; then an attach whose initiator exists
/// against one that creates it, into the same recipients.
fn profiles_by_id(c: &mut Criterion) {
    let n = big_profiles() as u64;
    let w = Workload::new(10_000, 1_000_000, 42);
    let e = Engine::new();
    e.define(Workload::seed_schema(w.rel_id)).expect("schema");
    let ids: Vec<String> = (0..n).map(b_id).collect();
    e.import_profiles(
        ids.iter()
            .map(|id| (w.db_b, id.as_str(), ProfileData::default())),
    )
    .expect("import");
    let recipients: Vec<String> = (0..10_000).map(|i| w.a_id(i)).collect();
    e.import_profiles(
        recipients
            .iter()
            .map(|id| (w.db_a, id.as_str(), ProfileData::default())),
    )
    .expect("import");
    let mut g = c.benchmark_group("profile_by_id");
    let mut i = 0u64;
    g.bench_function(BenchmarkId::new("present", "4M_profiles"), |b| {
        b.iter(|| {
            // In order: the bench's own strings stream from memory; the table
            // entries and profiles they name are scattered all the same.
            i = (i + 1) % n;
            assert!(e.contains_profile(w.db_b, ids[i as usize].as_str()));
        })
    });
    // Ids no profile has: the new initiators of the attach bench below.
    let fresh: Vec<String> = (0..n * 3 / 4).map(|k| b_id(n + k)).collect();
    let mut k = 0usize;
    g.bench_function(BenchmarkId::new("absent", "4M_profiles"), |b| {
        b.iter(|| {
            k = (k + 1) % fresh.len();
            assert!(!e.contains_profile(w.db_b, fresh[k].as_str()));
        })
    });
    g.finish();

    let weights = [("Donate", Value::Int(5)), ("Like", Value::Int(1))];
    let mut g = c.benchmark_group("attach_from");
    // Each iteration a new relation (until the lists run out, far past what
    // criterion asks): initiators taken in order, existing ones or fresh ones, into
    // recipients in the same order.
    let attach_from = |initiators: &[String], next: &mut usize| {
        let j = *next % initiators.len();
        *next += 1;
        let a = &recipients[j % recipients.len()];
        e.attach(w.rel_id, a.as_str(), initiators[j].as_str(), &weights)
            .expect("attach")
    };
    let mut next = 0;
    g.bench_function(BenchmarkId::new("existing_initiator", "4M_profiles"), |b| {
        b.iter(|| attach_from(&ids, &mut next))
    });
    let mut next = 0;
    g.bench_function(BenchmarkId::new("new_initiator", "4M_profiles"), |b| {
        b.iter(|| attach_from(&fresh, &mut next))
    });
    g.finish();
}

criterion_group!(benches, lookups, cascades, profiles_by_id);
criterion_main!(benches);
