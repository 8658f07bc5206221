//! `json`: arbitrary bytes, and structure-aware requests, into the JSON entry point.
//! Never a panic, always a well-formed envelope, and a refused request changes nothing.
//! Run: `cargo fuzz run json` (nightly) or `cargo fuzz run json --sanitizer none`.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use relcount::Engine;
use relcount::api::{Api, Call, Code, Limits, TokenScope};
use serde_json::{Value as J, json};

const TOKEN: &str = "fuzz-token";

/// A JSON value built from the fuzzer's bytes, with keys and strings the API knows, so
/// requests get past the parser into every call's field checks.
#[derive(Arbitrary, Debug)]
enum FJson {
    Null,
    Bool(bool),
    Int(i64),
    Big(u64),
    Float(f64),
    Str(u8),
    Arr(Vec<FJson>),
    Obj(Vec<(u8, FJson)>),
}

const KEYS: &[&str] = &[
    "token",
    "rel_id",
    "db_a",
    "db_b",
    "db_id",
    "props",
    "type",
    "sum",
    "top",
    "profile_a",
    "profile_b",
    "weights",
    "profile_id",
    "email",
    "phone",
    "matching",
    "field_name",
    "field_value",
    "resource_id",
    "skip",
    "limit",
    "profiles",
    "fields",
    "subscriptions",
    "channel",
    "Donate",
    "Like",
    "Subscriber",
    "x",
];
const STRS: &[&str] = &[
    TOKEN,
    "int",
    "float",
    "bool",
    "email",
    "sms",
    "custom",
    "profile_id",
    "phone",
    "email_profile",
    "a",
    "b",
    "john@example.com",
    "+7 900",
    "tag-1, tag-2",
    "",
    "Bearer x",
];

impl FJson {
    fn json(&self, depth: usize) -> J {
        if depth > 6 {
            return J::Null;
        }
        match self {
            FJson::Null => J::Null,
            FJson::Bool(b) => json!(b),
            FJson::Int(i) => json!(i % 1000),
            FJson::Big(u) => json!(u),
            FJson::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            FJson::Str(i) => json!(STRS[usize::from(*i) % STRS.len()]),
            FJson::Arr(v) => J::Array(v.iter().take(8).map(|x| x.json(depth + 1)).collect()),
            FJson::Obj(kv) => J::Object(
                kv.iter()
                    .take(8)
                    .map(|(k, v)| {
                        (
                            KEYS[usize::from(*k) % KEYS.len()].to_string(),
                            v.json(depth + 1),
                        )
                    })
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    Structured(FJson),
}

#[derive(Arbitrary, Debug)]
struct Request {
    call: u8,
    bearer: bool,
    body: Body,
}

fn api() -> Api {
    let api = Api::new(Arc::new(Engine::new())).with_limits(Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    });
    api.add_token(TOKEN, TokenScope::full());
    let setup = [
        (
            "relations/define",
            r#"{"rel_id": 3, "db_a": 1, "db_b": 2, "props": {"Donate": {"type": "int", "top": 3}, "Like": {"type": "int", "sum": true}, "Subscriber": {"type": "bool"}}}"#,
        ),
        (
            "relations/attach",
            r#"{"rel_id": 3, "profile_a": "a", "profile_b": "b", "weights": {"Donate": 20, "Like": 2}}"#,
        ),
        (
            "profiles/import",
            r#"{"db_id": 1, "profile_id": "a", "email": "john@example.com", "phone": "+7 900"}"#,
        ),
    ];
    for (call, body) in setup {
        let r = api.handle(call, Some("Bearer fuzz-token"), body.as_bytes());
        assert_eq!(r.code, Code::Ok, "{}", r.body);
    }
    api
}

fn state(api: &Api) -> Vec<String> {
    let e = api.engine();
    let mut s = vec![
        e.relation_count().to_string(),
        format!("{:?} {:?}", e.profile_ids(1), e.profile_ids(2)),
    ];
    for id in ["a", "b"] {
        for call in ["relations/get_counter", "relations/get"] {
            let body = format!(r#"{{"rel_id": 3, "profile_id": "{id}"}}"#);
            s.push(
                api.handle(call, Some("Bearer fuzz-token"), body.as_bytes())
                    .body,
            );
        }
    }
    s
}

fuzz_target!(|req: Request| {
    let api = api();
    let before = state(&api);
    let body = match &req.body {
        Body::Raw(b) => b.clone(),
        Body::Structured(j) => j.json(0).to_string().into_bytes(),
    };
    let call = Call::ALL[usize::from(req.call) % Call::ALL.len()].path();
    let auth = req.bearer.then_some("Bearer fuzz-token");
    let r = api.handle(call, auth, &body);
    let parsed: J = serde_json::from_str(&r.body).expect("a well-formed envelope");
    assert_eq!(parsed["error"], json!(r.code.number()));
    assert!(parsed["error_text"].is_string());
    if r.code != Code::Ok {
        assert_eq!(state(&api), before, "a refused request changed the state");
    }
});
