//! Edges of the Rust API, each a named regression test:
//! counters by name agree with the scan over `props()` after a reordered redefine,
//! a log replay, a compaction, a snapshot loaded through the builder, and a JSON
//! define; a truncated snapshot is corrupted data, not an I/O failure; a borrowed id
//! in std's collections behaves as its string; the weights forms compile; a sync
//! policy prints as it parses.

use std::collections::{BTreeSet, HashSet};

use relcount::{
    Engine, Error, ProfileId, ProfileStr, PropSpec, RelationType, StorageKind, Sum, SyncPolicy,
    Value,
};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relcount-rust-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the call succeeds");
    dir
}

fn abc(order: &[&str]) -> RelationType {
    let mut def = RelationType::new(7, 1, 2);
    for name in order {
        def = match *name {
            "A" => def.prop("A", PropSpec::int().sum().top(5)),
            "B" => def.prop("B", PropSpec::float().sum().top(5)),
            "C" => def.prop("C", PropSpec::bool()),
            "D" => def.prop("D", PropSpec::int().sum()),
            _ => unreachable!(),
        };
    }
    def
}

fn fill(engine: &Engine) {
    engine
        .attach(
            7,
            "a",
            "b1",
            &[
                ("A", 1.into()),
                ("B", 2.5.into()),
                ("C", true.into()),
                ("D", 100.into()),
            ],
        )
        .expect("the call succeeds");
    engine
        .attach(7, "a", "b2", &[("A", 10.into()), ("D", 1000.into())])
        .expect("the call succeeds");
}

/// `prop(name)` (O(1), name map) must agree with the scan over `props()`.
fn check_by_name(engine: &Engine) {
    let counter = engine.get_counter(7, "a").expect("the call succeeds");
    for p in counter.props() {
        let q = counter.prop(p.name()).expect("the call succeeds");
        assert_eq!(q.name(), p.name());
        assert_eq!(q.total(), p.total(), "{}", p.name());
        assert_eq!(q.sum(), p.sum(), "{}", p.name());
        assert_eq!(counter.sum(p.name()), p.sum(), "{}", p.name());
        let top = |t: Option<Vec<(String, Value)>>| t;
        assert_eq!(
            top(counter
                .top(p.name())
                .map(|t| t.map(|i| (i.profile_id.to_string(), i.value)).collect())),
            top(p
                .top()
                .map(|t| t.map(|i| (i.profile_id.to_string(), i.value)).collect())),
        );
    }
    assert_eq!(counter.sum("A"), Some(Sum::Int(11)));
    assert_eq!(counter.sum("D"), Some(Sum::Int(1100)));
    assert_eq!(counter.prop("C").map(|p| p.total()), Some(1));
    assert_eq!(counter.prop("B").map(|p| p.total()), Some(1));
}

#[test]
fn prop_by_name_after_a_reordered_redefine() {
    let engine = Engine::new();
    engine
        .define(abc(&["A", "B", "C", "D"]))
        .expect("the call succeeds");
    // Same properties, another order: documented as a no-op keeping the first order.
    engine
        .define(abc(&["D", "C", "B", "A"]))
        .expect("the call succeeds");
    fill(&engine);
    check_by_name(&engine);
    let names: Vec<String> = engine
        .relation_type(7)
        .expect("the call succeeds")
        .props()
        .map(|(n, _)| n.to_owned())
        .collect();
    assert_eq!(names, ["A", "B", "C", "D"]);
}

#[test]
fn prop_by_name_after_snapshot_and_replay() {
    let dir = temp_dir("names");
    {
        let engine = Engine::builder()
            .open(&dir, SyncPolicy::Always)
            .expect("the call succeeds");
        engine
            .define(abc(&["D", "B", "A", "C"]))
            .expect("the call succeeds");
        engine
            .define(abc(&["A", "B", "C", "D"]))
            .expect("the call succeeds");
        fill(&engine);
        check_by_name(&engine);
    }
    // Log replay.
    {
        let engine = Engine::builder()
            .open(&dir, SyncPolicy::Always)
            .expect("the call succeeds");
        check_by_name(&engine);
        engine.compact().expect("the call succeeds");
    }
    // Snapshot (after compaction).
    let engine = Engine::builder()
        .open(&dir, SyncPolicy::Always)
        .expect("the call succeeds");
    check_by_name(&engine);
    let snap = dir.join("copy.snap");
    engine.save_snapshot(&snap).expect("the call succeeds");
    let loaded = Engine::builder()
        .shards(2)
        .load_snapshot(&snap)
        .expect("the call succeeds");
    check_by_name(&loaded);
    assert_eq!(loaded.shard_count(), 2, "the builder's shards apply");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "json")]
#[test]
fn prop_by_name_after_a_json_define() {
    use relcount::api::{Api, TokenScope};
    let engine = std::sync::Arc::new(Engine::new());
    let api = Api::new(std::sync::Arc::clone(&engine));
    api.add_token("tok", TokenScope::full());
    let bearer = Some("Bearer tok");
    let define = br#"{"rel_id": 7, "db_a": 1, "db_b": 2, "props": {"D": {"type": "int", "sum": true},
      "C": {"type": "bool"}, "B": {"type": "float", "sum": true, "top": 5}, "A": {"type": "int", "sum": true, "top": 5}}}"#;
    assert_eq!(
        api.handle("relations/define", bearer, define).code,
        relcount::api::Code::Ok
    );
    let define = br#"{"rel_id": 7, "db_a": 1, "db_b": 2, "props": {"A": {"type": "int", "sum": true, "top": 5},
      "B": {"type": "float", "sum": true, "top": 5}, "C": {"type": "bool"}, "D": {"type": "int", "sum": true}}}"#;
    assert_eq!(
        api.handle("relations/define", bearer, define).code,
        relcount::api::Code::Ok
    );
    fill(&engine);
    check_by_name(&engine);
}

/// A snapshot file cut short is corrupted data, not an operating-system failure.
#[test]
fn a_truncated_snapshot_file_is_corrupt_not_io() {
    let dir = temp_dir("trunc");
    let engine = Engine::new();
    engine
        .define(abc(&["A", "B", "C", "D"]))
        .expect("the call succeeds");
    fill(&engine);
    let path = dir.join("s.snap");
    engine.save_snapshot(&path).expect("the call succeeds");
    let bytes = std::fs::read(&path).expect("the call succeeds");
    let cut_path = dir.join("cut.snap");
    let mut wrong = Vec::new();
    for cut in 0..bytes.len() {
        std::fs::write(&cut_path, &bytes[..cut]).expect("the call succeeds");
        match Engine::load_snapshot(&cut_path) {
            Err(Error::Storage(e)) => {
                if e.kind() != StorageKind::Corrupt {
                    wrong.push((cut, e.kind(), e.to_string()));
                }
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        wrong.is_empty(),
        "{} of {} cuts: {:?}",
        wrong.len(),
        bytes.len(),
        &wrong[..wrong.len().min(3)]
    );
}

#[test]
fn profile_str_in_std_collections() {
    let ids = [
        "0123456789abcdef01234567",
        "alice",
        "0123456789ABCDEF01234567",
        "zz",
    ];
    let owned: Vec<ProfileId> = ids
        .iter()
        .map(|s| s.parse().expect("the call succeeds"))
        .collect();
    let set: HashSet<ProfileStr<'_>> = owned.iter().map(ProfileId::as_str).collect();
    let tree: BTreeSet<ProfileStr<'_>> = owned.iter().map(ProfileId::as_str).collect();
    for s in ids {
        assert!(set.contains(s), "{s}");
        assert!(tree.contains(s), "{s}");
    }
    assert!(!set.contains("0123456789abcdef01234568"));
    let order: Vec<&str> = tree.iter().map(|s| &**s).collect();
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    assert_eq!(order, sorted);
    // ProfileId's own order agrees with its text's.
    let mut by_id = owned.clone();
    by_id.sort();
    let by_id: Vec<String> = by_id.iter().map(|i| i.to_string()).collect();
    assert_eq!(by_id, sorted);
    // Uppercase hex is a different id from the lowercase one.
    assert_ne!(owned[0], owned[2]);
    assert_ne!(owned[2], "0123456789abcdef01234567");
    assert_eq!(owned[2], "0123456789ABCDEF01234567");
}

#[test]
fn weights_forms_compile() {
    let engine = Engine::new();
    engine
        .define(abc(&["A", "B", "C", "D"]))
        .expect("the call succeeds");
    engine.attach(7, "a", "b", &[]).expect("the call succeeds");
    engine
        .strengthen(
            7,
            "a",
            "b",
            &[("A", 2.into()), ("B", 2.into()), ("C", false.into())],
        )
        .expect("the call succeeds");
    engine
        .edit(
            7,
            "a",
            "b",
            &[
                ("B", 1.5f32.into()),
                ("D", 7u32.into()),
                ("A", i64::MIN.into()),
            ],
        )
        .expect("the call succeeds");
    let w: Vec<(String, Value)> = vec![("A".into(), 1.into())];
    engine
        .attach(
            7,
            "a",
            "c",
            &w.iter().map(|(n, v)| (n.as_str(), *v)).collect::<Vec<_>>(),
        )
        .expect("the call succeeds");
}

#[test]
fn sync_policy_round_trips() {
    for p in [SyncPolicy::Always, SyncPolicy::EverySec, SyncPolicy::No] {
        assert_eq!(
            p.to_string()
                .parse::<SyncPolicy>()
                .expect("the call succeeds"),
            p
        );
    }
    match "x".parse::<SyncPolicy>() {
        Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "sync policy"),
        other => panic!("{other:?}"),
    }
}
