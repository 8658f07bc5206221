//! `Api::validate`, the check a cluster's entry host makes before a write enters the
//! log: on random requests, valid and not, it changes nothing; what it refuses,
//! `handle` refuses (with the same answer, unless the write first meets what only it
//! can know); what it passes, `handle` either applies or refuses only for what
//! depends on the engine's relations and profiles.

use std::sync::Arc;

use proptest::prelude::*;
use relcount::Engine;
use relcount::api::{Api, Code, TokenScope};
use serde_json::{Value as J, json};

const TOKEN: &str = "validate-token";
const READER: &str = "validate-reader";
const AUTH: &str = "Bearer validate-token";

fn api() -> Api {
    let api = Api::new(Arc::new(Engine::new()));
    api.add_token(TOKEN, TokenScope::full());
    api.add_token(READER, TokenScope::full().read_only());
    for def in [
        json!({"rel_id": 1, "db_a": 1, "db_b": 2, "props": {
            "Donate": {"type": "int", "top": 3, "sum": true},
            "Score": {"type": "float", "sum": true},
            "Fan": {"type": "bool"}}}),
        json!({"rel_id": 2, "db_a": 1, "db_b": 3, "props": {"Like": {"type": "int", "sum": true}}}),
    ] {
        assert_eq!(
            api.handle("relations/define", Some(AUTH), def.to_string().as_bytes())
                .code,
            Code::Ok
        );
    }
    let near_max = json!({"rel_id": 1, "profile_a": {"profile_id": "a0"}, "profile_b": {"profile_id": "b0"},
        "weights": {"Donate": i64::MAX - 1}});
    assert_eq!(
        api.handle(
            "relations/attach",
            Some(AUTH),
            near_max.to_string().as_bytes()
        )
        .code,
        Code::Ok
    );
    let data = json!({"db_id": 1, "profile_id": "a1", "email": "a1@example.com"});
    assert_eq!(
        api.handle("profiles/import", Some(AUTH), data.to_string().as_bytes())
            .code,
        Code::Ok
    );
    api
}

/// Everything a read can see, for the profiles the requests name.
fn fingerprint(api: &Api) -> String {
    let mut out = format!(
        "{} {} {}|",
        api.engine().relation_count(),
        api.engine().profile_count(),
        api.engine().relation_type_count()
    );
    for rel in [1, 2] {
        for a in ["a0", "a1", "a2"] {
            for call in ["relations/get_counter", "relations/get"] {
                let body = json!({"rel_id": rel, "profile_id": a});
                out.push_str(
                    &api.handle(call, Some(AUTH), body.to_string().as_bytes())
                        .body,
                );
            }
        }
    }
    out
}

fn who() -> impl Strategy<Value = Option<J>> {
    prop_oneof![
        3 => prop::sample::select(vec!["a0", "a1", "a2", "b0", "b1"]).prop_map(|id| Some(json!({"profile_id": id}))),
        1 => Just(Some(json!({"email": "a1@example.com"}))),
        1 => Just(Some(json!({"email": "nobody@example.com"}))),
        1 => Just(Some(json!({"profile_id": ""}))),
        1 => Just(Some(json!("a0"))),
        1 => Just(None),
    ]
}

fn value() -> impl Strategy<Value = J> {
    prop_oneof![
        any::<i64>().prop_map(|i| json!(i)),
        (-1e6f64..1e6).prop_map(|x| json!(x)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(json!("20")),
        Just(json!(null)),
        Just(J::Number(
            serde_json::Number::from_f64(1e308).expect("finite")
        )),
    ]
}

fn weights() -> impl Strategy<Value = Option<J>> {
    let name = prop::sample::select(vec!["Donate", "Score", "Fan", "Like", "Nope"]);
    prop_oneof![
        4 => prop::collection::vec((name, value()), 0..3).prop_map(|pairs| {
            Some(J::Object(pairs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect()))
        }),
        1 => Just(None),
        1 => Just(Some(json!([1, 2]))),
    ]
}

fn request() -> impl Strategy<Value = (String, J, Option<String>)> {
    let call = prop::sample::select(vec![
        "relations/attach",
        "relations/strengthen",
        "relations/edit",
        "relations/detach",
        "relations/import",
        "relations/define",
        "profiles/import",
        "profiles/delete",
    ]);
    let rel = prop_oneof![
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(9)),
        Just(json!("1")),
        Just(json!(-1))
    ];
    let auth = prop_oneof![
        4 => Just(Some(AUTH.to_owned())),
        1 => Just(Some(format!("Bearer {READER}"))),
        1 => Just(Some("Bearer nope".to_owned())),
        1 => Just(None),
    ];
    let extra = prop_oneof![4 => Just(None), 1 => Just(Some(("unknown_field", json!(1))))];
    (call, rel, who(), who(), weights(), auth, extra, any::<bool>(), 0..7usize).prop_map(
        |(call, rel, a, b, w, auth, extra, other_schema, data)| {
            let mut o = serde_json::Map::new();
            match call {
                "relations/define" => {
                    o.insert("rel_id".into(), rel);
                    o.insert("db_a".into(), json!(1));
                    o.insert("db_b".into(), json!(2));
                    let props = if other_schema {
                        json!({"Donate": {"type": "int", "top": 3, "sum": true}})
                    } else {
                        json!({"Donate": {"type": "int", "top": 3, "sum": true},
                               "Score": {"type": "float", "sum": true}, "Fan": {"type": "bool"}})
                    };
                    o.insert("props".into(), props);
                }
                "profiles/import" | "profiles/delete" => {
                    o.insert("db_id".into(), json!(1));
                    if let Some(J::Object(who)) = a {
                        o.extend(who);
                    }
                    if call == "profiles/import" {
                        // Profile data the engine takes, and data it refuses.
                        let (k, v) = [
                            ("email", json!("x@example.com")),
                            ("email", json!("not an email")),
                            ("phone", json!("abc")),
                            ("phone", json!("+7 900 000-00-00")),
                            ("fields", json!({"Interests": ["a,b"]})),
                            ("fields", json!({"Interests": ["a", "b"], "CRM_ID": 12})),
                            ("subscriptions", json!([{"resource_id": 1, "channel": "sms", "phone": "abc"}])),
                        ][data]
                            .clone();
                        o.insert(k.into(), v);
                    }
                }
                "relations/import" => {
                    o.insert("rel_id".into(), rel);
                    let mut row = serde_json::Map::new();
                    for (k, v) in [("profile_a", a), ("profile_b", b), ("weights", w)] {
                        if let Some(v) = v {
                            row.insert(k.into(), v);
                        }
                    }
                    o.insert("relations".into(), json!([{"profile_a": {"profile_id": "a2"}, "profile_b": {"profile_id": "b2"}}, row]));
                }
                _ => {
                    o.insert("rel_id".into(), rel);
                    for (k, v) in [("profile_a", a), ("profile_b", b), ("weights", w)] {
                        if let Some(v) = v {
                            o.insert(k.into(), v);
                        }
                    }
                }
            }
            if let Some((k, v)) = extra {
                o.insert(k.into(), v);
            }
            (call.to_owned(), J::Object(o), auth)
        },
    )
}

/// What only the write itself can know: a relation or profile that is not there, a
/// lookup's answer, a strengthen's range.
const LEFT_TO_THE_WRITE: [Code; 3] = [
    Code::ProfileNotFound,
    Code::Ambiguous,
    Code::RelationNotFound,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn validate_changes_nothing_and_agrees_with_handle((call, body, auth) in request()) {
        let api = api();
        let before = fingerprint(&api);
        let text = body.to_string();
        let checked = api.validate(&call, auth.as_deref(), text.as_bytes());
        prop_assert_eq!(&fingerprint(&api), &before, "validate changed something");
        let done = api.handle(&call, auth.as_deref(), text.as_bytes());
        if checked.code != Code::Ok {
            // The same refusal, unless the write met first what only it can know.
            if !LEFT_TO_THE_WRITE.contains(&done.code) {
                prop_assert_eq!(&done.body, &checked.body, "{} {}", call, text);
            }
            prop_assert_ne!(done.code, Code::Ok, "{} {}: validate refused what handle took", call, text);
            prop_assert_eq!(&fingerprint(&api), &before);
        } else if done.code != Code::Ok {
            let overflow = done.body.contains("range");
            prop_assert!(
                LEFT_TO_THE_WRITE.contains(&done.code) || overflow,
                "{} {}: validate passed it, handle answered {}", call, text, done.body
            );
            prop_assert_eq!(&fingerprint(&api), &before);
        } else {
            prop_assert_eq!(&done.body, &checked.body, "{} {}", call, text);
        }
    }

    /// A call read into its typed request and run (`parse`, then `execute`) answers
    /// and changes exactly what `handle` does, on twin APIs; `check` passes every
    /// request `validate` passes.
    #[test]
    fn parse_then_execute_is_handle((call, body, auth) in request()) {
        let (twin, api) = (api(), api());
        let text = body.to_string();
        let want = twin.handle(&call, auth.as_deref(), text.as_bytes());
        let got = match api.parse(&call, auth.as_deref(), text.as_bytes()) {
            Ok(request) => {
                prop_assert_eq!(request.call().path(), call.as_str());
                let checked = api.check(&request).map(|()| Code::Ok).unwrap_or_else(|r| r.code);
                let validated = api.validate(&call, auth.as_deref(), text.as_bytes()).code;
                if request.call().is_write() {
                    prop_assert_eq!(checked, validated, "{} {}", call, text);
                }
                api.execute(request)
            }
            Err(refused) => refused,
        };
        prop_assert_eq!(&got, &want, "{} {}", call, text);
        prop_assert_eq!(fingerprint(&api), fingerprint(&twin));
    }
}

#[test]
fn a_strengthen_past_the_i64_range_is_left_to_the_write() {
    let api = api();
    let body =
        json!({"rel_id": 1, "profile_a": {"profile_id": "a0"}, "profile_b": {"profile_id": "b0"},
        "weights": {"Donate": 5}})
        .to_string();
    assert_eq!(
        api.validate("relations/strengthen", Some(AUTH), body.as_bytes())
            .code,
        Code::Ok
    );
    let done = api.handle("relations/strengthen", Some(AUTH), body.as_bytes());
    assert_ne!(done.code, Code::Ok, "{}", done.body);
}

#[test]
fn a_definition_against_another_schema_is_refused_by_validate() {
    let api = api();
    let body = json!({"rel_id": 2, "db_a": 1, "db_b": 3, "props": {}}).to_string();
    let checked = api.validate("relations/define", Some(AUTH), body.as_bytes());
    assert_eq!(checked.code, Code::SchemaConflict, "{}", checked.body);
    assert_eq!(api.engine().relation_type_count(), 2);
}
