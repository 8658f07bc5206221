//! relcount as a new host uses it, written from the README alone: define, write with
//! plain numbers and bools, read a counter's top list and sums by name, page a list,
//! name profiles by email (borrowed and owned), load a snapshot through the builder,
//! and handle every error variant by matching on it. A proptest drives random plain
//! writes against a plain-map oracle through the same calls. Built and run with and
//! without default features (`.ci/run`); the JSON part needs `json`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use relcount::{
    Engine, Error, FieldValue, Match, OwnedMatch, ProfileData, PropSpec, RelationType, StorageKind,
    Sum, SyncPolicy, Value,
};

/// What a host does with each error: the variants it can act on, one answer each.
fn reaction(e: &Error) -> &'static str {
    match e {
        Error::UnknownRelation { .. } => "define the relation type first",
        Error::SchemaConflict { .. } => "the relation type exists with another schema",
        Error::InvalidSchema { .. } => "fix the definition",
        Error::InvalidProfileId { .. } => "fix the id",
        Error::ProfileNotFound { .. } => "no such profile",
        Error::NoMatch { .. } => "no profile matches",
        Error::Ambiguous { .. } => "several profiles match",
        Error::LookupTooBroad { .. } => "name the profile by a rarer field",
        Error::InvalidProfileData { .. } => "fix the profile data",
        Error::RelationNotFound { .. } => "nothing to detach",
        Error::UnknownProperty { .. } => "no such property",
        Error::DuplicateProperty { .. } => "a property given twice",
        Error::WrongType { .. } => "a value of the wrong type",
        Error::NotFinite { .. } => "a NaN or infinite value",
        Error::IntOverflow { .. } => "an int past i64",
        Error::FloatOverflow { .. } => "a float past 2^960",
        Error::InvalidArgument { .. } => "an argument out of range",
        Error::InRow { error, .. } => reaction(error),
        Error::CapacityExceeded => "no profile slot left",
        Error::Storage(e) => match e.kind() {
            StorageKind::Io => "the disk failed",
            StorageKind::Corrupt => "a file is corrupted",
            StorageKind::Locked => "another engine holds the directory",
            StorageKind::NotDurable => "reopen the engine",
            StorageKind::Refused => "the call cannot be done here",
            StorageKind::Internal => "report a bug",
            _ => "a storage failure of a newer kind",
        },
        _ => "an error of a newer version",
    }
}

fn donations() -> RelationType {
    RelationType::new(3, 1, 2)
        .prop("Donate", PropSpec::int().top(3))
        .prop("Like", PropSpec::int().sum())
        .prop("Score", PropSpec::float().sum())
        .prop("Subscriber", PropSpec::bool())
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relcount-host-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&dir);
    dir
}

#[test]
fn define_write_read_page() -> Result<(), Error> {
    let engine = Engine::new();
    engine.define(donations())?;
    let a = "5c910f6bc484d023b1309bee";
    for (b, donate) in [("b1", 20), ("b2", 50), ("b3", 5), ("b4", 35)] {
        engine.attach(3, a, b, &[("Donate", donate.into()), ("Like", 1.into())])?;
    }
    engine.strengthen(
        3,
        a,
        "b3",
        &[("Donate", 100.into()), ("Score", 0.25.into())],
    )?;
    engine.edit(3, a, "b1", &[("Subscriber", true.into())])?;
    engine.attach(3, a, "b5", &[])?;

    let counter = engine.get_counter(3, a)?;
    assert_eq!(counter.profile_id(), a);
    assert_eq!(counter.total(), 5);
    let top: Vec<(String, Value)> = counter
        .top("Donate")
        .expect("Donate keeps a top list")
        .map(|t| (t.profile_id.to_string(), t.value))
        .collect();
    assert_eq!(
        top,
        [
            ("b3".to_string(), Value::Int(105)),
            ("b2".to_string(), Value::Int(50)),
            ("b4".to_string(), Value::Int(35)),
        ]
    );
    assert_eq!(counter.sum("Like"), Some(Sum::Int(4)));
    assert_eq!(counter.sum("Score"), Some(Sum::Float(0.25)));
    assert_eq!(counter.sum("Donate"), None, "Donate keeps no sum");
    assert!(counter.top("Like").is_none(), "Like keeps no top list");
    assert!(counter.prop("Nope").is_none());
    assert_eq!(counter.prop("Subscriber").map(|p| p.total()), Some(1));

    let first = engine.list(3, a, 0, 2)?;
    assert_eq!(first.total_count, 5);
    let ids: Vec<String> = first.rows.iter().map(|r| r.profile_b.to_string()).collect();
    assert_eq!(ids, ["b1", "b2"]);
    assert_eq!(first.rows[0].props.len(), 3, "Donate, Like, Subscriber");
    let rest = engine.list(3, a, 2, 100)?;
    assert_eq!(rest.rows.len(), 3);
    assert_eq!(rest.rows[2].profile_b, "b5");
    assert!(rest.rows[2].props.is_empty());
    Ok(())
}

#[test]
fn profiles_named_by_email() -> Result<(), Error> {
    let engine = Engine::new();
    engine.define(donations())?;
    engine.import_profile(
        1,
        "john",
        ProfileData {
            email: Some("John@Example.com".into()),
            fields: vec![("Plan".into(), FieldValue::Text("gold".into()))],
            ..Default::default()
        },
    )?;
    let john = Match::Email {
        email: "john@example.com",
        resource_id: None,
    };
    engine.attach(3, john, "b1", &[("Like", 2.into())])?;
    // A host decodes the name from a message: the owned form, passed by reference.
    let decoded: OwnedMatch = john.to_owned_match();
    engine.strengthen(3, &decoded, "b1", &[("Like", 3.into())])?;
    assert_eq!(
        engine.get_counter(3, &decoded)?.sum("Like"),
        Some(Sum::Int(5))
    );
    let by_field = OwnedMatch::Custom {
        field: "Plan".into(),
        value: "gold".into(),
    };
    assert_eq!(engine.get_counter(3, &by_field)?.profile_id(), "john");
    Ok(())
}

#[test]
fn a_snapshot_loads_through_the_builder() -> Result<(), Error> {
    let dir = temp_dir("snapshot");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("copy.bin");
    let engine = Engine::new();
    engine.define(donations())?;
    engine.attach(3, "a", "b", &[("Donate", 7.into())])?;
    engine.save_snapshot(&path)?;
    let loaded = Engine::builder().shards(2).load_snapshot(&path)?;
    assert_eq!(loaded.shard_count(), 2, "the builder's settings are kept");
    assert_eq!(loaded.get_counter(3, "a")?.total(), 1);
    let policy: SyncPolicy = "always".parse()?;
    assert_eq!(policy, SyncPolicy::Always);
    std::fs::remove_dir_all(&dir).expect("clean up");
    Ok(())
}

/// Each variant a host can meet, provoked through the public API and matched.
#[test]
fn every_error_is_matched() -> Result<(), Error> {
    let engine = Engine::new();
    engine.define(donations())?;
    engine.define(RelationType::new(4, 1, 2).prop("W", PropSpec::float().sum()))?;
    engine.attach(3, "a", "b", &[("Like", i64::MAX.into())])?;
    engine.attach(3, "a2", "b2", &[])?;
    let data = |email: &str| ProfileData {
        email: Some(email.into()),
        ..Default::default()
    };
    engine.import_profile(1, "p1", data("same@x.io"))?;
    engine.import_profile(1, "p2", data("same@x.io"))?;
    let email = |e: &'static str| Match::Email {
        email: e,
        resource_id: None,
    };

    let cases: Vec<(Result<(), Error>, &str)> = vec![
        (
            engine.attach(9, "a", "b", &[]),
            "define the relation type first",
        ),
        (
            engine.define(RelationType::new(3, 1, 2).prop("Other", PropSpec::bool())),
            "the relation type exists with another schema",
        ),
        (
            engine.define(RelationType::new(5, 1, 2).prop("Bad", PropSpec::bool().sum())),
            "fix the definition",
        ),
        (engine.attach(3, "", "b", &[]), "fix the id"),
        (engine.get_counter(3, "nobody").map(drop), "no such profile"),
        (
            engine.get_counter(3, email("none@x.io")).map(drop),
            "no profile matches",
        ),
        (
            engine.get_counter(3, email("same@x.io")).map(drop),
            "several profiles match",
        ),
        (
            engine.import_profile(1, "p3", data("not an email")),
            "fix the profile data",
        ),
        (engine.detach(3, "a", "b2"), "nothing to detach"),
        (
            engine.attach(3, "a", "b", &[("Nope", 1.into())]),
            "no such property",
        ),
        (
            engine.attach(3, "a", "b", &[("Like", 1.into()), ("Like", 2.into())]),
            "a property given twice",
        ),
        (
            engine.attach(3, "a", "b", &[("Like", true.into())]),
            "a value of the wrong type",
        ),
        (
            engine.attach(4, "a", "b", &[("W", f64::NAN.into())]),
            "a NaN or infinite value",
        ),
        (
            engine.strengthen(3, "a", "b", &[("Like", 1.into())]),
            "an int past i64",
        ),
        (
            engine.attach(4, "a", "b", &[("W", 1e300.into())]),
            "a float past 2^960",
        ),
        (
            engine.list(3, "a", 0, 0).map(drop),
            "an argument out of range",
        ),
        (
            engine
                .import_relations(
                    3,
                    [
                        ("a", "b", [("Like", Value::from(1))]),
                        ("a", "", [("Like", 1.into())]),
                    ],
                )
                .map(drop),
            "fix the id",
        ),
        (engine.compact().map(drop), "the call cannot be done here"),
    ];
    for (i, (result, want)) in cases.into_iter().enumerate() {
        let e = result.expect_err("refused");
        assert_eq!(reaction(&e), want, "case {i}: {e}");
        // An error in a row keeps it as its source.
        if let Error::InRow { row, .. } = &e {
            assert_eq!(*row, 1);
            assert!(std::error::Error::source(&e).is_some());
        }
    }
    // A lookup whose every tag is held by more profiles than a lookup examines.
    let tagged = |tag: &str| ProfileData {
        fields: vec![("T".into(), FieldValue::Tags(vec![tag.into()]))],
        ..Default::default()
    };
    let big = relcount::limits::MAX_LOOKUP_CANDIDATES + 1;
    let ids: Vec<(String, String)> = (0..big)
        .map(|i| (format!("x{i}"), format!("y{i}")))
        .collect();
    engine.import_profiles(ids.iter().flat_map(|(x, y)| {
        [
            (1, x.as_str(), tagged("big-x")),
            (1, y.as_str(), tagged("big-y")),
        ]
    }))?;
    let broad = Match::Custom {
        field: "T",
        value: "big-x, big-y",
    };
    let e = engine.get_counter(3, broad).expect_err("too broad");
    assert_eq!(reaction(&e), "name the profile by a rarer field", "{e}");
    // A snapshot that is not one.
    let e = Engine::load_snapshot_bytes(b"not a snapshot").expect_err("corrupt");
    assert_eq!(reaction(&e), "a file is corrupted", "{e}");

    // Nothing refused changed anything: the one relation, at i64::MAX.
    let counter = engine.get_counter(3, "a")?;
    assert_eq!(
        (counter.total(), counter.sum("Like")),
        (1, Some(Sum::Int(i128::from(i64::MAX))))
    );

    // The disk: a data directory that is a file, and one another engine holds.
    let file = temp_dir("file");
    std::fs::write(&file, b"not a directory").expect("write");
    let e = Engine::builder()
        .open(&file, SyncPolicy::Always)
        .expect_err("a file");
    assert_eq!(reaction(&e), "the disk failed");
    let Error::Storage(storage) = &e else {
        panic!("{e}")
    };
    assert!(storage.io_error().is_some() && storage.path().is_some());
    let source = std::error::Error::source(&e).expect("the storage error");
    assert!(source.source().is_some(), "and under it the io::Error");
    std::fs::remove_file(&file).expect("clean up");
    let dir = temp_dir("locked");
    let held = Engine::builder().open(&dir, SyncPolicy::No)?;
    let e = Engine::builder()
        .open(&dir, SyncPolicy::No)
        .expect_err("locked");
    assert_eq!(reaction(&e), "another engine holds the directory");
    drop(held);
    std::fs::remove_dir_all(&dir).expect("clean up");
    Ok(())
}

/// One relation of the oracle: its Donate, Like and Subscriber values.
type Oracle = (Option<i64>, Option<i64>, bool);

/// One write of the random sequence: recipient, initiator, plain weights.
#[derive(Debug, Clone)]
enum Step {
    Attach(u8, u8, i64, bool),
    Strengthen(u8, u8, i64),
    Detach(u8, u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..2, 0u8..6, -100i64..100, any::<bool>())
            .prop_map(|(a, b, d, s)| Step::Attach(a, b, d, s)),
        (0u8..2, 0u8..6, -100i64..100).prop_map(|(a, b, d)| Step::Strengthen(a, b, d)),
        (0u8..2, 0u8..6).prop_map(|(a, b)| Step::Detach(a, b)),
    ]
}

proptest! {
    /// Plain-number writes against a map of relations, every counter recomputed from
    /// scratch: totals, the Like sum, the Donate top 3 (value desc, id asc), a page.
    #[test]
    fn plain_writes_match_a_plain_map(steps in proptest::collection::vec(step(), 1..60)) {
        let engine = Engine::new();
        engine.define(donations()).expect("define");
        let mut oracle: BTreeMap<(String, String), Oracle> = BTreeMap::new();
        let name = |i: u8, side: &str| format!("{side}{i}");
        for s in &steps {
            match *s {
                Step::Attach(a, b, d, sub) => {
                    let w = [("Donate", d.into()), ("Like", 1.into()), ("Subscriber", sub.into())];
                    engine.attach(3, &*name(a, "a"), &*name(b, "b"), &w).expect("attach");
                    oracle.insert((name(a, "a"), name(b, "b")), (Some(d), Some(1), sub));
                }
                Step::Strengthen(a, b, d) => {
                    engine.strengthen(3, &*name(a, "a"), &*name(b, "b"), &[("Donate", d.into())]).expect("strengthen");
                    let e = oracle.entry((name(a, "a"), name(b, "b"))).or_insert((None, None, false));
                    e.0 = Some(e.0.unwrap_or(0) + d);
                }
                Step::Detach(a, b) => {
                    let key = (name(a, "a"), name(b, "b"));
                    let r = engine.detach(3, &*key.0, &*key.1);
                    match oracle.remove(&key) {
                        Some(_) => prop_assert!(r.is_ok()),
                        None => {
                            let refused = matches!(r, Err(Error::RelationNotFound { .. } | Error::ProfileNotFound { .. }));
                            prop_assert!(refused, "{:?}", r);
                        }
                    }
                }
            }
        }
        for a in 0..2 {
            let a = name(a, "a");
            let rel: Vec<_> = oracle.iter().filter(|((ra, _), _)| *ra == a).collect();
            let counter = engine.get_counter(3, &*a);
            if rel.is_empty() {
                // Never attached, or every relation detached: not found or empty.
                if let Ok(c) = counter { prop_assert_eq!(c.total(), 0); }
                continue;
            }
            let counter = counter.expect("a recipient");
            prop_assert_eq!(counter.total(), rel.len() as u64);
            let like: i128 = rel.iter().filter_map(|(_, v)| v.1).map(i128::from).sum();
            prop_assert_eq!(counter.sum("Like"), Some(Sum::Int(like)));
            let mut want: Vec<(i64, String)> = rel.iter().filter_map(|((_, b), v)| v.0.map(|d| (d, b.clone()))).collect();
            want.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
            want.truncate(3);
            let got: Vec<(i64, String)> = counter.top("Donate").expect("a top list")
                .map(|t| match t.value { Value::Int(d) => (d, t.profile_id.to_string()), other => panic!("{other:?}") })
                .collect();
            prop_assert_eq!(got, want);
            let subs = rel.iter().filter(|(_, v)| v.2).count() as u64;
            prop_assert_eq!(counter.prop("Subscriber").map(|p| p.total()), Some(subs));
            let page = engine.list(3, &*a, 0, 100).expect("page");
            let ids: Vec<String> = page.rows.iter().map(|r| r.profile_b.to_string()).collect();
            let want_ids: Vec<String> = rel.iter().map(|((_, b), _)| b.clone()).collect();
            prop_assert_eq!(ids, want_ids);
        }
    }
}

/// The JSON layer, as a host with its own HTTP route forwards to it.
#[cfg(feature = "json")]
#[test]
fn the_json_api_and_its_calls() {
    use relcount::api::{Api, Call, TokenScope};
    use std::sync::Arc;

    let api = Api::new(Arc::new(Engine::new()));
    api.add_token("secret", TokenScope::full());
    let bearer = Some("Bearer secret");
    let define =
        br#"{"rel_id": 3, "db_a": 1, "db_b": 2, "props": {"Like": {"type": "int", "sum": true}}}"#;
    assert_eq!(
        api.handle(Call::Define.path(), bearer, define).code,
        relcount::api::Code::Ok
    );
    let attach = br#"{"rel_id": 3, "profile_a": "a", "profile_b": "b", "weights": {"Like": 2}}"#;
    assert_eq!(
        api.handle("relations/attach", bearer, attach).code,
        relcount::api::Code::Ok
    );
    assert_eq!(
        api.engine().get_counter(3, "a").map(|c| c.sum("Like")),
        Ok(Some(Sum::Int(2)))
    );
    let missing = api.handle(
        "relations/get_counter",
        bearer,
        br#"{"rel_id": 3, "profile_id": "z"}"#,
    );
    assert_eq!(missing.code, relcount::api::Code::ProfileNotFound);
    for call in Call::ALL {
        assert_eq!(call.path().parse::<Call>(), Ok(call));
    }
    assert!(
        api.handle("relations/nope", bearer, b"{}")
            .body
            .contains("unknown call")
    );
}
