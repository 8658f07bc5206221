//! Review of the id order (`relations/get` on recipients past 1024
//! relations): concurrent paging while writers churn a large recipient (slots freed
//! and taken again, bulk batches with repeated pairs, initiator deletes), compactions
//! and snapshots taken while a writer changes a large recipient, bulk batches with
//! repeated pairs against the oracle, colliding profile hashes, and a relation type
//! within one database (a recipient that also initiates, deleted and created again).
//! Every bound is a count of iterations, never a time.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{Answer, Op, apply_engine, apply_oracle, pair};
use relcount::workload::Rng;
use relcount::{Engine, PropSpec, RelationType, SyncPolicy, Value};

/// Initiator `i`'s id: 24 hex digits spread so that ids do not come in the order of
/// `i`, every seventh a text id.
fn b_id(i: u64) -> String {
    if i % 7 == 3 {
        format!("t{i}")
    } else {
        format!("{:024x}", (i * 0x9E37_79B1) % (1 << 40))
    }
}

fn schema() -> RelationType {
    RelationType::new(1, 1, 2).prop("v", PropSpec::int())
}

/// A page checked on its own: ids strictly ascending, as many rows as the moment's
/// total leaves after `skip`, and each row's value the one its initiator is always
/// written with (`value[id]`).
fn check_page(
    page: &relcount::Page,
    skip: usize,
    limit: usize,
    value: &HashMap<String, i64>,
) -> Result<(), String> {
    let ids: Vec<String> = page.rows.iter().map(|r| r.profile_b.to_string()).collect();
    let want_len = (page.total_count as usize).saturating_sub(skip).min(limit);
    if ids.len() != want_len {
        return Err(format!(
            "skip {skip} limit {limit}: {} rows of total {}",
            ids.len(),
            page.total_count
        ));
    }
    if let Some(w) = ids.windows(2).find(|w| w[0] >= w[1]) {
        return Err(format!("skip {skip} limit {limit}: {:?} not ascending", w));
    }
    for r in &page.rows {
        let id = r.profile_b.to_string();
        let want = value.get(&id).copied();
        let got = r.props.iter().find(|p| p.0 == "v").map(|p| p.1);
        if want.map(Value::Int) != got {
            return Err(format!("row {id}: value {got:?}, written {want:?}"));
        }
    }
    Ok(())
}

/// Two writers churn recipient "A" (3,000 relations at the start, between about
/// 1,500 and 4,000 after): attaches, detaches, initiator deletes (the initiator is
/// created again later, in another slot), bulk batches with repeated pairs, and
/// profiles made and deleted on another recipient so that freed slots are taken
/// again. A reader pages "A" meanwhile: every page ascending, of its total's length,
/// with the values written. At the end, the whole list is the writers' sets.
#[test]
fn pages_of_a_large_recipient_hold_while_writers_churn() {
    const POOL: u64 = 4000;
    const ITERS: u64 = 6000;
    for shards in [1, 4] {
        let engine = Engine::builder().shards(shards).build();
        engine.define(schema()).expect("schema");
        let value: HashMap<String, i64> = (0..POOL).map(|i| (b_id(i), i as i64)).collect();
        let rows = (0..3000u64).map(|i| ("A", b_id(i), [("v", Value::Int(i as i64))]));
        engine.import_relations(1, rows).expect("import");
        let stop = AtomicBool::new(false);
        let (sets, pages) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut rng = Rng::new(11);
                let mut pages = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let skip = rng.below(4200) as usize;
                    let limit = [1, 7, 100, 1000][rng.below(4) as usize];
                    let page = engine
                        .list(1, "A", skip, limit)
                        .map_err(|e| e.to_string())?;
                    check_page(&page, skip, limit, &value)?;
                    pages += 1;
                }
                Ok::<u64, String>(pages)
            });
            let writers: Vec<_> = (0..2u64)
                .map(|w| {
                    let engine = &engine;
                    s.spawn(move || {
                        let mut rng = Rng::new(100 + w);
                        // This writer's initiators: i = w mod 2.
                        let mut have: BTreeSet<u64> = (0..3000).filter(|i| i % 2 == w).collect();
                        let pick = |rng: &mut Rng| (rng.below(POOL / 2)) * 2 + w;
                        for n in 0..ITERS {
                            let i = pick(&mut rng);
                            let v = [("v", Value::Int(i as i64))];
                            match rng.below(10) {
                                0..=3 => {
                                    engine.attach(1, "A", b_id(i).as_str(), &v).expect("attach");
                                    have.insert(i);
                                }
                                4..=6 => {
                                    let done = engine.detach(1, "A", b_id(i).as_str()).is_ok();
                                    assert_eq!(done, have.remove(&i), "detach {i}");
                                }
                                7 => {
                                    let gone = engine.delete_profile(2, b_id(i).as_str()).is_ok();
                                    assert!(gone || !have.contains(&i), "delete {i}");
                                    have.remove(&i);
                                }
                                8 => {
                                    // A batch with repeated pairs (every pair three
                                    // times), large or small beside the target.
                                    let len = [5, 40, 600][rng.below(3) as usize];
                                    let picked: Vec<u64> =
                                        (0..len).map(|_| pick(&mut rng)).collect();
                                    let rows =
                                        picked.iter().cycle().take(3 * len).map(|&i| {
                                            ("A", b_id(i), [("v", Value::Int(i as i64))])
                                        });
                                    engine.import_relations(1, rows).expect("bulk");
                                    have.extend(picked);
                                }
                                _ => {
                                    // A profile made and deleted elsewhere: its slot
                                    // is freed for the next one made.
                                    let x = format!("x{w}-{n}");
                                    let v = [("v", Value::Int(0))];
                                    engine.attach(1, "Z", x.as_str(), &v).expect("attach Z");
                                    engine.delete_profile(2, x.as_str()).expect("delete x");
                                }
                            }
                        }
                        have
                    })
                })
                .collect();
            let sets: Vec<BTreeSet<u64>> = writers
                .into_iter()
                .map(|w| w.join().expect("writer"))
                .collect();
            stop.store(true, Ordering::Release);
            let pages = reader
                .join()
                .expect("reader")
                .unwrap_or_else(|e| panic!("{e}"));
            (sets, pages)
        });
        let mut want: Vec<String> = sets.iter().flatten().map(|&i| b_id(i)).collect();
        want.sort();
        let mut got = Vec::new();
        for skip in (0..=want.len()).step_by(1000) {
            let page = engine.list(1, "A", skip, 1000).expect("page");
            assert_eq!(page.total_count, want.len() as u64);
            check_page(&page, skip, 1000, &value).expect("quiet page");
            got.extend(page.rows.iter().map(|r| r.profile_b.to_string()));
        }
        assert_eq!(got, want, "shards {shards}");
        eprintln!(
            "shards {shards}: {pages} pages checked, {} relations",
            want.len()
        );
    }
}

/// Every page of recipient "big" (skips 0, 1000, ... and some small pages).
fn all_pages(e: &Engine) -> Vec<Answer> {
    let mut out = Vec::new();
    for skip in (0..5000).step_by(1000) {
        out.push(apply_engine(e, &Op::List(1, "big".into(), skip, 1000)));
    }
    for skip in (0..5000).step_by(313) {
        out.push(apply_engine(e, &Op::List(1, "big".into(), skip, 3)));
    }
    out
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relcount-adv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A writer changes recipient "big" (3,000 relations and more: attaches, detaches,
/// initiator deletes, batches with repeated pairs) while the main thread compacts
/// and saves snapshots: each saved snapshot loads to pages that hold on their own;
/// once the writer is done, the reopened directory answers every page the same.
#[test]
fn compactions_and_snapshots_beside_writes_to_a_large_recipient() {
    let dir = temp_dir("beside");
    let snaps = temp_dir("beside-snaps");
    std::fs::create_dir_all(&snaps).expect("snaps dir");
    let engine = Engine::builder().open(&dir, SyncPolicy::No).expect("open");
    engine.define(schema()).expect("schema");
    let value: HashMap<String, i64> = (0..5000).map(|i| (b_id(i), i as i64)).collect();
    let rows = (0..3000u64).map(|i| ("big", b_id(i), [("v", Value::Int(i as i64))]));
    engine.import_relations(1, rows).expect("import");
    let done = AtomicBool::new(false);
    let saved = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut rng = Rng::new(5);
            for n in 0..4000u64 {
                let i = rng.below(5000);
                let v = [("v", Value::Int(i as i64))];
                match rng.below(8) {
                    0..=2 => engine
                        .attach(1, "big", b_id(i).as_str(), &v)
                        .expect("attach"),
                    3..=5 => {
                        let _ = engine.detach(1, "big", b_id(i).as_str());
                    }
                    6 => {
                        let _ = engine.delete_profile(2, b_id(i).as_str());
                    }
                    _ => {
                        let picked: Vec<u64> = (0..300).map(|_| rng.below(5000)).collect();
                        let rows = picked
                            .iter()
                            .cycle()
                            .take(900)
                            .map(|&i| ("big", b_id(i), [("v", Value::Int(i as i64))]));
                        engine.import_relations(1, rows).expect("bulk");
                    }
                }
                if n % 1000 == 999 {
                    std::thread::yield_now();
                }
            }
            done.store(true, Ordering::Release);
        });
        let mut saved = Vec::new();
        let mut k = 0;
        // At least a few of each, then until the writer is done.
        while k < 4 || !done.load(Ordering::Acquire) {
            engine.compact().expect("compact");
            let path = snaps.join(format!("s{k}"));
            engine.save_snapshot(&path).expect("save");
            saved.push(path);
            k += 1;
        }
        writer.join().expect("writer");
        saved
    });
    for path in &saved {
        let loaded = Engine::load_snapshot(path).expect("load");
        let total = loaded.get_counter(1, "big").expect("big").total() as usize;
        for skip in (0..=total).step_by(700) {
            let page = loaded.list(1, "big", skip, 1000).expect("page");
            assert_eq!(page.total_count as usize, total);
            check_page(&page, skip, 1000, &value)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
    let total = engine.get_counter(1, "big").expect("big").total();
    assert!(total > 1024, "past the threshold: {total}");
    let before = all_pages(&engine);
    drop(engine);
    let engine = Engine::builder()
        .open(&dir, SyncPolicy::No)
        .expect("reopen");
    assert_eq!(all_pages(&engine), before, "the reopened engine");
    drop(engine);
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&snaps).ok();
}

/// Pages of recipients of relation types 1 (db 1 to 2) and 2 (within db 2, so a
/// recipient initiates too, in its own target and the other's), against the oracle.
fn compare(engine: &Engine, oracle: &crate::common::oracle::Oracle, step: &str) {
    let mut ops = Vec::new();
    for (rel, a) in [(1, "r0"), (1, "r1"), (2, "q0"), (2, "q1")] {
        for (skip, limit) in [
            (0, 1),
            (0, 1000),
            (1000, 1000),
            (2000, 1000),
            (511, 2),
            (1023, 5),
        ] {
            ops.push(Op::List(rel, a.into(), skip, limit));
        }
        ops.push(Op::Get(rel, a.into()));
    }
    for op in ops {
        let (got, want) = (apply_engine(engine, &op), oracle.answer(&op));
        assert_eq!(got, want, "{step}: {op:?}");
    }
}

/// A weak profile hash: every id in one of four values (all in one shard of any
/// count), so recipients share their published key.
fn weak(bytes: &[u8]) -> u64 {
    relcount::xxh64(bytes) % 4
}

/// Bulk batches with repeated pairs (same values and changed ones), small and large
/// beside the target, attaches, detaches and deletes of initiators and recipients,
/// on colliding hashes, with a relation type within db 2 whose recipients initiate
/// in their own and each other's targets: every page the oracle's, after each step.
#[test]
fn repeated_pairs_collisions_and_self_relations_match_the_oracle() {
    for hash in [relcount::xxh64 as fn(&[u8]) -> u64, weak] {
        let (engine, mut oracle) = pair(
            Engine::builder().shards(4).profile_hasher(hash).build(),
            hash,
        );
        let mut rng = Rng::new(3);
        let w = |name: &str, v: i64| vec![(name.to_string(), Value::Int(v))];
        let b = |i: u64| b_id(i % 2500);
        for step in 0..160u32 {
            let a1 = ["r0", "r1"][rng.below(2) as usize];
            let a2 = ["q0", "q1"][rng.below(2) as usize];
            let ops: Vec<Op> = match rng.below(9) {
                0 | 1 => {
                    // A batch of rel 1 with every pair twice or more.
                    let len = [3, 50, 400, 1500][rng.below(4) as usize];
                    let start = rng.below(2500);
                    let same = rng.below(2) == 0;
                    let mut rows = Vec::new();
                    for rep in 0..3 {
                        for i in start..start + len {
                            let v = if same { i as i64 } else { i as i64 + rep };
                            rows.push((a1.to_string(), b(i), w("Like", v)));
                        }
                    }
                    vec![Op::Bulk(1, rows)]
                }
                2 => {
                    // A batch of rel 2, the recipients among the initiators.
                    let len = [3, 700, 1400][rng.below(3) as usize];
                    let start = rng.below(2500);
                    let mut rows: Vec<crate::common::BulkRow> = (start..start + len)
                        .flat_map(|i| [(a2.to_string(), b(i), w("W", i as i64))])
                        .collect();
                    rows.push((a2.to_string(), "q0".into(), w("W", 1)));
                    rows.push((a2.to_string(), "q1".into(), w("W", 2)));
                    rows.push((a2.to_string(), "q0".into(), w("W", 3)));
                    vec![Op::Bulk(2, rows)]
                }
                3 => (0..rng.below(900))
                    .map(|_| Op::Detach(1, a1.into(), b(rng.below(2500)).into()))
                    .collect(),
                4 => (0..rng.below(900))
                    .map(|_| Op::Detach(2, a2.into(), b(rng.below(2500)).into()))
                    .collect(),
                5 => (0..40)
                    .map(|_| Op::Attach(1, a1.into(), b(rng.below(2500)).into(), w("Like", 1)))
                    .collect(),
                6 => (0..5)
                    .map(|_| Op::Delete(2, b(rng.below(2500)).into()))
                    .collect(),
                7 => vec![Op::Delete(2, a2.into())],
                _ => vec![
                    Op::Attach(2, a2.into(), "q0".into(), w("W", 9)),
                    Op::Attach(2, a2.into(), "q1".into(), w("W", 8)),
                    Op::Attach(2, "q0".into(), a2.into(), w("W", 7)),
                ],
            };
            for op in &ops {
                let (got, want) = (apply_engine(&engine, op), apply_oracle(&mut oracle, op));
                assert_eq!(got, want, "step {step}: {op:?}");
            }
            compare(&engine, &oracle, &format!("step {step}"));
        }
    }
}

/// The whole list of "A", page after page, against `want` (sorted ids), and pages of
/// 1 and 3 at a few skips.
fn assert_lists(engine: &Engine, want: &BTreeSet<String>, what: &str) {
    let want: Vec<&String> = want.iter().collect();
    let mut got = Vec::new();
    for skip in (0..=want.len()).step_by(1000) {
        let page = engine.list(1, "A", skip, 1000).expect("page");
        assert_eq!(page.total_count, want.len() as u64, "{what}");
        got.extend(page.rows.iter().map(|r| r.profile_b.to_string()));
    }
    assert_eq!(got.iter().collect::<Vec<_>>(), want, "{what}");
    for skip in [
        0,
        1,
        255,
        256,
        767,
        768,
        1023,
        1024,
        want.len().saturating_sub(1),
    ] {
        let page = engine.list(1, "A", skip, 3).expect("page");
        let ids: Vec<String> = page.rows.iter().map(|r| r.profile_b.to_string()).collect();
        let exp: Vec<String> = want
            .iter()
            .skip(skip)
            .take(3)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(ids, exp, "{what}: skip {skip}");
    }
}

/// Leaves of the real size (1024) split and merge: 3,000 relations built in one
/// batch (leaves of 768), then 2,500 attaches of ids that all sort after them (text
/// ids after hex ones: the last leaf splits again and again) and 1,500 that sort
/// before them (the first leaf), one at a time; then detaches of whole id ranges (the
/// leaves there drain and merge), in id order from the middle out and from the end.
#[test]
fn real_leaves_split_and_merge_at_the_edges() {
    let engine = Engine::builder().shards(2).build();
    engine.define(schema()).expect("schema");
    let hex = |i: u64| format!("{:024x}", (1 << 44) + i * 0x9E37_79B1 % (1 << 40));
    let mut want: BTreeSet<String> = BTreeSet::new();
    type Row = (String, String, [(&'static str, Value); 1]);
    let rows: Vec<Row> = (0..3000u64)
        .map(|i| ("A".to_string(), hex(i), [("v", Value::Int(1))]))
        .collect();
    want.extend(rows.iter().map(|r| r.1.clone()));
    engine.import_relations(1, rows).expect("import");
    assert_lists(&engine, &want, "built");
    let v = [("v", Value::Int(2))];
    for n in 0..2500u64 {
        let id = format!("z{n:05}");
        engine.attach(1, "A", id.as_str(), &v).expect("attach");
        want.insert(id);
        if n % 250 == 0 {
            assert_lists(&engine, &want, &format!("after z{n}"));
        }
    }
    for n in 0..1500u64 {
        let id = format!("{n:024x}");
        engine.attach(1, "A", id.as_str(), &v).expect("attach");
        want.insert(id);
        if n % 250 == 0 {
            assert_lists(&engine, &want, &format!("after low {n}"));
        }
    }
    assert_lists(&engine, &want, "grown");
    // Detach from the middle out, then from the end, in id order.
    let sorted: Vec<String> = want.iter().cloned().collect();
    let mid = sorted.len() / 2;
    let mut order: Vec<&String> = Vec::new();
    for k in 0..mid {
        order.push(&sorted[mid + k]);
        order.push(&sorted[mid - 1 - k]);
    }
    for (n, id) in order.iter().take(6000).enumerate() {
        engine.detach(1, "A", id.as_str()).expect("detach");
        want.remove(*id);
        if n % 200 == 0 {
            assert_lists(&engine, &want, &format!("detach {n}"));
        }
    }
    assert_lists(&engine, &want, "shrunk");
}

/// A writer imports 1,500 relations to "A" (past the threshold), deletes some of its
/// initiators, deletes "A" itself, and makes and deletes other profiles (so the freed
/// slots, "A"'s among them, are taken again by other profiles), round after round; a
/// reader pages "A" meanwhile: each page holds on its own, or "A" is not found.
#[test]
fn a_large_recipient_deleted_and_made_again_pages_or_is_not_found() {
    for shards in [1, 4] {
        let engine = Engine::builder().shards(shards).build();
        engine.define(schema()).expect("schema");
        let value: HashMap<String, i64> = (0..3000u64).map(|i| (b_id(i), i as i64)).collect();
        let stop = AtomicBool::new(false);
        let (pages, missing) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut rng = Rng::new(17);
                let (mut pages, mut missing) = (0u64, 0u64);
                while !stop.load(Ordering::Acquire) {
                    let skip = rng.below(1600) as usize;
                    let limit = [1, 50, 1000][rng.below(3) as usize];
                    match engine.list(1, "A", skip, limit) {
                        Ok(page) => {
                            check_page(&page, skip, limit, &value)?;
                            pages += 1;
                        }
                        Err(relcount::Error::ProfileNotFound { .. }) => missing += 1,
                        Err(e) => return Err(format!("list: {e}")),
                    }
                }
                Ok::<(u64, u64), String>((pages, missing))
            });
            let mut rng = Rng::new(23);
            for round in 0..60u64 {
                let start = rng.below(1500);
                let rows =
                    (start..start + 1500).map(|i| ("A", b_id(i), [("v", Value::Int(i as i64))]));
                engine.import_relations(1, rows).expect("import");
                for _ in 0..300 {
                    let _ = engine.detach(1, "A", b_id(start + rng.below(1500)).as_str());
                }
                for _ in 0..20 {
                    let _ = engine.delete_profile(2, b_id(start + rng.below(1500)).as_str());
                }
                for k in 0..5 {
                    let x = format!("x{round}-{k}");
                    let v = [("v", Value::Int(0))];
                    engine
                        .attach(1, x.as_str(), b_id(rng.below(3000)).as_str(), &v)
                        .expect("x");
                    engine.delete_profile(1, x.as_str()).expect("delete x");
                }
                engine.delete_profile(1, "A").expect("delete A");
            }
            stop.store(true, Ordering::Release);
            reader
                .join()
                .expect("reader")
                .unwrap_or_else(|e| panic!("{e}"))
        });
        eprintln!("shards {shards}: {pages} pages, {missing} not found");
    }
}
