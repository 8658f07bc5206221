//! What the engine accepts comes back exactly: profile data of any Unicode survives
//! log replay, compaction and a snapshot round trip, and finds its profile by its own
//! stored form; doubles round-trip bit for bit through the JSON API.

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use relcount::api::{Api, Code, TokenScope};
use relcount::{
    Channel, Engine, FieldValue, Match, ProfileData, PropSpec, RelationType, Subscription,
    SyncPolicy, Value,
};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relcount-rt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Pieces of text without white space (an email's parts) from the corners of Unicode
/// that normalisation touches: letters whose lowercase is longer (`Ⱥ` 2 -> 3 bytes,
/// `İ` 2 -> 3), final sigma, `ẞ`, wide characters.
fn word_piece() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-zA-Z0-9._-]{1,8}",
        2 => Just("Ⱥ".to_string()),
        1 => Just("İ".to_string()),
        1 => Just("ΣΑΣ".to_string()),
        1 => Just("ẞ".to_string()),
        1 => Just("😀".to_string()),
        1 => "[^\\s@]{1,3}",
    ]
    .boxed()
}

fn word(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(word_piece(), 0..max).prop_map(|v| v.concat())
}

/// Text: word pieces, white space of every kind, commas, any printable characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => word_piece(),
        1 => Just("\u{2003}".to_string()),
        1 => Just(" ".to_string()),
        1 => Just(",".to_string()),
        2 => "\\PC{1,4}",
    ];
    prop::collection::vec(piece, 0..max).prop_map(|v| v.concat())
}

fn email() -> impl Strategy<Value = String> {
    (word(6), word(6), 0usize..130, "[ \t]{0,2}").prop_map(|(local, domain, grow, pad)| {
        // Often right at the limit: `grow` times `Ⱥ` is 2 bytes raw, 3 stored.
        format!("{pad}{local}{}@{domain}x{pad}", "Ⱥ".repeat(grow))
    })
}

fn phone() -> impl Strategy<Value = String> {
    prop_oneof!["\\+?[0-9 ()\\-.]{1,24}", text(6),]
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        text(30).prop_map(FieldValue::Text),
        any::<i64>().prop_map(FieldValue::Int),
        prop::collection::vec(text(8), 0..5).prop_map(FieldValue::Tags),
    ]
}

fn profile_data() -> impl Strategy<Value = ProfileData> {
    (
        prop::option::of(email()),
        prop::option::of(phone()),
        prop::collection::vec((text(6), field_value()), 0..4),
        prop::collection::vec(
            (0u32..3, any::<bool>(), email(), phone()).prop_map(|(r, is_email, e, p)| {
                Subscription {
                    resource_id: r,
                    channel: if is_email {
                        Channel::Email
                    } else {
                        Channel::Sms
                    },
                    address: if is_email { e } else { p },
                }
            }),
            0..3,
        ),
    )
        .prop_map(|(email, phone, fields, subscriptions)| ProfileData {
            email,
            phone,
            fields,
            subscriptions,
        })
}

/// Every lookup the stored data allows finds `id` (or, where several profiles share
/// the value, reports the ambiguity rather than another profile).
fn found_by_its_stored_form(engine: &Engine, id: &str, stored: &ProfileData) -> Result<(), String> {
    let check = |m: Match<'_>| match engine.profile_data(1, m) {
        Ok(_) => {
            let found = engine
                .get_counter(1, m)
                .map_err(|e| format!("{m:?}: {e}"))?;
            if found.profile_id().as_str().as_ref() as &str == id {
                Ok(())
            } else {
                Err(format!("{m:?} found {}", found.profile_id()))
            }
        }
        Err(e) => Err(format!("{m:?}: {e}")),
    };
    if let Some(email) = &stored.email {
        check(Match::EmailProfile(email))?;
        check(Match::Email {
            email,
            resource_id: None,
        })?;
    }
    if let Some(phone) = &stored.phone {
        check(Match::Phone {
            phone,
            resource_id: None,
        })?;
    }
    for (name, value) in &stored.fields {
        match value {
            FieldValue::Text(t) => check(Match::Custom {
                field: name,
                value: t,
            })?,
            FieldValue::Int(i) => check(Match::Custom {
                field: name,
                value: &i.to_string(),
            })?,
            FieldValue::Tags(tags) => {
                for t in tags {
                    check(Match::Custom {
                        field: name,
                        value: t,
                    })?;
                }
            }
        }
    }
    for s in &stored.subscriptions {
        let r = Some(s.resource_id);
        match s.channel {
            Channel::Email => check(Match::Email {
                email: &s.address,
                resource_id: r,
            })?,
            Channel::Sms => check(Match::Phone {
                phone: &s.address,
                resource_id: r,
            })?,
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Whatever `import_profile` accepts is stored in a form that imports again to
    /// itself, finds its profile, and comes back unchanged from log replay, from a
    /// compaction's snapshot, and from `save_snapshot`/`load_snapshot`; whatever it
    /// refuses changes nothing.
    #[test]
    fn accepted_profile_data_survives_every_round_trip(data in profile_data()) {
        let dir = temp_dir("data");
        let engine = Engine::builder().open(&dir, SyncPolicy::No).expect("open");
        engine.define(RelationType::new(1, 1, 2).prop("W", PropSpec::int())).expect("define");
        let Ok(()) = engine.import_profile(1, "p", data.clone()) else {
            prop_assert!(!engine.contains_profile(1, "p"), "a refused import left the profile");
            drop(engine);
            std::fs::remove_dir_all(&dir).ok();
            return Ok(());
        };
        let stored = engine.profile_data(1, "p").expect("stored");
        engine.import_profile(1, "q", stored.clone()).expect("the stored form imports again");
        prop_assert_eq!(&engine.profile_data(1, "q").expect("q"), &stored, "normalising twice");
        engine.delete_profile(1, "q").expect("delete q");
        found_by_its_stored_form(&engine, "p", &stored).map_err(TestCaseError::fail)?;

        // Log replay.
        drop(engine);
        let engine = Engine::builder().open(&dir, SyncPolicy::No).expect("reopen from the log");
        prop_assert_eq!(engine.recovery_skipped(), vec![]);
        prop_assert_eq!(&engine.profile_data(1, "p").expect("replayed"), &stored);
        found_by_its_stored_form(&engine, "p", &stored).map_err(TestCaseError::fail)?;

        // A snapshot file, saved and loaded.
        let file = dir.join("copy.bin");
        engine.save_snapshot(&file).expect("save");
        let loaded = Engine::load_snapshot(&file).expect("load");
        prop_assert_eq!(loaded.recovery_skipped(), vec![]);
        prop_assert_eq!(&loaded.profile_data(1, "p").expect("loaded"), &stored);

        // Compaction, then recovery from the snapshot.
        engine.compact().expect("compact");
        drop(engine);
        let engine = Engine::builder().open(&dir, SyncPolicy::No).expect("reopen from the snapshot");
        prop_assert_eq!(engine.recovery_skipped(), vec![]);
        prop_assert_eq!(&engine.profile_data(1, "p").expect("recovered"), &stored);
        found_by_its_stored_form(&engine, "p", &stored).map_err(TestCaseError::fail)?;
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Every numeric form a weight can take: ints of any size and floats of any bits,
    /// for int and float properties, survive replay and a snapshot exactly.
    #[test]
    fn accepted_values_survive_replay_and_snapshot(
        ints in prop::collection::vec(any::<i64>(), 1..6),
        floats in prop::collection::vec(any::<u64>().prop_map(f64::from_bits), 1..6),
    ) {
        let dir = temp_dir("values");
        let engine = Engine::builder().open(&dir, SyncPolicy::No).expect("open");
        engine
            .define(RelationType::new(1, 1, 2).prop("I", PropSpec::int().sum().top(3)).prop("F", PropSpec::float().sum().top(3)))
            .expect("define");
        let mut want = Vec::new();
        for (n, (i, f)) in ints.iter().zip(floats.iter().cycle()).enumerate() {
            let b = format!("b{n}");
            if engine.attach(1, "a", b.as_str(), &[("I", Value::Int(*i)), ("F", Value::Float(*f))]).is_ok() {
                want.push(b);
            }
        }
        let page = |e: &Engine| e.list(1, "a", 0, 1000).map(|p| {
            p.rows.iter().map(|r| (r.profile_b.to_string(), r.props.iter().map(|(n, v)| (n.clone(), match v {
                Value::Float(x) => format!("f{:016x}", x.to_bits()),
                other => format!("{other:?}"),
            })).collect::<Vec<_>>())).collect::<Vec<_>>()
        }).ok();
        let before = page(&engine);
        prop_assert_eq!(before.as_ref().map_or(0, Vec::len), want.len());
        drop(engine);
        let engine = Engine::builder().open(&dir, SyncPolicy::No).expect("reopen");
        prop_assert_eq!(page(&engine), before.clone());
        engine.compact().expect("compact");
        drop(engine);
        let engine = Engine::builder().open(&dir, SyncPolicy::No).expect("reopen");
        prop_assert_eq!(page(&engine), before);
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }
}

const TOKEN: &str = "roundtrip-token-0123456789";

fn api() -> Api {
    let api = Api::new(Arc::new(Engine::new()));
    api.add_token(TOKEN, TokenScope::full());
    let define = format!(
        r#"{{"token": "{TOKEN}", "rel_id": 1, "db_a": 1, "db_b": 2, "props": {{"F": {{"type": "float", "top": 1}}}}}}"#
    );
    assert_eq!(
        api.handle("relations/define", None, define.as_bytes()).code,
        Code::Ok
    );
    api
}

/// The text of the first `"value":` number in a response.
fn value_text(body: &str) -> &str {
    let at = body.find("\"value\":").expect("a value") + "\"value\":".len();
    let rest = &body[at..];
    let end = rest.find(['}', ',']).expect("end of the number");
    &rest[..end]
}

/// 100k random doubles in shortest form round-trip through the JSON API exactly:
/// attach, then `relations/get` and `get_counter`'s top print the same text, and
/// the engine holds the same bits.
#[test]
fn doubles_round_trip_through_the_json_api() {
    let api = api();
    let mut rng = relcount::workload::Rng::new(0x5eed);
    for n in 0..100_000u32 {
        let x = if n % 2 == 0 {
            // [0, 1000), where the failures were found.
            (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 1000.0
        } else {
            let x = f64::from_bits(rng.next_u64());
            if !x.is_finite() || x.abs() > relcount::limits::MAX_FLOAT {
                continue;
            }
            x
        };
        let text = format!("{x:?}");
        let attach = format!(
            r#"{{"token": "{TOKEN}", "rel_id": 1, "profile_a": "a", "profile_b": "b", "weights": {{"F": {text}}}}}"#
        );
        let r = api.handle("relations/attach", None, attach.as_bytes());
        assert_eq!(r.code, Code::Ok, "{text}: {}", r.body);
        let top = api.engine().get_counter(1, "a").expect("counter");
        let stored = top
            .prop("F")
            .and_then(|p| p.top())
            .and_then(|mut t| t.next())
            .map(|t| t.value);
        // -0.0 is stored as 0.0 (one zero keeps sums and top lists canonical).
        let want = if x == 0.0 { 0.0 } else { x };
        assert_eq!(
            stored.map(|v| match v {
                Value::Float(y) => y.to_bits(),
                _ => 0,
            }),
            Some(want.to_bits()),
            "{text}"
        );
        let get = format!(r#"{{"token": "{TOKEN}", "rel_id": 1, "profile_id": "a"}}"#);
        let listed = api.handle("relations/get", None, get.as_bytes());
        assert_eq!(value_text(&listed.body), format!("{want:?}"), "{text}");
        let counted = api.handle("relations/get_counter", None, get.as_bytes());
        assert_eq!(value_text(&counted.body), format!("{want:?}"), "{text}");
    }
}
